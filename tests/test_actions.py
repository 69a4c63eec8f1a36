"""Actions: relative joint targets (with the coupled-joint rule), discretization, EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import PREFIX, actuated_joint_names, expected_joint_targets

from dexjax.env import EnvConfig, make_env

# Hand-picked joint angles (rad), some near limits so that clipping is exercised.
HAND_QPOS = {
    "WRJ1": 0.10, "WRJ0": -0.60,
    "FFJ3": 0.20, "FFJ2": 0.50, "FFJ1": 0.70, "FFJ0": 0.60,
    "MFJ3": -0.30, "MFJ2": 1.20, "MFJ1": 0.30, "MFJ0": 0.35,
    "RFJ3": 0.00, "RFJ2": 0.10, "RFJ1": 0.05, "RFJ0": 0.02,
    "LFJ4": 0.40, "LFJ3": 0.10, "LFJ2": 0.90, "LFJ1": 1.00, "LFJ0": 0.90,
    "THJ4": 0.50, "THJ3": 1.10, "THJ2": -0.10, "THJ1": 0.30, "THJ0": -0.80,
}  # fmt: skip


@pytest.fixture(scope="module")
def picked(env):
    m = env.mj_model
    qpos = np.array(m.qpos0, np.float64)
    for name, value in HAND_QPOS.items():
        qpos[m.joint(PREFIX + name).qposadr[0]] = value
    action = np.linspace(-1.0, 1.0, m.nu)
    ctrl = m.actuator_ctrlrange.mean(axis=1) + 0.1
    ctrl = np.clip(ctrl, m.actuator_ctrlrange[:, 0], m.actuator_ctrlrange[:, 1])
    return qpos, action, ctrl


def _targets(env, qpos, action, ctrl, **kw):
    return np.asarray(
        env.joint_targets(
            jnp.asarray(qpos, jnp.float32),
            jnp.asarray(action, jnp.float32),
            jnp.asarray(ctrl, jnp.float32),
            **kw,
        )
    )


def test_actuator_order_matches_model(env):
    # The env's tables must follow the model's actuator order (ctrlrange is indexed by it).
    m = env.mj_model
    names = actuated_joint_names(m)
    np.testing.assert_array_equal(
        env.idx.actuator_qpos, [m.joint(PREFIX + n).qposadr[0] for n in names]
    )
    np.testing.assert_array_equal(env.idx.ctrl_low, m.actuator_ctrlrange[:, 0])


def test_coupled_joint_targets_hand_worked(env, picked):
    qpos, action, ctrl = picked
    m = env.mj_model
    got = _targets(env, qpos, action, ctrl)
    names = actuated_joint_names(m)

    def a(name):
        return action[names.index(name)]

    # FFJ1 drives the tendon FFJ1 + FFJ0: range [0, 3.142], half range 1.571; centre
    # FFJ1 + FFJ0 = 1.3.
    expect_ff = np.clip(0.70 + 0.60 + a("FFJ1") * 1.571, 0.0, 3.142)
    assert got[names.index("FFJ1")] == pytest.approx(expect_ff, abs=1e-5)
    # MFJ1: centre 0.30 + 0.35 = 0.65.
    expect_mf = np.clip(0.65 + a("MFJ1") * 1.571, 0.0, 3.142)
    assert got[names.index("MFJ1")] == pytest.approx(expect_mf, abs=1e-5)
    # WRJ0 (not coupled): -0.60 - 1 * 0.5935 = -1.1935, clipped to -0.698.
    assert a("WRJ0") == pytest.approx(-1.0 + 2.0 / 19)
    expect_wr = np.clip(-0.60 + a("WRJ0") * 0.5935, -0.698, 0.489)
    assert got[names.index("WRJ0")] == pytest.approx(expect_wr, abs=1e-5)
    # THJ0 (last actuator, action +1): -0.80 + 0.7855 = -0.0145 (inside [-1.571, 0]).
    assert got[names.index("THJ0")] == pytest.approx(-0.80 + 0.7855, abs=1e-5)


def test_joint_targets_relative_to_current(env, picked):
    qpos, action, ctrl = picked
    m = env.mj_model
    got = _targets(env, qpos, action, ctrl)
    np.testing.assert_allclose(got, expected_joint_targets(m, qpos, action, ctrl), atol=2e-6)
    # Some targets are clipped to the control range.
    lo, hi = m.actuator_ctrlrange.T
    assert np.any(np.isclose(got, lo)) and np.any(np.isclose(got, hi))


def test_joint_targets_relative_to_target_uses_previous_ctrl(env, picked):
    qpos, action, ctrl = picked
    m = env.mj_model
    got = _targets(env, qpos, action, ctrl, relative_to="target")
    expected = expected_joint_targets(m, qpos, action, ctrl, relative_to="target")
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # It does not depend on the joint angles at all.
    other = _targets(env, qpos + 0.3, action, ctrl, relative_to="target")
    np.testing.assert_array_equal(got, other)


def test_joint_targets_relative_to_center_are_absolute(env, picked):
    qpos, action, ctrl = picked
    m = env.mj_model
    got = _targets(env, qpos, action, ctrl, relative_to="center")
    expected = expected_joint_targets(m, qpos, action, ctrl, relative_to="center")
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # Neither the joint angles nor the previous targets matter.
    other = _targets(env, qpos + 0.3, action, ctrl + 0.2, relative_to="center")
    np.testing.assert_array_equal(got, other)
    # No action is the middle of every range.
    lo, hi = m.actuator_ctrlrange.T
    middle = _targets(env, qpos, np.zeros_like(action), ctrl, relative_to="center")
    np.testing.assert_allclose(middle, 0.5 * (lo + hi), atol=1e-6)


def test_locked_wrist_keeps_wrist_ctrl(picked):
    env = make_env(locked_wrist=True)  # built, never compiled
    assert env.action_size == 18
    assert env.observation_size == {"state": (22,), "privileged_state": (84,)}
    qpos, action, ctrl = picked
    m = env.mj_model
    action18 = action[2:]
    got = _targets(env, qpos, action18, ctrl)
    names = actuated_joint_names(m)
    for w in ("WRJ1", "WRJ0"):
        assert got[names.index(w)] == pytest.approx(ctrl[names.index(w)], abs=1e-7)
    np.testing.assert_allclose(
        got, expected_joint_targets(m, qpos, action18, ctrl, locked_wrist=True), atol=2e-6
    )
    with pytest.raises(ValueError, match=r"\(18,\)"):
        env.step(None, jnp.zeros(20))


def test_default_sizes(env):
    assert env.action_size == 20
    assert env.observation_size == {"state": (22,), "privileged_state": (84,)}
    assert make_env(last_action_in_obs=True).observation_size == {
        "state": (42,),
        "privileged_state": (104,),
    }


def test_discretize_grid_of_11_bins(env):
    grid = np.round(np.linspace(-1.0, 1.0, 11), 6)  # -1, -0.8, ..., 0.8, 1
    np.testing.assert_allclose(grid, [-1, -0.8, -0.6, -0.4, -0.2, 0, 0.2, 0.4, 0.6, 0.8, 1])
    # The grid maps onto itself, and a fine sweep produces exactly these 11 values.
    np.testing.assert_allclose(env.discretize(jnp.asarray(grid, jnp.float32)), grid, atol=1e-6)
    sweep = np.asarray(env.discretize(jnp.linspace(-1.0, 1.0, 2001)))
    values = np.unique(np.round(sweep, 5))
    np.testing.assert_allclose(values, grid, atol=1e-5)
    # Snaps to the nearest grid value.
    x = jnp.array([-0.99, -0.91, -0.89, -0.05, 0.05, 0.09, 0.11, 0.35, 0.45, 0.71, 0.95])
    expected = [-1.0, -1.0, -0.8, 0.0, 0.0, 0.0, 0.2, 0.4, 0.4, 0.8, 1.0]
    np.testing.assert_allclose(env.discretize(x), expected, atol=1e-6)


def test_discretize_zero_bins_is_identity():
    env = make_env(action_bins=0)  # built, never compiled
    x = jnp.array([-1.0, -0.123, 0.0, 0.4567, 0.999])
    np.testing.assert_array_equal(env.discretize(x), x)


@pytest.mark.parametrize(
    "overrides",
    [
        {"action_bins": 1},
        {"action_ema": 0.0},
        {"relative_to": "previous"},
        {"goal_distribution": "anything"},
        {"settle_attempts": 0},
    ],
)
def test_env_config_rejects_invalid_values(overrides):
    with pytest.raises(ValueError):
        EnvConfig(**overrides)


def test_ema_of_discretized_actions_through_step(env, step_fn, reset_state):
    m = env.mj_model
    rng = np.random.default_rng(0)
    shape = (reset_state.obs["state"].shape[0], env.action_size)
    grid = np.linspace(-0.4, 0.4, 5)  # on the 11-bin grid
    a1 = rng.choice(grid, size=shape)
    a2 = rng.choice(grid, size=shape)
    # Off-grid inputs snap to the grid, and out-of-range inputs are clipped first.
    a1_in = a1 + rng.uniform(-0.08, 0.08, size=shape)
    a1_in[:, 0] = 1.7
    a1[:, 0] = 1.0

    s1 = step_fn(reset_state, jnp.asarray(a1_in, jnp.float32))
    s2 = step_fn(s1, jnp.asarray(a2, jnp.float32))
    assert not np.any(s1.done) and not np.any(s2.done)
    np.testing.assert_allclose(s1.task.smoothed_action, 0.3 * a1, atol=1e-6)
    np.testing.assert_allclose(s2.task.smoothed_action, 0.3 * a2 + 0.7 * 0.3 * a1, atol=1e-6)

    # The targets that step applied follow the coupled-joint rule on the smoothed action.
    for i in range(shape[0]):
        expected = expected_joint_targets(
            m, reset_state.data.qpos[i], 0.3 * a1[i], reset_state.data.ctrl[i]
        )
        np.testing.assert_allclose(s1.data.ctrl[i], expected, atol=2e-5)


def test_step_rejects_wrong_action_shape(env, step_fn, reset_state):
    one = jax.tree.map(lambda x: x[0], reset_state)
    with pytest.raises(ValueError, match="action has shape"):
        env.step(one, jnp.zeros(env.action_size - 1))
    with pytest.raises(ValueError, match="action has shape"):
        step_fn(reset_state, jnp.zeros((reset_state.done.shape[0], env.action_size + 1)))
