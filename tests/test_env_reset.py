"""reset(): placement, determinism per key, observations, and bad inputs."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from reference import (
    FINGERTIP_SITES,
    angle,
    hand_joint_names,
    object_dof_adr,
    object_pos,
    object_quat,
    rot,
    to_numpy,
    wxyz,
)

from dexjax import scene
from dexjax.env import make_env


def test_reset_places_object_resting_on_palm(env, reset_state):
    m = env.mj_model
    s = to_numpy(reset_state)
    pos = object_pos(s.data.qpos, m)
    start = np.asarray(scene.OBJECT_START_POS)
    # Resting on the palm (about 0.167 m up), within a few cm of the drop point.
    assert np.all((pos[:, 2] > 0.15) & (pos[:, 2] < 0.18)), pos
    assert np.all(np.linalg.norm(pos[:, :2] - start[:2], axis=1) < 0.04), pos
    assert np.all(np.abs(s.data.qvel[:, object_dof_adr(m) : object_dof_adr(m) + 3]) < 0.1)
    # Task bookkeeping of a fresh episode.
    np.testing.assert_array_equal(s.task.successes, 0)
    np.testing.assert_array_equal(s.task.steps_since_success, 0)
    np.testing.assert_array_equal(s.task.episode_steps, 0)
    np.testing.assert_array_equal(s.task.smoothed_action, 0.0)
    np.testing.assert_array_equal(s.done, 0.0)
    np.testing.assert_array_equal(s.info["truncation"], 0.0)
    np.testing.assert_array_equal(s.task.init_qpos, s.data.qpos)
    np.testing.assert_array_equal(s.task.init_ctrl, s.data.ctrl)
    # The goal is a unit quaternion and goal_distance is the angle to it.
    np.testing.assert_allclose(np.linalg.norm(s.task.goal, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        s.task.goal_distance, angle(object_quat(s.data.qpos, m), s.task.goal), atol=1e-4
    )


def test_reset_is_deterministic_per_key(env, reset_fn, reset_keys, reset_state):
    other = jax.random.key(123)
    keys = jnp.stack([reset_keys[2], reset_keys[2], reset_keys[0], other])
    s = to_numpy(reset_fn(keys))
    ref = to_numpy(reset_state)

    def env_i(tree, i):
        return jax.tree.leaves(jax.tree.map(lambda x: x[i], tree))

    # Same key -> identical state, whatever the batch slot and the other keys.
    for a, b in zip(env_i(s, 0), env_i(s, 1), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(env_i(s, 0), env_i(ref, 2), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(env_i(s, 2), env_i(ref, 0), strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_keys_give_different_goals_and_orientations(env, reset_state):
    m = env.mj_model
    s = to_numpy(reset_state)
    q = object_quat(s.data.qpos, m)
    n = q.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            assert angle(s.task.goal[i], s.task.goal[j]) > 1e-2
            assert angle(q[i], q[j]) > 1e-2
    assert len({tuple(k) for k in s.task.key}) == n


def test_observation_shapes(env, reset_state):
    n = reset_state.done.shape[0]
    assert reset_state.obs["state"].shape == (n, 22)
    assert reset_state.obs["privileged_state"].shape == (n, 84)
    assert reset_state.obs["state"].dtype == jnp.float32


@pytest.fixture(scope="module")
def observed_states(step_fn, reset_state):
    """The reset batch, and the batch after one zero-action step."""
    stepped = step_fn(reset_state, jnp.zeros((reset_state.done.shape[0], 20)))
    return [to_numpy(reset_state), to_numpy(stepped)]


def test_policy_observation_content(env, observed_states):
    m = env.mj_model
    start = np.asarray(scene.OBJECT_START_POS)
    site_ids = [m.site(name).id for name in FINGERTIP_SITES]
    for s in observed_states:
        obs = s.obs["state"]
        tips = s.data.site_xpos[:, site_ids] - start
        np.testing.assert_allclose(obs[:, :15], tips.reshape(-1, 15), atol=1e-6)
        np.testing.assert_allclose(obs[:, 15:18], object_pos(s.data.qpos, m) - start, atol=1e-6)
        # Relative target orientation goal * object^-1 (world frame), with w >= 0.
        rel = wxyz(rot(s.task.goal) * rot(object_quat(s.data.qpos, m)).inv())
        rel *= np.where(rel[:, :1] < 0, -1.0, 1.0)
        np.testing.assert_allclose(obs[:, 18:22], rel, atol=2e-5)
        assert np.all(obs[:, 18] >= 0)


def test_fingertip_observation_matches_native_kinematics(env, observed_states):
    # Independent of MJX: MuJoCo's own kinematics of the same joint angles. The MJX
    # site positions are those computed at the start of the last physics substep, so
    # they can lag the joint angles by one 8 ms substep (about 1 mm here).
    m = env.mj_model
    d = mujoco.MjData(m)
    start = np.asarray(scene.OBJECT_START_POS)
    site_ids = [m.site(name).id for name in FINGERTIP_SITES]
    for s in observed_states:
        for i in range(s.data.qpos.shape[0]):
            d.qpos[:] = s.data.qpos[i]
            mujoco.mj_kinematics(m, d)
            tips = (d.site_xpos[site_ids] - start).ravel()
            np.testing.assert_allclose(s.obs["state"][i, :15], tips, atol=3e-3)


def test_privileged_observation_layout(env, observed_states):
    m = env.mj_model
    hand = hand_joint_names(m)
    hand_q = [m.joint(n).qposadr[0] for n in hand]
    hand_v = [m.joint(n).dofadr[0] for n in hand]
    v = object_dof_adr(m)
    for s in observed_states:
        priv, pol = s.obs["privileged_state"], s.obs["state"]
        np.testing.assert_array_equal(priv[:, :18], pol[:, :18])
        np.testing.assert_allclose(priv[:, 18:22], object_quat(s.data.qpos, m), atol=1e-6)
        np.testing.assert_array_equal(priv[:, 22:26], s.task.goal)
        np.testing.assert_array_equal(priv[:, 26:30], pol[:, 18:22])
        np.testing.assert_array_equal(priv[:, 30:54], s.data.qpos[:, hand_q])
        np.testing.assert_array_equal(priv[:, 54:78], s.data.qvel[:, hand_v])
        np.testing.assert_array_equal(priv[:, 78:84], s.data.qvel[:, v : v + 6])


def test_reset_has_no_key_reuse():
    # Trace only (no compilation) the unbatched reset with JAX's key-reuse checker on.
    env = make_env(settle_steps=2)
    with jax.debug_key_reuse(True):
        jax.jit(env.reset).trace(jax.random.key(0))


def test_reset_rejects_a_batch_of_keys(env):
    with pytest.raises(ValueError, match="vmap"):
        env.reset(jax.random.split(jax.random.key(0), 4))
    with pytest.raises(ValueError, match="vmap"):
        env.reset(jax.random.key_data(jax.random.split(jax.random.key(0), 4)))


def test_make_env_rejects_unknown_object():
    with pytest.raises(ValueError) as info:
        make_env(object="sphere")
    assert "block" in str(info.value) and "octagon" in str(info.value)


def test_make_env_rejects_unknown_option():
    with pytest.raises(ValueError, match="bogus"):
        make_env(bogus=1)
