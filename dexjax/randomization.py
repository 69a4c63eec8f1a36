"""Domain randomization: physics, observation noise and unmodeled effects (paper App. C).

Everything is sampled per episode, relative to the nominal model (never compounding), as
plain data in the environment state (`Episode`), and applied inside the compiled step:
- physics (Table 1) builds each environment's MJX model from the nominal one;
- observation noise (Table 7) perturbs the policy's inputs only;
- unmodeled effects (Table 8) act on actions, timing and the object.

The ranges that sampling reads are data too (`Ranges`), so automatic domain randomization
(dexjax.adr) can move them during training without recompiling anything.

Backlash model (the paper's formula is only partly legible). Each actuator has a dead band
of width w (per episode, uniform in [0, backlash_max]). The target the joint actually sees
follows the commanded target like a mechanical play element:

    y_t = clip(y_{t-1}, x_t - w/2, x_t + w/2)

so after a reversal the command must travel through the whole band before the joint moves.
The paper's slack state s in [-1, 1] is s = 2 (x_t - y_t) / w.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from mujoco import mjx

from dexjax import quaternion as quat


@dataclasses.dataclass(frozen=True)
class PhysicsRandomization:
    """Table 1. Scales multiply the nominal value; noises add to it."""

    enabled: bool = True
    object_size: tuple[float, float] = (0.95, 1.05)
    """Uniform scale of the block's dimensions (mass and inertia follow)."""
    mass: tuple[float, float] = (0.5, 1.5)
    """Uniform scale of each body's mass (object and hand links)."""
    friction: tuple[float, float] = (0.7, 1.3)
    """Uniform scale of each contact pair's friction."""
    damping: tuple[float, float] = (0.3, 3.0)
    """Log-uniform scale of each hand joint's damping."""
    actuator_gain: tuple[float, float] = (0.75, 1.5)
    """Log-uniform scale of each position actuator's gain kp."""
    joint_limit_std: float = 0.15
    """Gaussian noise (rad) added to each hand joint limit."""
    gravity_std: float = 0.4
    """Gaussian noise (m/s^2) added to each gravity coordinate."""


@dataclasses.dataclass(frozen=True)
class ObservationNoise:
    """Table 7: standard deviations (m, rad) of the policy's input noise."""

    enabled: bool = True
    fingertip_correlated: float = 0.001
    fingertip_uncorrelated: float = 0.002
    object_pos_correlated: float = 0.005
    object_pos_uncorrelated: float = 0.001
    object_rot_correlated: float = 0.1
    object_rot_uncorrelated: float = 0.1
    fingertip_marker: float = 0.003
    """Marker placement error on each fingertip, in the fingertip's frame (per episode)."""
    hand_base_marker: float = 0.001
    """Placement error of the hand's base marker: shifts every position (per episode)."""
    dropout_rate: float = 0.2
    """Fingertip marker dropouts per second; a dropped marker's reading is frozen."""
    dropout_duration: float = 1.0
    """Seconds a dropout lasts."""


@dataclasses.dataclass(frozen=True)
class UnmodeledEffects:
    """Table 8 and Appendix C.2."""

    enabled: bool = True
    action_noise_uncorrelated: float = 0.05
    """Std of per-step additive action noise, as a fraction of the action range [-1, 1]."""
    action_noise_correlated: float = 0.015
    """Std of per-episode additive action noise, as a fraction of the action range."""
    action_noise_multiplicative: float = 0.015
    """Std of per-step multiplicative action noise."""
    action_delay_prob: float = 0.5
    """Probability that an actuator acts on the previous step's action this episode."""
    timestep_rate: tuple[float, float] = (1250.0, 10000.0)
    """Each substep lasts timestep + Exp(lambda) s, lambda ~ U[rate] per episode."""
    backlash_max: float = 0.05
    """Largest backlash dead band (rad); each actuator's width ~ U[0, backlash_max]."""
    force_prob: tuple[float, float] = (0.001, 0.1)
    """Per-episode probability p (log-uniform) of a new random force in a control step."""
    force_scale: float = 1.0
    """A new force is N(0, force_scale * object mass) N per axis (1 m/s^2 x mass)."""
    force_decay: float = 0.99
    """The force on the object is multiplied by this every control step."""


@dataclasses.dataclass(frozen=True)
class RandomizationConfig:
    physics: PhysicsRandomization = PhysicsRandomization()
    observation: ObservationNoise = ObservationNoise()
    unmodeled: UnmodeledEffects = UnmodeledEffects()


def preset(name: str) -> RandomizationConfig:
    """The rows of the paper's Table 4 ablation."""
    on = RandomizationConfig()
    presets = {
        "all": on,
        "none": RandomizationConfig(
            physics=PhysicsRandomization(enabled=False),
            observation=ObservationNoise(enabled=False),
            unmodeled=UnmodeledEffects(enabled=False),
        ),
        "no_observation_noise": dataclasses.replace(
            on, observation=ObservationNoise(enabled=False)
        ),
        "no_physics": dataclasses.replace(on, physics=PhysicsRandomization(enabled=False)),
        "no_unmodeled": dataclasses.replace(on, unmodeled=UnmodeledEffects(enabled=False)),
    }
    if name not in presets:
        raise ValueError(f"unknown randomization preset {name!r}; choose one of {list(presets)}")
    return presets[name]


# ---- ranges as data -------------------------------------------------------------------

RANGE_NAMES = (
    "object_size",
    "mass",
    "friction",
    "damping",
    "actuator_gain",
    "joint_limit_std",
    "gravity_std",
    "action_noise_uncorrelated",
    "backlash_max",
    "force_prob",
)
"""Parameters whose sampling range is data (`Ranges`), and so can be moved by ADR.
Scalar "std"/"max" parameters are ranges (0, value)."""


@struct.dataclass
class Ranges:
    """Current sampling ranges: low[i], high[i] for RANGE_NAMES[i]."""

    low: jax.Array  # [len(RANGE_NAMES)]
    high: jax.Array

    def get(self, name: str) -> tuple[jax.Array, jax.Array]:
        i = RANGE_NAMES.index(name)
        return self.low[i], self.high[i]


def initial_ranges(config: RandomizationConfig) -> Ranges:
    """The configured (paper) ranges."""
    p, u = config.physics, config.unmodeled
    pairs = {
        "object_size": p.object_size,
        "mass": p.mass,
        "friction": p.friction,
        "damping": p.damping,
        "actuator_gain": p.actuator_gain,
        "joint_limit_std": (0.0, p.joint_limit_std),
        "gravity_std": (0.0, p.gravity_std),
        "action_noise_uncorrelated": (0.0, u.action_noise_uncorrelated),
        "backlash_max": (0.0, u.backlash_max),
        "force_prob": u.force_prob,
    }
    low = jnp.array([pairs[n][0] for n in RANGE_NAMES], jnp.float32)
    high = jnp.array([pairs[n][1] for n in RANGE_NAMES], jnp.float32)
    return Ranges(low=low, high=high)


# ---- what is sampled per episode -------------------------------------------------------


@struct.dataclass
class Episode:
    """Parameters of one episode. Identity values when a family is switched off."""

    # physics
    object_scale: jax.Array  # []
    mass_scale: jax.Array  # [nbody]
    friction_scale: jax.Array  # [npair]
    damping_scale: jax.Array  # [nv]
    gain_scale: jax.Array  # [nu]
    joint_limit_offset: jax.Array  # [njnt, 2]
    gravity: jax.Array  # [3]
    # observation noise, correlated part
    fingertip_offset: jax.Array  # [5, 3] world frame
    fingertip_marker: jax.Array  # [5, 3] fingertip frame
    object_pos_offset: jax.Array  # [3]
    object_rot_offset: jax.Array  # [4] quaternion
    # unmodeled effects
    action_offset: jax.Array  # [na]
    action_noise_std: jax.Array  # [] uncorrelated additive std (in action units)
    delayed: jax.Array  # [na] bool
    timestep_rate: jax.Array  # [] lambda of the extra substep time
    backlash: jax.Array  # [nu] dead band width (rad)
    force_prob: jax.Array  # []


@struct.dataclass
class Effects:
    """Per-step state of the unmodeled effects and the noisy sensors."""

    previous_action: jax.Array  # [na] for the one-step delay
    command: jax.Array  # [nu] commanded joint targets, before backlash
    backlash_target: jax.Array  # [nu] what the joints see after the dead band
    force: jax.Array  # [3] random force on the object (N)
    dropout_left: jax.Array  # [5] control steps a fingertip marker stays occluded
    fingertip_reading: jax.Array  # [5, 3] last reading of each fingertip marker


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Nominal values and sizes the sampling needs, taken once from the MjModel."""

    nbody: int
    npair: int
    nv: int
    nu: int
    njnt: int
    na: int
    hand_dofs: np.ndarray  # dof indices whose damping is randomized
    hand_joints: np.ndarray  # joint indices whose limits are randomized
    object_body: int
    object_geom: int
    object_mass: float
    object_scalable: bool  # a box: its collision shape follows geom_size (meshes do not)


def _uniform(key, low, high, shape=()):
    return jax.random.uniform(key, shape, minval=low, maxval=high)


def _log_uniform(key, low, high, shape=()):
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(low), maxval=jnp.log(high)))


def sample_episode(
    key: jax.Array, config: RandomizationConfig, ranges: Ranges, info: ModelInfo
) -> Episode:
    """Draw one episode's parameters (identity for families that are switched off)."""
    keys = iter(jax.random.split(key, 24))
    p, o, u = config.physics, config.observation, config.unmodeled
    ones, zeros = jnp.ones, jnp.zeros

    if p.enabled:
        object_scale = _uniform(next(keys), *ranges.get("object_size"))
        object_scale = object_scale if info.object_scalable else jnp.ones(())
        mass_scale = _uniform(next(keys), *ranges.get("mass"), (info.nbody,))
        friction_scale = _uniform(next(keys), *ranges.get("friction"), (info.npair,))
        damping = _log_uniform(next(keys), *ranges.get("damping"), (len(info.hand_dofs),))
        damping_scale = ones(info.nv).at[info.hand_dofs].set(damping)
        gain_scale = _log_uniform(next(keys), *ranges.get("actuator_gain"), (info.nu,))
        limit_std = ranges.get("joint_limit_std")[1]
        limit_noise = limit_std * jax.random.normal(next(keys), (len(info.hand_joints), 2))
        joint_limit_offset = zeros((info.njnt, 2)).at[info.hand_joints].set(limit_noise)
        gravity_noise = ranges.get("gravity_std")[1] * jax.random.normal(next(keys), (3,))
        gravity = jnp.array([0.0, 0.0, -9.81]) + gravity_noise
    else:
        object_scale, mass_scale = ones(()), ones(info.nbody)
        friction_scale, damping_scale = ones(info.npair), ones(info.nv)
        gain_scale, joint_limit_offset = ones(info.nu), zeros((info.njnt, 2))
        gravity = jnp.array([0.0, 0.0, -9.81])

    if o.enabled:
        fingertip_offset = o.fingertip_correlated * jax.random.normal(next(keys), (5, 3))
        base = o.hand_base_marker * jax.random.normal(next(keys), (3,))
        fingertip_offset = fingertip_offset + base
        fingertip_marker = o.fingertip_marker * jax.random.normal(next(keys), (5, 3))
        object_pos_offset = base + o.object_pos_correlated * jax.random.normal(next(keys), (3,))
        object_rot_offset = small_rotation(next(keys), o.object_rot_correlated)
    else:
        fingertip_offset, fingertip_marker = zeros((5, 3)), zeros((5, 3))
        object_pos_offset, object_rot_offset = zeros(3), jnp.array([1.0, 0.0, 0.0, 0.0])

    if u.enabled:
        # Action range is [-1, 1]: a fraction f of it is 2 f in action units.
        action_offset = 2 * u.action_noise_correlated * jax.random.normal(next(keys), (info.na,))
        action_noise_std = 2 * ranges.get("action_noise_uncorrelated")[1]
        delayed = jax.random.bernoulli(next(keys), u.action_delay_prob, (info.na,))
        timestep_rate = _uniform(next(keys), *u.timestep_rate)
        backlash = _uniform(next(keys), 0.0, ranges.get("backlash_max")[1], (info.nu,))
        force_prob = _log_uniform(next(keys), *ranges.get("force_prob"))
    else:
        action_offset, action_noise_std = zeros(info.na), zeros(())
        delayed, timestep_rate = jnp.zeros(info.na, bool), jnp.array(jnp.inf)
        backlash, force_prob = zeros(info.nu), zeros(())

    return Episode(
        object_scale=object_scale,
        mass_scale=mass_scale,
        friction_scale=friction_scale,
        damping_scale=damping_scale,
        gain_scale=gain_scale,
        joint_limit_offset=joint_limit_offset,
        gravity=gravity,
        fingertip_offset=fingertip_offset,
        fingertip_marker=fingertip_marker,
        object_pos_offset=object_pos_offset,
        object_rot_offset=object_rot_offset,
        action_offset=action_offset,
        action_noise_std=action_noise_std,
        delayed=delayed,
        timestep_rate=timestep_rate,
        backlash=backlash,
        force_prob=force_prob,
    )


def small_rotation(key: jax.Array, std: float | jax.Array) -> jax.Array:
    """A rotation whose rotation vector has i.i.d. N(0, std) components."""
    rotvec = std * jax.random.normal(key, (3,))
    angle = jnp.linalg.norm(rotvec)
    axis = jnp.where(angle > 1e-12, rotvec / jnp.maximum(angle, 1e-12), jnp.array([1.0, 0, 0]))
    return quat.from_axis_angle(axis, angle)


# ---- applying the physics --------------------------------------------------------------


def episode_model(nominal: mjx.Model, episode: Episode, info: ModelInfo) -> mjx.Model:
    """The nominal model with this episode's physics (always relative to nominal)."""
    s = episode.object_scale
    mass_scale = episode.mass_scale.at[info.object_body].multiply(s**3)
    inertia_scale = episode.mass_scale.at[info.object_body].multiply(s**5)
    g = info.object_geom
    gain = nominal.actuator_gainprm.at[:, 0].multiply(episode.gain_scale)
    bias = nominal.actuator_biasprm.at[:, 1].multiply(episode.gain_scale)
    return nominal.replace(
        body_mass=nominal.body_mass * mass_scale,
        body_inertia=nominal.body_inertia * inertia_scale[:, None],
        geom_size=nominal.geom_size.at[g].multiply(s),
        geom_rbound=nominal.geom_rbound.at[g].multiply(s),
        geom_aabb=nominal.geom_aabb.at[g].multiply(s),
        pair_friction=nominal.pair_friction * episode.friction_scale[:, None],
        dof_damping=nominal.dof_damping * episode.damping_scale,
        actuator_gainprm=gain,
        actuator_biasprm=bias,
        # Noisy limits of a narrow joint can cross: keep them ordered.
        jnt_range=jnp.sort(nominal.jnt_range + episode.joint_limit_offset, axis=-1),
        opt=nominal.opt.replace(gravity=episode.gravity),
    )


def substep_durations(key: jax.Array, nominal_dt: float, rate: jax.Array, n: int) -> jax.Array:
    """[n] substep lengths: nominal_dt + Exp(rate) each (nominal_dt when rate is inf)."""
    return nominal_dt + jax.random.exponential(key, (n,)) / rate


# ---- per-step effects -------------------------------------------------------------------


def initial_effects(na: int, nu: int, ctrl: jax.Array, fingertips: jax.Array) -> Effects:
    """Effects at the start of an episode: nothing delayed, no force, markers visible."""
    return Effects(
        previous_action=jnp.zeros(na),
        command=ctrl,
        backlash_target=ctrl,
        force=jnp.zeros(3),
        dropout_left=jnp.zeros(5, jnp.int32),
        fingertip_reading=fingertips,
    )


def perturb_action(
    key: jax.Array, action: jax.Array, episode: Episode, effects: Effects, cfg: UnmodeledEffects
) -> tuple[jax.Array, Effects]:
    """Delay and noise on the policy's (smoothed) action; result clipped to [-1, 1]."""
    if not cfg.enabled:
        return action, effects
    key_add, key_mul = jax.random.split(key)
    applied = jnp.where(episode.delayed, effects.previous_action, action)
    scale = 1.0 + cfg.action_noise_multiplicative * jax.random.normal(key_mul, action.shape)
    noise = episode.action_noise_std * jax.random.normal(key_add, action.shape)
    applied = jnp.clip(applied * scale + episode.action_offset + noise, -1.0, 1.0)
    return applied, effects.replace(previous_action=action)


def backlash(command: jax.Array, effects: Effects, episode: Episode) -> tuple[jax.Array, Effects]:
    """The play element: the target the joints see lags the command by up to w/2."""
    half = 0.5 * episode.backlash
    seen = jnp.clip(effects.backlash_target, command - half, command + half)
    return seen, effects.replace(command=command, backlash_target=seen)


def update_force(
    key: jax.Array,
    effects: Effects,
    episode: Episode,
    object_mass: jax.Array,
    cfg: UnmodeledEffects,
) -> Effects:
    """Decay the random force on the object and, with probability p, add a new one."""
    if not cfg.enabled:
        return effects
    key_hit, key_force = jax.random.split(key)
    hit = jax.random.bernoulli(key_hit, episode.force_prob)
    new = cfg.force_scale * object_mass * jax.random.normal(key_force, (3,))
    return effects.replace(force=cfg.force_decay * effects.force + jnp.where(hit, new, 0.0))


@struct.dataclass
class PolicyReadings:
    """What the policy's sensors report (noisy), as opposed to the simulator's truth."""

    fingertips: jax.Array  # [5, 3]
    object_pos: jax.Array  # [3]
    object_quat: jax.Array  # [4]


def observe(
    key: jax.Array,
    truth: PolicyReadings,
    fingertip_frames: jax.Array,
    episode: Episode,
    effects: Effects,
    cfg: ObservationNoise,
    control_dt: float,
) -> tuple[PolicyReadings, Effects]:
    """Noisy sensor readings and the updated marker dropouts.

    Args:
      truth: true fingertip, object position and orientation.
      fingertip_frames: [5, 3, 3] rotation matrices of the fingertip sites (marker frames).
    """
    if not cfg.enabled:
        return truth, effects
    key_tip, key_pos, key_rot, key_drop = jax.random.split(key, 4)
    marker = jnp.einsum("kij,kj->ki", fingertip_frames, episode.fingertip_marker)
    tips = truth.fingertips + marker + episode.fingertip_offset
    tips = tips + cfg.fingertip_uncorrelated * jax.random.normal(key_tip, (5, 3))

    # Dropouts: a visible marker starts a dropout at rate `dropout_rate` per second; an
    # occluded marker repeats its last reading. `dropout_left` counts the steps of the
    # dropout still to come including this one, so a dropout freezes `duration` steps.
    duration = jnp.int32(round(cfg.dropout_duration / control_dt))
    remaining = jnp.maximum(effects.dropout_left - 1, 0)
    starts = jax.random.bernoulli(key_drop, cfg.dropout_rate * control_dt, (5,)) & (remaining == 0)
    left = jnp.where(starts, duration, remaining)
    frozen = left > 0
    tips = jnp.where(frozen[:, None], effects.fingertip_reading, tips)

    pos = truth.object_pos + episode.object_pos_offset
    pos = pos + cfg.object_pos_uncorrelated * jax.random.normal(key_pos, (3,))
    rot = quat.multiply(
        small_rotation(key_rot, cfg.object_rot_uncorrelated), episode.object_rot_offset
    )
    readings = PolicyReadings(
        fingertips=tips, object_pos=pos, object_quat=quat.multiply(rot, truth.object_quat)
    )
    return readings, effects.replace(dropout_left=left, fingertip_reading=tips)


def metrics(episode: Episode, effects: Effects, substep_ms: jax.Array) -> dict[str, jax.Array]:
    """`dr/` metrics of one environment: what was sampled (averaged over its elements)."""
    return {
        "dr/object_scale": episode.object_scale,
        "dr/mass_scale": jnp.mean(episode.mass_scale),
        "dr/friction_scale": jnp.mean(episode.friction_scale),
        "dr/damping_scale": jnp.exp(jnp.mean(jnp.log(episode.damping_scale))),
        "dr/actuator_gain_scale": jnp.exp(jnp.mean(jnp.log(episode.gain_scale))),
        "dr/joint_limit_offset_abs": jnp.mean(jnp.abs(episode.joint_limit_offset)),
        "dr/gravity_z": episode.gravity[2],
        "dr/substep_ms": substep_ms,
        "dr/action_delayed_fraction": jnp.mean(episode.delayed.astype(jnp.float32)),
        "dr/backlash": jnp.mean(episode.backlash),
        "dr/force_prob": episode.force_prob,
        "dr/force_norm": jnp.linalg.norm(effects.force),
        "dr/markers_occluded": jnp.mean((effects.dropout_left > 0).astype(jnp.float32)),
    }


@struct.dataclass
class DomainState:
    """The randomization part of an environment's state."""

    ranges: Ranges
    episode: Episode
    effects: Effects
    adr_boundary: jax.Array  # [] int: the ADR boundary this episode evaluates, or -1
