"""Assertion helpers and hypothesis strategies shared by the tests."""

from __future__ import annotations

import array_api_compat
import numpy as np
from hypothesis import strategies as st

from arraycurv import backend

# --------------------------------------------------------------------- tolerances
#: Relative tolerances per dtype for results computed two independent ways.
RTOL = {"float64": 1e-9, "float32": 2e-4}
#: Tolerances for central finite differences (step chosen per dtype in fd_step).
FD_RTOL = {"float64": 1e-5, "float32": 3e-2}


def dtype_name(x) -> str:
    """'float64' or 'float32' for an array or a dtype of any namespace."""
    dt = getattr(x, "dtype", x)
    s = str(dt)
    return "float32" if "float32" in s else "float64" if "float64" in s else s


def fd_step(dtype) -> float:
    """Central-difference step: about eps^(1/3)."""
    return 1e-5 if dtype_name(dtype) == "float64" else 3e-2


def assert_like(result, like, *, name="result"):
    """Assert ``result`` is in the namespace, dtype and device of the array ``like``."""
    xp = array_api_compat.array_namespace(like)
    assert array_api_compat.array_namespace(result) is xp, (
        f"{name}: namespace {backend.namespace_name(result)} != {backend.namespace_name(like)}"
    )
    assert result.dtype == like.dtype, f"{name}: dtype {result.dtype} != {like.dtype}"
    assert backend.device_of(result) == backend.device_of(like), (
        f"{name}: device {backend.device_of(result)} != {backend.device_of(like)}"
    )


def assert_close(result, expected, *, like=None, rtol=None, atol=0.0, name="result"):
    """Assert values match and, given ``like``, that namespace/dtype/device match too.

    ``result`` and ``expected`` may be arrays of any namespace or tuples of arrays. The
    comparison is ``|r - e| <= atol + rtol * max|e|`` (a norm-wise relative test, so
    that cancellation in single entries does not hide real errors or fail at rounding).
    """
    if isinstance(result, (tuple, list)):
        assert isinstance(expected, (tuple, list)) and len(result) == len(expected), (
            f"{name}: expected a tuple of {len(expected)} arrays, got {len(result)}"
        )
        for i, (r, e) in enumerate(zip(result, expected)):
            assert_close(r, e, like=like, rtol=rtol, atol=atol, name=f"{name}[{i}]")
        return
    if like is not None:
        assert_like(result, like, name=name)
    r = backend.to_numpy(result).astype(np.float64)
    e = np.asarray(backend.to_numpy(expected), dtype=np.float64)
    assert r.shape == e.shape, f"{name}: shape {r.shape} != expected {e.shape}"
    if rtol is None:
        rtol = RTOL[dtype_name(result)]
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    err = float(np.max(np.abs(r - e))) if e.size else 0.0
    assert err <= atol + rtol * scale, (
        f"{name}: max abs error {err:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * max|expected| {scale:.3e}"
    )


# --------------------------------------------------------------------- strategies
dtypes = st.sampled_from(["float64", "float32"])
seeds = st.integers(min_value=0, max_value=2**31 - 1)
batch_sizes = st.integers(min_value=1, max_value=10)


@st.composite
def widths(draw, min_depth=1, max_depth=5, min_width=1, max_width=8):
    """Layer widths (n0, n1, ..., nL) of a network of depth L in [min_depth, max_depth]."""
    depth = draw(st.integers(min_depth, max_depth))
    return tuple(draw(st.integers(min_width, max_width)) for _ in range(depth + 1))


@st.composite
def deep_linear_cases(draw, min_depth=1, max_depth=5, max_width=8, max_batch=10):
    """(widths, batch size, seed) for a deep linear network case."""
    w = draw(widths(min_depth=min_depth, max_depth=max_depth, max_width=max_width))
    b = draw(st.integers(1, max_batch))
    s = draw(seeds)
    return w, b, s


def assert_tree_close(result, expected, *, like=None, rtol=None, atol=0.0, name="result"):
    """Like :func:`assert_close` for tuples of arrays, with ONE scale for the whole tuple.

    The test is ``max |r - e| <= atol + rtol * max |e|`` over all leaves together (a
    norm-wise test on the flat parameter vector), so that a tensor whose entries are much
    smaller than the others is not held to a tighter absolute accuracy than rounding of
    the whole computation allows. Namespace/dtype/device are checked leaf by leaf.
    """
    assert isinstance(result, (tuple, list)) and isinstance(expected, (tuple, list)), f"{name}: expected tuples"
    assert len(result) == len(expected), f"{name}: expected a tuple of {len(expected)} arrays, got {len(result)}"
    rs, es = [], []
    for i, (r, e) in enumerate(zip(result, expected)):
        if like is not None:
            assert_like(r, like, name=f"{name}[{i}]")
        rn = backend.to_numpy(r).astype(np.float64)
        en = np.asarray(backend.to_numpy(e), dtype=np.float64)
        assert rn.shape == en.shape, f"{name}[{i}]: shape {rn.shape} != expected {en.shape}"
        rs.append(rn.ravel())
        es.append(en.ravel())
    if not rs:
        return
    if rtol is None:
        rtol = RTOL[dtype_name(result[0])]
    assert_close(np.concatenate(rs), np.concatenate(es), rtol=rtol, atol=atol, name=name)


# ----------------------------------------------------------- model architectures
@st.composite
def mlp_models(draw, max_depth=4, max_width=8):
    """MLPs (arraycurv.mlp) of depth 1..max_depth, widths 1..max_width, any activation."""
    from arraycurv import mlp
    from arraycurv.models.layers import ACTIVATIONS

    depth = draw(st.integers(1, max_depth))
    sizes = tuple(draw(st.integers(1, max_width)) for _ in range(depth + 1))
    return mlp(sizes, draw(st.sampled_from(ACTIVATIONS)), bias=draw(st.booleans()))


@st.composite
def cnn_models(draw, max_channels=3, min_hw=6, max_hw=10, pools=None):
    """Conv -> activation -> [pool] -> flatten -> dense on min_hw..max_hw square-ish images
    with 1..max_channels channels; the pooling (one of ``pools``) is added when the conv
    output has room for a 2 x 2 window."""
    from arraycurv import Sequential
    from arraycurv.models.layers import ACTIVATIONS, Activation, AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d
    from arraycurv.models.sequential import _shapes

    pools = (AvgPool2d(2), MaxPool2d(2), MaxPool2d(2, 1)) if pools is None else pools
    c, h, w = (draw(st.integers(1, max_channels)), draw(st.integers(min_hw, max_hw)),
               draw(st.integers(min_hw, max_hw)))
    o = draw(st.integers(1, max_channels))
    conv = Conv2d(c, o, draw(st.integers(2, 3)), stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)),
                  bias=draw(st.booleans()))
    pool = draw(st.sampled_from(pools))
    head = (conv, Activation(draw(st.sampled_from(ACTIVATIONS))))
    if _shapes(Sequential(head + (Flatten(),), (c, h, w)))[1][0] // o >= 4:  # room for a 2x2 pooling
        head = head + (pool,)
    feat = Sequential(head + (Flatten(),), (c, h, w))
    return Sequential(feat.layers + (Dense(_shapes(feat)[1][0], draw(st.integers(1, 3))),), (c, h, w))
