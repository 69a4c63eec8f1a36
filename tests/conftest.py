"""Shared test setup: XLA flags, JAX's persistent compilation cache, and ONE compiled env.

Compiling `reset` and `step` of the MJX environment takes about a minute each on a small
CPU machine, so every test that runs the environment reuses the same `env` object and the
same jitted, vmapped `reset_fn` / `step_fn` on a batch of `BATCH` environments (same static
shapes and dtypes, so nothing recompiles). Compiled executables are also stored in a
persistent cache (~/.cache/dexjax/jax-compilation-cache), which makes later runs of the
suite much faster.

`jax_debug_key_reuse` is NOT switched on globally: JAX's key-reuse checker rejects the
vmapped `reset` (a false positive of the checker for a `while_loop` with a batched
predicate, reproducible without MJX) and `step` (the checker counts `jnp.where(p, k, k)`
on the same key, as done by the per-environment `_select`, as a reuse). Instead,
test_env_reset.py traces the unbatched `reset` with the checker on.
"""

import jax
import pytest

from dexjax import runtime
from dexjax.env import make_env

# Before any JAX computation: XLA's CPU flags (without them vmapped MJX steps can hang on
# their second call with jax 0.10.2) and the persistent compilation cache.
runtime.configure_jax()

BATCH = 4
SETTLE_STEPS = 10


@pytest.fixture(scope="session")
def env():
    """The one environment whose reset/step are compiled (short settling for speed)."""
    return make_env(settle_steps=SETTLE_STEPS)


@pytest.fixture(scope="session")
def reset_fn(env):
    return jax.jit(jax.vmap(env.reset))


@pytest.fixture(scope="session")
def step_fn(env):
    return jax.jit(jax.vmap(env.step))


@pytest.fixture(scope="session")
def reset_keys():
    return jax.random.split(jax.random.key(0), BATCH)


@pytest.fixture(scope="session")
def reset_state(reset_fn, reset_keys):
    """A batch of BATCH freshly reset environments (do not mutate: states are immutable)."""
    return jax.block_until_ready(reset_fn(reset_keys))
