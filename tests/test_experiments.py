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


def _rows():
    table = experiments.TABLES["table3"]
    block, octagon, vision, random = table.rows
    return table, [
        experiments.Row(block, _summary([5, 0, 2], drops=2, timeouts=1), "runs/b", 1000, 60, 6),
        experiments.Row(octagon, _summary([1, 1, 1, 1], drops=0, timeouts=4), "runs/o", 1000),
        experiments.Row(vision, None),
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
    assert (
        "| block, vision | (waits for the vision branch (dexjax/vision/*)) |  |  |  |  "
        "| 30.0 ± 10.3 | 33 |"
    ) in lines
    assert "| block, random actions (reference) | 0.0 ± 0.0 | 0 | 2 | 2 | 0 | - | - |" in lines
    assert "- block, state: [0, 2, 5]" in lines
    assert "- octagonal prism, state: [1, 1, 1, 1]" in lines
    assert not any(line.startswith("- block, vision:") for line in lines)
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
    assert record["rows"][2]["summary"] is None
    assert record["scale"]["trials"] == SCALE.trials


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
            assert (config.train.network.lstm == 0) == (not row.policy.memory)
            assert config.env.goal_distribution == base.env.goal_distribution
            assert config.train.num_envs == base.train.num_envs
    table4 = experiments.TABLES["table4"]
    names = [r.policy.randomization for r in table4.rows]
    assert names == ["all", "none", "no_observation_noise", "no_physics", "no_unmodeled"]
    # The policy three tables share is one run.
    shared = {t.rows[0].policy for t in experiments.TABLES.values()}
    assert shared == {experiments.BLOCK}


def test_given_runs_must_fit_their_row():
    ff = experiments.PolicySpec("block-all-ff", memory=False)
    lstm_config = experiments.run_config(SCALE, experiments.BLOCK)
    experiments.check_compatible(experiments.BLOCK, lstm_config, "x")
    with pytest.raises(ValueError, match="feed-forward"):
        experiments.check_compatible(ff, lstm_config, "x")
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

    def fake_evaluate(config, learner, eval_config, progress):
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


def test_rows_not_reached_are_marked():
    table = experiments.TABLES["table4"]
    rows = [experiments._not_yet(spec) for spec in table.rows]
    text = experiments.format_table(table, rows, SCALE)
    assert text.count("(not measured: the command stopped before this row)") == 5
