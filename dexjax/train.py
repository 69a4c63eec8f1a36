"""LSTM PPO with an asymmetric actor-critic, as one compiled function.

    runner = init(config, env, key)
    runner, metrics = train_chunk(runner)   # jit(scan(update_step)): rollouts + PPO updates

`update_step` is one PPO iteration: a rollout of `rollout_length` steps of every
environment (policy and value networks stepped alongside the simulation, LSTM carries
threaded through and zeroed where episodes start), GAE, then `epochs` passes of PPO over
minibatches cut along the environment axis so each sequence stays whole and starts from
the carries stored at the rollout's start (truncated backpropagation through time).

The environment is anything with the dexjax / Brax interface: `reset(key)`, `step(state,
action)`, `action_size`, a state with `obs["state"]` (policy) and `obs["privileged_state"]`
(value), `reward`, `done`, `info["truncation"]` and a `metrics` dict.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dexjax import adr as adr_lib
from dexjax import networks, parallel, ppo


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the policy is trained (the environment is configured on its own)."""

    network: networks.NetworkConfig = networks.NetworkConfig()
    # Quoted: the field's name shadows the module once assigned, and Python 3.11 evaluates
    # a class-body annotation after the assignment.
    ppo: "ppo.PPOConfig" = ppo.PPOConfig()
    num_envs: int = 64
    rollout_length: int = 10
    """Steps per environment per update; also the BPTT length (the paper's 10-step chunks)."""
    epochs: int = 4
    num_minibatches: int = 4
    """Minibatches per epoch, each a slice of the environments (all their steps)."""
    updates_per_chunk: int = 10
    """PPO updates scanned inside one compiled call (the host logs between calls)."""
    seed: int = 0

    def __post_init__(self):
        if self.num_envs % self.num_minibatches:
            raise ValueError("num_envs must be divisible by num_minibatches")
        if min(self.num_envs, self.rollout_length, self.epochs, self.updates_per_chunk) < 1:
            raise ValueError("sizes must be positive")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_length


@struct.dataclass
class Params:
    policy: Any
    value: Any


@struct.dataclass
class Normalizers:
    policy_obs: ppo.RunningStats
    value_obs: ppo.RunningStats
    returns: ppo.RunningStats


@struct.dataclass
class RunnerState:
    """Everything the training loop carries from one update to the next."""

    params: Params
    opt_state: optax.OptState
    normalizers: Normalizers
    env_state: Any  # batched environment state [B, ...]
    policy_carry: networks.LSTMCarry  # [B, lstm]
    value_carry: networks.LSTMCarry
    starts: jax.Array  # [B] bool: the next step begins an episode
    episode_return: jax.Array  # [B] reward summed over each environment's current episode
    key: jax.Array
    update: jax.Array  # [] int
    adr: adr_lib.ADRState | None = None  # automatic domain randomization, when the env uses it


@struct.dataclass
class Transition:
    """One step of every environment; a rollout stacks them to [T, B, ...]."""

    policy_obs: jax.Array
    value_obs: jax.Array
    start: jax.Array  # episode starts at this step: carries were zeroed before it
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array  # value prediction, in return-normalized units
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    episode_return: jax.Array  # return of the episode so far, this step's reward included
    metrics: dict[str, jax.Array]


def _networks(config: TrainConfig, action_size: int):
    net = dataclasses.replace(config.network, action_size=action_size)
    return networks.PolicyNetwork(net), networks.ValueNetwork(net)


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.ppo.max_grad_norm), optax.adam(config.ppo.lr)
    )


def init(config: TrainConfig, env, key: jax.Array) -> RunnerState:
    """Fresh networks, optimizer, statistics and `num_envs` reset environments."""
    key, key_env, key_policy, key_value = jax.random.split(key, 4)
    env_state = jax.vmap(env.reset)(jax.random.split(key_env, config.num_envs))
    policy_net, value_net = _networks(config, env.action_size)
    b = config.num_envs
    starts = jnp.ones(b, bool)
    p_obs, v_obs = env_state.obs["state"], env_state.obs["privileged_state"]
    params = Params(
        policy=policy_net.init(key_policy, policy_net.initial_carry(b), p_obs, starts),
        value=value_net.init(key_value, value_net.initial_carry(b), v_obs, starts),
    )
    runner = RunnerState(
        params=params,
        opt_state=_optimizer(config).init(params),
        normalizers=Normalizers(
            policy_obs=ppo.init_stats(p_obs.shape[1:]),
            value_obs=ppo.init_stats(v_obs.shape[1:]),
            returns=ppo.init_stats(),
        ),
        env_state=env_state,
        policy_carry=policy_net.initial_carry(b),
        value_carry=value_net.initial_carry(b),
        starts=starts,
        episode_return=jnp.zeros(b),
        key=key,
        update=jnp.zeros((), jnp.int32),
        adr=_adr_init(env),
    )
    return own_buffers(runner)


def own_buffers(tree: Any) -> Any:
    """Every array of `tree` in a buffer of its own, committed to the default device.

    train_chunk donates the runner and XLA cannot donate one buffer twice, but leaves may
    share one: `initial_carry` gives c and h the same zeros, and an environment may put
    one array in several fields (one zero for reward, done and truncation). Committing
    matters too: jit keys its cache on it, and the arrays train_chunk returns are
    committed, so an uncommitted first runner would compile train_chunk a second time.
    The device is this process's first (in a multi-process run, jax.devices()[0] belongs
    to process 0).
    """
    device = jax.local_devices()[0]
    return jax.tree.map(
        lambda x: jax.device_put(jnp.copy(x), device) if isinstance(x, jax.Array) else x, tree
    )


def _adr_enabled(env) -> bool:
    return bool(getattr(getattr(env, "config", None), "adr", adr_lib.ADRConfig()).enabled)


def _adr_init(env) -> adr_lib.ADRState | None:
    """ADR's state when the environment has it on (the env starts from the same ranges)."""
    if not _adr_enabled(env):
        return None
    return adr_lib.init(env.config.adr, env.config.randomization)


def _adr_step(env, runner: RunnerState, t: "Transition") -> tuple[RunnerState, dict]:
    """Feed the rollout's finished boundary episodes to ADR and hand the envs its ranges."""
    if runner.adr is None:
        return runner, {}
    state = adr_lib.update(
        runner.adr,
        env.config.adr,
        env.config.randomization,
        t.metrics["adr/boundary"].astype(jnp.int32),
        t.metrics["env/successes"],
        t.metrics["env/episode_done"],
    )
    return with_adr_state(runner, state), adr_lib.metrics(state)


def with_adr_state(runner: RunnerState, state: adr_lib.ADRState) -> RunnerState:
    """`runner` with ADR's `state`, its ranges handed to every environment (environments
    read the ranges they sample from in their own state)."""
    batch = runner.starts.shape[0]
    ranges = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), state.ranges)
    domain = runner.env_state.domain.replace(ranges=ranges)
    return runner.replace(adr=state, env_state=runner.env_state.replace(domain=domain))


def rollout(config: TrainConfig, env, runner: RunnerState) -> tuple[RunnerState, Transition]:
    """`rollout_length` steps of every environment with the current policy."""
    policy_net, value_net = _networks(config, env.action_size)
    norm = runner.normalizers
    step = jax.vmap(env.step)

    def one_step(r: RunnerState, key: jax.Array) -> tuple[RunnerState, Transition]:
        env_state, starts = r.env_state, r.starts
        p_obs = ppo.normalize(norm.policy_obs, env_state.obs["state"], config.ppo.obs_clip)
        v_obs = ppo.normalize(
            norm.value_obs, env_state.obs["privileged_state"], config.ppo.obs_clip
        )
        p_carry, dist = policy_net.apply(r.params.policy, r.policy_carry, p_obs, starts)
        v_carry, value = value_net.apply(r.params.value, r.value_carry, v_obs, starts)
        action = networks.sample(dist, key)
        next_state = step(env_state, networks.env_action(dist, action))
        truncated = next_state.info["truncation"] > 0
        done = next_state.done > 0
        episode_return = r.episode_return + next_state.reward
        transition = Transition(
            policy_obs=env_state.obs["state"],
            value_obs=env_state.obs["privileged_state"],
            start=starts,
            action=action,
            log_prob=networks.log_prob(dist, action),
            value=value,
            reward=next_state.reward,
            terminated=done & ~truncated,
            truncated=truncated,
            episode_return=episode_return,
            metrics=next_state.metrics,
        )
        r = r.replace(
            env_state=next_state,
            policy_carry=p_carry,
            value_carry=v_carry,
            starts=done,
            episode_return=jnp.where(done, 0.0, episode_return),
        )
        return r, transition

    key, key_steps = jax.random.split(runner.key)
    keys = jax.random.split(key_steps, config.rollout_length)
    runner, transitions = jax.lax.scan(one_step, runner, keys)
    runner = runner.replace(key=key)
    return runner, transitions


def _bootstrap_value(config: TrainConfig, env, runner: RunnerState) -> jax.Array:
    """V(obs_T) in return units, for the step after the rollout."""
    _, value_net = _networks(config, env.action_size)
    norm = runner.normalizers
    obs = runner.env_state.obs["privileged_state"]
    obs = ppo.normalize(norm.value_obs, obs, config.ppo.obs_clip)
    _, value = value_net.apply(runner.params.value, runner.value_carry, obs, runner.starts)
    return ppo.denormalize(norm.returns, value)


def _loss(params: Params, config: TrainConfig, env, norm: Normalizers, batch: dict) -> tuple:
    """PPO loss of one minibatch of whole sequences [T, b] from their initial carries."""
    policy_net, value_net = _networks(config, env.action_size)
    t = batch["transitions"]
    p_obs = ppo.normalize(norm.policy_obs, t.policy_obs, config.ppo.obs_clip)
    v_obs = ppo.normalize(norm.value_obs, t.value_obs, config.ppo.obs_clip)
    _, dist = networks.unroll(policy_net, params.policy, batch["policy_carry"], p_obs, t.start)
    _, value = networks.unroll(value_net, params.value, batch["value_carry"], v_obs, t.start)
    target = ppo.normalize(norm.returns, batch["returns"], clip=None)
    return ppo.ppo_loss(dist, t.action, t.log_prob, batch["advantages"], value, target, config.ppo)


def policy_step(
    config: TrainConfig,
    action_size: int,
    params: Params,
    normalizers: Normalizers,
    carry: networks.LSTMCarry,
    obs: jax.Array,
    start: jax.Array,
    key: jax.Array | None = None,
) -> tuple[networks.LSTMCarry, jax.Array]:
    """One control step of the trained policy: raw observation [B, D] -> actions in
    [-1, 1] [B, A]. The most likely action when `key` is None, a sample otherwise.

    This is the policy as evaluated and exported: normalizer, network, action decoding.
    """
    policy_net, _ = _networks(config, action_size)
    obs = ppo.normalize(normalizers.policy_obs, obs, config.ppo.obs_clip)
    carry, dist = policy_net.apply(params.policy, carry, obs, start)
    action = networks.mode(dist) if key is None else networks.sample(dist, key)
    return carry, networks.env_action(dist, action)


def env_minibatches(x: jax.Array, axis: int, order: jax.Array, num: int) -> jax.Array:
    """Shuffle the environment axis `axis` of `x` by `order` [B] and cut it into `num`
    equal slices stacked on a new leading axis: [..., B, ...] -> [num, ..., B / num, ...].

    Each slice holds whole environments (all their steps): time stays contiguous.
    """
    x = jnp.take(x, order, axis=axis)
    shape = x.shape[:axis] + (num, x.shape[axis] // num) + x.shape[axis + 1 :]
    return jnp.moveaxis(x.reshape(shape), axis, 0)


def update_step(
    config: TrainConfig, env, runner: RunnerState, mesh: jax.sharding.Mesh | None = None
) -> tuple[RunnerState, dict]:
    """One PPO iteration: rollout, GAE, `epochs` x `num_minibatches` gradient steps.

    With a `mesh`, environments and minibatches are split over its devices (see
    `distribute`); the computation, and so the result, is that of one device.
    """
    runner = constrain(runner, mesh)
    start_policy_carry, start_value_carry = runner.policy_carry, runner.value_carry
    runner, t = rollout(config, env, runner)
    norm = runner.normalizers
    values = ppo.denormalize(norm.returns, t.value)
    advantages, returns = ppo.gae(
        t.reward,
        values,
        _bootstrap_value(config, env, runner),
        t.terminated,
        t.truncated,
        config.ppo.gamma,
        config.ppo.gae_lambda,
    )
    # Value targets are normalized by running statistics that include this rollout.
    norm = norm.replace(returns=ppo.update_stats(norm.returns, returns))
    data = {
        "transitions": t,
        "advantages": advantages,
        "returns": returns,
        "policy_carry": start_policy_carry,
        "value_carry": start_value_carry,
    }
    optimizer = _optimizer(config)
    grad_fn = jax.value_and_grad(_loss, has_aux=True)

    def minibatch_step(carry, batch):
        params, opt_state = carry
        (_, metrics), grads = grad_fn(params, config, env, norm, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, key):
        order = jax.random.permutation(key, config.num_envs)
        take = functools.partial(env_minibatches, order=order, num=config.num_minibatches)

        batches = {
            "transitions": jax.tree.map(lambda x: take(x, 1), data["transitions"]),
            "advantages": take(data["advantages"], 1),
            "returns": take(data["returns"], 1),
            "policy_carry": jax.tree.map(lambda x: take(x, 0), data["policy_carry"]),
            "value_carry": jax.tree.map(lambda x: take(x, 0), data["value_carry"]),
        }
        # The shuffle draws each minibatch from every device's environments (XLA moves
        # them), so the minibatches are those of one device; each minibatch is then split
        # over the devices again: [num, T, b, ...] on b, carries [num, b, ...] on b.
        batches = {
            "transitions": parallel.constrain_env(batches["transitions"], mesh, axis=2),
            "advantages": parallel.constrain_env(batches["advantages"], mesh, axis=2),
            "returns": parallel.constrain_env(batches["returns"], mesh, axis=2),
            "policy_carry": parallel.constrain_env(batches["policy_carry"], mesh, axis=1),
            "value_carry": parallel.constrain_env(batches["value_carry"], mesh, axis=1),
        }
        return jax.lax.scan(minibatch_step, carry, batches)

    key, key_epochs = jax.random.split(runner.key)
    (params, opt_state), loss_metrics = jax.lax.scan(
        epoch, (runner.params, runner.opt_state), jax.random.split(key_epochs, config.epochs)
    )
    # Observation statistics move only after the update, which used the rollout's ones.
    norm = norm.replace(
        policy_obs=ppo.update_stats(norm.policy_obs, t.policy_obs),
        value_obs=ppo.update_stats(norm.value_obs, t.value_obs),
    )
    # An update that produced anything non-finite (losses, gradients through the new
    # parameters or optimizer moments, normalizer statistics) is skipped: the learner
    # keeps its state from before it. The host loop stops a run that keeps skipping.
    ok = all_finite((params, opt_state, norm, loss_metrics))
    params, opt_state, norm = jax.tree.map(
        lambda new, old: jnp.where(ok, new, old),
        (params, opt_state, norm),
        (runner.params, runner.opt_state, runner.normalizers),
    )
    runner = runner.replace(
        params=params, opt_state=opt_state, normalizers=norm, key=key, update=runner.update + 1
    )
    runner, adr_metrics = _adr_step(env, runner, t)
    metrics = {k: jnp.mean(v) for k, v in loss_metrics.items()}
    metrics["train/skipped_update"] = (~ok).astype(jnp.float32)
    metrics.update(_rollout_metrics(t, values, returns))
    metrics.update(adr_metrics)
    return constrain(runner, mesh), parallel.constrain_replicated(metrics, mesh)


def all_finite(tree) -> jax.Array:
    """[] bool: every floating-point entry of `tree` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _rollout_metrics(t: Transition, values: jax.Array, returns: jax.Array) -> dict:
    """Means over the rollout (and spreads of what randomization sampled); episode
    quantities are averaged over the episodes that ended (NaN when none did)."""
    done = (t.terminated | t.truncated).astype(jnp.float32)
    episodes = done.sum()

    def per_episode(x: jax.Array) -> jax.Array:
        return jnp.where(episodes > 0, jnp.sum(x * done) / jnp.maximum(episodes, 1.0), jnp.nan)

    out = {
        "train/explained_variance": ppo.explained_variance(values, returns),
        "train/reward_per_step": jnp.mean(t.reward),
        "train/episodes": episodes,
        "train/episode_return": per_episode(t.episode_return),
        "train/terminations_per_episode": per_episode(t.terminated.astype(jnp.float32)),
    }
    for name, value in t.metrics.items():
        if name.startswith(("env/successes", "env/episode_steps")):
            out[f"{name}_at_end"] = per_episode(value)
        out[name] = jnp.mean(value)
        if name.startswith("dr/"):
            out[f"{name}_std"] = jnp.std(value)
    return out


# Fields of RunnerState with one entry per environment (leading axis): split over devices.
PER_ENV_FIELDS = ("env_state", "policy_carry", "value_carry", "starts", "episode_return")


def _split_fields(runner: RunnerState) -> tuple[dict, dict]:
    per_env = {name: getattr(runner, name) for name in PER_ENV_FIELDS}
    shared = {
        f.name: getattr(runner, f.name)
        for f in dataclasses.fields(runner)
        if f.name not in PER_ENV_FIELDS
    }
    return per_env, shared


def constrain(runner: RunnerState, mesh: jax.sharding.Mesh | None) -> RunnerState:
    """Inside jit: per-environment fields split over `mesh`, the rest replicated."""
    if mesh is None:
        return runner
    per_env, shared = _split_fields(runner)
    return runner.replace(
        **parallel.constrain_env(per_env, mesh), **parallel.constrain_replicated(shared, mesh)
    )


def distribute(runner: RunnerState, mesh: jax.sharding.Mesh) -> RunnerState:
    """`runner` (the same whole value in every process) as global arrays over `mesh`:
    per-environment fields split along the environment axis, the rest replicated."""
    per_env, shared = _split_fields(runner)
    runner = runner.replace(
        **parallel.place_env(per_env, mesh), **parallel.place_replicated(shared, mesh)
    )
    # XLA hands back some shardings in a normal form of its own (on a one-device mesh a
    # split 1-D array returns as replicated). Passing the runner through the same
    # constraints, compiled, gives it exactly the shardings train_chunk returns, so that
    # train_chunk compiles once.
    return _constrain_jit(runner, mesh)


_constrain_jit = jax.jit(constrain, static_argnums=(1,))


@functools.partial(jax.jit, static_argnums=(0, 1, 3), donate_argnums=(2,))
def train_chunk(
    config: TrainConfig, env, runner: RunnerState, mesh: jax.sharding.Mesh | None = None
) -> tuple[RunnerState, dict]:
    """`updates_per_chunk` PPO updates in one compiled call; metrics are [updates, ...].

    `mesh`: split the environments over its devices (pass a runner from `distribute`).
    """
    return jax.lax.scan(
        lambda r, _: update_step(config, env, r, mesh),
        runner,
        None,
        length=config.updates_per_chunk,
    )
