"""The PPO loop learns the probe environments, compiles once, and keeps time whole.

Each probe of `dexjax.probes` has a known solution and isolates one part of the loop
(value regression and GAE's termination cut, observation normalization, discounting and
bootstrapping, the policy gradient, LSTM carries). Every distinct (config, probe) pair
compiles `train_chunk` once, in a module-scoped fixture that trains it; the tests then read
the trained networks and the rollout metrics. Networks are tiny (Dense 32 -> LSTM 16).

Learned values are read by applying the trained value network to normalized observations
of whole episodes (from their start, carries zeroed) and mapping its predictions, which
are in return-normalized units, back to returns.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexjax import networks, ppo, probes, train

SMALL = networks.NetworkConfig(hidden=32, lstm=16)
# Table 5's middle row: the policy feed-forward, the value network still an LSTM.
FEED_FORWARD_POLICY = networks.NetworkConfig(hidden=32, lstm=16, policy_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _check_key_reuse():
    # Module scope, so that the training fixtures run under the checker too.
    with jax.debug_key_reuse(True):
        yield


def _config(rollout_length: int, network=SMALL, updates: int = 50, **ppo_fields):
    # 64 environments in 4 minibatches: with 8 environments per minibatch, the advantage
    # normalization of each minibatch made the solved Memory probe collapse now and then
    # (one update with approx_kl ~0.1) on some seeds; with 16 none of 8 seeds did.
    return train.TrainConfig(
        network=network,
        ppo=ppo.PPOConfig(**ppo_fields),
        num_envs=64,
        rollout_length=rollout_length,
        epochs=4,
        num_minibatches=4,
        updates_per_chunk=updates,
    )


@dataclasses.dataclass
class Run:
    """A finished training run and its metrics, [updates] each (all chunks)."""

    config: train.TrainConfig
    env: probes.Probe
    runner: train.RunnerState
    metrics: dict[str, np.ndarray]


def _train(config: train.TrainConfig, env: probes.Probe, chunks: int) -> Run:
    runner = train.init(config, env, jax.random.key(config.seed))
    history = []
    for _ in range(chunks):
        runner, metrics = train.train_chunk(config, env, runner)  # donates the old runner
        history.append(jax.device_get(metrics))
    metrics = {k: np.concatenate([m[k] for m in history]) for k in history[0]}
    return Run(config, env, runner, metrics)


# ---------------------------------------------------------------------------------------
# Reading the trained networks


def _episode_obs(env: probes.Probe, signs) -> dict[str, jax.Array]:
    """Observations of one whole episode per sign: [episode_length, len(signs), 1]."""
    t = jnp.arange(env.episode_length, dtype=jnp.int32)
    signs = jnp.asarray(signs, jnp.float32)
    return jax.vmap(jax.vmap(env.observe, (None, 0)), (0, None))(t, signs)


def _unroll(network, params, obs: jax.Array):
    """Outputs along episodes [T, N, ...] that start at t = 0 from zeroed carries."""
    reset = jnp.zeros(obs.shape[:2], bool).at[0].set(True)
    _, out = networks.unroll(network, params, network.initial_carry(obs.shape[1]), obs, reset)
    return out


def _net_config(run: Run) -> networks.NetworkConfig:
    return dataclasses.replace(run.config.network, action_size=run.env.action_size)


def _values(run: Run, signs=(1.0, -1.0)) -> np.ndarray:
    """V in return units at every step of an episode of each sign: [T, len(signs)]."""
    norm = run.runner.normalizers
    obs = _episode_obs(run.env, signs)["privileged_state"]
    obs = ppo.normalize(norm.value_obs, obs, run.config.ppo.obs_clip)
    value = _unroll(networks.ValueNetwork(_net_config(run)), run.runner.params.value, obs)
    return np.asarray(ppo.denormalize(norm.returns, value))


def _policy(run: Run, signs=(1.0, -1.0)) -> networks.Categorical:
    """The policy at every step of an episode of each sign: logits [T, len(signs), 1, bins]."""
    obs = _episode_obs(run.env, signs)["state"]
    obs = ppo.normalize(run.runner.normalizers.policy_obs, obs, run.config.ppo.obs_clip)
    return _unroll(networks.PolicyNetwork(_net_config(run)), run.runner.params.policy, obs)


def _match_probability(dist: networks.Categorical, signs=(1.0, -1.0)) -> np.ndarray:
    """Probability that a sampled action has the episode's sign: [T, len(signs)]."""
    bins = dist.logits.shape[-1]
    action_signs = np.sign(np.asarray(networks.bins_to_action(jnp.arange(bins), bins)))
    probs = np.asarray(jax.nn.softmax(dist.logits[..., 0, :], axis=-1))  # [T, N, bins]
    matches = action_signs[None, None, :] == np.asarray(signs)[None, :, None]
    return (probs * matches).sum(-1)


def _final_step_reward(run: Run, last_updates: int) -> float:
    """Mean reward of the episodes that ended in the last updates' rollouts.

    Exact for probes that reward the last step only: reward per step x steps / episodes.
    """
    m = {k: v[-last_updates:] for k, v in run.metrics.items()}
    steps = run.config.steps_per_update
    return float((m["train/reward_per_step"] * steps).sum() / m["train/episodes"].sum())


# ---------------------------------------------------------------------------------------
# Training runs, one compile each


@pytest.fixture(scope="module")
def constant_run():
    return _train(_config(rollout_length=1), probes.ConstantReward(), chunks=2)


@pytest.fixture(scope="module")
def observation_run():
    return _train(_config(rollout_length=1), probes.ObservationReward(), chunks=2)


@pytest.fixture(scope="module")
def discounting_run():
    # gamma 0.5 makes V(step 0) and V(step 1) far apart. Rollouts of 3 steps end alternately
    # after step 0 (the target of step 0 then needs the bootstrap value V(step 1)) and
    # after step 1 (the bootstrap belongs to the next episode and must be ignored).
    return _train(_config(rollout_length=3, gamma=0.5), probes.Discounting(), chunks=2)


@pytest.fixture(scope="module")
def best_action_run():
    return _train(_config(rollout_length=1), probes.BestAction(), chunks=2)


# Rollouts of 6 steps over episodes of 4: every other rollout starts in the middle of an
# episode whose sign was shown in the previous rollout, so the policy needs its carries
# threaded from one rollout to the next, and the loss the carries stored at its start.
MEMORY_ROLLOUT = 6


@pytest.fixture(scope="module")
def memory_run():
    return _train(_config(rollout_length=MEMORY_ROLLOUT), probes.Memory(), chunks=4)


@pytest.fixture(scope="module")
def memory_feed_forward_run():
    config = _config(rollout_length=MEMORY_ROLLOUT, network=FEED_FORWARD_POLICY)
    return _train(config, probes.Memory(), chunks=4)


# ---------------------------------------------------------------------------------------
# What PPO must learn


def test_constant_reward_value_is_one(constant_run):
    run = constant_run
    np.testing.assert_allclose(_values(run, signs=(1.0,)), 1.0, atol=0.1)
    # Every step ended a one-step episode by termination.
    assert np.all(run.metrics["train/episodes"] == run.config.steps_per_update)
    np.testing.assert_array_equal(run.metrics["env/episode_steps_at_end"], 1.0)


def test_value_tracks_the_observation(observation_run):
    values = _values(observation_run)  # [1, 2]: episodes of sign +1 and -1
    np.testing.assert_allclose(values[0], [1.0, -1.0], atol=0.1)
    assert np.mean(observation_run.metrics["train/explained_variance"][-10:]) > 0.9


def test_value_is_discounted(discounting_run):
    gamma = discounting_run.config.ppo.gamma
    values = _values(discounting_run, signs=(1.0,))[:, 0]  # [2]: step 0, step 1
    np.testing.assert_allclose(values, [gamma, 1.0], atol=0.1)
    np.testing.assert_array_equal(discounting_run.metrics["env/episode_steps_at_end"], 2.0)
    # The rollout's values, mapped back to return units, explain the GAE targets. (The
    # learned values alone would not show values left in normalized units inside GAE: the
    # two returns are exactly one standard deviation either side of their mean, so step
    # 1's normalized value is also 1.)
    assert np.mean(discounting_run.metrics["train/explained_variance"][-10:]) > 0.9


def test_policy_learns_the_best_action(best_action_run):
    run = best_action_run
    dist = _policy(run)
    assert np.all(_match_probability(dist) > 0.9)
    modes = networks.bins_to_action(networks.mode(dist), dist.logits.shape[-1])
    np.testing.assert_array_equal(np.sign(modes[0, :, 0]), [1.0, -1.0])
    assert np.mean(run.metrics["train/reward_per_step"][-10:]) > 0.8


def test_lstm_policy_remembers_the_first_observation(memory_run):
    assert _final_step_reward(memory_run, last_updates=20) > 0.8
    last = memory_run.env.episode_length - 1
    assert np.all(_match_probability(_policy(memory_run))[last] > 0.9)


def test_feed_forward_policy_cannot_remember(memory_feed_forward_run):
    # Chance level: about 0 (-1/11 for the uniform 11-bin policy), although the value
    # network beside it has its LSTM.
    assert abs(_final_step_reward(memory_feed_forward_run, last_updates=20)) < 0.3
    runner = memory_feed_forward_run.runner
    assert runner.policy_carry.h.shape[-1] == 0
    assert runner.value_carry.h.shape[-1] == FEED_FORWARD_POLICY.lstm
    assert "lstm" in runner.params.value["params"]["torso"]
    assert "lstm" not in runner.params.policy["params"]["torso"]


# ---------------------------------------------------------------------------------------
# Structure of the loop


def test_loss_sees_what_the_rollout_saw(memory_run):
    """With one epoch of one minibatch, the loss is computed before any gradient step, so
    the new/old probability ratio must be exactly 1: only if the loss re-runs the policy on
    the same normalized observations, with the same episode starts, from the carries stored
    at the rollout's start. The trained LSTM on Memory makes any mismatch visible: every
    other rollout starts mid-episode, after the sign was shown in the previous one.
    """
    config = dataclasses.replace(
        memory_run.config, epochs=1, num_minibatches=1, updates_per_chunk=4
    )
    # train_chunk donates its runner: keep the fixture's intact for the other tests.
    runner = jax.tree.map(jnp.copy, memory_run.runner)
    _, metrics = train.train_chunk(config, memory_run.env, runner)
    assert np.all(np.abs(metrics["loss/approx_kl"]) < 1e-6)
    np.testing.assert_array_equal(metrics["loss/clipfrac"], 0.0)


def test_train_chunk_compiles_once_and_counts_updates(constant_run):
    config, env = constant_run.config, constant_run.env  # already compiled by the fixture
    runner = train.init(config, env, jax.random.key(1))
    sizes = []
    for _ in range(3):
        runner, metrics = train.train_chunk(config, env, runner)
        sizes.append(train.train_chunk._cache_size())
    # The first call may add one dispatch entry without tracing again (Brax's statistics
    # hold `std_eps` as a Python float until train_chunk returns it as an array); after
    # that, calls must hit the cache.
    assert sizes[1] == sizes[2]
    assert int(runner.update) == 3 * config.updates_per_chunk
    assert metrics["loss/policy"].shape == (config.updates_per_chunk,)
    # Equal probes are equal static arguments: a new instance reuses the compiled trainer.
    runner, _ = train.train_chunk(config, probes.ConstantReward(), runner)
    assert train.train_chunk._cache_size() == sizes[2]


def test_minibatches_keep_whole_environments():
    t, b, num = 5, 8, 4
    per = b // num
    steps = jnp.arange(t)[:, None] + 100 * jnp.arange(b)[None, :]  # [T, B]: 100 env + step
    carries = jnp.stack([jnp.arange(b), -jnp.arange(b)], axis=1)  # [B, 2]
    order = jax.random.permutation(jax.random.key(2), b)

    batches = train.env_minibatches(steps, 1, order=order, num=num)
    batch_carries = train.env_minibatches(carries, 0, order=order, num=num)

    assert batches.shape == (num, t, per)
    assert batch_carries.shape == (num, per, 2)
    for m in range(num):
        for j in range(per):
            env_index = int(order[m * per + j])
            # A whole environment's steps, in time order, with that environment's carry.
            np.testing.assert_array_equal(batches[m, :, j], steps[:, env_index])
            np.testing.assert_array_equal(batch_carries[m, j], carries[env_index])
    assert sorted(np.asarray(batches[:, 0, :]).ravel() // 100) == list(range(b))


# ---------------------------------------------------------------------------------------
# The probes themselves


@pytest.mark.parametrize(
    "probe",
    [
        probes.ConstantReward(),
        probes.ObservationReward(),
        probes.Discounting(),
        probes.BestAction(),
        probes.Memory(),
    ],
    ids=lambda p: type(p).__name__,
)
def test_probe_episodes(probe):
    """Fixed-length terminated episodes that reset inside `step`, Brax-style."""
    state = probe.reset(jax.random.key(3))
    length = probe.episode_length
    for step in range(2 * length):
        t = step % length
        assert int(state.t) == t
        state = probe.step(state, jnp.ones(probe.action_size))
        last = t == length - 1
        assert float(state.done) == float(last)
        assert float(state.info["truncation"]) == 0.0
        assert float(state.metrics["env/episode_steps"]) == t + 1
        assert int(state.t) == (0 if last else t + 1)
        assert state.obs["state"].shape == state.obs["privileged_state"].shape == (1,)


def test_memory_shows_the_sign_only_at_the_start():
    probe = probes.Memory()
    obs = _episode_obs(probe, [1.0, -1.0])
    np.testing.assert_array_equal(obs["state"][:, :, 0], [[1, -1], [0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(obs["privileged_state"][:, :, 0], [[1, -1]] * 4)
    rewards = [probe.reward(jnp.int32(t), 1.0, jnp.float32(0.4)) for t in range(4)]
    np.testing.assert_array_equal(rewards, [0, 0, 0, 1])
    assert probe.reward(jnp.int32(3), -1.0, jnp.float32(0.4)) == -1.0
    assert probe.reward(jnp.int32(3), 1.0, jnp.float32(0.0)) == -1.0
