"""Let Brax's PPO trainer (`brax.training.agents.ppo.train`) drive a dexjax environment.

dexjax's environment already follows Brax's interface and resets itself; Brax's trainer
additionally wants batched calls and per-episode bookkeeping in `state.info`
("episode_metrics", "episode_done"). Pass `wrap_for_brax_training` as `wrap_env_fn`:

    ppo.train(environment=env, wrap_env_fn=wrap_for_brax_training,
              policy_obs_key="state", value_obs_key="privileged_state", ...)

Unlike Brax's own EpisodeWrapper, this keeps dexjax's distinction between truncation
(goal timeout, 50 successes) and termination (drop), and adds no episode length cap.
"""

import jax
import jax.numpy as jnp
from brax.envs.base import Wrapper


class BraxTraining(Wrapper):
    """Batched dexjax env with the episode bookkeeping Brax's PPO reads."""

    def reset(self, rng: jax.Array):
        state = jax.vmap(self.env.reset)(rng)
        zeros = jnp.zeros(rng.shape[:-1])
        episode_metrics = {"sum_reward": zeros, "length": zeros}
        episode_metrics.update({name: zeros for name in state.metrics})
        info = {**state.info, "episode_done": zeros, "episode_metrics": episode_metrics}
        return state.replace(info=info)

    def step(self, state, action: jax.Array):
        previous = state.info
        prev_done = previous["episode_done"]
        inner = state.replace(info={"truncation": previous["truncation"]})
        state = jax.vmap(self.env.step)(inner, action)
        running = previous["episode_metrics"]
        episode_metrics = {
            "sum_reward": running["sum_reward"] * (1 - prev_done) + state.reward,
            "length": running["length"] * (1 - prev_done) + 1,
        }
        for name, value in state.metrics.items():
            episode_metrics[name] = running[name] * (1 - prev_done) + value
        info = {**state.info, "episode_done": state.done, "episode_metrics": episode_metrics}
        return state.replace(info=info)


def wrap_for_brax_training(env, episode_length=None, action_repeat=1, randomization_fn=None):
    """`wrap_env_fn` for Brax's PPO. Episodes end by the task's own rules."""
    del episode_length  # the task decides when episodes end
    if action_repeat != 1:
        raise ValueError("dexjax environments step at the paper's 80 ms; use action_repeat=1")
    if randomization_fn is not None:
        raise ValueError("dexjax randomizes physics inside the environment, not via Brax")
    return BraxTraining(env)
