"""Probe environments: tiny tasks with known solutions that prove the PPO loop works.

Each probe has the interface `dexjax.train` expects of an environment, on ONE environment
(the trainer vmaps it): `reset(key) -> ProbeState`, `step(state, action) -> ProbeState`
and `action_size` (1 for every probe). A state carries `obs` ("state" for the policy,
"privileged_state" for the value network, each `[1]`), `reward`, `done`,
`info["truncation"]` and a `metrics` dict. As in the hand environment, episodes reset
automatically inside `step`: `reward` and `done` describe the step that just finished,
`obs` already belongs to the next episode.

Every episode has a fixed length, ends by termination (never by time, so `truncation` is
always 0) and draws one random sign `sign` (+-1) at its start, which some probes show and
some ignore. Each probe isolates one part of the loop; what a correct PPO must learn, and
where a failure points:

| probe               | a correct PPO learns                   | a failure points at             |
|---------------------|----------------------------------------|---------------------------------|
| `ConstantReward`    | V = 1                                  | value regression, GAE's cut at  |
|                     |                                        | termination, return statistics  |
| `ObservationReward` | V(obs) = obs                           | observation normalization, the  |
|                     |                                        | value network's input           |
| `Discounting`       | V(step 0) = gamma, V(step 1) = 1       | discounting, bootstrapping      |
| `BestAction`        | sign(action) = obs                     | policy gradient, advantage      |
|                     |                                        | sign, action decoding           |
| `Memory`            | the last action's sign = the sign seen | LSTM carries: threading through |
|                     | only at t = 0 (LSTM only)              | the rollout, resets, BPTT starts|

Probes are frozen dataclasses, so they are hashable static arguments of `jax.jit` and equal
probes share one compiled trainer. Everything is pure; keys are typed and split, never
reused.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ProbeState:
    """One probe environment."""

    key: jax.Array  # typed PRNG key, split at every step
    t: jax.Array  # [] int32, step within the episode (0 at its start)
    sign: jax.Array  # [] float32, +-1, drawn at every episode start
    obs: dict[str, jax.Array]  # "state" [1] (policy), "privileged_state" [1] (value)
    reward: jax.Array  # [] reward of the step that led here
    done: jax.Array  # [] 1.0 if that step ended the episode
    metrics: dict[str, jax.Array]
    info: dict[str, jax.Array]  # "truncation": always 0.0


def _random_sign(key: jax.Array) -> jax.Array:
    # float32, not weakly typed: the state keeps one type from reset through every step.
    return jnp.where(jax.random.bernoulli(key), 1.0, -1.0).astype(jnp.float32)


def _sign_reward(action: jax.Array, sign: jax.Array) -> jax.Array:
    """+1 if the action's sign is `sign`, else -1 (an action of exactly 0 matches neither)."""
    return jnp.where(jnp.sign(action) == sign, 1.0, -1.0)


@dataclasses.dataclass(frozen=True)
class Probe:
    """The common machinery: fixed-length episodes with one random sign each.

    Subclasses say what is observed (`observe`) and rewarded (`reward`) at step `t`.
    """

    episode_length: int = 1

    @property
    def action_size(self) -> int:
        return 1

    def observe(self, t: jax.Array, sign: jax.Array) -> dict[str, jax.Array]:
        """Observations at step `t` of an episode with sign `sign`: [1] each."""
        raise NotImplementedError

    def reward(self, t: jax.Array, sign: jax.Array, action: jax.Array) -> jax.Array:
        """Reward of taking `action` (a scalar in [-1, 1]) at step `t`."""
        raise NotImplementedError

    def reset(self, key: jax.Array) -> ProbeState:
        key, key_sign = jax.random.split(key)
        zero = jnp.zeros((), jnp.float32)
        t = jnp.zeros((), jnp.int32)
        return self._state(key, t, _random_sign(key_sign), zero, zero, episode_steps=zero)

    def step(self, state: ProbeState, action: jax.Array) -> ProbeState:
        """One step; action [1] in [-1, 1]. The episode restarts after its last step."""
        reward = self.reward(state.t, state.sign, action[0])
        done = state.t == self.episode_length - 1
        key, key_sign = jax.random.split(state.key)
        # A new sign is drawn at every step and kept only at episode starts (so data, not
        # keys, are selected between: no key is used twice).
        sign = jnp.where(done, _random_sign(key_sign), state.sign)
        t = jnp.where(done, 0, state.t + 1)
        # The finished step's episode had lasted state.t + 1 steps (the hand env's count).
        steps = (state.t + 1).astype(jnp.float32)
        return self._state(key, t, sign, reward, done.astype(jnp.float32), steps)

    def _state(self, key, t, sign, reward, done, episode_steps) -> ProbeState:
        reward = jnp.asarray(reward, jnp.float32)
        return ProbeState(
            key=key,
            t=t,
            sign=sign,
            obs=self.observe(t, sign),
            reward=reward,
            done=done,
            metrics={
                "env/episode_done": done,
                "env/episode_steps": episode_steps,
                "env/reward": reward,
            },
            info={"truncation": jnp.zeros((), jnp.float32)},
        )


def _same_for_both(x: jax.Array) -> dict[str, jax.Array]:
    x = jnp.reshape(x, (1,)).astype(jnp.float32)
    return {"state": x, "privileged_state": x}


@dataclasses.dataclass(frozen=True)
class ConstantReward(Probe):
    """Observation 0, reward 1, episodes of one step that terminate.

    Learns: V = 1 (the return of every step; nothing may be bootstrapped past the end).
    """

    def observe(self, t, sign):
        return _same_for_both(jnp.zeros(()))

    def reward(self, t, sign, action):
        return jnp.ones(())


@dataclasses.dataclass(frozen=True)
class ObservationReward(Probe):
    """Observation +-1 (random per one-step episode), reward = the observation.

    Learns: V(obs) = obs.
    """

    def observe(self, t, sign):
        return _same_for_both(sign)

    def reward(self, t, sign, action):
        return sign


@dataclasses.dataclass(frozen=True)
class Discounting(Probe):
    """Two-step episodes; observation = the step (0 or 1); reward 1 at the end only.

    Learns: V(step 0) = gamma, V(step 1) = 1.
    """

    episode_length: int = 2

    def observe(self, t, sign):
        return _same_for_both(t)

    def reward(self, t, sign, action):
        return (t == self.episode_length - 1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class BestAction(Probe):
    """Observation +-1 (random per one-step episode); reward +1 if the action's sign
    matches it, else -1. With the categorical head the action is `bins_to_action(k)`, so
    the middle bin (action 0) is always wrong.

    Learns: a policy whose actions have the observation's sign (V -> 1 as it does).
    """

    def observe(self, t, sign):
        return _same_for_both(sign)

    def reward(self, t, sign, action):
        return _sign_reward(action, sign)


@dataclasses.dataclass(frozen=True)
class Memory(Probe):
    """The policy sees the episode's sign at t = 0 only (0 afterwards); at the last of
    `episode_length` steps the reward is +1 if the action's sign equals it, else -1; every
    earlier step is rewarded 0.

    Learns: with an LSTM policy, a last action of the remembered sign (mean reward at the
    last step -> 1). A feed-forward policy cannot do better than chance (about 0, or
    -1/11 with the 11-bin head sampled uniformly, whose middle bin is always wrong).

    The value network sees the sign at every step (`privileged_state`): the asymmetric
    actor-critic's point is exactly that the critic may use what the actor must remember
    or infer. So the critic needs no memory here, and only the policy's carries are tested.
    """

    episode_length: int = 4

    def observe(self, t, sign):
        shown = jnp.where(t == 0, sign, 0.0)
        return {
            "state": jnp.reshape(shown, (1,)).astype(jnp.float32),
            "privileged_state": jnp.reshape(sign, (1,)).astype(jnp.float32),
        }

    def reward(self, t, sign, action):
        return jnp.where(t == self.episode_length - 1, _sign_reward(action, sign), 0.0)
