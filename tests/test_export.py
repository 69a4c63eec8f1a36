"""ONNX export of a trained policy: parity with JAX over a real rollout, the reference
runner, the spec, and clear errors on bad input.

One tiny run is trained with the config of tests/test_run.py (the same compiled trainer,
through the persistent compilation cache); one jitted function resets a few environments
and steps them `STEPS` times with the JAX policy, recording what ONNX must reproduce.
"""

import dataclasses
import json
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest

from dexjax import checkpoint, cli, export, networks, onnx_convert, onnx_runner, run, train
from dexjax import config as config_lib

STEPS = 1000
BATCH = 2
CONFIG = config_lib.override(
    config_lib.preset("smoke"),
    [
        "env.adr.enabled=true",
        "env.adr.boundary_prob=1",
        "env.adr.buffer_size=1",
        "env.adr.threshold_low=0",
        "env.adr.threshold_high=0",
        "env.steps_without_success=10",
        "train.rollout_length=8",
        "train.updates_per_chunk=2",
        "checkpoint_every=1",
        "total_env_steps=192",
    ],
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("export") / "run"
    run.train(path, CONFIG, preset="smoke", progress=False)
    return path


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("export") / "policy"
    assert cli.main(["export", str(run_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(run_dir):
    """(config, env, learner) of the run's latest checkpoint, as the export loads them."""
    return export.load_run(run_dir, None)


@pytest.fixture(scope="module")
def rollout(loaded) -> dict[str, np.ndarray]:
    """STEPS steps of BATCH environments driven by the JAX policy (train.policy_step):
    the observations, episode starts, actions and LSTM states after each step, [T, B, ...]."""
    config, env, learner = loaded
    tc = config.train

    @jax.jit
    def roll(key, learner):
        state = jax.vmap(env.reset)(jax.random.split(key, BATCH))
        carry = networks.initial_carry(BATCH, tc.network.policy_lstm)

        def one(c, _):
            state, carry, start = c
            obs = state.obs["state"]
            carry, action = train.policy_step(
                tc, env.action_size, learner.params, learner.normalizers, carry, obs, start
            )
            state = jax.vmap(env.step)(state, action)
            record = {"obs": obs, "start": start, "action": action, "h": carry.h, "c": carry.c}
            return (state, carry, state.done > 0), record

        init = (state, carry, jnp.ones(BATCH, bool))
        return jax.lax.scan(one, init, None, length=STEPS)[1]

    began = time.perf_counter()
    out = jax.device_get(roll(jax.random.key(7), learner))
    print(f"rollout of {STEPS} steps x {BATCH} envs: {time.perf_counter() - began:.1f} s")
    return {k: np.asarray(v) for k, v in out.items()}


def _session(export_dir: pathlib.Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(
        str(export_dir / export.POLICY_FILE), providers=["CPUExecutionProvider"]
    )


def test_onnx_matches_jax_over_a_rollout(export_dir, rollout, loaded):
    config, _, _ = loaded
    bins = config.train.network.action_bins
    session = _session(export_dir)
    lstm = config.train.network.lstm
    h = np.zeros((BATCH, lstm), np.float32)
    c = np.zeros((BATCH, lstm), np.float32)
    worst = 0.0
    for t in range(STEPS):
        start = rollout["start"][t]
        h, c = np.where(start[:, None], 0.0, h), np.where(start[:, None], 0.0, c)
        action, h, c, index, delta = session.run(
            list(export.OUTPUT_NAMES),
            {"obs": rollout["obs"][t], "h": h.astype(np.float32), "c": c.astype(np.float32)},
        )
        want_bins = np.asarray(networks.action_to_bins(rollout["action"][t], bins))
        np.testing.assert_array_equal(index, want_bins, err_msg=f"bins differ at step {t}")
        np.testing.assert_array_equal(action, rollout["action"][t], err_msg=f"step {t}")
        diff = max(np.abs(h - rollout["h"][t]).max(), np.abs(c - rollout["c"][t]).max())
        assert diff <= 1e-5, f"LSTM state differs by {diff:g} at step {t}"
        worst = max(worst, float(diff))
    # Episodes restarted along the way, so zeroing the state at starts was exercised.
    assert rollout["start"][1:].sum() >= BATCH
    print(f"max LSTM state difference over {STEPS} steps: {worst:.2e}")


def test_reference_runner_reproduces_the_jax_actions(export_dir, rollout):
    runner = onnx_runner.PolicyRunner(export_dir)
    for t in range(STEPS):
        if rollout["start"][t, 0]:
            runner.reset()
        action = runner.step(rollout["obs"][t, 0])
        np.testing.assert_array_equal(action, rollout["action"][t, 0], err_msg=f"step {t}")


def test_runner_joint_targets_follow_the_env_rule(export_dir, rollout, loaded):
    _, env, _ = loaded
    assert env.config.relative_to == "target"
    runner = onnx_runner.PolicyRunner(export_dir)
    active = env.idx.active_actuators
    ctrl = jnp.asarray(0.5 * (env.idx.ctrl_low + env.idx.ctrl_high), jnp.float32)
    smoothed = jnp.zeros(env.action_size)
    qpos = jnp.zeros(env.mj_model.nq)  # unused by the "target" rule
    for t in range(5):
        action = runner.step(rollout["obs"][t, 0])
        targets = runner.joint_targets(np.asarray(ctrl)[active])
        smoothed = env.config.action_ema * action + (1 - env.config.action_ema) * smoothed
        ctrl = env.joint_targets(qpos, smoothed, ctrl)
        np.testing.assert_allclose(targets, np.asarray(ctrl)[active], atol=1e-6)


def test_spec_matches_the_environment(export_dir, loaded, run_dir):
    config, env, learner = loaded
    spec = json.loads((export_dir / export.SPEC_FILE).read_text())
    layout = spec["observation"]["layout"]
    assert sum(part["size"] for part in layout) == env.observation_size["state"][0]
    assert layout[-1]["slice"][1] == spec["observation"]["size"] == 22
    assert [p["name"] for p in layout] == ["fingertip_pos", "object_pos", "relative_goal_quat"]
    assert spec["action"]["size"] == env.action_size == len(spec["action"]["actuators"]) == 18
    names = [env.mj_model.actuator(int(i)).name for i in env.idx.active_actuators]
    assert [a["actuator"] for a in spec["action"]["actuators"]] == names
    assert len(spec["action"]["held_actuators"]) == 2  # the locked wrist
    assert spec["control_period_s"] == pytest.approx(0.08)
    assert spec["decoding"]["ema"] == config.env.action_ema
    assert spec["decoding"]["bins"] == 11
    assert spec["initial_state"]["size"] == config.train.network.lstm
    assert config_lib.from_dict(spec["config"]) == config
    assert spec["source"]["checkpoint_update"] == int(learner.update)
    assert spec["versions"]["onnxruntime"] == onnxruntime.__version__


def test_graph_has_a_dynamic_batch_and_every_supported_opset_runs(loaded):
    config, env, learner = loaded
    lstm = config.train.network.lstm
    policy = export.policy_function(config, env, learner)
    closed, batch = export.trace_policy(policy, env.observation_size["state"][0], lstm)
    inputs = export.check_inputs(env, learner, lstm)  # batch 3
    for opset in export.SUPPORTED_OPSETS:
        model = onnx_convert.jaxpr_to_onnx(
            closed, export.INPUT_NAMES, export.OUTPUT_NAMES, opset, batch
        )
        assert export.verify(model, policy, inputs) <= 1e-5


def test_runner_needs_no_jax(export_dir):
    # dexjax/__init__.py imports the environment (JAX), so load the file on its own, as
    # someone who copied it next to a robot's code would.
    code = f"""
import importlib.util, sys
import numpy as np
sys.modules["jax"] = None
spec = importlib.util.spec_from_file_location("onnx_runner", {onnx_runner.__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
runner = module.PolicyRunner({str(export_dir)!r})
action = runner.step(np.zeros(runner.obs_size, np.float32))
assert action.shape == (runner.action_size,) and np.all(np.abs(action) <= 1)
assert "jax" not in {{k for k, v in sys.modules.items() if v is not None}}
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_runner_rejects_observations_of_the_wrong_size(export_dir):
    runner = onnx_runner.PolicyRunner(export_dir)
    with pytest.raises(ValueError, match=r"expected \(22,\) or \(batch, 22\)"):
        runner.step(np.zeros(21, np.float32))
    with pytest.raises(ValueError, match="expected"):
        runner.step(np.zeros((2, 23), np.float32))
    runner.step(np.zeros((2, 22), np.float32))
    with pytest.raises(ValueError, match="call reset"):
        runner.step(np.zeros((3, 22), np.float32))
    with pytest.raises(ValueError, match="no exported policy"):
        onnx_runner.PolicyRunner(export_dir.parent)


def test_export_errors(run_dir, tmp_path, capsys):
    # A run with its config but no checkpoint.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / run.CONFIG_FILE).write_text((run_dir / run.CONFIG_FILE).read_text())
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        export.export_policy(empty, tmp_path / "out")
    assert cli.main(["export", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no dexjax run"):
        export.export_policy(tmp_path, tmp_path / "out")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint of update 999"):
        export.export_policy(run_dir, tmp_path / "out", step=999)
    # Unsupported opsets, before anything is loaded.
    for opset in (12, 27):
        with pytest.raises(ValueError, match="supported: 13 to 26"):
            export.export_policy(run_dir, tmp_path / "out", opset=opset)
    assert cli.main(["export", str(run_dir), "--out", str(tmp_path / "o"), "--opset", "9"]) == 2
    assert "unsupported ONNX opset 9" in capsys.readouterr().err
    # A feed-forward policy (its value network may have an LSTM): the runtime's interface
    # is the LSTM policy's.
    ff = tmp_path / "ff"
    ff.mkdir()
    config = run.read_config(run_dir)
    network = dataclasses.replace(config.train.network, policy_memory=False)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, network=network))
    run.write_config(ff, config, "smoke")
    with pytest.raises(ValueError, match="only LSTM policies"):
        export.export_policy(ff, tmp_path / "out")
    assert not (tmp_path / "out").exists()
