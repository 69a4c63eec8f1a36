"""The paper's tables as commands (dexjax.experiments): configs of the rows, the table
writer against hand-worked numbers, and the command's errors. Nothing here trains."""

import dataclasses
import json
import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pytest

from dexjax import config as config_lib
from dexjax import experiments, randomization, run

SCALE = experiments.SCALES["cpu-small"]


def _summary(successes: list[int], drops: int, timeouts: int) -> dict:
    """A summary as `EvalResult.summary()` writes it, for the keys the table reads."""
    return {
        "trials": len(successes),
        "mean": float(np.mean(successes)),
        "std": float(np.std(successes)),
        "median": float(np.median(successes)),
        "sorted": sorted(successes),
        "drops": drops,
        "timeouts": timeouts,
    }


ERRORS = {
    "images": 500,
    "position_mm_mean": 18.5,
    "position_mm_median": 16.0,
    "rotation_deg_mean": 97.0,
    "rotation_deg_median": 90.5,
}


def _rows():
    table = experiments.TABLES["table3"]
    block, octagon, vision, random = table.rows
    pose = experiments.PoseRecord("runs/pose", 500, ERRORS, data_s=120, train_s=600)
    return table, [
        experiments.Row(block, _summary([5, 0, 2], drops=2, timeouts=1), "runs/b", 1000, 60, 6),
        experiments.Row(octagon, _summary([1, 1, 1, 1], drops=0, timeouts=4), "runs/o", 1000),
        experiments.Row(
            vision, _summary([1, 0], drops=1, timeouts=1), "runs/b", 1000, 60, 30, pose=pose
        ),
        experiments.Row(random, _summary([0, 0], drops=2, timeouts=0)),
    ]


def test_table_in_the_papers_format():
    table, rows = _rows()
    text = experiments.format_table(table, rows, SCALE)
    lines = text.splitlines()
    assert lines[0] == "## Table 3: consecutive successes by task (simulation), scale `cpu-small`"
    # [5, 0, 2]: mean 7/3 = 2.33, population std sqrt(38/9) = 2.05, median 2; paper 43.4.
    assert "| block, state | 2.3 ± 2.1 | 2 | 3 | 2 | 1 | 43.4 ± 13.8 | 50 |" in lines
    assert "| octagonal prism, state | 1.0 ± 0.0 | 1 | 4 | 0 | 4 | 29.0 ± 19.7 | 30 |" in lines
    # [1, 0]: mean 0.5, population std 0.5, median 0.5.
    assert "| block, vision | 0.5 ± 0.5 | 0.5 | 2 | 1 | 1 | 30.0 ± 10.3 | 33 |" in lines
    assert "| block, random actions (reference) | 0.0 ± 0.0 | 0 | 2 | 2 | 0 | - | - |" in lines
    assert "- block, state: [0, 2, 5]" in lines
    assert "- octagonal prism, state: [1, 1, 1, 1]" in lines
    assert "- block, vision: [0, 1]" in lines
    # The pose estimator's held-out errors beside the paper's; 18.5 / 3.71 = 5.0 and
    # 97.0 / 3.23 = 30.0: the smaller ratio is the one quoted.
    (pose_note,) = [line for line in lines if line.startswith("- block, vision: the object")]
    assert "500 minibatches of 64 on 2,000 states rendered (cpu resolution preset)" in pose_note
    assert "500 states of other rollouts: 18.5 mm and 97.0° (mean; median 16.0 mm, 90.5°)" in (
        pose_note
    )
    assert "the paper's 3.71 mm and 3.23°" in pose_note
    assert "far from the paper's: its errors are 5x the paper's or more" in pose_note
    # Every table row has as many cells as the header.
    table_lines = [line for line in lines if line.startswith("|")]
    assert len({line.count("|") for line in table_lines}) == 1
    assert "differences between rows to mean anything" in text
    gpu_text = experiments.format_table(table, rows, experiments.SCALES["gpu"])
    assert "differences between rows to mean anything" not in gpu_text


def test_paper_cells():
    paper = experiments.PaperFigure
    assert experiments._paper_cells(paper(43.4, 13.8, 50)) == ("43.4 ± 13.8", "50")
    assert experiments._paper_cells(paper(mean=18.8)) == ("18.8", "-")
    assert experiments._paper_cells(paper(median=3.5)) == ("-", "3.5")
    assert experiments._paper_cells(None) == ("-", "-")


def test_write_results(tmp_path):
    table, rows = _rows()
    paths = experiments.write_results(table, rows, SCALE, tmp_path, ["timing note"])
    assert {p.name for p in paths.values()} == {
        "table3_cpu-small.md",
        "table3_cpu-small.png",
        "table3_cpu-small.json",
    }
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "- timing note" in paths["md"].read_text()
    record = json.loads(paths["json"].read_text())
    assert [r["label"] for r in record["rows"]] == [r.spec.label for r in rows]
    assert record["rows"][0]["summary"]["sorted"] == [0, 2, 5]
    assert record["rows"][0]["pose"] is None
    assert record["rows"][2]["vision"] is True
    assert record["rows"][2]["pose"]["errors"] == ERRORS
    assert record["rows"][2]["pose"]["checkpoint"] == 500
    assert record["scale"]["trials"] == SCALE.trials
    assert record["scale"]["vision"]["dataset_states"] == 2000


def test_run_configs_of_the_rows():
    base = config_lib.override(config_lib.preset("cpu"), list(SCALE.overrides))
    for table in experiments.TABLES.values():
        for row in table.rows:
            if row.policy is None:
                assert row.pending
                continue
            config = experiments.run_config(SCALE, row.policy)
            assert config.total_env_steps == 32_000
            assert config.updates == 100
            assert config.env.scene.object == row.policy.object
            assert config.env.randomization == randomization.preset(row.policy.randomization)
            network = config.train.network
            assert (network.policy_lstm > 0) == row.policy.policy_memory
            assert (network.value_lstm > 0) == row.policy.value_memory
            assert config.env.goal_distribution == base.env.goal_distribution
            assert config.train.num_envs == base.train.num_envs
    table4 = experiments.TABLES["table4"]
    names = [r.policy.randomization for r in table4.rows]
    assert names == ["all", "none", "no_observation_noise", "no_physics", "no_unmodeled"]
    # The policy three tables share is one run.
    shared = {t.rows[0].policy for t in experiments.TABLES.values()}
    assert shared == {experiments.BLOCK}


def test_given_runs_must_fit_their_row():
    ff = experiments.PolicySpec("block-all-ff", policy_memory=False, value_memory=False)
    ff_policy = experiments.PolicySpec("block-all-ffpi", policy_memory=False)
    lstm_config = experiments.run_config(SCALE, experiments.BLOCK)
    experiments.check_compatible(experiments.BLOCK, lstm_config, "x")
    with pytest.raises(ValueError, match="feed-forward policy; the row needs a feed-forward v"):
        experiments.check_compatible(ff, lstm_config, "x")
    with pytest.raises(ValueError, match="needs a feed-forward policy$"):
        experiments.check_compatible(ff_policy, lstm_config, "x")
    ff_policy_config = experiments.run_config(SCALE, ff_policy)
    experiments.check_compatible(ff_policy, ff_policy_config, "x")
    with pytest.raises(ValueError, match="needs a feed-forward value network$"):
        experiments.check_compatible(ff, ff_policy_config, "x")
    with pytest.raises(ValueError, match="needs an LSTM value network$"):
        experiments.check_compatible(ff_policy, experiments.run_config(SCALE, ff), "x")
    with pytest.raises(ValueError, match="not supported"):
        experiments.PolicySpec("x", value_memory=False)
    octagon = experiments.PolicySpec("octagon-all-lstm", object="octagon")
    with pytest.raises(ValueError, match="object 'block'"):
        experiments.check_compatible(octagon, lstm_config, "x")
    none = experiments.PolicySpec("block-none-lstm", randomization="none")
    with pytest.raises(ValueError, match="randomizations differ"):
        experiments.check_compatible(none, lstm_config, "x")


def test_existing_runs_are_refused_or_must_match(tmp_path):
    config = experiments.run_config(SCALE, experiments.BLOCK)
    run_dir = tmp_path / "block"
    run_dir.mkdir()
    run.write_config(run_dir, config, "cpu")
    with pytest.raises(ValueError, match="--reuse"):
        experiments.train_or_reuse(run_dir, config, "cpu", reuse=False, progress=False)
    with pytest.raises(ValueError, match="before its first checkpoint"):
        experiments.train_or_reuse(run_dir, config, "cpu", reuse=True, progress=False)
    other = config_lib.override(config, ["total_env_steps=5"])
    with pytest.raises(ValueError, match="another config"):
        experiments.train_or_reuse(run_dir, other, "cpu", reuse=True, progress=False)


def test_command_errors(capsys):
    table = experiments.TABLES["table5"]
    with pytest.raises(SystemExit) as exit_info:
        experiments.main(["--scale", "laptop"], table)
    assert exit_info.value.code == 2
    assert "invalid choice: 'laptop'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        experiments.main([], table)  # --scale is required
    assert experiments.main(["--scale", "cpu-small", "--run", "block-all-lstm"], table) == 2
    assert "POLICY=RUN_DIR" in capsys.readouterr().err
    assert experiments.main(["--scale", "cpu-small", "--run", "octagon-all-lstm=x"], table) == 2
    assert "no policy 'octagon-all-lstm' in table5" in capsys.readouterr().err


SCRIPTS = {"table3_tasks": "table3", "table4_randomization": "table4", "table5_memory": "table5"}
ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_are_their_tables(script, monkeypatch, capsys):
    """Each script runs the command of its own table (in this process: no new interpreter)."""
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "experiments" / f"{script}.py"), run_name="__main__")
    assert exit_info.value.code == 0
    title = experiments.TABLES[SCRIPTS[script]].title
    assert title.split(":")[0] in capsys.readouterr().out


def test_a_script_rejects_a_bad_scale():
    done = subprocess.run(
        [sys.executable, "experiments/table4_randomization.py", "--scale", "huge"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2
    assert "invalid choice: 'huge'" in done.stderr


def test_evaluations_are_saved_and_reused_only_for_the_same_protocol(tmp_path, monkeypatch):
    from dexjax import evaluate

    calls = []

    class FakeResult:
        def summary(self):
            return {"mean": float(len(calls))}

    def fake_evaluate(config, learner, eval_config, progress, vision=None):
        assert vision is None
        calls.append((int(learner.update), eval_config.trials, eval_config.timeout_s))
        return FakeResult()

    update = {"value": 7}
    monkeypatch.setattr(run, "make_env", lambda config: None)
    monkeypatch.setattr(
        evaluate, "load_learner", lambda *a: type("L", (), {"update": update["value"]})
    )
    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    config = experiments.run_config(SCALE, experiments.BLOCK)

    def measure(reuse, scale=SCALE):
        return experiments.evaluate_run(tmp_path, config, scale, False, False, reuse)

    assert measure(reuse=True) == ({"mean": 1.0}, False)  # nothing saved yet
    assert (tmp_path / "eval-cpu-small.json").exists()
    assert measure(reuse=True) == ({"mean": 1.0}, True)
    assert measure(reuse=False) == ({"mean": 2.0}, False)  # without --reuse: measured again
    update["value"] = 8  # a newer checkpoint: measured again
    assert measure(reuse=True) == ({"mean": 3.0}, False)
    longer = dataclasses.replace(SCALE, timeout_s=80.0)  # another protocol: measured again
    assert measure(reuse=True, scale=longer) == ({"mean": 4.0}, False)
    assert calls == [(7, 20, 16.0), (7, 20, 16.0), (8, 20, 16.0), (8, 20, 80.0)]


# ---- the vision row of Table 3 -------------------------------------------------------------


def _save_pose_checkpoint(pose_run: pathlib.Path, step: int) -> None:
    """A real (tiny) orbax checkpoint at `step`, as a pose run's manager would find it."""
    import orbax.checkpoint as ocp

    from dexjax.vision import train_pose

    mngr = train_pose.checkpoint_manager(pose_run)
    mngr.save(step, args=ocp.args.StandardSave({"w": np.zeros(2, np.float32)}))
    mngr.wait_until_finished()
    mngr.close()


class FakeVisionPieces:
    """Stand-ins for rendering a dataset, training the pose network and measuring its
    errors, which record how the row calls them and write what the real ones would leave
    on disk (manifest, pose run config, data record, checkpoint, metrics)."""

    def __init__(self, monkeypatch):
        from dexjax.vision import dataset, evaluate_pose, train_pose

        self.datasets, self.trainings, self.evaluations = [], [], []
        monkeypatch.setattr(dataset, "build_dataset", self.build_dataset)
        monkeypatch.setattr(train_pose, "train", self.train)
        monkeypatch.setattr(evaluate_pose, "evaluate_run", self.evaluate_run)

    def build_dataset(self, directory, config, run_dir=None, progress=True):
        directory = pathlib.Path(directory)
        self.datasets.append((directory.name, config, str(run_dir)))
        directory.mkdir(parents=True)
        manifest = {
            "count": config.num_images,
            "vision_config": dataclasses.asdict(config.vision),
            "seconds": 12.5,
            "source": {"policy": "trained", "run_dir": str(run_dir), "checkpoint_update": 100},
            "seed": config.seed,
            "num_envs": config.num_envs,
            "steps_between": config.steps_between,
        }
        (directory / "manifest.json").write_text(json.dumps(manifest))
        return manifest

    def train(self, data_dir, run_dir, config, test_dir=None, progress=True):
        from dexjax.vision import train_pose

        run_dir = pathlib.Path(run_dir)
        self.trainings.append((pathlib.Path(data_dir).name, config, pathlib.Path(test_dir).name))
        run_dir.mkdir(parents=True)
        # As train() does: the position statistics of the training set are filled in.
        net = dataclasses.replace(config.net, pos_mean=(1.0, 0.9, 0.2), pos_std=(0.02,) * 3)
        saved = dataclasses.replace(config, net=net)
        (run_dir / train_pose.CONFIG_FILE).write_text(train_pose.config_to_json(saved))
        record = {"train": str(pathlib.Path(data_dir).absolute()), "image_shape": [3, 64, 64, 3]}
        (run_dir / "data.json").write_text(json.dumps(record))
        (run_dir / "metrics.jsonl").write_text(
            json.dumps({"update": config.steps, "time/elapsed_s": 600.0}) + "\n"
        )
        _save_pose_checkpoint(run_dir, config.steps)
        return train_pose.TrainResult(run_dir, config.steps, 610.0, None)

    def evaluate_run(self, run_dir, data_dir, step=None):
        self.evaluations.append((str(run_dir), str(data_dir)))
        return {"run_dir": str(run_dir), "data": str(data_dir), "checkpoint": 500, **ERRORS}


def test_vision_row_renders_trains_and_reuses_at_the_scales_sizes(tmp_path, monkeypatch):
    fake = FakeVisionPieces(monkeypatch)
    monkeypatch.setattr(experiments, "_finished_update", lambda run_dir: 100)
    policy_run = tmp_path / "cpu-small" / "block-all-lstm"

    def prepare(reuse, scale=SCALE, given=None):
        return experiments.prepare_pose(
            experiments.BLOCK, policy_run, scale, tmp_path, reuse, given or {}, progress=False
        )

    pose = prepare(reuse=False)
    vision_dir = tmp_path / "cpu-small" / "block-all-lstm-vision"
    # The held-out set and the training set, both from the policy's rollouts, at the
    # scale's sizes and 64x64, on different seeds.
    assert [(name, c.num_images, c.seed, run) for name, c, run in fake.datasets] == [
        ("held-out", 500, 1, str(policy_run)),
        ("data", 2000, 0, str(policy_run)),
    ]
    assert {(c.vision.width, c.vision.height, c.num_envs) for _, c, _ in fake.datasets} == {
        (64, 64, 64)
    }
    ((data_name, config, test_name),) = fake.trainings
    assert (data_name, test_name) == ("data", "held-out")
    assert (config.steps, config.halve_every, config.preset) == (500, 250, "cpu")
    assert config.net.stages == ((1, 16), (1, 32))  # the `cpu` network
    assert fake.evaluations == [(str(vision_dir / "pose"), str(vision_dir / "held-out"))]
    assert (pose.run_dir, pose.checkpoint, pose.given) == (str(vision_dir / "pose"), 500, False)
    assert pose.train_s == 610.0 and pose.data_s > 0  # measured around the two renders
    assert {k: pose.errors[k] for k in ERRORS} == ERRORS
    assert pose.errors["data"] == str(vision_dir / "held-out")

    # Without --reuse the existing data are refused; with it nothing is made again, the
    # times are the saved ones (12.5 s per set, 600 s of training) and so are the errors.
    with pytest.raises(ValueError, match="--reuse"):
        prepare(reuse=False)
    again = prepare(reuse=True)
    assert (len(fake.datasets), len(fake.trainings), len(fake.evaluations)) == (2, 1, 1)
    assert (again.data_s, again.train_s, again.errors) == (25.0, 600.0, pose.errors)

    # Data or a pose run of another scale are not taken.
    fewer = dataclasses.replace(SCALE.vision, dataset_states=1000)
    with pytest.raises(ValueError, match="differs in count"):
        prepare(reuse=True, scale=dataclasses.replace(SCALE, vision=fewer))
    longer = dataclasses.replace(SCALE.vision, pose_steps=600)
    with pytest.raises(ValueError, match="another config"):
        prepare(reuse=True, scale=dataclasses.replace(SCALE, vision=longer))

    # A given pose run is evaluated on the held-out set, nothing is trained.
    given_run = tmp_path / "pose-elsewhere"
    fake.train(vision_dir / "data", given_run, config, vision_dir / "held-out")
    given = prepare(reuse=True, given={"block-all-lstm-pose": str(given_run)})
    assert (given.run_dir, given.given, given.train_s) == (str(given_run), True, 600.0)
    assert fake.evaluations[-1] == (str(given_run), str(vision_dir / "held-out"))


def test_an_unfinished_pose_run_is_refused(tmp_path, monkeypatch):
    fake = FakeVisionPieces(monkeypatch)
    config = experiments.pose_train_config(SCALE.vision)
    data = tmp_path / "data"
    fake.train(data, tmp_path / "pose", config, tmp_path / "held-out")
    experiments.pose_or_reuse(tmp_path / "pose", data, tmp_path / "held-out", config, True, False)
    _save_pose_checkpoint(tmp_path / "short", 250)
    (tmp_path / "short" / "config.json").write_text((tmp_path / "pose" / "config.json").read_text())
    (tmp_path / "short" / "data.json").write_text((tmp_path / "pose" / "data.json").read_text())
    with pytest.raises(ValueError, match="stopped at minibatch 250 of 500"):
        experiments.pose_or_reuse(tmp_path / "short", data, tmp_path / "x", config, True, False)
    with pytest.raises(ValueError, match="trained on"):
        experiments.pose_or_reuse(tmp_path / "pose", tmp_path / "other", data, config, True, False)


def test_vision_evaluation_uses_the_pose_run_and_is_saved_in_it(tmp_path, monkeypatch):
    from dexjax import evaluate
    from dexjax.vision import evaluate_pose, train_pose

    calls = []

    class FakeResult:
        def summary(self):
            return {"mean": float(len(calls))}

    def fake_evaluate(config, learner, eval_config, progress, vision=None):
        calls.append((vision, eval_config.trials))
        return FakeResult()

    env = type("Env", (), {"mj_model": "model"})
    monkeypatch.setattr(run, "make_env", lambda config: env)
    monkeypatch.setattr(evaluate, "load_learner", lambda *a: type("L", (), {"update": 7}))
    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    loaded = []

    def fake_load(pose_run, mj_model, batch):
        loaded.append((str(pose_run), mj_model, batch))
        return "vision pose", "renderer"

    monkeypatch.setattr(evaluate_pose, "load_vision_pose", fake_load)
    config = experiments.run_config(SCALE, experiments.BLOCK)
    policy_run, pose_run = tmp_path / "policy", tmp_path / "pose"
    policy_run.mkdir()
    pose_run.mkdir()
    _save_pose_checkpoint(pose_run, 500)
    pose_config = experiments.pose_train_config(SCALE.vision)
    (pose_run / train_pose.CONFIG_FILE).write_text(train_pose.config_to_json(pose_config))

    def measure(reuse):
        return experiments.evaluate_run(policy_run, config, SCALE, False, False, reuse, pose_run)

    assert measure(reuse=True) == ({"mean": 1.0}, False)
    assert calls == [("vision pose", 20)] and loaded == [(str(pose_run), "model", 20)]
    saved = json.loads((pose_run / "eval-cpu-small.json").read_text())
    assert saved["protocol"]["pose_checkpoint"] == 500
    assert saved["protocol"]["policy_run"] == str(policy_run)
    assert not (policy_run / "eval-cpu-small.json").exists()  # the state row's stays its own
    assert measure(reuse=True) == ({"mean": 1.0}, True)
    _save_pose_checkpoint(pose_run, 600)  # a newer pose checkpoint: measured again
    assert measure(reuse=True) == ({"mean": 2.0}, False)


def test_a_pose_run_is_given_by_name():
    table3, table4 = experiments.TABLES["table3"], experiments.TABLES["table4"]
    given = experiments.parse_given(["block-all-lstm-pose=runs/pose-1"], table3)
    assert given == {"block-all-lstm-pose": "runs/pose-1"}
    with pytest.raises(ValueError, match="no policy 'block-all-lstm-pose' in table4"):
        experiments.parse_given(["block-all-lstm-pose=runs/pose-1"], table4)


def test_rows_not_reached_are_marked():
    table = experiments.TABLES["table4"]
    rows = [experiments._not_yet(spec) for spec in table.rows]
    text = experiments.format_table(table, rows, SCALE)
    assert text.count("(not measured: the command stopped before this row)") == 5


def test_the_uniform_goal_curriculum_changes_only_the_goals_of_the_cpu_preset():
    """Each stage starts from the networks of an earlier one (--init-from), so every stage
    must keep the cpu preset's networks, observations and actions; the last stages have the
    paper's goals, and both later uniform stages continue the first, one of them with a
    small entropy bonus."""
    script = runpy.run_path(str(ROOT / "experiments" / "cpu_uniform.py"))
    cpu = config_lib.preset("cpu")
    stages = script["STAGES"]
    for stage in stages:
        config = script["stage_config"](stage)
        ppo = dataclasses.replace(config.train.ppo, entropy_coef=cpu.train.ppo.entropy_coef)
        assert dataclasses.replace(config.train, ppo=ppo) == cpu.train
        goals = dict(goal_distribution="yaw_turn", goal_turn=cpu.env.goal_turn)
        assert dataclasses.replace(config.env, **goals) == cpu.env
        assert config.total_env_steps == stage.env_steps
    configs = [script["stage_config"](s).env for s in stages]
    assert [(c.goal_distribution, c.goal_turn) for c in configs[:2]] == [
        ("turn", (0.6, 0.8)),
        ("turn", (0.6, 1.6)),
    ]
    assert {c.goal_distribution for c in configs[2:]} == {"uniform"}
    entropy = [script["stage_config"](s).train.ppo.entropy_coef for s in stages]
    assert entropy == [0.0, 0.0, 0.0, 0.003, 0.0]
    parents = [s.after for s in stages]
    assert parents == [None, "1-turn", "2-wider", "3-uniform-a", "3-uniform-a"]
    assert sum(s.env_steps for s in stages) / script["HOUR"] <= 9  # with the preset's hour: 10
    assert run.read_config(script["SHIPPED"]) == config_lib.override(
        cpu, ["total_env_steps=40000000", "checkpoints_to_keep=1000"]
    )


def test_the_shipped_first_stage_is_the_scripts_and_loads():
    from dexjax import evaluate

    script = runpy.run_path(str(ROOT / "experiments" / "cpu_uniform.py"))
    shipped = ROOT / "experiments" / "results" / "cpu_uniform" / "1-turn"
    config = script["stage_config"](script["STAGES"][0])
    assert run.read_config(shipped) == config
    learner = evaluate.load_learner(shipped, config, run.make_env(config))
    assert int(learner.update) == config.updates
    evaluation = json.loads((shipped / "trained-turn-80s.json").read_text())
    assert evaluation["checkpoint_update"] == config.updates
    assert evaluation["trials"] == 100 and evaluation["timeout_s"] == 80.0
