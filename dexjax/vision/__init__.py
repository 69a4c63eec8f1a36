"""The vision branch: camera images rendered through MJX with visual randomization, datasets
of rendered states labelled with the object's pose, and the pose estimator trained on them."""
