"""Export a trained pose estimator for a robot runtime: `pose_estimator.onnx` and its spec.

    result = export_pose_estimator("runs/pose-1", "export/cpu-1")   # latest checkpoint

`pose_estimator.onnx` is the evaluated JAX function, `pose_net.decode` of `PoseNet` with
the checkpoint's parameters closed over, traced and translated by `dexjax.onnx_convert`
(the same translator as the policy):

    inputs   images [batch, cameras, H, W, 3] uint8   RGB, cameras in the spec's order
    outputs  pos    [batch, 3] float32                block position, metres, world frame
             quat   [batch, 4] float32                block orientation, unit, w x y z, world

`pose_estimator_spec.json` gives the cameras (names, order, nominal world poses and fields
of view, resolution), the output frames, how the estimate enters the policy's observation,
the versions and the pose run's config. Every export checks onnxruntime against JAX first.
"""

import dataclasses
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import onnx

from dexjax import constants, onnx_convert, scene
from dexjax import export as policy_export
from dexjax.vision import pose_net, train_pose

POSE_FILE = "pose_estimator.onnx"
POSE_SPEC_FILE = "pose_estimator_spec.json"
INPUT_NAMES = ("images",)
OUTPUT_NAMES = ("pos", "quat")
MAX_ABS_DIFF = 1e-5
"""Largest difference between onnxruntime and JAX an export accepts."""


@dataclasses.dataclass(frozen=True)
class PoseExportResult:
    model_path: pathlib.Path
    spec_path: pathlib.Path
    checkpoint_step: int
    opset: int
    max_abs_diff: float
    """Largest difference between onnxruntime and JAX on the export-time check images."""


def pose_function(config: pose_net.PoseNetConfig, params) -> Callable:
    """`images -> (pos, quat)`: `pose_net.predict` with `params` closed over."""

    def estimate(images):
        pose = pose_net.predict(config, params, images)
        return pose.pos, pose.quat

    return estimate


def trace(estimate: Callable, image_shape: tuple[int, ...]):
    """The jaxpr of `estimate` for any batch of uint8 images [batch, *image_shape]."""
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *image_shape), jnp.uint8)
    return jax.make_jaxpr(estimate)(spec), onnx_convert.Batch(symbol=batch)


def verify(model: onnx.ModelProto, estimate: Callable, images: np.ndarray) -> float:
    """Run the model in onnxruntime and `estimate` in JAX on `images`; the largest
    difference (an error above MAX_ABS_DIFF)."""
    _, _, worst = policy_export.run_both(model, estimate, INPUT_NAMES, OUTPUT_NAMES, [images])
    if worst > MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX and JAX pose estimates differ by {worst:g}")
    return worst


def camera_layout(cameras: tuple[str, ...], width: int, height: int) -> list[dict]:
    """The cameras in input order with their nominal world poses (the scene's)."""
    mj_model = scene.build_model(scene.SceneConfig())
    data = mujoco.MjData(mj_model)
    mujoco.mj_forward(mj_model, data)
    out = []
    for name in cameras:
        cam = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            raise ValueError(f"the scene has no camera {name!r}")
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, data.cam_xmat[cam])
        out.append(
            {
                "name": name,
                "pos_world_m": [float(x) for x in data.cam_xpos[cam]],
                "quat_world_wxyz": [float(x) for x in quat],
                "fovy_deg": float(mj_model.cam_fovy[cam]),
                "width": width,
                "height": height,
                "convention": "MuJoCo camera: looks along its -z axis, +y up in the image",
            }
        )
    return out


def pose_spec(
    config: train_pose.PoseTrainConfig,
    record: dict,
    run_dir: pathlib.Path,
    step: int,
    opset: int,
    sha256: str,
) -> dict:
    cams, height, width, _ = record["image_shape"]
    cameras = tuple(constants.CAMERAS)  # the renderer draws these, in this order
    if len(cameras) != cams:
        raise ValueError(f"the pose run saw {cams} cameras; the scene has {len(cameras)}")
    return {
        "format": 1,
        "model_file": POSE_FILE,
        "model_sha256": sha256,
        "opset": opset,
        "source": {"pose_run_dir": str(run_dir.absolute()), "checkpoint_step": step},
        "inputs": {
            "images": {
                "shape": ["batch", cams, height, width, 3],
                "dtype": "uint8",
                "channels": "RGB, 0-255, row 0 at the top of the image",
            }
        },
        "outputs": {
            "pos": {"shape": ["batch", 3], "dtype": "float32", "units": "m", "frame": "world"},
            "quat": {
                "shape": ["batch", 4],
                "dtype": "float32",
                "order": "w, x, y, z",
                "frame": "world",
                "unit": True,
            },
        },
        "cameras": camera_layout(cameras, width, height),
        "use_in_policy": [
            "object_pos observation = pos - origin_world (policy_spec.json)",
            "object_rel_quat observation = positive_w(relative(quat, goal)), as for the "
            "simulator's orientation (policy_spec.json, observation layout)",
        ],
        "origin_world": [float(x) for x in scene.OBJECT_START_POS],
        "training_data": {k: v for k, v in record.items() if k != "image_shape"},
        "versions": policy_export.versions(),
        "config": json.loads(train_pose.config_to_json(config)),
    }


def check_images(image_shape: tuple[int, ...]) -> np.ndarray:
    """Two random image sets of the run's shape (the export-time check)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, *image_shape), dtype=np.uint8)


def export_pose_estimator(
    pose_run: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    step: int | None = None,
    opset: int = policy_export.DEFAULT_OPSET,
) -> PoseExportResult:
    """Write `pose_estimator.onnx` and its spec for a pose run's checkpoint (default: the
    latest) to `out_dir`, after checking the ONNX graph against JAX."""
    policy_export.check_opset(opset)
    pose_run, out_dir = pathlib.Path(pose_run), pathlib.Path(out_dir)
    config, params, step = train_pose.load_params(pose_run, step)
    record = train_pose.read_data_record(pose_run)
    image_shape = tuple(record["image_shape"])
    estimate = pose_function(config.net, params)
    closed, batch = trace(estimate, image_shape)
    model = onnx_convert.jaxpr_to_onnx(
        closed,
        INPUT_NAMES,
        OUTPUT_NAMES,
        opset=opset,
        batch=batch,
        graph_name="dexjax_pose_estimator",
        doc=f"dexjax pose estimator of {pose_run} at step {step}; see {POSE_SPEC_FILE}",
    )
    max_abs_diff = verify(model, estimate, check_images(image_shape))
    model_path, spec_path = policy_export.write_model_and_spec(
        out_dir,
        model,
        POSE_FILE,
        POSE_SPEC_FILE,
        lambda sha256: pose_spec(config, record, pose_run, step, opset, sha256),
    )
    return PoseExportResult(model_path, spec_path, step, opset, max_abs_diff)
