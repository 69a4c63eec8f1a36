"""Host functions called from compiled programs, as named XLA FFI targets.

The C physics backend runs MuJoCo on the host from inside jitted programs.
`jax.pure_callback` could call it, but XLA never writes a program holding a Python
callback to JAX's persistent compilation cache (the callback is a pointer, different in
every process), so every process would compile the C backend's programs anew: tens of
seconds for each `dexjax train` or `dexjax eval`. An FFI target is called by name, so
programs that call one are cached like any other.

A target here is a Python function behind a C function pointer (`ctypes`) that reads
XLA's call frame (`xla/ffi/api/c_api.h`, FFI API 0.x, as shipped in the pinned jaxlib:
`jax.ffi.include_dir()`): its arguments and results are buffers, its attributes integers.
The function gets NumPy views of the buffers (valid during the call only), writes the
results into the result views, and its exceptions become errors of the jitted call.

    register("add_one", lambda args, rets, attrs: np.add(args[0], 1, out=rets[0]))
    y = call("add_one", [jax.ShapeDtypeStruct(x.shape, x.dtype)], x)[0]
"""

import ctypes
import threading
from collections.abc import Callable, Sequence

import jax
import numpy as np

Target = Callable[[list[np.ndarray], list[np.ndarray], dict[str, int]], None]
"""fn(args, rets, attrs): NumPy views of the argument and result buffers, and the integer
attributes."""


# ---- the C API's structs (xla/ffi/api/c_api.h) -------------------------------------------


class _ExtensionBase(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class _ApiVersion(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major_version", ctypes.c_int),
        ("minor_version", ctypes.c_int),
    ]


class _Metadata(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("api_version", _ApiVersion),
        ("traits", ctypes.c_uint32),
    ]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("rank", ctypes.c_int64),
        ("dims", ctypes.POINTER(ctypes.c_int64)),
    ]


class _Buffers(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("items", ctypes.POINTER(ctypes.c_void_p)),
    ]


class _Attrs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("names", ctypes.POINTER(ctypes.c_void_p)),
        ("attrs", ctypes.POINTER(ctypes.c_void_p)),
    ]


class _ByteSpan(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Scalar(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("value", ctypes.c_void_p)]


class _CallFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.POINTER(_ExtensionBase)),
        ("api", ctypes.c_void_p),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
        ("args", _Buffers),
        ("rets", _Buffers),
        ("attrs", _Attrs),
    ]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("message", ctypes.c_char_p),
        ("errc", ctypes.c_int),
    ]


_ErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):  # its first fields only
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api_version", _ApiVersion),
        ("internal_api", ctypes.c_void_p),
        ("error_create", _ErrorCreate),
    ]


_HandlerType = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))

_API_MAJOR, _API_MINOR = 0, 1  # the oldest FFI API version whose call frame this reads
_METADATA_EXTENSION = 1
_EXECUTE = 3
_ATTR_SCALAR = 3
_ERROR_INTERNAL = 13
_DTYPES = {
    1: np.bool_,
    2: np.int8,
    4: np.int32,
    5: np.int64,
    6: np.uint8,
    8: np.uint32,
    11: np.float32,
    12: np.float64,
}
_INTEGER_ATTRS = {2: ctypes.c_int8, 4: ctypes.c_int32, 5: ctypes.c_int64, 1: ctypes.c_bool}


def _views(buffers: _Buffers) -> list[np.ndarray]:
    """NumPy views of a call frame's buffers (no copies)."""
    views = []
    for i in range(buffers.size):
        b = ctypes.cast(buffers.items[i], ctypes.POINTER(_Buffer)).contents
        if b.dtype not in _DTYPES:
            raise TypeError(f"host call buffers of XLA FFI dtype {b.dtype} are not supported")
        shape = tuple(b.dims[k] for k in range(b.rank))
        dtype = np.dtype(_DTYPES[b.dtype])
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size == 0:
            views.append(np.zeros(shape, dtype))
            continue
        raw = (ctypes.c_char * size).from_address(b.data)
        views.append(np.frombuffer(raw, dtype).reshape(shape))
    return views


def _attrs(attrs: _Attrs) -> dict[str, int]:
    values = {}
    for i in range(attrs.size):
        span = ctypes.cast(attrs.names[i], ctypes.POINTER(_ByteSpan)).contents
        name = ctypes.string_at(span.ptr, span.len).decode()
        scalar = ctypes.cast(attrs.attrs[i], ctypes.POINTER(_Scalar)).contents
        if attrs.types[i] != _ATTR_SCALAR or scalar.dtype not in _INTEGER_ATTRS:
            raise TypeError(f"host call attribute {name!r}: only integer scalars are supported")
        values[name] = int(
            ctypes.cast(scalar.value, ctypes.POINTER(_INTEGER_ATTRS[scalar.dtype]))[0]
        )
    return values


def _error(frame: _CallFrame, message: str) -> int:
    """An XLA_FFI_Error for `message` (XLA copies the message)."""
    api = ctypes.cast(frame.api, ctypes.POINTER(_Api)).contents
    args = _ErrorCreateArgs(
        struct_size=ctypes.sizeof(_ErrorCreateArgs),
        extension_start=None,
        message=message.encode(errors="replace"),
        errc=_ERROR_INTERNAL,
    )
    return api.error_create(ctypes.byref(args))


def _handler(name: str, fn: Target):
    def handle(frame_pointer):
        frame = frame_pointer.contents
        try:
            if frame.extension_start and frame.extension_start.contents.type == _METADATA_EXTENSION:
                extension = ctypes.cast(frame.extension_start, ctypes.POINTER(_MetadataExtension))
                metadata = extension.contents.metadata.contents
                metadata.api_version.major_version = _API_MAJOR
                metadata.api_version.minor_version = _API_MINOR
                metadata.traits = 0
                return None
            if frame.stage != _EXECUTE:
                return None
            fn(_views(frame.args), _views(frame.rets), _attrs(frame.attrs))
            return None
        except Exception as err:  # an exception must not cross into XLA's C++
            return _error(frame, f"host call {name!r} failed: {type(err).__name__}: {err}")

    return _HandlerType(handle)


_HANDLERS: dict[str, object] = {}  # keeps each C function pointer alive
_LOCK = threading.Lock()


def register(name: str, fn: Target) -> None:
    """Make `fn` the CPU FFI target `name` of this process (once per name).

    In a program whose batch is split over several devices, XLA gathers the arguments
    and every device makes the same call on the whole batch."""
    with _LOCK:
        if name in _HANDLERS:
            raise ValueError(f"host call {name!r} is already registered")
        handler = _handler(name, fn)
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
        _HANDLERS[name] = handler


def call(name: str, results: Sequence[jax.ShapeDtypeStruct], *args, **attrs: int) -> tuple:
    """Call the registered target `name` on `args` from a traced program.

    Under `vmap`, every argument and result gains the same leading batch axes
    (`vmap_method="broadcast_all"`). `attrs` are integers baked into the program."""
    fn = jax.ffi.ffi_call(name, tuple(results), vmap_method="broadcast_all")
    return tuple(fn(*args, **{k: np.int64(v) for k, v in attrs.items()}))
