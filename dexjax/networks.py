"""Policy and value networks of the paper (Appendix D.1) and their action distributions.

Both networks have the same shape and separate weights: Dense(hidden) + ReLU -> LSTM(lstm)
-> head (or, feed-forward, a second Dense(hidden) + ReLU in place of the LSTM; the policy
alone can be made feed-forward, as in the paper's Table 5). They take observations that are
already normalized (see `dexjax.ppo.normalize`), so the running statistics stay outside the
parameters the optimizer touches.

Every network is a step function `(carry, obs [B, D], reset [B]) -> (carry, out)`;
`unroll` scans it over time-major sequences `[T, B, ...]`. `reset[t]` marks the first step
of an episode: the carry is zeroed BEFORE step t's input is read, so no memory leaks across
the environment's automatic resets.

The policy's output is a distribution struct: `Categorical` (the paper's 11 bins per
actuator, which it found to work much better) or `Gaussian` (a state-independent learned
log std). Actuators are independent: log-probabilities and entropies are summed over them.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shape of the policy and value networks (the paper's sizes by default)."""

    hidden: int = 1024
    """Width of the Dense + ReLU layer in front of the LSTM."""
    lstm: int = 512
    """LSTM size; 0 makes both networks feed-forward (a second Dense(hidden) + ReLU in place
    of the LSTM; their carries are empty)."""
    policy_memory: bool = True
    """False makes the policy feed-forward while the value network keeps its LSTM (the
    middle row of the paper's Table 5)."""
    action_bins: int = 11
    """Bins per actuator of the categorical head; 0 selects a Gaussian head."""
    action_size: int = 20
    """Number of actuators (20 for the Shadow hand, 18 with a locked wrist)."""

    def __post_init__(self):
        if self.hidden < 1 or self.lstm < 0 or self.action_size < 1:
            raise ValueError("need hidden >= 1, lstm >= 0 and action_size >= 1")
        if self.action_bins == 1 or self.action_bins < 0:
            raise ValueError("action_bins must be 0 (Gaussian) or at least 2")

    @property
    def policy_lstm(self) -> int:
        """LSTM size of the policy (0: feed-forward)."""
        return self.lstm if self.policy_memory else 0

    @property
    def value_lstm(self) -> int:
        """LSTM size of the value network (0: feed-forward)."""
        return self.lstm


# ---------------------------------------------------------------------------------------
# Recurrent torso


@struct.dataclass
class LSTMCarry:
    """Recurrent state of one network. Feed-forward networks carry arrays of width 0."""

    c: jax.Array  # [B, lstm] cell state
    h: jax.Array  # [B, lstm] hidden state (the LSTM's output)


def initial_carry(batch: int, lstm: int) -> LSTMCarry:
    """The all-zero carry of an episode start: `[batch, lstm]` each."""
    # Two arrays, not one shared: a donated runner must not hold the same buffer twice.
    return LSTMCarry(c=jnp.zeros((batch, lstm)), h=jnp.zeros((batch, lstm)))


def reset_carry(carry: LSTMCarry, reset: jax.Array) -> LSTMCarry:
    """Zero the carry of the batch elements where `reset` [B] is set."""
    # `where`, not a multiplication by (1 - reset): a NaN/inf carry must not survive a reset.
    return jax.tree.map(lambda x: jnp.where(reset[:, None], jnp.zeros_like(x), x), carry)


class Torso(nn.Module):
    """Dense(hidden) + ReLU -> LSTM(lstm), or -> Dense(hidden) + ReLU if `lstm` is 0."""

    hidden: int
    lstm: int

    @nn.compact
    def __call__(
        self, carry: LSTMCarry, obs: jax.Array, reset: jax.Array
    ) -> tuple[LSTMCarry, jax.Array]:
        """One step: obs [B, D], reset [B] -> (carry, features [B, lstm or hidden])."""
        x = nn.relu(nn.Dense(self.hidden, name="dense")(obs))
        if not self.lstm:
            return carry, nn.relu(nn.Dense(self.hidden, name="dense_ff")(x))
        carry = reset_carry(carry, reset)
        (c, h), features = nn.OptimizedLSTMCell(self.lstm, name="lstm")((carry.c, carry.h), x)
        return LSTMCarry(c=c, h=h), features

    def initial_carry(self, batch: int) -> LSTMCarry:
        return initial_carry(batch, self.lstm)


# ---------------------------------------------------------------------------------------
# Action distributions (pure functions of flax.struct parameter structs)


@struct.dataclass
class Categorical:
    """Independent categoricals over the bins of each actuator."""

    logits: jax.Array  # [..., action_size, bins]


@struct.dataclass
class Gaussian:
    """Independent (unbounded) normals per actuator; the environment clips to [-1, 1]."""

    mean: jax.Array  # [..., action_size]
    log_std: jax.Array  # [..., action_size], the same for every state


Distribution = Categorical | Gaussian


def sample(dist: Distribution, key: jax.Array) -> jax.Array:
    """A random action: bin indices [..., A] (int32) or real values [..., A]."""
    if isinstance(dist, Categorical):
        return jax.random.categorical(key, dist.logits, axis=-1)
    return dist.mean + jnp.exp(dist.log_std) * jax.random.normal(key, dist.mean.shape)


def mode(dist: Distribution) -> jax.Array:
    """The most likely action (deterministic evaluation): as `sample`."""
    if isinstance(dist, Categorical):
        return jnp.argmax(dist.logits, axis=-1)
    return dist.mean


def log_prob(dist: Distribution, action: jax.Array) -> jax.Array:
    """Log-probability (density) of `action` [..., A], summed over actuators: [...]."""
    if isinstance(dist, Categorical):
        log_p = jax.nn.log_softmax(dist.logits, axis=-1)
        picked = jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)
        return jnp.sum(picked[..., 0], axis=-1)
    z = (action - dist.mean) * jnp.exp(-dist.log_std)
    per_actuator = -0.5 * z**2 - dist.log_std - 0.5 * math.log(2.0 * math.pi)
    return jnp.sum(per_actuator, axis=-1)


def entropy(dist: Distribution) -> jax.Array:
    """Entropy summed over actuators: [...]."""
    if isinstance(dist, Categorical):
        log_p = jax.nn.log_softmax(dist.logits, axis=-1)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=(-2, -1))
    per_actuator = dist.log_std + 0.5 * (1.0 + math.log(2.0 * math.pi))
    return jnp.sum(jnp.broadcast_to(per_actuator, dist.mean.shape), axis=-1)


def bins_to_action(index: jax.Array, bins: int) -> jax.Array:
    """Bin k of 0..bins-1 -> -1 + 2k/(bins-1) in [-1, 1] (the environment's grid)."""
    # One correctly rounded division of exact integers, so every grid value is the float32
    # nearest to its true value (-0.8 is np.float32(-0.8), 0 is exactly 0).
    index = jnp.asarray(index, jnp.int32)
    return (2 * index - (bins - 1)).astype(jnp.float32) / (bins - 1)


def action_to_bins(action: jax.Array, bins: int) -> jax.Array:
    """The nearest bin index of actions in [-1, 1] (inverse of `bins_to_action`)."""
    index = jnp.round((jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (bins - 1))
    return index.astype(jnp.int32)


def env_action(dist: Distribution, action: jax.Array) -> jax.Array:
    """What the environment is given for a sampled `action`: values in [-1, 1], [..., A]."""
    if isinstance(dist, Categorical):
        return bins_to_action(action, dist.logits.shape[-1])
    return jnp.clip(action, -1.0, 1.0)


# ---------------------------------------------------------------------------------------
# Networks


class PolicyNetwork(nn.Module):
    """Torso + action head; one step returns (carry, Categorical | Gaussian) over [B]."""

    config: NetworkConfig

    @nn.compact
    def __call__(
        self, carry: LSTMCarry, obs: jax.Array, reset: jax.Array
    ) -> tuple[LSTMCarry, Distribution]:
        cfg = self.config
        carry, x = Torso(cfg.hidden, cfg.policy_lstm, name="torso")(carry, obs, reset)
        # A small last layer makes the initial policy close to uniform (or to mean 0), the
        # usual PPO initialization: exploration starts broad and unbiased.
        head_init = nn.initializers.orthogonal(0.01)
        if cfg.action_bins:
            logits = nn.Dense(
                cfg.action_size * cfg.action_bins, kernel_init=head_init, name="head"
            )(x)
            logits = logits.reshape(*x.shape[:-1], cfg.action_size, cfg.action_bins)
            return carry, Categorical(logits=logits)
        mean = nn.Dense(cfg.action_size, kernel_init=head_init, name="head")(x)
        log_std = self.param("log_std", nn.initializers.zeros, (cfg.action_size,))
        return carry, Gaussian(mean=mean, log_std=jnp.broadcast_to(log_std, mean.shape))

    def initial_carry(self, batch: int) -> LSTMCarry:
        return initial_carry(batch, self.config.policy_lstm)


class ValueNetwork(nn.Module):
    """Torso + scalar head; one step returns (carry, value [B])."""

    config: NetworkConfig

    @nn.compact
    def __call__(
        self, carry: LSTMCarry, obs: jax.Array, reset: jax.Array
    ) -> tuple[LSTMCarry, jax.Array]:
        cfg = self.config
        carry, x = Torso(cfg.hidden, cfg.value_lstm, name="torso")(carry, obs, reset)
        return carry, nn.Dense(1, name="head")(x)[..., 0]

    def initial_carry(self, batch: int) -> LSTMCarry:
        return initial_carry(batch, self.config.value_lstm)


def unroll(
    network: nn.Module,
    params: Any,
    carry: LSTMCarry,
    obs: jax.Array,
    reset: jax.Array,
) -> tuple[LSTMCarry, Any]:
    """Run a step network over a time-major sequence.

    Args:
      network: `Torso`, `PolicyNetwork` or `ValueNetwork` (any `(carry, obs, reset)` step).
      params: its variables, as returned by `network.init`.
      carry: the carry before step 0, [B, ...].
      obs: [T, B, D] normalized observations.
      reset: [T, B] bool, True where step t starts an episode.

    Returns:
      (carry after step T-1, the per-step outputs stacked along a leading T axis).
    """

    def step(carry, inputs):
        obs_t, reset_t = inputs
        return network.apply(params, carry, obs_t, reset_t)

    return jax.lax.scan(step, carry, (obs, reset))
