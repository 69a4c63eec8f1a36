"""Automatic domain randomization (dexjax.adr): start, boundary sampling, pinning, range
updates (hand-worked numbers), jit behaviour, and the environment reading ranges as data.

Boundary b = 2 i + side refers to parameter RANGE_NAMES[i], side 0 = low end, 1 = high.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx
from reference import object_dof_adr, object_qpos_adr, to_numpy
from scipy import stats

from dexjax import adr
from dexjax import randomization as dr
from dexjax.env import make_env

NAMES = dr.RANGE_NAMES
# Written out from the paper's Tables 1 and 8 (scalar stds / maxima are ranges (0, value)).
PAPER = {
    "object_size": (0.95, 1.05),
    "mass": (0.5, 1.5),
    "friction": (0.7, 1.3),
    "damping": (0.3, 3.0),
    "actuator_gain": (0.75, 1.5),
    "joint_limit_std": (0.0, 0.15),
    "gravity_std": (0.0, 0.4),
    "action_noise_uncorrelated": (0.0, 0.05),
    "backlash_max": (0.0, 0.05),
    "force_prob": (0.001, 0.1),
}
# The unrandomized world: scales 1, noises 0, the smallest force probability.
NOMINAL = {
    "object_size": 1.0,
    "mass": 1.0,
    "friction": 1.0,
    "damping": 1.0,
    "actuator_gain": 1.0,
    "joint_limit_std": 0.0,
    "gravity_std": 0.0,
    "action_noise_uncorrelated": 0.0,
    "backlash_max": 0.0,
    "force_prob": 0.001,
}
LOW_FIXED = (
    "joint_limit_std",
    "gravity_std",
    "action_noise_uncorrelated",
    "backlash_max",
    "force_prob",
)

CONFIG = adr.ADRConfig(
    enabled=True, buffer_size=4, threshold_low=5.0, threshold_high=20.0, step_fraction=0.1
)
RAND = dr.RandomizationConfig()


def b(name: str, side: str) -> int:
    """Boundary index of a parameter's "low" or "high" end."""
    return 2 * NAMES.index(name) + (side == "high")


def _state(**overrides):
    """An ADR state with the paper's ranges, some ends replaced: name=(low, high)."""
    low = dict({n: v[0] for n, v in PAPER.items()}, **{k: v[0] for k, v in overrides.items()})
    high = dict({n: v[1] for n, v in PAPER.items()}, **{k: v[1] for k, v in overrides.items()})
    ranges = dr.Ranges(
        low=jnp.array([low[n] for n in NAMES], jnp.float32),
        high=jnp.array([high[n] for n in NAMES], jnp.float32),
    )
    n = 2 * len(NAMES)
    return adr.ADRState(ranges=ranges, sums=jnp.zeros(n), counts=jnp.zeros(n, jnp.int32))


def _update(state, boundary, performance, done=None, config=CONFIG):
    boundary = np.asarray(boundary, np.int32)
    done = np.ones(boundary.shape) if done is None else np.asarray(done)
    return adr.update(
        state,
        config,
        RAND,
        jnp.asarray(boundary),
        jnp.asarray(performance, jnp.float32),
        jnp.asarray(done, jnp.float32),
    )


def _ranges(state):
    low, high = np.asarray(state.ranges.low), np.asarray(state.ranges.high)
    return {n: (float(low[i]), float(high[i])) for i, n in enumerate(NAMES)}


def _assert_ranges(state, expected):
    got = _ranges(state)
    for name, (lo, hi) in expected.items():
        assert got[name] == pytest.approx((lo, hi), abs=1e-6), name


# ---- start, boundaries, pinning --------------------------------------------------------------


def test_paper_ranges():
    ranges = dr.initial_ranges(RAND)
    for i, name in enumerate(NAMES):
        assert (float(ranges.low[i]), float(ranges.high[i])) == pytest.approx(PAPER[name]), name


def test_init_starts_at_nominal_with_zero_width():
    state = adr.init(adr.ADRConfig(enabled=True), RAND)
    for name, (lo, hi) in _ranges(state).items():
        assert lo == hi == pytest.approx(NOMINAL[name]), name
    np.testing.assert_array_equal(state.sums, 0.0)
    np.testing.assert_array_equal(state.counts, 0)
    assert state.sums.shape == state.counts.shape == (2 * len(NAMES),)
    # Or from the paper's ranges.
    paper = adr.init(adr.ADRConfig(enabled=True, start_at_nominal=False), RAND)
    _assert_ranges(paper, PAPER)


def test_sample_boundary():
    keys = jax.random.split(jax.random.key(0), 20000)
    off = jax.vmap(lambda k: adr.sample_boundary(k, adr.ADRConfig(enabled=False)))(keys)
    np.testing.assert_array_equal(off, -1)

    config = adr.ADRConfig(enabled=True, boundary_prob=0.3)
    got = np.asarray(jax.vmap(lambda k: adr.sample_boundary(k, config))(keys))
    assert got.dtype == np.int32
    assert stats.binomtest(int((got == -1).sum()), len(got), 0.7).pvalue > 1e-3
    used = got[got >= 0]
    assert used.max() < 2 * len(NAMES)
    fixed = {b(n, "low") for n in LOW_FIXED}
    assert not fixed & set(used.tolist())
    # The 15 movable boundaries, equally often.
    counts = np.bincount(used, minlength=2 * len(NAMES))
    movable = [i for i in range(2 * len(NAMES)) if i not in fixed]
    assert len(movable) == 15
    assert stats.chisquare(counts[movable]).pvalue > 1e-3

    always = adr.ADRConfig(enabled=True, boundary_prob=1.0)
    assert np.all(np.asarray(jax.vmap(lambda k: adr.sample_boundary(k, always))(keys[:500])) >= 0)


def test_boundary_mask_matches_high_only():
    mask = adr.boundary_mask()
    for name in NAMES:
        assert mask[b(name, "high")]
        assert mask[b(name, "low")] == (name not in LOW_FIXED), name


def test_pin_fixes_exactly_one_parameter_at_the_chosen_end():
    low = np.arange(len(NAMES), dtype=np.float32)
    ranges = dr.Ranges(low=jnp.asarray(low), high=jnp.asarray(low + 0.5))
    for boundary in range(2 * len(NAMES)):
        i, side = divmod(boundary, 2)
        value = low[i] + 0.5 * side
        pinned = adr.pin(ranges, jnp.int32(boundary))
        expected_low, expected_high = low.copy(), low + 0.5
        expected_low[i] = expected_high[i] = value
        np.testing.assert_array_equal(pinned.low, expected_low)
        np.testing.assert_array_equal(pinned.high, expected_high)
    same = adr.pin(ranges, jnp.int32(-1))
    np.testing.assert_array_equal(same.low, low)
    np.testing.assert_array_equal(same.high, low + 0.5)


def test_pinned_boundary_sets_the_sampled_parameter(env):
    ranges = dr.initial_ranges(RAND)
    keys = jax.random.split(jax.random.key(1), 64)
    cases = {
        ("mass", "high"): lambda e: e.mass_scale,
        ("mass", "low"): lambda e: e.mass_scale,
        ("object_size", "low"): lambda e: e.object_scale,
        ("friction", "high"): lambda e: e.friction_scale,
        ("damping", "low"): lambda e: e.damping_scale[:, env.idx.hand_qvel],
        ("actuator_gain", "high"): lambda e: e.gain_scale,
        ("force_prob", "high"): lambda e: e.force_prob,
    }
    for (name, side), read in cases.items():
        pinned = adr.pin(ranges, jnp.int32(b(name, side)))
        e = jax.vmap(lambda k, p=pinned: dr.sample_episode(k, RAND, p, env.dr_info))(keys)
        value = PAPER[name][side == "high"]
        np.testing.assert_allclose(read(e), value, rtol=1e-6, err_msg=name)
        # The other parameters are still drawn from their ranges.
        if name != "friction":
            assert np.ptp(np.asarray(e.friction_scale)) > 0.1


# ---- update ------------------------------------------------------------------------------


def test_update_widens_on_high_performance():
    state = adr.init(CONFIG, RAND)  # at nominal
    perf_high = [20.0, 25.0, 30.0, 25.0]  # mean 25 >= 20
    perf_edge = [20.0, 20.0, 20.0, 20.0]  # mean exactly 20 counts as high
    boundary, perf = [], []
    for name, side, p in [
        ("mass", "high", perf_high),
        ("mass", "low", perf_edge),
        ("damping", "high", perf_high),
        ("force_prob", "high", perf_high),
        ("joint_limit_std", "high", perf_high),
    ]:
        boundary += [b(name, side)] * 4
        perf += p
    # One update over a [time, env] batch of finished episodes.
    new = _update(state, np.reshape(boundary, (4, 5)), np.reshape(perf, (4, 5)))
    # Each move is 0.1 x the paper's width on that side.
    _assert_ranges(
        new,
        {
            "mass": (1.0 - 0.1, 1.0 + 0.1),
            "damping": (1.0, 1.0 + 0.27),
            "force_prob": (0.001, 0.001 + 0.0099),
            "joint_limit_std": (0.0, 0.015),
            "friction": (1.0, 1.0),
        },
    )
    np.testing.assert_array_equal(new.counts, 0)  # every buffer that decided is emptied
    np.testing.assert_array_equal(new.sums, 0.0)


def test_update_narrows_on_low_performance_and_holds_in_between():
    state = adr.init(adr.ADRConfig(start_at_nominal=False), RAND)  # the paper's ranges
    cases = [
        ("mass", "low", [3.0, 3.0, 3.0, 3.0]),  # mean 3 < 5: narrow
        ("mass", "high", [4.0, 5.0, 5.0, 5.6]),  # mean 4.9 < 5: narrow
        ("gravity_std", "high", [0.0, 0.0, 0.0, 0.0]),  # narrow
        ("friction", "high", [5.0, 5.0, 5.0, 5.0]),  # mean exactly 5: hold
        ("damping", "low", [10.0, 12.0, 8.0, 10.0]),  # between: hold
    ]
    boundary = [b(n, s) for n, s, p in cases for _ in p]
    perf = [x for _, _, p in cases for x in p]
    new = _update(state, boundary, perf)
    _assert_ranges(
        new,
        {
            "mass": (0.5 + 0.1, 1.5 - 0.1),
            "gravity_std": (0.0, 0.4 - 0.04),
            "friction": (0.7, 1.3),
            "damping": (0.3, 3.0),
        },
    )
    # A decision was made at every boundary, moving or not: their buffers start over.
    np.testing.assert_array_equal(new.counts, 0)
    np.testing.assert_array_equal(new.sums, 0.0)


def test_update_accumulates_until_the_buffer_is_full():
    state = adr.init(CONFIG, RAND)
    mass_high = b("mass", "high")
    state = _update(state, [mass_high] * 3, [30.0, 30.0, 30.0])
    assert int(state.counts[mass_high]) == 3 and float(state.sums[mass_high]) == 90.0
    assert np.count_nonzero(np.asarray(state.counts)) == 1
    _assert_ranges(state, {"mass": (1.0, 1.0)})
    # The fourth episode fills it; the mean is over all four: (90 + 0) / 4 = 22.5 >= 20.
    state = _update(state, [mass_high], [0.0])
    _assert_ranges(state, {"mass": (1.0, 1.1)})
    assert int(state.counts[mass_high]) == 0 and float(state.sums[mass_high]) == 0.0
    # An over-full buffer decides on the mean of everything collected: (6 x 4) / 6 < 5.
    state = _update(state, [mass_high] * 6, [4.0] * 6)
    _assert_ranges(state, {"mass": (1.0, 1.0)})


def test_update_ignores_unpinned_and_unfinished_episodes():
    state = adr.init(CONFIG, RAND)
    mass_high = b("mass", "high")
    boundary = [-1, -1, mass_high, mass_high, mass_high, -1]
    done = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    perf = [50.0, 50.0, 50.0, 50.0, 7.0, 50.0]
    new = _update(state, boundary, perf, done)
    expected_counts = np.zeros(2 * len(NAMES), np.int32)
    expected_counts[mass_high] = 1
    np.testing.assert_array_equal(new.counts, expected_counts)
    assert float(new.sums[mass_high]) == 7.0
    assert float(new.sums.sum()) == 7.0
    _assert_ranges(new, {n: (v, v) for n, v in NOMINAL.items()})


def test_update_never_crosses_nominal_or_limits():
    near = _state(
        mass=(0.95, 1.05),
        friction=(0.15, 4.95),
        joint_limit_std=(0.0, 0.49),
        force_prob=(0.001, 0.495),
    )
    low_perf, high_perf = [0.0] * 4, [50.0] * 4
    boundary, perf = [], []
    for name, side, p in [
        ("mass", "low", low_perf),  # 0.95 + 0.1 would pass 1.0
        ("mass", "high", low_perf),  # 1.05 - 0.1 would pass 1.0
        ("friction", "low", high_perf),  # 0.15 - 0.06 would pass the limit 0.1
        ("friction", "high", high_perf),  # 4.95 + 0.06 would pass 5.0
        ("joint_limit_std", "high", high_perf),  # 0.49 + 0.015 would pass 0.5
        ("force_prob", "high", high_perf),  # 0.495 + 0.0099 would pass 0.5
        ("force_prob", "low", high_perf),  # nominal 0.001 is also its lower limit
    ]:
        boundary += [b(name, side)] * 4
        perf += p
    new = _update(near, boundary, perf)
    _assert_ranges(
        new,
        {
            "mass": (1.0, 1.0),
            "friction": (0.1, 5.0),
            "joint_limit_std": (0.0, 0.5),
            "force_prob": (0.001, 0.5),
        },
    )
    # Narrowing at nominal stays at nominal.
    start = adr.init(CONFIG, RAND)
    new = _update(start, [b("mass", "low")] * 4 + [b("backlash_max", "high")] * 4, [0.0] * 8)
    _assert_ranges(new, {"mass": (1.0, 1.0), "backlash_max": (0.0, 0.0)})


def test_update_never_moves_a_fixed_low_end():
    # Even if episodes were reported for it, the low end of a std / maximum stays at 0.
    state = _state(gravity_std=(0.0, 0.2))
    new = _update(state, [b("gravity_std", "low")] * 4, [100.0] * 4)
    _assert_ranges(new, {"gravity_std": (0.0, 0.2)})


def test_update_is_jitted_once_for_any_ranges():
    f = jax.jit(lambda s, bnd, p, d: adr.update(s, CONFIG, RAND, bnd, p, d))
    bnd = jnp.array([b("mass", "high")] * 4 + [-1] * 4, jnp.int32)
    perf = jnp.full(8, 30.0)
    done = jnp.ones(8)
    first = adr.init(CONFIG, RAND)
    second = _update(_state(mass=(0.7, 1.2)), [b("friction", "low")] * 2, [3.0, 4.0])
    for state in (first, second):
        got = f(state, bnd, perf, done)
        ref = adr.update(state, CONFIG, RAND, bnd, perf, done)
        for a, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-6)
    assert f._cache_size() == 1
    # The second state's mass range widened from (0.7, 1.2) to (0.7, 1.3), and its
    # friction buffer kept accumulating.
    got = f(second, bnd, perf, done)
    _assert_ranges(got, {"mass": (0.7, 1.3)})
    assert int(got.counts[b("friction", "low")]) == 2


def test_metrics():
    state = _state()
    m = adr.metrics(state)
    for name, (lo, hi) in PAPER.items():
        assert float(m[f"adr/{name}_low"]) == pytest.approx(lo)
        assert float(m[f"adr/{name}_high"]) == pytest.approx(hi)
    widths = np.array([hi - lo for lo, hi in PAPER.values()])
    assert float(m["adr/entropy"]) == pytest.approx(np.mean(np.log(widths)), rel=1e-5)
    # Zero-width ranges count as 1e-6 wide.
    nominal = adr.metrics(adr.init(CONFIG, RAND))
    assert float(nominal["adr/entropy"]) == pytest.approx(np.log(1e-6), rel=1e-5)


# ---- the environment -------------------------------------------------------------------------


def test_env_with_adr_starts_unrandomized_and_pins_boundaries():
    """With ADR on, `_new_domain` (what reset and the automatic reset call) pins the
    boundary it samples; no physics needed."""
    env = make_env(settle_steps=1, adr=adr.ADRConfig(enabled=True, boundary_prob=1.0))
    start = adr.ADRState(ranges=env.initial_ranges(), sums=None, counts=None)
    _assert_ranges(start, {name: (v, v) for name, v in NOMINAL.items()})
    data = mjx.make_data(env.mjx_model)
    keys = jax.random.split(jax.random.key(2), 400)

    def domains(ranges):
        return to_numpy(jax.jit(jax.vmap(lambda k: env._new_domain(k, ranges, data)))(keys))

    # At ADR's start every physics parameter is nominal and no unmodeled noise is left.
    d = domains(env.initial_ranges())
    e = d.episode
    for field in ("object_scale", "mass_scale", "friction_scale", "damping_scale", "gain_scale"):
        np.testing.assert_allclose(getattr(e, field), 1.0, rtol=1e-6, err_msg=field)
    np.testing.assert_array_equal(e.joint_limit_offset, 0.0)
    np.testing.assert_array_equal(e.gravity, np.tile(np.float32([0.0, 0.0, -9.81]), (400, 1)))
    np.testing.assert_array_equal(e.backlash, 0.0)
    np.testing.assert_array_equal(e.action_noise_std, 0.0)
    np.testing.assert_allclose(e.force_prob, 0.001, rtol=1e-6)
    # From the paper's ranges: each episode's boundary parameter sits at that end, and
    # the domain keeps the unpinned ranges.
    paper = dr.initial_ranges(RAND)
    d = domains(paper)
    np.testing.assert_array_equal(d.ranges.low, np.tile(np.asarray(paper.low), (400, 1)))
    assert np.all(d.adr_boundary >= 0)
    mass_low, mass_high = b("mass", "low"), b("mass", "high")
    assert np.sum(d.adr_boundary == mass_low) > 5 and np.sum(d.adr_boundary == mass_high) > 5
    for i, boundary in enumerate(d.adr_boundary):
        mass = d.episode.mass_scale[i]
        if boundary == mass_low:
            np.testing.assert_array_equal(mass, 0.5)
        elif boundary == mass_high:
            np.testing.assert_array_equal(mass, 1.5)
        else:
            assert np.ptp(mass) > 0.3


def _drop_all(state, m):
    """Every object placed at rest below the drop height: all episodes end next step."""
    o, v = object_qpos_adr(m), object_dof_adr(m)
    qpos, qvel = np.array(state.data.qpos), np.array(state.data.qvel)
    qpos[:, o : o + 7] = [1.0, 0.87, 0.05, 1.0, 0.0, 0.0, 0.0]
    qvel[:, v : v + 6] = 0.0
    return state.replace(data=state.data.replace(qpos=jnp.asarray(qpos), qvel=jnp.asarray(qvel)))


def test_env_reads_ranges_as_data(env_dr, step_dr_fn, dr_state):
    n = dr_state.done.shape[0]
    zeros = jnp.zeros((n, env_dr.action_size))
    m = env_dr.mj_model
    # The paper's ranges first.
    after = to_numpy(step_dr_fn(_drop_all(dr_state, m), zeros))
    np.testing.assert_array_equal(after.done, 1.0)
    assert np.all(after.domain.episode.mass_scale[:, 1:] < 1.5)
    # Then narrow custom ranges for every environment.
    low, high = np.array(dr_state.domain.ranges.low), np.array(dr_state.domain.ranges.high)
    custom = {"mass": (2.0, 2.0), "friction": (0.5, 0.5), "backlash_max": (0.0, 0.0)}
    for name, (lo, hi) in custom.items():
        low[:, NAMES.index(name)], high[:, NAMES.index(name)] = lo, hi
    ranges = dr.Ranges(low=jnp.asarray(low), high=jnp.asarray(high))
    state = _drop_all(dr_state.replace(domain=dr_state.domain.replace(ranges=ranges)), m)
    after = to_numpy(step_dr_fn(state, zeros))
    np.testing.assert_array_equal(after.done, 1.0)
    e = after.domain.episode
    np.testing.assert_array_equal(e.mass_scale, 2.0)
    np.testing.assert_array_equal(e.friction_scale, 0.5)
    np.testing.assert_array_equal(e.backlash, 0.0)
    assert np.ptp(e.damping_scale) > 0.5  # the others still from the paper's ranges
    np.testing.assert_array_equal(after.domain.ranges.low, low)
    np.testing.assert_array_equal(after.domain.ranges.high, high)
    # The heavier world shows in the env's object mass: 2 x nominal x size^3.
    body = m.body("object").id
    for i in range(n):
        mass = env_dr._object_mass(jax.tree.map(lambda x, i=i: jnp.asarray(x[i]), e))
        expected = 2.0 * m.body_mass[body] * e.object_scale[i] ** 3
        assert float(mass) == pytest.approx(expected, rel=1e-6)
    # New ranges are data: the step was not compiled again.
    assert step_dr_fn._cache_size() == 1
