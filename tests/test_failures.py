"""Failures never reach the learner.

- The environment: a slot whose physics blows up ends its episode in that step with a
  finite observation and reward, counted in `env/nonfinite`, while the other slots go on
  bit for bit; a non-finite action is counted and acts as no action.
- Stress: every randomization at the extremes of ADR's widest ranges, random actions:
  observations and rewards stay finite.
- The trainer: an update whose loss is non-finite is skipped (learner state unchanged)
  and counted in `train/skipped_update`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from conftest import BATCH
from reference import to_numpy

from dexjax import adr, ppo, probes, train
from dexjax import randomization as dr


def _finite(state) -> bool:
    leaves = [state.obs["state"], state.obs["privileged_state"], state.reward]
    return all(np.isfinite(np.asarray(x)).all() for x in leaves)


def _with_slots(state, slots, qpos=None, qvel=None):
    data = state.data
    if qpos is not None:
        data = data.replace(qpos=data.qpos.at[slots].set(qpos))
    if qvel is not None:
        data = data.replace(qvel=data.qvel.at[slots].set(qvel))
    return state.replace(data=data)


def test_a_blown_up_slot_restarts_and_the_others_go_on(env, step_fn, reset_state):
    zeros = jnp.zeros((BATCH, env.action_size))
    start = to_numpy(reset_state)
    clean = to_numpy(step_fn(reset_state, zeros))
    broken = _with_slots(reset_state, 1, qvel=1e12)  # the engine's velocity check trips
    broken = _with_slots(broken, 2, qpos=jnp.nan)
    after = to_numpy(step_fn(broken, zeros))
    assert _finite(after)
    m = after.metrics
    np.testing.assert_array_equal(m["env/nonfinite"], [0, 1, 1, 0])
    np.testing.assert_array_equal(after.done, [0, 1, 1, 0])
    np.testing.assert_array_equal(after.info["truncation"], [0, 1, 1, 0])
    np.testing.assert_array_equal(after.reward[[1, 2]], 0.0)
    np.testing.assert_array_equal(m["env/dropped"][[1, 2]], 0.0)
    # The failed slots begin a new episode from their settled start.
    np.testing.assert_array_equal(after.task.episode_steps[[1, 2]], 0)
    np.testing.assert_array_equal(after.data.qvel[[1, 2]], 0.0)
    np.testing.assert_array_equal(after.data.ctrl[[1, 2]], start.task.init_ctrl[[1, 2]])
    # The others are untouched, bit for bit.
    for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(after), strict=True):
        if np.issubdtype(np.asarray(a).dtype, np.number) and np.ndim(a):
            np.testing.assert_array_equal(np.asarray(a)[[0, 3]], np.asarray(b)[[0, 3]])
    # And the next step is an ordinary one.
    again = to_numpy(step_fn(jax.tree.map(jnp.asarray, after), zeros))
    assert _finite(again) and not again.metrics["env/nonfinite"].any()


def test_a_non_finite_action_counts_as_no_action(env, step_fn, reset_state):
    action = jnp.full((BATCH, env.action_size), 0.4)
    bad = action.at[0, 3].set(jnp.nan).at[2].set(jnp.inf)
    want = action.at[0, 3].set(0.0).at[2].set(0.0)  # replaced before any clipping
    got = to_numpy(step_fn(reset_state, bad))
    ref = to_numpy(step_fn(reset_state, want))
    np.testing.assert_array_equal(got.metrics["env/nonfinite_action"], [1, 0, 1, 0])
    assert not got.metrics["env/nonfinite"].any() and not got.done.any()
    # Within float32 rounding: the compiled step's joint targets can differ by 1 ulp
    # between the two batches (measured: 7e-9 in ctrl, 2e-8 in qpos).
    np.testing.assert_allclose(got.data.qpos, ref.data.qpos, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.obs["state"], ref.obs["state"], rtol=0, atol=1e-6)


def _widest() -> dr.Ranges:
    low = jnp.array([adr.LIMITS[n][0] for n in dr.RANGE_NAMES], jnp.float32)
    high = jnp.array([adr.LIMITS[n][1] for n in dr.RANGE_NAMES], jnp.float32)
    return dr.Ranges(low=low, high=high)


def test_extreme_randomization_stays_finite(env_dr, step_dr_fn, dr_state):
    """Episodes at corners of ADR's widest ranges (every parameter at its low or high
    limit, the noise scales at their largest), then new episodes drawn from those
    ranges at every automatic reset; 60 steps of uniformly random actions."""
    widest = _widest()
    corners = jnp.stack(
        [
            widest.low,
            widest.high,
            jnp.where(jnp.arange(len(dr.RANGE_NAMES)) % 2 == 0, widest.low, widest.high),
            jnp.where(jnp.arange(len(dr.RANGE_NAMES)) % 2 == 1, widest.low, widest.high),
        ]
    )
    # Standard deviations and maxima are sampled from a range's high end: keep it there.
    scales = jnp.array([n.endswith(("_std", "_max", "uncorrelated")) for n in dr.RANGE_NAMES])
    corners = jnp.where(scales, widest.high, corners)
    keys = jax.random.split(jax.random.key(11), BATCH)
    episodes = jax.vmap(
        lambda k, c: dr.sample_episode(
            k, env_dr.config.randomization, dr.Ranges(low=c, high=c), env_dr.dr_info
        )
    )(keys, corners)
    ranges = jax.tree.map(lambda x: jnp.broadcast_to(x, (BATCH, *x.shape)), widest)
    state = dr_state.replace(domain=dr_state.domain.replace(episode=episodes, ranges=ranges))
    key = jax.random.key(12)
    failures, episodes_ended = 0, 0
    for _ in range(60):
        key, key_action = jax.random.split(key)
        action = jax.random.uniform(key_action, (BATCH, env_dr.action_size), minval=-1, maxval=1)
        state = step_dr_fn(state, action)
        assert _finite(state)
        failures += int(np.sum(state.metrics["env/nonfinite"]))
        episodes_ended += int(np.sum(state.done))
    assert np.isfinite(np.asarray(state.data.qpos)).all()
    assert episodes_ended > 0  # the extremes are hard: drops (or failures) happen


class NaNReward(probes.ConstantReward):
    """ConstantReward whose every reward is NaN: every loss, gradient and return
    statistic of an update on it is non-finite."""

    def step(self, state, action):
        out = super().step(state, action)
        return out.replace(reward=jnp.full_like(out.reward, jnp.nan))


def test_a_non_finite_update_is_skipped():
    config = train.TrainConfig(
        network=dataclasses.replace(train.TrainConfig().network, hidden=16, lstm=8),
        ppo=ppo.PPOConfig(),
        num_envs=8,
        rollout_length=2,
        epochs=1,
        num_minibatches=2,
        updates_per_chunk=2,
    )
    runner = train.init(config, NaNReward(), jax.random.key(0))
    before = jax.device_get((runner.params, runner.opt_state, runner.normalizers))
    runner, metrics = train.train_chunk(config, NaNReward(), runner)
    after = jax.device_get((runner.params, runner.opt_state, runner.normalizers))
    np.testing.assert_array_equal(metrics["train/skipped_update"], [1.0, 1.0])
    assert int(runner.update) == 2
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same trainer on finite rewards moves the learner.
    good = train.init(config, probes.ConstantReward(), jax.random.key(0))
    start = jax.device_get(good.params)
    good, metrics = train.train_chunk(config, probes.ConstantReward(), good)
    np.testing.assert_array_equal(metrics["train/skipped_update"], [0.0, 0.0])
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(good.params), strict=True)
    ]
    assert any(moved)
