"""Simulation throughput, measured side by side in one run.

Rows (one per system and batch size), each with `system`, `batch`, `physics_steps_per_s`,
`env_steps_per_s` and `compile_s`:
- `dexjax/c + randomization`: our full environment step (physics, reward, goals,
  automatic resets, every randomization of the paper) on the C engine backend, jitted and
  vmapped, 10 control steps per call with random actions drawn inside the call; the
  table's ratios are to this row;
- `dexjax/c`: the same without randomization;
- `dexjax/mjx`, `dexjax/mjx + randomization`: the same two on the MJX backend;
- `mujoco/rollout`: the same scene in MuJoCo's C engine through bare `mujoco.rollout`
  with as many threads: what the C backend's physics costs without the environment;
- `playground/...`: MuJoCo Playground's LEAP-hand cube task, the nearest JAX peer (needs
  the `bench` extra; see dexjax.peers).
"""

import copy
import dataclasses
import os
import time

import jax
import mujoco
import numpy as np
from mujoco import rollout

from dexjax import env as env_lib
from dexjax import physics
from dexjax import randomization as dr

REFERENCE = "dexjax/c + randomization"
"""The row the simulation table's ratios are taken to."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (16, 128)
    calls: int = 5
    """Timed calls per measurement, after the compiling call."""
    steps_per_call: int = 10
    """Control steps scanned inside one jitted call."""
    backends: tuple[str, ...] = ("c", "mjx")
    """dexjax's physics backends to measure (the table's ratios need "c")."""
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
    env: env_lib.HandEnv, batch: int, cfg: BenchConfig, system: str = REFERENCE
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
    """Bare `mujoco.rollout` on the same scene: one MjModel per environment, a persistent
    pool of as many threads as the C backend uses, one call of `substeps` steps per control
    step from settled states, random targets around the settled ones. What the C backend's
    physics costs without the environment around it."""
    model = env.mj_model
    nthread = physics.default_threads()
    models = [copy.copy(model) for _ in range(batch)]
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    pool = rollout.Rollout(nthread=nthread if nthread > 1 else 0)
    keys = jax.random.split(jax.random.key(0), batch)
    settled = jax.jit(jax.vmap(env.reset))(keys).data
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    start = np.zeros((batch, mujoco.mj_stateSize(model, spec)))
    start[:, 1 : 1 + model.nq] = np.asarray(settled.qpos)
    start[:, 1 + model.nq :] = np.asarray(settled.qvel)
    ctrl0 = np.asarray(settled.ctrl, np.float64)
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange.T
    substeps = env.config.substeps

    def control_steps():
        state = start
        for _ in range(cfg.steps_per_call):
            ctrl = np.clip(ctrl0 + 0.1 * rng.standard_normal(ctrl0.shape), low, high)
            control = np.repeat(ctrl[:, None], substeps, axis=1)
            states, _ = pool.rollout(models, datas, state, control, nstep=substeps)
            state = states[:, -1]

    control_steps()  # warm-up (thread pool, allocation)
    begin = time.perf_counter()
    for _ in range(cfg.calls):
        control_steps()
    per_call = (time.perf_counter() - begin) / cfg.calls
    physics_steps = batch * cfg.steps_per_call * substeps / per_call
    pool.close()
    return {
        "system": f"mujoco/rollout ({nthread} threads)",
        "batch": batch,
        "env_steps_per_s": physics_steps / substeps,
        "physics_steps_per_s": physics_steps,
        "compile_s": 0.0,
        "substeps": substeps,
        "note": "physics only: one rollout call per control step, from settled states",
    }


def run(cfg: BenchConfig, progress=print) -> list[dict]:
    """All rows. `progress` receives a line per finished row."""
    rows = []
    for batch in cfg.batches:
        for backend in cfg.backends:
            for randomization in ("all", "none"):
                env = env_lib.make_env(
                    settle_steps=10, backend=backend, randomization=dr.preset(randomization)
                )
                name = f"dexjax/{backend}" + (" + randomization" if randomization == "all" else "")
                rows.append(bench_dexjax(env, batch, cfg, name))
                progress(format_row(rows[-1]))
        native = env_lib.make_env(settle_steps=10, randomization=dr.preset("none"))
        rows.append(bench_native(native, batch, cfg))
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
    """A Markdown table of the rows, each row's ratio to dexjax's C backend with every
    randomization at the same batch."""
    ours = {r["batch"]: r["physics_steps_per_s"] for r in rows if r["system"] == REFERENCE}
    lines = [
        f"| system | batch | env steps/s | physics steps/s | this / {REFERENCE} | compile (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["physics_steps_per_s"] / ours[r["batch"]] if r["batch"] in ours else float("nan")
        lines.append(
            f"| {r['system']} | {r['batch']} | {r['env_steps_per_s']:.0f} | "
            f"{r['physics_steps_per_s']:.0f} | {ratio:.2f}x | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Training throughput: simulation + learning, against Brax PPO on MuJoCo Playground and
# Stable-Baselines3 PPO on gymnasium-robotics' Shadow-hand block.


@dataclasses.dataclass(frozen=True)
class TrainBenchConfig:
    env_counts: tuple[int, ...] = (32, 128)
    preset: str = "cpu"
    """dexjax run preset whose task and learner are timed (the number of environments is
    replaced by each of `env_counts`)."""
    updates_per_call: int = 2
    """PPO updates per compiled call of dexjax's train_chunk."""
    calls: int = 3
    """Timed calls after the compiling one."""
    backends: tuple[str, ...] = ("c", "mjx")
    """dexjax physics backends to time."""
    peers: bool = True
    """Also train Brax PPO on Playground's LEAP cube task (needs the `bench` extra)."""
    peer_env: str = "LeapCubeReorient"
    peer_steps_per_epoch: int = 2
    """Brax training steps (one rollout of every env, then the updates) in its timed epoch."""
    sb3: bool = True
    """Also train Stable-Baselines3 PPO on gymnasium-robotics' HandManipulateBlock-v1 in
    SubprocVecEnv workers (needs the `bench` extra)."""


def _count_lowerings() -> list[int]:
    """A counter of programs lowered (compiled or fetched from the cache) from now on."""
    count = [0]

    def listener(event: str, duration_secs: float, **kwargs) -> None:
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    return count


def _physics_seconds(env) -> dict[str, float]:
    """The C engine's cumulative seconds (rollout, host calls); zeros on MJX."""
    engine = getattr(getattr(env, "physics", None), "engine", None)
    return dict(engine.seconds) if engine else {"rollout": 0.0, "host": 0.0}


def _timed_chunks(fn, runner, calls: int, lowered: list[int], env=None) -> tuple:
    """(first call s, wall s per later call, process CPU s per later call, last runner,
    the C engine's seconds per later call {rollout, host})."""
    start = time.perf_counter()
    runner, _ = jax.block_until_ready(fn(runner))
    first = time.perf_counter() - start
    before = lowered[0]
    engine_before = _physics_seconds(env)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(calls):
        runner, _ = jax.block_until_ready(fn(runner))
    wall = (time.perf_counter() - start) / calls
    if lowered[0] != before:  # a second compilation would have been timed as training
        raise RuntimeError("the timed function compiled again after its first call")
    engine = {k: (v - engine_before[k]) / calls for k, v in _physics_seconds(env).items()}
    return first, wall, (time.process_time() - cpu_start) / calls, runner, engine


def bench_train_dexjax(num_envs: int, cfg: TrainBenchConfig, backend: str = "c") -> dict:
    """dexjax's LSTM PPO (`train.train_chunk`, the function `dexjax train` runs) on the
    preset's task with `num_envs` environments on the `backend` physics, and the same
    rollouts without the update (simulation and policy/value inference only) to split the
    time; on the C backend the rollouts' time is split again into the C engine's rollout,
    the rest of its host call, and the compiled program's own work."""
    from dexjax import config as config_lib
    from dexjax import parallel, run
    from dexjax import train as train_lib

    config = config_lib.override(
        config_lib.preset(cfg.preset),
        [
            f"train.num_envs={num_envs}",
            f"train.updates_per_chunk={cfg.updates_per_call}",
            f"env.backend={backend}",
        ],
    )
    tc = config.train
    env = run.make_env(config)
    mesh = parallel.env_mesh()
    parallel.check_divisible(tc.num_envs, tc.num_minibatches, mesh)
    runner = train_lib.distribute(train_lib.init(tc, env, jax.random.key(tc.seed)), mesh)

    def full(r):
        return train_lib.train_chunk(tc, env, r, mesh)

    @jax.jit
    def rollouts_only(r):
        def body(r, _):
            r, t = train_lib.rollout(tc, env, train_lib.constrain(r, mesh))
            return train_lib.constrain(r, mesh), t.reward.mean()

        return jax.lax.scan(body, r, None, length=tc.updates_per_chunk)

    lowered = _count_lowerings()
    first, wall, cpu, runner, _ = _timed_chunks(full, runner, cfg.calls, lowered)
    r_first, r_wall, r_cpu, _, engine = _timed_chunks(
        rollouts_only, runner, cfg.calls, lowered, env
    )
    steps = tc.steps_per_update * tc.updates_per_chunk
    per_update = tc.updates_per_chunk
    return {
        "system": f"dexjax/{backend}/lstm-ppo ({cfg.preset} preset)",
        "batch": num_envs,
        "env_steps_per_s": steps / wall,
        "physics_steps_per_s": steps / wall * config.env.substeps,
        "env_steps_per_cpu_s": steps / cpu,
        "compile_s": first - wall,
        "rollout_env_steps_per_s": steps / r_wall,
        "rollout_env_steps_per_cpu_s": steps / r_cpu,
        "rollout_compile_s": r_first - r_wall,
        "s_per_update": wall / tc.updates_per_chunk,
        "rollout_s_per_update": r_wall / tc.updates_per_chunk,
        "update_s_per_update": (wall - r_wall) / tc.updates_per_chunk,
        "update_share": 1.0 - r_wall / wall,
        "physics_s_per_update": engine["rollout"] / per_update,
        "physics_host_s_per_update": (engine["host"] - engine["rollout"]) / per_update,
        "substeps": config.env.substeps,
        "devices": mesh.size,
        "loadavg_1min_after": os.getloadavg()[0],
        "train": {
            "hidden": tc.network.hidden,
            "lstm": tc.network.lstm,
            "rollout_length": tc.rollout_length,
            "epochs": tc.epochs,
            "num_minibatches": tc.num_minibatches,
        },
        "note": (
            f"train.train_chunk of the {cfg.preset} preset with num_envs={num_envs}, "
            f"{cfg.updates_per_call} updates per call, {cfg.calls} timed calls; every "
            "randomization on; rollout_*: the same rollouts (simulation + network inference, "
            "no gradient steps); update = full - rollout."
        ),
    }


def bench_train_peer(num_envs: int, cfg: TrainBenchConfig) -> dict:
    """Brax PPO (MLP) training Playground's LEAP cube task with `num_envs` environments
    (see dexjax.peers.brax_ppo_peer_train)."""
    from dexjax import peers

    unroll = 40  # Playground's unroll_length for the LEAP cube tasks
    num_timesteps = 2 * cfg.peer_steps_per_epoch * num_envs * unroll
    start_cpu = time.process_time()
    row = peers.brax_ppo_peer_train(cfg.peer_env, num_envs, num_timesteps)
    row["process_cpu_s_total"] = time.process_time() - start_cpu
    return row


def bench_train_sb3(num_envs: int, cfg: TrainBenchConfig) -> dict:
    """Stable-Baselines3 PPO training HandManipulateBlock-v1 with `num_envs` environments in
    as many SubprocVecEnv workers (see dexjax.peers.sb3_ppo_peer_train)."""
    from dexjax import peers

    n_steps = 10  # steps per env per rollout, the cpu preset's rollout_length
    num_timesteps = 2 * cfg.peer_steps_per_epoch * num_envs * n_steps
    return peers.sb3_ppo_peer_train(num_envs, num_timesteps, n_steps=n_steps)


def run_train(cfg: TrainBenchConfig, progress=lambda line, row=None: print(line)) -> list[dict]:
    """dexjax and the peers at each env count, alternating so all see similar load.
    `progress(line, row)` receives each finished row."""
    rows = []
    for num_envs in cfg.env_counts:
        for backend in cfg.backends:
            rows.append(bench_train_dexjax(num_envs, cfg, backend))
            progress(format_train_row(rows[-1]), rows[-1])
        peers = [("peer", bench_train_peer, cfg.peers), ("sb3 peer", bench_train_sb3, cfg.sb3)]
        for label, bench_peer, wanted in peers:
            if not wanted:
                continue
            try:
                rows.append(bench_peer(num_envs, cfg))
            except ImportError as err:
                progress(f"{label} skipped: {err} (pip install -e '.[bench]')")
                continue
            progress(format_train_row(rows[-1]), rows[-1])
    return rows


def format_train_row(row: dict) -> str:
    return (
        f"{row['system']:<44} envs {row['batch']:>5}  "
        f"env steps/s {row['env_steps_per_s']:>8.1f}  per CPU-s {row['env_steps_per_cpu_s']:>8.1f}"
    )


def train_table(rows: list[dict]) -> str:
    """A Markdown table of training throughput, each row's ratio dexjax's C backend / it,
    then where the time of each dexjax update goes."""
    ours = {r["batch"]: r for r in rows if r["system"].startswith("dexjax/c/")}
    lines = [
        "| system | envs | env steps/s | env steps per CPU-s | dexjax-c / this, wall | "
        "dexjax-c / this, CPU | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    nan = {"env_steps_per_s": float("nan"), "env_steps_per_cpu_s": float("nan")}
    for r in rows:
        mine = ours.get(r["batch"], nan)
        wall = mine["env_steps_per_s"] / r["env_steps_per_s"]
        cpu = mine["env_steps_per_cpu_s"] / r["env_steps_per_cpu_s"]
        lines.append(
            f"| {r['system']} | {r['batch']} | {r['env_steps_per_s']:.1f} | "
            f"{r['env_steps_per_cpu_s']:.1f} | {wall:.2f}x | {cpu:.2f}x | {r['compile_s']:.0f} |"
        )
    for r in rows:
        if "update_share" not in r:
            continue
        lines.append("")
        line = (
            f"{r['system']} at {r['batch']} envs: {r['s_per_update']:.3f} s per update = "
            f"{r['rollout_s_per_update']:.3f} s rollout (simulation + inference) + "
            f"{r['update_s_per_update']:.3f} s PPO update ({100 * r['update_share']:.0f}%)"
        )
        if r.get("physics_s_per_update"):
            rest = r["rollout_s_per_update"] - r["physics_s_per_update"]
            rest -= r["physics_host_s_per_update"]
            line += (
                f"; the rollout's {r['physics_s_per_update']:.3f} s in MuJoCo's rollout, "
                f"{r['physics_host_s_per_update']:.3f} s in the rest of the engine's host "
                f"call, {rest:.3f} s in the compiled program (environment logic, "
                "randomization, policy and value inference, callback transfers)"
            )
        lines.append(line)
    return "\n".join(lines)
