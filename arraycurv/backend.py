"""The backend layer: everything the array API standard does not provide.

This is the only module of :mod:`arraycurv` that imports NumPy directly. It gives

* the namespace (and device) of the inputs through ``array_api_compat``, with a clear
  error when inputs mix namespaces or devices (:func:`namespace_of`, :func:`device_of`);
* the dtype policy: float64 by default, float32 supported (:func:`float_dtype`,
  :func:`check_float`);
* seeded random numbers that give the same values on every namespace for the same seed
  (:func:`rng`, :func:`normal`, :func:`uniform`, :func:`integers`, :func:`orthogonal`):
  they are drawn with NumPy's PCG64 generator in float64 and then moved to the
  requested namespace, dtype and device;
* conversion to NumPy for plotting and saving (:func:`to_numpy`) and from NumPy into a
  namespace (:func:`from_numpy`), device moves (:func:`to_device`), and the lookup of a
  namespace by name (:func:`namespace_by_name`) for command lines.

See ``docs/backend.md`` and spec section 1.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "BACKENDS",
    "apply_memory_policy",
    "apply_thread_policy",
    "batch_inner_matrix",
    "blas_threads",
    "check_all_finite",
    "check_float",
    "check_same_device",
    "device_of",
    "float_dtype",
    "from_numpy",
    "host_namespace",
    "host_scalar",
    "integers",
    "is_array",
    "namespace_by_name",
    "namespace_name",
    "namespace_of",
    "namespace_of_pairs",
    "normal",
    "orthogonal",
    "rng",
    "set_malloc_thresholds",
    "set_num_threads",
    "to_device",
    "to_numpy",
    "uniform",
    "window_gather",
    "window_scatter_add",
    "writable_view",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (a string for a number, a list for an array).

    A ``TypeError`` that is also a ``ValueError``, so that callers catching either see it
    (re-exported by :mod:`arraycurv.validation`, its public home).
    """

    __module__ = "arraycurv.validation"


def _check_namespace(xp: Any, name: str = "xp"):
    """Return ``xp`` if it is an array namespace (a module with ``asarray`` and ``float64``).

    Raises :class:`ArgumentTypeError` naming the argument otherwise, e.g. for the string
    ``"numpy"`` (use :func:`namespace_by_name` for names).
    """
    if isinstance(xp, str) or not (hasattr(xp, "asarray") and hasattr(xp, "float64")):
        hint = f" (use backend.namespace_by_name({xp!r}))" if isinstance(xp, str) else ""
        raise ArgumentTypeError(f"{name}: expected an array namespace such as numpy, got {xp!r}{hint}")
    return xp


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_seed(seed) -> None:
    """A seed NumPy accepts: a non-negative int, a sequence of them, or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return
    want = "seed: expected a non-negative integer (or a sequence of them) or a numpy Generator"
    entries = list(seed) if isinstance(seed, (tuple, list)) else [seed]
    if not entries or not all(_is_int(e) for e in entries):
        raise ArgumentTypeError(f"{want}, got {seed!r}")
    if any(e < 0 for e in entries):
        raise ValueError(f"{want}, got {seed!r}")


def _check_shape_arg(shape, name: str = "shape", ndim: int | None = None) -> tuple:
    try:
        out = tuple(int(s) for s in shape)
        ok = all(not isinstance(s, bool) and int(s) == s and s >= 0 for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or (ndim is not None and len(out) != ndim):
        want = f"a tuple of {ndim} non-negative integers" if ndim else "a tuple of non-negative integers"
        raise ValueError(f"{name}: expected {want}, got {shape!r}")
    return out


def _check_finite_scalar(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"{name}: expected a finite real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


#: Backend names understood by :func:`namespace_by_name`.
BACKENDS = ("numpy", "array_api_strict", "torch", "cupy")


_ARRAY_TYPES: set = set()


def is_array(x: Any) -> bool:
    """True for an array of any namespace supported by ``array_api_compat``.

    Array types seen once are remembered, so the check is a set lookup afterwards.
    """
    t = type(x)
    if t in _ARRAY_TYPES:
        return True
    ok = array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, complex, bool))
    if ok:
        _ARRAY_TYPES.add(t)
    return ok


def _leaves(name: str, value: Any):
    """Yield (name, array) pairs from an array, a tuple/list of arrays or nested tuples."""
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _leaves(f"{name}[{i}]", v)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(f"{name}[{k!r}]", v)
    elif is_array(value):
        yield name, value
    elif hasattr(value, "__dataclass_fields__"):
        for field in value.__dataclass_fields__:
            yield from _leaves(f"{name}.{field}", getattr(value, field))


def _named(args: Iterable[Any], kwargs: Mapping[str, Any]):
    pairs = []
    for i, a in enumerate(args):
        pairs.extend(_leaves(f"argument {i}", a))
    for k, v in kwargs.items():
        pairs.extend(_leaves(k, v))
    return pairs


def namespace_name(xp_or_array: Any) -> str:
    """Short name of a namespace (``'numpy'``, ``'array_api_strict'``, ``'torch'``, ...)."""
    xp = xp_or_array
    if is_array(xp_or_array):
        xp = array_api_compat.array_namespace(xp_or_array)
    name = getattr(xp, "__name__", str(xp))
    if name.startswith("array_api_compat."):
        name = name.split(".")[1]
    return name


def namespace_of(*args: Any, **named: Any):
    """Array-API namespace shared by all array arguments, checking namespaces and devices.

    Arguments may be arrays, tuples of arrays (parameters) or small dataclasses holding
    arrays. Give them as keywords so that an error can name the argument.

    Raises
    ------
    TypeError
        If no array is given, or the arrays come from different namespaces; the message
        names the first argument whose namespace differs.
    ValueError
        If the arrays live on different devices (see :func:`check_same_device`).
    """
    pairs = _named(args, named)
    if not pairs:
        for k, v in list(named.items()) + [(f"argument {i}", a) for i, a in enumerate(args)]:
            if v is not None:
                raise ArgumentTypeError(f"{k}: expected an array (or a tuple of arrays), got {_kind(v)}")
        raise TypeError("arrays: expected at least one array argument, got none")
    first_name, first = pairs[0]
    xp = array_api_compat.array_namespace(first)
    first_type = type(first)
    for name, arr in pairs[1:]:
        # arrays of the same Python type share a namespace: skip the (slow) lookup
        other = xp if type(arr) is first_type else array_api_compat.array_namespace(arr)
        if other is not xp:
            raise TypeError(
                f"{name}: expected an array of namespace {namespace_name(xp)!r} "
                f"(like {first_name}), got one of namespace {namespace_name(other)!r}"
            )
    if not array_api_compat.is_numpy_namespace(xp):  # NumPy arrays all live on the CPU
        check_same_device(pairs)
    return xp


def _kind(v) -> str:
    if isinstance(v, (tuple, list)) and v:
        return f"a {type(v).__name__} of {type(v[0]).__name__}"
    return type(v).__name__


_NAMESPACE_BY_TYPE: dict = {}


def _namespace_of_type(arr):
    t = type(arr)
    xp = _NAMESPACE_BY_TYPE.get(t)
    if xp is None:
        xp = array_api_compat.array_namespace(arr)
        _NAMESPACE_BY_TYPE[t] = xp
    return xp


def namespace_of_pairs(pairs):
    """Namespace shared by ``(name, array)`` pairs, checking namespaces and devices.

    The fast core of :func:`namespace_of` for callers that already hold named arrays
    (:func:`arraycurv.validation.check_call`): the namespace is looked up once per array
    type. Raises ``TypeError`` naming a pair that is not an array or whose namespace
    differs from the first, and ``ValueError`` for a device mismatch.
    """
    if not pairs:
        raise TypeError("arrays: expected at least one array argument, got none")
    first_name, first = pairs[0]
    if not is_array(first):
        raise TypeError(f"{first_name}: expected an array, got {type(first).__name__}")
    xp = _namespace_of_type(first)
    first_type = type(first)
    for name, arr in pairs:
        if type(arr) is not first_type:
            if not is_array(arr):
                raise TypeError(f"{name}: expected an array, got {type(arr).__name__}")
            other = _namespace_of_type(arr)
            if other is not xp:
                raise TypeError(
                    f"{name}: expected an array of namespace {namespace_name(xp)!r} "
                    f"(like {first_name}), got one of namespace {namespace_name(other)!r}"
                )
    if first_type is not np.ndarray:  # NumPy arrays all live on the CPU
        check_same_device(pairs)
    return xp


_ISFINITE = np.isfinite
_ALL = np.logical_and.reduce
_VDOT = np.vdot


def _is_numpy_array(x) -> bool:
    """True for a NumPy ndarray (exactly, not a subclass or a wrapper)."""
    return type(x) is np.ndarray


def writable_view(a: Any, shape) -> Any:
    """``a`` reshaped to ``shape`` as a *view* that writes through to ``a``, or None.

    The array API leaves open whether ``reshape`` copies, so an assignment into its result
    may be lost; NumPy reshapes a strided block (a slice of a matrix) along split axes
    without copying. Returns the view for a writeable NumPy array whose reshape needs no
    copy, and None otherwise (other namespaces, read-only arrays), where the caller
    falls back to functional updates. The explicit GGN writes each Kronecker block through
    such a view in one strided copy (:mod:`arraycurv.curvature.sequential`).
    """
    if type(a) is not np.ndarray or not a.flags.writeable:
        return None
    v = a.view()
    try:
        v.shape = tuple(shape)  # raises instead of copying
    except AttributeError:
        return None
    return v


def window_gather(x: Any, kernel, stride, out_hw, *, batch_inner: bool = False) -> Any:
    """The im2col gather of a NumPy ``x`` (..., Hp, Wp) -> (..., kh*kw, Ho, Wo), or None.

    Entry [..., i*kw + j, u, v] is x[..., stride_h*u + i, stride_w*v + j]: a strided
    window view (``sliding_window_view``) copied once into the gather's layout, about
    twice as fast as stacking the kh*kw slices (the generic form, which other namespaces
    use: :func:`arraycurv.models._image._im2col`). None for other namespaces.

    ``batch_inner=True`` (``x`` of shape (B, C, Hp, Wp)): the same (B, C, kh*kw, Ho, Wo)
    values, stored batch-inner, as (C, kh*kw, B, Ho, Wo) in memory (the result is a
    transposed view). A convolution's per-sample products then read their columns with
    the long stride B*Ho*Wo, which OpenBLAS runs about 1.6x faster for a first layer's
    few output channels (LeNet-5: 6 channels, 75 x 784 columns per sample).
    """
    if type(x) is not np.ndarray:
        return None
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(-2, -1))  # (..., H', W', kh, kw)
    v = v[..., : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :, :]
    if batch_inner and x.ndim == 4:
        b, c = x.shape[:2]
        g = np.ascontiguousarray(np.transpose(v, (1, 4, 5, 0, 2, 3)))  # (C, kh, kw, B, Ho, Wo)
        return np.transpose(g.reshape(c, kh * kw, b, ho, wo), (2, 0, 1, 3, 4))
    n = x.ndim - 2
    v = np.transpose(v, tuple(range(n)) + (n + 2, n + 3, n, n + 1))  # (..., kh, kw, Ho, Wo)
    return np.ascontiguousarray(v).reshape(x.shape[:-2] + (kh * kw, ho, wo))


def batch_inner_matrix(cols: Any) -> Any:
    """The (K, B*L) matrix view of a NumPy (B, K, L) array stored batch-inner (K-major,
    as :func:`window_gather` with ``batch_inner=True`` leaves it), or None (other layouts,
    other namespaces). One GEMM over the whole batch can then replace B small ones.
    """
    if type(cols) is not np.ndarray or cols.ndim != 3:
        return None
    b, k, el = cols.shape
    s = cols.itemsize
    if cols.strides != (el * s, b * el * s, s):
        return None
    return np.transpose(cols, (1, 0, 2)).reshape(k, b * el)  # a view: the strides above


def window_scatter_add(cols: Any, kernel, stride, in_hw) -> Any:
    """The adjoint of :func:`window_gather` for NumPy ``cols`` (..., kh*kw, Ho, Wo): the
    columns scatter-added into a fresh zero array (..., Hp, Wp), or None.

    One in-place ``np.add`` per kernel offset on a strided view of the new array, about
    1.4x faster than ``array_api_extra.at(...).add``, which writes each updated window
    back a second time (the generic form, :func:`arraycurv.models._image._col2im`). None
    for other namespaces.
    """
    if type(cols) is not np.ndarray:
        return None
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = cols.shape[-2:]
    total = np.zeros(cols.shape[:-3] + tuple(in_hw), dtype=cols.dtype)
    span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    for i in range(kh):
        for j in range(kw):
            view = total[..., i : i + span_h : sh, j : j + span_w : sw]
            np.add(view, cols[..., i * kw + j, :, :], out=view)
    return total


def _all_finite_numpy(arrays) -> bool:
    """True if every entry of the NumPy (real floating) ``arrays`` is finite.

    First the sum of squares of each array (``vdot``: one BLAS pass, about 4x faster than
    ``isfinite`` on large arrays, and it neither warns nor raises on overflow): it is
    finite only if every entry is. Where it is not (a NaN/Inf entry, or squares beyond the
    dtype's range) the exact ``isfinite`` test decides, whatever the caller's ``np.errstate``.
    """
    for a in arrays:
        if a.flags.c_contiguous and math.isfinite(_VDOT(a, a)):
            continue
        if not _ALL(_ISFINITE(a), None):
            return False
    return True


def _all_finite(xp, arrays) -> bool:
    """True if every entry of ``arrays`` (one floating dtype) is finite, with one fused
    reduction and one host synchronization. On other namespaces: the sum of all entries
    is finite only if every entry is (False also when the sum overflows: the caller then
    checks array by array, :func:`check_all_finite`)."""
    if not arrays:
        return True
    if all(type(a) is np.ndarray for a in arrays):
        return _all_finite_numpy(arrays)
    with np.errstate(all="ignore"):  # NaN/Inf in the sum is the answer, not a warning
        flats = [xp.reshape(a, (-1,)) for a in arrays]
        flat = xp.concat(flats) if len(flats) > 1 else flats[0]
        return math.isfinite(float(xp.sum(flat)))


def check_all_finite(xp, pairs) -> None:
    """Raise ``ValueError`` naming the first of the ``(name, array)`` pairs that holds NaN
    or Inf. All arrays share one floating dtype (checked before).

    One fused reduction and one host synchronization: the sum of all entries is finite
    only if every entry is (an overflow of the sum falls back to the exact per-array
    check). NumPy arrays take a direct NumPy path (this module is the one that may).
    """
    if not pairs or _all_finite(xp, [a for _, a in pairs]):
        return
    for name, a in pairs:
        if not bool(xp.all(xp.isfinite(a))):
            n_bad = int(xp.sum(xp.astype(~xp.isfinite(a), xp.int64)))
            raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/Inf entries in shape {tuple(a.shape)}")


def device_of(x: Any):
    """Device of an array (``array_api_compat.device``)."""
    return array_api_compat.device(x)


def check_same_device(pairs) -> None:
    """Raise ``ValueError`` naming the argument whose device differs from the first."""
    if not pairs:
        return
    first_name, first = pairs[0]
    dev = device_of(first)
    for name, arr in pairs[1:]:
        d = device_of(arr)
        if d != dev:
            raise ValueError(
                f"{name}: expected an array on device {dev!r} (like {first_name}), got one on {d!r}"
            )


def float_dtype(xp, dtype: Any = None):
    """Resolve a dtype request for namespace ``xp``: None -> float64 (the default policy).

    Accepts ``None``, a dtype of ``xp``, or the strings ``'float64'`` / ``'float32'``.
    """
    _check_namespace(xp)
    if dtype is None:
        return xp.float64
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        return getattr(xp, dtype)
    if dtype == xp.float64 or dtype == xp.float32:
        return dtype
    raise ValueError(f"dtype: expected float32 or float64 of {namespace_name(xp)}, got {dtype!r}")


def check_float(x: Any, name: str, xp=None) -> None:
    """Raise ``TypeError`` unless ``x`` is a real float32 or float64 array."""
    if not is_array(x):
        raise ArgumentTypeError(f"{name}: expected a float32 or float64 array, got {type(x).__name__}")
    xp = xp or array_api_compat.array_namespace(x)
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any namespace (and device) into a NumPy array, for plots and files."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_jax_array(x):
        return np.asarray(x)
    try:
        return np.from_dlpack(x)
    except Exception:  # pragma: no cover - depends on the namespace
        return np.asarray(x)


def host_namespace():
    """The NumPy namespace, for host-side work on data already converted by
    :func:`to_numpy` (figures, tables, files); library math never uses it."""
    return np


def host_scalar(x: Any) -> Any:
    """A NumPy scalar (``np.float64(1.0)``, ``np.bool_(True)``...) as the Python number it
    holds; anything else unchanged. For tables and JSON."""
    return x.item() if isinstance(x, np.generic) else x


def from_numpy(a: Any, xp, *, dtype: Any = None, device: Any = None, copy: bool = True):
    """Move a NumPy array (or nested list) into namespace ``xp`` with the given dtype/device.

    ``dtype`` defaults to float64 for floating input (the library's policy); integer input
    keeps an integer dtype. ``copy=False`` lets floating input that already has the
    dtype be used without a host copy (for NumPy the result may then share memory with
    ``a``: for read-only uses such as the vectors SciPy hands a linear operator).
    """
    _check_namespace(xp)
    a = np.asarray(a)
    if a.dtype.kind == "f" or dtype is not None:
        dt = float_dtype(xp, dtype) if (dtype is None or isinstance(dtype, str)) else dtype
        # Convert on the host first so that every namespace rounds float64 -> float32 alike.
        a = a.astype(np.float32 if dt == xp.float32 else a.dtype if a.dtype.kind != "f" else np.float64,
                     copy=copy or not a.flags.writeable)  # a view of read-only memory warns in torch
        out = xp.asarray(a, device=device) if device is not None else xp.asarray(a)
        return xp.astype(out, dt) if out.dtype != dt else out
    return xp.asarray(a, device=device) if device is not None else xp.asarray(a)


def to_device(x: Any, device: Any):
    """Move an array to ``device`` within its namespace."""
    if not is_array(x):
        raise ArgumentTypeError(f"x: expected an array, got {type(x).__name__}")
    return array_api_compat.to_device(x, device)


def namespace_by_name(name: str):
    """Return the array-API namespace called ``name`` (see :data:`BACKENDS`).

    Raises
    ------
    ValueError
        If the name is unknown, or the library is not installed / has no usable device
        (e.g. ``'cupy'`` on a machine without a GPU).
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    try:
        mod = importlib.import_module(name)
        if name == "cupy":
            mod.cuda.runtime.getDeviceCount()  # raises without a usable GPU
    except Exception as exc:
        raise ValueError(
            f"backend: {name!r} is not available here ({type(exc).__name__}: {exc}); "
            f"install it (see README, e.g. pip install 'arraycurv[gpu]') or choose numpy"
        ) from exc
    return array_api_compat.array_namespace(mod.asarray([1.0]))


# ----------------------------------------------------------------------------- random
def rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A seeded NumPy ``Generator`` (PCG64); the source of every random number.

    Passing a ``Generator`` returns it unchanged, so functions can accept either a seed
    or a generator. Draws are made on the host in float64 and then converted, so the
    same seed gives the same values on every namespace and device.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("seed: expected an int or a numpy Generator for reproducibility, got None")
    _check_seed(seed)
    return np.random.default_rng(seed)


def normal(seed, shape, xp=np, *, dtype: Any = None, device: Any = None, scale: float = 1.0):
    """Standard normal draws times ``scale`` in namespace ``xp`` (same values everywhere)."""
    _check_namespace(xp)
    shape = _check_shape_arg(shape)
    scale = _check_finite_scalar(scale, "scale")
    g = rng(seed)
    return from_numpy(scale * g.standard_normal(shape), xp, dtype=dtype, device=device)


def uniform(seed, shape, xp=np, *, low=0.0, high=1.0, dtype: Any = None, device: Any = None):
    """Uniform draws on [low, high) in namespace ``xp`` (same values everywhere)."""
    _check_namespace(xp)
    shape = _check_shape_arg(shape)
    low, high = _check_finite_scalar(low, "low"), _check_finite_scalar(high, "high")
    if not high >= low:
        raise ValueError(f"high: expected a number >= low = {low!r}, got {high!r}")
    g = rng(seed)
    return from_numpy(g.uniform(low, high, size=shape), xp, dtype=dtype, device=device)


def integers(seed, low: int, high: int, shape, xp=np, *, device: Any = None):
    """Integer draws on [low, high) as an int64 array of ``xp``."""
    _check_namespace(xp)
    shape = _check_shape_arg(shape)
    if isinstance(low, bool) or not isinstance(low, (int, np.integer)):
        raise ArgumentTypeError(f"low: expected an integer, got {low!r}")
    if isinstance(high, bool) or not isinstance(high, (int, np.integer)) or high <= low:
        raise ValueError(f"high: expected an integer > low = {low!r}, got {high!r}")
    g = rng(seed)
    a = g.integers(low, high, size=shape, dtype=np.int64)
    return xp.asarray(a, device=device) if device is not None else xp.asarray(a)


def orthogonal(seed, shape, xp=np, *, gain: float = 1.0, dtype: Any = None, device: Any = None):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013; Huh S.I.3 init).

    For shape (m, n) the result has orthonormal rows if m <= n, orthonormal columns
    otherwise (QR of a Gaussian matrix with the sign convention of Mezzadri 2007).
    """
    _check_namespace(xp)
    m, n = _check_shape_arg(shape, ndim=2)
    gain = _check_finite_scalar(gain, "gain")
    g = rng(seed)
    a = g.standard_normal((max(m, n), min(m, n)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if m < n:
        q = q.T
    return from_numpy(gain * q, xp, dtype=dtype, device=device)


# ------------------------------------------------------------------ BLAS threads
#: Environment variable holding the default number of BLAS threads of :func:`blas_threads`.
BLAS_THREADS_ENV = "ARRAYCURV_BLAS_THREADS"


class _BlasThreads:
    """Context manager behind :func:`blas_threads` (restores the previous limits on exit)."""

    def __init__(self, n: int):
        self.n = n
        self._limits = self._torch = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
            threadpool_limits = None
        if threadpool_limits is not None:
            self._limits = threadpool_limits(limits=self.n, user_api="blas")
        import sys

        torch = sys.modules.get("torch")  # only when the caller uses PyTorch already
        if torch is not None and hasattr(torch, "get_num_threads"):
            self._torch = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self.n

    def __exit__(self, *exc):
        if self._torch is not None:
            import sys

            sys.modules["torch"].set_num_threads(self._torch)
        if self._limits is not None:
            self._limits.restore_original_limits()
        return False


#: Environment variable of the allocator policy (:func:`apply_memory_policy`).
MALLOC_ENV = "ARRAYCURV_MALLOC"
#: glibc ``mallopt`` parameters: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def set_malloc_thresholds(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's ``malloc`` mmap and trim thresholds (``mallopt``) for this process.

    The passes here allocate many temporaries of 0.1-30 MB per call (activations, their
    tangents, the per-layer products). With glibc's defaults each of them above 128 KiB
    is mapped from the OS and unmapped on release, and freed heap memory above 128 KiB
    is returned to the OS at once, so every call page-faults its temporaries in again:
    on the MLP 64-64-64-10 with B = 256 the gradient, GGN-vector product and HVP take
    1.5-2.8x longer than with the thresholds raised (``benchmarks/compare_peers.py``,
    docs/backend.md "Memory allocator"). Allocations below ``mmap_threshold`` then come
    from the heap, and up to ``trim_threshold`` bytes of freed memory stay with the
    process for the next call.

    Parameters
    ----------
    mmap_threshold, trim_threshold : int
        Bytes, >= 128 KiB (glibc's default).

    Returns
    -------
    bool
        True if glibc accepted both settings; False where there is no glibc (macOS,
        Windows, musl), which leaves the allocator as it is.
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (128 << 10):
            raise ValueError(f"{name}: expected an integer number of bytes >= 131072, got {value!r}")
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no glibc
        return False
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    ok_trim = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    return bool(ok_mmap) and bool(ok_trim)


def apply_memory_policy() -> bool:
    """Apply ``ARRAYCURV_MALLOC`` (default ``on``: :func:`set_malloc_thresholds` with its
    defaults; ``keep``: leave the allocator alone); called once by ``import arraycurv``.
    Another value warns and keeps the allocator. Returns True if the thresholds were set."""
    raw = os.environ.get(MALLOC_ENV, "on").strip().lower()
    if raw == "keep":
        return False
    if raw != "on":
        import warnings

        warnings.warn(f"{MALLOC_ENV}: expected 'on' or 'keep', got {raw!r}; allocator left as it is",
                      RuntimeWarning, stacklevel=2)
        return False
    return set_malloc_thresholds()


#: The persistent limit set by :func:`set_num_threads` (threadpoolctl limiter, threads).
_PROCESS_THREADS: dict = {"limiter": None, "n": None, "torch": None}


def _parse_threads(raw: str):
    """``ARRAYCURV_BLAS_THREADS``: a positive integer, or ``keep`` (leave the pools alone)."""
    if raw.strip().lower() == "keep":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{BLAS_THREADS_ENV}: expected a positive integer or 'keep', got {raw!r}")
    return n


def set_num_threads(n: int | None) -> int | None:
    """Set the process's BLAS threads (NumPy/SciPy via threadpoolctl, and PyTorch's intra-op
    pool when it is imported) to ``n`` until changed again; ``None`` restores the limits the
    process had before the first call. Returns the previous setting (None: not set).

    ``import arraycurv`` calls it once with ``ARRAYCURV_BLAS_THREADS`` (default 1;
    ``keep`` leaves the pools alone): the library's thread policy (docs/backend.md, "BLAS
    threads"). The networks here are small, and a second OpenBLAS thread gains at most
    1.6x on an idle machine but loses up to 10x when another process competes for the
    cores, while one thread loses at most 1.35x.

    Parameters
    ----------
    n : int or None
        Threads, >= 1, or None to restore.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: expected a positive integer or None, got {n!r}")
    import sys

    state = _PROCESS_THREADS
    previous = state["n"]
    torch = sys.modules.get("torch")
    if n is None:
        if state["limiter"] is not None:
            state["limiter"].restore_original_limits()
        if state["torch"] is not None and torch is not None:
            torch.set_num_threads(state["torch"])
        state.update(limiter=None, n=None, torch=None)
        return previous
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of arraycurv
        threadpool_limits = None
    if threadpool_limits is not None:
        limiter = threadpool_limits(limits=n, user_api="blas")
        if state["limiter"] is None:  # keep the first limiter: it holds the original limits
            state["limiter"] = limiter
    if torch is not None and hasattr(torch, "set_num_threads"):
        if state["torch"] is None:
            state["torch"] = torch.get_num_threads()
        torch.set_num_threads(n)
    state["n"] = n
    return previous


def apply_thread_policy() -> int | None:
    """Apply ``ARRAYCURV_BLAS_THREADS`` (default 1, ``keep``: leave alone) with
    :func:`set_num_threads`; called once by ``import arraycurv``. A malformed value warns
    and leaves the pools alone. Returns the threads set (None: left alone)."""
    try:
        n = _parse_threads(os.environ.get(BLAS_THREADS_ENV, "1"))
    except ValueError as exc:
        import warnings

        warnings.warn(f"{exc}; BLAS threads left as they are", RuntimeWarning, stacklevel=2)
        return None
    if n is not None:
        set_num_threads(n)
    return n


def blas_threads(n: int | None = None) -> _BlasThreads:
    """Context manager limiting the host BLAS (OpenBLAS, MKL, BLIS) and PyTorch's intra-op
    pool to ``n`` threads while the block runs (the library's thread policy, docs/backend.md).

    The networks of this library are small: their matrices are a few hundred wide, where a
    second BLAS thread gains at most 1.5x on an idle machine and loses up to 10x when another
    process competes for the cores (OpenBLAS threads spin-wait). So the long-running entry
    points (the experiments, the command line, the sweeps) run with one thread unless told
    otherwise, and a user who calls the verbs in a loop can do the same::

        with arraycurv.backend.blas_threads(1):
            for step in range(n_steps):
                value, grad = ac.value_and_grad(model, params, batch)

    Parameters
    ----------
    n : int, optional
        Threads, >= 1. ``None`` (the default) reads the environment variable
        ``ARRAYCURV_BLAS_THREADS`` and falls back to 1.

    Notes
    -----
    The BLAS limit uses threadpoolctl (a dependency of scikit-learn; without it only
    PyTorch is limited). Entering costs about 0.1-1 ms (threadpoolctl inspects the loaded
    libraries), so wrap a loop, not each call. PyTorch is limited only when it is already
    imported; CuPy and other device backends are unaffected.
    """
    if n is None:
        n = _parse_threads(os.environ.get(BLAS_THREADS_ENV, "1"))
        if n is None:  # "keep": a context that changes nothing
            import contextlib

            return contextlib.nullcontext(None)
        name = BLAS_THREADS_ENV
    else:
        name = "n"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: expected a positive integer, got {n!r}")
    return _BlasThreads(n)
