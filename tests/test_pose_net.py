"""The pose estimator: shapes, the spatial softmax, error metrics, learning, and bad input.

Images are tiny (32x32, three cameras) and the network is the `cpu` preset, so the few
compilations here take seconds.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexjax import quaternion as quat
from dexjax.vision import dataset, evaluate_pose, train_pose
from dexjax.vision import pose_net as pn

RES = 32
SHAPE = (3, RES, RES, 3)


def write_dataset(directory, count=16, shard_size=10, res=RES, seed=0):
    """A dataset of random images with random poses (shards of `shard_size`, then the rest)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(count, 4))
    batch = dataset.Batch(
        images=rng.integers(0, 256, (count, 3, res, res, 3), dtype=np.uint8),
        pos=(rng.normal(size=(count, 3)) * 0.01 + [1.0, 0.9, 0.2]).astype(np.float32),
        quat=(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
    )
    dataset.write_arrays(directory, batch, shard_size=shard_size)
    return directory


@pytest.fixture(scope="module")
def net_config():
    return pn.preset("cpu")


def test_output_shapes_and_unit_quaternion(net_config):
    params = pn.init_params(net_config, jax.random.key(0), SHAPE)
    images = jax.random.randint(jax.random.key(1), (5, *SHAPE), 0, 256).astype(jnp.uint8)
    raw = pn.PoseNet(net_config).apply({"params": params}, images)
    assert raw.shape == (5, 7)
    pose = pn.predict(net_config, params, images)
    assert pose.pos.shape == (5, 3) and pose.quat.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(pose.quat, axis=-1), 1.0, atol=1e-6)
    # The towers share weights: one tower's parameters, whatever the number of cameras.
    assert sorted(params) == ["Dense_0", "Dense_1", "Tower_0"]
    with pytest.raises(ValueError, match="cameras, H, W, 3"):
        pn.PoseNet(net_config).apply({"params": params}, images[:, 0])


def test_paper_preset_builds_the_papers_stages():
    cfg = pn.preset("paper")
    params = pn.init_params(cfg, jax.random.key(0), (3, 48, 48, 3))
    tower = params["Tower_0"]
    blocks = sorted(k for k in tower if k.startswith("ResBlock"))
    assert len(blocks) == 1 + 2 + 2 + 2
    filters = [tower[f"ResBlock_{i}"]["Conv_0"]["kernel"].shape[-1] for i in range(7)]
    assert filters == [16, 32, 32, 64, 64, 64, 64]
    assert tower["Conv_0"]["kernel"].shape == (5, 5, 3, 32)
    assert tower["Conv_1"]["kernel"].shape == (3, 3, 32, 32)
    assert params["Dense_0"]["kernel"].shape == (3 * 2 * 64, 128)
    with pytest.raises(ValueError, match="unknown pose network preset"):
        pn.preset("huge")


def test_spatial_softmax_matches_a_plain_reference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # [B, H, W, C]
    temperature = 0.7
    expected = np.zeros((2, 10))
    for b in range(2):
        for c in range(5):
            weights = np.exp(features[b, :, :, c] / temperature)
            weights /= weights.sum()
            x = sum(weights[i, j] * (-1 + 2 * j / 3) for i in range(3) for j in range(4))
            y = sum(weights[i, j] * (-1 + 2 * i / 2) for i in range(3) for j in range(4))
            expected[b, 2 * c], expected[b, 2 * c + 1] = x, y
    got = pn.spatial_softmax(jnp.asarray(features), jnp.asarray(temperature))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # A single sharp peak at row 2, column 0 sits at x = -1 (left), y = +1 (bottom).
    peak = np.zeros((1, 3, 4, 1), np.float32)
    peak[0, 2, 0, 0] = 100.0
    np.testing.assert_allclose(pn.spatial_softmax(jnp.asarray(peak), 1.0), [[-1.0, 1.0]], atol=1e-6)


def test_error_metrics_against_hand_worked_numbers():
    q = quat.normalize(jnp.array([0.3, -0.5, 0.2, 0.7]))
    turn = quat.from_axis_angle(jnp.array([1.0, 2.0, -1.0]), jnp.radians(10.0))
    turned = quat.multiply(turn, q)
    np.testing.assert_allclose(pn.rotation_error_deg(turned, q), 10.0, atol=1e-4)
    np.testing.assert_allclose(pn.rotation_error_deg(-turned, q), 10.0, atol=1e-4)  # q ~ -q
    np.testing.assert_allclose(pn.rotation_error_deg(q, q), 0.0, atol=1e-3)
    np.testing.assert_allclose(
        pn.position_error_mm(jnp.array([1.003, 0.5, 0.2]), jnp.array([1.0, 0.504, 0.2])),
        5.0,
        atol=1e-3,
    )
    # The sign-free loss: 2 - 2 cos(angle / 2), the same for q and -q.
    expected = 2 - 2 * np.cos(np.radians(5.0))
    np.testing.assert_allclose(pn.rotation_loss(turned, q), expected, atol=1e-6)
    np.testing.assert_allclose(pn.rotation_loss(-turned, q), expected, atol=1e-6)
    summary = evaluate_pose.summarize(np.array([1.0, 2.0, 6.0]), np.array([3.0, 1.0, 2.0]))
    assert summary["position_mm_mean"] == 3.0 and summary["position_mm_median"] == 2.0
    assert summary["rotation_deg_mean"] == 2.0 and summary["rotation_deg_median"] == 2.0


def test_a_few_hundred_steps_overfit_a_tiny_set(net_config, tmp_path):
    data = dataset.open_dataset(write_dataset(tmp_path / "tiny", count=8))
    batch = dataset.load_split(data)
    mean, std = dataset.position_stats(data)
    np.testing.assert_allclose(mean, batch.pos.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, batch.pos.astype(np.float64).std(0), rtol=1e-5)
    net = pn.PoseNetConfig(**{**net_config.__dict__, "pos_mean": mean, "pos_std": std})
    config = train_pose.PoseTrainConfig(net=net, learning_rate=2e-3, weight_decay=0.0)
    learner = train_pose.init_learner(config, jax.random.key(0), data.image_shape)
    step = jax.jit(lambda lr, i, p, r: train_pose.train_step(config, lr, i, p, r))
    losses = []
    for _ in range(300):
        learner, metrics = step(learner, batch.images, batch.pos, batch.quat)
        losses.append(float(metrics["loss/total"]))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first / 10, (first, last)


def test_bad_datasets_are_refused(tmp_path):
    with pytest.raises(dataset.DatasetError, match="does not exist"):
        dataset.open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(dataset.DatasetError, match="no manifest"):
        dataset.open_dataset(tmp_path / "empty")
    # Shards without a manifest: a set still being written is not read.
    partial = write_dataset(tmp_path / "partial", count=2)
    (partial / "manifest.json").unlink()
    with pytest.raises(dataset.DatasetError, match="still being written"):
        train_pose.train(partial, tmp_path / "run0", progress=False)
    small = write_dataset(tmp_path / "small", count=2)
    big = write_dataset(tmp_path / "big", count=2, res=40)
    with pytest.raises(dataset.DatasetError, match="render both at one resolution"):
        train_pose.train(small, tmp_path / "run1", test_dir=big, progress=False)
    with pytest.raises(dataset.DatasetError, match="exceeds the 2 states"):
        train_pose.train(small, tmp_path / "run2", progress=False)
    # A shard that does not hold what the manifest says.
    np.savez(small / "shard_00000.npz", images=np.zeros((2, 3, 32, 32, 3), np.uint8))
    with pytest.raises(dataset.DatasetError, match="lacks"):
        dataset.load_split(small)
    np.savez(
        big / "shard_00000.npz",
        images=np.zeros((2, 3, 32, 32, 3), np.uint8),
        pos=np.zeros((2, 3)),
        quat=np.zeros((2, 4)),
    )
    with pytest.raises(dataset.DatasetError, match="the manifest says uint8"):
        next(dataset.in_order(big, 2))


def test_train_and_eval_commands_write_a_loadable_run(tmp_path, capsys):
    from dexjax import cli

    train_dir = write_dataset(tmp_path / "train")
    test_dir = write_dataset(tmp_path / "test", count=7, seed=1)
    run = tmp_path / "run"
    small = [f"--set={k}" for k in ("steps=6", "batch_size=4", "log_every=3", "eval_every=3")]
    argv = ["vision", "train", "--data", str(train_dir), "--test-data", str(test_dir)]
    assert cli.main([*argv, "--out", str(run), *small, "--no-progress"]) == 0
    for name in ("config.json", "metrics.jsonl", "curves.png", "data.json"):
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in rows] == [12, 24]
    assert rows[-1]["eval/position_mm_mean"] > 0
    # The stored statistics are the training set's.
    saved = train_pose.read_config(run)
    pos = np.concatenate([np.load(p)["pos"] for p in sorted(train_dir.glob("*.npz"))])
    np.testing.assert_allclose(saved.net.pos_mean, pos.mean(0), rtol=1e-5)
    report = tmp_path / "errors.json"
    assert (
        cli.main(["vision", "eval", str(run), "--data", str(test_dir), "--json", str(report)]) == 0
    )
    assert "paper, real images" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["checkpoint"] == 6 and result["images"] == 7
    assert result["position_mm_mean"] == pytest.approx(rows[-1]["eval/position_mm_mean"], rel=1e-4)

    def error(argv) -> str:
        assert cli.main(argv) == 2
        return capsys.readouterr().err

    assert "already holds a pose run" in error([*argv, "--out", str(run)])
    assert "does not exist" in error(["vision", "train", "--data", "nowhere", "--out", "x"])
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    assert "no manifest" in error(["vision", "train", "--data", empty, "--out", "x"])
    bad_key = ["vision", "train", "--data", str(train_dir), "--out", "x", "--set", "stepz=3"]
    assert "unknown config key 'stepz'" in error(bad_key)
    other = str(write_dataset(tmp_path / "big", count=3, res=40))
    assert "was trained on" in error(["vision", "eval", str(run), "--data", other])
    assert "is not a pose run" in error(["vision", "eval", empty, "--data", str(test_dir)])


def test_joint_augmentation_follows_the_papers_mix():
    from dexjax.vision import joint

    config = joint.JointConfig()
    n = 2000
    key_q, key_aug = jax.random.split(jax.random.key(0))
    q = quat.random_uniform(key_q, (n,))
    pos = jnp.tile(jnp.array([1.0, 0.87, 0.2]), (n, 1))
    new_pos, new_q = joint.augment(config, key_aug, pos, q)
    angle = np.degrees(np.asarray(quat.angle_between(q, new_q)))
    moved = np.linalg.norm(np.asarray(new_pos - pos), axis=1)
    unchanged = (angle < 0.05) & (moved == 0)
    rotated = (np.abs(angle - 90.0) < 0.05) & (moved == 0)
    jittered = ~unchanged & ~rotated
    assert abs(unchanged.mean() - 0.2) < 0.03 and abs(rotated.mean() - 0.4) < 0.03
    assert np.all(moved[jittered] > 0) and np.median(angle[jittered]) < 15.0
    # A quarter turn about one of the object's own axes: q^-1 q' is 90 degrees about x, y or z.
    local = np.asarray(quat.multiply(quat.conjugate(q), new_q))[rotated]
    assert np.all(np.sort(np.abs(local), axis=1)[:, -2:] > 0.7071 - 1e-4)
    np.testing.assert_allclose(np.linalg.norm(new_q, axis=1), 1.0, atol=1e-6)


@pytest.mark.slow  # builds a renderer and compiles mjx.render: 1-4 min on the busy CPU
def test_joint_pose_update_renders_states_and_learns_from_them():
    from dexjax import env as env_lib
    from dexjax.vision import joint, render

    env = env_lib.make_env(settle_steps=1)
    vision = render.VisionConfig(width=RES, height=RES)
    config = joint.JointConfig(images_per_update=2, pose_steps=2)
    renderer = render.VisionRenderer(env.mj_model, vision, batch=2)
    pose = joint.init(config, vision, jax.random.key(0))
    before = pose.learner.params
    qpos = jnp.tile(jnp.asarray(env.mj_model.qpos0, jnp.float32), (2, 1))
    mocap = jnp.tile(jnp.asarray([[1.0, 0.0, 0.0, 0.0]]), (2, 1, 1))
    update = jax.jit(
        lambda pose, qpos, mocap: joint.pose_update(
            config, vision, env, pose, renderer.scene, renderer.context, qpos, mocap
        )
    )
    pose, metrics = update(pose, qpos, mocap)
    assert int(pose.images_seen) == 2 and int(pose.learner.step) == 2
    assert np.isfinite(float(metrics["vision_loss/total"]))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, pose.learner.params)
    assert all(jax.tree.leaves(changed))
