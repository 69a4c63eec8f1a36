"""Networks and action distributions against independent references (tiny sizes only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dexjax import networks as nets

OBS = 5
TINY = nets.NetworkConfig(hidden=8, lstm=4, action_bins=3, action_size=2)


@pytest.fixture(autouse=True)
def _check_key_reuse():
    with jax.debug_key_reuse(True):
        yield


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------
# Action grid and distributions


def test_bins_to_action_is_the_paper_grid():
    grid = nets.bins_to_action(jnp.arange(11), 11)
    expected = np.array([-1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0], np.float32)
    assert grid.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(grid), expected)
    np.testing.assert_array_equal(nets.action_to_bins(grid, 11), np.arange(11))
    # Off-grid actions go to the nearest bin; out-of-range ones to the end bins.
    np.testing.assert_array_equal(
        nets.action_to_bins(jnp.array([-3.0, -0.89, 0.09, 0.11, 2.0]), 11), [0, 1, 5, 6, 10]
    )


def test_categorical_log_prob_entropy_mode_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5)).astype(np.float32) * 2.0  # [B, A, bins]
    action = rng.integers(0, 5, size=(4, 3))
    dist = nets.Categorical(logits=jnp.asarray(logits))

    log_p = _log_softmax(logits.astype(np.float64))
    expected_log_prob = np.take_along_axis(log_p, action[..., None], axis=-1)[..., 0].sum(-1)
    expected_entropy = -(np.exp(log_p) * log_p).sum(axis=(-2, -1))

    np.testing.assert_allclose(nets.log_prob(dist, jnp.asarray(action)), expected_log_prob, 1e-5)
    np.testing.assert_allclose(nets.entropy(dist), expected_entropy, rtol=1e-5)
    np.testing.assert_array_equal(nets.mode(dist), logits.argmax(-1))


def test_categorical_sample_frequencies_match_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])  # [A, bins]
    n = 20000
    dist = nets.Categorical(logits=jnp.broadcast_to(jnp.log(probs), (n, 2, 3)))
    draws = np.asarray(nets.sample(dist, jax.random.key(1)))
    assert draws.shape == (n, 2)
    freqs = np.stack([np.bincount(draws[:, a], minlength=3) / n for a in range(2)])
    np.testing.assert_allclose(freqs, probs, atol=0.015)  # ~4.5 standard errors


def test_gaussian_matches_scipy():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(4, 3)).astype(np.float32)
    log_std = np.broadcast_to(np.array([-0.5, 0.0, 0.7], np.float32), (4, 3))
    action = rng.normal(size=(4, 3)).astype(np.float32)
    dist = nets.Gaussian(mean=jnp.asarray(mean), log_std=jnp.asarray(log_std))
    std = np.exp(log_std.astype(np.float64))

    expected = stats.norm.logpdf(action, loc=mean, scale=std).sum(-1)
    np.testing.assert_allclose(nets.log_prob(dist, jnp.asarray(action)), expected, rtol=1e-5)
    np.testing.assert_allclose(nets.entropy(dist), stats.norm.entropy(scale=std).sum(-1), 1e-5)
    np.testing.assert_array_equal(nets.mode(dist), mean)

    many = nets.Gaussian(
        mean=jnp.broadcast_to(jnp.asarray(mean[0]), (20000, 3)),
        log_std=jnp.broadcast_to(jnp.asarray(log_std[0]), (20000, 3)),
    )
    draws = np.asarray(nets.sample(many, jax.random.key(3)))
    np.testing.assert_allclose(draws.mean(0), mean[0], atol=0.05)
    np.testing.assert_allclose(draws.std(0), std[0], rtol=0.03)


def test_env_action_decodes_bins_and_clips_gaussian():
    cat = nets.Categorical(logits=jnp.zeros((2, 11)))
    np.testing.assert_allclose(nets.env_action(cat, jnp.array([0, 7])), [-1.0, 0.4], atol=1e-7)
    gauss = nets.Gaussian(mean=jnp.zeros(3), log_std=jnp.zeros(3))
    np.testing.assert_array_equal(
        nets.env_action(gauss, jnp.array([-1.5, 0.3, 2.0])), np.float32([-1.0, 0.3, 1.0])
    )


# ---------------------------------------------------------------------------------------
# Recurrent torso: carry resets


def _torso_setup(lstm, t=6, b=3):
    key_obs, key_init, key_c, key_h = jax.random.split(jax.random.key(4), 4)
    torso = nets.Torso(hidden=8, lstm=lstm)
    obs = jax.random.normal(key_obs, (t, b, OBS))
    params = torso.init(key_init, torso.initial_carry(b), obs[0], jnp.zeros(b, bool))
    # A non-zero starting carry, as in the middle of an episode.
    carry = nets.LSTMCarry(
        c=jax.random.normal(key_c, (b, lstm)), h=jax.random.normal(key_h, (b, lstm))
    )
    return torso, params, obs, carry


@pytest.mark.parametrize("k", [0, 3])
def test_reset_equals_fresh_start(k):
    torso, params, obs, carry = _torso_setup(lstm=4)
    no_reset = jnp.zeros(obs.shape[:2], bool)
    with_reset = no_reset.at[k, 1].set(True)

    end_reset, f_reset = nets.unroll(torso, params, carry, obs, with_reset)
    _, f_plain = nets.unroll(torso, params, carry, obs, no_reset)
    end_fresh, f_fresh = nets.unroll(
        torso, params, nets.initial_carry(1, 4), obs[k:, 1:2], no_reset[k:, 1:2]
    )

    assert f_reset.shape == (6, 3, 4)
    np.testing.assert_allclose(f_reset[k:, 1], f_fresh[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end_reset.h[1], end_fresh.h[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end_reset.c[1], end_fresh.c[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(f_reset[k:, 1], f_plain[k:, 1], atol=1e-3)
    # Nothing else changes: earlier steps, and the other batch elements.
    np.testing.assert_array_equal(f_reset[:k], f_plain[:k])
    np.testing.assert_array_equal(f_reset[:, [0, 2]], f_plain[:, [0, 2]])


def test_unroll_equals_loop_of_single_steps():
    torso, params, obs, carry = _torso_setup(lstm=4)
    reset = jnp.zeros(obs.shape[:2], bool).at[2, 0].set(True).at[4, 2].set(True)
    end, features = nets.unroll(torso, params, carry, obs, reset)
    for t in range(obs.shape[0]):
        carry, f_t = torso.apply(params, carry, obs[t], reset[t])
        np.testing.assert_allclose(features[t], f_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end.h, carry.h, rtol=1e-5, atol=1e-6)


def test_feedforward_ignores_carry_and_resets():
    torso, params, obs, carry = _torso_setup(lstm=0)
    assert carry.h.shape == (3, 0)
    assert set(params["params"]) == {"dense", "dense_ff"}
    reset = jnp.zeros(obs.shape[:2], bool).at[3, 1].set(True)
    _, features = nets.unroll(torso, params, carry, obs, reset)
    _, no_reset = nets.unroll(torso, params, carry, obs, jnp.zeros_like(reset))
    assert features.shape == (6, 3, 8)
    np.testing.assert_array_equal(features, no_reset)
    # Each step depends on its own observation only: run the steps in reverse order.
    _, backwards = nets.unroll(torso, params, carry, obs[::-1], reset)
    np.testing.assert_allclose(backwards[::-1], features, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Policy and value networks


def test_tiny_policy_and_value_outputs():
    key_obs, key_pi, key_v, key_g = jax.random.split(jax.random.key(5), 4)
    t, b = 4, 3
    obs = jax.random.normal(key_obs, (t, b, OBS))
    reset = jnp.zeros((t, b), bool).at[0].set(True)

    policy = nets.PolicyNetwork(TINY)
    carry = policy.initial_carry(b)
    params = policy.init(key_pi, carry, obs[0], reset[0])
    _, dist = nets.unroll(policy, params, carry, obs, reset)
    assert isinstance(dist, nets.Categorical)
    assert dist.logits.shape == (t, b, 2, 3)
    # The small head initialization starts close to the uniform policy.
    np.testing.assert_allclose(nets.entropy(dist), 2 * np.log(3), rtol=1e-3)

    value = nets.ValueNetwork(TINY)
    v_params = value.init(key_v, carry, obs[0], reset[0])
    _, values = nets.unroll(value, v_params, carry, obs, reset)
    assert values.shape == (t, b)

    gaussian = nets.PolicyNetwork(nets.NetworkConfig(hidden=8, lstm=4, action_bins=0))
    g_params = gaussian.init(key_g, carry, obs[0], reset[0])
    _, g_dist = nets.unroll(gaussian, g_params, carry, obs, reset)
    assert isinstance(g_dist, nets.Gaussian)
    assert g_dist.mean.shape == g_dist.log_std.shape == (t, b, 20)
    np.testing.assert_array_equal(g_dist.log_std, 0.0)


@pytest.mark.parametrize(
    ("lstm", "policy_memory"), [(512, True), (0, True), (512, False)], ids=["lstm", "ff", "ff-pi"]
)
def test_paper_sized_shapes(lstm, policy_memory):
    """Dense 1024 -> LSTM 512 -> heads (paper Appendix D.1), by shape inference only; the
    feed-forward variants put Dense 1024 where the LSTM was (both networks, or the policy
    alone)."""
    cfg = nets.NetworkConfig(lstm=lstm, policy_memory=policy_memory)
    b, d = 2, 42
    obs = jax.ShapeDtypeStruct((b, d), jnp.float32)
    reset = jax.ShapeDtypeStruct((b,), jnp.bool_)
    key = jax.random.key(6)
    key_pi, key_v = jax.random.split(key)

    def carry_of(width):
        carry = jax.ShapeDtypeStruct((b, width), jnp.float32)
        return nets.LSTMCarry(c=carry, h=carry)

    def check_torso(torso, width):
        assert torso["dense"]["kernel"].shape == (d, 1024)
        if width:
            assert torso["lstm"]["ii"]["kernel"].shape == (1024, width)
            assert torso["lstm"]["hi"]["kernel"].shape == (width, width)
        else:
            assert "lstm" not in torso
            assert torso["dense_ff"]["kernel"].shape == (1024, 1024)

    policy_width = lstm if policy_memory else 0
    policy = nets.PolicyNetwork(cfg)
    assert policy.initial_carry(b).h.shape == (b, policy_width)
    p = jax.eval_shape(policy.init, key_pi, carry_of(policy_width), obs, reset)["params"]
    check_torso(p["torso"], policy_width)
    assert p["head"]["kernel"].shape == (policy_width or 1024, 20 * 11)
    new_carry, dist = jax.eval_shape(
        policy.apply, {"params": p}, carry_of(policy_width), obs, reset
    )
    assert dist.logits.shape == (b, 20, 11)
    assert new_carry.h.shape == (b, policy_width)

    value = nets.ValueNetwork(cfg)
    assert value.initial_carry(b).h.shape == (b, lstm)
    v = jax.eval_shape(value.init, key_v, carry_of(lstm), obs, reset)["params"]
    check_torso(v["torso"], lstm)
    assert v["head"]["kernel"].shape == (lstm or 1024, 1)
    _, out = jax.eval_shape(value.apply, {"params": v}, carry_of(lstm), obs, reset)
    assert out.shape == (b,)


def test_config_validation():
    assert (nets.NetworkConfig().policy_lstm, nets.NetworkConfig().value_lstm) == (512, 512)
    ff = nets.NetworkConfig(lstm=0)
    assert (ff.policy_lstm, ff.value_lstm) == (0, 0)
    ff_policy = nets.NetworkConfig(policy_memory=False)
    assert (ff_policy.policy_lstm, ff_policy.value_lstm) == (0, 512)
    with pytest.raises(ValueError):
        nets.NetworkConfig(action_bins=1)
