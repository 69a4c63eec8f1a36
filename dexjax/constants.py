"""Names and index conventions of the Shadow hand scene, stated once.

Quaternions everywhere in dexjax are (w, x, y, z), MuJoCo's order.
"""

PREFIX = "robot0:"

# The 24 hand joints in model order. J0 is the distal joint of a finger (named J1 on the
# real Shadow hand); the four J0 joints are coupled to J1 by a tendon and not actuated.
HAND_JOINTS = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0",
    "MFJ3", "MFJ2", "MFJ1", "MFJ0",
    "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip

# The 20 actuated joints, in actuator order.
ACTUATED_JOINTS = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1",
    "MFJ3", "MFJ2", "MFJ1",
    "RFJ3", "RFJ2", "RFJ1",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip

# Actuated joint -> the distal joint coupled to it. The relative target of a coupled
# actuator is taken about the sum of the pair's angles, as on the real hand.
COUPLED_JOINTS = {"FFJ1": "FFJ0", "MFJ1": "MFJ0", "RFJ1": "RFJ0", "LFJ1": "LFJ0"}

WRIST_JOINTS = ("WRJ1", "WRJ0")

FINGERTIP_SITES = ("S_fftip", "S_mftip", "S_rftip", "S_lftip", "S_thtip")

# Hand collision geoms that may touch the object (the forearm mesh is left out: MJX's
# JAX implementation has no mesh margins, and the block never reaches the forearm).
HAND_COLLISION_GEOMS = (
    "C_wrist", "C_palm0", "C_palm1",
    "C_ffproximal", "C_ffmiddle", "C_ffdistal",
    "C_mfproximal", "C_mfmiddle", "C_mfdistal",
    "C_rfproximal", "C_rfmiddle", "C_rfdistal",
    "C_lfmetacarpal", "C_lfproximal", "C_lfmiddle", "C_lfdistal",
    "C_thproximal", "C_thmiddle", "C_thdistal",
)  # fmt: skip

OBJECT_BODY = "object"
OBJECT_GEOM = "object"
OBJECT_JOINT = "object:joint"
GOAL_BODY = "goal"
FLOOR_GEOM = "floor"
CAMERAS = ("cam_left", "cam_right", "cam_top")
