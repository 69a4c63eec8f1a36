"""Domain randomization (paper Appendix C): what is sampled, how it is applied, and what it
does to the simulated world.

- Statistics: `randomization.sample_episode` under vmap over many keys (no physics),
  tested against the configured ranges and distributions with scipy's KS tests.
- Application: `episode_model` against numpy references built from the nominal MjModel.
- The environment: the one randomized env of the suite (conftest's `env_dr` and its
  compiled `step_dr_fn`) next to the plain one.
- Behaviour: the per-step effects (`perturb_action`, `backlash`, `update_force`,
  `observe`) called directly, and the physical consequences of the randomized quantities
  in native MuJoCo.

Every random draw uses a fixed typed key, so the statistical tests are deterministic;
their tolerances are several standard errors wide.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from reference import (
    FINGERTIP_SITES,
    hand_joint_names,
    object_dof_adr,
    object_pos,
    object_qpos_adr,
    object_quat,
    rot,
    to_numpy,
)
from scipy import stats

from dexjax import randomization as dr
from dexjax import scene

N = 4000  # episodes per statistical test
P_MIN = 1e-3  # smallest acceptable p-value of a goodness-of-fit test (fixed keys)

PRESETS = {  # Table 4: (physics, observation noise, unmodeled effects) switched on
    "all": (True, True, True),
    "none": (False, False, False),
    "no_observation_noise": (True, False, True),
    "no_physics": (False, True, True),
    "no_unmodeled": (True, True, False),
}

# Identity value of every Episode field, by family.
IDENTITY = {
    "physics": {
        "object_scale": 1.0,
        "mass_scale": 1.0,
        "friction_scale": 1.0,
        "damping_scale": 1.0,
        "gain_scale": 1.0,
        "joint_limit_offset": 0.0,
        "gravity": [0.0, 0.0, -9.81],
    },
    "observation": {
        "fingertip_offset": 0.0,
        "fingertip_marker": 0.0,
        "object_pos_offset": 0.0,
        "object_rot_offset": [1.0, 0.0, 0.0, 0.0],
    },
    "unmodeled": {
        "action_offset": 0.0,
        "action_noise_std": 0.0,
        "delayed": False,
        "timestep_rate": np.inf,
        "backlash": 0.0,
        "force_prob": 0.0,
    },
}


def _sample(info, config, n=N, seed=0, ranges=None):
    """n episodes (numpy) drawn with `config` from `ranges` (the config's own by default)."""
    ranges = dr.initial_ranges(config) if ranges is None else ranges
    keys = jax.random.split(jax.random.key(seed), n)
    fn = jax.jit(jax.vmap(lambda k: dr.sample_episode(k, config, ranges, info)))
    return to_numpy(fn(keys))


def _one(episodes, i):
    """Episode i of a sampled (numpy) batch, as JAX arrays."""
    return jax.tree.map(lambda x: jnp.asarray(x[i]), episodes)


def _identity_episode(env):
    """The episode every disabled family produces (for the per-step effects below)."""
    none = dr.preset("none")
    return dr.sample_episode(jax.random.key(0), none, dr.initial_ranges(none), env.dr_info)


def _within(x, lo, hi):
    slack = 1e-6 * max(abs(lo), abs(hi))
    x = np.asarray(x)
    assert x.min() >= lo - slack and x.max() <= hi + slack, (x.min(), x.max(), lo, hi)


def _fills(x, lo, hi, frac=0.01):
    """The samples reach both ends of [lo, hi] (to within `frac` of its width)."""
    x = np.asarray(x)
    assert x.min() < lo + frac * (hi - lo) and x.max() > hi - frac * (hi - lo)


MODEL_FIELDS = (
    "body_mass",
    "body_inertia",
    "geom_size",
    "geom_rbound",
    "geom_aabb",
    "pair_friction",
    "dof_damping",
    "actuator_gainprm",
    "actuator_biasprm",
    "jnt_range",
)


def _model(model):
    """The fields of an MJX model that randomization touches, as numpy arrays."""
    fields = {f: np.asarray(getattr(model, f)) for f in MODEL_FIELDS}
    return types.SimpleNamespace(gravity=np.asarray(model.opt.gravity), **fields)


def _strong(tree):
    """`tree` with every array as a plain (not weakly typed) device array: the form the
    compiled step is called with throughout, so that it never recompiles."""

    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jnp.asarray(np.asarray(x))

    return jax.tree.map(leaf, tree)


def _with_object(state, env_ids, m, z=0.05):
    """`state` with the object of environments `env_ids` placed level at height z, at rest
    (below the drop height of 0.10 m, so those episodes end in the next step)."""
    o, v = object_qpos_adr(m), object_dof_adr(m)
    qpos, qvel = np.array(state.data.qpos), np.array(state.data.qvel)
    for i in env_ids:
        qpos[i, o : o + 7] = [1.0, 0.87, z, 1.0, 0.0, 0.0, 0.0]
        qvel[i, v : v + 6] = 0.0
    data = state.data.replace(qpos=jnp.asarray(qpos), qvel=jnp.asarray(qvel))
    return state.replace(data=data)


@pytest.fixture(scope="module")
def episodes(env):
    """N episodes with every family on, from the paper's ranges."""
    return _sample(env.dr_info, dr.preset("all"))


# ---- presets ---------------------------------------------------------------------------


def test_presets_are_the_rows_of_table_4():
    default = dr.RandomizationConfig()
    for name, flags in PRESETS.items():
        config = dr.preset(name)
        families = (config.physics, config.observation, config.unmodeled)
        assert tuple(f.enabled for f in families) == flags, name
        # Only the switches differ from the paper's values.
        defaults = (default.physics, default.observation, default.unmodeled)
        for family, ref in zip(families, defaults, strict=True):
            assert dataclasses.replace(family, enabled=True) == ref


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        dr.preset("no_noise")
    message = str(err.value)
    assert "no_noise" in message
    for name in PRESETS:
        assert repr(name) in message, name


# ---- sampling statistics ---------------------------------------------------------------


def test_sampled_parameters_lie_in_configured_ranges(env, episodes):
    e, m = episodes, env.mj_model
    hand_dofs = [m.joint(n).dofadr[0] for n in hand_joint_names(m)]
    v = object_dof_adr(m)

    _within(e.object_scale, 0.95, 1.05)
    _fills(e.object_scale, 0.95, 1.05)
    assert e.mass_scale.shape == (N, m.nbody)
    _within(e.mass_scale, 0.5, 1.5)
    _fills(e.mass_scale, 0.5, 1.5)
    assert e.friction_scale.shape == (N, m.npair)
    _within(e.friction_scale, 0.7, 1.3)
    _fills(e.friction_scale, 0.7, 1.3)
    _within(e.damping_scale[:, hand_dofs], 0.3, 3.0)
    _fills(np.log(e.damping_scale[:, hand_dofs]), np.log(0.3), np.log(3.0))
    np.testing.assert_array_equal(e.damping_scale[:, v : v + 6], 1.0)  # the object's dofs
    assert e.gain_scale.shape == (N, m.nu)
    _within(e.gain_scale, 0.75, 1.5)
    _fills(np.log(e.gain_scale), np.log(0.75), np.log(1.5))

    assert e.delayed.dtype == np.bool_ and e.delayed.shape == (N, env.action_size)
    assert abs(e.delayed.mean() - 0.5) < 0.01  # 80k draws: standard error 0.0018
    _within(e.timestep_rate, 1250.0, 10000.0)
    _fills(e.timestep_rate, 1250.0, 10000.0)
    assert e.backlash.shape == (N, m.nu)
    _within(e.backlash, 0.0, 0.05)
    _fills(e.backlash, 0.0, 0.05)
    _within(e.force_prob, 0.001, 0.1)
    _fills(np.log(e.force_prob), np.log(0.001), np.log(0.1))
    # 5% of the action range [-1, 1] is a standard deviation of 0.1 action units.
    np.testing.assert_allclose(e.action_noise_std, 0.1, rtol=1e-6)


@pytest.mark.parametrize(
    "field,lo,hi,log",
    [
        ("object_scale", 0.95, 1.05, False),
        ("mass_scale", 0.5, 1.5, False),
        ("friction_scale", 0.7, 1.3, False),
        ("damping_scale", 0.3, 3.0, True),
        ("gain_scale", 0.75, 1.5, True),
        ("timestep_rate", 1250.0, 10000.0, False),
        ("force_prob", 0.001, 0.1, True),
    ],
)
def test_scale_distributions(env, episodes, field, lo, hi, log):
    x = getattr(episodes, field)
    if field == "damping_scale":
        m = env.mj_model
        x = x[:, [m.joint(n).dofadr[0] for n in hand_joint_names(m)]]
    x = np.asarray(x, np.float64).ravel()
    if log:
        x, lo, hi = np.log(x), np.log(lo), np.log(hi)
    assert stats.kstest(x, "uniform", args=(lo, hi - lo)).pvalue > P_MIN
    if log:  # the test has the power to tell log-uniform from uniform
        linear = (np.exp(lo), np.exp(hi) - np.exp(lo))
        assert stats.kstest(np.exp(x), "uniform", args=linear).pvalue < 1e-6


def test_joint_limit_offsets_are_gaussian_on_hand_joints_only(env, episodes):
    m = env.mj_model
    offsets = episodes.joint_limit_offset
    assert offsets.shape == (N, m.njnt, 2)
    hand = [m.joint(n).id for n in hand_joint_names(m)]
    assert len(hand) == 24
    x = offsets[:, hand].ravel().astype(np.float64)
    assert stats.kstest(x, "norm", args=(0.0, 0.15)).pvalue > P_MIN
    # The two ends of a range move independently.
    r = np.corrcoef(offsets[:, hand, 0].ravel(), offsets[:, hand, 1].ravel())[0, 1]
    assert abs(r) < 0.02
    # The object's free joint has no limits to move.
    np.testing.assert_array_equal(offsets[:, m.joint("object:joint").id], 0.0)
    others = sorted(set(range(m.njnt)) - set(hand))
    np.testing.assert_array_equal(offsets[:, others], 0.0)


def test_gravity_is_nominal_plus_gaussian_noise(episodes):
    g = episodes.gravity.astype(np.float64)
    noise = g - np.array([0.0, 0.0, -9.81])
    for axis in range(3):
        assert stats.kstest(noise[:, axis], "norm", args=(0.0, 0.4)).pvalue > P_MIN, axis
    # Independent coordinates.
    c = np.corrcoef(noise.T)
    assert np.all(np.abs(c[np.triu_indices(3, 1)]) < 0.06)


def test_correlated_action_offset(episodes):
    # 1.5% of the action range [-1, 1]: a standard deviation of 0.03 action units.
    x = episodes.action_offset.ravel().astype(np.float64)
    assert stats.kstest(x, "norm", args=(0.0, 2 * 0.015)).pvalue > P_MIN
    assert np.std(x) == pytest.approx(0.03, rel=0.02)


def test_correlated_observation_offsets(episodes):
    """Table 7's per-episode terms. The hand-base marker error (1 mm) moves every measured
    position together, so it adds to each fingertip and to the object position and makes
    them covary by its variance."""
    mm2 = 1e-6  # one square millimetre
    tips = episodes.fingertip_offset.astype(np.float64)  # [N, 5, 3]
    marker = episodes.fingertip_marker.astype(np.float64)
    obj = episodes.object_pos_offset.astype(np.float64)  # [N, 3]
    # Variances: fingertip 1 + base 1; object 25 + base 1; marker placement 9 (mm^2).
    assert np.var(tips) == pytest.approx(2 * mm2, rel=0.05)
    assert np.var(obj) == pytest.approx(26 * mm2, rel=0.05)
    assert np.var(marker) == pytest.approx(9 * mm2, rel=0.03)
    assert abs(tips.mean()) < 4e-5 and abs(obj.mean()) < 2e-4 and abs(marker.mean()) < 1e-4
    # Two different fingertips (same coordinate) share only the base term.
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    cov_tips = np.mean([np.mean(tips[:, i] * tips[:, j]) for i, j in pairs])
    assert cov_tips == pytest.approx(1 * mm2, rel=0.15)
    # The object and each fingertip share it too; the marker placement shares nothing.
    cov_obj = np.mean([np.mean(obj * tips[:, i]) for i in range(5)])
    assert cov_obj == pytest.approx(1 * mm2, rel=0.3)
    cov_marker = np.mean([np.mean(obj * marker[:, i]) for i in range(5)])
    assert abs(cov_marker) < 0.3 * mm2
    # Different coordinates are independent.
    assert abs(np.mean(tips[:, :, 0] * tips[:, :, 1])) < 0.15 * mm2


def test_correlated_rotation_offset_is_a_gaussian_rotation_vector(episodes):
    q = episodes.object_rot_offset.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    rotvec = rot(q).as_rotvec()
    for axis in range(3):
        assert stats.kstest(rotvec[:, axis], "norm", args=(0.0, 0.1)).pvalue > P_MIN, axis
    # The angle of a rotation vector with N(0, 0.1) components is 0.1 x chi(3).
    angle = np.linalg.norm(rotvec, axis=1)
    assert stats.kstest(angle, stats.chi(3, scale=0.1).cdf).pvalue > P_MIN


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "all"])
def test_disabled_family_gives_identity_episode(env, name):
    config = dr.preset(name)
    e = _sample(env.dr_info, config, n=64, seed=1)
    enabled = dict(zip(("physics", "observation", "unmodeled"), PRESETS[name], strict=True))
    for family, fields in IDENTITY.items():
        differs = []
        for field, value in fields.items():
            x = getattr(e, field)
            identity = np.broadcast_to(np.asarray(value, dtype=x.dtype), x.shape)
            if not enabled[family]:
                assert x.dtype == (np.bool_ if field == "delayed" else np.float32), field
                np.testing.assert_array_equal(x, identity, err_msg=field)
            else:
                differs.append(not np.array_equal(x, identity))
        if enabled[family]:  # an enabled family is not the identity
            assert all(differs), (family, differs)


def test_substep_durations():
    dt = 0.008
    # Rate inf (unmodeled effects off): exactly the nominal substep.
    d = dr.substep_durations(jax.random.key(0), dt, jnp.array(jnp.inf), 10)
    np.testing.assert_array_equal(d, np.full(10, dt, np.float32))
    # Otherwise nominal + Exp(rate): mean extra 1 / rate.
    rate = 2000.0
    extra = np.asarray(dr.substep_durations(jax.random.key(1), dt, jnp.array(rate), 20000)) - dt
    assert extra.min() >= -1e-9
    assert stats.kstest(extra, "expon", args=(0.0, 1.0 / rate)).pvalue > P_MIN


# ---- applying an episode to the model -----------------------------------------------------


def test_randomized_joint_limits_stay_ordered(env, episodes):
    # THJ2's range is only 0.42 rad wide, so independent N(0, 0.15) noise on both ends
    # crosses them in a few percent of episodes unless the ends are kept in order.
    offsets = np.asarray(episodes.joint_limit_offset)
    crossed = (env.mj_model.jnt_range + offsets)[..., 0] > (env.mj_model.jnt_range + offsets)[
        ..., 1
    ]
    assert crossed.any(), "the sample should contain crossing noise for this test to bite"
    ranges = jax.jit(jax.vmap(lambda e: dr.episode_model(env.mjx_model, e, env.dr_info).jnt_range))(
        episodes
    )
    assert np.all(np.asarray(ranges)[..., 0] <= np.asarray(ranges)[..., 1])


def test_episode_model_is_relative_to_nominal(env, episodes):
    m, nominal, info = env.mj_model, env.mjx_model, env.dr_info
    body, geom = m.body("object").id, m.geom("object").id
    before = np.asarray(nominal.body_mass)
    for i in (0, 1):  # two different episodes, one after the other
        e = jax.tree.map(lambda x, i=i: x[i].astype(np.float64), episodes)
        model = _model(dr.episode_model(nominal, _one(episodes, i), info))
        s = e.object_scale
        mass = m.body_mass * e.mass_scale
        mass[body] *= s**3
        np.testing.assert_allclose(model.body_mass, mass, rtol=2e-6)
        inertia = m.body_inertia * e.mass_scale[:, None]
        inertia[body] *= s**5
        np.testing.assert_allclose(model.body_inertia, inertia, rtol=2e-6)
        size, rbound = m.geom_size.copy(), m.geom_rbound.copy()
        size[geom] *= s
        rbound[geom] *= s
        np.testing.assert_allclose(model.geom_size, size, rtol=2e-6)
        np.testing.assert_allclose(model.geom_rbound, rbound, rtol=2e-6)
        np.testing.assert_allclose(
            model.pair_friction, m.pair_friction * e.friction_scale[:, None], rtol=2e-6
        )
        np.testing.assert_allclose(model.dof_damping, m.dof_damping * e.damping_scale, rtol=2e-6)
        np.testing.assert_allclose(
            model.jnt_range,
            np.sort(m.jnt_range + e.joint_limit_offset, axis=-1),
            rtol=2e-6,
            atol=1e-6,
        )
        np.testing.assert_allclose(model.gravity, e.gravity, rtol=1e-7)
    # The nominal model itself never changes.
    np.testing.assert_array_equal(np.asarray(nominal.body_mass), before)
    np.testing.assert_array_equal(before, m.body_mass.astype(np.float32))


def test_episode_model_scales_position_actuators_in_form(env, episodes):
    """A position actuator's force is kp (ctrl - q): gain kp and bias -kp must scale
    together, so the randomized actuator is still a position servo on the same target."""
    m = env.mj_model
    kp = m.actuator_gainprm[:, 0]
    np.testing.assert_array_equal(m.actuator_biasprm[:, 1], -kp)  # nominal: a servo
    model = _model(dr.episode_model(env.mjx_model, _one(episodes, 0), env.dr_info))
    g = episodes.gain_scale[0].astype(np.float64)
    rng = np.random.default_rng(0)
    ctrl, q = rng.uniform(-1, 1, m.nu), rng.uniform(-1, 1, m.nu)
    force = model.actuator_gainprm[:, 0] * ctrl + model.actuator_biasprm[:, 1] * q
    np.testing.assert_allclose(force, g * kp * (ctrl - q), rtol=1e-5, atol=1e-7)
    # Everything else about the actuators is untouched.
    np.testing.assert_array_equal(model.actuator_gainprm[:, 1:], m.actuator_gainprm[:, 1:])
    np.testing.assert_array_equal(model.actuator_biasprm[:, [0, 2]], m.actuator_biasprm[:, [0, 2]])


def test_identity_episode_gives_the_nominal_model(env):
    model = _model(dr.episode_model(env.mjx_model, _identity_episode(env), env.dr_info))
    nominal = _model(env.mjx_model)
    for field in (*MODEL_FIELDS, "gravity"):
        np.testing.assert_array_equal(getattr(model, field), getattr(nominal, field), field)


# ---- the randomized environment ------------------------------------------------------------


@pytest.fixture(scope="module")
def dr_stepped(env_dr, step_dr_fn, dr_state):
    """The randomized batch after one zero-action step (numpy)."""
    n = dr_state.done.shape[0]
    return to_numpy(step_dr_fn(dr_state, jnp.zeros((n, env_dr.action_size))))


DROP = 1


def test_only_ended_episodes_resample(env_dr, step_dr_fn, dr_state):
    m = env_dr.mj_model
    n = dr_state.done.shape[0]
    before = _with_object(dr_state, [DROP], m)
    after = to_numpy(step_dr_fn(before, jnp.zeros((n, env_dr.action_size))))
    before = to_numpy(before)
    np.testing.assert_array_equal(after.done, [1.0 if i == DROP else 0.0 for i in range(n)])
    old, new = before.domain.episode, after.domain.episode
    constant = {"action_noise_std", "delayed"}  # the same value, or likely to repeat
    for field in dataclasses.fields(dr.Episode):
        a, b = getattr(old, field.name), getattr(new, field.name)
        for i in range(n):
            if i != DROP:
                np.testing.assert_array_equal(b[i], a[i], err_msg=field.name)
        if field.name not in constant:
            assert not np.array_equal(b[DROP], a[DROP]), field.name
    assert not np.array_equal(new.delayed[DROP], old.delayed[DROP])  # 2^-20 to fail
    # The new episode is a draw from the (unchanged) ranges, with fresh effects.
    np.testing.assert_array_equal(after.domain.ranges.low, before.domain.ranges.low)
    np.testing.assert_array_equal(after.domain.ranges.high, before.domain.ranges.high)
    _within(new.object_scale[DROP], 0.95, 1.05)
    _within(new.mass_scale[DROP], 0.5, 1.5)
    np.testing.assert_array_equal(after.domain.effects.force[DROP], 0.0)
    np.testing.assert_array_equal(after.domain.effects.previous_action[DROP], 0.0)
    np.testing.assert_array_equal(after.domain.effects.command[DROP], after.data.ctrl[DROP])


def test_identity_episode_physics_is_the_nominal_physics(env, env_dr, reset_state):
    """With an identity episode, the randomized env's physics (the episode's model built
    from the nominal one, substeps of 8 ms + Exp(inf)) is bitwise the plain env's."""
    state = jax.tree.map(lambda x: x[0], reset_state)
    identity = state.domain.episode  # the plain env samples with randomization "none"
    plain = jax.jit(lambda d: env._physics(d))(state.data)
    rand = jax.jit(lambda d, e, k: env_dr._physics(d, e, k))(
        state.data, identity, jax.random.key(3)
    )
    assert np.abs(np.asarray(plain.qpos) - np.asarray(state.data.qpos)).max() > 1e-4  # moved
    np.testing.assert_array_equal(rand.qpos, plain.qpos)
    np.testing.assert_array_equal(rand.qvel, plain.qvel)
    np.testing.assert_array_equal(rand.time, plain.time)


def test_identity_episode_steps_like_the_plain_env(env, step_fn, step_dr_fn, reset_state):
    """The whole step: in the randomized env, an identity episode and a zero action
    (which the action noise leaves at zero: it is multiplicative, or scaled by the
    episode's zero std) give the plain env's step. Only the per-step observation noise
    remains.

    Not bitwise: the randomized step, vmapped, batches the model over environments, which
    changes float32 rounding (1 ulp in the joint targets), and one step of the hand's
    contact solve turns a 1e-7 relative change of the targets into up to ~5e-4 rad
    (measured on the plain env; velocities differ by up to ~0.15 rad/s, so they are not
    compared). The unbatched physics above is bitwise equal."""
    n = reset_state.done.shape[0]
    zeros = jnp.zeros((n, env.action_size))
    # The plain env's episodes are identity (randomization "none").
    e = to_numpy(reset_state.domain.episode)
    for family in IDENTITY.values():
        for field, value in family.items():
            x = getattr(e, field)
            np.testing.assert_array_equal(x, np.broadcast_to(np.asarray(value, x.dtype), x.shape))
    plain = to_numpy(step_fn(reset_state, zeros))
    rand = to_numpy(step_dr_fn(_strong(reset_state), zeros))
    assert step_dr_fn._cache_size() == 1  # the same compiled step as every other test's
    np.testing.assert_allclose(rand.data.ctrl, plain.data.ctrl, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(rand.data.xfrc_applied, 0.0)  # no random force
    np.testing.assert_array_equal(plain.data.xfrc_applied, 0.0)
    np.testing.assert_array_equal(rand.domain.effects.force, 0.0)
    np.testing.assert_allclose(rand.data.qpos, plain.data.qpos, rtol=0, atol=2e-3)
    np.testing.assert_allclose(rand.reward, plain.reward, atol=1e-3)
    np.testing.assert_array_equal(rand.done, plain.done)
    np.testing.assert_array_equal(rand.task.goal, plain.task.goal)
    np.testing.assert_array_equal(rand.task.successes, plain.task.successes)
    # Without noise the policy sees exactly the privileged positions and target rotation
    # (privileged layout: tips 15, object position 3, object quat 4, goal 4, relative 4).
    for s in (plain, to_numpy(reset_state)):
        pol, priv = s.obs["state"], s.obs["privileged_state"]
        np.testing.assert_array_equal(pol[:, :18], priv[:, :18])
        np.testing.assert_array_equal(pol[:, 18:22], priv[:, 26:30])
    # With noise on (even in an identity episode: the per-step part), it does not.
    pol, priv = rand.obs["state"], rand.obs["privileged_state"]
    assert np.all(np.abs(pol[:, :18] - priv[:, :18]).max(axis=1) > 1e-4)
    assert np.all(np.abs(pol[:, 18:22] - priv[:, 26:30]).max(axis=1) > 1e-3)


@pytest.mark.parametrize("which", ["reset", "step"])
def test_observation_noise_acts_on_policy_inputs_only(env_dr, dr_state, dr_stepped, which):
    m = env_dr.mj_model
    s = to_numpy(dr_state) if which == "reset" else dr_stepped
    start = np.asarray(scene.OBJECT_START_POS, np.float32)
    sites = [m.site(name).id for name in FINGERTIP_SITES]
    true_tips = (s.data.site_xpos[:, sites] - start).reshape(-1, 15)
    true_obj = object_pos(s.data.qpos, m).astype(np.float32) - start
    priv, pol = s.obs["privileged_state"], s.obs["state"]
    # The value function's inputs are the simulator's truth, exactly.
    np.testing.assert_array_equal(priv[:, :15], true_tips)
    np.testing.assert_array_equal(priv[:, 15:18], true_obj)
    np.testing.assert_allclose(priv[:, 18:22], object_quat(s.data.qpos, m), atol=1e-6)
    # The policy's are off by millimetres: per coordinate 1 (correlated) + 1 (base marker)
    # + 3 (marker placement) + 2 (per step) mm in quadrature, about 3.9 mm, mean |.| ~3 mm.
    tip_err = np.abs(pol[:, :15] - true_tips)
    assert 1e-3 < tip_err.mean() < 1e-2, tip_err.mean()
    assert tip_err.max() < 0.03
    obj_err = np.abs(pol[:, 15:18] - true_obj)  # 5 + 1 + 1 mm: mean |.| ~4 mm
    assert 5e-4 < obj_err.mean() < 1.5e-2, obj_err.mean()
    # Relative target orientation: 0.1 rad correlated and 0.1 rad per step.
    err = (rot(pol[:, 18:22]) * rot(priv[:, 26:30]).inv()).magnitude()
    assert np.all(err > 1e-3) and np.all(err < 1.0), err


def test_actuate_applies_the_random_force_to_the_object(env_dr, dr_state):
    m = env_dr.mj_model
    body = m.body("object").id
    state = jax.tree.map(lambda x: x[0], dr_state)
    episode = state.domain.episode.replace(force_prob=jnp.ones(()))  # a new force now
    domain = state.domain.replace(episode=episode)
    action = jnp.zeros(env_dr.action_size)
    data, effects = env_dr._actuate(
        state.data, action, domain, jax.random.key(1), jax.random.key(2)
    )
    xfrc = np.asarray(data.xfrc_applied)
    force = np.asarray(effects.force)
    assert np.all(force != 0.0)
    np.testing.assert_array_equal(xfrc[body, :3], force)
    np.testing.assert_array_equal(xfrc[body, 3:], 0.0)  # a force at the centre, no torque
    np.testing.assert_array_equal(np.delete(xfrc, body, axis=0), 0.0)
    # Its scale is this episode's object mass: nominal x mass scale x size scale^3.
    e = to_numpy(episode)
    mass = m.body_mass[body] * e.mass_scale[body] * e.object_scale**3
    assert float(env_dr._object_mass(episode)) == pytest.approx(mass, rel=1e-6)
    assert 0.05 < mass < 0.12


# ---- per-step effects --------------------------------------------------------------------


def test_delayed_actuator_acts_one_step_late(env):
    na, nu = env.action_size, env.mj_model.nu
    quiet = dr.UnmodeledEffects(
        action_noise_uncorrelated=0.0, action_noise_correlated=0.0, action_noise_multiplicative=0.0
    )
    delayed = np.zeros(na, bool)
    delayed[[0, 7]] = True
    episode = _identity_episode(env).replace(delayed=jnp.asarray(delayed))
    effects = dr.initial_effects(na, nu, jnp.zeros(nu), jnp.zeros((5, 3)))
    actions = np.random.default_rng(0).uniform(-1, 1, (6, na)).astype(np.float32)
    previous = np.zeros(na, np.float32)
    for t, a in enumerate(actions):
        out, effects = dr.perturb_action(jax.random.key(t), jnp.asarray(a), episode, effects, quiet)
        np.testing.assert_array_equal(out, np.where(delayed, previous, a))
        np.testing.assert_array_equal(effects.previous_action, a)
        previous = a


def test_action_noise_magnitudes(env):
    """Table 8: per-step additive noise 5% of the range (std 0.1), multiplicative 1.5%,
    per-episode offset added; the result is clipped to [-1, 1]."""
    na, nu = env.action_size, env.mj_model.nu
    cfg = dr.UnmodeledEffects()
    offset = np.linspace(-0.05, 0.05, na).astype(np.float32)
    episode = _identity_episode(env).replace(
        action_offset=jnp.asarray(offset), action_noise_std=jnp.asarray(0.1, jnp.float32)
    )
    effects = dr.initial_effects(na, nu, jnp.zeros(nu), jnp.zeros((5, 3)))
    keys = jax.random.split(jax.random.key(3), 20000)

    def perturb(action, episode):
        fn = jax.vmap(lambda k: dr.perturb_action(k, action, episode, effects, cfg)[0])
        return np.asarray(fn(keys), np.float64)

    out = perturb(jnp.zeros(na), episode)  # multiplicative noise has nothing to scale
    np.testing.assert_allclose(out.mean(axis=0), offset, atol=0.004)
    np.testing.assert_allclose(out.std(axis=0), 0.1, rtol=0.03)
    # Multiplicative only: a = 0.5 becomes 0.5 (1 + N(0, 0.015)).
    quiet = episode.replace(action_offset=jnp.zeros(na), action_noise_std=jnp.zeros(()))
    out = perturb(jnp.full(na, 0.5), quiet)
    np.testing.assert_allclose(out.std(axis=0), 0.5 * 0.015, rtol=0.03)
    out = perturb(jnp.full(na, 0.99), episode)
    assert out.max() == 1.0 and np.mean(out == 1.0) > 0.3  # clipped


def test_backlash_dead_band_on_reversal(env):
    """Width w = 0.2 on actuator 0 (and none on the others). Hand-worked: going up, the
    seen target trails the command by w/2 = 0.1; after the reversal at 0.5 it holds at
    0.4 until the command has come back down by w (to 0.3), then trails by w/2 again."""
    nu = env.mj_model.nu
    width = np.zeros(nu, np.float32)
    width[0] = 0.2
    episode = _identity_episode(env).replace(backlash=jnp.asarray(width))
    effects = dr.initial_effects(env.action_size, nu, jnp.zeros(nu), jnp.zeros((5, 3)))
    commands = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1, 0.2]
    expected = [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.3, 0.2, 0.2]
    for x, y in zip(commands, expected, strict=True):
        command = jnp.full(nu, x, jnp.float32)
        seen, effects = dr.backlash(command, effects, episode)
        assert float(seen[0]) == pytest.approx(y, abs=1e-6), (x, y)
        np.testing.assert_array_equal(seen[1:], command[1:])  # no play: no lag
        np.testing.assert_array_equal(effects.command, command)
        np.testing.assert_array_equal(effects.backlash_target, seen)
        # The paper's slack state s = 2 (x - y) / w stays in [-1, 1].
        assert abs(2 * (x - float(seen[0])) / 0.2) <= 1 + 1e-5


def test_random_force_decays_and_appears_with_probability_p(env):
    cfg = dr.UnmodeledEffects()
    mass = 0.07
    episode = _identity_episode(env)
    nu, na = env.mj_model.nu, env.action_size
    start = dr.initial_effects(na, nu, jnp.zeros(nu), jnp.zeros((5, 3)))

    def run(p, force0, steps, seed):
        e = episode.replace(force_prob=jnp.asarray(p, jnp.float32))

        def body(effects, key):
            effects = dr.update_force(key, effects, e, jnp.asarray(mass), cfg)
            return effects, effects.force

        keys = jax.random.split(jax.random.key(seed), steps)
        effects = start.replace(force=jnp.asarray(force0, jnp.float32))
        return np.asarray(jax.lax.scan(body, effects, keys)[1], np.float64)

    # p = 0: a force decays by 0.99 per control step.
    f0 = np.array([1.0, -2.0, 0.5])
    forces = run(0.0, f0, 50, 0)
    np.testing.assert_allclose(forces[-1], f0 * 0.99**50, rtol=1e-5)
    np.testing.assert_allclose(forces[9], f0 * 0.99**10, rtol=1e-5)
    # p = 0.05: new forces appear in about 5% of the steps, N(0, 1 m/s^2 x mass) per axis.
    p, steps = 0.05, 20000
    forces = run(p, np.zeros(3), steps, 1).astype(np.float32)
    prev = np.vstack([np.zeros((1, 3), np.float32), forces[:-1]])
    kick = forces - np.float32(0.99) * prev  # the step's new force (exactly 0 if none)
    hit = np.any(kick != 0.0, axis=1)
    assert stats.binomtest(int(hit.sum()), steps, p).pvalue > P_MIN, hit.sum()
    assert np.std(kick[hit]) == pytest.approx(mass, rel=0.1)
    assert stats.kstest(kick[hit].ravel() / mass, "norm").pvalue > P_MIN


def test_marker_dropout_freezes_readings(env):
    """Fingertip markers drop out at 0.2 / s for 1 s = round(1 / 0.08) = 12 control steps,
    during which their reading is frozen at the last one seen."""
    cfg = dr.ObservationNoise()
    dt, steps = 0.08, 4000
    duration = round(cfg.dropout_duration / dt)
    assert duration == 12
    episode = _identity_episode(env)
    nu = env.mj_model.nu
    base = np.random.default_rng(0).uniform(-0.1, 0.1, (5, 3)).astype(np.float32)
    start = dr.initial_effects(env.action_size, nu, jnp.zeros(nu), jnp.asarray(base))
    frames = jnp.broadcast_to(jnp.eye(3), (5, 3, 3))
    key = jax.random.key(7)

    def body(effects, t):
        truth = dr.PolicyReadings(
            fingertips=jnp.asarray(base) + 1e-3 * t,  # moving: 1 mm per step
            object_pos=jnp.zeros(3),
            object_quat=jnp.array([1.0, 0.0, 0.0, 0.0]),
        )
        seen, effects = dr.observe(
            jax.random.fold_in(key, t), truth, frames, episode, effects, cfg, dt
        )
        return effects, (truth.fingertips, seen.fingertips, seen.object_quat, effects.dropout_left)

    _, (truth, tips, quats, left) = jax.lax.scan(body, start, jnp.arange(steps))
    truth, tips, quats, left = (np.asarray(x) for x in (truth, tips, quats, left))
    previous = np.concatenate([base[None], tips[:-1]])
    frozen = np.all(tips == previous, axis=2)  # [steps, 5]
    # The occlusion counter marks exactly the frozen readings.
    np.testing.assert_array_equal(left > 0, frozen)

    runs, starts, complete = [], 0, []
    for k in range(5):
        f = np.concatenate([[False], frozen[:, k], [False]])
        edges = np.flatnonzero(np.diff(f.astype(int)))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            runs.append(b - a)
            if b < steps:
                complete.append(b - a)
    complete = np.array(complete)
    # Every dropout lasts `duration` steps (back-to-back dropouts make multiples of it).
    assert len(complete) > 100
    assert np.all(complete % duration == 0), sorted(set(complete))
    assert np.mean(complete == duration) > 0.9
    starts = int(sum(r // duration + (r % duration > 0) for r in runs))
    eligible = steps * 5 - int(frozen.sum()) + starts  # steps that began unoccluded
    assert stats.binomtest(starts, eligible, 0.2 * dt).pvalue > P_MIN, (starts, eligible)
    # Visible readings carry the per-step noise only (this episode has no offsets): 2 mm.
    visible = ~frozen
    noise = (tips - truth)[visible].ravel().astype(np.float64)
    assert np.std(noise) == pytest.approx(0.002, rel=0.03)
    assert abs(noise.mean()) < 1e-4
    # And the object's orientation reading: a N(0, 0.1) rotation vector every step.
    rotvec = rot(quats).as_rotvec()
    assert np.std(rotvec) == pytest.approx(0.1, rel=0.03)


# ---- physical consequences (native MuJoCo) ---------------------------------------------------


def _free_fall(m, steps, force=(0.0, 0.0, 0.0), pos=(1.0, 0.87, 1.0)):
    """The object released at rest high above the hand; its position after `steps`."""
    o, body = object_qpos_adr(m), m.body("object").id
    d = mujoco.MjData(m)
    d.qpos[o : o + 7] = [*pos, 1.0, 0.0, 0.0, 0.0]
    d.xfrc_applied[body, :3] = force
    for _ in range(steps):
        mujoco.mj_step(m, d)
        assert d.ncon == 0  # in the air
    return d.qpos[o : o + 3].copy()


def test_random_force_accelerates_the_free_object():
    m = scene.build_model()
    mass = m.body_mass[m.body("object").id]
    force = np.array([1.0, -0.5, 0.0]) * mass  # 1 m/s^2 x mass, as a new random force
    # 0.08 s (one control step) in 100 steps of 0.8 ms: Euler's error is 1%.
    m.opt.timestep = 0.0008
    displacement = _free_fall(m, 100, force) - _free_fall(m, 100)
    t = 0.08
    np.testing.assert_allclose(displacement, force / mass * t**2 / 2, rtol=0.02, atol=1e-9)
    # At the scene's 8 ms steps, semi-implicit Euler's exact discrete answer, n (n+1) / 2
    # steps of a dt^2.
    m.opt.timestep = 0.008
    displacement = _free_fall(m, 10, force) - _free_fall(m, 10)
    np.testing.assert_allclose(displacement, force / mass * 0.008**2 * 55, rtol=1e-6, atol=1e-12)


def test_heavier_object_falls_the_same_but_weighs_more():
    """Native MuJoCo precomputes the (constant) mass matrix of a free body, so an edited
    mass needs mj_setConst there; MJX recomputes it from body_mass every step."""
    m = scene.build_model()
    body, v = m.body("object").id, object_dof_adr(m)
    mass0, inertia0 = m.body_mass[body], m.body_inertia[body].copy()
    falls, holds, lifted = [], [], []
    for scale in (1.0, 1.5):
        m.body_mass[body] = mass0 * scale
        m.body_inertia[body] = inertia0 * scale
        mujoco.mj_setConst(m, mujoco.MjData(m))
        falls.append(_free_fall(m, 25))  # 0.2 s
        d = mujoco.MjData(m)
        d.qpos[object_qpos_adr(m) + 2] = 1.0
        mujoco.mj_forward(m, d)
        holds.append(d.qfrc_bias[v + 2])  # the upward force that cancels gravity
        # Push up with 1.2 x the nominal weight for 0.2 s.
        end = _free_fall(m, 25, force=(0.0, 0.0, 1.2 * 9.81 * mass0))
        lifted.append(end[2] - 1.0)
    np.testing.assert_allclose(falls[0], falls[1], rtol=0, atol=1e-12)
    assert falls[0][2] < 1.0 - 0.15  # it did fall (g t^2 / 2 = 0.196 m)
    assert holds[0] == pytest.approx(9.81 * mass0, rel=1e-9)
    assert holds[1] / holds[0] == pytest.approx(1.5, rel=1e-9)
    assert lifted[0] > 0.0 > lifted[1]  # the nominal object rises, the heavy one sinks


BLOCK_ALONE = """
<mujoco>
  <option timestep="0.008" integrator="Euler"/>
  <worldbody>
    <body name="object" pos="0 0 1">
      <freejoint name="object:joint"/>
      <geom name="object" type="box" size=".025 .025 .025" density="567"/>
    </body>
  </worldbody>
</mujoco>
"""


def test_episode_model_mass_in_mjx_free_fall():
    """Through `episode_model` and MJX (a block alone, so the compile is small): mass and
    size scales leave free fall unchanged, and a force accelerates the object by F / m
    with the episode's mass m = nominal x mass scale x size scale^3."""
    from mujoco import mjx

    m = mujoco.MjModel.from_xml_string(BLOCK_ALONE)
    info = dr.ModelInfo(
        nbody=m.nbody,
        npair=m.npair,
        nv=m.nv,
        nu=m.nu,
        njnt=m.njnt,
        na=0,
        hand_dofs=np.zeros(0, int),
        hand_joints=np.zeros(0, int),
        object_body=1,
        object_geom=0,
        object_mass=float(m.body_mass[1]),
        object_scalable=True,
    )
    none = dr.preset("none")
    identity = dr.sample_episode(jax.random.key(0), none, dr.initial_ranges(none), info)
    nominal = mjx.put_model(m)

    @jax.jit
    def fall(episode, force):
        model = dr.episode_model(nominal, episode, info)
        data = mjx.make_data(model).replace(qpos=jnp.asarray(m.qpos0, jnp.float32))
        data = data.replace(xfrc_applied=data.xfrc_applied.at[1, :3].set(force))
        data = jax.lax.fori_loop(0, 25, lambda _, d: mjx.step(model, d), data)
        return data.qpos[:3]

    push = jnp.array([0.05, 0.0, 0.0], jnp.float32)
    moved = {}
    for mass, size in [(1.0, 1.0), (1.5, 1.0), (1.2, 1.05)]:
        episode = identity.replace(
            mass_scale=jnp.array([1.0, mass], jnp.float32),
            object_scale=jnp.asarray(size, jnp.float32),
        )
        still = np.asarray(fall(episode, jnp.zeros(3)), np.float64)
        pushed = np.asarray(fall(episode, push), np.float64)
        # g dt^2 n (n + 1) / 2 with semi-implicit Euler: 25 steps of 8 ms.
        assert still[2] == pytest.approx(1.0 - 9.81 * 0.008**2 * 325, abs=1e-5)
        moved[(mass, size)] = pushed[0] - still[0]
    assert fall._cache_size() == 1
    m0 = m.body_mass[1]
    for (mass, size), dx in moved.items():
        expected = 0.05 / (m0 * mass * size**3) * 0.008**2 * 325
        assert dx == pytest.approx(expected, rel=1e-4), (mass, size)


def test_friction_holds_block_on_tilted_palm():
    """Gravity tilted by 40 degrees towards the wrist (+y; tan 40 = 0.84) inclines the
    palm. With the two palm contact pairs' friction scaled by 0.5 (mu = 0.5) the block
    slides off the hand within 1 s; scaled by 2.0 (mu = 2) it stays, moving only with the
    hand's own sag (about 1 cm)."""
    distances = {}
    for scale in (0.5, 2.0):
        m = scene.build_model()
        palm = {m.geom("robot0:C_palm0").id, m.geom("robot0:C_palm1").id}
        pairs = [i for i in range(m.npair) if {m.pair_geom1[i], m.pair_geom2[i]} & palm]
        assert len(pairs) == 2
        m.pair_friction[pairs] *= scale
        d = mujoco.MjData(m)
        o = object_qpos_adr(m)
        for _ in range(125):  # 1 s to land on the palm under normal gravity
            mujoco.mj_step(m, d)
        landed = d.qpos[o : o + 3].copy()
        assert landed[2] == pytest.approx(0.167, abs=0.005)
        tilt = np.deg2rad(40.0)
        m.opt.gravity[:] = 9.81 * np.array([0.0, np.sin(tilt), -np.cos(tilt)])
        for _ in range(125):  # 1 s on the incline
            mujoco.mj_step(m, d)
        distances[scale] = np.linalg.norm(d.qpos[o : o + 3] - landed)
    assert distances[0.5] > 0.1, distances
    assert distances[2.0] < 0.03, distances
