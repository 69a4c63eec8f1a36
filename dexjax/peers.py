"""Peer measurements: MuJoCo Playground's LEAP-hand cube tasks and Brax PPO.

The nearest published peer of dexjax is MuJoCo Playground (PyPI package
``playground``, import name ``mujoco_playground``), whose ``LeapCubeReorient``
and ``LeapCubeRotateZAxis`` tasks are MJX in-hand cube manipulation with a
LEAP hand, trained with Brax PPO.  This module measures them on the same
machine and in the same run as our own benchmark, so the numbers compare.

Three things are needed to run the peer at all here, and each is explicit:

* Compatibility shims (:func:`install_peer_shims`).  ``playground==0.2.0``
  calls ``jnp.clip(x, a_max=...)`` and ``brax==0.14.2``'s trainers call
  ``jax.device_put_replicated``; jax 0.10 accepts neither.  The shims replace
  the ``jax`` / ``jax.numpy`` *names inside the peer packages' own modules* by
  thin proxies that add the two old spellings.  Nothing is patched at import
  time and the real ``jax`` / ``jax.numpy`` modules are left untouched.
* Placeholder visual meshes (:func:`placeholder_menagerie`).  Playground
  loads the LEAP hand's visual-only meshes from a git clone of
  ``mujoco_menagerie``, which cannot be fetched here.  Those geoms have
  ``contype=conaffinity=0`` and ``density=0`` (render only), so we write tiny
  tetrahedron OBJ files under the requested names into a temporary folder and
  point ``mujoco_playground._src.mjx_env.MENAGERIE_PATH`` at it while the
  environment is built.  The physics (bodies, masses, collision geoms) is the
  package's own and unchanged.
* ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``.  On
  CPU with jax 0.10.2 some jitted, vmapped MJX steps hang on their second
  call without it.  It must be in the environment before the first jax
  computation; the command line entry point below adds it when missing, the
  library functions do not touch the environment.  (The second call is also
  where Playground's env recompiles, see :func:`_strip_weak_types`; the
  benchmark strips weak types so the step compiles once.)

A CPU peer is measured too (:func:`sb3_ppo_peer_train`): Stable-Baselines3
PPO training gymnasium-robotics' ``HandManipulateBlock-v1`` (OpenAI's own
Shadow-hand block environment, MuJoCo C) in ``SubprocVecEnv`` worker
processes, with one shim (:func:`install_gymnasium_robotics_shim`) for a
joint-type check that fails under mujoco 3.17.

``mujoco_playground``, ``brax``, ``stable_baselines3`` and ``torch`` are
imported inside the functions, so this module imports without the peer
packages installed.

Command line (one measurement per process; prints one JSON row)::

    python dexjax/peers.py bench --env LeapCubeReorient --batch 16 --steps 20
    python dexjax/peers.py ppo --env LeapCubeReorient --num-envs 16 \\
        --num-timesteps 5000
    python dexjax/peers.py sb3 --num-envs 2 --num-timesteps 200
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REORIENT_ENV = "LeapCubeReorient"
ROTATE_Z_ENV = "LeapCubeRotateZAxis"
XLA_NO_HANG_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
SB3_ENV = "HandManipulateBlock-v1"

_SHIM_MARKER = "__dexjax_peer_shim__"

# A regular tetrahedron with 1 cm edges: a valid closed mesh with positive
# volume, so MuJoCo's mesh compiler accepts it.
_TETRA_OBJ = """\
# placeholder visual mesh written by dexjax.peers (not a LEAP hand part)
v 0.0 0.0 0.0
v 0.01 0.0 0.0
v 0.005 0.00866 0.0
v 0.005 0.00289 0.00816
f 1 3 2
f 1 2 4
f 2 3 4
f 3 1 4
"""


# ---------------------------------------------------------------------------
# Compatibility shims for the peer packages.
# ---------------------------------------------------------------------------


class _CompatModule(types.ModuleType):
    """A stand-in for a module that forwards every attribute to it.

    Attributes given in ``overrides`` take precedence.  Used to give one peer
    module its own view of ``jax`` or ``jax.numpy`` without changing the real
    module seen by everybody else.
    """

    def __init__(self, base: types.ModuleType, overrides: Mapping[str, Any]):
        super().__init__(base.__name__, getattr(base, "__doc__", None))
        self.__dict__.update(overrides)
        self.__dict__["_base"] = base
        self.__dict__[_SHIM_MARKER] = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_base"], name)


def _clip_accepting_a_min_a_max(base_clip: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``jnp.clip`` so it also accepts the removed ``a_min``/``a_max``."""

    @functools.wraps(base_clip)
    def clip(
        arr: Any = None,
        /,
        min: Any = None,
        max: Any = None,
        *,
        a_min: Any = None,
        a_max: Any = None,
    ) -> Any:
        lo = a_min if min is None else min
        hi = a_max if max is None else max
        return base_clip(arr, lo, hi)

    return clip


def _device_put_replicated(x: Any, devices: list[Any]) -> Any:
    """Re-implementation of the removed ``jax.device_put_replicated``.

    Returns ``x`` with every leaf stacked ``len(devices)`` times along a new
    leading axis, sharded one slice per device (what ``jax.pmap`` expects).
    """
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices)
    sharding = NamedSharding(Mesh(np.array(devices), ("d",)), PartitionSpec("d"))

    def replicate(leaf: Any) -> Any:
        stacked = np.stack([np.asarray(leaf)] * len(devices))
        return jax.device_put(stacked, sharding)

    return jax.tree_util.tree_map(replicate, x)


def _shim_module_attr(module: types.ModuleType, attr: str, overrides: Mapping[str, Any]) -> bool:
    """Replace ``module.attr`` (a module) by a forwarding proxy; idempotent."""
    current = getattr(module, attr, None)
    if not isinstance(current, types.ModuleType):
        return False
    if getattr(current, _SHIM_MARKER, False):
        return False
    setattr(module, attr, _CompatModule(current, overrides))
    return True


def install_peer_shims() -> None:
    """Install the compatibility shims the peer packages need under jax 0.10.

    COMPATIBILITY SHIMS FOR THE PEER PACKAGES ONLY (playground 0.2.0 and
    brax 0.14.2); nothing in dexjax relies on them.  Idempotent.

    * In every loaded ``mujoco_playground`` module whose ``jp``/``jnp`` name
      is ``jax.numpy``, that name is bound to a proxy whose ``clip`` also
      accepts ``a_min=``/``a_max=`` (removed from ``jax.numpy.clip``).
    * In ``brax.training.agents.{ppo,sac,apg}.train`` and
      ``brax.training.pmap``, the ``jax`` name is bound to a proxy that adds
      ``device_put_replicated`` (removed from jax).

    The real ``jax`` and ``jax.numpy`` modules are not modified.
    """
    import importlib

    import jax
    import jax.numpy as jnp

    try:
        import mujoco_playground  # noqa: F401  (imports every environment module)
    except ImportError:  # only Brax is in use (e.g. the Brax PPO baseline test)
        pass

    numpy_overrides = {"clip": _clip_accepting_a_min_a_max(jnp.clip)}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("mujoco_playground"):
            continue
        for attr in ("jp", "jnp"):
            value = getattr(module, attr, None)
            if value is jnp or getattr(value, "_base", None) is jnp:
                _shim_module_attr(module, attr, numpy_overrides)

    if not hasattr(jax, "device_put_replicated"):
        jax_overrides = {"device_put_replicated": _device_put_replicated}
        for name in (
            "brax.training.agents.ppo.train",
            "brax.training.agents.sac.train",
            "brax.training.agents.apg.train",
            "brax.training.pmap",
        ):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            _shim_module_attr(module, "jax", jax_overrides)


# ---------------------------------------------------------------------------
# Placeholder menagerie (visual meshes only).
# ---------------------------------------------------------------------------


def leap_visual_mesh_names() -> list[str]:
    """File names of the menagerie meshes that Playground's LEAP XML asks for."""
    from mujoco_playground._src.manipulation.leap_hand import (
        leap_hand_constants as consts,
    )

    xml = (consts.ROOT_PATH / "xmls" / "leap_rh_mjx.xml").read_text()
    files = re.findall(r'file="([^"]*mujoco_menagerie/leap_hand/assets/[^"]+)"', xml)
    return sorted({Path(f).name for f in files})


def write_placeholder_menagerie(root: Path) -> Path:
    """Write placeholder LEAP-hand meshes under ``root``; return the menagerie dir.

    Layout mirrors ``mujoco_menagerie/leap_hand/assets/<name>.obj``; every
    file is the same 1 cm tetrahedron.
    """
    menagerie = Path(root) / "mujoco_menagerie"
    assets = menagerie / "leap_hand" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in leap_visual_mesh_names():
        (assets / name).write_text(_TETRA_OBJ)
    return menagerie


@contextlib.contextmanager
def placeholder_menagerie() -> Iterator[Path]:
    """Point Playground at a temporary placeholder menagerie for the block.

    Sets ``mujoco_playground._src.mjx_env.MENAGERIE_PATH`` and restores it on
    exit; the temporary folder is deleted on exit (the meshes are only read
    while an environment is constructed).
    """
    from etils import epath
    from mujoco_playground._src import mjx_env

    previous = mjx_env.MENAGERIE_PATH
    with tempfile.TemporaryDirectory(prefix="dexjax_peer_menagerie_") as tmp:
        menagerie = write_placeholder_menagerie(Path(tmp))
        mjx_env.MENAGERIE_PATH = epath.Path(menagerie)
        try:
            yield menagerie
        finally:
            mjx_env.MENAGERIE_PATH = previous


def load_playground_env(env_name: str, impl: str = "jax") -> Any:
    """Build a Playground environment with placeholder visual meshes.

    Args:
      env_name: Playground registry name, e.g. ``"LeapCubeReorient"``.
      impl: MJX implementation, ``"jax"`` or ``"warp"`` (Playground's LEAP
        default is ``"warp"``, so it is always overridden explicitly).
    """
    from mujoco_playground import registry

    with placeholder_menagerie():
        return registry.load(env_name, config_overrides={"impl": impl})


# ---------------------------------------------------------------------------
# Environment-stepping benchmark.
# ---------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn``, block on its result, return (result, seconds)."""
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def _strip_weak_types(tree: Any) -> Any:
    """Give every array leaf a strong (non-weak) dtype, as Brax's trainer does.

    Playground's reset returns ``metrics['reward/termination']`` strongly
    typed while step returns it weakly typed, so without this a jitted step
    is compiled twice: once on the first call and again on the second.
    """
    import jax
    import jax.numpy as jnp

    def strong(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        return jnp.astype(leaf, leaf.dtype)

    return jax.tree_util.tree_map(strong, tree)


def _bench_loaded_env(
    env: Any, batch: int, steps: int, steps_per_call: int, seed: int, action_scale: float
) -> dict:
    """Time reset/step of an already built Playground env; see caller."""
    import jax
    import jax.numpy as jnp

    reset_keys = jax.random.split(jax.random.PRNGKey(seed), batch)
    actions = jax.random.uniform(
        jax.random.PRNGKey(seed + 1),
        (steps_per_call, batch, env.action_size),
        minval=-action_scale,
        maxval=action_scale,
    )
    actions = jax.block_until_ready(actions)

    batched_reset = jax.vmap(env.reset)
    batched_step = jax.vmap(env.step)

    def chunk(state: Any, acts: jax.Array) -> Any:
        final = jax.lax.scan(lambda s, a: (batched_step(s, a), None), state, acts)[0]
        return _strip_weak_types(final)

    reset_fn = jax.jit(lambda keys: _strip_weak_types(batched_reset(keys)))
    step_chunk = jax.jit(chunk)

    state, reset_compile_s = _timed(lambda: reset_fn(reset_keys))
    state, step_compile_s = _timed(lambda: step_chunk(state, actions))
    state, warmup_s = _timed(lambda: step_chunk(state, actions))

    def run() -> Any:
        s = state
        for _ in range(steps):
            s = step_chunk(s, actions)
        return s

    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    final, run_s = _timed(run)
    cpu_s = time.process_time() - cpu_start
    env_steps = steps * steps_per_call * batch
    env_steps_per_s = env_steps / run_s
    qpos = final.data.qpos
    return {
        "env_steps_per_s": env_steps_per_s,
        "physics_steps_per_s": env_steps_per_s * env.n_substeps,
        "compile_s": reset_compile_s + step_compile_s,
        "reset_compile_s": reset_compile_s,
        "step_compile_s": step_compile_s,
        "warmup_call_s": warmup_s,
        "step_compilations": step_chunk._cache_size(),  # 1 = no recompiles
        "substeps": env.n_substeps,
        "timed_s": run_s,
        "timed_cpu_s": cpu_s,
        "env_steps_per_cpu_s": env_steps / cpu_s,
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
        "timed_env_steps": env_steps,
        "steps_per_call": steps_per_call,
        "action_scale": action_scale,
        "nan_envs": int(jnp.sum(jnp.any(jnp.isnan(qpos), axis=-1))),
        "done_envs": int(jnp.sum(final.done > 0)),
    }


def playground_env_bench(
    env_name: str,
    batch: int,
    steps: int,
    impl: str = "jax",
    steps_per_call: int = 10,
    seed: int = 0,
    action_scale: float = 1.0,
) -> dict:
    """Measure batched env-stepping throughput of a Playground LEAP cube task.

    Builds the env (placeholder visual meshes, shims installed), jits
    ``vmap(env.reset)`` and a function that ``lax.scan``s ``steps_per_call``
    calls of ``vmap(env.step)`` over fixed actions drawn once, outside the
    timed region, uniformly from [-action_scale, action_scale] (default
    [-1, 1]).  Compile time is the first (blocked) call of each; after one
    untimed warm-up call, throughput is timed over ``steps`` further calls, i.e.
    ``steps * steps_per_call * batch`` env steps.  Envs are not auto-reset
    (the plain env never resets), matching a raw stepping benchmark.  Leaf
    dtypes are made strong after reset and step (see
    :func:`_strip_weak_types`) so the step compiles once; the row's
    ``step_compilations`` confirms it.

    If ``env_name`` is ``"LeapCubeReorient"`` and it fails, falls back to
    ``"LeapCubeRotateZAxis"`` (same hand, cube and physics) and says so in
    the note.

    Returns:
      A row: ``system``, ``batch``, ``env_steps_per_s``,
      ``physics_steps_per_s`` (= env steps/s x ``substeps``), ``compile_s``,
      ``substeps`` (ctrl_dt / sim_dt), ``note``, plus details.
    """
    install_peer_shims()
    candidates = [env_name] + ([ROTATE_Z_ENV] if env_name == REORIENT_ENV else [])
    failures: list[str] = []
    for name in candidates:
        try:
            env = load_playground_env(name, impl)
            measured = _bench_loaded_env(env, batch, steps, steps_per_call, seed, action_scale)
        except Exception as exc:  # noqa: BLE001  (report, then fall back)
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        note = (
            f"MuJoCo Playground 0.2.0 env, MJX impl={impl}; placeholder visual-only "
            "menagerie meshes (tetrahedra, contype=0, no mass); compatibility "
            "shims jnp.clip(a_min/a_max) and jax.device_put_replicated; "
            f"no auto-reset; uniform random actions in [-{action_scale:g},"
            f"{action_scale:g}]."
        )
        if failures:
            note += " Fell back after: " + " | ".join(failures)
        return {"system": f"playground/{name}/{impl}", "batch": batch, **measured, "note": note}
    raise RuntimeError("playground_env_bench failed: " + " | ".join(failures))


# ---------------------------------------------------------------------------
# Brax PPO with Playground's config, scaled down for CPU.
# ---------------------------------------------------------------------------


def scale_ppo_config_for_cpu(config: Mapping[str, Any], num_envs: int, num_timesteps: int) -> dict:
    """Return Playground's PPO kwargs with sizes scaled down for a CPU run.

    Keeps every hyper-parameter of ``config`` and Playground's structure of
    one rollout of all envs per training step (``batch_size *
    num_minibatches == num_envs``), changing only: ``num_envs``,
    ``num_timesteps``, ``num_minibatches`` (the config's value, or the
    largest divisor of ``num_envs`` below it), ``batch_size`` (= ``num_envs
    // num_minibatches``), ``num_evals`` = 3 with ``run_evals`` off (two
    training epochs: the first carries the compile, the second is timed),
    ``num_eval_envs`` and ``num_resets_per_eval`` (0: no extra host-side
    resets between epochs).
    """
    kwargs = dict(config)
    kwargs.pop("network_factory", None)
    wanted = max(1, min(int(kwargs.get("num_minibatches", 1)), num_envs))
    num_minibatches = max(d for d in range(1, wanted + 1) if num_envs % d == 0)
    kwargs.update(
        num_envs=num_envs,
        num_timesteps=num_timesteps,
        batch_size=num_envs // num_minibatches,
        num_minibatches=num_minibatches,
        num_evals=3,
        run_evals=False,
        num_eval_envs=num_envs,
        num_resets_per_eval=0,
    )
    return kwargs


def brax_ppo_peer_train(
    env_name: str,
    num_envs: int,
    num_timesteps: int,
    impl: str = "jax",
    domain_randomization: bool = True,
    seed: int = 0,
) -> dict:
    """Train Brax PPO on a Playground task the way Playground does, small.

    Uses ``mujoco_playground.config.manipulation_params.brax_ppo_config``
    (network sizes, learning rate, unroll length, ... unchanged), sizes from
    :func:`scale_ppo_config_for_cpu`, ``wrapper.wrap_for_brax_training`` and
    the task's domain randomizer (as Playground's ``train_jax_ppo.py``).

    Throughput excludes compilation: with two training epochs, it is the env
    steps between the two ``progress_fn`` calls divided by the wall time
    between them (the first epoch contains the compile).  Brax's own
    ``training/sps`` of the last epoch is returned too.
    """
    import jax
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    install_peer_shims()
    from mujoco_playground import registry, wrapper
    from mujoco_playground.config import manipulation_params

    env = load_playground_env(env_name, impl)
    config = manipulation_params.brax_ppo_config(env_name)
    kwargs = scale_ppo_config_for_cpu(config.to_dict(), num_envs, num_timesteps)
    network_factory = functools.partial(
        ppo_networks.make_ppo_networks, **config.network_factory.to_dict()
    )
    randomizer = registry.get_domain_randomizer(env_name) if domain_randomization else None

    progress: list[tuple[float, float, int, float]] = []

    def progress_fn(step: int, metrics: Mapping[str, Any]) -> None:
        progress.append(
            (
                time.perf_counter(),
                time.process_time(),
                int(step),
                float(metrics.get("training/sps", float("nan"))),
            )
        )

    start = time.perf_counter()
    # Playground's domain randomizers build a fresh env (hence read the
    # menagerie meshes) inside the wrapper, so keep the placeholders in place.
    with placeholder_menagerie():
        ppo.train(
            environment=env,
            wrap_env_fn=wrapper.wrap_for_brax_training,
            network_factory=network_factory,
            randomization_fn=randomizer,
            progress_fn=progress_fn,
            seed=seed,
            **kwargs,
        )
    total_s = time.perf_counter() - start
    if len(progress) < 2:
        raise RuntimeError(f"expected 2 progress calls, got {progress}")
    (t1, c1, s1, _), (t2, c2, s2, brax_sps) = progress[-2], progress[-1]
    env_steps_per_s = (s2 - s1) / (t2 - t1)
    substeps = env.n_substeps * int(kwargs.get("action_repeat", 1))
    return {
        "system": f"brax-ppo/playground/{env_name}/{impl}",
        "batch": num_envs,
        "env_steps_per_s": env_steps_per_s,
        "physics_steps_per_s": env_steps_per_s * substeps,
        "brax_training_sps": brax_sps,
        "env_steps_per_cpu_s": (s2 - s1) / (c2 - c1),
        "timed_s": t2 - t1,
        "timed_cpu_s": c2 - c1,
        "loadavg_1min_after": os.getloadavg()[0],
        "compile_s": (t1 - start) - (s1 / env_steps_per_s),
        "first_epoch_s": t1 - start,
        "total_s": total_s,
        "total_env_steps": s2,
        "substeps": substeps,
        "ppo_kwargs": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))},
        "jax_devices": [str(d) for d in jax.devices()],
        "note": (
            "Brax 0.14.2 PPO, Playground 0.2.0 PPO config scaled down for CPU "
            "(num_envs/batch/minibatches/timesteps/evals), domain "
            f"randomization={'on' if randomizer else 'off'}, no evals; "
            "steps/s between the two progress_fn calls (excludes compile); "
            "compile_s estimated as first epoch minus its steps at that rate; "
            "placeholder visual meshes and compatibility shims used."
        ),
    }


# ---------------------------------------------------------------------------
# Stable-Baselines3 PPO on gymnasium-robotics' Shadow-hand block (MuJoCo C).
# ---------------------------------------------------------------------------


def install_gymnasium_robotics_shim() -> None:
    """Let gymnasium-robotics 1.4.2's joint helpers run under mujoco 3.17.

    COMPATIBILITY SHIM FOR THE SB3 PEER ONLY; nothing in dexjax relies on it.
    ``gymnasium_robotics.utils.mujoco_utils.get_joint_qpos`` (and the qvel
    getters/setters) assert ``model.jnt_type[i] in (mujoco.mjtJoint.mjJNT_HINGE,
    mujoco.mjtJoint.mjJNT_SLIDE)``; with mujoco 3.17 the enum's ``==`` against
    a ``numpy.int32`` is False, so building any Shadow-hand env fails on that
    assertion.  The ``mujoco`` name inside that one module is bound to a proxy
    whose ``mjtJoint`` holds the same values as plain ints; the real
    ``mujoco`` module is left untouched.  Idempotent.
    """
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    joint_types = types.SimpleNamespace(
        **{
            name: int(getattr(mujoco.mjtJoint, name))
            for name in dir(mujoco.mjtJoint)
            if name.startswith("mjJNT_")
        }
    )
    _shim_module_attr(mujoco_utils, "mujoco", {"mjtJoint": joint_types})


def make_hand_block_env(**kwargs: Any) -> Any:
    """``gymnasium.make(HandManipulateBlock-v1)`` with the shim above installed.

    Called inside each ``SubprocVecEnv`` worker (see :func:`sb3_ppo_peer_train`).
    """
    import gymnasium
    import gymnasium_robotics

    install_gymnasium_robotics_shim()
    gymnasium.register_envs(gymnasium_robotics)
    return gymnasium.make(SB3_ENV, **kwargs)


def _cpu_seconds_of(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the (running) processes ``pids``."""
    try:
        import psutil
    except ImportError:
        psutil = None
    total = 0.0
    for pid in pids:
        if psutil is not None:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        else:  # fields 14 and 15 of /proc/<pid>/stat: utime, stime in clock ticks
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def _pickled_by_value(module: types.ModuleType) -> Iterator[None]:
    """Let cloudpickle send ``module``'s functions by value, not by import path.

    The workers then build the env without importing ``dexjax`` (and with it
    jax), which would cost seconds of CPU and hundreds of MB per worker.
    """
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def sb3_ppo_peer_train(
    num_envs: int,
    num_timesteps: int,
    n_steps: int = 10,
    num_minibatches: int = 2,
    seed: int = 0,
) -> dict:
    """Train Stable-Baselines3 PPO on ``HandManipulateBlock-v1``, CPU processes.

    What a CPU user picks today for OpenAI's own Shadow-hand block task:
    gymnasium-robotics' env (MuJoCo C, one env per process) in SB3's
    ``make_vec_env(..., vec_env_cls=SubprocVecEnv)`` with SB3's default start
    method (forkserver: the parent usually has JAX's threads running, which
    makes ``fork`` unsafe), and ``PPO("MultiInputPolicy")`` with SB3's default
    network, ``n_steps`` steps per env per rollout, ``n_epochs=4`` and
    ``num_minibatches`` minibatches per epoch (the number of the dexjax
    ``cpu`` preset; the largest divisor of the rollout not above it).

    The forkserver preloads SB3's worker module and gymnasium-robotics once,
    so the ``num_envs`` workers fork from it instead of each importing torch.
    The env factory is sent to them by value (:func:`_pickled_by_value`) and
    installs :func:`install_gymnasium_robotics_shim` there.  The parent's
    torch runs one thread during the measurement so that the PPO update does
    not compete with the workers (restored afterwards).

    One untimed warm-up ``learn`` of one rollout, then ``learn(num_timesteps,
    reset_num_timesteps=False)`` is timed (SB3 rounds it up to whole
    rollouts; the row counts the steps actually taken).  CPU seconds are the
    parent's ``time.process_time()`` plus the workers' user + system time over
    the same window, read from each worker (psutil, else ``/proc``) while it
    runs.

    Returns:
      A row like :func:`brax_ppo_peer_train`'s: ``system``, ``batch``,
      ``env_steps_per_s``, ``env_steps_per_cpu_s``, ``physics_steps_per_s``
      (= env steps/s x ``substeps``, the env's ``n_substeps``),
      ``compile_s`` (0: nothing is compiled), ``note``, plus details.
    """
    import multiprocessing
    import resource

    try:
        import gymnasium
        import gymnasium_robotics
        import stable_baselines3
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv
    except ImportError as err:
        raise ImportError(
            f"the SB3 peer needs stable-baselines3, torch and gymnasium-robotics ({err}): "
            "pip install -e '.[bench]'"
        ) from err

    gymnasium.register_envs(gymnasium_robotics)
    rollout = num_envs * n_steps
    wanted = max(1, min(num_minibatches, rollout))
    minibatches = max(d for d in range(1, wanted + 1) if rollout % d == 0)
    ppo_kwargs = {
        "n_steps": n_steps,
        "batch_size": rollout // minibatches,
        "n_epochs": 4,
        "device": "cpu",
        "seed": seed,
        "verbose": 0,
    }
    start_method = "forkserver"
    # Only takes effect when this process starts its forkserver; "__main__" is
    # multiprocessing's default preload, kept so workers do not each import it.
    multiprocessing.get_context(start_method).set_forkserver_preload(
        ["__main__", "stable_baselines3.common.vec_env.subproc_vec_env", "gymnasium_robotics"]
    )

    torch_threads = torch.get_num_threads()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with _pickled_by_value(sys.modules[__name__]):
        vec_env = make_vec_env(
            make_hand_block_env,
            n_envs=num_envs,
            seed=seed,
            vec_env_cls=SubprocVecEnv,
            vec_env_kwargs={"start_method": start_method},
        )
    try:
        substeps = int(vec_env.get_attr("n_substeps", indices=[0])[0])
        control_dt = float(vec_env.get_attr("dt", indices=[0])[0])
        pids = [process.pid for process in vec_env.processes]
        torch.set_num_threads(1)
        model = PPO("MultiInputPolicy", vec_env, **ppo_kwargs)
        setup_s = time.perf_counter() - start

        warm_start = time.perf_counter()
        model.learn(total_timesteps=rollout)
        warmup_s = time.perf_counter() - warm_start

        steps_before = model.num_timesteps
        workers_before = _cpu_seconds_of(pids)
        t0, c0 = time.perf_counter(), time.process_time()
        model.learn(total_timesteps=num_timesteps, reset_num_timesteps=False)
        timed_s, parent_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        workers_cpu_s = _cpu_seconds_of(pids) - workers_before
        timed_steps = model.num_timesteps - steps_before
    finally:
        torch.set_num_threads(torch_threads)
        vec_env.close()
    # RUSAGE_CHILDREN only counts children that have exited and been waited
    # for, hence read after close().  Forkserver workers are children of the
    # forkserver, not of this process, so this stays ~0 here; and for direct
    # children it would be their whole lifetime (start-up, warm-up), not the
    # timed window.  Kept as a cross-check only; the rate uses the per-worker
    # readings above.
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu_s = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )

    cpu_s = parent_cpu_s + workers_cpu_s
    env_steps_per_s = timed_steps / timed_s
    cores = len(os.sched_getaffinity(0))
    return {
        "system": f"sb3/ppo ({SB3_ENV}, SubprocVecEnv)",
        "batch": num_envs,
        "env_steps_per_s": env_steps_per_s,
        "physics_steps_per_s": env_steps_per_s * substeps,
        "env_steps_per_cpu_s": timed_steps / cpu_s,
        "compile_s": 0.0,
        "substeps": substeps,
        "control_dt_s": control_dt,
        "sim_dt_s": control_dt / substeps,
        "timed_s": timed_s,
        "timed_cpu_s": cpu_s,
        "parent_cpu_s": parent_cpu_s,
        "workers_cpu_s": workers_cpu_s,
        "children_rusage_cpu_s": children_cpu_s,
        "timed_env_steps": timed_steps,
        "requested_timesteps": num_timesteps,
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "worker_processes": num_envs,
        "cores": cores,
        "start_method": start_method,
        "torch_threads": 1,
        "loadavg_1min_after": os.getloadavg()[0],
        "ppo_kwargs": {**ppo_kwargs, "num_minibatches": minibatches},
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gymnasium.__version__,
            "gymnasium_robotics": gymnasium_robotics.__version__,
        },
        "note": (
            f"Stable-Baselines3 {stable_baselines3.__version__} PPO, MultiInputPolicy with "
            f"SB3's default networks, n_steps={n_steps} per env, n_epochs=4, "
            f"{minibatches} minibatches of {rollout // minibatches}; gymnasium-robotics "
            f"{gymnasium_robotics.__version__} {SB3_ENV} (MuJoCo C, {substeps} substeps of "
            f"{1000 * control_dt / substeps:g} ms per env step), one env per "
            f"SubprocVecEnv worker ({num_envs} processes, {start_method}) on {cores} "
            "cores; parent torch set_num_threads(1); one warm-up rollout+update untimed; "
            "CPU = parent process time + workers' user+system time over the timed learn; "
            "shim for gymnasium-robotics' joint-type assertion under mujoco 3.17."
        ),
    }


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one peer measurement and print its row as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    bench = sub.add_parser("bench", help="playground_env_bench")
    bench.add_argument("--env", default=REORIENT_ENV)
    bench.add_argument("--batch", type=int, default=16)
    bench.add_argument("--steps", type=int, default=20)
    bench.add_argument("--impl", default="jax")
    bench.add_argument("--steps-per-call", type=int, default=10)
    bench.add_argument("--action-scale", type=float, default=1.0)
    ppo = sub.add_parser("ppo", help="brax_ppo_peer_train")
    ppo.add_argument("--env", default=REORIENT_ENV)
    ppo.add_argument("--num-envs", type=int, default=16)
    ppo.add_argument("--num-timesteps", type=int, default=5000)
    ppo.add_argument("--impl", default="jax")
    ppo.add_argument("--no-dr", action="store_true")
    sb3 = sub.add_parser("sb3", help="sb3_ppo_peer_train")
    sb3.add_argument("--num-envs", type=int, default=2)
    sb3.add_argument("--num-timesteps", type=int, default=200)
    sb3.add_argument("--n-steps", type=int, default=10)
    args = parser.parse_args(argv)

    # Must precede the first jax computation of this process.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_NO_HANG_FLAG).strip()

    try:
        if args.cmd == "bench":
            row = playground_env_bench(
                args.env,
                args.batch,
                args.steps,
                impl=args.impl,
                steps_per_call=args.steps_per_call,
                action_scale=args.action_scale,
            )
        elif args.cmd == "sb3":
            row = sb3_ppo_peer_train(args.num_envs, args.num_timesteps, n_steps=args.n_steps)
        else:
            row = brax_ppo_peer_train(
                args.env,
                args.num_envs,
                args.num_timesteps,
                impl=args.impl,
                domain_randomization=not args.no_dr,
            )
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
