"""Data parallelism over the environment axis, on two devices and on two processes.

The same training (tests/parallel_worker.py: dexjax's LSTM PPO, `train.distribute` +
`train.train_chunk` over a mesh of every device, 8 environments x 4 steps per update,
2 minibatches, 2 epochs, 6 updates, seed 0) runs three ways, each in a subprocess: on one
device, on two forced CPU devices, and as two processes on localhost joined by
jax.distributed (gloo CPU collectives); the two processes then save the run's checkpoint
together and each restores it and checks it against what it saved. Each split puts 4 of
the 8 environments on each device; the minibatch shuffle is the single-device one (a
global permutation), so the three runs compute the same thing and may differ only in
floating-point rounding (sums split across devices). The environment is the Memory probe
(exact dynamics): on the hand, rounding differences of that size grow through contacts
and action bins within a few steps (the two-device smoke run's goal distance differed by
2e-4 after the first rollout), so agreement there would not test the parallelism.

"Agree" means: every parameter, Adam moment and normalizer statistic after the 6 updates,
and every logged policy and value loss of the last chunk, is within ATOL + RTOL * |value|
of the one-device run; and training moved some parameter by more than 100 x ATOL (the
tolerance is far below what training changes).

Every subprocess runs under a timeout: a deadlock fails the test instead of stalling it.
"""

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

from dexjax import cli, parallel

WORKER = pathlib.Path(__file__).parent / "parallel_worker.py"
TIMEOUT_S = 600
ATOL, RTOL = 1e-5, 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out: pathlib.Path, *extra: str, devices: int = 1) -> subprocess.Popen:
    """The worker, its output (stdout and stderr) in `out` + ".log". A file, not a pipe:
    an undrained pipe would block a process mid-run and stall the other one."""
    env = dict(os.environ)
    if devices > 1:
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    log = _log_path(out, extra)
    with open(log, "w") as f:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(out), *extra],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    process.log = log
    return process


def _log_path(out: pathlib.Path, extra: tuple) -> pathlib.Path:
    rank = extra[extra.index("--process-id") + 1] if "--process-id" in extra else "0"
    return out.with_name(f"{out.stem}.{rank}.log")


def _start_two_processes(out: pathlib.Path, *extra: str) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    return [_start(out, "--coordinator", address, "--process-id", str(i), *extra) for i in range(2)]


def _finish(process: subprocess.Popen, deadline: float) -> tuple[int, str]:
    try:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()  # SIGKILL: jax.distributed catches SIGTERM
        process.wait()
        pytest.fail(f"timed out (deadlock?): {process.args}\n{process.log.read_text()[-3000:]}")
    return process.returncode, process.log.read_text()


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("parallel")
    outs = {name: root / f"{name}.npz" for name in ("one", "two_devices", "two_processes")}
    deadline = time.monotonic() + TIMEOUT_S
    children = {
        "one": [_start(outs["one"])],
        "two_devices": [_start(outs["two_devices"], devices=2)],
        "two_processes": _start_two_processes(
            outs["two_processes"], "--checkpoint", str(root / "checkpoints")
        ),
    }
    for name, processes in children.items():
        for process in processes:
            code, output = _finish(process, deadline)
            assert code == 0, f"{name} failed:\n{output[-3000:]}"
            assert "chunk 2 on" in output
            if name == "two_processes":  # each saved the run's checkpoint and restored it
                assert "checkpoint 6 restored in process" in output, output[-3000:]
        assert f"on {1 if name == 'one' else 2} devices" in output
    return {name: dict(np.load(path)) for name, path in outs.items()}


@pytest.mark.parametrize("split", ["two_devices", "two_processes"])
def test_split_runs_agree_with_one_device(three_runs, split):
    reference, result = three_runs["one"], three_runs[split]
    assert sorted(result) == sorted(reference)
    for name, ref in reference.items():
        np.testing.assert_allclose(result[name], ref, rtol=RTOL, atol=ATOL, err_msg=name)


def test_training_moved_the_parameters_far_beyond_the_tolerance(three_runs):
    """The fresh parameters of the same seed, against the trained ones of the one-device run."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import parallel_worker
    finally:
        sys.path.pop(0)
    from dexjax import probes, train

    cfg = parallel_worker.config()
    runner = train.init(cfg, probes.Memory(), jax.random.key(cfg.seed))
    trained = three_runs["one"]
    moves = [
        np.max(np.abs(trained[jax.tree_util.keystr(path)] - np.asarray(x)))
        for path, x in jax.tree_util.tree_leaves_with_path({"params": runner.params})
    ]
    assert max(moves) > 100 * ATOL


def _fail_early_exit(log: str) -> None:
    """A process ended before the kill. Gloo's fixed 30 s deadline for setting up the first
    collective used to end busy runs here; `parallel.compile_together` (both processes
    compile, then meet, then start) removed that, so any early exit is a failure."""
    pytest.fail(f"a process ended early:\n{log[-3000:]}")


@pytest.mark.parametrize("killed", [1, 0])
def test_killing_one_process_fails_the_other(tmp_path, killed):
    """SIGKILL one process of a two-process run that is training: the other ends with the
    distributed runtime's error within seconds of the heartbeat timeout (15 s), instead of
    waiting forever in a collective."""
    processes = _start_two_processes(tmp_path / "never.npz", "--forever")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        # Both have trained a chunk (so both are inside the training loop).
        while not all("chunk 1 on" in p.log.read_text() for p in processes):
            for p in processes:
                if p.poll() is not None:
                    _fail_early_exit(p.log.read_text())
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(1.0)
        processes[killed].send_signal(signal.SIGKILL)
        start = time.monotonic()
        code, output = _finish(processes[1 - killed], start + 120)
        assert code != 0
        assert "another task died" in output or "heartbeat" in output.lower(), output[-3000:]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()


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
