"""Shared test setup: XLA flags, JAX's persistent compilation cache, and ONE compiled env.

On a CPU the environment's physics is MuJoCo's C engine (the `auto` backend). Every test
that runs the environment reuses the same `env` object and the same jitted, vmapped
`reset_fn` / `step_fn` on a batch of `BATCH` environments (same static shapes and dtypes,
so nothing recompiles). The MJX backend is compiled only by the parity tests
(test_backends.py) and the tests of MJX itself. Executables of both backends are stored
in the persistent cache (~/.cache/dexjax/jax-compilation-cache): processes started by the
tests (notebooks, command lines, killed and resumed runs) load what another compiled, and
later runs of the suite are faster.

The randomization tests add ONE randomized env (`env_dr`) of which only the vmapped
`step` is compiled (`step_dr_fn`); its starting batch `dr_state` reuses `reset_state`.

`jax_debug_key_reuse` is NOT switched on globally: JAX's key-reuse checker rejects the
vmapped `reset` (a false positive of the checker for a `while_loop` with a batched
predicate, reproducible without MJX) and `step` (the checker counts `jnp.where(p, k, k)`
on the same key, as done by the per-environment `_select`, as a reuse). Instead,
test_env_reset.py traces the unbatched `reset` with the checker on.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexjax import randomization, runtime
from dexjax.env import make_env

# Before any JAX computation: XLA's CPU flags (without them vmapped MJX steps can hang on
# their second call with jax 0.10.2) and the persistent compilation cache.
runtime.configure_jax()

BATCH = 4
SETTLE_STEPS = 10


@pytest.fixture(autouse=True)
def _release_compiled_programs_near_the_map_limit():
    """The whole suite compiles more programs than one process can keep mapped (see
    `runtime.memory_map_use`); past half the limit, drop the compiled programs so that
    later compiles cannot abort. Shared functions reload from the persistent cache."""
    yield
    runtime.free_compiled_programs_near_map_limit()


@pytest.fixture(scope="session")
def env():
    """The one environment whose reset/step are compiled (short settling for speed).

    Randomization is off so that exact references apply; test_randomization.py has its own.
    """
    return make_env(settle_steps=SETTLE_STEPS, randomization=randomization.preset("none"))


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


# ---- the one randomized environment ------------------------------------------------------


@pytest.fixture(scope="session")
def env_dr():
    """The environment with every randomization family of the paper on (Table 4, "all")."""
    return make_env(settle_steps=SETTLE_STEPS, randomization=randomization.preset("all"))


@pytest.fixture(scope="session")
def step_dr_fn(env_dr):
    """The randomized env's jitted, vmapped step: the only randomized env function compiled.

    Tests pass it only states derived from `dr_state` (or `reset_state` with the same
    array types), so it compiles once; test_adr.py checks that.
    """
    return jax.jit(jax.vmap(env_dr.step))


@pytest.fixture(scope="session")
def dr_state(env_dr, reset_state):
    """A batch of BATCH randomized environments at the start of an episode.

    To spare a second minute-long compile (the randomized `reset`), this takes the plain
    env's settled `reset_state` (same scene and settling: `reset` differs between the two
    envs only in the domain it samples and in the observation noise) and adds what the
    randomized `reset` adds: a domain sampled from the paper's ranges, and noisy
    observations of the same physics.
    """

    @jax.jit
    @jax.vmap
    def randomize(state, key):
        key_dr, key_obs = jax.random.split(key)
        domain = env_dr._new_domain(key_dr, env_dr.initial_ranges(), state.data)
        obs, effects = env_dr._observe(key_obs, state.data, state.task, domain)
        return state.replace(domain=domain.replace(effects=effects), obs=obs)

    def strong(x):  # plain device arrays, never weakly typed: one signature for step_dr_fn
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jnp.asarray(np.asarray(x))

    keys = jax.random.split(jax.random.key(100), BATCH)
    return jax.block_until_ready(jax.tree.map(strong, randomize(reset_state, keys)))
