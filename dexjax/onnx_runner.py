"""Reference runner of an exported policy: numpy, onnxruntime and json only (no JAX).

    runner = PolicyRunner("export/cpu-1")   # the directory `dexjax export` wrote
    runner.reset()                          # at every episode start
    while True:
        action = runner.step(obs)           # obs [22] (or [batch, 22]) -> action [18] in [-1, 1]
        targets = runner.joint_targets(center)  # rad, after EMA smoothing and clipping

`step` keeps the LSTM state between calls; `reset` zeroes it (what the `start` flag does
in JAX). `joint_targets` applies the spec's decoding rule to the last step's
`target_delta`: an exponential moving average (zero at a start), added to `center` (the
previous targets, or the current joint angles, per the spec's `decoding.relative_to`),
clipped to the control ranges.

    estimator = PoseRunner("export/cpu-1")  # the directory `dexjax vision export` wrote
    pos, quat = estimator.estimate(images)  # uint8 [3, H, W, 3] -> [3] m, [4] wxyz (world)

This file is meant to be copied next to a robot's code.
"""

import json
import pathlib

import numpy as np
import onnxruntime

SPEC_FILE = "policy_spec.json"
POSE_SPEC_FILE = "pose_estimator_spec.json"


def _session(path: pathlib.Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class PolicyRunner:
    """Steps an exported policy, keeping its LSTM state and the smoothed target deltas."""

    def __init__(self, export_dir: str | pathlib.Path, threads: int = 1):
        export_dir = pathlib.Path(export_dir)
        spec_path = export_dir / SPEC_FILE
        if not spec_path.exists():
            raise ValueError(f"{export_dir} holds no exported policy (no {SPEC_FILE})")
        self.spec = json.loads(spec_path.read_text())
        self.session = _session(export_dir / self.spec["policy_file"], threads)
        self.obs_size = int(self.spec["observation"]["size"])
        self.lstm = int(self.spec["initial_state"]["size"])
        self.action_size = int(self.spec["action"]["size"])
        actuators = self.spec["action"]["actuators"]
        self.ctrl_low = np.array([a["ctrl_range"][0] for a in actuators], np.float32)
        self.ctrl_high = np.array([a["ctrl_range"][1] for a in actuators], np.float32)
        self.ema = float(self.spec["decoding"]["ema"])
        self.reset()

    def reset(self) -> None:
        """Start an episode: zero LSTM state and smoothing (the batch size is set anew)."""
        self.h: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self.smoothed: np.ndarray | None = None
        self.last: dict[str, np.ndarray] | None = None

    def step(self, obs: np.ndarray) -> np.ndarray:
        """One control step: raw observation [obs_size] or [batch, obs_size] -> the action
        in [-1, 1], [A] or [batch, A]. The full outputs are kept in `self.last`."""
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        batch_obs = obs[None] if single else obs
        if batch_obs.ndim != 2 or batch_obs.shape[1] != self.obs_size:
            raise ValueError(
                f"observation has shape {obs.shape}; expected ({self.obs_size},) or "
                f"(batch, {self.obs_size}) (layout in {SPEC_FILE})"
            )
        batch = batch_obs.shape[0]
        if self.h is None:
            self.h = np.zeros((batch, self.lstm), np.float32)
            self.c = np.zeros((batch, self.lstm), np.float32)
        elif self.h.shape[0] != batch:
            raise ValueError(
                f"batch of {batch} observations after {self.h.shape[0]}: call reset() first"
            )
        names = ["action", "h_out", "c_out", "bins", "target_delta"]
        out = self.session.run(names, {"obs": batch_obs, "h": self.h, "c": self.c})
        self.last = dict(zip(names, out, strict=True))
        self.h, self.c = self.last["h_out"], self.last["c_out"]
        action = self.last["action"]
        return action[0] if single else action

    def joint_targets(self, center: np.ndarray) -> np.ndarray:
        """Position targets (rad) of the policy's actuators for the last step.

        Args:
          center: [A] or [batch, A]: the previous targets (`relative_to` "target"), the
            current joint angles, with the coupled joint's angle added for coupled
            actuators (`relative_to` "current"), or the middle of each control range
            (`relative_to` "center"), in the spec's actuator order.
        """
        if self.last is None:
            raise ValueError("call step() before joint_targets()")
        delta = self.last["target_delta"]
        center = np.asarray(center, np.float32)
        if center.shape[-1] != self.action_size:
            raise ValueError(f"center has shape {center.shape}; expected (..., {self.action_size})")
        if self.smoothed is None:
            self.smoothed = np.zeros_like(delta)
        self.smoothed = self.ema * delta + (1.0 - self.ema) * self.smoothed
        smoothed = self.smoothed[0] if center.ndim == 1 else self.smoothed
        return np.clip(center + smoothed, self.ctrl_low, self.ctrl_high)


class PoseRunner:
    """Runs an exported pose estimator on camera images (in the spec's camera order)."""

    def __init__(self, export_dir: str | pathlib.Path, threads: int = 1):
        export_dir = pathlib.Path(export_dir)
        spec_path = export_dir / POSE_SPEC_FILE
        if not spec_path.exists():
            raise ValueError(f"{export_dir} holds no exported pose estimator (no {POSE_SPEC_FILE})")
        self.spec = json.loads(spec_path.read_text())
        self.session = _session(export_dir / self.spec["model_file"], threads)
        self.image_shape = tuple(self.spec["inputs"]["images"]["shape"][1:])
        self.cameras = [camera["name"] for camera in self.spec["cameras"]]

    def estimate(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [cameras, H, W, 3] (or [batch, cameras, H, W, 3]) -> the block's
        position [3] (m, world) and unit quaternion [4] (w, x, y, z, world), batched alike."""
        images = np.asarray(images)
        single = images.ndim == len(self.image_shape)
        batch = images[None] if single else images
        if batch.dtype != np.uint8 or batch.shape[1:] != self.image_shape:
            raise ValueError(
                f"images are {images.dtype}{images.shape}; expected uint8 {self.image_shape} "
                f"or (batch, *{self.image_shape}), cameras in the order {self.cameras}"
            )
        pos, quat = self.session.run(["pos", "quat"], {"images": batch})
        return (pos[0], quat[0]) if single else (pos, quat)
