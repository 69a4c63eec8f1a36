"""Block reorientation with the Shadow hand as pure, batched JAX functions.

The task of "Learning Dexterous In-Hand Manipulation" (OpenAI, 2018): turn the object in
the hand until it is within 0.4 rad of a goal orientation; on success a new goal is drawn
at once. Everything here is a pure function of explicit arguments: `reset(key)` and
`step(state, action)` act on ONE environment; `jax.vmap` them for a batch. The physics is
MuJoCo's C engine or MJX (`EnvConfig.backend`, see dexjax.physics), called from inside
the same compiled functions.

Conventions: quaternions (w, x, y, z); positions in metres in world axes with the origin at
the object's start position above the palm; one control step = `substeps` physics steps.

The interface is Brax's (`reset`, `step`, `observation_size`, `action_size`, a State with
`obs`, `reward`, `done`, `metrics`, `info`), so Brax's trainers can drive it too.
"""

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from dexjax import adr as adr_lib
from dexjax import constants as c
from dexjax import physics as physics_lib
from dexjax import quaternion as quat
from dexjax import randomization as dr
from dexjax import scene as scene_lib

GOAL_DISTRIBUTIONS = ("uniform", "flat", "yaw", "yaw_turn", "turn")
RELATIVE_TO = ("current", "target", "center")
TURN_DIRECTIONS = ("either", "counterclockwise", "clockwise")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The task. Defaults follow the paper (see docs in README)."""

    scene: scene_lib.SceneConfig = scene_lib.SceneConfig()
    backend: str = "auto"
    """Physics engine: "c" (MuJoCo's C engine, called from the compiled program: the
    fastest on CPUs), "mjx" (MJX inside XLA: for GPUs and TPUs), or "auto" ("c" when
    JAX's default device is a CPU, "mjx" otherwise)."""
    physics_threads: int = 0
    """Threads of the C engine (0: the cores this process may use). Results do not
    depend on it."""
    substeps: int = 10
    """Physics steps per control step: 10 x 8 ms = 80 ms, as in the paper."""
    action_bins: int = 11
    """Actions are snapped to this many evenly spaced values in [-1, 1] per actuator (the
    paper's discretization); 0 keeps them continuous."""
    action_ema: float = 0.3
    """Weight of the new action in the exponential moving average of actions."""
    relative_to: str = "current"
    """Actions move joint targets relative to the "current" joint angles (the paper's
    rule; with no action the hand sags under gravity, and the policy must hold it up),
    relative to the previous "target" (an integrating controller that does not sag), or
    relative to the "center" of each actuator's range (absolute targets: the action is
    the target's place in the range, as in Isaac Gym's and MuJoCo Playground's hands)."""
    locked_wrist: bool = False
    """Hold the two wrist joints at zero and act with the 18 finger actuators."""
    goal_distribution: str = "uniform"
    """"uniform" over SO(3) (the paper), "flat" (a face up, random yaw), "yaw" (a random
    turn about vertical of the start orientation), "yaw_turn" (the object's orientation
    when the goal is drawn, turned about vertical by an angle of magnitude in `goal_turn`:
    an easier curriculum stage, not in the paper), or "turn" (the same, about an axis
    drawn uniformly from the sphere: a stage between "yaw_turn" and "uniform")."""
    goal_turn: tuple[float, float] = (0.6, 1.2)
    """Range (rad) of the turn magnitude of "yaw_turn" and "turn" goals."""
    goal_turn_direction: str = "either"
    """Which way "yaw_turn" goals turn, seen from above: "either" (a fair coin per goal),
    "counterclockwise" (a positive angle about the world's z axis) or "clockwise"."""
    success_threshold: float = 0.4
    """Rotation angle (rad) to the goal that counts as reaching it."""
    success_bonus: float = 5.0
    drop_penalty: float = -20.0
    drop_height: float = 0.10
    """The object counts as dropped when its centre is below this height (m); it rests on
    the palm at about 0.167 m."""
    max_successes: int = 50
    steps_without_success: int = 100
    """Episode timeout: control steps allowed for reaching the current goal (8 s)."""
    settle_steps: int = 100
    """Control steps of random actions after placing the object, in `reset`."""
    settle_action_scale: float = 0.05
    """Magnitude of the random (target-relative) actions used while settling."""
    settle_attempts: int = 8
    """Placements tried in `reset` until the object stays in the hand (the paper discards
    starts whose object drops while settling)."""
    last_action_in_obs: bool = False
    """Append the last (smoothed) action to both observations."""
    randomization: dr.RandomizationConfig = dr.RandomizationConfig()
    """Domain randomization (paper Appendix C), all families on by default."""
    adr: adr_lib.ADRConfig = adr_lib.ADRConfig()
    """Automatic domain randomization (off by default)."""

    def __post_init__(self):
        if self.goal_distribution not in GOAL_DISTRIBUTIONS:
            raise ValueError(
                f"unknown goal_distribution {self.goal_distribution!r}; "
                f"choose one of {GOAL_DISTRIBUTIONS}"
            )
        if self.action_bins == 1 or self.action_bins < 0:
            raise ValueError("action_bins must be 0 (continuous) or at least 2")
        if not 0.0 < self.action_ema <= 1.0:
            raise ValueError("action_ema must be in (0, 1]")
        if self.substeps < 1 or self.settle_steps < 0 or self.settle_attempts < 1:
            raise ValueError("need substeps >= 1, settle_steps >= 0, settle_attempts >= 1")
        if not 0.0 <= self.goal_turn[0] <= self.goal_turn[1] <= math.pi:
            raise ValueError("goal_turn must be (low, high) with 0 <= low <= high <= pi")
        if self.goal_turn_direction not in TURN_DIRECTIONS:
            raise ValueError(
                f"goal_turn_direction must be one of {TURN_DIRECTIONS}, "
                f"not {self.goal_turn_direction!r}"
            )
        if self.backend not in physics_lib.BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; choose one of {physics_lib.BACKENDS}"
            )
        if self.physics_threads < 0:
            raise ValueError("physics_threads must be >= 0 (0: all usable cores)")
        if self.relative_to not in RELATIVE_TO:
            raise ValueError(f"relative_to must be one of {RELATIVE_TO}, not {self.relative_to!r}")

    @property
    def control_dt(self) -> float:
        return self.substeps * self.scene.timestep


@struct.dataclass
class TaskState:
    """Everything the task tracks besides the physics."""

    key: jax.Array
    goal: jax.Array  # [4] goal orientation
    goal_distance: jax.Array  # [] rotation angle between object and goal
    smoothed_action: jax.Array  # [action_size] EMA of actions in [-1, 1]
    successes: jax.Array  # [] int, goals reached in this episode
    steps_since_success: jax.Array  # [] int
    episode_steps: jax.Array  # [] int
    init_qpos: jax.Array  # [nq] settled start configuration reused by automatic resets
    init_ctrl: jax.Array  # [nu]


@struct.dataclass
class State:
    """One environment. Field names follow Brax's State so Brax's trainers accept it."""

    data: Any  # mjx.Data (MJX backend) or physics.CData (C engine): same field names
    task: TaskState
    domain: dr.DomainState
    obs: dict[str, jax.Array]  # "state" (policy) and "privileged_state" (value)
    reward: jax.Array
    done: jax.Array
    metrics: dict[str, jax.Array]
    info: dict[str, Any]  # Brax bookkeeping only: "truncation" (1.0 on timeouts)


@dataclasses.dataclass(frozen=True)
class _Indices:
    """Index tables computed once from the MjModel."""

    actuator_qpos: np.ndarray  # [nu] qpos address of each actuated joint
    coupled_qpos: np.ndarray  # [nu] qpos address of the coupled joint, or -1
    hand_qpos: np.ndarray  # [24]
    hand_qvel: np.ndarray  # [24]
    object_qpos: int  # start of the object's free joint (pos 3, quat 4)
    object_qvel: int
    object_body: int
    fingertip_sites: np.ndarray  # [5]
    ctrl_low: np.ndarray  # [nu]
    ctrl_high: np.ndarray  # [nu]
    active_actuators: np.ndarray  # actuators driven by the policy
    symmetries: np.ndarray  # [k, 4] rotations mapping the object onto itself
    flat_bases: np.ndarray  # [f, 4] rotations that put one face up


def _indices(model: mujoco.MjModel, config: EnvConfig) -> _Indices:
    def joint(name):
        return model.joint(c.PREFIX + name)

    actuated = [joint(n) for n in c.ACTUATED_JOINTS]
    coupled = [
        joint(c.COUPLED_JOINTS[n]).qposadr[0] if n in c.COUPLED_JOINTS else -1
        for n in c.ACTUATED_JOINTS
    ]
    hand = [joint(n) for n in c.HAND_JOINTS]
    obj = model.joint(c.OBJECT_JOINT)
    active = [
        i
        for i, n in enumerate(c.ACTUATED_JOINTS)
        if not (config.locked_wrist and n in c.WRIST_JOINTS)
    ]
    symmetries, face_normals = _object_symmetries(config.scene.object)
    return _Indices(
        actuator_qpos=np.array([j.qposadr[0] for j in actuated]),
        coupled_qpos=np.array(coupled),
        hand_qpos=np.array([j.qposadr[0] for j in hand]),
        hand_qvel=np.array([j.dofadr[0] for j in hand]),
        object_qpos=int(obj.qposadr[0]),
        object_qvel=int(obj.dofadr[0]),
        object_body=model.body(c.OBJECT_BODY).id,
        fingertip_sites=np.array([model.site(c.PREFIX + s).id for s in c.FINGERTIP_SITES]),
        ctrl_low=model.actuator_ctrlrange[:, 0].copy(),
        ctrl_high=model.actuator_ctrlrange[:, 1].copy(),
        active_actuators=np.array(active),
        symmetries=symmetries,
        flat_bases=np.stack([_rotation_to_up(n) for n in face_normals]),
    )


def _model_info(model: mujoco.MjModel, idx: _Indices, config_object: str) -> dr.ModelInfo:
    hand_joints = np.array([model.joint(c.PREFIX + n).id for n in c.HAND_JOINTS])
    return dr.ModelInfo(
        nbody=model.nbody,
        npair=model.npair,
        nv=model.nv,
        nu=model.nu,
        njnt=model.njnt,
        na=len(idx.active_actuators),
        hand_dofs=idx.hand_qvel,
        hand_joints=hand_joints,
        object_body=idx.object_body,
        object_geom=model.geom(c.OBJECT_GEOM).id,
        object_mass=float(model.body_mass[idx.object_body]),
        object_scalable=config_object == "block",
    )


def _rotation_to_up(normal: np.ndarray) -> np.ndarray:
    """Quaternion rotating the unit vector `normal` onto +z."""
    up = np.array([0.0, 0.0, 1.0])
    axis = np.cross(normal, up)
    s, cos = np.linalg.norm(axis), float(np.dot(normal, up))
    if s < 1e-9:  # already up, or straight down
        return np.array([1.0, 0, 0, 0]) if cos > 0 else np.array([0.0, 1, 0, 0])
    angle = np.arctan2(s, cos)
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis / s])


def _object_symmetries(obj: str) -> tuple[np.ndarray, np.ndarray]:
    """(rotations mapping the object onto itself, outward face normals)."""
    if obj == "block":
        normals = np.concatenate([np.eye(3), -np.eye(3)])
        rotations = []
        # The 24 proper rotations of the cube: any face to +z, then 4 turns about z.
        for n in normals:
            base = _rotation_to_up(n)
            for k in range(4):
                turn = np.array([np.cos(k * np.pi / 4), 0, 0, np.sin(k * np.pi / 4)])
                rotations.append(np.asarray(quat.multiply(turn, base)))
        return np.stack(rotations), normals
    # Octagonal prism (axis z, side faces at multiples of 45 degrees): 8 turns x 2 flips.
    side = [np.array([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4), 0.0]) for k in range(8)]
    normals = np.stack([np.array([0.0, 0, 1]), np.array([0.0, 0, -1]), *side])
    rotations = []
    for flip in (np.array([1.0, 0, 0, 0]), np.array([0.0, 1, 0, 0])):
        for k in range(8):
            turn = np.array([np.cos(k * np.pi / 8), 0, 0, np.sin(k * np.pi / 8)])
            rotations.append(np.asarray(quat.multiply(turn, flip)))
    return np.stack(rotations), normals


class HandEnv:
    """The block-reorientation task on one MJX model (Brax environment interface)."""

    def __init__(self, config: EnvConfig = EnvConfig()):
        self.config = config
        self.mj_model = scene_lib.build_model(config.scene)
        if physics_lib.resolve(config.backend) == "c":
            self.physics = physics_lib.CBackend(
                self.mj_model,
                lambda: scene_lib.build_spec(config.scene),
                key=(config.scene,),
                nthread=config.physics_threads or None,
            )
        else:
            self.physics = physics_lib.MjxBackend(self.mj_model)
        # The nominal model as JAX arrays: the episode's physics is computed from it.
        self.mjx_model = self.physics.model
        self.idx = _indices(self.mj_model, config)
        self.dr_info = _model_info(self.mj_model, self.idx, config.scene.object)
        self._origin = jnp.array(scene_lib.OBJECT_START_POS)

    # An environment is fully determined by its config: two built from equal configs are
    # interchangeable, so jitted functions taking one as a static argument compile once.
    def __hash__(self) -> int:
        return hash(self.config)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.config == self.config

    # ---- Brax interface ---------------------------------------------------------------

    @property
    def action_size(self) -> int:
        return len(self.idx.active_actuators)

    @property
    def observation_size(self) -> dict[str, tuple[int, ...]]:
        extra = self.action_size if self.config.last_action_in_obs else 0
        return {"state": (22 + extra,), "privileged_state": (84 + extra,)}

    @property
    def backend(self) -> str:
        """The physics engine this environment runs: "c" or "mjx"."""
        return self.physics.name

    def reset(self, key: jax.Array) -> State:
        """A new episode: the object on the palm in a random orientation, then settling.

        Args:
          key: a single typed or raw PRNG key (not a batch: vmap for batches).
        """
        _check_single_key(key)
        key, key_place, key_goal, key_dr, key_obs = jax.random.split(key, 5)
        data = self._place_and_settle(key_place)
        domain = self._new_domain(key_dr, self.initial_ranges(), data)

        task = TaskState(
            key=key,
            goal=jnp.zeros(4),
            goal_distance=jnp.zeros(()),
            smoothed_action=jnp.zeros(self.action_size),
            successes=jnp.zeros((), jnp.int32),
            steps_since_success=jnp.zeros((), jnp.int32),
            episode_steps=jnp.zeros((), jnp.int32),
            init_qpos=data.qpos,
            init_ctrl=data.ctrl,
        )
        task = self._new_goal(task, data, key_goal)
        data = _show_goal(data, task.goal)
        obs, effects = self._observe(key_obs, data, task, domain)
        domain = domain.replace(effects=effects)
        zero = jnp.zeros(())
        return State(
            data=data,
            task=task,
            domain=domain,
            obs=obs,
            reward=zero,
            done=zero,
            metrics={
                **self._metrics(task, domain, zero, zero, zero, zero, zero),
                "env/nonfinite": zero,
                "env/nonfinite_action": zero,
            },
            info={"truncation": zero},
        )

    def step(self, state: State, action: jax.Array) -> State:
        """One 80 ms control step, resetting the environment when its episode ended.

        Args:
          state: one environment's state.
          action: [action_size] relative joint targets in [-1, 1].
        """
        if action.shape != (self.action_size,):
            raise ValueError(
                f"action has shape {action.shape}; expected ({self.action_size},) for one "
                "environment (vmap step for a batch)"
            )
        cfg = self.config
        task, domain = state.task, state.domain
        key, key_goal, key_reset, key_act, key_force, key_dt, key_obs = jax.random.split(
            task.key, 7
        )

        # A non-finite action never reaches the physics: it counts as no action.
        bad_action = ~jnp.all(jnp.isfinite(action))
        action = jnp.where(jnp.isfinite(action), action, 0.0)
        action = self.discretize(jnp.clip(action, -1.0, 1.0))
        smoothed = cfg.action_ema * action + (1.0 - cfg.action_ema) * task.smoothed_action
        data, effects = self._actuate(state.data, smoothed, domain, key_act, key_force)
        domain = domain.replace(effects=effects)
        data = self._physics(data, domain.episode, key_dt)

        obj_quat = self._object_quat(data)
        distance = quat.angle_between(obj_quat, task.goal)
        # A failed step (non-finite physics, or a warning of the C engine) ends the episode
        # like a timeout, with no reward: what it computed is meaningless.
        tips = data.site_xpos[self.idx.fingertip_sites]
        failed = self.physics.failed(data) | ~jnp.isfinite(distance) | ~jnp.all(jnp.isfinite(tips))
        distance = jnp.where(failed, task.goal_distance, distance)
        success = (distance < cfg.success_threshold) & ~failed
        dropped = (self._object_pos(data)[2] < cfg.drop_height) & ~failed
        progress = task.goal_distance - distance
        reward = (progress + cfg.success_bonus * success + cfg.drop_penalty * dropped).astype(
            jnp.float32
        )

        successes = task.successes + success
        task = task.replace(
            key=key,
            goal_distance=distance,
            smoothed_action=smoothed,
            successes=successes,
            steps_since_success=jnp.where(success, 0, task.steps_since_success + 1),
            episode_steps=task.episode_steps + 1,
        )
        task = _select(success, self._new_goal(task, data, key_goal), task)

        truncated = (successes >= cfg.max_successes) | (
            task.steps_since_success >= cfg.steps_without_success
        )
        truncated = (truncated | failed) & ~dropped
        done = dropped | truncated
        metrics = self._metrics(task, domain, progress, success, dropped, done, reward)
        metrics["env/nonfinite"] = failed.astype(jnp.float32)
        metrics["env/nonfinite_action"] = bad_action.astype(jnp.float32)

        reset_data, reset_task, reset_domain = self._begin_episode(
            data, task, domain, key_reset, done
        )
        task = _select(done, reset_task, task)
        domain = _select(done, reset_domain, domain)
        data = _show_goal(_select(done, reset_data, data), task.goal)
        obs, effects = self._observe(key_obs, data, task, domain)
        return State(
            data=data,
            task=task,
            domain=domain.replace(effects=effects),
            obs=obs,
            reward=reward,
            done=done.astype(jnp.float32),
            metrics=metrics,
            info={**state.info, "truncation": truncated.astype(jnp.float32)},
        )

    # ---- actions ----------------------------------------------------------------------

    def discretize(self, action: jax.Array) -> jax.Array:
        """Snap actions to the `action_bins` grid on [-1, 1] (identity if continuous)."""
        bins = self.config.action_bins
        if not bins:
            return action
        index = jnp.round((action + 1.0) * 0.5 * (bins - 1))
        return index / (bins - 1) * 2.0 - 1.0

    def joint_targets(
        self, qpos: jax.Array, action: jax.Array, ctrl: jax.Array, relative_to: str | None = None
    ) -> jax.Array:
        """Position targets for all 20 actuators from relative actions.

        Each active actuator's new target is a centre plus `action` times half its control
        range, clipped to the range. The centre is the joint's current angle (for the four
        coupled actuators, the sum of the pair's angles) when `relative_to` is "current",
        the previous target `ctrl` when it is "target", and the middle of the control range
        when it is "center". Inactive (locked wrist) actuators keep their target from `ctrl`.
        """
        idx = self.idx
        mode = relative_to or self.config.relative_to
        if mode == "current":
            current = qpos[idx.actuator_qpos]
            coupled = jnp.where(idx.coupled_qpos >= 0, qpos[np.maximum(idx.coupled_qpos, 0)], 0.0)
            center = (current + coupled)[idx.active_actuators]
        elif mode == "target":
            center = ctrl[idx.active_actuators]
        else:
            center = (0.5 * (idx.ctrl_high + idx.ctrl_low))[idx.active_actuators]
        half_range = 0.5 * (idx.ctrl_high - idx.ctrl_low)[idx.active_actuators]
        target = center + action * half_range
        ctrl = ctrl.at[idx.active_actuators].set(target)
        return jnp.clip(ctrl, idx.ctrl_low, idx.ctrl_high)

    # ---- physics ----------------------------------------------------------------------

    def _actuate(
        self,
        data: mjx.Data,
        action: jax.Array,
        domain: dr.DomainState,
        key_act: jax.Array,
        key_force: jax.Array,
    ) -> tuple[mjx.Data, dr.Effects]:
        """Joint targets and the object's random force for one control step.

        The action passes through the unmodeled effects (delay, noise), becomes joint
        targets, then the backlash dead band; a no-op when those effects are off.
        """
        unmodeled = self.config.randomization.unmodeled
        episode, effects = domain.episode, domain.effects
        applied, effects = dr.perturb_action(key_act, action, episode, effects, unmodeled)
        command = self.joint_targets(data.qpos, applied, effects.command)
        ctrl, effects = dr.backlash(command, effects, episode)
        mass = self._object_mass(episode)
        effects = dr.update_force(key_force, effects, episode, mass, unmodeled)
        xfrc = data.xfrc_applied.at[self.idx.object_body, :3].set(effects.force)
        return data.replace(ctrl=ctrl, xfrc_applied=xfrc), effects

    def _episode_model(self, episode: dr.Episode | None) -> mjx.Model:
        """The MJX model of this episode's physics (the nominal one when that is off)."""
        if episode is None or not self.config.randomization.physics.enabled:
            return self.mjx_model
        return dr.episode_model(self.mjx_model, episode, self.dr_info)

    def _object_mass(self, episode: dr.Episode) -> jax.Array:
        return self._episode_model(episode).body_mass[self.idx.object_body]

    def _physics(
        self, data: mjx.Data, episode: dr.Episode | None = None, key: jax.Array | None = None
    ) -> mjx.Data:
        """`substeps` physics steps, with this episode's physics and step lengths."""
        model = self._episode_model(episode)
        if episode is None or not self.config.randomization.unmodeled.enabled:
            return self.physics.step(model, data, self.config.substeps)
        durations = dr.substep_durations(
            key, self.config.scene.timestep, episode.timestep_rate, self.config.substeps
        )
        return self.physics.step(model, data, durations)

    def _place_and_settle(self, key: jax.Array) -> mjx.Data:
        """The object above the palm in a random orientation, settled by random actions.

        Placements whose object drops while settling are tried again with a new key, up
        to `settle_attempts` times (the last attempt is kept whatever happens).
        """
        m = self.mj_model
        o = self.idx.object_qpos

        def attempt(key):
            key_quat, key_settle = jax.random.split(key)
            qpos = jnp.array(m.qpos0)
            qpos = qpos.at[o : o + 3].set(self._origin)
            qpos = qpos.at[o + 3 : o + 7].set(quat.random_uniform(key_quat))
            return self._settle(self.physics.make_data(qpos), key_settle)

        def dropped(data):  # or failed: a start whose physics failed is redrawn too
            fell = self._object_pos(data)[2] < self.config.drop_height
            return fell | self.physics.failed(data)

        def retry(carry):
            key, n, _ = carry
            key, key_attempt = jax.random.split(key)
            return key, n + 1, attempt(key_attempt)

        def again(carry):
            _, n, data = carry
            return dropped(data) & (n < self.config.settle_attempts)

        # Start from a placeholder that counts as dropped, so `attempt` is traced once.
        placeholder = jnp.array(m.qpos0).at[o + 2].set(-1.0)
        fallen = jax.tree.map(jnp.zeros_like, jax.eval_shape(self.physics.make_data, placeholder))
        fallen = fallen.replace(qpos=placeholder)
        _, _, data = jax.lax.while_loop(again, retry, (key, 0, fallen))
        return data

    def _settle(self, data: mjx.Data, key: jax.Array) -> mjx.Data:
        """Random target-relative actions for `settle_steps` control steps."""
        scale = self.config.settle_action_scale

        def control_step(d, key_step):
            a = scale * jax.random.uniform(key_step, (self.action_size,), minval=-1, maxval=1)
            d = d.replace(ctrl=self.joint_targets(d.qpos, a, d.ctrl, relative_to="target"))
            return self._physics(d), None

        keys = jax.random.split(key, self.config.settle_steps)
        data, _ = jax.lax.scan(control_step, data, keys)
        return data

    def initial_ranges(self) -> dr.Ranges:
        """Sampling ranges at the start of training (ADR's start, or the paper's ranges)."""
        if self.config.adr.enabled:
            return adr_lib.init(self.config.adr, self.config.randomization).ranges
        return dr.initial_ranges(self.config.randomization)

    def _new_domain(self, key: jax.Array, ranges: dr.Ranges, data: mjx.Data) -> dr.DomainState:
        """This episode's randomization, sampled from `ranges` relative to nominal.

        With ADR on, some episodes pin one parameter at a boundary of its range.
        """
        key_boundary, key_episode = jax.random.split(key)
        boundary = adr_lib.sample_boundary(key_boundary, self.config.adr)
        pinned = adr_lib.pin(ranges, boundary)
        episode = dr.sample_episode(key_episode, self.config.randomization, pinned, self.dr_info)
        tips = data.site_xpos[self.idx.fingertip_sites]
        effects = dr.initial_effects(self.action_size, self.mj_model.nu, data.ctrl, tips)
        return dr.DomainState(
            ranges=ranges, episode=episode, effects=effects, adr_boundary=boundary
        )

    def _begin_episode(
        self,
        data: mjx.Data,
        task: TaskState,
        domain: dr.DomainState,
        key: jax.Array,
        due: jax.Array | bool = True,
    ) -> tuple[mjx.Data, TaskState, dr.DomainState]:
        """The start of a new episode, used by the automatic reset inside `step`.

        It reuses the settled configuration from `reset` (as Brax and Playground do), with
        the object turned by a random symmetry of its own (the same physical contact
        state in a new orientation) and a fresh goal; the episode's randomization is
        drawn anew from the current ranges. `step` computes it for every environment and
        keeps it where the episode ended (`due`), which is where the C engine computes
        the new kinematics.
        """
        key_sym, key_goal, key_dr = jax.random.split(key, 3)
        o = self.idx.object_qpos
        sym = jnp.asarray(self.idx.symmetries)[
            jax.random.randint(key_sym, (), 0, len(self.idx.symmetries))
        ]
        qpos = task.init_qpos
        qpos = qpos.at[o + 3 : o + 7].set(quat.multiply(qpos[o + 3 : o + 7], sym))
        new = self.physics.restart(data, qpos, task.init_ctrl, jnp.asarray(due))
        fresh = task.replace(
            smoothed_action=jnp.zeros_like(task.smoothed_action),
            successes=jnp.zeros_like(task.successes),
            steps_since_success=jnp.zeros_like(task.steps_since_success),
            episode_steps=jnp.zeros_like(task.episode_steps),
        )
        domain = self._new_domain(key_dr, domain.ranges, new)
        return new, self._new_goal(fresh, new, key_goal), domain

    # ---- goals, observations, metrics --------------------------------------------------

    def sample_goal(self, key: jax.Array, current: jax.Array | None = None) -> jax.Array:
        """A goal orientation from the configured distribution ("yaw_turn" and "turn" goals
        turn the `current` object orientation)."""
        dist = self.config.goal_distribution
        if dist == "uniform":
            return quat.random_uniform(key)
        if dist in ("yaw_turn", "turn"):
            if current is None:
                raise ValueError(f'"{dist}" goals need the current object orientation')
            key_angle, key_sign = jax.random.split(key)
            low, high = self.config.goal_turn
            angle = jax.random.uniform(key_angle, (), minval=low, maxval=high)
            if dist == "turn":  # the axis's sign covers both directions
                axis = jax.random.normal(key_sign, (3,))
                axis = axis / jnp.linalg.norm(axis)
            else:
                axis = jnp.array([0.0, 0.0, 1.0])
                direction = self.config.goal_turn_direction
                if direction == "either":
                    angle = jnp.where(jax.random.bernoulli(key_sign), angle, -angle)
                elif direction == "clockwise":
                    angle = -angle
            return quat.multiply(quat.from_axis_angle(axis, angle), current)
        key_yaw, key_face = jax.random.split(key)
        yaw = quat.random_yaw(key_yaw)
        if dist == "yaw":
            return yaw
        bases = jnp.asarray(self.idx.flat_bases)
        base = bases[jax.random.randint(key_face, (), 0, len(bases))]
        return quat.multiply(yaw, base)

    def _new_goal(self, task: TaskState, data: mjx.Data, key: jax.Array) -> TaskState:
        goal = self.sample_goal(key, self._object_quat(data))
        return task.replace(
            goal=goal, goal_distance=quat.angle_between(self._object_quat(data), goal)
        )

    def _object_pos(self, data: mjx.Data) -> jax.Array:
        return data.qpos[self.idx.object_qpos : self.idx.object_qpos + 3]

    def _object_quat(self, data: mjx.Data) -> jax.Array:
        o = self.idx.object_qpos
        return quat.normalize(data.qpos[o + 3 : o + 7])

    def _observe(
        self, key: jax.Array, data: mjx.Data, task: TaskState, domain: dr.DomainState
    ) -> tuple[dict[str, jax.Array], dr.Effects]:
        """Noisy policy inputs and noiseless privileged inputs (asymmetric actor-critic)."""
        idx = self.idx
        truth = dr.PolicyReadings(
            fingertips=data.site_xpos[idx.fingertip_sites],
            object_pos=self._object_pos(data),
            object_quat=self._object_quat(data),
        )
        frames = data.site_xmat[idx.fingertip_sites].reshape(-1, 3, 3)
        seen, effects = dr.observe(
            key,
            truth,
            frames,
            domain.episode,
            domain.effects,
            self.config.randomization.observation,
            self.config.control_dt,
        )

        def policy_inputs(r: dr.PolicyReadings) -> list[jax.Array]:
            rel = quat.positive_w(quat.relative(quat.normalize(r.object_quat), task.goal))
            return [(r.fingertips - self._origin).ravel(), r.object_pos - self._origin, rel]

        v = idx.object_qvel
        extra = [task.smoothed_action] if self.config.last_action_in_obs else []
        policy = jnp.concatenate([*policy_inputs(seen), *extra])
        tips, obj_pos, rel = policy_inputs(truth)
        privileged = jnp.concatenate(
            [
                tips,
                obj_pos,
                truth.object_quat,
                task.goal,
                rel,
                data.qpos[idx.hand_qpos],
                data.qvel[idx.hand_qvel],
                data.qvel[v : v + 3],
                data.qvel[v + 3 : v + 6],
                *extra,
            ]
        )
        return {"state": policy, "privileged_state": privileged}, effects

    def policy_obs_with_pose(
        self, state: State, object_pos: jax.Array, object_quat: jax.Array
    ) -> jax.Array:
        """The policy's observation of `state` with the object's pose replaced by an
        estimate (e.g. a camera-based pose estimator's): `object_pos` [3] in metres and
        `object_quat` [4] (w, x, y, z), both in the world frame. Fingertip readings (and the
        last action, when observed) stay as the state observed them."""
        tips = 3 * len(self.idx.fingertip_sites)
        obs = state.obs["state"]
        rel = quat.positive_w(quat.relative(quat.normalize(object_quat), state.task.goal))
        return jnp.concatenate([obs[:tips], object_pos - self._origin, rel, obs[tips + 7 :]])

    def _metrics(
        self, task, domain, progress, success, dropped, done, reward
    ) -> dict[str, jax.Array]:
        cfg = self.config
        f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
        unmodeled = cfg.randomization.unmodeled
        mean_dt = cfg.scene.timestep + (
            1.0 / domain.episode.timestep_rate if unmodeled.enabled else 0.0
        )
        sampled = dr.metrics(domain.episode, domain.effects, 1000.0 * mean_dt)
        return {
            **{k: f32(v) for k, v in sampled.items()},
            "adr/boundary": f32(domain.adr_boundary),
            "reward/progress": f32(progress),
            "reward/success": f32(success) * cfg.success_bonus,
            "reward/drop": f32(dropped) * cfg.drop_penalty,
            "env/goal_distance": f32(task.goal_distance),
            "env/successes": f32(task.successes),
            "env/dropped": f32(dropped),
            "env/episode_done": f32(done),
            "env/episode_steps": f32(task.episode_steps),
            "env/reward": f32(reward),
        }


def _show_goal(data: mjx.Data, goal: jax.Array) -> mjx.Data:
    """Turn the (visual only) goal marker to the goal orientation, for rendering."""
    return data.replace(mocap_quat=goal[None])


def _select(pred: jax.Array, on_true, on_false):
    """Per-environment choice between two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _check_single_key(key: jax.Array) -> None:
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if (typed and key.ndim != 0) or (not typed and key.shape != (2,)):
        raise ValueError(
            f"reset takes one key, got shape {key.shape}; use jax.vmap(env.reset) for a batch"
        )


def make_env(object: str = "block", **overrides) -> HandEnv:
    """The block-reorientation environment.

    Args:
      object: "block" or "octagon".
      **overrides: EnvConfig fields, e.g. `locked_wrist=True`, `goal_distribution="yaw"`.
    """
    scene_config = scene_lib.SceneConfig(object=object)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(EnvConfig)}
    if unknown:
        valid = sorted(f.name for f in dataclasses.fields(EnvConfig))
        raise ValueError(f"unknown EnvConfig fields {sorted(unknown)}; valid: {valid}")
    return HandEnv(EnvConfig(scene=scene_config, **overrides))
