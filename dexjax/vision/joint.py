"""The pose estimator trained inside the policy's compiled training chunk (issue 6, item 6).

`train_chunk_with_pose` scans `train.update_step` like `train.train_chunk` and, after every
PPO update, renders the final states of a fixed slice of the rollout's environments (the
first `images_per_update`) with visual randomization and takes `pose_steps` Adam steps of
the pose network on them. The pose network thus learns on the policy's own, changing
state distribution, without a dataset on disk (the paper collected 1M policy states
offline instead). Everything is one jitted function: simulation, PPO, rendering
(`mjx.render` through `vision.render.render_images`) and the pose update.

Before rendering, the paper's augmentation (Appendix C.3) is applied to the rendered
states' object pose, which is possible here because the images are drawn from states:
a fraction `unchanged` (0.2) keeps the pose, `rotated` (0.4) turns the object by 90 degrees
about one of its main axes, and the rest get Gaussian pose jitter (`jitter_pos` m per
axis, `jitter_rot` rad about a random axis; the paper does not give these widths). The
labels are the augmented poses. The environments themselves are not touched.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from dexjax import quaternion as quat
from dexjax import scene as scene_lib
from dexjax import train
from dexjax.vision import pose_net as pn
from dexjax.vision import render, train_pose


@dataclasses.dataclass(frozen=True)
class JointConfig:
    images_per_update: int = 32
    """States rendered per PPO update (the first ones of the env batch; <= num_envs)."""
    pose_steps: int = 1
    """Adam steps of the pose network per update, each on all the update's images."""
    augment: bool = True
    """Apply the paper's pose augmentation to the rendered states."""
    unchanged: float = 0.2
    """Fraction of rendered states whose object pose is kept (the paper: 20%)."""
    rotated: float = 0.4
    """Fraction turned by 90 degrees about a main axis of the object (the paper: 40%)."""
    jitter_pos: float = 0.005
    """Gaussian position jitter (m per axis) of the remaining states."""
    jitter_rot: float = 0.1
    """Gaussian rotation jitter (rad, about a random axis) of the remaining states."""
    pose: train_pose.PoseTrainConfig = dataclasses.field(
        default_factory=lambda: dataclasses.replace(
            train_pose.default_config("cpu"),
            net=dataclasses.replace(
                pn.preset("cpu"), pos_mean=scene_lib.OBJECT_START_POS, pos_std=(0.02,) * 3
            ),
        )
    )
    """The pose network and its optimizer (`steps` and logging fields are unused). The
    position statistics cannot come from a dataset: the object's start point and 2 cm."""

    def __post_init__(self):
        if self.images_per_update < 1 or self.pose_steps < 1:
            raise ValueError("images_per_update and pose_steps must be positive")
        if not 0 <= self.unchanged <= self.unchanged + self.rotated <= 1:
            raise ValueError("unchanged and rotated must be fractions summing to at most 1")


@struct.dataclass
class PoseTraining:
    """What the pose side of the chunk carries from update to update."""

    learner: train_pose.PoseLearner
    key: jax.Array
    images_seen: jax.Array  # [] int


def init(config: JointConfig, vision: render.VisionConfig, key: jax.Array) -> PoseTraining:
    key_params, key = jax.random.split(key)
    shape = (3, vision.height, vision.width, 3)
    learner = train_pose.init_learner(config.pose, key_params, shape)
    return PoseTraining(learner, key, jnp.zeros((), jnp.int32))


def augment(
    config: JointConfig, key: jax.Array, pos: jax.Array, q: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The paper's pose augmentation of object poses pos [N, 3], q [N, 4]."""
    n = pos.shape[0]
    key_kind, key_axis, key_sign, key_pos, key_rot_axis, key_rot = jax.random.split(key, 6)
    u = jax.random.uniform(key_kind, (n,))
    # 90 degrees about the object's own x, y or z axis, either way: q * r (body frame).
    axes = jax.nn.one_hot(jax.random.randint(key_axis, (n,), 0, 3), 3)
    sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (n,)), 1.0, -1.0)
    turned = quat.multiply(q, quat.from_axis_angle(axes, sign * jnp.pi / 2))
    jitter_axis = jax.random.normal(key_rot_axis, (n, 3))
    jitter_angle = config.jitter_rot * jax.random.normal(key_rot, (n,))
    jittered = quat.multiply(quat.from_axis_angle(jitter_axis, jitter_angle), q)
    jittered_pos = pos + config.jitter_pos * jax.random.normal(key_pos, (n, 3))
    keep = (u < config.unchanged)[:, None]
    rotate = ((u >= config.unchanged) & (u < config.unchanged + config.rotated))[:, None]
    new_q = jnp.where(keep, q, jnp.where(rotate, turned, jittered))
    new_pos = jnp.where(keep | rotate, pos, jittered_pos)
    return new_pos, quat.normalize(new_q)


def augmented_images(
    config: JointConfig,
    vision: render.VisionConfig,
    env,
    scene,
    context,
    key_aug: jax.Array,
    key_render: jax.Array,
    qpos: jax.Array,
    mocap_quat: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Images uint8 [K, cameras, H, W, 3] of qpos [K, nq] with the object's pose augmented,
    and the labels: the (augmented) object positions [K, 3] and orientations [K, 4]."""
    o = env.idx.object_qpos
    pos, q = qpos[:, o : o + 3], quat.normalize(qpos[:, o + 3 : o + 7])
    if config.augment:
        pos, q = augment(config, key_aug, pos, q)
        qpos = qpos.at[:, o : o + 3].set(pos).at[:, o + 3 : o + 7].set(q)
    images = render.render_images(scene, context, vision, key_render, qpos, mocap_quat)
    return images, pos, q


def pose_update(
    config: JointConfig,
    vision: render.VisionConfig,
    env,
    pose: PoseTraining,
    scene,
    context,
    qpos: jax.Array,
    mocap_quat: jax.Array,
) -> tuple[PoseTraining, dict]:
    """Render qpos [K, nq] (augmented), then `pose_steps` Adam steps on the images.

    The metrics are the pose errors on these images before the first step: images the
    network has not seen, so they track its error on the policy's current states.
    """
    key, key_aug, key_render = jax.random.split(pose.key, 3)
    images, pos, q = augmented_images(
        config, vision, env, scene, context, key_aug, key_render, qpos, mocap_quat
    )
    return learn(config, pose, key, LabelledImages(images, pos, q))


@struct.dataclass
class LabelledImages:
    """One update's rendered images and their labels (stacked [U, ...] by the chunk)."""

    images: jax.Array  # [K, cameras, H, W, 3] uint8
    pos: jax.Array  # [K, 3] object position, augmented
    q: jax.Array  # [K, 4] object orientation, augmented


def learn(
    config: JointConfig, pose: PoseTraining, key: jax.Array, batch: LabelledImages
) -> tuple[PoseTraining, dict]:
    """`pose_steps` Adam steps on one update's images; `key` becomes the pose side's key.

    The steps are a Python loop, not a `lax.scan`: with jax 0.10 / XLA CPU, the pose
    network's gradient inside a while loop keeps the weight-gradient convolutions in
    layouts XLA CPU runs about 25x slower (0.17 s against 4.4 s per step of 32 image
    triples, experiments/vision_joint_split.py)."""
    learner, metrics = pose.learner, None
    for _ in range(config.pose_steps):
        learner, step_metrics = train_pose.train_step(
            config.pose, learner, batch.images, batch.pos, batch.q
        )
        metrics = step_metrics if metrics is None else metrics  # before any step
    metrics = {f"vision_{k}": v for k, v in metrics.items()}
    images_seen = pose.images_seen + batch.images.shape[0]
    metrics["vision_pose/images_seen"] = images_seen
    return PoseTraining(learner, key, images_seen), metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4, 5))
def train_chunk_with_pose(
    train_config: train.TrainConfig,
    env,
    config: JointConfig,
    vision: render.VisionConfig,
    runner: train.RunnerState,
    pose: PoseTraining,
    scene,
    context,
) -> tuple[train.RunnerState, PoseTraining, dict]:
    """`updates_per_chunk` PPO updates, each followed by a pose-network update on renders
    of the first `images_per_update` environments' final states. `scene` and `context`
    are a `VisionRenderer`'s (its batch must be `images_per_update`).

    The PPO updates never read the pose network, so the scan over updates only renders
    (and keeps) each update's images; the pose network's steps then follow in update
    order as straight-line code after the scan (see `learn` for why not inside it). The
    result is the same as a pose update after each PPO update: same states, same keys,
    same order of steps."""
    k = config.images_per_update
    if k > train_config.num_envs:
        raise ValueError(f"images_per_update {k} exceeds num_envs {train_config.num_envs}")

    def one_update(carry, _):
        runner, key = carry
        runner, metrics = train.update_step(train_config, env, runner)
        data = runner.env_state.data
        key, key_aug, key_render = jax.random.split(key, 3)
        images, pos, q = augmented_images(
            config,
            vision,
            env,
            scene,
            context,
            key_aug,
            key_render,
            data.qpos[:k],
            data.mocap_quat[:k],
        )
        return (runner, key), (metrics, LabelledImages(images, pos, q), key)

    (runner, _), (metrics, batches, keys) = jax.lax.scan(
        one_update, (runner, pose.key), None, length=train_config.updates_per_chunk
    )
    pose_metrics = []
    for u in range(train_config.updates_per_chunk):
        # keys[u] is the key update u's split leaves, as pose_update would keep it.
        pose, m = learn(
            config, pose, keys[u], LabelledImages(batches.images[u], batches.pos[u], batches.q[u])
        )
        pose_metrics.append(m)
    pose_metrics = jax.tree.map(lambda *v: jnp.stack(v), *pose_metrics)
    return runner, pose, {**metrics, **pose_metrics}
