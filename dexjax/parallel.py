"""Data parallelism over the environment axis: one mesh over every device of every process.

    parallel.initialize(parallel.DistributedConfig(...))   # several processes only
    mesh = parallel.env_mesh()                # all devices, one axis named "env"
    runner = train.distribute(runner, mesh)   # env arrays split, learner state replicated
    runner, metrics = train.train_chunk(config, env, runner, mesh)

Environments, their LSTM carries and every per-environment array are split along the
environment axis; parameters, optimizer state, normalizers and keys are replicated. XLA's
SPMD partitioner (GSPMD) turns the one compiled training function into a program per
device and inserts the collectives: means over the batch (losses, hence gradients, and
statistics) become all-reductions, so each device applies the same averaged update. On
one device the mesh has one device and the same function runs unchanged.

Across hosts, `jax.distributed.initialize` joins the processes first; the mesh then spans
every process's devices and each process feeds and reads only its own shards. This uses
`jit` with sharding annotations, not `pmap`: with jax 0.10.2, `pmap` over two CPU devices
deadlocked on its first MJX step.
"""

import dataclasses
from typing import Any

import jax
import numpy as np
from jax._src import distributed
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENV_AXIS = "env"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (`jax.distributed.initialize`)."""

    coordinator_address: str | None = None
    """host:port of process 0's coordination service; None: from the cluster environment."""
    num_processes: int | None = None
    """Processes in the run; None: from the cluster environment."""
    process_id: int | None = None
    """This process's index, 0 to num_processes - 1; None: from the cluster environment."""
    initialization_timeout_s: int = 300
    """Seconds to wait for every process to connect before failing."""
    heartbeat_timeout_s: int = 30
    """Seconds without a heartbeat after which a process counts as dead: the others then
    fail with an error instead of waiting forever in a collective."""
    shutdown_timeout_s: int = 120
    """Seconds a finishing process waits for the others at shutdown."""


def initialize(config: DistributedConfig) -> None:
    """Join the multi-process run described by `config` (or by the cluster's environment
    variables: SLURM, Open MPI, ... as `jax.distributed` detects them).

    Must run before the first JAX computation of the process. On CPU the collectives
    between processes go through gloo (XLA's CPU backend has no other implementation).
    """
    if jax._src.xla_bridge.backends_are_initialized():  # noqa: SLF001
        raise RuntimeError("parallel.initialize() must run before JAX is first used")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        initialization_timeout=config.initialization_timeout_s,
        heartbeat_timeout_seconds=config.heartbeat_timeout_s,
        shutdown_timeout_seconds=config.shutdown_timeout_s,
    )


def compile_together(jitted, *args, name: str, timeout_s: float = 7200.0) -> None:
    """Compile `jitted` for `args` in this process, then wait until every process has.

    The first call then runs its first collective in every process within moments of
    each other. Without this, processes that finish compiling minutes apart (a busy host,
    an uneven share of CPU) meet gloo's fixed 30 s deadline for setting up the first
    collective, and the run fails with DEADLINE_EXCEEDED. The wait goes through the
    coordination service, not a collective, so it has its own timeout (`timeout_s`). The
    compiled executable stays in jit's cache: the following call does not compile again.
    One process: compile only. `name` must be unique per call within a run.
    """
    jitted.lower(*args).compile()
    if jax.process_count() > 1:
        distributed.global_state.client.wait_at_barrier(
            f"dexjax compiled: {name}", timeout_in_ms=int(timeout_s * 1000)
        )


def is_writer() -> bool:
    """Only process 0 writes logs, configs and progress (checkpoints: see dexjax.checkpoint)."""
    return jax.process_index() == 0


def env_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh ("env") over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (ENV_AXIS,))


def check_divisible(num_envs: int, num_minibatches: int, mesh: Mesh) -> None:
    """Each device must hold the same number of environments, in the rollout and in every
    minibatch."""
    n = mesh.size
    if num_envs % n or (num_envs // num_minibatches) % n:
        raise ValueError(
            f"num_envs ({num_envs}) and num_envs / num_minibatches "
            f"({num_envs // num_minibatches}) must be multiples of the number of devices ({n})"
        )


def env_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """Split dimension `axis` of an `ndim`-dimensional array over the mesh.

    The spec has no trailing Nones: P("env") and P("env", None) mean the same but jit
    keys its cache on the spec, and the arrays it returns carry the short form.
    """
    if not 0 <= axis < ndim:
        raise ValueError(f"axis {axis} of a {ndim}-dimensional array")
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), ENV_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def constrain_env(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Inside jit: every leaf of `tree` split over the mesh along `axis` (no-op without
    a mesh)."""
    if mesh is None:
        return tree
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, _env_or_replicated(mesh, x, axis)), tree
    )


def constrain_replicated(tree: Any, mesh: Mesh | None) -> Any:
    """Inside jit: every leaf of `tree` whole on every device (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated(mesh)), tree)


def _global_array(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    """A global array from `x`, a value every process holds whole: each process fills only
    the shards of its own devices."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_env(tree: Any, mesh: Mesh) -> Any:
    """Global arrays split along their leading (environment) axis."""
    return jax.tree.map(lambda x: _global_array(x, _env_or_replicated(mesh, x)), tree)


def _env_or_replicated(mesh: Mesh, x: jax.Array, axis: int = 0) -> NamedSharding:
    """Empty arrays (MJX keeps some [B, 0] fields) replicated: compiled functions return
    them so, and an input sharded otherwise would compile a second time."""
    return replicated(mesh) if x.size == 0 else env_sharding(mesh, x.ndim, axis)


def place_replicated(tree: Any, mesh: Mesh) -> Any:
    """Global arrays held whole by every device."""
    return jax.tree.map(lambda x: _global_array(x, replicated(mesh)), tree)


def host_copy(tree: Any) -> Any:
    """Numpy copies of replicated global arrays (each process reads its own replica)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError("host_copy needs replicated arrays")
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)
