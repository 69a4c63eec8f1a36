"""step(): reward, success / drop / timeout / max-successes handling, automatic resets,
numerical health over a random rollout, and goal sampling."""

import types

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from reference import (
    angle,
    object_dof_adr,
    object_pos,
    object_qpos_adr,
    object_quat,
    rot,
    to_numpy,
    wxyz,
)
from scipy.spatial.transform import Rotation

from dexjax import scene
from dexjax.env import make_env

CUBE_GROUP = Rotation.create_group("O")  # the 24 rotations mapping a cube onto itself


def _like(old, new):
    """`new` as an array of the same dtype as `old` (keeps the compiled step's signature)."""
    return jnp.asarray(np.asarray(new, dtype=np.asarray(old).dtype))


# ---- scripted states -------------------------------------------------------------------

SUCCESS, DROP, TIMEOUT, MAX_SUCCESSES = range(4)


@pytest.fixture(scope="module")
def scripted(env, step_fn, reset_state):
    """One batched step from hand-made states: env 0 reaches its goal, env 1 has its
    object below the drop height (and has also run out of time), env 2 runs out of time,
    env 3 reaches its 50th goal."""
    m = env.mj_model
    assert reset_state.done.shape[0] == 4
    o, v = object_qpos_adr(m), object_dof_adr(m)
    # The brief's address of the object's free joint must be the model's.
    assert env.idx.object_qpos == o
    data, task = reset_state.data, reset_state.task
    qpos, qvel = np.array(data.qpos), np.array(data.qvel)
    goal, dist = np.array(task.goal), np.array(task.goal_distance)
    successes = np.array(task.successes)
    since = np.array(task.steps_since_success)
    steps = np.array(task.episode_steps)
    obj = object_quat(qpos, m)

    goal[SUCCESS], dist[SUCCESS] = obj[SUCCESS], 0.0
    successes[SUCCESS], since[SUCCESS], steps[SUCCESS] = 3, 50, 60

    qpos[DROP, o : o + 7] = [1.0, 0.87, 0.05, 1.0, 0.0, 0.0, 0.0]  # below the palm, level
    qvel[DROP, v : v + 6] = 0.0
    goal[DROP], dist[DROP] = [0.0, 1.0, 0.0, 0.0], np.pi  # half a turn about x away
    successes[DROP], since[DROP], steps[DROP] = 7, 99, 300

    far = rot(obj[TIMEOUT]) * Rotation.from_rotvec([np.pi, 0.0, 0.0])
    goal[TIMEOUT], dist[TIMEOUT] = wxyz(far), np.pi
    successes[TIMEOUT], since[TIMEOUT], steps[TIMEOUT] = 2, 99, 250

    goal[MAX_SUCCESSES], dist[MAX_SUCCESSES] = obj[MAX_SUCCESSES], 0.0
    successes[MAX_SUCCESSES], since[MAX_SUCCESSES], steps[MAX_SUCCESSES] = 49, 10, 900

    before = reset_state.replace(
        data=data.replace(qpos=_like(data.qpos, qpos), qvel=_like(data.qvel, qvel)),
        task=task.replace(
            goal=_like(task.goal, goal),
            goal_distance=_like(task.goal_distance, dist),
            successes=_like(task.successes, successes),
            steps_since_success=_like(task.steps_since_success, since),
            episode_steps=_like(task.episode_steps, steps),
        ),
    )
    after = step_fn(before, jnp.zeros((4, env.action_size)))
    return to_numpy(before), to_numpy(after)


def test_success_counts_and_resamples_goal(env, scripted):
    m = env.mj_model
    before, after = scripted
    i = SUCCESS
    assert after.done[i] == 0 and after.info["truncation"][i] == 0
    assert after.task.successes[i] == 4
    assert after.task.steps_since_success[i] == 0
    assert after.task.episode_steps[i] == 61
    # Reward = d_t - d_{t+1} + 5, with d measured to the goal that was reached.
    obj_next = object_quat(after.data.qpos[i], m)
    d_next = angle(obj_next, before.task.goal[i])
    assert d_next < 0.4
    assert after.reward[i] == pytest.approx(0.0 - d_next + 5.0, abs=2e-4)
    assert after.metrics["reward/success"][i] == 5.0
    # A new goal, and goal_distance now refers to it.
    assert angle(after.task.goal[i], before.task.goal[i]) > 1e-3
    np.testing.assert_allclose(np.linalg.norm(after.task.goal[i]), 1.0, atol=1e-5)
    assert after.task.goal_distance[i] == pytest.approx(
        angle(obj_next, after.task.goal[i]), abs=1e-4
    )


def test_drop_ends_episode_with_penalty_not_truncation(scripted):
    before, after = scripted
    i = DROP
    assert after.done[i] == 1
    # Dropping wins over the timeout that was also reached in this step.
    assert after.info["truncation"][i] == 0
    assert after.metrics["env/dropped"][i] == 1
    assert after.metrics["reward/drop"][i] == -20.0
    # The level block falls onto the floor without turning: d_{t+1} stays ~ pi = d_t.
    assert after.reward[i] == pytest.approx(-20.0, abs=0.05)


def test_goal_timeout_truncates(scripted):
    before, after = scripted
    i = TIMEOUT
    assert after.done[i] == 1
    assert after.info["truncation"][i] == 1
    assert after.metrics["env/dropped"][i] == 0
    assert after.metrics["reward/success"][i] == 0
    # Only progress: the goal was half a turn away, and one step turns the block little.
    assert -1e-4 <= after.reward[i] < 0.3


def test_max_successes_truncates(scripted):
    before, after = scripted
    i = MAX_SUCCESSES
    assert after.done[i] == 1
    assert after.info["truncation"][i] == 1
    assert after.metrics["env/successes"][i] == 50
    assert after.metrics["reward/success"][i] == 5.0
    assert 4.6 < after.reward[i] <= 5.0 + 1e-6


@pytest.mark.parametrize("i", [DROP, TIMEOUT, MAX_SUCCESSES])
def test_ended_episode_restarts_from_settled_state(env, scripted, i):
    m = env.mj_model
    before, after = scripted
    o = object_qpos_adr(m)
    init = before.task.init_qpos[i]
    assert after.task.successes[i] == 0
    assert after.task.episode_steps[i] == 0
    assert after.task.steps_since_success[i] == 0
    np.testing.assert_array_equal(after.task.smoothed_action[i], 0.0)
    # Hand and object position of the settled start, at rest, with its controls.
    hand = np.r_[0:o, o + 7 : m.nq]
    np.testing.assert_array_equal(after.data.qpos[i][hand], init[hand])
    np.testing.assert_array_equal(object_pos(after.data.qpos[i], m), object_pos(init, m))
    assert object_pos(after.data.qpos[i], m)[2] > 0.15
    np.testing.assert_array_equal(after.data.qvel[i], 0.0)
    np.testing.assert_array_equal(after.data.ctrl[i], before.task.init_ctrl[i])
    # The object orientation is the settled one turned by a symmetry of the cube.
    turn = rot(object_quat(init, m)).inv() * rot(object_quat(after.data.qpos[i], m))
    assert np.min((CUBE_GROUP.inv() * turn).magnitude()) < 1e-3
    # A fresh goal, and observations of the new state.
    obj = object_quat(after.data.qpos[i], m)
    assert after.task.goal_distance[i] == pytest.approx(angle(obj, after.task.goal[i]), abs=1e-4)
    start = np.asarray(scene.OBJECT_START_POS)
    np.testing.assert_allclose(after.obs["state"][i, 15:18], object_pos(init, m) - start, atol=1e-6)


# ---- random rollout --------------------------------------------------------------------

ROLLOUT_STEPS = 150


def _slim(state):
    """A numpy copy of a state keeping only the physics fields the tests read."""
    d = state.data
    data = types.SimpleNamespace(
        qpos=np.asarray(d.qpos), qvel=np.asarray(d.qvel), ctrl=np.asarray(d.ctrl)
    )
    return to_numpy(state.replace(data=None)).replace(data=data)


@pytest.fixture(scope="module")
def rollout(env, step_fn, reset_state):
    """ROLLOUT_STEPS steps of uniformly random actions; numpy copies of each state."""
    rng = np.random.default_rng(0)
    n = reset_state.done.shape[0]
    state, states = reset_state, [_slim(reset_state)]
    for _ in range(ROLLOUT_STEPS):
        action = rng.uniform(-1.0, 1.0, size=(n, env.action_size)).astype(np.float32)
        state = step_fn(state, jnp.asarray(action))
        states.append(_slim(state))
    return states


def test_rollout_stays_finite_with_unit_quaternions(env, rollout):
    m = env.mj_model
    o = object_qpos_adr(m)
    for t, s in enumerate(rollout):
        assert np.all(np.isfinite(s.data.qpos)), t
        assert np.all(np.isfinite(s.data.qvel)), t
        assert np.all(np.isfinite(s.obs["state"])) and np.all(
            np.isfinite(s.obs["privileged_state"])
        )
        assert np.all(np.isfinite(s.reward)), t
        np.testing.assert_allclose(
            np.linalg.norm(s.data.qpos[:, o + 3 : o + 7], axis=1), 1.0, atol=1e-4
        )
        np.testing.assert_allclose(np.linalg.norm(s.task.goal, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(s.obs["state"][:, 18:22], axis=1), 1.0, atol=1e-4)
        assert np.all(np.abs(s.reward) <= np.pi + 25.0)
        assert np.all(s.info["truncation"] <= s.done)
        lo, hi = m.actuator_ctrlrange.T
        assert np.all((s.data.ctrl >= lo - 1e-6) & (s.data.ctrl <= hi + 1e-6))


def test_rollout_resets_after_done(rollout):
    dones = 0
    for s in rollout[1:]:
        ended = s.done == 1
        dones += ended.sum()
        np.testing.assert_array_equal(s.task.episode_steps[ended], 0)
        np.testing.assert_array_equal(s.task.successes[ended], 0)
        assert np.all(s.task.episode_steps[~ended] > 0)
    # Random actions drop the block: the automatic reset path was exercised.
    assert dones > 0


def test_reward_matches_reference_angle(env, rollout):
    m = env.mj_model
    checked = successes = drops = 0
    for prev, nxt in zip(rollout[:-1], rollout[1:], strict=True):
        obj_prev = object_quat(prev.data.qpos, m)
        obj_next = object_quat(nxt.data.qpos, m)
        d_t = angle(obj_prev, prev.task.goal)
        # The stored distance is the angle to the current goal.
        np.testing.assert_allclose(prev.task.goal_distance, d_t, atol=2e-4)
        for i in range(len(d_t)):
            if nxt.done[i]:
                # The state was reset; only the penalty can be checked.
                if nxt.info["truncation"][i] == 0:
                    drops += 1
                    assert nxt.metrics["reward/drop"][i] == -20.0
                    assert nxt.reward[i] <= -20.0 + np.pi + 5.0 + 1e-4
                continue
            d_next = angle(obj_next[i], prev.task.goal[i])
            success = d_next < 0.4
            expected = d_t[i] - d_next + 5.0 * success
            assert nxt.reward[i] == pytest.approx(expected, abs=3e-4)
            if success:
                successes += 1
                assert angle(nxt.task.goal[i], prev.task.goal[i]) > 1e-3
                assert nxt.task.successes[i] == prev.task.successes[i] + 1
            else:
                np.testing.assert_array_equal(nxt.task.goal[i], prev.task.goal[i])
            checked += 1
    assert checked >= 300, checked
    assert drops > 0


# ---- goal sampling and object symmetries (eager, no compilation) -------------------------


def _face_normals(obj):
    if obj == "block":
        return np.concatenate([np.eye(3), -np.eye(3)])
    side = [[np.cos(k * np.pi / 4), np.sin(k * np.pi / 4), 0.0] for k in range(8)]
    return np.array([[0.0, 0, 1], [0.0, 0, -1], *side])


@pytest.mark.parametrize("obj", ["block", "octagon"])
def test_flat_goals_put_a_face_up(obj):
    env = make_env(obj, goal_distribution="flat")
    keys = jax.random.split(jax.random.key(3), 200)
    goals = np.asarray(jax.vmap(env.sample_goal)(keys), np.float64)
    # World up, seen in the object's frame, must be one of its outward face normals.
    up_in_body = rot(goals).inv().apply([0.0, 0.0, 1.0])
    normals = _face_normals(obj)
    dots = up_in_body @ normals.T
    assert np.all(dots.max(axis=1) > 1 - 1e-5)
    # Every face comes up, and the yaw about vertical varies.
    assert len(set(dots.argmax(axis=1))) == len(normals)
    x_img = rot(goals).apply([1.0, 0.0, 0.0])
    assert np.ptp(np.arctan2(x_img[:, 1], x_img[:, 0])) > 5.0


def test_yaw_goals_rotate_about_vertical():
    env = make_env(goal_distribution="yaw")
    goals = np.asarray(jax.vmap(env.sample_goal)(jax.random.split(jax.random.key(4), 100)))
    np.testing.assert_allclose(
        rot(goals).apply([0.0, 0.0, 1.0]), np.tile([0, 0, 1.0], (100, 1)), atol=1e-5
    )


def test_yaw_turn_goals_turn_the_object_about_vertical_by_the_set_angle():
    env = make_env(goal_distribution="yaw_turn", goal_turn=(0.6, 1.2))
    current = wxyz(Rotation.random(100, random_state=3))
    keys = jax.random.split(jax.random.key(5), 100)
    goals = np.asarray(jax.vmap(env.sample_goal)(keys, jnp.asarray(current, jnp.float32)))
    # goal = turn * current, so goal * current^-1 is a rotation about world z.
    turn = rot(goals) * rot(current).inv()
    rotvec = turn.as_rotvec()
    np.testing.assert_allclose(rotvec[:, :2], 0.0, atol=2e-5)
    angles = np.abs(rotvec[:, 2])
    assert np.all((angles > 0.6 - 1e-4) & (angles < 1.2 + 1e-4))
    assert (rotvec[:, 2] > 0).any() and (rotvec[:, 2] < 0).any()
    with pytest.raises(ValueError, match="goal_turn"):
        make_env(goal_turn=(1.0, 0.5))


@pytest.mark.parametrize("direction, sign", [("counterclockwise", 1.0), ("clockwise", -1.0)])
def test_yaw_turn_goals_turn_one_way_when_asked(direction, sign):
    env = make_env(
        goal_distribution="yaw_turn", goal_turn=(0.6, 0.8), goal_turn_direction=direction
    )
    current = wxyz(Rotation.random(50, random_state=6))
    keys = jax.random.split(jax.random.key(7), 50)
    goals = np.asarray(jax.vmap(env.sample_goal)(keys, jnp.asarray(current, jnp.float32)))
    rotvec = (rot(goals) * rot(current).inv()).as_rotvec()
    np.testing.assert_allclose(rotvec[:, :2], 0.0, atol=2e-5)
    turns = sign * rotvec[:, 2]  # seen from above, counterclockwise is +z
    assert np.all((turns > 0.6 - 1e-4) & (turns < 0.8 + 1e-4))
    with pytest.raises(ValueError, match="goal_turn_direction"):
        make_env(goal_turn_direction="left")


def test_turn_goals_turn_the_object_about_axes_from_the_whole_sphere():
    env = make_env(goal_distribution="turn", goal_turn=(0.6, 0.8))
    current = wxyz(Rotation.random(400, random_state=8))
    keys = jax.random.split(jax.random.key(9), 400)
    goals = np.asarray(jax.vmap(env.sample_goal)(keys, jnp.asarray(current, jnp.float32)))
    rotvec = (rot(goals) * rot(current).inv()).as_rotvec()
    angles = np.linalg.norm(rotvec, axis=1)
    assert np.all((angles > 0.6 - 1e-4) & (angles < 0.8 + 1e-4))
    axes = rotvec / angles[:, None]
    # Uniform unit axes: each coordinate has mean 0 and mean square 1/3 (sd of the
    # estimates at n=400: 0.029 and 0.015).
    np.testing.assert_allclose(axes.mean(axis=0), 0.0, atol=0.12)
    np.testing.assert_allclose((axes**2).mean(axis=0), 1 / 3, atol=0.06)
    with pytest.raises(ValueError, match="current object orientation"):
        env.sample_goal(jax.random.key(0))


def _object_vertices(m):
    """Object vertices in the body frame, from the compiled model."""
    g = m.geom("object")
    if g.type == mujoco.mjtGeom.mjGEOM_BOX:
        h = m.geom_size[g.id]
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        local = corners * h
    else:
        mesh = g.dataid[0]
        start, num = m.mesh_vertadr[mesh], m.mesh_vertnum[mesh]
        local = m.mesh_vert[start : start + num].astype(np.float64)
    return rot(m.geom_quat[g.id]).apply(local) + m.geom_pos[g.id]


@pytest.mark.parametrize("obj,group,count", [("block", "O", 24), ("octagon", "D8", 16)])
def test_object_symmetries_are_its_rotation_group(obj, group, count):
    env = make_env(obj)
    sym = rot(np.asarray(env.idx.symmetries, np.float64))
    assert len(sym) == count
    # Exactly scipy's rotation group (the octagon's side faces face the x axis).
    ref = Rotation.create_group(group)
    for r in sym:
        assert np.min((ref.inv() * r).magnitude()) < 1e-6
    distinct = [(sym[i].inv() * sym[j]).magnitude() for i in range(count) for j in range(i)]
    assert min(distinct) > 1e-3
    # And each maps the object's vertices onto themselves.
    verts = _object_vertices(env.mj_model)
    for r in sym:
        moved = r.apply(verts)
        gaps = np.linalg.norm(moved[:, None] - verts[None], axis=-1).min(axis=1)
        assert gaps.max() < 1e-6
