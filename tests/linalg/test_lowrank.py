"""Low-rank tools (Bernacchia et al. (2018) Sec. 6-7): Sherman-Morrison / Woodbury running
inverses and the randomized SVD (Halko et al. 2011), each against a direct inverse,
pseudo-inverse or SVD computed on the host in float64 by NumPy.

Test matrices have a known spectrum Q diag(lam) Q^T with eigenvalues in [0.5, 2] (condition
<= 4) and updates scaled so that the updated matrix stays as well conditioned, so the
per-dtype tolerances of tests/helpers.py apply with a small factor.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arraycurv import backend
from arraycurv.linalg.lowrank import (
    randomized_pinv,
    randomized_psd_inverse,
    randomized_svd,
    running_inverse,
    sherman_morrison,
    woodbury,
)
from tests.helpers import RTOL, assert_close, dtypes, seeds


def _spd(seed, n):
    g = np.random.default_rng(seed)
    q = backend.to_numpy(backend.orthogonal(seed, (n, n)))
    lam = g.uniform(0.5, 2.0, n)
    return (q * lam) @ q.T


def _low_rank(seed, m, n, r):
    g = np.random.default_rng(seed)
    u = np.linalg.qr(g.standard_normal((m, r)))[0]
    v = np.linalg.qr(g.standard_normal((n, r)))[0]
    return (u * g.uniform(0.5, 2.0, r)) @ v.T


def _to(xp, a, dtype):
    return backend.from_numpy(a, xp, dtype=dtype)


def _tol(dtype, factor=10.0):
    return factor * RTOL[dtype]


# ----------------------------------------------------------------- Sherman-Morrison / Woodbury
@given(n=st.integers(1, 7), seed=seeds, dtype=dtypes, scale=st.floats(0.05, 0.5))
@settings(max_examples=15)
def test_sherman_morrison_matches_direct_inverse(xp, n, seed, dtype, scale):
    a = _spd(seed, n)
    u = np.random.default_rng(seed + 1).standard_normal(n)
    u = u / np.linalg.norm(u)
    inv = _to(xp, np.linalg.inv(a), dtype)
    got = sherman_morrison(inv, _to(xp, u, dtype), scale=scale)
    assert_close(got, np.linalg.inv(a + scale * np.outer(u, u)), like=inv, rtol=_tol(dtype))
    v = np.random.default_rng(seed + 2).standard_normal(n) / np.sqrt(n)
    got = sherman_morrison(inv, _to(xp, u, dtype), _to(xp, v, dtype), scale=scale)
    assert_close(got, np.linalg.inv(a + scale * np.outer(u, v)), like=inv, rtol=_tol(dtype))


@given(n=st.integers(2, 7), k=st.integers(1, 4), seed=seeds, dtype=dtypes)
@settings(max_examples=15)
def test_woodbury_matches_direct_inverse(xp, n, k, seed, dtype):
    a = _spd(seed, n)
    g = np.random.default_rng(seed + 1)
    u = g.standard_normal((n, k)) / np.sqrt(n * k)
    v = g.standard_normal((n, k)) / np.sqrt(n * k)
    c = g.standard_normal((k, k)) / k
    inv = _to(xp, np.linalg.inv(a), dtype)
    ux, vx, cx = _to(xp, u, dtype), _to(xp, v, dtype), _to(xp, c, dtype)
    assert_close(woodbury(inv, ux), np.linalg.inv(a + u @ u.T), like=inv, rtol=_tol(dtype))
    assert_close(woodbury(inv, ux, c=0.7), np.linalg.inv(a + 0.7 * u @ u.T), like=inv, rtol=_tol(dtype))
    assert_close(woodbury(inv, ux, vx, c=cx), np.linalg.inv(a + u @ c @ v.T), like=inv, rtol=_tol(dtype))


def test_woodbury_rank_one_is_sherman_morrison(xp):
    a = _spd(3, 5)
    u = np.random.default_rng(0).standard_normal(5) / 3
    inv = _to(xp, np.linalg.inv(a), "float64")
    ux = _to(xp, u, "float64")
    assert_close(woodbury(inv, ux[:, None], c=0.3), sherman_morrison(inv, ux, scale=0.3), like=inv)


@given(n=st.integers(2, 6), m=st.integers(1, 3), steps=st.integers(1, 6), seed=seeds, dtype=dtypes,
       decay=st.floats(0.5, 0.99))
@settings(max_examples=15)
def test_running_inverse_tracks_the_moving_average(xp, n, m, steps, seed, dtype, decay):
    a = _spd(seed, n)
    inv = _to(xp, np.linalg.inv(a), dtype)
    g = np.random.default_rng(seed + 1)
    for _ in range(steps):
        rows = g.standard_normal((m, n))
        inv = running_inverse(inv, _to(xp, rows, dtype), decay=decay)
        a = decay * a + (1 - decay) / m * rows.T @ rows
    assert_close(inv, np.linalg.inv(a), like=inv, rtol=_tol(dtype, 100.0))
    assert_close(inv, xp.matrix_transpose(inv), rtol=RTOL[dtype])


def test_running_inverse_with_damping_start_and_decay_one(xp):
    d, n = 0.5, 4
    inv = _to(xp, np.eye(n) / d, "float64")
    rows = np.random.default_rng(1).standard_normal((2, n))
    got = running_inverse(inv, _to(xp, rows, "float64"), decay=0.9)
    assert_close(got, np.linalg.inv(0.9 * d * np.eye(n) + 0.05 * rows.T @ rows), like=inv)
    same = running_inverse(inv, _to(xp, rows, "float64"), decay=1.0)
    assert_close(same, inv, like=inv)
    assert same is not inv


# ----------------------------------------------------------------- randomized SVD
@given(m=st.integers(2, 12), n=st.integers(2, 12), seed=seeds, dtype=dtypes, data=st.data())
@settings(max_examples=15)
def test_randomized_svd_is_exact_for_low_rank(xp, m, n, seed, dtype, data):
    r = data.draw(st.integers(1, min(m, n)))
    a = _low_rank(seed, m, n, r)
    ax = _to(xp, a, dtype)
    u, s, vt = randomized_svd(ax, r, seed=seed)
    assert_close(xp.matmul(u * s[None, :], vt), a, like=ax, rtol=_tol(dtype))
    assert_close(s, np.linalg.svd(a, compute_uv=False)[:r], like=ax, rtol=_tol(dtype))
    assert_close(randomized_pinv(ax, r, seed=seed, rcond=0.1), np.linalg.pinv(a, rcond=0.1), like=ax,
                 rtol=_tol(dtype))


@given(n=st.integers(2, 12), seed=seeds, dtype=dtypes, data=st.data())
@settings(max_examples=15)
def test_randomized_psd_inverse_matches_direct(xp, n, seed, dtype, data):
    r = data.draw(st.integers(1, n))
    b = _low_rank(seed, n, r, r)
    a = b @ b.T  # PSD of rank r, nonzero eigenvalues in [0.25, 4]
    ax = _to(xp, a, dtype)
    d = data.draw(st.floats(0.1, 2.0))
    assert_close(randomized_psd_inverse(ax, r, damping=d, seed=seed), np.linalg.inv(a + d * np.eye(n)), like=ax,
                 rtol=_tol(dtype))
    assert_close(randomized_psd_inverse(ax, r, seed=seed, rcond=0.01), np.linalg.pinv(a, rcond=0.01, hermitian=True),
                 like=ax, rtol=_tol(dtype))


def test_randomized_svd_full_rank_equals_svd_and_same_on_every_backend(xp):
    a = np.random.default_rng(0).standard_normal((9, 6))
    u, s, vt = randomized_svd(_to(xp, a, "float64"), 6, seed=4)
    assert_close(s, np.linalg.svd(a, compute_uv=False), rtol=1e-10)
    assert_close(xp.matmul(u * s[None, :], vt), a, rtol=1e-10)
    un, sn, vtn = randomized_svd(a, 6, seed=4)
    assert_close(u, un, rtol=1e-10)


def test_inputs_are_not_modified(xp):
    a = _spd(0, 4)
    inv = _to(xp, np.linalg.inv(a), "float64")
    before = backend.to_numpy(inv).copy()
    u = _to(xp, np.ones(4) / 2, "float64")
    sherman_morrison(inv, u)
    woodbury(inv, u[:, None])
    running_inverse(inv, u[None, :], decay=0.5)
    randomized_psd_inverse(inv, 2, damping=0.1)
    np.testing.assert_array_equal(backend.to_numpy(inv), before)


# ----------------------------------------------------------------- errors
def test_errors_name_the_argument():
    inv = np.eye(3)
    with pytest.raises(ValueError, match="u: expected shape"):
        sherman_morrison(inv, np.ones(4))
    with pytest.raises(ValueError, match="u: expected an update that keeps the matrix invertible"):
        sherman_morrison(inv, np.array([1.0, 0.0, 0.0]), scale=-1.0)
    with pytest.raises(ValueError, match="inv: expected finite values"):
        sherman_morrison(np.full((3, 3), np.nan), np.ones(3))
    with pytest.raises(TypeError, match="u: expected an array"):
        sherman_morrison(inv, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="u: expected shape"):
        woodbury(inv, np.ones((4, 2)))
    with pytest.raises(ValueError, match="invertible"):
        woodbury(inv, np.eye(3)[:, :1], c=-1.0)
    with pytest.raises(ValueError, match="decay: expected"):
        running_inverse(inv, np.ones((1, 3)), decay=0.0)
    with pytest.raises(ValueError, match="rows: expected shape"):
        running_inverse(inv, np.ones((1, 4)), decay=0.5)
    with pytest.raises(ValueError, match="rank: expected"):
        randomized_svd(inv, 0)
    with pytest.raises(ValueError, match="damping: expected"):
        randomized_psd_inverse(inv, 2, damping=-1.0)
    with pytest.raises(ValueError, match="a: expected square"):
        randomized_psd_inverse(np.ones((3, 2)), 1)
