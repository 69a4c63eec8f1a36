"""Translate a traced JAX function (its jaxpr) into an ONNX graph, one primitive at a time.

    graph = jaxpr_to_onnx(jax.make_jaxpr(fn)(*specs), ["obs", "h", "c"], ["action", ...],
                          opset=17, batch=batch_symbol)

The ONNX model is generated from what JAX itself executes (the jaxpr of the function,
with closed-over arrays as constants), not from a re-written copy of the network: every
equation becomes one or a few ONNX nodes with the same semantics. The primitives covered
are those of a policy step (dense layers, LSTM gates, normalization, argmax, casts,
selects) and of the pose estimator (convolutions, max pooling, reductions, spatial
softmax, slices); anything else raises `UnsupportedPrimitiveError` naming the primitive.

Shapes may have one symbolic dimension (`batch`, from `jax.export.symbolic_shape`), or
integer multiples of it (a reshape that folds the cameras into the batch): it is read at
run time from the first input's leading axis, so the graph takes any batch size.

Why not jax2onnx: jax2onnx 0.17.1 requires orbax-checkpoint < 0.11.37 while dexjax pins
orbax-checkpoint 0.12.8, so the two cannot be installed together.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax.extend.core as jex
import numpy as np
import onnx
from jax import lax
from onnx import helper, numpy_helper

MIN_OPSET = 13
"""Split and Unsqueeze take their sizes/axes as inputs from opset 13 on."""


class UnsupportedPrimitiveError(NotImplementedError):
    """The jaxpr uses a primitive (or a form of one) this converter does not translate."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """The symbolic batch dimension and where its runtime size comes from."""

    symbol: Any  # the jax.export symbolic dimension used when tracing
    input_index: int = 0  # the graph input whose leading axis is the batch


class _Graph:
    """Nodes, constants and fresh names of the graph being built (local to one conversion)."""

    def __init__(self, opset: int, batch: Batch | None):
        self.opset = opset
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0
        self.batch_size: str | None = None  # int64 [1] tensor holding the batch size

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: Any, hint: str = "const", dtype: Any = None) -> str:
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> list[str]:
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, **attrs))
        return names

    def one(self, op: str, inputs: Sequence[str], **attrs) -> str:
        return self.node(op, inputs, 1, **attrs)[0]

    def shape(self, dims: Sequence[Any]) -> str:
        """An int64 shape tensor for `dims`, the symbolic batch dimension read at run time."""
        if all(isinstance(d, int) for d in dims):
            return self.const(np.array(dims, np.int64), "shape")
        parts = []
        for d in dims:
            if isinstance(d, int):
                parts.append(self.const(np.array([d], np.int64), "dim"))
                continue
            multiple = _batch_multiple(d, self.batch)
            if multiple == 1:
                parts.append(self.batch_size)
            else:
                count = self.const(np.array([multiple], np.int64), "dim")
                parts.append(self.one("Mul", [self.batch_size, count]))
        return self.one("Concat", parts, axis=0)


def _batch_multiple(d: Any, batch: Batch | None) -> int:
    """k for a symbolic dimension d = k * batch; any other symbolic dimension is an error."""
    if batch is not None:
        try:
            k = d // batch.symbol
        except Exception:  # jax's symbolic arithmetic cannot divide: not a multiple
            k = None
        if isinstance(k, int) and k > 0 and d == k * batch.symbol:
            return k
    raise UnsupportedPrimitiveError(f"symbolic dimension {d} (only multiples of the batch)")


def _onnx_dtype(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _dims(shape: Sequence[Any], batch: Batch | None) -> list[Any]:
    """A value_info shape: ints, and the batch symbol as the named dimension "batch"."""
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        else:
            k = _batch_multiple(d, batch)
            out.append("batch" if k == 1 else f"{k}*batch")
    return out


# ---------------------------------------------------------------------------------------
# Primitive translations: (graph, equation, input names) -> output names

_ELEMENTWISE = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "logistic": "Sigmoid",
    "tanh": "Tanh",
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "abs": "Abs",
    "sqrt": "Sqrt",
    "copy": "Identity",
    "copy_p": "Identity",
    "stop_gradient": "Identity",
}


def _elementwise(g: _Graph, eqn, ins: list[str]) -> list[str]:
    if eqn.primitive.name == "div" and not np.issubdtype(eqn.outvars[0].aval.dtype, np.floating):
        raise UnsupportedPrimitiveError("integer div (lax rounds toward zero, ONNX may not)")
    return [g.one(_ELEMENTWISE[eqn.primitive.name], ins)]


def _rsqrt(g: _Graph, eqn, ins: list[str]) -> list[str]:
    return [g.one("Reciprocal", [g.one("Sqrt", ins)])]


def _convert_element_type(g: _Graph, eqn, ins: list[str]) -> list[str]:
    return [g.one("Cast", ins, to=_onnx_dtype(eqn.params["new_dtype"]))]


def _round(g: _Graph, eqn, ins: list[str]) -> list[str]:
    method = eqn.params.get("rounding_method")
    # ONNX Round rounds halves to even, as lax's TO_NEAREST_EVEN (what jnp.round uses).
    if method != lax.RoundingMethod.TO_NEAREST_EVEN:
        raise UnsupportedPrimitiveError(f"round with rounding_method={method}")
    return [g.one("Round", ins)]


def _dot_general(g: _Graph, eqn, ins: list[str]) -> list[str]:
    """x[..., k] @ w[k, n] as MatMul; any other contraction as an Einsum."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval for v in eqn.invars)
    plain = (
        not lhs_batch
        and not rhs_batch
        and tuple(lhs_contract) == (lhs.ndim - 1,)
        and tuple(rhs_contract) == (0,)
        and rhs.ndim == 2
    )
    if plain:
        out = g.one("MatMul", ins)
    else:
        out = g.one("Einsum", ins, equation=_einsum_equation(lhs.ndim, rhs.ndim, eqn))
    want = eqn.outvars[0].aval.dtype
    if np.dtype(want) != np.dtype(lhs.dtype):
        out = g.one("Cast", [out], to=_onnx_dtype(want))
    return [out]


def _einsum_equation(lhs_ndim: int, rhs_ndim: int, eqn) -> str:
    """The Einsum of a dot_general: output axes are batch, lhs free, rhs free (lax's order)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(lhs_ndim)]
    rhs = [next(letters) for _ in range(rhs_ndim)]
    pairs = zip(
        list(lhs_contract) + list(lhs_batch), list(rhs_contract) + list(rhs_batch), strict=True
    )
    for i, j in pairs:
        rhs[j] = lhs[i]
    out = [lhs[i] for i in lhs_batch]
    out += [lhs[i] for i in range(lhs_ndim) if i not in lhs_contract and i not in lhs_batch]
    out += [rhs[j] for j in range(rhs_ndim) if j not in rhs_contract and j not in rhs_batch]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def _conv(g: _Graph, eqn, ins: list[str]) -> list[str]:
    """lax's convolution in any layout: transposed to ONNX's NCHW / OIHW and back."""
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise UnsupportedPrimitiveError("conv_general_dilated with lhs dilation or batch groups")
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    x = g.one("Transpose", [ins[0]], perm=list(lhs_spec))
    w = g.one("Transpose", [ins[1]], perm=list(rhs_spec))
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    if min(pads) < 0:
        raise UnsupportedPrimitiveError("conv_general_dilated with negative padding")
    y = g.one(
        "Conv",
        [x, w],
        strides=list(p["window_strides"]),
        pads=pads,
        dilations=list(p["rhs_dilation"]),
        group=int(p["feature_group_count"]),
    )
    return [g.one("Transpose", [y], perm=[int(i) for i in np.argsort(out_spec)])]


def _reduce_window_max(g: _Graph, eqn, ins: list[str]) -> list[str]:
    """Max pooling over the axes whose window or stride is not 1; axis 0 is the batch."""
    p = eqn.params
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        raise UnsupportedPrimitiveError("reduce_window_max with dilation")
    window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
    pooled = [i for i in range(len(window)) if window[i] != 1 or strides[i] != 1]
    others = [i for i in range(1, len(window)) if i not in pooled]
    if 0 in pooled or len(others) > 1:
        raise UnsupportedPrimitiveError(f"reduce_window_max with window {window}")
    perm = [0, *others, *pooled]
    x = ins[0]
    if not others:  # no channel axis: add a last one for MaxPool
        x = g.one("Unsqueeze", [x, g.const(np.array([len(window)], np.int64), "axes")])
        perm = [0, len(window), *pooled]
    x = g.one("Transpose", [x], perm=perm)
    y = g.one(
        "MaxPool",
        [x],
        kernel_shape=[window[i] for i in pooled],
        strides=[strides[i] for i in pooled],
        pads=[padding[i][0] for i in pooled] + [padding[i][1] for i in pooled],
    )
    y = g.one("Transpose", [y], perm=[int(i) for i in np.argsort(perm)])
    if not others:
        y = g.one("Squeeze", [y, g.const(np.array([len(window)], np.int64), "axes")])
    return [y]


def _reduce(g: _Graph, eqn, ins: list[str]) -> list[str]:
    op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax"}[eqn.primitive.name]
    axes = [int(a) for a in eqn.params["axes"]]
    # ReduceSum takes its axes as an input from opset 13, ReduceMax from opset 18.
    if op == "ReduceSum" or g.opset >= 18:
        return [g.one(op, [ins[0], g.const(np.array(axes, np.int64), "axes")], keepdims=0)]
    return [g.one(op, ins, axes=axes, keepdims=0)]


def _transpose(g: _Graph, eqn, ins: list[str]) -> list[str]:
    return [g.one("Transpose", ins, perm=[int(i) for i in eqn.params["permutation"]])]


def _slice(g: _Graph, eqn, ins: list[str]) -> list[str]:
    p = eqn.params
    n = len(p["start_indices"])
    steps = p["strides"] or (1,) * n
    return [
        g.one(
            "Slice",
            [
                ins[0],
                g.const(np.array(p["start_indices"], np.int64), "starts"),
                g.const(np.array(p["limit_indices"], np.int64), "ends"),
                g.const(np.arange(n, dtype=np.int64), "axes"),
                g.const(np.array(steps, np.int64), "steps"),
            ],
        )
    ]


def _gather(g: _Graph, eqn, ins: list[str]) -> list[str]:
    """The one gather jnp indexing emits for `x[:, 3:]` under a symbolic batch: a block
    of static size at start indices given as a vector, i.e. a Slice."""
    p = eqn.params
    dn = p["dimension_numbers"]
    operand, indices = (v.aval for v in eqn.invars)
    axes = [int(a) for a in dn.start_index_map]
    sizes = p["slice_sizes"]
    whole = [i for i in range(operand.ndim) if i not in axes]
    is_slice = (
        tuple(dn.offset_dims) == tuple(range(operand.ndim))
        and not dn.collapsed_slice_dims
        and not dn.operand_batching_dims
        and tuple(indices.shape) == (len(axes),)
        and all(isinstance(operand.shape[a], int) and isinstance(sizes[a], int) for a in axes)
        and all(sizes[i] == operand.shape[i] for i in whole)
    )
    if not is_slice:
        raise UnsupportedPrimitiveError(f"gather other than a static-size slice: {dn}")
    # lax clamps start indices so the block stays inside the operand.
    starts = g.one("Cast", [ins[1]], to=onnx.TensorProto.INT64)
    highest = np.array([operand.shape[a] - sizes[a] for a in axes], np.int64)
    starts = g.one(
        "Min",
        [
            g.one("Max", [starts, g.const(np.zeros(len(axes), np.int64))]),
            g.const(highest, "highest"),
        ],
    )
    ends = g.one("Add", [starts, g.const(np.array([sizes[a] for a in axes], np.int64))])
    return [g.one("Slice", [ins[0], starts, ends, g.const(np.array(axes, np.int64), "axes")])]


def _iota(g: _Graph, eqn, ins: list[str]) -> list[str]:
    p = eqn.params
    shape = tuple(p["shape"])
    if not all(isinstance(d, int) for d in shape):
        raise UnsupportedPrimitiveError("iota with a symbolic shape")
    index = np.arange(shape[p["dimension"]], dtype=p["dtype"])
    view = [1] * len(shape)
    view[p["dimension"]] = shape[p["dimension"]]
    return [g.const(np.broadcast_to(index.reshape(view), shape), "iota")]


def _integer_pow(g: _Graph, eqn, ins: list[str]) -> list[str]:
    exponent = g.const(np.asarray(eqn.params["y"], eqn.outvars[0].aval.dtype), "exponent")
    return [g.one("Pow", [ins[0], exponent])]


def _square(g: _Graph, eqn, ins: list[str]) -> list[str]:
    return [g.one("Mul", [ins[0], ins[0]])]


def _reshape(g: _Graph, eqn, ins: list[str]) -> list[str]:
    if eqn.params.get("dimensions") is not None:
        raise UnsupportedPrimitiveError("reshape with a transposition (dimensions)")
    return [g.one("Reshape", [ins[0], g.shape(eqn.params["new_sizes"])])]


def _broadcast_in_dim(g: _Graph, eqn, ins: list[str]) -> list[str]:
    shape = eqn.params["shape"]
    kept = tuple(eqn.params["broadcast_dimensions"])
    new_axes = [i for i in range(len(shape)) if i not in kept]
    x = ins[0]
    if new_axes:
        x = g.one("Unsqueeze", [x, g.const(np.array(new_axes, np.int64), "axes")])
    return [g.one("Expand", [x, g.shape(shape)])]


def _squeeze(g: _Graph, eqn, ins: list[str]) -> list[str]:
    axes = np.array(eqn.params["dimensions"], np.int64)
    return [g.one("Squeeze", [ins[0], g.const(axes, "axes")])]


def _concatenate(g: _Graph, eqn, ins: list[str]) -> list[str]:
    return [g.one("Concat", ins, axis=int(eqn.params["dimension"]))]


def _stack(g: _Graph, eqn, ins: list[str]) -> list[str]:
    axis = g.const(np.array([int(eqn.params["axis"])], np.int64), "axes")
    return [g.one("Concat", [g.one("Unsqueeze", [x, axis]) for x in ins], axis=eqn.params["axis"])]


def _split(g: _Graph, eqn, ins: list[str]) -> list[str]:
    sizes = g.const(np.array([int(s) for s in eqn.params["sizes"]], np.int64), "sizes")
    return g.node("Split", [ins[0], sizes], len(eqn.outvars), axis=int(eqn.params["axis"]))


def _argmax(g: _Graph, eqn, ins: list[str]) -> list[str]:
    (axis,) = eqn.params["axes"]
    # Ties: both JAX and ONNX (select_last_index=0) return the first maximal index.
    index = g.one("ArgMax", ins, axis=int(axis), keepdims=0, select_last_index=0)
    return [g.one("Cast", [index], to=_onnx_dtype(eqn.params["index_dtype"]))]


def _select_n(g: _Graph, eqn, ins: list[str]) -> list[str]:
    if len(ins) != 3 or eqn.invars[0].aval.dtype != np.bool_:
        raise UnsupportedPrimitiveError("select_n with other than a boolean and two cases")
    which, if_false, if_true = ins
    return [g.one("Where", [which, if_true, if_false])]


_HANDLERS: dict[str, Callable] = {
    **{name: _elementwise for name in _ELEMENTWISE},
    "rsqrt": _rsqrt,
    "convert_element_type": _convert_element_type,
    "round": _round,
    "dot_general": _dot_general,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": _squeeze,
    "concatenate": _concatenate,
    "stack": _stack,
    "split": _split,
    "argmax": _argmax,
    "select_n": _select_n,
    "conv_general_dilated": _conv,
    "reduce_window_max": _reduce_window_max,
    "reduce_sum": _reduce,
    "reduce_max": _reduce,
    "transpose": _transpose,
    "slice": _slice,
    "iota": _iota,
    "gather": _gather,
    "integer_pow": _integer_pow,
    "square": _square,
}

# Primitives that call an inner jaxpr: inlined (the parameter holding it).
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "custom_jvp_call": "call_jaxpr"}


def _inner_jaxpr(eqn) -> jex.ClosedJaxpr | None:
    key = _CALLS.get(eqn.primitive.name)
    if key is None:
        return None
    inner = eqn.params[key]
    return inner if isinstance(inner, jex.ClosedJaxpr) else jex.ClosedJaxpr(inner, ())


def _emit(g: _Graph, closed: jex.ClosedJaxpr, args: list[str]) -> list[str]:
    """Add the nodes of `closed` applied to the tensors `args`; its output tensors."""
    jaxpr = closed.jaxpr
    env: dict[Any, str] = {}
    for var, value in zip(jaxpr.constvars, closed.consts, strict=True):
        env[var] = g.const(np.asarray(value, dtype=var.aval.dtype), "param")
    for var, name in zip(jaxpr.invars, args, strict=True):
        env[var] = name

    def read(atom) -> str:
        if isinstance(atom, jex.Literal):
            return g.const(np.asarray(atom.val, dtype=atom.aval.dtype), "literal")
        return env[atom]

    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        inner = _inner_jaxpr(eqn)
        if inner is not None:
            outs = _emit(g, inner, ins)
        elif eqn.primitive.name in _HANDLERS:
            outs = _HANDLERS[eqn.primitive.name](g, eqn, ins)
        else:
            raise UnsupportedPrimitiveError(
                f"no ONNX translation for the JAX primitive {eqn.primitive.name!r}; "
                f"supported: {sorted(_HANDLERS) + sorted(_CALLS)}"
            )
        for var, name in zip(eqn.outvars, outs, strict=True):
            if not isinstance(var, jex.DropVar):
                env[var] = name
    return [read(v) for v in jaxpr.outvars]


def jaxpr_to_onnx(
    closed: jex.ClosedJaxpr,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
    batch: Batch | None = None,
    graph_name: str = "dexjax",
    doc: str = "",
) -> onnx.ModelProto:
    """The ONNX model computing `closed` (from `jax.make_jaxpr`), checked by onnx.checker.

    Args:
      closed: the traced function; closed-over arrays become initializers.
      input_names, output_names: names of the graph's inputs and outputs, in order.
      opset: ONNX opset of the default domain (>= MIN_OPSET).
      batch: the symbolic batch dimension, if the function was traced with one.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the converter's minimum {MIN_OPSET}")
    jaxpr = closed.jaxpr
    if len(input_names) != len(jaxpr.invars) or len(output_names) != len(jaxpr.outvars):
        raise ValueError(
            f"the function has {len(jaxpr.invars)} inputs and {len(jaxpr.outvars)} outputs; "
            f"got names for {len(input_names)} and {len(output_names)}"
        )
    g = _Graph(opset, batch)
    if batch is not None:
        shape = g.one("Shape", [input_names[batch.input_index]])
        starts, ends = g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64))
        g.batch_size = g.one("Slice", [shape, starts, ends])
    outs = _emit(g, closed, list(input_names))
    # Graph outputs get their public names (Identity also covers an output that is an
    # input or a constant).
    for out, name in zip(outs, output_names, strict=True):
        g.nodes.append(helper.make_node("Identity", [out], [name]))

    def info(name: str, aval) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(
            name, _onnx_dtype(aval.dtype), _dims(aval.shape, batch)
        )

    graph = helper.make_graph(
        g.nodes,
        graph_name,
        [info(n, v.aval) for n, v in zip(input_names, jaxpr.invars, strict=True)],
        [info(n, v.aval) for n, v in zip(output_names, jaxpr.outvars, strict=True)],
        initializer=g.initializers,
        doc_string=doc,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="dexjax",
        # The oldest IR version that holds this opset, so older runtimes load the model.
        ir_version=_ir_version(opset),
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _ir_version(opset: int) -> int:
    ir = helper.OP_SET_ID_VERSION_MAP.get(("ai.onnx", opset))
    if ir is None:
        raise ValueError(f"onnx {onnx.__version__} does not know opset {opset}")
    return ir
