"""The training loop runs on the hand itself, with ADR moving ranges inside the loop."""

import jax
import numpy as np

from dexjax import adr, networks, train
from dexjax.env import make_env


def test_train_chunk_on_the_hand_with_adr():
    # Thresholds 0 and buffers of one episode: every boundary episode that ends widens
    # its range, so the ranges must move within a couple of updates.
    adr_config = adr.ADRConfig(
        enabled=True, boundary_prob=1.0, buffer_size=1, threshold_low=0.0, threshold_high=0.0
    )
    env = make_env(settle_steps=2, adr=adr_config, goal_distribution="yaw")
    config = train.TrainConfig(
        network=networks.NetworkConfig(hidden=16, lstm=8),
        num_envs=4,
        rollout_length=8,
        epochs=1,
        num_minibatches=2,
        updates_per_chunk=2,
    )
    runner = train.init(config, env, jax.random.key(0))
    start = adr.init(adr_config, env.config.randomization).ranges
    np.testing.assert_array_equal(runner.adr.ranges.low, start.low)

    runner, metrics = train.train_chunk(config, env, runner)
    runner, metrics = train.train_chunk(config, env, runner)
    metrics = jax.device_get(metrics)
    assert int(runner.update) == 4
    for name in ("loss/policy", "loss/value", "loss/approx_kl", "train/explained_variance"):
        assert name in metrics
    assert all(np.all(np.isfinite(v)) for k, v in metrics.items() if k.startswith("loss/"))
    assert "dr/mass_scale_std" in metrics and "adr/entropy" in metrics

    # Episodes ended (drops come fast with random actions), so ADR widened some range, and
    # every environment now samples from ADR's ranges.
    assert metrics["train/episodes"].sum() > 0
    width = np.asarray(runner.adr.ranges.high - runner.adr.ranges.low)
    assert width.max() > 0
    env_ranges = runner.env_state.domain.ranges
    for env_index in range(config.num_envs):
        np.testing.assert_array_equal(env_ranges.high[env_index], runner.adr.ranges.high)
