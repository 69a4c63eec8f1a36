"""PPO's pure pieces: hyperparameters, GAE, the clipped loss, and running normalization.

Arrays are time-major, `[T, B]` (rollout steps x environments). The training loop that
rolls out the networks and applies these lives elsewhere; everything here is a pure
function that can be tested against a hand-worked example.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics

from dexjax import networks

ADVANTAGE_EPS = 1e-8
"""Added to the advantages' standard deviation so a constant minibatch does not divide by 0."""


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (paper Appendix D.1, Table 10, unless said otherwise)."""

    gamma: float = 0.998
    """Discount per 80 ms control step (a horizon of about 500 steps, 40 s)."""
    gae_lambda: float = 0.95
    clip: float = 0.2
    """PPO's ratio clip epsilon."""
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    """Weight of the value loss in the summed loss. The paper is silent; 0.5 is the common
    choice. The networks share no weights, so this only scales the value gradient relative
    to the policy's in the joint gradient-norm clip (Adam undoes any other scaling)."""
    lr: float = 3e-4
    """Adam learning rate."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip. The paper is silent; 1.0 is a common safe value."""
    obs_clip: float = 5.0
    """Normalized observations are clipped to +-obs_clip standard deviations."""

    def __post_init__(self):
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must be in [0, 1]")
        if self.clip <= 0.0 or self.lr <= 0.0 or self.max_grad_norm <= 0.0:
            raise ValueError("clip, lr and max_grad_norm must be positive")


# ---------------------------------------------------------------------------------------
# Advantages


def gae(
    rewards: jax.Array,
    values: jax.Array,
    bootstrap_value: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over a time-major rollout.

    Args:
      rewards: [T, B] reward of step t (obs_t, action_t) -> obs_{t+1}.
      values: [T, B] V(obs_t).
      bootstrap_value: [B] V(obs_T), the observation after the last step.
      terminated: [T, B] step t ended the episode in a terminal state (the object dropped):
        its future is worth 0, so nothing is bootstrapped and the recursion is cut.
      truncated: [T, B] step t ended the episode by time (a timeout) in a non-terminal
        state. The environment resets automatically, so obs_{t+1} (and values[t+1]) belong
        to the NEXT episode and the true successor's value is unknown: the step's TD error
        is set to 0 (advantage 0, return target = values[t]) and the recursion is cut too.
        This is Brax's convention; bootstrapping properly from the final observation would
        need the environment to expose that observation before its reset. A step that is
        both terminated and truncated counts as terminated.
      gamma: discount.
      lam: GAE lambda.

    Returns:
      (advantages [T, B], returns [T, B] = advantages + values, the value targets), where
      delta_t = r_t + gamma * (1 - terminated_t) * V_{t+1} - V_t (0 if truncated_t) and
      A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}, done = terminated | truncated.
      Treat both as data: they are not meant to be differentiated.
    """
    chex.assert_rank([rewards, values, terminated, truncated], 2)
    chex.assert_equal_shape([rewards, values, terminated, truncated])
    chex.assert_shape(bootstrap_value, values.shape[1:])
    terminated = terminated.astype(bool)
    truncated = truncated.astype(bool) & ~terminated
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = rewards + gamma * jnp.where(terminated, 0.0, next_values) - values
    deltas = jnp.where(truncated, 0.0, deltas)
    carry_on = 1.0 - (terminated | truncated).astype(values.dtype)

    def backward(next_advantage, inputs):
        delta, carry_on_t = inputs
        advantage = delta + gamma * lam * carry_on_t * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(bootstrap_value), (deltas, carry_on), reverse=True
    )
    return advantages, advantages + values


# ---------------------------------------------------------------------------------------
# Loss


def ppo_loss(
    dist: networks.Distribution,
    action: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    value: jax.Array,
    value_target: jax.Array,
    config: PPOConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate + value regression - entropy bonus, on one minibatch.

    Args:
      dist: the current policy's distribution at the minibatch's steps, leading dims [...].
      action: [..., A] the actions taken (bin indices or real values).
      old_log_prob: [...] their log-probability under the policy that collected them.
      advantages: [...] raw advantages; normalized here over the whole minibatch.
      value: [...] current value predictions, in normalized units.
      value_target: [...] return targets in the same normalized units (the paper normalizes
        value targets by running statistics; see `normalize`).
      config: coefficients `clip`, `value_coef`, `entropy_coef`.

    Returns:
      (loss, metrics): loss = policy + value_coef * value - entropy_coef * entropy, and the
      scalar metrics `loss/policy`, `loss/value` (0.5 * mean squared error), `loss/entropy`
      (mean entropy, the bonus before its coefficient), `loss/approx_kl` (the low-variance
      estimator mean((r - 1) - log r) of KL(old || new)) and `loss/clipfrac` (share of
      samples whose ratio r lies outside [1 - clip, 1 + clip]).
    """
    chex.assert_equal_shape([old_log_prob, advantages, value, value_target])
    log_ratio = networks.log_prob(dist, action) - old_log_prob
    ratio = jnp.exp(log_ratio)
    advantages = (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_EPS)
    clipped_ratio = jnp.clip(ratio, 1.0 - config.clip, 1.0 + config.clip)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped_ratio * advantages))
    value_loss = 0.5 * jnp.mean(jnp.square(value - value_target))
    mean_entropy = jnp.mean(networks.entropy(dist))
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * mean_entropy
    metrics = {
        "loss/policy": policy_loss,
        "loss/value": value_loss,
        "loss/entropy": mean_entropy,
        "loss/approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "loss/clipfrac": jnp.mean((jnp.abs(ratio - 1.0) > config.clip).astype(jnp.float32)),
    }
    return loss, jax.lax.stop_gradient(metrics)


def explained_variance(pred: jax.Array, target: jax.Array) -> jax.Array:
    """1 - Var(target - pred) / Var(target): 1 is perfect, 0 no better than the mean.

    NaN when the targets are constant (nothing to explain).
    """
    target_var = jnp.var(target)
    return jnp.where(target_var > 0.0, 1.0 - jnp.var(target - pred) / target_var, jnp.nan)


# ---------------------------------------------------------------------------------------
# Running normalization (Brax's Welford running statistics)

RunningStats = running_statistics.RunningStatisticsState
"""Running count, mean, summed variance and std of a quantity (Brax's acme port)."""


def init_stats(shape: tuple[int, ...] = ()) -> RunningStats:
    """Statistics of a quantity of per-sample `shape` ([D] observations, () returns):
    mean 0 and std 1 until the first update, so normalizing starts as the identity."""
    stats = running_statistics.init_state(jax.ShapeDtypeStruct(shape, jnp.float32))
    # Brax keeps `std_eps` as a Python float, which a jitted function returns as an array:
    # a leaf that changes type would make the training function compile twice.
    return stats.replace(std_eps=jnp.asarray(stats.std_eps, jnp.float32))


def update_stats(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Fold a batch `[..., *shape]` (any number of leading sample dims) into the stats."""
    return running_statistics.update(stats, batch)


def normalize(stats: RunningStats, x: jax.Array, clip: float | None = 5.0) -> jax.Array:
    """(x - mean) / std, clipped to +-clip standard deviations (the paper's +-5 sigma for
    observations); `clip=None` leaves it unclipped (value targets)."""
    return running_statistics.normalize(x, stats, max_abs_value=clip)


def denormalize(stats: RunningStats, x: jax.Array) -> jax.Array:
    """x * std + mean: turns normalized value predictions back into returns."""
    return running_statistics.denormalize(x, stats)
