"""The offscreen renderer (MJX batch rendering through MuJoCo Warp on the CPU)."""

import numpy as np
import pytest
from PIL import Image

from dexjax import env as env_lib
from dexjax import render


@pytest.fixture(scope="module")
def mj_model():
    return env_lib.make_env(settle_steps=2).mj_model


@pytest.fixture(scope="module")
def renderer(mj_model):
    return render.Renderer(mj_model, width=32, height=24, batch=2)


def _poses(mj_model, count):
    qpos = np.tile(mj_model.qpos0, (count, 1))
    qpos[:, 2] += np.linspace(0.0, 1.0, count)  # bend the first finger joint
    return qpos


def test_frames_shape_and_content(mj_model, renderer):
    qpos = _poses(mj_model, 3)  # not a multiple of the batch: the last call is padded
    images = renderer.render(qpos)
    assert images.shape == (3, 3, 24, 32, 3)
    assert images.dtype == np.uint8
    assert all(images[i, j].var() > 0 for i in range(3) for j in range(3))
    assert np.abs(images[0].astype(int) - images[2].astype(int)).sum() > 0


def test_goal_marker_moves(mj_model, renderer):
    qpos = _poses(mj_model, 2)[:1].repeat(2, 0)
    turned = np.array([np.cos(np.pi / 8), 0.0, 0.0, np.sin(np.pi / 8)])  # 45 degrees about z
    mocap = np.stack([np.tile([1.0, 0.0, 0.0, 0.0], (mj_model.nmocap, 1)), [turned]])
    images = renderer.render(qpos, mocap)
    assert not np.array_equal(images[0], images[1])


def test_bad_shapes_are_refused(mj_model, renderer):
    with pytest.raises(ValueError, match="qpos"):
        renderer.render(np.zeros((2, mj_model.nq + 1)))
    with pytest.raises(ValueError, match="camera"):
        render.Renderer(mj_model, cameras=("no_such_camera",))


def test_write_gif(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 8, 10, 3), dtype=np.uint8)
    frames = render.tile(images)
    assert frames.shape == (4, 8, 30, 3)
    np.testing.assert_array_equal(frames[1, :, 10:20], images[1, 1])
    path = render.write_gif(frames, tmp_path / "sub" / "v.gif", captions=["a"] * 4)
    with Image.open(path) as gif:
        assert gif.size == (30, 8)
        assert gif.n_frames == 4
        assert gif.info["duration"] == 80
