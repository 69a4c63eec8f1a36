"""ONNX export of a trained pose estimator: parity with JAX on rendered images, the spec,
and clear errors.

The images are the conftest's settled start states rendered through `VisionRenderer`
(randomized, 32x32); a pose run trains two steps on them (what is exported needs a
checkpoint, not a good network: parity is about the translation).
"""

import hashlib
import json

import jax
import numpy as np
import onnxruntime
import pytest

from dexjax import checkpoint, cli, constants, onnx_runner
from dexjax.vision import dataset, export_pose, pose_net, render, train_pose

RES = 32


@pytest.fixture(scope="module")
def rendered(env, reset_state):
    """uint8 images [4, 3, RES, RES, 3] of the settled start states, and their qpos."""
    qpos = reset_state.data.qpos
    renderer = render.VisionRenderer(
        env.mj_model, render.VisionConfig(width=RES, height=RES), batch=qpos.shape[0]
    )
    images = renderer.render(jax.random.key(7), qpos, reset_state.data.mocap_quat)
    return np.asarray(images), np.asarray(qpos)


@pytest.fixture(scope="module")
def pose_run(env, rendered, tmp_path_factory):
    images, qpos = rendered
    data = tmp_path_factory.mktemp("pose_data")
    pos, quat = dataset.object_pose(env.mj_model, qpos)
    dataset.write_arrays(data, dataset.Batch(images=images, pos=pos, quat=quat))
    run_dir = tmp_path_factory.mktemp("pose") / "run"
    config = train_pose.PoseTrainConfig(
        steps=2, batch_size=2, log_every=1, checkpoint_every=1, eval_every=1
    )
    train_pose.train(data, run_dir, config, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def exported(pose_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pose_export")
    result = export_pose.export_pose_estimator(pose_run, out)
    return result


def test_onnx_estimates_match_jax_on_rendered_images(exported, pose_run, rendered):
    images, _ = rendered
    config, params, _ = train_pose.load_params(pose_run)
    want = pose_net.predict(config.net, params, images)
    session = onnxruntime.InferenceSession(
        str(exported.model_path), providers=["CPUExecutionProvider"]
    )
    for batch in (images[:1], images):  # any batch size
        pos, quat = session.run(["pos", "quat"], {"images": batch})
        n = len(batch)
        np.testing.assert_allclose(pos, np.asarray(want.pos)[:n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(quat, np.asarray(want.quat)[:n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(quat, axis=-1), 1.0, atol=1e-5)
    assert exported.max_abs_diff <= export_pose.MAX_ABS_DIFF


def test_reference_runner_estimates_like_jax(exported, pose_run, rendered):
    images, _ = rendered
    config, params, _ = train_pose.load_params(pose_run)
    want = pose_net.predict(config.net, params, images)
    runner = onnx_runner.PoseRunner(exported.model_path.parent)
    pos, quat = runner.estimate(images[0])  # one image set, no batch axis
    np.testing.assert_allclose(pos, np.asarray(want.pos)[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(quat, np.asarray(want.quat)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected uint8"):
        runner.estimate(images[0, :2])  # two cameras
    with pytest.raises(ValueError, match="expected uint8"):
        runner.estimate(images.astype(np.float32))


def test_spec_describes_the_graph(exported, pose_run):
    spec = json.loads(exported.spec_path.read_text())
    data = exported.model_path.read_bytes()
    assert spec["model_sha256"] == hashlib.sha256(data).hexdigest()
    assert spec["inputs"]["images"]["shape"] == ["batch", 3, RES, RES, 3]
    assert [c["name"] for c in spec["cameras"]] == list(constants.CAMERAS)
    assert spec["source"]["checkpoint_step"] == exported.checkpoint_step
    assert spec["config"] == json.loads(train_pose.config_to_json(train_pose.read_config(pose_run)))
    for cam in spec["cameras"]:
        assert np.isclose(np.linalg.norm(cam["quat_world_wxyz"]), 1.0)


def test_export_command_writes_the_pose_estimator(pose_run, tmp_path, capsys):
    out = tmp_path / "with_vision"
    assert cli.main(["vision", "export", str(pose_run), "--out", str(out)]) == 0
    assert (out / export_pose.POSE_FILE).exists() and (out / export_pose.POSE_SPEC_FILE).exists()
    assert "pose_estimator.onnx" in capsys.readouterr().out


def test_export_errors(pose_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["export", str(pose_run), "--out", str(tmp_path / "o"), "--vision-run", str(empty)]
    assert cli.main(args) == 2
    assert "not a pose run" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a pose run"):
        export_pose.export_pose_estimator(empty, tmp_path / "out")
    with pytest.raises(ValueError, match="opset"):
        export_pose.export_pose_estimator(pose_run, tmp_path / "out", opset=5)
    with pytest.raises(checkpoint.CheckpointError):
        export_pose.export_pose_estimator(pose_run, tmp_path / "out", step=12345)
