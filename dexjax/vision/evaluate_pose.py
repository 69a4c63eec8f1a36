"""Pose errors of a trained estimator on a held-out rendered set (`dexjax vision eval`).

Position error: the distance between estimated and true positions, in millimetres.
Rotation error: the angle of the rotation between estimated and true orientations (the
relative rotation's angle, `quaternion.angle_between`), in degrees. Both as mean and median
over the set, next to the paper's Table 6.
"""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dexjax.vision import dataset, train_pose
from dexjax.vision import pose_net as pn

PAPER_TABLE6 = (
    # (images the network was tested on, rotation error deg, position error mm)
    ("paper, Unity renders", 2.71, 3.12),
    ("paper, MuJoCo renders", 3.23, 3.71),
    ("paper, real images", 5.01, 9.27),
)
BATCH = 64


@functools.lru_cache(maxsize=8)
def _predict_fn(config: pn.PoseNetConfig):
    return jax.jit(functools.partial(pn.predict, config))


def predict(config: pn.PoseNetConfig, params, images: np.ndarray) -> pn.Pose:
    """Poses of images [N, cameras, H, W, 3] in fixed-size batches (one compilation)."""
    n = len(images)
    pad = (-n) % BATCH
    padded = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    poses = [_predict_fn(config)(params, padded[i : i + BATCH]) for i in range(0, n + pad, BATCH)]
    pose = jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *poses)
    return jax.device_get(pose)


def pose_errors(pred_pos, pred_quat, pos, q) -> tuple[np.ndarray, np.ndarray]:
    """Per-example position errors (mm) and rotation errors (degrees)."""
    return (
        np.asarray(pn.position_error_mm(jnp.asarray(pred_pos), jnp.asarray(pos))),
        np.asarray(pn.rotation_error_deg(jnp.asarray(pred_quat), jnp.asarray(q))),
    )


def summarize(pos_mm: np.ndarray, rot_deg: np.ndarray) -> dict:
    return {
        "images": int(len(pos_mm)),
        "position_mm_mean": float(np.mean(pos_mm)),
        "position_mm_median": float(np.median(pos_mm)),
        "rotation_deg_mean": float(np.mean(rot_deg)),
        "rotation_deg_median": float(np.median(rot_deg)),
    }


def per_example_errors(
    config: train_pose.PoseTrainConfig,
    params,
    data: dataset.Dataset | str | pathlib.Path,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Position (mm) and rotation (degrees) errors [N] of the first `limit` states of a
    dataset (all by default), in the manifest's order."""
    pos_mm, rot_deg = [], []
    for batch in dataset.in_order(data, 1024, limit):
        pred = predict(config.net, params, batch.images)
        a, b = pose_errors(pred.pos, pred.quat, batch.pos, batch.quat)
        pos_mm.append(a)
        rot_deg.append(b)
    return np.concatenate(pos_mm), np.concatenate(rot_deg)


def errors_on(
    config: train_pose.PoseTrainConfig,
    params,
    data: dataset.Dataset | str | pathlib.Path,
    limit: int | None = None,
) -> dict:
    """Mean and median errors on the first `limit` states of a dataset (all by default)."""
    return summarize(*per_example_errors(config, params, data, limit))


def evaluate_run(
    run_dir: str | pathlib.Path, data_dir: str | pathlib.Path, step: int | None = None
) -> dict:
    """Errors of a pose run's checkpoint on a dataset of the run's image shape."""
    config, params, step = train_pose.load_params(run_dir, step)
    data = dataset.open_dataset(data_dir)
    shape = train_pose.read_image_shape(run_dir)
    dataset.check_image_shape(data, shape, f"the pose run {run_dir} was trained on")
    return {
        "run_dir": str(run_dir),
        "data": str(data_dir),
        "checkpoint": step,
        **errors_on(config, params, data),
    }


@struct.dataclass
class VisionPose:
    """The pose estimator in the loop: render a batch of states, estimate the object's pose.

    A pytree, so it is an argument of jitted functions (`evaluate.evaluate(vision=...)`).
    The `VisionRenderer` that made `scene` and `context` must stay alive while it is used.
    """

    params: object
    scene: object  # vision.render.RenderScene
    context: object  # the renderer's context pytree, made for exactly B worlds
    net: pn.PoseNetConfig = struct.field(pytree_node=False)
    vision: object = struct.field(pytree_node=False)  # vision.render.VisionConfig

    def images(self, key: jax.Array, qpos: jax.Array, mocap_quat: jax.Array) -> jax.Array:
        """Randomized camera images uint8 [B, cameras, H, W, 3] of qpos [B, nq]."""
        from dexjax.vision import render

        return render.render_images(self.scene, self.context, self.vision, key, qpos, mocap_quat)

    def predict(self, images: jax.Array) -> pn.Pose:
        """Poses [B] the network estimates from images [B, cameras, H, W, 3]."""
        return pn.predict(self.net, self.params, images)

    def estimate(self, key: jax.Array, qpos: jax.Array, mocap_quat: jax.Array) -> pn.Pose:
        """Poses [B] estimated from randomized images of qpos [B, nq]."""
        return self.predict(self.images(key, qpos, mocap_quat))

    def observe(self, key: jax.Array, env, state) -> jax.Array:
        """Policy observations [B, obs] of a batch of env states with the estimated pose."""
        pose = self.estimate(key, state.data.qpos, state.data.mocap_quat)
        return jax.vmap(env.policy_obs_with_pose)(state, pose.pos, pose.quat)


def load_vision_pose(run_dir: str | pathlib.Path, mj_model, batch: int, step: int | None = None):
    """(VisionPose, VisionRenderer) of a pose run, rendering like its training images.

    Keep the returned renderer alive as long as the VisionPose is used (it owns the render
    context's buffers).
    """
    from dexjax.vision import render

    config, params, _ = train_pose.load_params(run_dir, step)
    record = train_pose.read_data_record(run_dir)
    _, height, width, _ = record["image_shape"]
    fields = record.get("vision_config") or {}
    known = {f.name for f in dataclasses.fields(render.VisionConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known}
    vision = render.VisionConfig(**{**fields, "width": width, "height": height})
    renderer = render.VisionRenderer(mj_model, vision, batch)
    pose = VisionPose(params, renderer.scene, renderer.context, config.net, vision)
    return pose, renderer


def format_table(result: dict, label: str = "this run") -> str:
    """The errors next to the paper's Table 6."""
    lines = [
        f"{'':28s} {'rotation (deg)':>22s} {'position (mm)':>22s}",
        f"{'':28s} {'mean':>10s} {'median':>11s} {'mean':>10s} {'median':>11s}",
        f"{label:28s} {result['rotation_deg_mean']:10.2f} {result['rotation_deg_median']:11.2f} "
        f"{result['position_mm_mean']:10.2f} {result['position_mm_median']:11.2f}",
    ]
    for name, deg, mm in PAPER_TABLE6:
        lines.append(f"{name:28s} {deg:10.2f} {'-':>11s} {mm:10.2f} {'-':>11s}")
    lines.append(f"({result['images']} held-out image triples; the paper reports means)")
    return "\n".join(lines)
