"""Checkpoints of a training run with orbax: what learning has gathered, not the simulation.

A checkpoint holds the networks' parameters, the optimizer state, the running normalizers,
ADR's state, the trainer's key and the update count. Environments are not saved: a
resumed run starts fresh episodes (a few megabytes per thousand environments are not worth
writing every few minutes, and episodes are short). Orbax writes each checkpoint to a
temporary directory and renames it when complete, so a killed run never leaves a
half-written latest checkpoint.

Several processes: everything saved is replicated (the environments, which are split over
devices, are not saved). Every process calls `save` with the same replicated global
arrays, as orbax's multi-process protocol requires (it synchronizes the processes and
writes each array once). Every process restores the values onto its own device and
re-distributes them (dexjax.train.distribute). tests/test_parallel.py saves and restores
a two-process run.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import serialization, struct

from dexjax import parallel, train

CHECKPOINT_DIR = "checkpoints"
"""The subdirectory of a run directory that holds its checkpoints."""


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint."""


@struct.dataclass
class LearnerState:
    params: train.Params
    opt_state: object
    normalizers: train.Normalizers
    adr: object  # adr.ADRState or None
    key_data: jax.Array  # the trainer's PRNG key as raw uint32 data
    update: jax.Array


def learner_state(runner: train.RunnerState) -> LearnerState:
    return LearnerState(
        params=runner.params,
        opt_state=runner.opt_state,
        normalizers=runner.normalizers,
        adr=runner.adr,
        key_data=jax.random.key_data(runner.key),
        update=runner.update,
    )


def with_learner_state(runner: train.RunnerState, learner: LearnerState) -> train.RunnerState:
    """`runner` (fresh environments) carrying the restored learning state."""
    runner = runner.replace(
        params=learner.params,
        opt_state=learner.opt_state,
        normalizers=learner.normalizers,
        key=jax.random.wrap_key_data(learner.key_data),
        update=learner.update,
    )
    if learner.adr is not None:
        runner = train.with_adr_state(runner, learner.adr)
    return train.own_buffers(runner)


def manager(directory: pathlib.Path, keep: int = 3) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        ),
    )


def save(mngr: ocp.CheckpointManager, runner: train.RunnerState) -> int:
    """Write the runner's learning state as the checkpoint of its update count."""
    state = learner_state(runner)
    step = int(parallel.host_copy(state.update))
    # The arrays themselves, not numpy copies: brax's UInt64 (the normalizers' sample
    # count) turns numpy fields back into single-device arrays when orbax rebuilds the
    # tree, and a multi-process save refuses those. Replicated global arrays it writes
    # once, from process 0.
    mngr.save(step, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    return step


def _template(config: train.TrainConfig, env) -> LearnerState:
    """The shapes of a fresh learner, traced without running anything."""
    return jax.eval_shape(
        lambda key: learner_state(train.init(config, env, key)), jax.random.key(0)
    )


def restore(
    mngr: ocp.CheckpointManager, config: train.TrainConfig, env, step: int | None = None
) -> LearnerState:
    """The checkpoint of update `step` (default: the latest) of a run of `config` on `env`."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {mngr.directory}")
    if step not in mngr.all_steps():
        raise CheckpointError(f"no checkpoint of update {step} in {mngr.directory}")
    target = _template(config, env)
    # Whole on this process's first device: without a sharding, orbax restores arrays
    # that span every process, which a single-device runner cannot take.
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local), target)
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as error:  # orbax raises several kinds for damaged files
        raise CheckpointError(
            f"checkpoint {step} in {mngr.directory} cannot be read ({type(error).__name__}: "
            f"{error}); delete that step's directory to fall back to an earlier one"
        ) from error


# ---------------------------------------------------------------------------------------
# A trained policy without its optimizer: what a run ships


POLICY_FILE = "policy.msgpack"
"""A run directory may hold this file in place of `checkpoints/`: the networks'
parameters, the normalizers, ADR's state and the update count of one checkpoint (no
optimizer state), for evaluating, exporting and watching a policy, not for resuming."""


def save_policy(path: pathlib.Path, learner: LearnerState) -> None:
    """Write `learner` less its optimizer state and key as a msgpack file."""
    state = {
        "params": learner.params,
        "normalizers": learner.normalizers,
        "adr": learner.adr,
        "update": learner.update,
    }
    host = parallel.host_copy(state)
    pathlib.Path(path).write_bytes(
        serialization.msgpack_serialize(serialization.to_state_dict(host))
    )


def _restore_fields(template, state: dict, names: tuple[str, ...], failure: str) -> dict:
    """The fields `names` of the state dict `state` as arrays in the structure of
    `template` (a LearnerState of shapes), which they must match in shape and dtype;
    otherwise a CheckpointError that starts with `failure`."""
    try:
        loaded = {
            name: serialization.from_state_dict(getattr(template, name), state[name])
            for name in names
        }
        chex.assert_trees_all_equal_shapes_and_dtypes(
            [loaded[n] for n in names], [getattr(template, n) for n in names]
        )
    except (KeyError, ValueError, AssertionError, TypeError) as error:
        raise CheckpointError(f"{failure} ({type(error).__name__}: {str(error)[:300]})") from error
    return {name: jax.tree.map(jnp.asarray, loaded[name]) for name in names}


def load_policy(path: pathlib.Path, config: train.TrainConfig, env) -> LearnerState:
    """A LearnerState from a policy file of a run of `config` on `env`: the optimizer state
    and key are zeros (enough to act, not to resume)."""
    template = _template(config, env)
    try:
        state = serialization.msgpack_restore(pathlib.Path(path).read_bytes())
    except ValueError as error:
        raise CheckpointError(f"{path} is not a policy file ({error})") from error
    loaded = _restore_fields(
        template,
        state,
        ("params", "normalizers", "adr"),
        f"{path} does not hold a policy of this run's config",
    )
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    return LearnerState(
        **loaded,
        opt_state=jax.tree.map(zeros, template.opt_state),
        key_data=zeros(template.key_data),
        update=jnp.asarray(state["update"], template.update.dtype),
    )


# ---------------------------------------------------------------------------------------
# Trained networks as the start of a new run


def _read_state(run_dir: pathlib.Path) -> dict:
    """What a run directory's latest checkpoint holds, or its policy file when it holds no
    checkpoint, as state dicts (read without a config)."""
    run_dir = pathlib.Path(run_dir)
    checkpoints, policy_file = run_dir / CHECKPOINT_DIR, run_dir / POLICY_FILE
    if checkpoints.is_dir():
        mngr = manager(checkpoints)
        try:
            step = mngr.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {checkpoints}")
            state = mngr.restore(step, args=ocp.args.StandardRestore())
        finally:
            mngr.close()
    elif policy_file.exists():
        state = serialization.msgpack_restore(policy_file.read_bytes())
    else:
        raise CheckpointError(f"{run_dir} holds neither {CHECKPOINT_DIR}/ nor {POLICY_FILE}")
    return state


def read_networks(
    run_dir: pathlib.Path, config: train.TrainConfig, env
) -> tuple[train.Params, train.Normalizers]:
    """The networks' parameters and the normalizers of a run directory's latest checkpoint
    (or of its policy file), for a new run of `config` on `env` (`with_networks`): they
    must have that run's shapes (the same network sizes, observations and actions)."""
    loaded = _restore_fields(
        _template(config, env),
        _read_state(run_dir),
        ("params", "normalizers"),
        f"the networks in {run_dir} do not fit this run's config: the network sizes, "
        "observations and actions must be the same",
    )
    return loaded["params"], loaded["normalizers"]


def with_networks(
    runner: train.RunnerState, networks: tuple[train.Params, train.Normalizers]
) -> train.RunnerState:
    """`runner` with trained networks and normalizers (`read_networks`): a new run that
    starts from them, with its own optimizer, key, update count and ADR state."""
    params, normalizers = networks
    return train.own_buffers(runner.replace(params=params, normalizers=normalizers))
