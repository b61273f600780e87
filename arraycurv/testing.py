"""Public test helpers, in the spirit of ``array_api_extra.testing``.

* :func:`assert_close` / :func:`assert_tree_close` / :func:`assert_like`: compare a result
  with an independent reference, and check that it lives in the namespace, dtype and
  device of an input (``like=``), with dtype-aware default tolerances (:data:`RTOL`).
* :func:`materialize`: the matrix of a matrix-free product over parameter-shaped tuples
  (the reference form every fast curvature routine is tested against).
* :func:`default_form`: the generic default implementation of a ``singledispatch``
  generic, bypassing the overrides a model family registers (``ggn_vp`` of a DeepLinear
  net through jvp/vjp instead of its Kronecker closed form).
* hypothesis strategies for models and data: :func:`dtypes`, :func:`seeds`,
  :func:`batch_sizes`, :func:`widths`, :func:`deep_linear_cases`, :func:`mlp_models`,
  :func:`cnn_models`. Hypothesis is a test-only dependency: it is imported when a
  strategy is built, never by ``import arraycurv`` or ``import arraycurv.testing``.

Comparisons run on the host in float64 (:func:`arraycurv.backend.to_numpy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

from . import backend
from .params import flatten, num_params, unflatten

__all__ = [
    "FD_RTOL",
    "RTOL",
    "assert_close",
    "assert_like",
    "assert_tree_close",
    "batch_sizes",
    "cnn_models",
    "deep_linear_cases",
    "default_form",
    "dtype_name",
    "dtypes",
    "fd_step",
    "materialize",
    "mlp_models",
    "seeds",
    "widths",
]

# --------------------------------------------------------------------- tolerances
#: Relative tolerances per dtype for results computed two independent ways.
RTOL = {"float64": 1e-9, "float32": 2e-4}
#: Tolerances for central finite differences (step chosen per dtype in :func:`fd_step`).
FD_RTOL = {"float64": 1e-5, "float32": 3e-2}


def dtype_name(x: Any) -> str:
    """'float64' or 'float32' for an array or a dtype of any namespace."""
    s = str(getattr(x, "dtype", x))
    return "float32" if "float32" in s else "float64" if "float64" in s else s


def fd_step(dtype: Any) -> float:
    """Central-difference step for ``dtype``: about eps^(1/3)."""
    return 1e-5 if dtype_name(dtype) == "float64" else 3e-2


def _host64(a: Any):
    """A float64 host (NumPy) copy of an array of any namespace, or of a number/list."""
    hnp = backend.host_namespace()
    return hnp.asarray(backend.to_numpy(a) if backend.is_array(a) else a, dtype=hnp.float64)


def assert_like(result: Any, like: Any, *, name: str = "result") -> None:
    """Assert ``result`` is in the namespace, dtype and device of the array ``like``."""
    xp = array_api_compat.array_namespace(like)
    assert array_api_compat.array_namespace(result) is xp, (
        f"{name}: namespace {backend.namespace_name(result)} != {backend.namespace_name(like)}"
    )
    assert result.dtype == like.dtype, f"{name}: dtype {result.dtype} != {like.dtype}"
    assert backend.device_of(result) == backend.device_of(like), (
        f"{name}: device {backend.device_of(result)} != {backend.device_of(like)}"
    )


def _check_values(r, e, rtol: float, atol: float, name: str) -> None:
    assert r.shape == e.shape, f"{name}: shape {r.shape} != expected {e.shape}"
    hnp = backend.host_namespace()
    scale = float(hnp.max(hnp.abs(e))) if e.size else 0.0
    err = float(hnp.max(hnp.abs(r - e))) if e.size else 0.0
    assert err <= atol + rtol * scale, (
        f"{name}: max abs error {err:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * max|expected| {scale:.3e}"
    )


def assert_close(actual: Any, expected: Any, *, like: Any = None, rtol: float | None = None, atol: float = 0.0,
                 name: str = "result") -> None:
    """Assert values match and, given ``like``, that namespace/dtype/device match too.

    Parameters
    ----------
    actual, expected
        Arrays of any namespace (``expected`` may also be a NumPy array or a number), or
        tuples/lists of them, compared leaf by leaf.
    like
        An input array: each leaf of ``actual`` must share its namespace, dtype and device.
    rtol, atol
        The test is ``max|a - e| <= atol + rtol * max|e|`` (norm-wise, so cancellation in
        single entries neither hides real errors nor fails at rounding). ``rtol``
        defaults to :data:`RTOL` of the dtype of ``actual``.
    name
        How the failure message calls ``actual``.
    """
    if isinstance(actual, (tuple, list)):
        assert isinstance(expected, (tuple, list)) and len(actual) == len(expected), (
            f"{name}: expected a tuple of {len(expected)} arrays, got {len(actual)}"
        )
        for i, (r, e) in enumerate(zip(actual, expected)):
            assert_close(r, e, like=like, rtol=rtol, atol=atol, name=f"{name}[{i}]")
        return
    if like is not None:
        assert_like(actual, like, name=name)
    _check_values(_host64(actual), _host64(expected), RTOL[dtype_name(actual)] if rtol is None else rtol, atol, name)


def assert_tree_close(actual: Sequence[Any], expected: Sequence[Any], *, like: Any = None, rtol: float | None = None,
                      atol: float = 0.0, name: str = "result") -> None:
    """Like :func:`assert_close` for tuples of arrays, with ONE scale for the whole tuple.

    The test is ``max |a - e| <= atol + rtol * max |e|`` over all leaves together (a
    norm-wise test on the flat parameter vector), so that a tensor whose entries are much
    smaller than the others is not held to a tighter absolute accuracy than rounding of
    the whole computation allows. Namespace/dtype/device are checked leaf by leaf.
    """
    assert isinstance(actual, (tuple, list)) and isinstance(expected, (tuple, list)), f"{name}: expected tuples"
    assert len(actual) == len(expected), f"{name}: expected a tuple of {len(expected)} arrays, got {len(actual)}"
    if not actual:
        return
    rs, es = [], []
    for i, (r, e) in enumerate(zip(actual, expected)):
        if like is not None:
            assert_like(r, like, name=f"{name}[{i}]")
        rn, en = _host64(r), _host64(e)
        assert rn.shape == en.shape, f"{name}[{i}]: shape {rn.shape} != expected {en.shape}"
        rs.append(rn.ravel())
        es.append(en.ravel())
    hnp = backend.host_namespace()
    rtol = RTOL[dtype_name(actual[0])] if rtol is None else rtol
    _check_values(hnp.concatenate(rs), hnp.concatenate(es), rtol, atol, name)


# ------------------------------------------------------------------ reference forms
def _flat(out: Any):
    """A product's value as one vector: a tuple of arrays is flattened, an array raveled."""
    if isinstance(out, (tuple, list)):
        return flatten(out)
    xp = array_api_compat.array_namespace(out)
    return xp.reshape(out, (-1,))


def materialize(op: Callable[[tuple], Any], shapes: Sequence[Sequence[int]], *, like: Any = None):
    """The matrix of a matrix-free product over parameter-shaped tuples.

    Column ``j`` is ``op(e_j)`` flattened, with ``e_j`` the j-th basis vector of the flat
    parameter space (C order, tensors in order; see :mod:`arraycurv.params`) split into
    a tuple of arrays of ``shapes``. A product returning a tuple (``ggn_vp``, ``hvp``)
    gives the P x P matrix; one returning an array (``jvp``) gives its (size, P) matrix.

    Parameters
    ----------
    op
        The product ``v -> A v`` for a tuple ``v`` of arrays of ``shapes``.
    shapes
        Parameter shapes (``arraycurv.param_shapes(model)``).
    like
        An array whose namespace, dtype and device the basis vectors (and so the result)
        take; NumPy float64 when omitted.

    Examples
    --------
    >>> import array_api_strict as xp
    >>> import arraycurv as ac
    >>> from arraycurv.testing import materialize
    >>> a = materialize(lambda v: (2.0 * v[0],), ((2,),), like=xp.ones(1, dtype=xp.float64))
    >>> a.shape
    (2, 2)
    """
    if like is None:
        like = backend.host_namespace().zeros(0)
    xp = array_api_compat.array_namespace(like)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=like.dtype, device=backend.device_of(like))
    cols = [_flat(op(unflatten(eye[j, :], shapes))) for j in range(p)]
    return xp.stack(cols, axis=1)


def default_form(fn: Callable) -> Callable:
    """The generic default of a ``functools.singledispatch`` generic ``fn``.

    This is the implementation registered for ``object``, written only in terms of the
    passes (jvp, vjp, ...) and the loss; every fast form a model family registers is
    tested against it. ``fn`` may also be a wrapper around the generic (its
    ``__wrapped__`` chain is followed).

    Raises
    ------
    TypeError
        If ``fn`` is not (a wrapper of) a singledispatch generic.
    """
    g = fn
    while g is not None and not hasattr(g, "dispatch"):
        g = getattr(g, "__wrapped__", None)
    if g is None:
        raise TypeError(f"fn: expected a functools.singledispatch generic function, got {fn!r}")
    return g.dispatch(object)


# ------------------------------------------------------------ hypothesis strategies
def _st():
    """``hypothesis.strategies``, imported when a strategy is built (test-only dependency)."""
    from hypothesis import strategies

    return strategies


def dtypes():
    """The floating dtypes under test, as strings: 'float64' and 'float32'."""
    return _st().sampled_from(["float64", "float32"])


def seeds():
    """Seeds for :func:`arraycurv.backend.rng`."""
    return _st().integers(min_value=0, max_value=2**31 - 1)


def batch_sizes(max_batch: int = 10):
    """Batch sizes 1..max_batch."""
    return _st().integers(min_value=1, max_value=max_batch)


def widths(min_depth: int = 1, max_depth: int = 5, min_width: int = 1, max_width: int = 8):
    """Layer widths (n0, n1, ..., nL) of a network of depth L in [min_depth, max_depth]."""
    st = _st()
    return st.integers(min_depth, max_depth).flatmap(
        lambda depth: st.tuples(*[st.integers(min_width, max_width) for _ in range(depth + 1)])
    )


def deep_linear_cases(min_depth: int = 1, max_depth: int = 5, max_width: int = 8, max_batch: int = 10):
    """(widths, batch size, seed) for a deep linear network case."""
    st = _st()
    return st.tuples(widths(min_depth=min_depth, max_depth=max_depth, max_width=max_width),
                     st.integers(1, max_batch), seeds())


def mlp_models(max_depth: int = 4, max_width: int = 8):
    """MLPs (:func:`arraycurv.mlp`) of depth 1..max_depth, widths 1..max_width, any activation."""
    from .models.layers import ACTIVATIONS
    from .models.sequential import mlp

    st = _st()
    return st.builds(mlp, widths(max_depth=max_depth, max_width=max_width), st.sampled_from(ACTIVATIONS),
                     bias=st.booleans())


def _out_shape(layers, shape):
    from .models.layers import layer_output_shape

    for layer in layers:
        shape = tuple(layer_output_shape(layer, shape))
    return shape


def cnn_models(max_channels: int = 3, min_hw: int = 6, max_hw: int = 10, pools=None):
    """Small CNNs: conv -> activation -> [pool] -> flatten -> dense.

    Images of min_hw..max_hw square-ish pixels with 1..max_channels channels; the pooling
    (one of ``pools``, default average 2, max 2 and max 2 with stride 1) is added when the
    conv output has room for a 2 x 2 window.
    """
    from .models.layers import ACTIVATIONS, Activation, AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d
    from .models.sequential import Sequential

    st = _st()
    pools = (AvgPool2d(2), MaxPool2d(2), MaxPool2d(2, 1)) if pools is None else pools

    @st.composite
    def _cnn(draw):
        c, h, w = (draw(st.integers(1, max_channels)), draw(st.integers(min_hw, max_hw)),
                   draw(st.integers(min_hw, max_hw)))
        o = draw(st.integers(1, max_channels))
        conv = Conv2d(c, o, draw(st.integers(2, 3)), stride=draw(st.integers(1, 2)),
                      padding=draw(st.integers(0, 1)), bias=draw(st.booleans()))
        pool = draw(st.sampled_from(pools))
        head = (conv, Activation(draw(st.sampled_from(ACTIVATIONS))))
        if math.prod(_out_shape(head + (Flatten(),), (c, h, w))) // o >= 4:  # room for a 2x2 pooling
            head = head + (pool,)
        feat = head + (Flatten(),)
        return Sequential(feat + (Dense(_out_shape(feat, (c, h, w))[0], draw(st.integers(1, 3))),), (c, h, w))

    return _cnn()
