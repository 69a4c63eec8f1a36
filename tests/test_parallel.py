"""Data parallelism over the environment axis, on two devices and on two processes.

The same `dexjax train --preset smoke` run (4 environments x 4 steps per update, 4 PPO
updates, seed 0) is made three ways: in this process on one device, in a subprocess on two
forced CPU devices, and by two processes on localhost joined by jax.distributed (gloo CPU
collectives). Each split puts 2 of the 4 environments on each device; the minibatch
shuffle is the single-device one (a global permutation of the 4 environments), so the
three runs compute the same thing and may differ only in floating-point rounding (sums
split across devices, kernels compiled for other batch sizes).

"Agree" means: after the 4 updates, every parameter, Adam moment and normalizer statistic
of the final checkpoint is within ATOL + RTOL * |single-device value| of the single-device
run, and each run's parameters moved from update 2 to update 4 by at least 100 x ATOL (so
the tolerance is far below what training changes); the logged losses agree likewise.

Every subprocess runs under a timeout: a deadlock fails the test instead of stalling it.
The compiled programs are shared through the persistent compilation cache; on an empty
cache each of the three compiles takes minutes on a small CPU.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dexjax import checkpoint, cli, parallel, run
from dexjax import config as config_lib

TIMEOUT_S = 1200  # an empty compilation cache on a busy 2-core machine
UPDATES = 4
ATOL, RTOL = 1e-5, 1e-4
MIN_MOVE = 100 * ATOL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_command(run_dir: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dexjax.cli",
        "train",
        "--preset",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        *extra,
    ]


def _two_devices_env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    return env


def _start_two_processes(run_dir: pathlib.Path, *extra: str) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    return [
        subprocess.Popen(
            _train_command(
                run_dir,
                "--coordinator-address",
                address,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                *extra,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _finish(process: subprocess.Popen, deadline: float) -> tuple[int, str]:
    try:
        out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"timed out (deadlock?): {process.args}\n{err[-3000:]}")
    return process.returncode, out + err


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """The smoke run on one device (here), two devices and two processes (subprocesses)."""
    root = tmp_path_factory.mktemp("parallel")
    dirs = {name: root / name for name in ("one_device", "two_devices", "two_processes")}
    deadline = time.monotonic() + TIMEOUT_S
    children = {
        "two_devices": [
            subprocess.Popen(
                _train_command(dirs["two_devices"]),
                env=_two_devices_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        ],
        "two_processes": _start_two_processes(dirs["two_processes"]),
    }
    run.train(dirs["one_device"], config_lib.preset("smoke"), preset="smoke", progress=False)
    for name, processes in children.items():
        for process in processes:
            code, output = _finish(process, deadline)
            assert code == 0, f"{name} failed:\n{output[-3000:]}"
    return dirs


def _learner(run_dir: pathlib.Path, step: int) -> checkpoint.LearnerState:
    config = run.read_config(run_dir)
    mngr = checkpoint.manager(run_dir / run.CHECKPOINT_DIR)
    try:
        return jax.device_get(checkpoint.restore(mngr, config.train, run.make_env(config), step))
    finally:
        mngr.close()


def _assert_close(actual, reference, what: str) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(reference)
    for (path, ref), act in zip(leaves, jax.tree_util.tree_leaves(actual), strict=True):
        np.testing.assert_allclose(
            np.asarray(act),
            np.asarray(ref),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{what}{jax.tree_util.keystr(path)}",
        )


@pytest.mark.parametrize("split", ["two_devices", "two_processes"])
def test_split_runs_agree_with_one_device(three_runs, split):
    reference = _learner(three_runs["one_device"], UPDATES)
    learner = _learner(three_runs[split], UPDATES)
    assert int(learner.update) == UPDATES
    _assert_close(learner.params, reference.params, f"{split} params")
    _assert_close(learner.opt_state, reference.opt_state, f"{split} Adam state")
    _assert_close(learner.normalizers, reference.normalizers, f"{split} normalizers")
    np.testing.assert_array_equal(learner.key_data, reference.key_data)

    # Training moved the parameters far more than the tolerance.
    earlier = _learner(three_runs[split], UPDATES // 2)
    moves = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), learner.params, earlier.params)
    assert max(jax.tree.leaves(moves)) > MIN_MOVE

    rows = [json.loads(line) for line in (three_runs[split] / "metrics.jsonl").open()]
    ref_rows = [json.loads(line) for line in (three_runs["one_device"] / "metrics.jsonl").open()]
    # One row per update: process 1 wrote nothing.
    assert [r["update"] for r in rows] == list(range(1, UPDATES + 1))
    for row, ref in zip(rows, ref_rows, strict=True):
        for name in ("loss/policy", "loss/value", "loss/entropy", "train/reward_per_step"):
            np.testing.assert_allclose(row[name], ref[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("killed", [1, 0])
def test_killing_one_process_fails_the_other(three_runs, tmp_path, killed):
    """SIGKILL one process of a running two-process run: the other ends with the
    distributed runtime's error within the heartbeat timeout, instead of waiting forever
    in a collective."""
    run_dir = tmp_path / "killed"
    heartbeat_s = 5
    processes = _start_two_processes(
        run_dir,
        "--set",
        "total_env_steps=1000000",  # far beyond the test: only the kill ends it
        "--heartbeat-timeout",
        str(heartbeat_s),
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert all(p.poll() is None for p in processes), "a process ended early"
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(1.0)
        processes[killed].send_signal(signal.SIGKILL)
        survivor = processes[1 - killed]
        start = time.monotonic()
        code, output = _finish(survivor, start + 12 * heartbeat_s + 60)
        assert code != 0
        assert "another task died" in output or "heartbeat" in output.lower(), output[-3000:]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.communicate()


# ---- without subprocesses ----------------------------------------------------------------


def test_env_sharding_splits_the_given_axis():
    mesh = parallel.env_mesh()
    assert parallel.env_sharding(mesh, 3, 0).spec == jax.sharding.PartitionSpec("env")
    assert parallel.env_sharding(mesh, 3, 2).spec == jax.sharding.PartitionSpec(None, None, "env")
    with pytest.raises(ValueError, match="axis 3"):
        parallel.env_sharding(mesh, 3, 3)


def test_batch_sizes_must_divide_over_devices():
    mesh = parallel.env_mesh()
    parallel.check_divisible(8, 2, mesh)
    fake = type("FakeMesh", (), {"size": 4})()
    parallel.check_divisible(16, 4, fake)
    with pytest.raises(ValueError, match="multiples of the number of devices"):
        parallel.check_divisible(6, 1, fake)  # 6 environments on 4 devices
    with pytest.raises(ValueError, match="multiples of the number of devices"):
        parallel.check_divisible(16, 8, fake)  # minibatches of 2 environments on 4 devices


def test_placed_values_are_unchanged():
    mesh = parallel.env_mesh()
    keys = jax.random.split(jax.random.key(3), 4)
    tree = {"x": np.arange(12.0).reshape(4, 3), "keys": keys, "empty": np.zeros((4, 0))}
    placed = parallel.place_env(tree, mesh)
    np.testing.assert_array_equal(np.asarray(placed["x"]), tree["x"])
    np.testing.assert_array_equal(jax.random.key_data(placed["keys"]), jax.random.key_data(keys))
    assert placed["x"].sharding.spec == jax.sharding.PartitionSpec("env")
    assert placed["empty"].sharding.spec == jax.sharding.PartitionSpec()
    shared = parallel.place_replicated({"w": np.ones((2, 2), np.float32)}, mesh)
    np.testing.assert_array_equal(parallel.host_copy(shared)["w"], np.ones((2, 2)))


def test_coordinator_flags_go_together(capsys):
    assert cli.main(["train", "--preset", "smoke", "--num-processes", "2"]) == 2
    assert "go together" in capsys.readouterr().err


def test_initialize_after_jax_started_is_refused():
    jax.devices()
    with pytest.raises(RuntimeError, match="before JAX is first used"):
        parallel.initialize(parallel.DistributedConfig("localhost:1", 2, 0))
