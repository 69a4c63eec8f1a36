"""Camera images with visual randomization, and the rendered dataset's shards and reader.

One renderer (32x32, batch 2, randomization on) is compiled and shared by every test.
"""

import colorsys
import json

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from dexjax import constants as c
from dexjax import scene
from dexjax.vision import dataset
from dexjax.vision import render as vr

BATCH = 2
SIZE = 32


@pytest.fixture(scope="module")
def mj_model():
    return scene.build_model()


@pytest.fixture(scope="module")
def renderer(mj_model):
    return vr.VisionRenderer(mj_model, vr.VisionConfig(width=SIZE, height=SIZE), BATCH)


@pytest.fixture(scope="module")
def visuals(renderer):
    """The randomized looks of 256 images (sampled once, by one compiled function)."""
    sample = jax.jit(jax.vmap(vr.sample_visuals, in_axes=(0, None, None)), static_argnums=2)
    keys = jax.random.split(jax.random.key(7), 256)
    return jax.device_get(sample(keys, renderer.scene, renderer.config))


def _qpos(mj_model, count):
    return np.tile(mj_model.qpos0, (count, 1)).astype(np.float32)


def _turn_object_about_z(mj_model, qpos, angle):
    """The object turned by `angle` about the world z axis (its centre stays put)."""
    adr = dataset.object_qpos_address(mj_model)
    turn = np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
    out = qpos.copy()
    quat = np.zeros(4)
    mujoco.mju_mulQuat(quat, turn, qpos[adr + 3 : adr + 7].astype(np.float64))
    out[adr + 3 : adr + 7] = quat
    return out


def test_images_have_the_right_shape_and_are_not_blank(mj_model, renderer):
    images = np.asarray(renderer.render(jax.random.key(0), _qpos(mj_model, BATCH)))
    assert images.shape == (BATCH, len(c.CAMERAS), SIZE, SIZE, 3)
    assert images.dtype == np.uint8
    for image in images.reshape(-1, SIZE, SIZE, 3):
        assert image.std() > 10.0  # not a flat colour
        assert (image > 0).mean() > 0.5  # mostly not the black background


def test_object_is_visible_and_the_same_key_gives_the_same_images(mj_model, renderer):
    qpos = _qpos(mj_model, BATCH)
    moved = qpos.copy()
    moved[0] = _turn_object_about_z(mj_model, qpos[0], np.pi / 2)  # other faces to the side
    key = jax.random.key(3)
    before = np.asarray(renderer.render(key, qpos))
    after = np.asarray(renderer.render(key, moved))
    np.testing.assert_array_equal(before[1], after[1])  # same key, same state: identical
    for cam in range(len(c.CAMERAS)):
        changed = np.any(before[0, cam] != after[0, cam], axis=-1).mean()
        # Only the block's pixels change: some, but a small part of the image.
        assert 0.002 < changed < 0.3, (c.CAMERAS[cam], changed)


def test_randomization_changes_the_images(mj_model, renderer):
    qpos = _qpos(mj_model, BATCH)
    first = np.asarray(renderer.render(jax.random.key(1), qpos)).astype(int)
    second = np.asarray(renderer.render(jax.random.key(2), qpos)).astype(int)
    # Same states: everything that differs is the randomized look (colours, lights, noise).
    for b in range(BATCH):
        assert np.abs(first[b] - second[b]).mean() > 5.0
    assert np.abs(first[0] - first[1]).mean() > 5.0  # the worlds of one call differ too


def _angle_of_rotation(mat):
    return np.arccos(np.clip((np.trace(mat) - 1.0) / 2.0, -1.0, 1.0))


def test_sampled_visuals_stay_in_the_paper_ranges(renderer, visuals):
    cfg, scene_ = renderer.config, renderer.scene
    nominal = jax.device_get(scene_.nominal)
    shift = visuals.cam_xpos - nominal.cam_xpos
    assert np.abs(shift).max() <= cfg.camera_position + 1e-7
    assert np.abs(shift).max() > 0.5 * cfg.camera_position
    fovy = visuals.cam_fovy - nominal.cam_fovy
    assert np.abs(fovy).max() <= cfg.camera_fovy_deg + 1e-5
    # Rotation jitter: R_jitter = xmat @ xmat0^T, its angle within [0, 3] degrees.
    angles = [
        np.rad2deg(_angle_of_rotation(visuals.cam_xmat[i, j] @ nominal.cam_xmat[j].T))
        for i in range(len(visuals.cam_xmat))
        for j in range(len(c.CAMERAS))
    ]
    assert max(angles) <= cfg.camera_rotation_deg + 1e-3
    assert max(angles) > 0.5 * cfg.camera_rotation_deg
    lights_on = visuals.light_active.sum(axis=1)
    assert set(lights_on.tolist()) == {4, 5, 6}
    np.testing.assert_allclose(np.linalg.norm(visuals.light_xdir, axis=-1), 1.0, atol=1e-5)
    assert (visuals.contrast >= 0.5).all() and (visuals.contrast <= 1.5).all()


def test_block_faces_keep_distinct_colours(renderer, visuals):
    """Faces are told apart by hue (60 degrees apart); the jitter moves a hue by 1% only."""
    cfg, scene_ = renderer.config, renderer.scene
    rgb = np.asarray(visuals.geom_rgba[:, np.asarray(scene_.face_geoms), :3])
    assert rgb.shape == (256, 6, 3)
    hues = np.array([[colorsys.rgb_to_hsv(*face)[0] for face in faces] for faces in rgb])
    offset = (hues - np.array(vr.FACE_HUES) + 0.5) % 1.0 - 0.5
    assert np.abs(offset).max() <= cfg.object_hue + 1e-4
    assert np.abs(offset).max() > 0.5 * cfg.object_hue


def test_hsv_to_rgb_matches_colorsys():
    rng = np.random.default_rng(0)
    hsv = rng.uniform(0.0, 1.0, (50, 3))
    expected = np.array([colorsys.hsv_to_rgb(*x) for x in hsv])
    np.testing.assert_allclose(np.asarray(vr.hsv_to_rgb(jnp.asarray(hsv))), expected, atol=1e-6)


def test_bad_input_is_refused(mj_model, renderer):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="qpos"):
        renderer.render(key, np.zeros((BATCH, mj_model.nq + 1), np.float32))
    with pytest.raises(ValueError, match="batch"):
        renderer.render(key, _qpos(mj_model, BATCH + 1))
    with pytest.raises(ValueError, match="mocap_quat"):
        renderer.render(key, _qpos(mj_model, BATCH), np.zeros((BATCH, 2, 4), np.float32))
    three = _qpos(mj_model, BATCH + 1)
    mocap = np.zeros((BATCH + 1, mj_model.nmocap, 4), np.float32)
    with pytest.raises(ValueError, match="exactly 2 worlds"):  # the pure function checks too
        vr.render_images(renderer.scene, renderer.context, renderer.config, key, three, mocap)
    with pytest.raises(ValueError, match="lights"):
        vr.VisionConfig(lights=(4, 7))
    spec = mujoco.MjSpec()
    spec.worldbody.add_geom(size=(0.1, 0, 0))
    with pytest.raises(ValueError, match="dexjax"):
        vr.VisionRenderer(spec.compile(), vr.VisionConfig(), 1)


# ---- the dataset -------------------------------------------------------------------------


def _random_states(mj_model, count, seed):
    """Batches of states with the object at random poses above the palm."""
    rng = np.random.default_rng(seed)
    adr = dataset.object_qpos_address(mj_model)
    batches = []
    for _ in range(count):
        qpos = _qpos(mj_model, BATCH)
        qpos[:, adr : adr + 3] += rng.uniform(-0.01, 0.01, (BATCH, 3))
        quat = rng.normal(size=(BATCH, 4))
        qpos[:, adr + 3 : adr + 7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
        mocap = np.tile([1.0, 0.0, 0.0, 0.0], (BATCH, mj_model.nmocap, 1)).astype(np.float32)
        batches.append((qpos, mocap))
    return batches


def _reference_pose(mj_model, qpos):
    """World pose of the object body by MuJoCo's own kinematics, quaternion with w >= 0."""
    data = mujoco.MjData(mj_model)
    body = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, c.OBJECT_BODY)
    pos, quat = [], []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_kinematics(mj_model, data)
        pos.append(data.xpos[body].copy())
        quat.append(data.xquat[body] * np.sign(data.xquat[body][0]))
    return np.array(pos), np.array(quat)


@pytest.fixture(scope="module")
def written(mj_model, renderer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("vision") / "set"
    states = _random_states(mj_model, 3, seed=0)
    key = jax.random.key(11)
    manifest = dataset.write_dataset(
        directory, renderer, iter(states), 5, key, shard_size=2, metadata={"seed": 11},
        progress=False,
    )  # fmt: skip
    return directory, states, key, manifest


def test_dataset_labels_match_the_rendered_states(mj_model, renderer, written):
    directory, states, key, manifest = written
    assert manifest["count"] == 5
    assert [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    assert json.loads((directory / "manifest.json").read_text())["seed"] == 11
    everything = dataset.load_split(directory)
    qpos = np.concatenate([q for q, _ in states])[:5]
    pos, quat = _reference_pose(mj_model, qpos)
    np.testing.assert_allclose(everything.pos, pos, atol=1e-6)
    np.testing.assert_allclose(everything.quat, quat, atol=1e-6)
    # The images are the renders of those very states, with the batch's key.
    first = np.asarray(renderer.render(jax.random.fold_in(key, 0), *states[0]))
    np.testing.assert_array_equal(everything.images[:2], first)
    part = dataset.load_split(directory, start=1, count=3)
    np.testing.assert_array_equal(part.images, everything.images[1:4])


def test_reader_streams_what_was_written(written):
    directory, _, _, _ = written
    everything = dataset.load_split(directory)
    key = jax.random.key(5)
    batches = list(dataset.iterate_batches(directory, 2, key, epochs=2, shards_in_memory=1))
    # Each epoch: shards of 2, 2, 1 states in a random order; the odd state waits for the
    # next shard, and what is left at the end of the epoch is dropped.
    assert len(batches) == 4
    per_epoch = [
        np.concatenate([b.pos for b in batches[:2]]),
        np.concatenate([b.pos for b in batches[2:]]),
    ]
    for positions in per_epoch:
        rows = [np.flatnonzero((everything.pos == p).all(axis=1)) for p in positions]
        assert all(len(r) == 1 for r in rows)  # every batch row is a written state
        assert len({int(r[0]) for r in rows}) == 4  # no state twice within an epoch
    for b in batches:
        row = np.flatnonzero((everything.pos == b.pos[0]).all(axis=1))[0]
        np.testing.assert_array_equal(b.images[0], everything.images[row])
        np.testing.assert_array_equal(b.quat[0], everything.quat[row])
    again = list(dataset.iterate_batches(directory, 2, key, epochs=2, shards_in_memory=1))
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a.pos, b.pos)


def test_in_order_reader_gives_the_manifests_states_in_order(written):
    directory, _, _, manifest = written
    data = dataset.open_dataset(directory)
    assert data.count == 5 and data.image_shape == (len(c.CAMERAS), SIZE, SIZE, 3)
    everything = dataset.load_split(directory)
    # Batches of 3 over shards of 2, 2, 1: batches straddle shards; the last is short.
    for batch_size, limit, sizes in ((3, None, [3, 2]), (1, None, [1] * 5), (2, 3, [2, 1])):
        batches = list(dataset.in_order(data, batch_size, limit))
        assert [len(b.pos) for b in batches] == sizes
        n = sum(sizes)
        for field in ("images", "pos", "quat"):
            got = np.concatenate([getattr(b, field) for b in batches])
            np.testing.assert_array_equal(got, getattr(everything, field)[:n])
    # The same states, shard by shard as the manifest lists them.
    pos = np.concatenate([np.load(directory / e["file"])["pos"] for e in manifest["shards"]])
    np.testing.assert_array_equal(everything.pos, pos)
    mean, std = dataset.position_stats(directory)
    np.testing.assert_allclose(mean, pos.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pos.astype(np.float64).std(0), rtol=1e-5)


def test_dataset_errors_are_clear(mj_model, renderer, written, tmp_path):
    directory, states, key, _ = written
    with pytest.raises(dataset.DatasetError, match="no manifest"):
        dataset.load_split(tmp_path)
    with pytest.raises(dataset.DatasetError, match="no manifest"):
        next(dataset.iterate_batches(tmp_path, 2, key))
    with pytest.raises(dataset.DatasetError, match="no manifest"):
        next(dataset.in_order(tmp_path, 2))
    with pytest.raises(dataset.DatasetError, match="exceeds the 5 states"):
        next(dataset.iterate_batches(directory, 6, key))
    with pytest.raises(ValueError, match="already holds"):
        dataset.write_dataset(directory, renderer, iter(states), 1, key, progress=False)
    with pytest.raises(ValueError, match="ran out"):
        dataset.write_dataset(tmp_path / "new", renderer, iter(states[:1]), 5, key, progress=False)
    with pytest.raises(ValueError, match="outside"):
        dataset.load_split(directory, start=4, count=2)


def test_grid_picture(written, tmp_path):
    from PIL import Image

    directory, _, _, _ = written
    images = dataset.load_split(directory).images
    path = dataset.write_grid(images, tmp_path / "grid.png", columns=2)
    with Image.open(path) as picture:
        # 3 rows of 2 cells; each cell is the 3 cameras side by side, with 2-pixel gaps.
        assert picture.size == (2 * (3 * SIZE + 2), 3 * (SIZE + 2))
        pixels = np.asarray(picture)
    np.testing.assert_array_equal(pixels[:SIZE, SIZE : 2 * SIZE], images[0, 1])
