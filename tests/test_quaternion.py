"""dexjax.quaternion against scipy's Rotation (scipy stores quaternions as x, y, z, w)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import angle, rot, wxyz
from scipy import stats
from scipy.spatial.transform import Rotation

from dexjax import quaternion as quat

N = 64


@pytest.fixture(scope="module")
def rotations():
    a = Rotation.random(N, random_state=1)
    b = Rotation.random(N, random_state=2)
    return a, b


def same_rotation(q_wxyz, r: Rotation, atol=1e-5):
    """q equals r's quaternion up to the sign (q and -q are the same rotation)."""
    q = np.asarray(q_wxyz, np.float64)
    ref = wxyz(r)
    sign = np.sign(np.sum(q * ref, axis=-1, keepdims=True))
    np.testing.assert_allclose(q, sign * ref, atol=atol)


def test_multiply_matches_scipy_composition(rotations):
    a, b = rotations
    got = quat.multiply(jnp.asarray(wxyz(a)), jnp.asarray(wxyz(b)))
    # scipy: (a * b) applies b first, then a -- the Hamilton product a b.
    same_rotation(got, a * b)


def test_multiply_hand_worked_example():
    # 90 degrees about z, then 90 degrees about x: i * k = -j in Hamilton's convention.
    s = np.sqrt(0.5)
    qz = jnp.array([s, 0, 0, s])
    qx = jnp.array([s, s, 0, 0])
    np.testing.assert_allclose(quat.multiply(qx, qz), [0.5, 0.5, -0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(
        quat.multiply(jnp.array([0.0, 1, 0, 0]), jnp.array([0.0, 0, 0, 1])),
        [0, 0, -1, 0],
        atol=1e-7,
    )


def test_conjugate_is_inverse(rotations):
    a, _ = rotations
    got = quat.conjugate(jnp.asarray(wxyz(a)))
    same_rotation(got, a.inv())
    np.testing.assert_allclose(got[:, 0], wxyz(a)[:, 0], atol=1e-7)


def test_rotate_matches_scipy_apply(rotations):
    a, _ = rotations
    v = np.random.default_rng(0).normal(size=(N, 3))
    got = quat.rotate(jnp.asarray(wxyz(a)), jnp.asarray(v))
    np.testing.assert_allclose(got, a.apply(v), atol=1e-5)


def test_rotate_hand_worked_example():
    s = np.sqrt(0.5)
    # 90 degrees about z takes x to y.
    np.testing.assert_allclose(
        quat.rotate(jnp.array([s, 0, 0, s]), jnp.array([1.0, 0, 0])), [0, 1, 0], atol=1e-6
    )


def test_angle_between_matches_scipy(rotations):
    a, b = rotations
    got = quat.angle_between(jnp.asarray(wxyz(a)), jnp.asarray(wxyz(b)))
    np.testing.assert_allclose(got, (a.inv() * b).magnitude(), atol=2e-5)
    assert np.all((np.asarray(got) >= 0) & (np.asarray(got) <= np.pi + 1e-6))


def test_angle_between_ignores_quaternion_sign(rotations):
    a, b = rotations
    qa, qb = jnp.asarray(wxyz(a)), jnp.asarray(wxyz(b))
    np.testing.assert_allclose(quat.angle_between(qa, -qb), quat.angle_between(qa, qb), atol=1e-6)
    np.testing.assert_allclose(quat.angle_between(qa, -qa), 0.0, atol=1e-6)


def test_angle_between_is_accurate_for_small_angles():
    # float32 arccos(|<a, b>|) would be off by ~1e-3 rad here; the atan2 form is not.
    a = Rotation.random(16, random_state=3)
    for theta in (1e-3, 1e-2):
        axis = np.random.default_rng(4).normal(size=(16, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        b = a * Rotation.from_rotvec(theta * axis)
        got = quat.angle_between(
            jnp.asarray(wxyz(a), jnp.float32), jnp.asarray(wxyz(b), jnp.float32)
        )
        np.testing.assert_allclose(got, theta, rtol=2e-2)


def test_relative_rotation_takes_from_to(rotations):
    a, b = rotations
    r = quat.relative(jnp.asarray(wxyz(a)), jnp.asarray(wxyz(b)))
    # r * a == b  <=>  r == b * a^-1 (world-frame difference).
    same_rotation(r, b * a.inv())


def test_from_axis_angle_matches_rotvec():
    rng = np.random.default_rng(5)
    axis = rng.normal(size=(N, 3))
    ang = rng.uniform(-np.pi, np.pi, size=N)
    got = quat.from_axis_angle(jnp.asarray(axis), jnp.asarray(ang))
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    same_rotation(got, Rotation.from_rotvec(unit * ang[:, None]))


def test_positive_w_and_normalize():
    q = jnp.array([[-0.5, 0.5, -0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [-2.0, 0.0, 0.0, 0.0]])
    p = np.asarray(quat.positive_w(q))
    np.testing.assert_allclose(p[0], [0.5, -0.5, 0.5, -0.5])
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(quat.normalize(q)[2], [-1.0, 0, 0, 0])
    np.testing.assert_allclose(np.linalg.norm(quat.normalize(q), axis=-1), 1.0, atol=1e-6)


def test_random_uniform_is_haar_distributed():
    q = np.asarray(quat.random_uniform(jax.random.key(42), (20000,)), np.float64)
    assert q.shape == (20000, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # Rotation angle of a Haar-random rotation: density (1 - cos t) / pi on [0, pi],
    # i.e. CDF (t - sin t) / pi.
    theta = 2.0 * np.arccos(np.clip(np.abs(q[:, 0]), 0.0, 1.0))
    ks = stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi)
    assert ks.pvalue > 0.01, ks
    # The image of a fixed unit vector is uniform on the sphere: its z is U[-1, 1]
    # (Archimedes), and x, y are centred.
    z_img = rot(q).apply([0.0, 0.0, 1.0])
    ks_z = stats.kstest(z_img[:, 2], stats.uniform(loc=-1, scale=2).cdf)
    assert ks_z.pvalue > 0.01, ks_z
    assert np.all(np.abs(z_img.mean(axis=0)) < 0.03)


def test_random_uniform_is_not_concentrated_near_identity():
    # A sanity check on the KS test above: the angle distribution of a rotation-angle
    # uniform sampler (not Haar) must be rejected.
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, np.pi, 20000)
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue < 1e-6


def test_random_yaw_is_rotation_about_z():
    q = np.asarray(quat.random_yaw(jax.random.key(7), (2000,)), np.float64)
    np.testing.assert_allclose(q[:, 1:3], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    r = rot(q)
    np.testing.assert_allclose(
        r.apply([0.0, 0.0, 1.0]), np.tile([0.0, 0.0, 1.0], (2000, 1)), atol=1e-6
    )
    x_img = r.apply([1.0, 0.0, 0.0])
    yaw = np.arctan2(x_img[:, 1], x_img[:, 0])
    assert stats.kstest(yaw, stats.uniform(loc=-np.pi, scale=2 * np.pi).cdf).pvalue > 0.01


def test_reference_angle_helper_agrees_with_hand_value():
    # Guard for the scipy helper used by the env tests: 90 degrees about x from identity.
    s = np.sqrt(0.5)
    np.testing.assert_allclose(angle([1.0, 0, 0, 0], [s, s, 0, 0]), np.pi / 2)
