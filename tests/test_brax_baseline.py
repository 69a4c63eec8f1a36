"""Brax's PPO trainer (an MLP baseline) trains on the dexjax environment."""

import functools

import jax
import numpy as np
import pytest

from dexjax import brax_compat, peers
from dexjax import env as env_lib


@pytest.mark.slow
def test_brax_ppo_trains_on_hand_env():
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    peers.install_peer_shims()  # brax 0.14.2's trainer calls an API jax 0.10 removed
    env = env_lib.make_env(settle_steps=2)
    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_obs_key="state",
        value_obs_key="privileged_state",
        policy_hidden_layer_sizes=(32, 32),
        value_hidden_layer_sizes=(32, 32),
    )
    progress = []
    make_policy, params, metrics = ppo.train(
        environment=env,
        wrap_env_fn=brax_compat.wrap_for_brax_training,
        network_factory=network_factory,
        num_timesteps=2 * 4 * 5,
        episode_length=100,
        num_envs=4,
        batch_size=4,
        num_minibatches=1,
        unroll_length=5,
        num_updates_per_batch=1,
        num_evals=2,
        run_evals=False,
        log_training_metrics=True,
        progress_fn=lambda step, m: progress.append((step, dict(m))),
        seed=0,
    )
    assert progress, "the trainer reported no progress"
    last_step, last = progress[-1]
    assert last_step >= 40
    losses = [v for k, v in last.items() if k.startswith("training/") and "loss" in k]
    assert losses and all(np.isfinite(v) for v in losses)

    # The trained policy acts on the policy observation of a real state.
    policy = make_policy(params, deterministic=True)
    state = jax.jit(env.reset)(jax.random.key(3))
    action, _ = policy(jax.tree.map(lambda x: x[None], state.obs), jax.random.key(4))
    assert action.shape == (1, env.action_size)
    assert np.all(np.abs(np.asarray(action)) <= 1.0)
