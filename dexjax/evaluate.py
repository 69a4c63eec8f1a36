"""The paper's evaluation protocol (Section 6.2, Table 3): consecutive successes.

A trial is one episode of the trained environment's task, with its randomizations: the
goal is redrawn after each success (rotation within 0.4 rad of the goal), and the trial
ends when the object is dropped, after 50 successes, or when 80 s pass without a success.
Its score is the number of goals reached. Trials run as one batch of environments; the
policy acts deterministically (its most likely action) unless asked to sample.
"""

import dataclasses
import functools
import math
import pathlib
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dexjax import checkpoint, networks, train
from dexjax import config as config_lib
from dexjax import env as env_lib

TIMEOUT_S = 80.0
MAX_SUCCESSES = 50


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    trials: int = 100
    seed: int = 12345
    policy: Literal["trained", "random"] = "trained"
    sample: bool = False
    """Sample actions from the policy instead of taking the most likely one."""
    timeout_s: float = TIMEOUT_S
    """Simulated time without a success that ends a trial (the paper's 80 s)."""
    steps_per_call: int = 50
    """Control steps per compiled call (the host checks for finished trials between)."""

    def __post_init__(self):
        if self.trials < 1 or self.steps_per_call < 1 or self.timeout_s <= 0:
            raise ValueError("trials, steps_per_call and timeout_s must be positive")
        if self.policy not in ("trained", "random"):
            raise ValueError(f"policy must be 'trained' or 'random', not {self.policy!r}")


@dataclasses.dataclass(frozen=True)
class EvalResult:
    successes: np.ndarray  # [trials] consecutive successes, in trial order
    dropped: np.ndarray  # [trials] bool: the trial ended with a drop
    timed_out: np.ndarray  # [trials] bool: 80 s passed without a success
    steps: np.ndarray  # [trials] control steps the trial lasted
    returns: np.ndarray  # [trials] reward summed over the trial
    checkpoint_update: int | None

    def summary(self) -> dict:
        s = self.successes
        return {
            "trials": len(s),
            "mean": float(np.mean(s)),
            "std": float(np.std(s)),
            "median": float(np.median(s)),
            "sorted": sorted(int(x) for x in s),
            "drops": int(self.dropped.sum()),
            "timeouts": int(self.timed_out.sum()),
            "max_successes": int((s >= MAX_SUCCESSES).sum()),
            "mean_steps": float(np.mean(self.steps)),
            "mean_return": float(np.mean(self.returns)),
            "checkpoint_update": self.checkpoint_update,
        }


def act(
    run_config: config_lib.RunConfig,
    env: env_lib.HandEnv,
    config: EvalConfig,
    learner: checkpoint.LearnerState | None,
    carry: networks.LSTMCarry,
    state: env_lib.State,
    start: jax.Array,
    key: jax.Array,
) -> tuple[networks.LSTMCarry, jax.Array]:
    """Actions [B, A] of a batch of environments: the trained policy (most likely action,
    or sampled) or uniformly random bins (or values, for a continuous task)."""
    if config.policy == "random":
        shape = (start.shape[0], env.action_size)
        bins = run_config.env.action_bins
        if bins:
            return carry, networks.bins_to_action(jax.random.randint(key, shape, 0, bins), bins)
        return carry, jax.random.uniform(key, shape, minval=-1.0)
    return train.policy_step(
        run_config.train,
        env.action_size,
        learner.params,
        learner.normalizers,
        carry,
        state.obs["state"],
        start,
        key if config.sample else None,
    )


def eval_env_config(env_config: env_lib.EnvConfig, timeout_s: float = TIMEOUT_S):
    """The training task with the protocol's limits: 50 successes, 80 s per goal."""
    return dataclasses.replace(
        env_config,
        max_successes=MAX_SUCCESSES,
        steps_without_success=max(1, int(round(timeout_s / env_config.control_dt))),
    )


@struct.dataclass
class _Trials:
    env_state: env_lib.State
    carry: networks.LSTMCarry
    start: jax.Array  # [N] the next step starts an episode
    finished: jax.Array  # [N] the trial's first episode has ended
    successes: jax.Array  # [N]
    dropped: jax.Array
    timed_out: jax.Array
    steps: jax.Array
    returns: jax.Array
    key: jax.Array


def load_learner(
    run_dir: pathlib.Path, run_config: config_lib.RunConfig, env, step: int | None = None
) -> checkpoint.LearnerState:
    """The learning state of a run's checkpoint (the latest unless `step` is given), or of
    its policy file (`checkpoint.POLICY_FILE`) when the directory holds no checkpoint."""
    run_dir = pathlib.Path(run_dir)
    checkpoints, policy_file = run_dir / checkpoint.CHECKPOINT_DIR, run_dir / checkpoint.POLICY_FILE
    if not checkpoints.is_dir():
        if not policy_file.exists():
            raise checkpoint.CheckpointError(f"no checkpoint in {run_dir}")
        learner = checkpoint.load_policy(policy_file, run_config.train, env)
        if step is not None and step != int(learner.update):
            raise checkpoint.CheckpointError(
                f"{run_dir} holds only the policy of update {int(learner.update)}, not {step}"
            )
        return learner
    mngr = checkpoint.manager(checkpoints)
    try:
        return checkpoint.restore(mngr, run_config.train, env, step)
    finally:
        mngr.close()


def evaluate(
    run_config: config_lib.RunConfig,
    learner: checkpoint.LearnerState | None,
    config: EvalConfig = EvalConfig(),
    progress: bool = True,
    vision=None,
) -> EvalResult:
    """Run `config.trials` trials of the protocol with the learner's policy (or random).

    `vision` (a `dexjax.vision.evaluate_pose.VisionPose`, or None for the true state) gives
    the policy the object pose a CNN estimates from camera images rendered of each state.
    """
    from tqdm import tqdm

    env = env_lib.HandEnv(eval_env_config(run_config.env, config.timeout_s))
    tc = run_config.train
    if config.policy == "trained" and learner is None:
        raise ValueError("a trained policy needs a checkpoint")
    n = config.trials

    def one_step(trials: _Trials, learner: checkpoint.LearnerState | None, vision):
        key, key_act = jax.random.split(trials.key)
        seen = trials.env_state
        if vision is not None:  # only then split again: true-state trials keep their keys
            key, key_render = jax.random.split(key)
            seen = seen.replace(obs={**seen.obs, "state": vision.observe(key_render, env, seen)})
        carry, action = act(
            run_config, env, config, learner, trials.carry, seen, trials.start, key_act
        )
        state = jax.vmap(env.step)(trials.env_state, action)
        m = state.metrics
        ends = (m["env/episode_done"] > 0) & ~trials.finished
        truncated = state.info["truncation"] > 0
        trials = trials.replace(
            env_state=state,
            carry=carry,
            start=state.done > 0,
            finished=trials.finished | ends,
            successes=jnp.where(ends, m["env/successes"], trials.successes),
            dropped=jnp.where(ends, m["env/dropped"] > 0, trials.dropped),
            timed_out=jnp.where(
                ends, truncated & (m["env/successes"] < MAX_SUCCESSES), trials.timed_out
            ),
            steps=trials.steps + (~trials.finished).astype(jnp.int32),
            returns=trials.returns + jnp.where(trials.finished, 0.0, state.reward),
            key=key,
        )
        return trials

    @jax.jit
    def run_steps(trials: _Trials, learner: checkpoint.LearnerState | None, vision) -> _Trials:
        return jax.lax.fori_loop(
            0, config.steps_per_call, lambda _, t: one_step(t, learner, vision), trials
        )

    @jax.jit
    def start(key: jax.Array) -> _Trials:
        key_reset, key = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(key_reset, n))
        zeros = jnp.zeros(n)
        return _Trials(
            env_state=state,
            carry=networks.initial_carry(n, tc.network.policy_lstm),
            start=jnp.ones(n, bool),
            finished=jnp.zeros(n, bool),
            successes=zeros,
            dropped=jnp.zeros(n, bool),
            timed_out=jnp.zeros(n, bool),
            steps=jnp.zeros(n, jnp.int32),
            returns=zeros,
            key=key,
        )

    trials = start(jax.random.key(config.seed))
    # The longest possible trial: 50 goals, each reached just before its timeout.
    limit = MAX_SUCCESSES * env.config.steps_without_success + 1
    bar = tqdm(total=n, unit="trial", desc="evaluating", disable=not progress)
    done = 0
    for _ in range(math.ceil(limit / config.steps_per_call)):
        trials = run_steps(trials, learner, vision)
        finished = int(jax.device_get(trials.finished).sum())
        bar.update(finished - done)
        done = finished
        if done == n:
            break
    bar.close()
    out = jax.device_get(trials)
    return EvalResult(
        successes=np.asarray(out.successes).astype(int),
        dropped=np.asarray(out.dropped),
        timed_out=np.asarray(out.timed_out),
        steps=np.asarray(out.steps),
        returns=np.asarray(out.returns),
        checkpoint_update=None if learner is None else int(learner.update),
    )


def format_summary(summary: dict, label: str) -> str:
    """A line in the paper's format: mean ± std, median, and the sorted trials."""
    return (
        f"{label}: {summary['mean']:.1f} ± {summary['std']:.1f} consecutive successes "
        f"(median {summary['median']:.0f}, {summary['trials']} trials; "
        f"{summary['drops']} drops, {summary['timeouts']} timeouts, "
        f"{summary['max_successes']} reached {MAX_SUCCESSES}; "
        f"mean return {summary['mean_return']:.1f})\n"
        f"sorted trials: {summary['sorted']}"
    )


@dataclasses.dataclass(frozen=True)
class TrialRecording:
    qpos: np.ndarray  # [T, nq] the pose before each control step, then the last pose
    mocap_quat: np.ndarray  # [T, nmocap, 4] the goal marker's orientation (the goal)
    successes: np.ndarray  # [T] goals reached so far
    ended: bool  # the trial ended (drop, timeout or 50 successes) within the recording
    reached: int  # goals reached in the recorded steps, the step that ended the trial included
    # With a pose estimator (vision trials), what it saw and how far off it was before each
    # step; the last frame of a trial that goes on has no step after it (NaN errors, the
    # previous step's images).
    camera_images: np.ndarray | None = None  # uint8 [T, cameras, H, W, 3], randomized
    position_error_mm: np.ndarray | None = None  # [T] estimated vs true block position
    rotation_error_deg: np.ndarray | None = None  # [T] estimated vs true orientation


def record_trial(
    run_config: config_lib.RunConfig,
    learner: checkpoint.LearnerState | None,
    config: EvalConfig = EvalConfig(),
    steps: int = 300,
    vision=None,
) -> TrialRecording:
    """The poses of one trial, for a video: at most `steps` control steps of the trial that
    `evaluate` runs with `config`, `trials=1` and `vision` (only `seed`, `policy`, `sample`
    and `timeout_s` of `config` are used). Frames stop where the trial ends.

    `vision` (a `dexjax.vision.evaluate_pose.VisionPose` made for a batch of 1, or None for
    the true state) gives the policy the pose its CNN estimates from randomized renders of
    each state, as in `evaluate`; the recording then keeps those renders and the errors.
    """
    if steps < 1:
        raise ValueError("steps must be positive")
    if config.policy == "trained" and learner is None:
        raise ValueError("a trained policy needs a checkpoint")
    env = env_lib.HandEnv(eval_env_config(run_config.env, config.timeout_s))
    tc = run_config.train

    def see(state, key_render, vision):
        """The state as the policy sees it, and what vision saw and estimated (batch of 1)."""
        if vision is None:
            return state, ()
        images = vision.images(key_render, state.data.qpos, state.data.mocap_quat)
        pose = vision.predict(images)
        obs = jax.vmap(env.policy_obs_with_pose)(state, pose.pos, pose.quat)
        seen = state.replace(obs={**state.obs, "state": obs})
        return seen, (images[0], pose.pos[0], pose.quat[0])

    def step(learner, vision, carry, _):
        state, lstm, start, key = carry
        key, key_act = jax.random.split(key)
        key_render = None
        if vision is not None:  # the keys of `evaluate`'s step
            key, key_render = jax.random.split(key)
        seen, record = see(state, key_render, vision)
        lstm, action = act(run_config, env, config, learner, lstm, seen, start, key_act)
        pose = (state.data.qpos[0], state.data.mocap_quat[0], state.task.successes[0])
        state = jax.vmap(env.step)(state, action)
        ends = state.metrics["env/episode_done"][0] > 0
        reached = state.metrics["env/successes"][0]  # after the step, before any reset
        return (state, lstm, state.done > 0, key), (pose, ends, reached, record)

    @jax.jit
    def run(key: jax.Array, learner: checkpoint.LearnerState | None, vision):
        key_reset, key = jax.random.split(key)  # as in `evaluate`, with one trial
        state = jax.vmap(env.reset)(jax.random.split(key_reset, 1))
        carry = (state, networks.initial_carry(1, tc.network.policy_lstm), jnp.ones(1, bool), key)
        # `learner` and `vision` go in as `run`'s arguments, not from the enclosing scope: a
        # closed-over array is baked into the program as a constant, so the program (and its
        # persistent-cache key) would depend on the weights, and on the Warp render data, of
        # which MuJoCo Warp leaves `contact.geomcollisionid` uninitialized (a new cache key,
        # and a full recompile, in every process).
        body = functools.partial(step, learner, vision)
        (last, *_), (poses, ends, reached, record) = jax.lax.scan(body, carry, None, length=steps)
        final = (last.data.qpos[0], last.data.mocap_quat[0], last.task.successes[0])
        return poses, final, ends, reached, record

    out = jax.device_get(run(jax.random.key(config.seed), learner, vision))
    poses, final, ends, reached, record = out
    ends = np.asarray(ends)
    ended = bool(ends.any())
    # After its last step the environment has already reset: keep the poses before it.
    count = int(np.argmax(ends)) + 1 if ended else steps + 1
    qpos, mocap_quat, successes = (
        np.concatenate([np.asarray(p), np.asarray(f)[None]])[:count]
        for p, f in zip(poses, final, strict=True)
    )
    vision_fields = {}
    if vision is not None:
        vision_fields = _vision_record(env, record, qpos, count)
    return TrialRecording(
        qpos=qpos,
        mocap_quat=mocap_quat,
        successes=successes,
        ended=ended,
        reached=int(np.asarray(reached)[min(count, steps) - 1]),
        **vision_fields,
    )


def _vision_record(env: env_lib.HandEnv, record, qpos: np.ndarray, count: int) -> dict:
    """The `TrialRecording` fields of a vision trial: renders and errors per frame."""
    from dexjax.vision import dataset, pose_net

    images, est_pos, est_quat = (np.asarray(x) for x in record)
    steps = min(count, len(images))  # frames followed by a step (and its estimate)
    true_pos, true_quat = dataset.object_pose(env.mj_model, qpos[:steps])
    pad = count - steps  # the last frame of a trial that goes on
    position = np.asarray(pose_net.position_error_mm(est_pos[:steps], true_pos))
    rotation = np.asarray(pose_net.rotation_error_deg(est_quat[:steps], true_quat))
    return {
        "camera_images": np.concatenate([images[:steps], images[steps - 1 : steps][:pad]]),
        "position_error_mm": np.concatenate([position, np.full(pad, np.nan)]),
        "rotation_error_deg": np.concatenate([rotation, np.full(pad, np.nan)]),
    }
