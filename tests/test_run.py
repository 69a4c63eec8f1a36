"""Training runs on the hand: run directory, logs, checkpoints, resume after a kill, eval.

One small config (the smoke preset with ADR moving fast) is compiled once and shared: the
uninterrupted run, the killed-and-resumed run (a subprocess, same compiled function via
the persistent cache) and the evaluation all use it.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from dexjax import adr, checkpoint, cli, evaluate, logs, parallel, run, train
from dexjax import config as config_lib

UPDATES_PER_CHUNK = 2
STEPS_PER_UPDATE = 4 * 8  # smoke envs x rollout length below
OVERRIDES = [
    # ADR with zero thresholds and one-episode buffers widens a range whenever a boundary
    # episode ends, so its state visibly changes within a few updates.
    "env.adr.enabled=true",
    "env.adr.boundary_prob=1",
    "env.adr.buffer_size=1",
    "env.adr.threshold_low=0",
    "env.adr.threshold_high=0",
    "env.steps_without_success=10",  # short episodes, so some end within the run
    "train.rollout_length=8",
    f"train.updates_per_chunk={UPDATES_PER_CHUNK}",
    "checkpoint_every=1",
]


def _config(updates: int) -> config_lib.RunConfig:
    return config_lib.override(
        config_lib.preset("smoke"), [*OVERRIDES, f"total_env_steps={updates * STEPS_PER_UPDATE}"]
    )


FULL_UPDATES = 6


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> run.RunResult:
    run_dir = tmp_path_factory.mktemp("runs") / "a"
    return run.train(run_dir, _config(FULL_UPDATES), preset="smoke", progress=False)


def test_adr_moves_ranges_inside_the_compiled_loop():
    config = _config(FULL_UPDATES)
    env = run.make_env(config)
    runner = train.init(config.train, env, jax.random.key(0))
    start = adr.init(config.env.adr, config.env.randomization).ranges
    np.testing.assert_array_equal(runner.adr.ranges.low, start.low)

    # As run.train calls it (a one-device mesh here), so the compiled function is shared.
    mesh = parallel.env_mesh()
    runner = train.distribute(runner, mesh)
    runner, metrics = train.train_chunk(config.train, env, runner, mesh)
    compiled = train.train_chunk._cache_size()
    runner, metrics = train.train_chunk(config.train, env, runner, mesh)
    # The runner train_chunk returns has the types of the one init made: no second compile.
    assert train.train_chunk._cache_size() == compiled
    metrics = jax.device_get(metrics)
    assert int(runner.update) == 2 * UPDATES_PER_CHUNK
    assert all(np.all(np.isfinite(v)) for k, v in metrics.items() if k.startswith("loss/"))
    # Episodes ended, so ADR widened some range, and every environment now samples from
    # ADR's ranges (they live in each environment's state: no recompilation).
    assert metrics["train/episodes"].sum() > 0
    width = np.asarray(runner.adr.ranges.high - runner.adr.ranges.low)
    assert width.max() > 0
    for env_index in range(config.train.num_envs):
        np.testing.assert_array_equal(
            runner.env_state.domain.ranges.high[env_index], runner.adr.ranges.high
        )


def test_run_writes_config_metrics_tensorboard_and_curves(finished_run):
    run_dir = finished_run.run_dir
    assert finished_run.update == FULL_UPDATES
    assert run.read_config(run_dir) == _config(FULL_UPDATES)
    record = json.loads((run_dir / run.CONFIG_FILE).read_text())
    assert record["preset"] == "smoke" and record["versions"]["jax"] == jax.__version__

    rows = logs.read_metrics(run_dir)
    assert [r["update"] for r in rows] == list(range(1, FULL_UPDATES + 1))
    assert [r["env_steps"] for r in rows] == [u * STEPS_PER_UPDATE for u in range(1, 7)]
    for name in (
        "loss/policy",
        "loss/value",
        "loss/entropy",
        "loss/approx_kl",
        "loss/clipfrac",
        "train/explained_variance",
        "train/learning_rate",
        "train/episode_return",
        "train/terminations_per_episode",
        "env/successes_at_end",
        "env/episode_steps_at_end",
        "reward/drop",
        "dr/mass_scale_std",
        "adr/entropy",
        "time/env_steps_per_s",
    ):
        assert name in rows[-1], name
    assert all(r["time/env_steps_per_s"] > 0 for r in rows)
    assert all(np.isfinite(r["loss/entropy"]) for r in rows)

    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    png = (run_dir / logs.CURVES_FILE).read_bytes()
    assert png.startswith(b"\x89PNG")


def _learner(run_dir: pathlib.Path, step: int | None = None) -> checkpoint.LearnerState:
    config = run.read_config(run_dir)
    return evaluate.load_learner(run_dir, config, run.make_env(config), step)


def test_checkpoint_holds_the_learning_state(finished_run):
    learner = _learner(finished_run.run_dir)
    assert int(learner.update) == FULL_UPDATES
    # The normalizers saw every observation of every update once.
    steps = FULL_UPDATES * STEPS_PER_UPDATE
    assert int(learner.normalizers.policy_obs.count.to_numpy()) == steps
    assert int(learner.normalizers.value_obs.count.to_numpy()) == steps
    # ADR's state is in it, and it moved away from its start.
    assert learner.adr is not None
    assert float(np.max(learner.adr.ranges.high - learner.adr.ranges.low)) > 0
    # Only `checkpoints_to_keep` checkpoints stay.
    mngr = checkpoint.manager(finished_run.run_dir / run.CHECKPOINT_DIR)
    assert mngr.all_steps() == [2, 4, 6]
    mngr.close()


def test_a_run_dir_holding_a_run_is_refused(finished_run):
    with pytest.raises(run.RunDirError, match="already holds a run.*--resume"):
        run.train(finished_run.run_dir, _config(FULL_UPDATES), progress=False)


def _finished_steps(run_dir: pathlib.Path) -> list[int]:
    ckpt = run_dir / run.CHECKPOINT_DIR
    if not ckpt.exists():
        return []
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def test_resume_after_kill_reaches_the_end_without_losing_progress(finished_run, tmp_path):
    updates = 20
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "dexjax.cli", "train", "--preset", "smoke"]
    for item in [*OVERRIDES, f"total_env_steps={updates * STEPS_PER_UPDATE}"]:
        command += ["--set", item]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    try:
        while not [s for s in _finished_steps(run_dir) if s >= 2 * UPDATES_PER_CHUNK]:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the training process made no checkpoint"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    killed_at = max(_finished_steps(run_dir))
    assert 2 * UPDATES_PER_CHUNK <= killed_at < updates, "the run was not killed mid-run"

    result = run.train(run_dir, resume=True, progress=False)
    assert result.update == updates
    assert result.env_steps == updates * STEPS_PER_UPDATE
    learner = _learner(run_dir)
    assert int(learner.update) == updates
    # Nothing the checkpoint held was lost and nothing was counted twice: the statistics
    # saw exactly one observation per env step of the whole run.
    assert int(learner.normalizers.policy_obs.count.to_numpy()) == updates * STEPS_PER_UPDATE
    rows = logs.read_metrics(run_dir)
    assert [r["update"] for r in rows] == list(range(1, updates + 1))

    # A finished run resumed again has nothing left to do.
    assert run.train(run_dir, resume=True, progress=False).update == updates


def test_sigterm_checkpoints_the_current_update_and_resume_continues(finished_run, tmp_path):
    """A cluster's SIGTERM (or Ctrl-C's SIGINT) mid-run: the run stops after the chunk in
    flight with a checkpoint of it, and a resumed run loses nothing. In-process (the same
    compiled chunk as `finished_run`): a thread sends the signal once the first rows are
    logged; the run is long enough to be still going then."""
    import threading

    run_dir = tmp_path / "preempted"
    config = dataclasses.replace(_config(400), checkpoint_every=1000)

    def preempt():
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").exists() or not logs.read_metrics(run_dir):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    with pytest.raises(run.Interrupted, match="SIGTERM: stopped at update .* --resume") as stop:
        run.train(run_dir, config, preset="smoke", progress=False)
    stopped = stop.value.update
    assert 0 < stopped < 400 and stopped % UPDATES_PER_CHUNK == 0
    assert _finished_steps(run_dir) == [stopped]  # only the signal's checkpoint
    assert [r["update"] for r in logs.read_metrics(run_dir)] == list(range(1, stopped + 1))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    result = run.train(run_dir, resume=True, progress=False, max_chunks=2)
    assert result.update == stopped + 2 * UPDATES_PER_CHUNK
    learner = _learner(run_dir)
    steps = result.update * STEPS_PER_UPDATE
    assert int(learner.normalizers.policy_obs.count.to_numpy()) == steps
    assert [r["update"] for r in logs.read_metrics(run_dir)] == list(range(1, result.update + 1))


def test_a_run_that_keeps_skipping_updates_stops(tmp_path):
    """An infinite learning rate makes every update's parameters non-finite: each is
    skipped, and the run stops at `max_skipped_updates` with a clear error, before its
    checkpoint (so a run directory keeps only checkpoints of good learner states)."""
    config = _config(FULL_UPDATES)
    lr_inf = dataclasses.replace(config.train.ppo, lr=float("inf"))
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, ppo=lr_inf),
        max_skipped_updates=UPDATES_PER_CHUNK,
    )
    run_dir = tmp_path / "diverged"
    with pytest.raises(run.DivergedError, match="2 consecutive updates were skipped"):
        run.train(run_dir, config, preset="smoke", progress=False)
    assert _finished_steps(run_dir) == []
    rows = logs.read_metrics(run_dir)
    assert [r["train/skipped_update"] for r in rows] == [1.0] * UPDATES_PER_CHUNK


def test_a_second_signal_exits_at_once():
    code = (
        "import os, signal, time\n"
        "from dexjax.run import _StopSignals\n"
        "with _StopSignals() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    print('stop requested', stop.signum == signal.SIGINT, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "    print('not reached', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 128 + signal.SIGINT
    assert out.stdout.strip() == "stop requested True"
    assert "stopping after this chunk" in out.stderr


def test_resume_needs_a_run_and_a_checkpoint(tmp_path):
    with pytest.raises(run.RunDirError, match="holds no dexjax run"):
        run.train(tmp_path / "nothing", resume=True, progress=False)
    run_dir = tmp_path / "no-checkpoint"
    run_dir.mkdir()
    run.write_config(run_dir, _config(FULL_UPDATES), "smoke")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint to resume from"):
        run.train(run_dir, resume=True, progress=False)


def test_a_damaged_checkpoint_is_a_clear_error(finished_run, tmp_path):
    import shutil

    run_dir = tmp_path / "damaged"
    shutil.copytree(finished_run.run_dir, run_dir)
    latest = run_dir / run.CHECKPOINT_DIR / str(FULL_UPDATES)
    for path in latest.rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {FULL_UPDATES} .* cannot"):
        _learner(run_dir)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint of update 5"):
        _learner(run_dir, step=5)


def test_save_policy_ships_what_eval_and_export_load(finished_run, tmp_path, capsys):
    shipped = tmp_path / "shipped"
    assert cli.main(["save-policy", str(finished_run.run_dir), str(shipped)]) == 0
    assert sorted(p.name for p in shipped.iterdir()) == sorted(
        [run.CONFIG_FILE, checkpoint.POLICY_FILE, logs.METRICS_CSV_FILE, logs.CURVES_FILE]
    )
    assert f"update {FULL_UPDATES}" in capsys.readouterr().out
    # The learning curve travels: the curves' columns of every update, to 6 digits.
    rows, shipped_rows = logs.read_metrics(finished_run.run_dir), logs.read_metrics(shipped)
    assert [r["update"] for r in shipped_rows] == list(range(1, FULL_UPDATES + 1))
    for row, shipped_row in zip(rows, shipped_rows, strict=True):
        assert set(shipped_row) == set(logs.CSV_COLUMNS)
        for key in logs.CSV_COLUMNS:
            if row.get(key) is None:
                assert shipped_row[key] is None
            else:
                np.testing.assert_allclose(shipped_row[key], row[key], rtol=1e-5)
    original, loaded = _learner(finished_run.run_dir), _learner(shipped)
    assert int(loaded.update) == FULL_UPDATES
    for name in ("params", "normalizers", "adr"):
        chex.assert_trees_all_equal(getattr(loaded, name), getattr(original, name))
    # No optimizer state travels: it is zeros of the right shapes.
    chex.assert_trees_all_equal_shapes_and_dtypes(loaded.opt_state, original.opt_state)
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(loaded.opt_state))
    with pytest.raises(
        checkpoint.CheckpointError, match=f"only the policy of update {FULL_UPDATES},"
    ):
        _learner(shipped, step=1)
    # The directory is not a checkpoint store: loading it created nothing.
    assert not (shipped / run.CHECKPOINT_DIR).exists()

    # Refused: writing over it, and loading it under a config of other networks.
    assert cli.main(["save-policy", str(finished_run.run_dir), str(shipped)]) == 2
    assert "already holds" in capsys.readouterr().err
    config = json.loads((shipped / run.CONFIG_FILE).read_text())
    config["config"]["train"]["network"]["hidden"] += 1
    (shipped / run.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match="does not hold a policy of this run"):
        _learner(shipped)


def test_the_shipped_cpu_policy_is_the_presets_and_loads():
    shipped = pathlib.Path(__file__).parent.parent / "experiments" / "results" / "cpu_run"
    config = run.read_config(shipped)
    # The preset's run, made longer and stopped by a signal at the preset's length.
    preset = config_lib.preset("cpu")
    assert (
        dataclasses.replace(
            config,
            total_env_steps=preset.total_env_steps,
            checkpoints_to_keep=preset.checkpoints_to_keep,
        )
        == preset
    )
    learner = _learner(shipped)
    assert int(learner.update) == preset.updates
    evaluation = json.loads((shipped / "trained-80s.json").read_text())
    assert evaluation["checkpoint_update"] == preset.updates
    assert evaluation["trials"] == 100 and evaluation["timeout_s"] == 80.0


def test_eval_reports_the_protocols_numbers(finished_run):
    # A short timeout keeps trials short; the protocol's 80 s is the command's default.
    config = run.read_config(finished_run.run_dir)
    learner = _learner(finished_run.run_dir)
    eval_config = evaluate.EvalConfig(trials=4, timeout_s=2.0)
    result = evaluate.evaluate(config, learner, eval_config, progress=False)
    summary = result.summary()
    assert summary["trials"] == 4 and len(summary["sorted"]) == 4
    assert summary["sorted"] == sorted(summary["sorted"])
    assert summary["checkpoint_update"] == FULL_UPDATES
    # Every trial ended, each in exactly one way.
    assert np.all(result.dropped | result.timed_out | (result.successes >= 50))
    assert np.all(result.steps > 0)
    # A trial that timed out lasted at least the timeout.
    assert np.all(result.steps[result.timed_out] >= 25)  # 2 s of 80 ms steps

    text = evaluate.format_summary(summary, "smoke")
    assert "consecutive successes" in text and "sorted trials" in text


def test_eval_command_writes_json(finished_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = cli.main(
        [
            "eval",
            str(finished_run.run_dir),
            "--trials",
            "4",
            "--timeout",
            "2",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["trials"] == 4 and data["policy"] == "trained"
    assert "consecutive successes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "fast"], "unknown preset 'fast'"),
        (["train", "--preset", "smoke", "--set", "train.num_envs=many"], "takes an integer"),
        (["train", "--preset", "smoke", "--set", "train.nope=1"], "unknown config key"),
        (["eval", "/nonexistent/run"], "holds no dexjax run"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_used_run_dir(finished_run, capsys):
    argv = ["train", "--preset", "smoke", "--run-dir", str(finished_run.run_dir)]
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert "already holds a run" in out.err
    # What it would have trained on, said first.
    threads = len(os.sched_getaffinity(0))
    assert f"devices: 1 x cpu (cpu) in 1 process(es); physics: MuJoCo's C engine ({threads} " in (
        out.out
    )


def test_cli_resume_takes_no_new_config():
    with pytest.raises(SystemExit, match="--resume takes the run's own config"):
        cli.main(["train", "--resume", "x", "--preset", "smoke"])
    with pytest.raises(SystemExit, match="drop .*--init-from"):
        cli.main(["train", "--resume", "x", "--init-from", "y"])


def test_a_run_can_start_from_another_runs_networks(finished_run, tmp_path):
    source = _learner(finished_run.run_dir)
    config = _config(UPDATES_PER_CHUNK)  # the same networks and task: train_chunk is shared
    result = run.train(
        tmp_path / "b", config, init_from=finished_run.run_dir, max_chunks=1, progress=False
    )
    assert result.update == UPDATES_PER_CHUNK  # a new run: its own update count
    record = json.loads((result.run_dir / run.CONFIG_FILE).read_text())
    assert record["init_from"] == str(finished_run.run_dir)
    learner = _learner(result.run_dir)
    # The normalizers went on from the source's counts; a fresh run's would hold only its
    # own steps.
    seen = int(source.normalizers.policy_obs.count.to_numpy())
    assert int(learner.normalizers.policy_obs.count.to_numpy()) == seen + UPDATES_PER_CHUNK * (
        STEPS_PER_UPDATE
    )
    # The optimizer started fresh: its step count is this run's gradient steps.
    counts = [
        int(x)
        for path, x in jax.tree_util.tree_leaves_with_path(learner.opt_state)
        if "count" in jax.tree_util.keystr(path)
    ]
    steps = UPDATES_PER_CHUNK * config.train.epochs * config.train.num_minibatches
    assert counts and set(counts) == {steps}


def test_networks_of_another_size_are_a_clear_error_that_leaves_no_run(finished_run, tmp_path):
    config = config_lib.override(_config(FULL_UPDATES), ["train.network.lstm=4"])
    with pytest.raises(checkpoint.CheckpointError, match="do not fit this run's config"):
        run.train(tmp_path / "c", config, init_from=finished_run.run_dir, progress=False)
    assert not run.holds_run(tmp_path / "c")
    with pytest.raises(checkpoint.CheckpointError, match="holds neither"):
        checkpoint.read_networks(tmp_path, config.train, run.make_env(config))


def test_show_config_prints_the_overridden_config(capsys):
    assert cli.main(["train", "--preset", "cpu", "--set", "train.num_envs=8", "--show-config"]) == 0
    shown = config_lib.from_json(capsys.readouterr().out)
    assert shown.train.num_envs == 8
    assert dataclasses.replace(shown, train=config_lib.preset("cpu").train) == config_lib.preset(
        "cpu"
    )


def test_plot_command_draws_curves_with_a_baseline(finished_run, tmp_path):
    summary = {"policy": "random", "trials": 4, "mean": 0.25, "drops": 2, "mean_return": -3.0}
    summary["mean_steps"] = 40.0
    baseline = tmp_path / "random.json"
    baseline.write_text(json.dumps(summary))
    out = tmp_path / "curves.png"
    argv = ["plot", str(finished_run.run_dir), "--baseline", str(baseline), "--out", str(out)]
    assert cli.main(argv) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert logs.baseline_from_eval(summary)["train/terminations_per_episode"] == 0.5


def test_metrics_csv_round_trip_and_the_shipped_curves(tmp_path):
    rows = [
        {"update": 1, "env_steps": 4096, "env/successes_at_end": 0, "loss/entropy": 12.3456789},
        {"update": 2, "env_steps": 8192, "env/successes_at_end": 0.25, "loss/entropy": None},
        {"update": 3, "env_steps": 12288, "env/successes_at_end": 1.5, "loss/approx_kl": 1e-7},
    ]
    logs.write_metrics_csv(rows, tmp_path / logs.METRICS_CSV_FILE)
    back = logs.read_metrics(tmp_path)
    assert [(r["update"], r["env_steps"]) for r in back] == [(1, 4096), (2, 8192), (3, 12288)]
    assert [r["env/successes_at_end"] for r in back] == [0.0, 0.25, 1.5]
    assert [r["loss/entropy"] for r in back] == [12.3457, None, None]  # 6 digits; missing
    assert back[2]["loss/approx_kl"] == 1e-7
    assert [r["update"] for r in logs.read_metrics(tmp_path, max_update=2)] == [1, 2]
    # The shipped cpu policy's curve (written before this writer, with fewer columns): the
    # preset's run, every update.
    shipped = pathlib.Path(__file__).parent.parent / "experiments" / "results" / "cpu_run"
    curve = logs.read_metrics(shipped)
    assert [r["update"] for r in curve] == list(range(1, config_lib.preset("cpu").updates + 1))
    assert np.all(np.diff([r["env_steps"] for r in curve]) > 0)


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory) -> pathlib.Path:
    """A pose run of one minibatch on random 32x32 images (a network, not a good one)."""
    from dexjax.vision import dataset, train_pose

    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 4))
    batch = dataset.Batch(
        images=rng.integers(0, 256, (4, 3, 32, 32, 3), dtype=np.uint8),
        pos=(rng.normal(size=(4, 3)) * 0.01 + [1.0, 0.87, 0.2]).astype(np.float32),
        quat=(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
    )
    data = tmp_path_factory.mktemp("pose_data")
    dataset.write_arrays(data, batch)
    run_dir = tmp_path_factory.mktemp("pose") / "run"
    config = train_pose.PoseTrainConfig(steps=1, batch_size=2, log_every=1)
    train_pose.train(data, run_dir, config, progress=False)
    return run_dir


@pytest.mark.slow  # compiles a trial with rendering in the loop: 2-4 min on the busy CPU
def test_vision_video_shows_what_the_pose_network_saw(finished_run, pose_run, tmp_path, capsys):
    from dexjax.vision import dataset, evaluate_pose

    config = run.read_config(finished_run.run_dir)
    env = run.make_env(config)
    learner = _learner(finished_run.run_dir)
    vision, _renderer = evaluate_pose.load_vision_pose(pose_run, env.mj_model, 1)
    steps = 3
    rec = evaluate.record_trial(config, learner, evaluate.EvalConfig(), steps, vision=vision)
    count = len(rec.qpos)
    # Goals reached: the frames' count, plus the one the trial may have ended on.
    assert rec.reached == rec.successes[-1] or (rec.ended and rec.reached == rec.successes[-1] + 1)
    assert rec.camera_images.shape == (count, 3, 32, 32, 3)
    assert rec.position_error_mm.shape == rec.rotation_error_deg.shape == (count,)
    # Each recorded error is that of the network's estimate from the recorded images against
    # the block's pose in the recorded state (its free joint's qpos).
    acted = min(count, steps)  # frames followed by a step, hence by an estimate
    pose = vision.predict(rec.camera_images[:acted])
    true_pos, true_quat = dataset.object_pose(env.mj_model, rec.qpos[:acted])
    np.testing.assert_allclose(
        rec.position_error_mm[:acted],
        1000 * np.linalg.norm(np.asarray(pose.pos) - true_pos, axis=1),
        rtol=1e-4,
        atol=1e-3,
    )
    # The angle of the rotation between two unit quaternions: 2 acos |<q1, q2>|.
    dots = np.abs(np.sum(np.asarray(pose.quat, np.float64) * true_quat, axis=1))
    angle = np.degrees(2 * np.arccos(np.clip(dots, 0.0, 1.0)))
    np.testing.assert_allclose(rec.rotation_error_deg[:acted], angle, atol=0.05)
    assert np.all(np.isnan(rec.position_error_mm[acted:]))  # a last frame has no estimate
    # The video: the scene above, the network's view below (nearest-pixel 2x at 64 pixels).
    frames, captions = cli.video_frames(rec, env, 64)
    assert frames.shape == (count, 2 * 64, 3 * 64, 3)
    for cam in range(3):
        below = frames[:, 64:, cam * 64 : (cam + 1) * 64]
        np.testing.assert_array_equal(below[:, ::2, ::2], rec.camera_images[:, cam])
    mm = rec.position_error_mm[0]
    assert f"estimate off {mm:.0f} mm" in captions[0]
    if count > acted:  # the last frame of a trial that goes on: no step, no estimate
        assert "estimate" not in captions[-1]
    # The command's own checks (the video compiles the same trial: not run again here).
    argv = ["eval", str(finished_run.run_dir), "--video", "x.gif", "--video-only"]
    assert cli.main([*argv, "--pose-source", "vision"]) == 2
    assert "needs --vision-run" in capsys.readouterr().err
    assert cli.main([*argv, "--pose-source", "vision", "--vision-run", str(tmp_path)]) == 2
    assert "is not a pose run" in capsys.readouterr().err
