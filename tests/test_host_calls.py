"""Host functions as named XLA FFI targets (`dexjax.host_calls`), the C physics backend's
way into compiled programs: buffers in and out, integer attributes, batch axes under vmap,
errors raised from the jitted call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dexjax import host_calls


def _scaled_sums(args, rets, attrs):
    """rets[0] = args[0] * scale + offset (float32); rets[1] = each row's count of True
    in args[1] (int32); rets[2] = whether args[0] has a negative entry per row (bool)."""
    x, mask = args
    if attrs["scale"] == 0:
        raise ValueError("scale 0 is refused")
    rets[0][...] = x * attrs["scale"] + attrs["offset"]
    rets[1][...] = mask.sum(axis=-1)
    rets[2][...] = (x < 0).any(axis=-1)


host_calls.register("test_scaled_sums", _scaled_sums)


def scaled_sums(x, mask, scale, offset=0):
    out = (
        jax.ShapeDtypeStruct(x.shape, jnp.float32),
        jax.ShapeDtypeStruct(x.shape[:-1], jnp.int32),
        jax.ShapeDtypeStruct(x.shape[:-1], jnp.bool_),
    )
    return host_calls.call("test_scaled_sums", out, x, mask, scale=scale, offset=offset)


def test_a_target_reads_its_buffers_and_attributes_and_writes_its_results():
    x = jnp.array([1.5, -2.0, 3.0], jnp.float32)
    mask = jnp.array([True, False, True])
    y, count, negative = jax.jit(lambda x, m: scaled_sums(x, m, scale=3, offset=-1))(x, mask)
    np.testing.assert_array_equal(np.asarray(y), [3.5, -7.0, 8.0])
    assert int(count) == 2 and bool(negative)


def test_under_vmap_every_buffer_gains_the_batch_axes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)  # two nested batch axes
    mask = rng.random((2, 3, 4)) < 0.5
    fn = jax.jit(jax.vmap(jax.vmap(lambda x, m: scaled_sums(x, m, scale=2))))
    y, count, negative = fn(x, mask)
    np.testing.assert_allclose(np.asarray(y), 2 * x)
    np.testing.assert_array_equal(np.asarray(count), mask.sum(-1))
    np.testing.assert_array_equal(np.asarray(negative), (x < 0).any(-1))


def test_an_exception_in_the_target_fails_the_call_with_its_message():
    with pytest.raises(Exception, match="test_scaled_sums.*ValueError: scale 0 is refused"):
        jax.block_until_ready(scaled_sums(jnp.ones(2), jnp.ones(2, bool), scale=0))


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        host_calls.register("test_scaled_sums", _scaled_sums)
