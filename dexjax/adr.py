"""Automatic domain randomization (ADR), as in OpenAI's Rubik's-cube work and DeXtreme.

Each randomized parameter has a range that starts at (or near) its nominal value. A share
of episodes pin one parameter at one end of its range (a *boundary*) and report how well
the policy did (consecutive successes). When a boundary has collected `buffer_size`
episodes, its range widens by `step` if the mean is at least `threshold_high`, and narrows
by `step` if it is below `threshold_low`.

All of it is data: `ADRState` holds the ranges and the per-boundary buffers, `update` is a
pure jittable function of a rollout's metrics, and the environments read the ranges from
their state, so ranges change inside the compiled training loop without recompiling.

Boundary b = 2 i + side refers to parameter RANGE_NAMES[i], side 0 = low end, 1 = high end.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dexjax import randomization as dr

# Parameters whose low end is fixed (standard deviations, maxima, and the random-force
# probability, whose nominal value is its lowest): only the high end moves.
HIGH_ONLY = (
    "joint_limit_std",
    "gravity_std",
    "action_noise_uncorrelated",
    "backlash_max",
    "force_prob",
)
# Nominal value each range starts from and never crosses (the unrandomized world).
NOMINAL = {
    "object_size": 1.0,
    "mass": 1.0,
    "friction": 1.0,
    "damping": 1.0,
    "actuator_gain": 1.0,
    "joint_limit_std": 0.0,
    "gravity_std": 0.0,
    "action_noise_uncorrelated": 0.0,
    "backlash_max": 0.0,
    "force_prob": 0.001,
}
# Hard limits no range may pass.
LIMITS = {
    "object_size": (0.5, 1.5),
    "mass": (0.1, 5.0),
    "friction": (0.1, 5.0),
    "damping": (0.05, 20.0),
    "actuator_gain": (0.2, 5.0),
    "joint_limit_std": (0.0, 0.5),
    "gravity_std": (0.0, 3.0),
    "action_noise_uncorrelated": (0.0, 0.3),
    "backlash_max": (0.0, 0.3),
    "force_prob": (0.001, 0.5),
}


@dataclasses.dataclass(frozen=True)
class ADRConfig:
    enabled: bool = False
    boundary_prob: float = 0.5
    """Share of episodes that pin one parameter at a boundary of its range."""
    buffer_size: int = 16
    """Episodes a boundary collects before its range is moved."""
    threshold_low: float = 5.0
    """Mean consecutive successes below which a boundary's range narrows."""
    threshold_high: float = 20.0
    """Mean consecutive successes at or above which a boundary's range widens."""
    step_fraction: float = 0.1
    """Each move is this fraction of the paper's range width for that parameter."""
    start_at_nominal: bool = True
    """Start from the unrandomized world (ADR's usual start) rather than the paper's ranges."""


@struct.dataclass
class ADRState:
    ranges: dr.Ranges
    sums: jax.Array  # [2 n] summed performance per boundary
    counts: jax.Array  # [2 n] episodes collected per boundary


def _table(values: dict) -> np.ndarray:
    return np.array([values[n] for n in dr.RANGE_NAMES], np.float32)


def boundary_mask() -> np.ndarray:
    """[2 n] True for boundaries that can move (the low end of HIGH_ONLY ones cannot)."""
    mask = np.ones((len(dr.RANGE_NAMES), 2), bool)
    for name in HIGH_ONLY:
        mask[dr.RANGE_NAMES.index(name), 0] = False
    return mask.reshape(-1)


def init(config: ADRConfig, randomization: dr.RandomizationConfig) -> ADRState:
    paper = dr.initial_ranges(randomization)
    if config.start_at_nominal:
        nominal = jnp.asarray(_table(NOMINAL))
        ranges = dr.Ranges(low=nominal, high=nominal)
    else:
        ranges = paper
    n = 2 * len(dr.RANGE_NAMES)
    return ADRState(ranges=ranges, sums=jnp.zeros(n), counts=jnp.zeros(n, jnp.int32))


def sample_boundary(key: jax.Array, config: ADRConfig) -> jax.Array:
    """The boundary an episode evaluates, or -1 (sampled from the full ranges)."""
    if not config.enabled:
        return jnp.int32(-1)
    key_use, key_which = jax.random.split(key)
    movable = jnp.asarray(boundary_mask())
    which = jax.random.choice(key_which, movable.shape[0], p=movable / movable.sum())
    use = jax.random.bernoulli(key_use, config.boundary_prob)
    return jnp.where(use, which, -1).astype(jnp.int32)


def pin(ranges: dr.Ranges, boundary: jax.Array) -> dr.Ranges:
    """`ranges` with the parameter of `boundary` fixed at that end (unchanged for -1)."""
    i, side = boundary // 2, boundary % 2
    value = jnp.where(side == 0, ranges.low[i], ranges.high[i])
    hit = (jnp.arange(ranges.low.shape[0]) == i) & (boundary >= 0)
    return dr.Ranges(low=jnp.where(hit, value, ranges.low), high=jnp.where(hit, value, ranges.high))


def update(
    state: ADRState,
    config: ADRConfig,
    randomization: dr.RandomizationConfig,
    boundary: jax.Array,
    performance: jax.Array,
    episode_done: jax.Array,
) -> ADRState:
    """Add finished boundary episodes to the buffers and move the ranges that are due.

    Args:
      boundary: [...] int, the boundary each finished episode evaluated (-1: none).
      performance: [...] consecutive successes of each episode at its end.
      episode_done: [...] 1.0 where an episode ended.
    """
    nb = state.sums.shape[0]
    use = (episode_done > 0) & (boundary >= 0)
    index = jnp.where(use, boundary, 0).reshape(-1)
    weight = use.reshape(-1).astype(jnp.float32)
    sums = state.sums + jax.ops.segment_sum(weight * performance.reshape(-1), index, nb)
    counts = state.counts + jax.ops.segment_sum(weight, index, nb).astype(jnp.int32)

    due = counts >= config.buffer_size
    mean = sums / jnp.maximum(counts, 1)
    move = jnp.where(due & (mean >= config.threshold_high), 1.0, 0.0)
    move = move - jnp.where(due & (mean < config.threshold_low), 1.0, 0.0)
    move = (move * boundary_mask()).reshape(-1, 2)  # +1 widen, -1 narrow

    paper = dr.initial_ranges(randomization)
    step = config.step_fraction * (paper.high - paper.low)
    nominal = _table(NOMINAL)
    floor = _table({k: v[0] for k, v in LIMITS.items()})
    ceiling = _table({k: v[1] for k, v in LIMITS.items()})
    low = jnp.clip(state.ranges.low - move[:, 0] * step, floor, nominal)
    high = jnp.clip(state.ranges.high + move[:, 1] * step, nominal, ceiling)
    return ADRState(
        ranges=dr.Ranges(low=low, high=high),
        sums=jnp.where(due, 0.0, sums),
        counts=jnp.where(due, 0, counts),
    )


def metrics(state: ADRState) -> dict[str, jax.Array]:
    """`adr/` metrics: every range's ends and the ADR entropy (mean log width)."""
    out = {}
    for i, name in enumerate(dr.RANGE_NAMES):
        out[f"adr/{name}_low"] = state.ranges.low[i]
        out[f"adr/{name}_high"] = state.ranges.high[i]
    width = jnp.maximum(state.ranges.high - state.ranges.low, 1e-6)
    out["adr/entropy"] = jnp.mean(jnp.log(width))
    return out
