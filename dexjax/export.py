"""Export a trained policy for a robot runtime: `policy.onnx` and `policy_spec.json`.

    result = export_policy("runs/cpu-1", "export/cpu-1")   # latest checkpoint

`policy.onnx` is one control step of the deterministic policy as evaluated,
`train.policy_step` with the checkpoint's parameters and normalizer closed over, traced by
JAX and translated primitive by primitive (`dexjax.onnx_convert`):

    inputs   obs    [batch, obs_size] float32   raw observation (the graph normalizes it)
             h, c   [batch, lstm]     float32   LSTM state; zeros at an episode start
    outputs  action       [batch, A] float32    the action the environment receives, in [-1, 1]
             h_out, c_out [batch, lstm] float32 the LSTM state for the next step
             bins         [batch, A] int32      the argmax bin of each actuator
             target_delta [batch, A] float32    action x half the actuator's control range (rad)

Episode starts: JAX's `start` flag zeroes the LSTM state before the step; in ONNX the
caller passes zeros for h and c instead (the graph's start flag is fixed to False).

`policy_spec.json` describes what the graph does not: the observation layout (names,
slices, units, frames), the actuators in order with their control ranges, how joint
targets follow from `target_delta` (EMA smoothing, relative_to rule, coupled joints,
clipping), the control period, the initial state, the versions and the run's config. It is
generated from the run's config and environment. `dexjax.onnx_runner` is a reference
runner that needs only numpy and onnxruntime.
"""

import dataclasses
import hashlib
import importlib.metadata
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from dexjax import checkpoint, evaluate, networks, onnx_convert, run, scene, train
from dexjax import config as config_lib
from dexjax import constants as c
from dexjax import env as env_lib

POLICY_FILE = "policy.onnx"
SPEC_FILE = "policy_spec.json"
SPEC_FORMAT = 1
SUPPORTED_OPSETS = (13, 26)
"""Inclusive range of ONNX opsets the export supports (each checked with onnxruntime 1.31.1)."""
DEFAULT_OPSET = 17
INPUT_NAMES = ("obs", "h", "c")
OUTPUT_NAMES = ("action", "h_out", "c_out", "bins", "target_delta")
AXES = ("x", "y", "z")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out_dir: pathlib.Path
    policy_path: pathlib.Path
    spec_path: pathlib.Path
    checkpoint_update: int
    opset: int
    max_abs_diff: float
    """Largest difference between onnxruntime and JAX on the export-time check inputs."""


def check_opset(opset: int) -> None:
    low, high = SUPPORTED_OPSETS
    if not isinstance(opset, int) or not low <= opset <= high:
        raise ValueError(f"unsupported ONNX opset {opset!r}; supported: {low} to {high}")


def policy_function(
    run_config: config_lib.RunConfig, env: env_lib.HandEnv, learner: checkpoint.LearnerState
) -> Callable:
    """`(obs, h, c) -> (action, h_out, c_out, bins, target_delta)`: `train.policy_step`
    (deterministic) with the learner closed over, plus the per-actuator target deltas."""
    tc = run_config.train
    bins = tc.network.action_bins
    if not bins:
        raise ValueError("only categorical policies (network.action_bins > 0) can be exported")
    half_range = 0.5 * (env.idx.ctrl_high - env.idx.ctrl_low)[env.idx.active_actuators]
    half_range = jnp.asarray(half_range, jnp.float32)

    def step(obs, h, c):
        start = jnp.zeros(obs.shape[:1], bool)  # the caller zeroes h and c at a start
        carry, action = train.policy_step(
            tc,
            env.action_size,
            learner.params,
            learner.normalizers,
            networks.LSTMCarry(c=c, h=h),
            obs,
            start,
        )
        # action is exactly a grid value, so this recovers the argmax bin.
        index = networks.action_to_bins(action, bins)
        return action, carry.h, carry.c, index, action * half_range

    return step


def trace_policy(step: Callable, obs_size: int, lstm: int):
    """The jaxpr of `step` for any batch size, and its symbolic batch dimension."""
    (batch,) = jax.export.symbolic_shape("batch")
    specs = (
        jax.ShapeDtypeStruct((batch, obs_size), jnp.float32),
        jax.ShapeDtypeStruct((batch, lstm), jnp.float32),
        jax.ShapeDtypeStruct((batch, lstm), jnp.float32),
    )
    return jax.make_jaxpr(step)(*specs), onnx_convert.Batch(symbol=batch)


# ---------------------------------------------------------------------------------------
# The spec


def observation_layout(env: env_lib.HandEnv) -> list[dict]:
    """The policy observation's parts in order (see HandEnv._observe), sizes checked
    against the environment's observation size."""
    tips = [f"{site}.{axis}" for site in c.FINGERTIP_SITES for axis in AXES]
    parts = [
        (
            "fingertip_pos",
            tips,
            "m",
            "world axes, relative to the object's start point (origin_world)",
        ),
        (
            "object_pos",
            [f"object.{a}" for a in AXES],
            "m",
            "world axes, relative to the object's start point (origin_world)",
        ),
        (
            "relative_goal_quat",
            ["w", "x", "y", "z"],
            "unit quaternion (w, x, y, z)",
            "goal * conj(object orientation), both world-frame orientations; "
            "the sign is chosen so that w >= 0",
        ),
    ]
    active = [c.ACTUATED_JOINTS[i] for i in env.idx.active_actuators]
    if env.config.last_action_in_obs:
        parts.append(
            (
                "last_smoothed_action",
                [f"{j}.smoothed_action" for j in active],
                "[-1, 1]",
                "the EMA of past actions that drove the previous step (zeros at a start)",
            )
        )
    layout, offset = [], 0
    for name, entries, units, frame in parts:
        layout.append(
            {
                "name": name,
                "slice": [offset, offset + len(entries)],
                "size": len(entries),
                "entries": entries,
                "units": units,
                "frame": frame,
            }
        )
        offset += len(entries)
    expected = env.observation_size["state"][0]
    if offset != expected:
        raise RuntimeError(
            f"observation layout has {offset} entries but the environment observes "
            f"{expected}: update export.observation_layout to match HandEnv._observe"
        )
    return layout


def action_layout(env: env_lib.HandEnv) -> dict:
    """The policy's actuators in output order, with ranges, and the ones it does not drive."""
    idx, model = env.idx, env.mj_model
    active = [int(i) for i in idx.active_actuators]

    def actuator(i: int) -> dict:
        joint = c.ACTUATED_JOINTS[i]
        low, high = float(idx.ctrl_low[i]), float(idx.ctrl_high[i])
        coupled = c.COUPLED_JOINTS.get(joint)
        return {
            "actuator": model.actuator(i).name,
            "joint": c.PREFIX + joint,
            "coupled_joint": None if coupled is None else c.PREFIX + coupled,
            "ctrl_range": [low, high],
            "half_range": 0.5 * (high - low),
            "model_index": i,
        }

    return {
        "size": len(active),
        "actuators": [actuator(i) for i in active],
        "held_actuators": [
            {**actuator(i), "rule": "not driven by the policy: keeps its current target"}
            for i in range(model.nu)
            if i not in active
        ],
        "units": "rad (position targets of the hand's joints)",
    }


def decoding(env: env_lib.HandEnv, bins: int) -> dict:
    cfg = env.config
    center = {
        "current": "the joint's current angle; for a coupled actuator the sum of its joint's "
        "and its coupled_joint's angles (the tendon drives J1 + J0)",
        "target": "the actuator's previous target (after clipping)",
        "center": "the middle of the actuator's control range, (ctrl_low + ctrl_high) / 2",
    }[cfg.relative_to]
    return {
        "bins": bins,
        "bin_values": [float(v) for v in networks.bins_to_action(np.arange(bins), bins)],
        "bin_to_action": "action = (2 * bin - (bins - 1)) / (bins - 1)",
        "ema": cfg.action_ema,
        "relative_to": cfg.relative_to,
        "center": center,
        "rule": [
            "delta = target_delta (graph output) = action * half_range, per actuator",
            f"smoothed = {cfg.action_ema} * delta + {1 - cfg.action_ema:.6g} * smoothed_prev "
            "(smoothed_prev = 0 at an episode start)",
            "target = clip(center + smoothed, ctrl_low, ctrl_high)",
        ],
    }


def versions() -> dict[str, str]:
    """Versions of the packages the export depends on (the run's list plus ONNX's)."""
    out = run.versions()
    for name in ("onnx", "onnxruntime", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def policy_spec(
    run_config: config_lib.RunConfig,
    env: env_lib.HandEnv,
    run_dir: pathlib.Path,
    update: int,
    opset: int,
    policy_sha256: str,
) -> dict:
    lstm = run_config.train.network.policy_lstm
    obs_size = env.observation_size["state"][0]
    return {
        "format": SPEC_FORMAT,
        "policy_file": POLICY_FILE,
        "policy_sha256": policy_sha256,
        "opset": opset,
        "source": {"run_dir": str(pathlib.Path(run_dir).absolute()), "checkpoint_update": update},
        "inputs": {
            "obs": {"shape": ["batch", obs_size], "dtype": "float32", "normalized": False},
            "h": {"shape": ["batch", lstm], "dtype": "float32"},
            "c": {"shape": ["batch", lstm], "dtype": "float32"},
        },
        "outputs": {
            "action": {"shape": ["batch", env.action_size], "dtype": "float32"},
            "h_out": {"shape": ["batch", lstm], "dtype": "float32"},
            "c_out": {"shape": ["batch", lstm], "dtype": "float32"},
            "bins": {"shape": ["batch", env.action_size], "dtype": "int32"},
            "target_delta": {"shape": ["batch", env.action_size], "dtype": "float32"},
        },
        "initial_state": {
            "h": 0.0,
            "c": 0.0,
            "size": lstm,
            "rule": "pass zeros for h and c at every episode start; otherwise feed back "
            "h_out and c_out of the previous step",
        },
        "observation": {
            "size": obs_size,
            "layout": observation_layout(env),
            "origin_world": [float(x) for x in scene.OBJECT_START_POS],
            "normalizer_clip_sigma": run_config.train.ppo.obs_clip,
            "quaternion_order": "w, x, y, z",
        },
        "action": action_layout(env),
        "decoding": decoding(env, run_config.train.network.action_bins),
        "control_period_s": env.config.control_dt,
        "versions": versions(),
        "config": config_lib.to_dict(run_config),
    }


# ---------------------------------------------------------------------------------------
# Export


def load_run(
    run_dir: str | pathlib.Path, step: int | None = None
) -> tuple[config_lib.RunConfig, env_lib.HandEnv, checkpoint.LearnerState]:
    """(config, environment, learner) of a run's checkpoint (default: the latest).

    Raises RunDirError (a ValueError) for a directory that is not a run, and
    CheckpointError for a run without that checkpoint.
    """
    run_dir = pathlib.Path(run_dir)
    config = run.read_config(run_dir)  # a RunDirError (ValueError) when this is not a run
    env = run.make_env(config)
    return config, env, evaluate.load_learner(run_dir, config, env, step)


def check_inputs(env: env_lib.HandEnv, learner: checkpoint.LearnerState, lstm: int):
    """A few observations around the normalizer's mean, and random LSTM states (batch 3)."""
    rng = np.random.default_rng(0)
    stats = learner.normalizers.policy_obs
    mean, std = np.asarray(stats.mean, np.float32), np.asarray(stats.std, np.float32)
    size = env.observation_size["state"][0]
    obs = (mean + std * rng.normal(size=(3, size)) * 2.0).astype(np.float32)
    h = rng.uniform(-0.5, 0.5, size=(3, lstm)).astype(np.float32)
    cell = rng.uniform(-1.0, 1.0, size=(3, lstm)).astype(np.float32)
    return obs, h, cell


def run_both(
    model: onnx.ModelProto,
    fn: Callable,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    inputs,
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Run the model in onnxruntime and `fn` jitted in JAX on `inputs`: (onnx outputs, jax
    outputs, largest difference); an error if any output's shape or dtype differs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = session.run(list(output_names), dict(zip(input_names, inputs, strict=True)))
    want = [np.asarray(x) for x in jax.jit(fn)(*inputs)]
    worst = 0.0
    for name, a, b in zip(output_names, got, want, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise RuntimeError(
                f"ONNX output {name} is {a.dtype}{a.shape}, JAX's is {b.dtype}{b.shape}"
            )
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)))
    return got, want, worst


def verify(model: onnx.ModelProto, step: Callable, inputs) -> float:
    """Run the model in onnxruntime and `step` in JAX on `inputs`; the largest difference."""
    got, want, worst = run_both(model, step, INPUT_NAMES, OUTPUT_NAMES, inputs)
    if not np.array_equal(got[OUTPUT_NAMES.index("bins")], want[OUTPUT_NAMES.index("bins")]):
        raise RuntimeError("ONNX and JAX choose different bins on the check inputs")
    if worst > 1e-5:
        raise RuntimeError(f"ONNX and JAX differ by {worst:g} on the check inputs")
    return worst


def write_model_and_spec(
    out_dir: pathlib.Path,
    model: onnx.ModelProto,
    model_file: str,
    spec_file: str,
    make_spec: Callable[[str], dict],
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write `model` and its spec (`make_spec(sha256 of the model bytes)`) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    model_path = out_dir / model_file
    model_path.write_bytes(data)
    spec_path = out_dir / spec_file
    spec_path.write_text(json.dumps(make_spec(hashlib.sha256(data).hexdigest()), indent=2) + "\n")
    return model_path, spec_path


def export_policy(
    run_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    step: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Write `policy.onnx` and `policy_spec.json` of a run's checkpoint (default: latest)
    to `out_dir`, after checking the ONNX graph against JAX on a few inputs."""
    check_opset(opset)
    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    if not run.read_config(run_dir).train.network.policy_lstm:  # before loading anything
        raise ValueError(
            "only LSTM policies can be exported (this run's policy is feed-forward: "
            "network.lstm=0 or network.policy_memory=false)"
        )
    config, env, learner = load_run(run_dir, step)
    lstm = config.train.network.policy_lstm
    obs_size = env.observation_size["state"][0]
    policy = policy_function(config, env, learner)
    closed, batch = trace_policy(policy, obs_size, lstm)
    update = int(learner.update)
    model = onnx_convert.jaxpr_to_onnx(
        closed,
        INPUT_NAMES,
        OUTPUT_NAMES,
        opset=opset,
        batch=batch,
        graph_name="dexjax_policy",
        doc=f"dexjax policy step of {run_dir} at update {update}; see {SPEC_FILE}",
    )
    max_abs_diff = verify(model, policy, check_inputs(env, learner, lstm))

    policy_path, spec_path = write_model_and_spec(
        out_dir,
        model,
        POLICY_FILE,
        SPEC_FILE,
        lambda sha256: policy_spec(config, env, run_dir, update, opset, sha256),
    )
    return ExportResult(
        out_dir=out_dir,
        policy_path=policy_path,
        spec_path=spec_path,
        checkpoint_update=update,
        opset=opset,
        max_abs_diff=max_abs_diff,
    )
