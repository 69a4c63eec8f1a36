"""A training run on the host: a run directory, the compiled chunks, logs and checkpoints.

    run_dir/
      config.json        the RunConfig (and the preset and package versions it came from)
      metrics.jsonl      one row per PPO update (see dexjax.logs)
      tensorboard/       TensorBoard event files
      checkpoints/<update>/   orbax checkpoints of the learning state (dexjax.checkpoint)
      curves.png         learning curves, drawn when the run ends

`train(run_dir, config)` starts a run; `train(run_dir, resume=True)` continues one from its
last checkpoint. Between compiled chunks of `updates_per_chunk` PPO updates the host only
logs, draws the progress bar and checkpoints.

The environments are split over every device of every process (dexjax.parallel). In a
multi-process run every process runs this same function: only process 0 writes the config,
metrics, TensorBoard events, curves and the progress bar; all take part in orbax's
checkpoint saves (see dexjax.checkpoint) and all restore from the run directory on resume,
which must therefore be on a file system every process sees.
"""

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import signal
import sys
import threading
import time

import jax
import numpy as np

from dexjax import checkpoint, logs, parallel, runtime
from dexjax import config as config_lib
from dexjax import env as env_lib
from dexjax import train as train_lib

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = checkpoint.CHECKPOINT_DIR
VERSIONED = ("dexjax", "jax", "jaxlib", "mujoco", "mujoco-mjx", "flax", "optax", "brax")


class RunDirError(ValueError):
    """A run directory that cannot be used the way it was asked for."""


class DivergedError(RuntimeError):
    """Training kept producing non-finite updates; the run directory keeps its last
    checkpoint from before."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after it saved a checkpoint of its last update."""

    def __init__(self, signum: int, run_dir: pathlib.Path, update: int):
        self.signum, self.run_dir, self.update = signum, run_dir, update
        name = signal.Signals(signum).name
        super().__init__(
            f"{name}: stopped at update {update} with a checkpoint; continue with "
            f"dexjax train --resume {run_dir}"
        )


class _StopSignals:
    """Turns the first SIGINT or SIGTERM into a request to stop after the chunk in flight
    (the caller checkpoints, then raises `Interrupted`); a second one exits at once.
    Handlers are installed only in the main thread (Python allows no other). In a
    multi-process run every process must get the signal (schedulers send it to all): the
    checkpoint is a collective that every process enters."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this chunk with a checkpoint "
            "(again to exit now)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclasses.dataclass(frozen=True)
class RunResult:
    run_dir: pathlib.Path
    config: config_lib.RunConfig
    update: int  # PPO updates done
    env_steps: int
    seconds: float  # wall-clock time of this invocation
    last_metrics: dict


def versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_config(
    run_dir: pathlib.Path,
    config: config_lib.RunConfig,
    preset: str,
    init_from: str | pathlib.Path | None = None,
) -> None:
    record = {
        "preset": preset,
        "config": config_lib.to_dict(config),
        "versions": versions(),
        "backend": jax.default_backend(),
    }
    if init_from is not None:
        record["init_from"] = str(init_from)
    (run_dir / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_config(run_dir: pathlib.Path) -> config_lib.RunConfig:
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunDirError(f"{run_dir} holds no dexjax run (no {CONFIG_FILE})")
    try:
        record = json.loads(path.read_text())
        return config_lib.from_dict(record["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise RunDirError(f"{path} is not a readable run config: {error}") from error


def holds_run(run_dir: pathlib.Path) -> bool:
    run_dir = pathlib.Path(run_dir)
    return (run_dir / CONFIG_FILE).exists() or (run_dir / CHECKPOINT_DIR).exists()


def make_env(config: config_lib.RunConfig) -> env_lib.HandEnv:
    return env_lib.HandEnv(config.env)


def _rows(metrics: dict, first_update: int, config: config_lib.RunConfig, seconds: float):
    """One log row per update of a chunk's [updates, ...] metrics."""
    metrics = parallel.host_copy(metrics)
    n = config.train.updates_per_chunk
    per_update_s = seconds / n
    steps_per_update = config.train.steps_per_update
    for i in range(n):
        update = first_update + i + 1
        row = {"update": update, "env_steps": update * steps_per_update}
        row.update({k: np.asarray(v[i]).item() for k, v in metrics.items()})
        row["train/learning_rate"] = config.train.ppo.lr
        row["time/env_steps_per_s"] = steps_per_update / per_update_s
        yield row


def _summary(row: dict) -> dict[str, str]:
    def fmt(key, spec):
        value = row.get(key)
        return "-" if value is None or not np.isfinite(value) else format(value, spec)

    return {
        "succ": fmt("env/successes_at_end", ".2f"),
        "return": fmt("train/episode_return", ".1f"),
        "drops": fmt("train/terminations_per_episode", ".2f"),
        "steps/s": fmt("time/env_steps_per_s", ".0f"),
    }


def train(
    run_dir: str | pathlib.Path,
    config: config_lib.RunConfig | None = None,
    *,
    preset: str = "custom",
    resume: bool = False,
    init_from: str | pathlib.Path | None = None,
    max_chunks: int | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    watchdog_s: float = 3600.0,
) -> RunResult:
    """Train into `run_dir` (a new run from `config`, or the run there when `resume`).

    `init_from` (a run directory or a directory of `dexjax save-policy`) starts a new run
    from that run's trained networks and normalizers instead of fresh ones: a curriculum
    stage. The optimizer, key and update count start fresh; the source is recorded in
    the run's config file.

    `max_chunks` stops this invocation early (the run can be resumed later). SIGINT or
    SIGTERM stops it after the chunk in flight with a checkpoint (`Interrupted`); a run
    whose updates keep turning non-finite stops with `DivergedError`.
    """
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    run_dir = pathlib.Path(run_dir)
    writer = parallel.is_writer()
    networks = None
    if resume:
        if config is not None or init_from is not None:
            raise RunDirError(
                "a resumed run uses the config and networks saved in its run directory"
            )
        config = read_config(run_dir)
    else:
        if config is None:
            raise ValueError("a new run needs a config")
        if holds_run(run_dir):
            raise RunDirError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                "or choose another --run-dir"
            )
        # Every process has checked the directory before process 0 writes into it.
        multihost_utils.sync_global_devices("dexjax run directory checked")

    env = make_env(config)
    tc = config.train
    if not resume:
        # Read and checked before anything is written: a bad source leaves no run behind.
        if init_from is not None:
            networks = checkpoint.read_networks(init_from, tc, env)
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(run_dir, config, preset, init_from)
    mesh = parallel.env_mesh()
    parallel.check_divisible(tc.num_envs, tc.num_minibatches, mesh)
    mngr = checkpoint.manager(run_dir / CHECKPOINT_DIR, keep=config.checkpoints_to_keep)
    start = time.perf_counter()
    with runtime.Watchdog(timeout_s=watchdog_s) as watchdog:
        if resume:
            if mngr.latest_step() is None:
                raise checkpoint.CheckpointError(
                    f"{run_dir} has no checkpoint to resume from; start it again instead"
                )
            # Fresh episodes for the resumed run, from a key the original run never used.
            env_key = jax.random.fold_in(jax.random.key(tc.seed), mngr.latest_step())
            runner = train_lib.init(tc, env, env_key)
            learner = checkpoint.restore(mngr, tc, env)
            runner = checkpoint.with_learner_state(runner, learner)
        else:
            runner = train_lib.init(tc, env, jax.random.key(tc.seed))
            if networks is not None:
                runner = checkpoint.with_networks(runner, networks)
        update = int(runner.update)
        runner = train_lib.distribute(runner, mesh)
        total = config.updates
        log = logs.MetricsLog(run_dir, tensorboard=tensorboard) if writer else None
        bar = tqdm(
            total=total,
            initial=update,
            unit="update",
            disable=not (progress and writer),
            dynamic_ncols=True,
        )
        chunks = 0
        row: dict = {}
        if update < total:  # every process compiled before the first collective
            parallel.compile_together(
                train_lib.train_chunk, tc, env, runner, mesh, name="train_chunk"
            )
        skipped = 0
        try:
            with _StopSignals() as stop:
                while update < total and (max_chunks is None or chunks < max_chunks):
                    t0 = time.perf_counter()
                    runner, metrics = train_lib.train_chunk(tc, env, runner, mesh)
                    metrics = jax.block_until_ready(metrics)
                    seconds = time.perf_counter() - t0
                    for row in _rows(metrics, update, config, seconds):
                        row["time/elapsed_s"] = time.perf_counter() - start
                        skipped = skipped + 1 if row.get("train/skipped_update") else 0
                        if log is not None:
                            log.write(row)
                    if log is not None:
                        log.flush()
                    update += tc.updates_per_chunk
                    chunks += 1
                    bar.update(tc.updates_per_chunk)
                    bar.set_postfix(_summary(row))
                    watchdog.beat()
                    if skipped >= config.max_skipped_updates:
                        raise DivergedError(
                            f"{skipped} consecutive updates were skipped for non-finite "
                            f"losses, gradients or statistics (up to update {update}); "
                            f"{run_dir} keeps its last checkpoint, from update "
                            f"{mngr.latest_step()}"
                        )
                    if stop.signum is not None:
                        checkpoint.save(mngr, runner)
                        raise Interrupted(stop.signum, run_dir, update)
                    if chunks % config.checkpoint_every == 0 or update >= total:
                        checkpoint.save(mngr, runner)
                if chunks and mngr.latest_step() != update:
                    checkpoint.save(mngr, runner)
        finally:
            bar.close()
            if log is not None:
                log.close()
            mngr.close()
    rows = logs.read_metrics(run_dir, max_update=update) if writer else []
    if rows:
        logs.plot_curves(rows, run_dir / logs.CURVES_FILE, title=str(run_dir))
    return RunResult(
        run_dir=run_dir,
        config=config,
        update=update,
        env_steps=update * tc.steps_per_update,
        seconds=time.perf_counter() - start,
        last_metrics=row,
    )
