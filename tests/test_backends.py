"""The two physics backends: MuJoCo's C engine (the suite's default on a CPU) and MJX.

- Parity: from the same states, one control step of the randomized environment on each
  backend agrees within the tolerances by which MJX agrees with native MuJoCo
  (test_physics.py), for an identity (nominal) episode and for the sampled episodes.
- The C engine's slots: after a step each slot's MjModel carries exactly its episode's
  parameters, and every field that `episode_model` changes is one the C backend writes.
- Determinism: the same inputs give bitwise the same outputs with 1 or 2 threads.
- Failures: a slot whose physics blows up is flagged; the other slots are unaffected.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from conftest import BATCH, SETTLE_STEPS
from mujoco import mjx
from reference import object_qpos_adr, to_numpy

from dexjax import physics, scene
from dexjax import randomization as dr
from dexjax.env import make_env


def test_auto_backend_is_the_c_engine_on_a_cpu(env, env_dr):
    assert jax.default_backend() == "cpu"
    assert env.config.backend == "auto"
    assert env.backend == env_dr.backend == "c"
    assert physics.resolve("mjx") == "mjx"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        make_env(backend="cuda")
    with pytest.raises(ValueError, match="choose one of"):
        physics.resolve("warp")


@pytest.fixture(scope="module")
def env_dr_mjx():
    return make_env(settle_steps=SETTLE_STEPS, randomization=dr.preset("all"), backend="mjx")


@pytest.fixture(scope="module")
def step_dr_mjx_fn(env_dr_mjx):
    return jax.jit(jax.vmap(env_dr_mjx.step))


def _as_mjx(env_mjx, state):
    """The C state's physics as MJX data (what a step reads: positions, velocities,
    targets, applied forces, the goal marker)."""
    d = state.data
    base = mjx.make_data(env_mjx.mjx_model)
    data = jax.vmap(
        lambda q, v, c, x, g: base.replace(qpos=q, qvel=v, ctrl=c, xfrc_applied=x, mocap_quat=g)
    )(d.qpos, d.qvel, d.ctrl, d.xfrc_applied, d.mocap_quat)
    return state.replace(data=data)


def _identity_physics(state):
    """The same states with identity episodes: nominal physics, no unmodeled effects."""
    e = state.domain.episode
    ones, zeros = jnp.ones_like, jnp.zeros_like
    episode = e.replace(
        object_scale=ones(e.object_scale),
        mass_scale=ones(e.mass_scale),
        friction_scale=ones(e.friction_scale),
        damping_scale=ones(e.damping_scale),
        gain_scale=ones(e.gain_scale),
        joint_limit_offset=zeros(e.joint_limit_offset),
        gravity=jnp.broadcast_to(jnp.array([0.0, 0.0, -9.81]), e.gravity.shape),
        action_offset=zeros(e.action_offset),
        action_noise_std=zeros(e.action_noise_std),
        delayed=zeros(e.delayed),
        timestep_rate=jnp.full_like(e.timestep_rate, jnp.inf),
        backlash=zeros(e.backlash),
        force_prob=zeros(e.force_prob),
    )
    return state.replace(domain=state.domain.replace(episode=episode))


def _even_substeps(state):
    """The sampled episodes with nominal substep lengths (the one randomization that the
    C engine approximates: it steps the mean of the control step's substep lengths)."""
    e = state.domain.episode
    episode = e.replace(timestep_rate=jnp.full_like(e.timestep_rate, jnp.inf))
    return state.replace(domain=state.domain.replace(episode=episode))


# Tolerances (object position m, object quaternion components, hand joints rad). For
# identity episodes, those by which MJX agrees with native MuJoCo (test_physics.py).
# Measured on these states, largest differences: identity 1.3e-4 / 1.5e-3 / 3.9e-4;
# sampled physics 7.1e-4 / 2.5e-2 / 1.6e-3 (each family alone stays under 3e-4 / 5.3e-3 /
# 8.3e-4: MJX's float32 contact solve drifts further from float64 with several at once;
# the C engine is MuJoCo's own step, see below); with uneven substeps, which the C engine
# steps at their mean length, 7.3e-4 / 1.5e-2 / 3.9e-3.
TOLERANCES = {
    "identity": (5e-4, 5e-3, 2e-3),
    "sampled": (1.5e-3, 5e-2, 5e-3),
    "sampled, uneven substeps": (1.5e-3, 5e-2, 1e-2),
}


@pytest.mark.parametrize("episode", list(TOLERANCES))
def test_c_and_mjx_agree_after_a_control_step(
    env_dr, step_dr_fn, env_dr_mjx, step_dr_mjx_fn, dr_state, episode
):
    start = {
        "identity": _identity_physics(dr_state),
        "sampled": _even_substeps(dr_state),
        "sampled, uneven substeps": dr_state,
    }[episode]
    action = 0.5 * jax.random.uniform(
        jax.random.key(5), (BATCH, env_dr.action_size), minval=-1, maxval=1
    )
    c = to_numpy(step_dr_fn(start, action))
    x = to_numpy(step_dr_mjx_fn(_as_mjx(env_dr_mjx, start), action))
    assert not c.done.any() and not x.done.any()
    o = object_qpos_adr(env_dr.mj_model)
    # The same keys: the same targets, forces and noise draws.
    np.testing.assert_allclose(c.data.ctrl, x.data.ctrl, atol=1e-5)
    np.testing.assert_array_equal(c.data.xfrc_applied, x.data.xfrc_applied)
    pos, rot, hand = TOLERANCES[episode]
    tol = functools.partial(np.testing.assert_allclose, rtol=0)
    tol(c.data.qpos[:, o : o + 3], x.data.qpos[:, o : o + 3], atol=pos)
    tol(c.data.qpos[:, o + 3 :], x.data.qpos[:, o + 3 :], atol=rot)
    tol(c.data.qpos[:, :o], x.data.qpos[:, :o], atol=hand)
    assert np.abs(c.data.qpos - to_numpy(start.data.qpos)).max() > 1e-2  # it moved
    # What the observations read from the engine: the fingertips' site poses.
    tips = env_dr.idx.fingertip_sites
    tol(c.data.site_xpos[:, tips], x.data.site_xpos[:, tips], atol=2 * pos)
    tol(c.data.site_xmat[:, tips], x.data.site_xmat[:, tips], atol=5 * hand)
    tol(c.obs["state"], x.obs["state"], atol=2 * rot)
    tol(c.reward, x.reward, atol=2 * rot)
    # Which contact pairs touch (the hand holds the block: some do).
    touch_c = np.asarray(jax.vmap(env_dr.physics.touching)(jax.tree.map(jnp.asarray, c.data)))
    touch_x = np.asarray(jax.vmap(env_dr_mjx.physics.touching)(jax.tree.map(jnp.asarray, x.data)))
    assert touch_c.shape == touch_x.shape == (BATCH, env_dr.mj_model.npair)
    assert touch_c.any(axis=1).all()
    assert (touch_c == touch_x).mean() >= 0.9, (touch_c, touch_x)


def test_c_slot_models_carry_their_episodes_parameters(env_dr, step_dr_fn, dr_state):
    jax.block_until_ready(step_dr_fn(dr_state, jnp.zeros((BATCH, env_dr.action_size))))
    engine = env_dr.physics.engine
    assert len(engine._models) >= BATCH
    for i in range(BATCH):
        episode = jax.tree.map(lambda x, i=i: x[i], dr_state.domain.episode)
        want = dr.episode_model(env_dr.mjx_model, episode, env_dr.dr_info)
        slot = engine._models[i]
        for name in physics.RANDOMIZED_FIELDS:
            np.testing.assert_allclose(
                getattr(slot, name), getattr(want, name), rtol=1e-6, err_msg=name
            )
        np.testing.assert_allclose(slot.opt.gravity, want.opt.gravity, rtol=1e-6)
        # The slot steps its episode's mean substep (timing randomization is on).
        assert slot.opt.timestep > scene.SceneConfig().timestep
    # Slots differ from one another and from the nominal model.
    assert not np.allclose(engine._models[0].body_mass, engine._models[1].body_mass)
    assert not np.allclose(engine._models[0].body_mass, engine.nominal.body_mass)


def test_c_backend_writes_every_field_the_episode_model_changes(env_dr, dr_state):
    episode = jax.tree.map(lambda x: x[0], dr_state.domain.episode)
    nominal = env_dr.mjx_model
    changed = dr.episode_model(nominal, episode, env_dr.dr_info)
    names = {
        f.name
        for f in dataclasses.fields(nominal)
        if isinstance(getattr(nominal, f.name), jax.Array)
        and not np.array_equal(getattr(nominal, f.name), getattr(changed, f.name))
    }
    assert names and names <= set(physics.RANDOMIZED_FIELDS)
    opt = {
        f.name
        for f in dataclasses.fields(nominal.opt)
        if isinstance(getattr(nominal.opt, f.name), jax.Array)
        and not np.array_equal(getattr(nominal.opt, f.name), getattr(changed.opt, f.name))
    }
    assert opt == {"gravity"}


def _engine_inputs(n, seed=0):
    """Host inputs of CEngine.step: settled-looking states with per-slot physics."""
    m = scene.build_model()
    rng = np.random.default_rng(seed)
    qpos = np.tile(m.qpos0, (n, 1))
    o = object_qpos_adr(m)
    qpos[:, o : o + 3] = scene.OBJECT_START_POS
    qpos[:, :o] += 0.05 * rng.standard_normal((n, o))
    qvel = 0.1 * rng.standard_normal((n, m.nv))
    ctrl = np.clip(0.1 * rng.standard_normal((n, m.nu)), *m.actuator_ctrlrange.T)
    xfrc = np.zeros((n, m.nbody, 6))
    xfrc[:, m.body("object").id, :3] = 0.05 * rng.standard_normal((n, 3))
    params = {k: np.stack([getattr(m, k)] * n) for k in physics.RANDOMIZED_FIELDS}
    params["body_mass"] = params["body_mass"] * rng.uniform(0.5, 1.5, (n, m.nbody))
    params["dof_damping"] = params["dof_damping"] * rng.uniform(0.3, 3.0, (n, m.nv))
    params["gravity"] = np.array([0.0, 0.0, -9.81]) + 0.4 * rng.standard_normal((n, 3))
    params["timestep"] = rng.uniform(0.008, 0.009, n)
    return qpos, qvel, ctrl, xfrc, params


def _engine(nthread):
    return physics.CEngine(scene.build_spec(scene.SceneConfig()), nthread)


def test_c_engine_is_deterministic_whatever_the_thread_count():
    inputs = _engine_inputs(6)
    one = _engine(1).step(*inputs, nstep=10)
    two = _engine(2).step(*inputs, nstep=10)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not one[-1].any()
    # And it is MuJoCo's own step, slot by slot.
    qpos, qvel, ctrl, xfrc, params = inputs
    m = scene.build_model()
    for i in (0, 5):
        for name in physics.RANDOMIZED_FIELDS:
            getattr(m, name)[...] = params[name][i]
        m.opt.gravity[:] = params["gravity"][i]
        m.opt.timestep = params["timestep"][i]
        d = mujoco.MjData(m)
        d.qpos[:], d.qvel[:], d.ctrl[:], d.xfrc_applied[:] = qpos[i], qvel[i], ctrl[i], xfrc[i]
        for _ in range(10):
            mujoco.mj_step(m, d)
        np.testing.assert_allclose(one[1][i], d.qpos, rtol=0, atol=1e-9)
        np.testing.assert_allclose(one[2][i], d.qvel, rtol=0, atol=1e-7)
        np.testing.assert_allclose(one[0][i], 10 * params["timestep"][i], rtol=1e-9)


def test_c_engine_flags_a_blow_up_in_its_slot_only():
    qpos, qvel, ctrl, xfrc, params = _engine_inputs(4, seed=1)
    engine = _engine(2)
    clean = engine.step(qpos, qvel, ctrl, xfrc, params, nstep=10)
    bad_qvel = qvel.copy()
    bad_qvel[1] = 1e12  # MuJoCo's velocity check resets that slot's data with a warning
    bad_qpos = qpos.copy()
    bad_qpos[2, 0] = np.nan
    broken = engine.step(bad_qpos, bad_qvel, ctrl, xfrc, params, nstep=10)
    np.testing.assert_array_equal(broken[-1], [False, True, True, False])
    np.testing.assert_array_equal(clean[-1], [False] * 4)
    for a, b in zip(clean[:-1], broken[:-1], strict=True):
        np.testing.assert_array_equal(a[[0, 3]], b[[0, 3]])
    for out in broken[1:-1]:
        assert np.isfinite(out).all()


def test_c_step_runs_with_one_thread_as_with_two(env, step_fn, reset_state):
    one = make_env(settle_steps=SETTLE_STEPS, randomization=dr.preset("none"), physics_threads=1)
    assert one.physics.engine is not env.physics.engine
    action = jnp.full((BATCH, env.action_size), 0.3)
    a = to_numpy(jax.jit(jax.vmap(one.step))(reset_state, action))
    b = to_numpy(step_fn(reset_state, action))
    np.testing.assert_array_equal(a.data.qpos, b.data.qpos)
    np.testing.assert_array_equal(a.obs["privileged_state"], b.obs["privileged_state"])


def test_a_repeated_engine_call_is_answered_without_stepping_again(env, reset_state):
    """With the batch split over several local CPU devices every device makes the same
    host call; the engine steps once and hands the others the same results."""
    engine, m = env.physics.engine, env.mj_model
    data = reset_state.data
    params = {
        k: np.asarray(getattr(env.mjx_model, k))[None].repeat(BATCH, 0)
        for k in physics.RANDOMIZED_FIELDS
    }
    params["gravity"] = np.tile(np.asarray(m.opt.gravity, np.float32), (BATCH, 1))
    params["timestep"] = np.full(BATCH, m.opt.timestep, np.float32)
    args = [np.asarray(a) for a in (data.qpos, data.qvel, data.ctrl, data.xfrc_applied)]
    before = engine.seconds["rollout"]
    first = engine.step(*args, params, 3)
    stepped = engine.seconds["rollout"]
    again = engine.step(*[a.copy() for a in args], params, 3)
    assert stepped > before and engine.seconds["rollout"] == stepped  # no second rollout
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    args[0] = args[0] + 1e-3  # other arguments: stepped anew
    engine.step(*args, params, 3)
    assert engine.seconds["rollout"] > stepped
