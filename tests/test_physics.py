"""Physics: the block rests stably on the palm, and MJX agrees with native MuJoCo.

Native MuJoCo runs the same MjModel (same solver settings) as MJX. With the default
relative_to="current" and zero actions the hand sags under gravity (the wrist has no
integral action), so the MJX stability check uses a simple feedback policy that asks for
the settled joint targets instead of zero actions.
"""

import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from reference import (
    COUPLED_PARTNER,
    PREFIX,
    actuated_joint_names,
    expected_joint_targets,
    object_pos,
    object_qpos_adr,
)

from dexjax import scene

SUBSTEPS = 10  # one 80 ms control step


def _native_from(m, qpos, qvel, ctrl):
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(qpos)
    d.qvel[:] = np.asarray(qvel)
    d.ctrl[:] = np.asarray(ctrl)
    return d


def test_native_block_dropped_on_open_hand_comes_to_rest():
    m = scene.build_model()
    d = mujoco.MjData(m)  # object at the start pose (level), all targets zero
    o = object_qpos_adr(m)
    for _ in range(125):  # 1 s to land
        mujoco.mj_step(m, d)
    landed = d.qpos[o : o + 3].copy()
    heights = []
    for _ in range(250):  # then 2 s more
        mujoco.mj_step(m, d)
        heights.append(d.qpos[o + 2])
    assert landed[2] == pytest.approx(0.167, abs=0.003)
    assert np.ptp(heights) < 0.002
    assert np.linalg.norm(d.qpos[o : o + 3] - landed) < 0.01


def test_native_block_stays_on_palm_from_reset_states(env, reset_state):
    # 25 control steps (2 s) holding the settled targets (relative_to="target", zero
    # actions), simulated natively from each MJX reset state.
    m = env.mj_model
    o = object_qpos_adr(m)
    for i in range(reset_state.done.shape[0]):
        d = _native_from(
            m, reset_state.data.qpos[i], reset_state.data.qvel[i], reset_state.data.ctrl[i]
        )
        start = d.qpos[o : o + 3].copy()
        path = []
        for _ in range(25 * SUBSTEPS):
            mujoco.mj_step(m, d)
            path.append(d.qpos[o : o + 3].copy())
        path = np.array(path)
        assert np.all(np.abs(path[:, 2] - start[2]) < 0.004), i
        assert np.linalg.norm(path[-1] - start) < 0.01, i


def test_mjx_step_matches_native_mujoco(env, step_fn, reset_state):
    # One control step with zero actions: the targets are the current joint angles
    # (coupled pairs summed), then 10 physics substeps in MJX and natively.
    m = env.mj_model
    n = reset_state.done.shape[0]
    nxt = step_fn(reset_state, jnp.zeros((n, env.action_size)))
    assert not np.any(nxt.done)
    o = object_qpos_adr(m)
    for i in range(n):
        qpos = np.asarray(reset_state.data.qpos[i])
        ctrl = expected_joint_targets(m, qpos, np.zeros(m.nu), reset_state.data.ctrl[i])
        np.testing.assert_allclose(nxt.data.ctrl[i], ctrl, atol=1e-5)
        d = _native_from(m, qpos, reset_state.data.qvel[i], ctrl)
        for _ in range(SUBSTEPS):
            mujoco.mj_step(m, d)
        got = np.asarray(nxt.data.qpos[i])
        np.testing.assert_allclose(got[o : o + 3], d.qpos[o : o + 3], atol=5e-4)
        np.testing.assert_allclose(got[o + 3 : o + 7], d.qpos[o + 3 : o + 7], atol=5e-3)
        np.testing.assert_allclose(got[:o], d.qpos[:o], atol=2e-3)


def test_mjx_block_stays_on_palm_under_holding_policy(env, step_fn, reset_state):
    """25 steps (2 s) through the real step function with a policy that holds the hand.

    Each step it picks the action whose smoothed value brings every target back to its
    settled value: a* = (s* - 0.7 s_prev) / 0.3 with s* = (ctrl0 - centre) / half_range.
    """
    m = env.mj_model
    o = object_qpos_adr(m)
    names = actuated_joint_names(m)
    joint = np.array([m.joint(PREFIX + n).qposadr[0] for n in names])
    partner = np.array(
        [
            m.joint(PREFIX + COUPLED_PARTNER[n]).qposadr[0] if n in COUPLED_PARTNER else -1
            for n in names
        ]
    )
    lo, hi = m.actuator_ctrlrange.T
    half = 0.5 * (hi - lo)
    ctrl0 = np.asarray(reset_state.data.ctrl)
    start = object_pos(reset_state.data.qpos, m)

    state = reset_state
    for _ in range(25):
        q = np.asarray(state.data.qpos)
        centre = q[:, joint] + np.where(partner >= 0, q[:, np.maximum(partner, 0)], 0.0)
        wanted = (ctrl0 - centre) / half
        action = np.clip((wanted - 0.7 * np.asarray(state.task.smoothed_action)) / 0.3, -1, 1)
        state = step_fn(state, jnp.asarray(action, jnp.float32))
        assert not np.any(state.done)
        pos = object_pos(state.data.qpos, m)
        assert np.all(np.abs(pos[:, 2] - start[:, 2]) < 0.005), pos[:, 2] - start[:, 2]
        assert np.all(np.linalg.norm(pos - start, axis=1) < 0.015)
    np.testing.assert_allclose(state.data.qpos[:, o + 2], start[:, 2], atol=0.005)
