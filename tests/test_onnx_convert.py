"""The jaxpr -> ONNX translator on the primitives of a convolutional pose network.

Each case traces a small JAX function, converts it, runs it in onnxruntime and compares
with JAX itself (and, for the contraction equations, with numpy's einsum). No environment
is compiled: these run in seconds.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest
from jax import lax

from dexjax import onnx_convert


def _run_onnx(fn, args, opset=17, batch=False):
    """(onnx outputs, jax outputs) of `fn` on numpy `args`; a symbolic leading axis if
    `batch` (traced with it, run at the arguments' actual size)."""
    if batch:
        (symbol,) = jax.export.symbolic_shape("b")
        specs = [jax.ShapeDtypeStruct((symbol, *a.shape[1:]), a.dtype) for a in args]
        closed = jax.make_jaxpr(fn)(*specs)
        batch_info = onnx_convert.Batch(symbol)
    else:
        closed = jax.make_jaxpr(fn)(*args)
        batch_info = None
    names = [f"in{i}" for i in range(len(args))]
    outs = [f"out{i}" for i in range(len(closed.jaxpr.outvars))]
    model = onnx_convert.jaxpr_to_onnx(closed, names, outs, opset=opset, batch=batch_info)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = session.run(outs, dict(zip(names, args, strict=True)))
    want = jax.tree.leaves(fn(*args))
    return got, [np.asarray(w) for w in want]


def _spatial_softmax(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, 2C]: expected x and y image coordinates of each channel."""
    n, h, w, c = x.shape
    p = jax.nn.softmax(x.transpose(0, 3, 1, 2).reshape(n, c, h * w), axis=-1)
    p = p.reshape(n, c, h, w)
    ys, xs = jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w)
    return jnp.concatenate([jnp.einsum("nchw,w->nc", p, xs), jnp.einsum("nchw,h->nc", p, ys)], 1)


class _TinyPoseNet(nn.Module):
    """Convolutions (strided, padded), max pooling, a residual block, spatial softmax,
    dense layers and a unit quaternion: the operations of a pose estimator."""

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        b, cams = images.shape[:2]
        x = images.reshape((b * cams, *images.shape[2:])).astype(jnp.float32) / 255.0
        x = nn.relu(nn.Conv(8, (5, 5), padding="VALID")(x))
        x = nn.max_pool(x, (3, 3), (3, 3))
        y = nn.Conv(8, (3, 3), padding="SAME")(nn.relu(nn.Conv(8, (3, 3), padding=1)(x)))
        x = nn.relu(x + y)
        x = nn.Conv(6, (3, 3), strides=2, padding="SAME")(x)
        features = _spatial_softmax(x).reshape(b, -1)
        out = nn.Dense(7)(nn.relu(nn.Dense(16)(features)))
        quat = out[:, 3:] / jnp.linalg.norm(out[:, 3:], axis=-1, keepdims=True)
        return out[:, :3], quat


@pytest.fixture(scope="module")
def tiny_net():
    images = np.zeros((2, 3, 24, 24, 3), np.uint8)
    net = _TinyPoseNet()
    variables = net.init(jax.random.key(0), images)
    return lambda x: net.apply(variables, x)


@pytest.mark.parametrize("batch", [1, 3])
def test_pose_network_matches_jax_at_any_batch(tiny_net, batch):
    images = np.random.default_rng(batch).integers(0, 256, (batch, 3, 24, 24, 3), np.uint8)
    got, want = _run_onnx(tiny_net, [images], batch=True)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[1], axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "lhs_shape, rhs_shape, dims, reference",
    [
        ((4, 5), (5, 3), (([1], [0]), ([], [])), "ab,bc->ac"),
        ((2, 4, 5), (5,), (([2], [0]), ([], [])), "abc,c->ab"),
        ((2, 4, 5), (2, 5, 3), (([2], [1]), ([0], [0])), "abc,acd->abd"),
        ((5, 4), (3, 5), (([0], [1]), ([], [])), "ba,cb->ac"),
        ((2, 3, 4), (4, 2, 6), (([2], [0]), ([0], [1])), "abc,cad->abd"),
    ],
)
def test_dot_general_matches_einsum(lhs_shape, rhs_shape, dims, reference):
    rng = np.random.default_rng(0)
    lhs = rng.normal(size=lhs_shape).astype(np.float32)
    rhs = rng.normal(size=rhs_shape).astype(np.float32)
    got, want = _run_onnx(lambda a, b: lax.dot_general(a, b, dims), [lhs, rhs])
    np.testing.assert_allclose(want[0], np.einsum(reference, lhs, rhs), atol=1e-5)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18])
def test_reductions_in_both_opset_forms(opset):
    x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    got, want = _run_onnx(lambda a: (a.max(axis=(1, 2)), a.sum(axis=1)), [x], opset=opset)
    np.testing.assert_allclose(got[0], x.max(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_max_pool_without_a_channel_axis():
    x = np.random.default_rng(2).normal(size=(2, 7, 7)).astype(np.float32)
    pool = lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (1, 2, 2), (1, 2, 2), "VALID")
    got, want = _run_onnx(pool, [x])
    reference = x[:, :6, :6].reshape(2, 3, 2, 3, 2).max(axis=(2, 4))
    np.testing.assert_allclose(want[0], reference)
    np.testing.assert_allclose(got[0], reference)


def test_strided_slices_stacks_and_integer_powers():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    got, _ = _run_onnx(lambda a: (a[1:4:2, ::3], a**3, jnp.square(a), jnp.stack([a, -a], 1)), [x])
    np.testing.assert_array_equal(got[0], x[1:4:2, ::3])
    np.testing.assert_allclose(got[1], x**3)
    np.testing.assert_allclose(got[2], x * x)
    np.testing.assert_array_equal(got[3], np.stack([x, -x], 1))


def test_other_symbolic_dimensions_are_refused():
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, 4), np.float32)
    closed = jax.make_jaxpr(lambda a: a[: b - 1])(spec)
    with pytest.raises(onnx_convert.UnsupportedPrimitiveError):
        onnx_convert.jaxpr_to_onnx(closed, ["x"], ["y"], opset=17, batch=onnx_convert.Batch(b))
