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
