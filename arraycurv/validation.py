"""Argument checks that raise errors naming the argument, the expectation and what came.

Every message reads ``"<argument>: expected <what>, got <what came>"``, naming the
argument the caller passed. Three layers:

* array checks (:func:`check_ndim`, :func:`check_shape`, :func:`check_matrix`,
  :func:`check_square`, :func:`check_finite`, :func:`check_symmetric`,
  :func:`check_params`);
* scalar checks for hyperparameters (:func:`check_real`, :func:`check_int`, :func:`check_bool`,
  :func:`check_q`, :func:`check_nonneg`, :func:`check_rcond`, :func:`check_lr`,
  :func:`check_clip`, :func:`check_positive_int`): the only scalar validators of the
  package;
* the front end :func:`check_call`, which validates a whole call of a model routine at
  the public boundary (namespace, device, parameter shapes, dtypes, the batch against
  the model and the loss, tangents, finiteness) in one pass and returns the namespace.

Validate once (docs/design.md, "Validation at the boundary"): a public routine calls
:func:`check_call` (or the scalar checks) once and hands ``xp`` to an implementation
that trusts its inputs; nested calls go to the trusted implementations
(:func:`validated` builds such a public generic from a singledispatch implementation).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import array_api_compat

from . import backend

__all__ = [
    "ArgumentTypeError",
    "batch_leaves",
    "check_arrays",
    "check_bool",
    "check_call",
    "check_clip",
    "check_finite",
    "check_int",
    "check_lr",
    "check_matrix",
    "check_ndim",
    "check_nonneg",
    "check_params",
    "check_positive_int",
    "check_q",
    "check_rcond",
    "check_real",
    "check_shape",
    "check_square",
    "check_symmetric",
    "validated",
]


ArgumentTypeError = backend.ArgumentTypeError  # a TypeError that is also a ValueError


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _got(x) -> str:
    return f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__


# ----------------------------------------------------------------------------- arrays
def check_ndim(x: Any, ndim: int | Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is ``ndim`` (or one of them)."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    _require_array(x, name)
    if x.ndim not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(f"{name}: expected an array with {want} dimensions, got shape {tuple(x.shape)}")


def check_shape(x: Any, shape: Sequence[int | None], name: str) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` is a wildcard)."""
    _require_array(x, name)
    got = tuple(x.shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ValueError(f"{name}: expected shape {_fmt_shape(tuple(shape))}, got {got}")


def check_matrix(x: Any, name: str) -> None:
    """Raise unless ``x`` has at least two dimensions (a matrix or a batch of them)."""
    _require_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a matrix (ndim >= 2), got shape {tuple(x.shape)}")


def check_square(x: Any, name: str) -> None:
    """Raise unless the last two axes of ``x`` are equal."""
    check_matrix(x, name)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., n, n), got shape {tuple(x.shape)}")


def check_finite(x: Any, name: str, xp=None) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf."""
    xp = xp or array_api_compat.array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        n_bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/Inf entries in shape {tuple(x.shape)}")


def check_symmetric(a: Any, name: str, xp=None, *, rtol: float | None = None) -> None:
    """Raise ``ValueError`` unless ``a`` (..., n, n) is symmetric to a relative tolerance.

    The tolerance defaults to ``1000 * eps`` of the dtype, relative to the largest entry.
    """
    xp = xp or array_api_compat.array_namespace(a)
    check_square(a, name)
    if rtol is None:
        rtol = 1000.0 * float(xp.finfo(a.dtype).eps)
    scale = float(xp.max(xp.abs(a))) if a.size != 0 else 0.0
    asym = float(xp.max(xp.abs(a - xp.matrix_transpose(a)))) if a.size != 0 else 0.0
    if asym > rtol * max(scale, float(xp.finfo(a.dtype).smallest_normal)):
        raise ValueError(
            f"{name}: expected a symmetric matrix, got max |A - A^T| = {asym:.3g} "
            f"(relative {asym / max(scale, 1e-300):.3g} > rtol {rtol:.3g})"
        )


def check_params(params: Any, shapes: Sequence[Sequence[int]], name: str = "params") -> None:
    """Raise unless ``params`` is a tuple of arrays with exactly the given shapes."""
    if not isinstance(params, (tuple, list)):
        raise ArgumentTypeError(f"{name}: expected a tuple of {len(shapes)} arrays, got {type(params).__name__}")
    if len(params) != len(shapes):
        want = list(map(tuple, shapes))
        raise ValueError(f"{name}: expected {len(shapes)} arrays (shapes {want}), got {len(params)}")
    for i, (p, s) in enumerate(zip(params, shapes)):
        check_shape(p, tuple(s), f"{name}[{i}]")


def _require_array(x, name) -> None:
    if not hasattr(x, "shape") or not backend.is_array(x):
        raise ArgumentTypeError(f"{name}: expected an array, got {type(x).__name__}")


# ----------------------------------------------------------------------------- scalars
def _bounds_text(lo, lo_open, hi, hi_open) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def check_real(value: Any, name: str, *, lo=None, lo_open=False, hi=None, hi_open=False, allow_inf=False,
               allow_none=False, want: str | None = None) -> float | None:
    """A real scalar (Python number, NumPy scalar or 0-d array) as ``float``.

    Parameters
    ----------
    value
        The argument. Booleans and strings are rejected.
    name : str
        The caller's name of the argument, for the message.
    lo, hi : float, optional
        Bounds; ``lo_open`` / ``hi_open`` make them strict.
    allow_inf : bool
        Accept ``+inf`` (e.g. ``q = math.inf`` for SGD); NaN is never accepted.
    allow_none : bool
        Return None for None.
    want : str, optional
        The description used in every message ("a real number >= 1 (math.inf for SGD)");
        by default each failure gets its own ("a real number", "a finite real number",
        "a number >= 1").

    Raises
    ------
    ArgumentTypeError
        Not a real scalar (a ``TypeError`` and a ``ValueError``).
    ValueError
        NaN, an infinity not allowed, or out of bounds.
    """
    if value is None and allow_none:
        return None
    pre = "None or " if allow_none else ""
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok_type and backend.is_array(value) and getattr(value, "ndim", None) == 0:
        ok_type = not isinstance(value, bool) and _is_real_dtype(value)
    if not ok_type:
        raise ArgumentTypeError(f"{name}: expected {want or pre + 'a real number'}, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not (allow_inf and v > 0)):
        default = pre + ("a real number or math.inf" if allow_inf else "a finite real number")
        raise ValueError(f"{name}: expected {want or default}, got {value!r}")
    too_low = lo is not None and (v <= lo if lo_open else v < lo)
    too_high = hi is not None and (v >= hi if hi_open else v > hi)
    if too_low or too_high:
        default = pre + "a number" + _bounds_text(lo, lo_open, hi, hi_open)
        raise ValueError(f"{name}: expected {want or default}, got {value!r}")
    return v


def _is_real_dtype(a) -> bool:
    try:
        xp = array_api_compat.array_namespace(a)
        return bool(xp.isdtype(a.dtype, ("real floating", "integral")))
    except Exception:  # pragma: no cover - exotic array types
        return False


def check_int(value: Any, name: str, *, lo=None, hi=None, allow_none=False, want: str | None = None) -> int | None:
    """An integer (Python or NumPy int, not bool) within ``[lo, hi]`` as ``int``.

    Raises ``ArgumentTypeError`` for a non-integer and ``ValueError`` out of bounds; the
    message is ``want`` or "an integer >= lo" (or "in [lo, hi]").
    """
    if value is None and allow_none:
        return None
    desc = want or (("None or " if allow_none else "") + "an integer" + _bounds_text(lo, False, hi, False))
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: expected {desc}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(f"{name}: expected {desc}, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: expected {desc}, got {value!r}")
    return int(v)


def check_positive_int(value: Any, name: str, *, want: str | None = None) -> int:
    """An integer >= 1 (``want`` defaults to "a positive integer")."""
    return check_int(value, name, lo=1, want=want or "a positive integer")


def check_q(q: Any, name: str = "q") -> float:
    """Fractional order q >= 1 of q-NGD (Huh 2020 eq 12); ``math.inf`` (SGD) allowed."""
    return check_real(q, name, lo=1, allow_inf=True, want="a real number >= 1 (math.inf for SGD)")


def check_nonneg(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """A real number >= 0 (damping, eps, tolerances); ``allow_inf`` accepts ``math.inf``."""
    want = "a real number >= 0" + (" (math.inf allowed)" if allow_inf else " (finite)")
    return check_real(value, name, lo=0, allow_inf=allow_inf, want=want)


def check_rcond(rcond: Any, name: str = "rcond") -> float | None:
    """Eigenvalue cut-off relative to the largest eigenvalue: None (the default) or >= 0."""
    return check_real(rcond, name, lo=0, allow_none=True, want="None or a finite real number >= 0")


def check_lr(lr: Any, name: str = "lr") -> float:
    """A learning rate: a finite real number > 0."""
    return check_real(lr, name, lo=0, lo_open=True, want="a finite real number > 0")


def check_clip(clip: Any, name: str = "clip") -> float | None:
    """An update-norm limit: None (no clipping) or a finite real number > 0."""
    return check_real(clip, name, lo=0, lo_open=True, allow_none=True, want="None or a finite real number > 0")


def check_arrays(pairs) -> Any:
    """Validate ``(name, array)`` pairs that are not a model call; return their namespace.

    One namespace and device (lists and other non-arrays rejected), one real floating
    dtype (float32 or float64, that of the first pair), finite values; the error names the
    first misfit, e.g. ``"v: expected dtype float64 like basis, got float32"``.
    """
    xp = backend.namespace_of_pairs(pairs)
    name0, a0 = pairs[0]
    for name, a in pairs:
        backend.check_float(a, name, xp)
        if a.dtype != a0.dtype:
            raise TypeError(f"{name}: expected dtype {a0.dtype} like {name0}, got {a.dtype}")
    backend.check_all_finite(xp, pairs)
    return xp


def check_bool(value: Any, name: str) -> bool:
    """A flag: exactly True or False (not 0/1, a string or an array)."""
    if not isinstance(value, bool):
        got = _got(value) if getattr(value, "ndim", 0) else repr(value)  # arrays by shape
        raise ArgumentTypeError(f"{name}: expected True or False, got {got}")
    return value


# ----------------------------------------------------------------------------- the front end
@functools.singledispatch
def batch_leaves(batch, model, loss, name: str = "batch"):
    """Check the structure of ``batch`` and return ``(x, y, x_name, y_name, extra)``.

    The default accepts a tuple ``(x, y)``. A model family with another batch type
    registers it (deep linear networks register :class:`~arraycurv.models.LinearMoments`,
    which returns ``x = y = None`` and its statistics as ``extra``, a list of
    ``(name, array)`` pairs to check for namespace, dtype and finiteness).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        others = "".join(f" or {cls.__name__}" for cls in batch_leaves.registry if cls is not object)
        raise ArgumentTypeError(f"{name}: expected a tuple (x, y){others}, got {_got_batch(batch)}")
    return batch[0], batch[1], f"{name} x", f"{name} y", ()


def _got_batch(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of length {len(batch)}"
    return type(batch).__name__


_MODEL_GENERICS = None
_MODEL_INFO: dict = {}


def _model_generics():
    """(param_shapes, input_shape, output_shape, check_target_shape), imported on first use
    (models and losses import this module)."""
    global _MODEL_GENERICS
    if _MODEL_GENERICS is None:
        from .losses import check_target_shape
        from .models.base import input_shape, output_shape, param_shapes, stacked_tangents

        _MODEL_GENERICS = (param_shapes, input_shape, output_shape, check_target_shape, stacked_tangents)
    return _MODEL_GENERICS


def _model_info(model):
    """``(parameter shapes, input shape, output shape, stacked tangents)`` of a model, cached
    per model (models are frozen dataclasses: equal models share the entry)."""
    try:
        info = _MODEL_INFO.get(model)
    except TypeError:  # an unhashable object: not a model of arraycurv
        info = None
    if info is not None:
        return info
    param_shapes, input_shape, output_shape, _, stacked = _model_generics()
    shapes = tuple(tuple(s) for s in param_shapes(model))
    info = (shapes, tuple(input_shape(model)), tuple(output_shape(model)), bool(stacked(model)))
    try:
        if len(_MODEL_INFO) > 512:
            _MODEL_INFO.clear()
        _MODEL_INFO[model] = info
    except TypeError:
        pass
    return info


_NO_NAMES: dict = {}


def _check_tree(tree, shapes, name, pairs, lead_ok=False):
    """``tree`` a tuple/list of arrays of ``shapes`` (with common leading axes if
    ``lead_ok``); appends (name[i], array) to ``pairs``."""
    if type(tree) is tuple and len(tree) == len(shapes) and not lead_ok:  # fast path: exact shapes
        is_array = backend.is_array
        for p, s in zip(tree, shapes):
            if getattr(p, "shape", None) != s or not is_array(p):
                break
        else:
            pairs.extend(zip(_names(name, len(tree)), tree))
            return ()
    if not isinstance(tree, (tuple, list)):
        raise ArgumentTypeError(f"{name}: expected a tuple of {len(shapes)} arrays shaped like params, "
                                f"got {type(tree).__name__}")
    if len(tree) != len(shapes):
        raise ValueError(f"{name}: expected {len(shapes)} arrays (shapes {list(shapes)}), got {len(tree)}")
    lead = None
    for i, (p, s) in enumerate(zip(tree, shapes)):
        sh = getattr(p, "shape", None)
        if sh is None or not backend.is_array(p):
            raise ArgumentTypeError(f"{name}[{i}]: expected an array of shape {_fmt_shape(s)}, got {type(p).__name__}")
        sh = tuple(sh)
        if sh != s:
            n = len(s)
            if not lead_ok or len(sh) < n or sh[len(sh) - n:] != s:
                want = f"(..., {', '.join(map(str, s))})" if lead_ok else _fmt_shape(s)
                raise ValueError(f"{name}[{i}]: expected shape {want}, got {sh}")
        this = sh[: len(sh) - len(s)]
        if lead is None:
            lead = this
        elif this != lead:
            raise ValueError(f"{name}[{i}]: expected leading axes {lead} like {name}[0], got shape {sh}")
        pairs.append((f"{name}[{i}]", p))
    return lead or ()


@functools.lru_cache(maxsize=256)
def _names(name, n):
    return tuple(f"{name}[{i}]" for i in range(n))


def _check_input(model, x, name, pairs, in_shape):
    """``x`` of shape (B, *input_shape) with B >= 1."""
    if not backend.is_array(x) or not hasattr(x, "shape"):
        raise ArgumentTypeError(f"{name}: expected an array of shape (B, {', '.join(map(str, in_shape))}), "
                                f"got {type(x).__name__}")
    sh = tuple(x.shape)
    if len(sh) != len(in_shape) + 1:
        raise ValueError(f"{name}: expected an array with {len(in_shape) + 1} dimensions "
                         f"(B, {', '.join(map(str, in_shape))}), got shape {sh}")
    if sh[1:] != in_shape:
        layers = getattr(model, "layers", None)
        owner = f"layers[0] = {layers[0]!r}" if layers else type(model).__name__
        raise ValueError(f"{name}: expected shape (*, {', '.join(map(str, in_shape))}) for the input of "
                         f"{owner}, got {sh}")
    if sh[0] < 1:
        raise ValueError(f"{name}: expected a batch of at least one sample, got shape {sh}")
    pairs.append((name, x))
    return sh[0]


def check_call(model, params, *, batch=None, x=None, tangent=None, cotangent=None, loss=None, arrays=(),
               names: Mapping[str, str] | None = None, tangent_lead: bool | None = False):
    """Validate one call of a model routine at the public boundary; return its namespace.

    Checks, in one pass, with errors naming the caller's argument:

    * ``params`` is a tuple of arrays with exactly ``param_shapes(model)`` (which also
      rejects objects that are not models of arraycurv);
    * the batch ``(x, y)`` (or a family's own batch type, :func:`batch_leaves`), or the
      input ``x``: shape (B, *input_shape(model)) with B >= 1, and the targets ``y``
      against the loss and the output shape (:func:`arraycurv.losses.check_target_shape`);
    * ``tangent`` shaped like params (with common leading axes if ``tangent_lead``),
      ``cotangent`` of shape (B, *output_shape(model)) (leading axes allowed with
      ``tangent_lead``), and ``arrays``, extra ``(name, array)`` or
      ``(name, array, shape)`` entries (``None`` in ``shape`` is a wildcard);
    * a single namespace and device for all arrays, lists rejected where arrays belong;
    * one real floating dtype (float32 or float64) shared by params, inputs, tangents and
      float targets;
    * finite values everywhere (one fused reduction; on failure the first bad array is named).

    Parameters
    ----------
    model
        A model of arraycurv (DeepLinear, Sequential, ...).
    params : tuple of arrays
    batch, x, tangent, cotangent, loss, arrays
        What the routine takes; ``None`` skips the check.
    names : mapping, optional
        The caller's names for the roles: ``{"tangent": "v", "batch": "batch", "x": "x",
        "cotangent": "cotangent", "params": "params"}`` by default.
    tangent_lead : bool or None
        Allow leading axes on ``tangent``/``cotangent`` (several directions at once);
        None: as the model family allows (:func:`arraycurv.models.base.stacked_tangents`).

    Returns
    -------
    namespace
        The array-API namespace of the arguments.
    """
    key, leaves = _call_key(model, params, batch, x, tangent, cotangent, loss, arrays, names, tangent_lead)
    if key is not None:
        try:
            hit = _CALLS.get(key)
        except TypeError:  # an unhashable model, loss or dtype: no cache
            key = hit = None
        if hit is not None and _values_ok(hit, leaves, loss):
            return hit[0]
    xp, pairs, label = _check_call_full(model, params, batch, x, tangent, cotangent, loss, arrays, names,
                                        tangent_lead)
    if key is not None:
        _remember(key, leaves, xp, pairs, label)
    return xp


# The structural checks of a call (types, shapes, dtypes, namespace, device, batch sizes,
# target shapes) depend only on the model, the loss, the names and each array's
# (type, shape, dtype, device): a call with the same key passed them before. The value
# checks (finiteness of every float array, the range of integer labels) run on every call.
_CALLS: dict = {}


def _call_key(model, params, batch, x, tangent, cotangent, loss, arrays, names, tangent_lead):
    """``(key, leaves)`` of a call made of plain tuples of known array types, else
    ``(None, None)`` (such calls always take the full check)."""
    if type(params) is not tuple:
        return None, None
    leaves = [*params]
    head = [model, loss, tangent_lead, tuple(names.items()) if names else None, len(params)]
    if tangent is not None:
        if type(tangent) is not tuple:
            return None, None
        leaves += tangent
        head.append(len(tangent))
    if batch is not None:
        if type(batch) is not tuple or len(batch) != 2:
            return None, None
        leaves += batch
        head.append("batch")
    if x is not None:
        leaves.append(x)
        head.append("x")
    if cotangent is not None:
        leaves.append(cotangent)
        head.append("cotangent")
    for entry in arrays:
        head.append((entry[0], tuple(entry[2]) if len(entry) > 2 else None))
        leaves.append(entry[1])
    types = set(map(type, leaves))
    if not types <= backend._ARRAY_TYPES:
        return None, None
    head.extend([(type(a), a.shape, a.dtype, a.device) for a in leaves])
    return tuple(head), leaves


def _values_ok(hit, leaves, loss) -> bool:
    """The value checks of a call whose structure passed before: True if every float
    array is finite and the integer labels are in range (False: rerun the full check,
    which names the culprit)."""
    all_finite, floats, label = hit[1:]
    if not all_finite([leaves[i] for i in floats]):
        return False
    if label is not None:
        _MODEL_GENERICS[3](loss, leaves[label[0]], label[1], label[2])  # raises naming the labels
    return True


def _remember(key, leaves, xp, pairs, label):
    ids = {id(a) for _, a in pairs}
    floats = tuple(i for i, a in enumerate(leaves) if id(a) in ids)
    lab = None
    if label is not None:
        pos = [i for i, a in enumerate(leaves) if a is label[0]]
        if not pos:
            return
        lab = (pos[0], label[1], label[2])
    numpy_only = all(backend._is_numpy_array(a) for a in leaves)
    all_finite = backend._all_finite_numpy if numpy_only else functools.partial(backend._all_finite, xp)
    if len(_CALLS) > 1024:
        _CALLS.clear()
    _CALLS[key] = (xp, all_finite, floats, lab)


def _check_call_full(model, params, batch, x, tangent, cotangent, loss, arrays, names, tangent_lead):
    """The checks of :func:`check_call`; returns ``(xp, checked float pairs, label)`` with
    ``label = (targets, out_shape, name)`` for integer class labels (None otherwise)."""
    nm = names or _NO_NAMES
    shapes, in_shape, out_shape, stacked = _model_info(model)
    if tangent_lead is None:
        tangent_lead = stacked
    check_target_shape = _MODEL_GENERICS[3]
    pairs: list = []
    _check_tree(params, shapes, nm.get("params", "params"), pairs)
    n_param = len(pairs)
    ints = []  # integer arrays: namespace only
    label = None
    nb = None
    if batch is not None:
        bname = nm.get("batch", "batch")
        if type(batch) is tuple and len(batch) == 2:  # the common case, without dispatch
            bx, by, xname, yname, extra = batch[0], batch[1], f"{bname} x", f"{bname} y", ()
        else:
            bx, by, xname, yname, extra = batch_leaves(batch, model, loss, bname)
        pairs.extend(extra)
        if bx is not None:
            nb = _check_input(model, bx, xname, pairs, in_shape)
            ny = getattr(by, "shape", (nb,))
            if len(ny) and ny[0] != nb:
                raise ValueError(f"{bname}: expected x and y with the same batch size, got {nb} and {ny[0]}")
            if loss is not None:
                if check_target_shape(loss, by, (nb, *out_shape), yname):
                    pairs.append((yname, by))
                else:
                    ints.append((yname, by))
                    label = (by, (nb, *out_shape), yname)
            elif backend.is_array(by):
                pairs.append((yname, by))
            else:
                raise ArgumentTypeError(f"{yname}: expected an array, got {type(by).__name__}")
    if x is not None:
        nb = _check_input(model, x, nm.get("x", "x"), pairs, in_shape)
    if tangent is not None:
        _check_tree(tangent, shapes, nm.get("tangent", "tangent"), pairs, lead_ok=tangent_lead)
    if cotangent is not None:
        _check_cotangent(cotangent, nm.get("cotangent", "cotangent"), nb, out_shape, tangent_lead, pairs)
    for entry in arrays:
        aname, a = entry[0], entry[1]
        if not backend.is_array(a) or not hasattr(a, "shape"):
            raise ArgumentTypeError(f"{aname}: expected an array, got {type(a).__name__}")
        if len(entry) > 2:
            check_shape(a, entry[2], aname)
        pairs.append((aname, a))
    xp = backend.namespace_of_pairs(pairs + ints)
    _check_dtypes(xp, pairs, n_param)
    backend.check_all_finite(xp, pairs)
    return xp, pairs, label


def _check_cotangent(c, name, nb, out_shape, lead_ok, pairs):
    if not backend.is_array(c) or not hasattr(c, "shape"):
        raise ArgumentTypeError(f"{name}: expected an array, got {type(c).__name__}")
    want = ((nb,) if nb is not None else (None,)) + out_shape
    sh = tuple(c.shape)
    tail = sh[len(sh) - len(want):] if len(sh) >= len(want) else None
    fits = tail is not None and all(w is None or w == g for w, g in zip(want, tail))
    if not fits or (len(sh) != len(want) and not lead_ok):
        lead = "(m, ...) or " if lead_ok else ""
        raise ValueError(f"{name}: expected shape {lead}{_fmt_shape(want)}, got {sh}")
    pairs.append((name, c))


def _check_dtypes(xp, pairs, n_param):
    """One real floating dtype for every float argument (that of params[0])."""
    name0, p0 = pairs[0]
    dt = p0.dtype
    if dt != xp.float64 and dt != xp.float32:
        raise TypeError(f"{name0}: expected dtype float32 or float64, got {dt}")
    for name, a in pairs[1:]:
        if a.dtype != dt:
            like = "params" if n_param else name0
            if a.dtype != xp.float64 and a.dtype != xp.float32:
                raise TypeError(f"{name}: expected dtype float32 or float64 ({dt} like {like}), got {a.dtype}")
            raise TypeError(f"{name}: expected dtype {dt} (like {like}), got {a.dtype}")


# ----------------------------------------------------------------------------- public generics
def validated(impl):
    """Turn a check function into the public face of the singledispatch generic ``impl``.

    Usage (the validate-once pattern)::

        @functools.singledispatch
        def _ggn_vp(model, params, batch, v, loss=MSE(), *, xp): ...   # trusted default

        @validated(_ggn_vp)
        def ggn_vp(model, params, batch, v, loss=MSE()):
            \"\"\"Docstring of the public verb.\"\"\"
            return check_call(model, params, batch=batch, tangent=v, loss=loss, names={"tangent": "v"})

    ``ggn_vp(...)`` runs the check once and then the implementation registered for the
    model's type with ``xp=``. Implementations trust their inputs and call other verbs
    through ``verb.trusted(..., xp=xp)``; an override that does not cover a case defers
    with ``return verb.default(..., xp=xp)``. The public function keeps the generic's
    interface: ``ggn_vp.register(DeepLinear)(fn)`` registers a trusted implementation,
    ``ggn_vp.dispatch(cls)`` returns the validated implementation for ``cls`` (so
    ``ggn_vp.dispatch(object)`` is the validated generic default), ``ggn_vp.impl`` is the
    generic of trusted implementations. An implementation without an ``xp`` parameter
    is called without it (it validates itself).
    """

    def deco(check):
        dispatch = impl.dispatch

        def trusted(model, *args, xp, **kwargs):
            fn = dispatch(model.__class__)
            if _takes_xp(fn):
                return fn(model, *args, xp=xp, **kwargs)
            return fn(model, *args, **kwargs)

        @functools.wraps(check)
        def public(model, *args, **kwargs):
            xp = check(model, *args, **kwargs)
            fn = dispatch(model.__class__)
            if _takes_xp(fn):
                return fn(model, *args, xp=xp, **kwargs)
            return fn(model, *args, **kwargs)

        def validated_dispatch(cls):
            fn = dispatch(cls)

            @functools.wraps(fn)
            def run(model, *args, **kwargs):
                xp = check(model, *args, **kwargs)
                return fn(model, *args, xp=xp, **kwargs) if _takes_xp(fn) else fn(model, *args, **kwargs)

            return run

        def default(model, *args, xp, **kwargs):
            return impl.dispatch(object)(model, *args, xp=xp, **kwargs)

        public.register = impl.register
        public.registry = impl.registry
        public.dispatch = validated_dispatch
        public.impl = impl
        public.trusted = trusted
        public.default = default
        public.check = check
        del public.__wrapped__  # testing.default_form should see .dispatch, not the check
        return public

    return deco


_TAKES_XP: dict = {}


def _takes_xp(fn) -> bool:
    """Whether an implementation accepts ``xp=`` (cached per function)."""
    r = _TAKES_XP.get(fn)
    if r is None:
        try:
            params = inspect.signature(fn).parameters
            r = "xp" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):  # pragma: no cover - builtins
            r = False
        _TAKES_XP[fn] = r
    return r
