"""Simulation throughput, measured side by side in one run.

Rows (one per system and batch size), each with `system`, `batch`, `physics_steps_per_s`,
`env_steps_per_s` and `compile_s`:
- `dexjax/mjx`: our full environment step (physics, reward, goals, automatic resets), jitted
  and vmapped, 10 control steps per call with random actions drawn inside the call;
- `dexjax/mjx + randomization`: the same with every randomization of the paper on;
- `mujoco/native`: the same scene in MuJoCo's C engine through `mujoco.rollout`, one thread
  per core: the physical limit of this CPU for this model;
- `playground/...`: MuJoCo Playground's LEAP-hand cube task, the nearest JAX peer (needs
  the `bench` extra; see dexjax.peers).
"""

import dataclasses
import os
import time

import jax
import mujoco
import numpy as np
from mujoco import rollout

from dexjax import env as env_lib
from dexjax import randomization as dr


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (16, 128)
    calls: int = 5
    """Timed calls per measurement, after the compiling call."""
    steps_per_call: int = 10
    """Control steps scanned inside one jitted call."""
    peers: bool = True
    """Also measure MuJoCo Playground (skipped with a note if it is not installed)."""
    peer_impls: tuple[str, ...] = ("jax",)
    """MJX implementations of the peer to measure: "jax" and/or "warp" (Warp runs on this
    CPU too, about ten times slower than its JAX implementation)."""


def _timed_calls(fn, arg, calls: int) -> tuple[float, float, object]:
    """(compile+first call seconds, mean seconds per later call, last output)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(arg))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        out = jax.block_until_ready(fn(out))
    return first, (time.perf_counter() - start) / calls, out


def bench_dexjax(
    env: env_lib.HandEnv, batch: int, cfg: BenchConfig, system: str = "dexjax/mjx"
) -> dict:
    """Full env steps of our environment, random actions, `batch` environments."""
    step = jax.vmap(env.step)

    def run(carry):
        state, key = carry

        def body(carry, _):
            state, key = carry
            key, key_action = jax.random.split(key)
            action = jax.random.uniform(key_action, (batch, env.action_size), minval=-1, maxval=1)
            return (step(state, action), key), None

        return jax.lax.scan(body, (state, key), None, length=cfg.steps_per_call)[0]

    keys = jax.random.split(jax.random.key(0), batch)
    state = jax.block_until_ready(jax.jit(jax.vmap(env.reset))(keys))
    run = jax.jit(run)
    first, per_call, _ = _timed_calls(run, (state, jax.random.key(1)), cfg.calls)
    if run._cache_size() != 1:  # a second compilation would have been timed as steps
        raise RuntimeError(f"the benchmarked step compiled {run._cache_size()} times")
    env_steps = batch * cfg.steps_per_call / per_call
    return {
        "system": system,
        "batch": batch,
        "env_steps_per_s": env_steps,
        "physics_steps_per_s": env_steps * env.config.substeps,
        "compile_s": first - per_call,
        "substeps": env.config.substeps,
    }


def bench_native(env: env_lib.HandEnv, batch: int, cfg: BenchConfig) -> dict:
    """The same scene in MuJoCo C (mujoco.rollout), one MjData per thread."""
    model = env.mj_model
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    d = mujoco.MjData(model)
    mujoco.mj_forward(model, d)
    init = np.zeros(mujoco.mj_stateSize(model, state_spec))
    mujoco.mj_getState(model, d, init, state_spec)
    nstep = cfg.steps_per_call * env.config.substeps
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange.T
    control = rng.uniform(low, high, (batch, nstep, model.nu))
    initial = np.tile(init, (batch, 1))
    rollout.rollout(model, datas, initial, control)  # warm-up (thread pool, allocation)
    start = time.perf_counter()
    for _ in range(cfg.calls):
        rollout.rollout(model, datas, initial, control)
    per_call = (time.perf_counter() - start) / cfg.calls
    physics = batch * nstep / per_call
    return {
        "system": f"mujoco/native ({nthread} threads)",
        "batch": batch,
        "env_steps_per_s": physics / env.config.substeps,
        "physics_steps_per_s": physics,
        "compile_s": 0.0,
        "substeps": env.config.substeps,
        "note": "physics only, open-loop random controls",
    }


def run(cfg: BenchConfig, progress=print) -> list[dict]:
    """All rows. `progress` receives a line per finished row."""
    randomized = env_lib.make_env(settle_steps=10)
    plain = env_lib.make_env(settle_steps=10, randomization=dr.preset("none"))
    rows = []
    for batch in cfg.batches:
        rows.append(bench_native(plain, batch, cfg))
        progress(format_row(rows[-1]))
        rows.append(bench_dexjax(plain, batch, cfg, "dexjax/mjx"))
        progress(format_row(rows[-1]))
        rows.append(bench_dexjax(randomized, batch, cfg, "dexjax/mjx + randomization"))
        progress(format_row(rows[-1]))
    if cfg.peers:
        rows.extend(_peer_rows(cfg, progress))
    return rows


def _peer_rows(cfg: BenchConfig, progress) -> list[dict]:
    try:
        from dexjax import peers
    except ImportError as err:
        progress(f"peers skipped: {err} (pip install -e '.[bench]')")
        return []
    rows = []
    for impl in cfg.peer_impls:
        for batch in cfg.batches:
            row = peers.playground_env_bench(
                peers.REORIENT_ENV, batch=batch, steps=cfg.calls, impl=impl
            )
            rows.append(row)
            progress(format_row(row))
    return rows


def format_row(row: dict) -> str:
    return (
        f"{row['system']:<34} batch {row['batch']:>5}  "
        f"env steps/s {row['env_steps_per_s']:>9.0f}  "
        f"physics steps/s {row['physics_steps_per_s']:>10.0f}  compile {row['compile_s']:6.1f} s"
    )


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows, with each row's ratio to dexjax at the same batch."""
    ours = {r["batch"]: r["physics_steps_per_s"] for r in rows if r["system"] == "dexjax/mjx"}
    lines = [
        "| system | batch | env steps/s | physics steps/s | vs dexjax | compile (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["physics_steps_per_s"] / ours[r["batch"]] if r["batch"] in ours else float("nan")
        lines.append(
            f"| {r['system']} | {r['batch']} | {r['env_steps_per_s']:.0f} | "
            f"{r['physics_steps_per_s']:.0f} | {ratio:.2f}x | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)
