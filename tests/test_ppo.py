"""GAE, the PPO loss and running normalization against hand-worked and plain references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexjax import networks as nets
from dexjax import ppo


@pytest.fixture(autouse=True)
def _check_key_reuse():
    with jax.debug_key_reuse(True):
        yield


def test_config_has_the_paper_values():
    cfg = ppo.PPOConfig()
    paper = {"gamma": 0.998, "gae_lambda": 0.95, "clip": 0.2, "entropy_coef": 0.01, "lr": 3e-4}
    assert {name: getattr(cfg, name) for name in paper} == paper
    assert cfg.obs_clip == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ValueError):
        ppo.PPOConfig(gamma=1.5)


# ---------------------------------------------------------------------------------------
# GAE


def _gae(rewards, values, bootstrap, terminated, truncated, gamma, lam):
    """Single environment, 3 steps, as float arrays of shape [T, 1]."""
    col = lambda x: jnp.asarray(x, jnp.float32)[:, None]
    adv, ret = ppo.gae(
        col(rewards),
        col(values),
        jnp.array([bootstrap], jnp.float32),
        col(terminated) > 0,
        col(truncated) > 0,
        gamma,
        lam,
    )
    return np.asarray(adv[:, 0]), np.asarray(ret[:, 0])


R, V, BOOT = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], 2.0


@pytest.mark.parametrize(
    "terminated, truncated, advantages",
    [
        # gamma = lam = 0.5, so gamma * lam = 0.25.
        # deltas: 1 + 0.5 * 1 - 0.5 = 1; 2 + 0.5 * 1.5 - 1 = 1.75; 3 + 0.5 * 2 - 1.5 = 2.5.
        # A2 = 2.5; A1 = 1.75 + 0.25 * 2.5 = 2.375; A0 = 1 + 0.25 * 2.375 = 1.59375.
        ([0, 0, 0], [0, 0, 0], [1.59375, 2.375, 2.5]),
        # Dropped at step 1: delta1 = 2 - 1 = 1 and the recursion stops: A0 = 1 + 0.25 * 1.
        ([0, 1, 0], [0, 0, 0], [1.25, 1.0, 2.5]),
        # Timeout at step 1: delta1 masked to 0, recursion stops: A0 = 1.
        ([0, 0, 0], [0, 1, 0], [1.0, 0.0, 2.5]),
        # Both at once counts as a drop.
        ([0, 1, 0], [0, 1, 0], [1.25, 1.0, 2.5]),
        # Dropped at the last step: no bootstrap: delta2 = 3 - 1.5 = 1.5.
        ([0, 0, 1], [0, 0, 0], [1.0 + 0.25 * 2.125, 1.75 + 0.25 * 1.5, 1.5]),
    ],
)
def test_gae_hand_worked(terminated, truncated, advantages):
    adv, ret = _gae(R, V, BOOT, terminated, truncated, gamma=0.5, lam=0.5)
    np.testing.assert_allclose(adv, advantages, rtol=1e-6)
    np.testing.assert_allclose(ret, np.add(advantages, V), rtol=1e-6)


def _textbook_gae(rewards, values, bootstrap, terminated, truncated, gamma, lam):
    """A_t = sum_l (gamma * lam)^l delta_{t+l}, summed up to the end of t's episode."""
    steps, batch = rewards.shape
    next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
    advantages = np.zeros_like(rewards)
    for b in range(batch):
        for t in range(steps):
            total = 0.0
            for u in range(t, steps):
                if terminated[u, b]:
                    delta = rewards[u, b] - values[u, b]
                elif truncated[u, b]:
                    delta = 0.0
                else:
                    delta = rewards[u, b] + gamma * next_values[u, b] - values[u, b]
                total += (gamma * lam) ** (u - t) * delta
                if terminated[u, b] or truncated[u, b]:
                    break
            advantages[t, b] = total
    return advantages, advantages + values


@pytest.mark.parametrize("gamma, lam", [(0.998, 0.95), (0.9, 1.0), (0.8, 0.0)])
def test_gae_matches_textbook_sum(gamma, lam):
    rng = np.random.default_rng(7)
    steps, batch = 9, 5
    rewards = rng.normal(size=(steps, batch))
    values = rng.normal(size=(steps, batch))
    bootstrap = rng.normal(size=batch)
    terminated = rng.random((steps, batch)) < 0.15
    truncated = rng.random((steps, batch)) < 0.15
    assert terminated.any() and truncated.any() and (terminated & truncated).any()

    expected_adv, expected_ret = _textbook_gae(
        rewards, values, bootstrap, terminated, truncated, gamma, lam
    )
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    adv, ret = ppo.gae(f32(rewards), f32(values), f32(bootstrap), terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, expected_ret, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# PPO loss: 2 samples, 1 actuator, 3 bins


CFG = ppo.PPOConfig()


def _reference_loss(probs, old_probs, action, advantages, value, target, cfg):
    """The PPO loss by hand, in numpy, from probabilities of the chosen bins."""
    idx = np.arange(len(action))
    ratio = probs[idx, action] / old_probs
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clipped = np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip)
    policy = -np.mean(np.minimum(ratio * adv, clipped * adv))
    value_loss = 0.5 * np.mean((value - target) ** 2)
    entropy = np.mean(-np.sum(probs * np.log(probs), axis=-1))
    metrics = {
        "loss/policy": policy,
        "loss/value": value_loss,
        "loss/entropy": entropy,
        "loss/approx_kl": np.mean(ratio - 1 - np.log(ratio)),
        "loss/clipfrac": np.mean(np.abs(ratio - 1) > cfg.clip),
    }
    total = policy + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    return total, metrics


def _loss(probs, old_probs, action, advantages, value, target, cfg=CFG):
    dist = nets.Categorical(logits=jnp.log(jnp.asarray(probs, jnp.float32))[:, None, :])
    return ppo.ppo_loss(
        dist,
        jnp.asarray(action)[:, None],
        jnp.log(jnp.asarray(old_probs, jnp.float32)),
        jnp.asarray(advantages, jnp.float32),
        jnp.asarray(value, jnp.float32),
        jnp.asarray(target, jnp.float32),
        cfg,
    )


CASES = {
    # Sample 0: ratio 0.5 / 0.25 = 2 with A = +1: clipped to 1.2. Sample 1: ratio 1, A = -1.
    "clip_up": dict(
        probs=np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]),
        old_probs=np.array([0.25, 0.5]),
        action=np.array([0, 2]),
        advantages=np.array([1.0, -1.0]),
        value=np.array([0.5, -0.5]),
        target=np.array([1.0, 0.0]),
    ),
    # Sample 0: ratio 0.2 / 0.4 = 0.5 with A = -3: the pessimistic min picks 0.8 * A.
    # Sample 1: ratio 0.55 / 0.5 = 1.1, inside the clip range.
    "clip_down": dict(
        probs=np.array([[0.2, 0.5, 0.3], [0.15, 0.55, 0.3]]),
        old_probs=np.array([0.4, 0.5]),
        action=np.array([0, 1]),
        advantages=np.array([-3.0, 2.0]),
        value=np.array([0.0, 1.0]),
        target=np.array([0.3, 1.0]),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ppo_loss_matches_numpy(case):
    loss, metrics = _loss(**CASES[case])
    expected_loss, expected = _reference_loss(**CASES[case], cfg=CFG)
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    assert float(metrics["loss/clipfrac"]) == 0.5


def test_ppo_loss_hand_worked_numbers():
    """The "clip_up" case worked out fully by hand."""
    loss, m = _loss(**CASES["clip_up"])
    # Normalized advantages: +-1 (mean 0, std 1). Surrogates: min(2, 1.2) = 1.2 and -1.
    np.testing.assert_allclose(m["loss/policy"], -(1.2 - 1.0) / 2, rtol=1e-5)
    np.testing.assert_allclose(m["loss/value"], 0.5 * (0.25 + 0.25) / 2, rtol=1e-6)
    # Entropies: 1.5 ln 2 and -(0.2 ln 0.2 + 0.3 ln 0.3 + 0.5 ln 0.5).
    h1 = -(0.2 * np.log(0.2) + 0.3 * np.log(0.3) + 0.5 * np.log(0.5))
    np.testing.assert_allclose(m["loss/entropy"], (1.5 * np.log(2) + h1) / 2, rtol=1e-5)
    # KL estimator: (2 - 1 - ln 2) and 0.
    np.testing.assert_allclose(m["loss/approx_kl"], (1 - np.log(2)) / 2, rtol=1e-5)
    expected = -0.1 + 0.5 * 0.125 - 0.01 * (1.5 * np.log(2) + h1) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_clipped_sample_gets_no_policy_gradient():
    case = CASES["clip_up"]
    cfg = dataclasses.replace(CFG, entropy_coef=0.0)

    def loss_of_logits(logits):
        dist = nets.Categorical(logits=logits[:, None, :])
        loss, _ = ppo.ppo_loss(
            dist,
            jnp.asarray(case["action"])[:, None],
            jnp.log(jnp.asarray(case["old_probs"], jnp.float32)),
            jnp.asarray(case["advantages"], jnp.float32),
            jnp.zeros(2),
            jnp.zeros(2),
            cfg,
        )
        return loss

    grad = jax.grad(loss_of_logits)(jnp.log(jnp.asarray(case["probs"], jnp.float32)))
    np.testing.assert_array_equal(grad[0], 0.0)
    assert np.abs(grad[1]).max() > 0.01


def test_ppo_loss_gaussian_on_policy():
    """With the data's own policy the ratio is 1: no clipping, no KL, zero policy loss."""
    key_mean, key_action, key_adv = jax.random.split(jax.random.key(8), 3)
    dist = nets.Gaussian(
        mean=jax.random.normal(key_mean, (6, 4, 3)), log_std=jnp.full((6, 4, 3), -0.3)
    )
    action = nets.sample(dist, key_action)
    loss, m = ppo.ppo_loss(
        dist,
        action,
        nets.log_prob(dist, action),
        jax.random.normal(key_adv, (6, 4)),
        jnp.zeros((6, 4)),
        jnp.zeros((6, 4)),
        CFG,
    )
    assert abs(float(m["loss/policy"])) < 1e-6
    assert float(m["loss/approx_kl"]) == 0.0 and float(m["loss/clipfrac"]) == 0.0
    np.testing.assert_allclose(
        m["loss/entropy"], 3 * (-0.3 + 0.5 * np.log(2 * np.pi * np.e)), rtol=1e-6
    )
    np.testing.assert_allclose(loss, -CFG.entropy_coef * m["loss/entropy"], atol=1e-6)


# ---------------------------------------------------------------------------------------
# Diagnostics and normalization


def test_explained_variance():
    rng = np.random.default_rng(9)
    target = rng.normal(size=(5, 4)).astype(np.float32)
    pred = target + 0.5 * rng.normal(size=(5, 4)).astype(np.float32)
    expected = 1 - np.var(target - pred) / np.var(target)
    np.testing.assert_allclose(ppo.explained_variance(pred, target), expected, rtol=1e-5)
    assert float(ppo.explained_variance(target, target)) == 1.0
    np.testing.assert_allclose(
        ppo.explained_variance(np.full_like(target, target.mean()), target), 0.0, atol=1e-6
    )
    assert np.isnan(ppo.explained_variance(target, np.ones_like(target)))


def test_running_observation_normalization():
    rng = np.random.default_rng(10)
    first = rng.normal(3.0, 2.0, size=(4, 6, 3)).astype(np.float32)  # [T, B, D]
    second = rng.normal(-1.0, 0.5, size=(8, 3)).astype(np.float32)  # [B, D]
    stats = ppo.init_stats((3,))
    np.testing.assert_array_equal(ppo.normalize(stats, jnp.ones(3)), 1.0)  # identity at first
    stats = ppo.update_stats(stats, jnp.asarray(first))
    stats = ppo.update_stats(stats, jnp.asarray(second))

    everything = np.concatenate([first.reshape(-1, 3), second]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, everything.std(0), rtol=1e-5)

    x = jnp.asarray(everything[:5], jnp.float32)
    expected = (everything[:5] - everything.mean(0)) / everything.std(0)
    np.testing.assert_allclose(ppo.normalize(stats, x), expected, rtol=1e-4, atol=1e-5)
    far = stats.mean + jnp.array([100.0, -100.0, 0.0]) * stats.std
    np.testing.assert_allclose(ppo.normalize(stats, far), [5.0, -5.0, 0.0], atol=1e-5)


def test_running_return_normalization_round_trip():
    returns = jnp.asarray(np.random.default_rng(11).normal(50.0, 10.0, size=(7, 4)), jnp.float32)
    stats = ppo.update_stats(ppo.init_stats(), returns)
    np.testing.assert_allclose(stats.mean, np.mean(returns), rtol=1e-5)
    normalized = ppo.normalize(stats, returns, clip=None)
    np.testing.assert_allclose(np.std(normalized), 1.0, rtol=1e-4)
    np.testing.assert_allclose(ppo.denormalize(stats, normalized), returns, rtol=1e-5)


def test_gae_and_loss_reject_mismatched_shapes():
    rewards = jnp.zeros((4, 3))
    done = jnp.zeros((4, 3))
    with pytest.raises(AssertionError, match="shape"):
        ppo.gae(rewards, jnp.zeros((4, 2)), jnp.zeros(3), done, done, 0.99, 0.95)
    with pytest.raises(AssertionError, match="shape"):
        ppo.gae(rewards, jnp.zeros((4, 3)), jnp.zeros(4), done, done, 0.99, 0.95)
    with pytest.raises(AssertionError, match="rank"):
        ppo.gae(jnp.zeros(4), jnp.zeros(4), jnp.zeros(()), jnp.zeros(4), jnp.zeros(4), 0.9, 0.9)
