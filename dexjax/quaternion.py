"""Unit-quaternion math in (w, x, y, z) order, MuJoCo's convention.

All functions work on the trailing axis and broadcast over leading ones.
"""

import jax
import jax.numpy as jnp


def multiply(a: jax.Array, b: jax.Array) -> jax.Array:
    """Hamilton product a * b (apply b first, then a)."""
    aw, ax, ay, az = jnp.moveaxis(a, -1, 0)
    bw, bx, by, bz = jnp.moveaxis(b, -1, 0)
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def conjugate(q: jax.Array) -> jax.Array:
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def normalize(q: jax.Array) -> jax.Array:
    return q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def relative(q_from: jax.Array, q_to: jax.Array) -> jax.Array:
    """The rotation r with q_to = r * q_from, in the world frame."""
    return multiply(q_to, conjugate(q_from))


def angle_between(a: jax.Array, b: jax.Array) -> jax.Array:
    """Smallest rotation angle (rad, in [0, pi]) taking orientation a to orientation b.

    Uses atan2 of the vector and scalar parts of a^-1 b, which stays accurate near 0
    (where arccos of the dot product loses half the digits).
    """
    r = multiply(conjugate(a), b)
    w = jnp.abs(r[..., 0])
    v = jnp.linalg.norm(r[..., 1:], axis=-1)
    return 2.0 * jnp.arctan2(v, w)


def from_axis_angle(axis: jax.Array, angle: jax.Array) -> jax.Array:
    axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    half = 0.5 * jnp.asarray(angle)[..., None]
    return jnp.concatenate([jnp.cos(half), jnp.sin(half) * axis], axis=-1)


def rotate(q: jax.Array, v: jax.Array) -> jax.Array:
    """Rotate vector(s) v by unit quaternion(s) q."""
    qv = jnp.concatenate([jnp.zeros_like(v[..., :1]), v], axis=-1)
    return multiply(multiply(q, qv), conjugate(q))[..., 1:]


def random_uniform(key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Orientations uniformly distributed over SO(3) (normalized 4-D Gaussians)."""
    return normalize(jax.random.normal(key, (*shape, 4)))


def random_yaw(key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Rotations about the world z axis by a uniformly random angle."""
    angle = jax.random.uniform(key, shape, minval=-jnp.pi, maxval=jnp.pi)
    return from_axis_angle(jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), (*shape, 3)), angle)


def positive_w(q: jax.Array) -> jax.Array:
    """The same rotation with a non-negative scalar part (q and -q are one rotation)."""
    return jnp.where(q[..., :1] < 0, -q, q)
