"""Linear algebra (spec 1.3): pseudo-inverse powers, Kronecker algebra, Sylvester solvers.

Every result is compared with something computed independently on the host in float64:
SciPy's ``fractional_matrix_power`` / ``solve_sylvester``, NumPy's ``pinv`` / ``kron`` /
``lstsq`` / ``solve`` / ``eigh`` on the materialized Kronecker (sum) matrix, closed forms
from the construction of the test matrices, or a loop over the batch.

Test matrices are built with a known spectrum, ``Q diag(lam) Q^T`` with ``Q`` from
``backend.orthogonal`` (a QR of ``backend.normal`` draws) and nonzero eigen/singular
values drawn in [0.5, 2]: this keeps condition numbers <= 4 per factor, so the per-dtype
tolerances of ``tests/helpers.py`` apply unchanged, and leaves a clean gap between zero
and nonzero eigenvalues, so explicit cut-offs (``rcond`` 0.1 / 0.05 / 0.01, chosen below
the smallest nonzero ratio) drop exactly the intended ones, also after float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.linalg import (
    kron,
    kron_matvec,
    kron_psd_power_apply,
    kron_solve,
    pinv_power,
    psd_power,
    solve_generalized_sylvester,
    solve_sylvester,
)
from tests.helpers import RTOL, assert_close, dtypes, seeds

POWERS = [-1.0, -0.5, 0.5, 1.0, 2.0, -1.0 / 3.0, 1.5, -2.0]
sizes = st.integers(1, 5)


# ------------------------------------------------------------------ construction helpers
def _g(seed):
    return np.random.default_rng(seed)


def _orth(seed, n):
    return backend.to_numpy(backend.orthogonal(seed, (n, n), np))


def psd_np(seed, n, rank, *, low=0.5, high=2.0):
    """Symmetric PSD (n, n) of the given rank; returns (A, Q_r) with range basis Q_r."""
    q = _orth(seed, n)[:, :rank]
    lam = _g(seed + 1).uniform(low, high, rank)
    a = (q * lam) @ q.T
    return (a + a.T) / 2, q


def sym_np(seed, n, low, high):
    """Symmetric (n, n) with eigenvalues uniform in [low, high]."""
    q = _orth(seed, n)
    a = (q * _g(seed + 1).uniform(low, high, n)) @ q.T
    return (a + a.T) / 2


def general_np(seed, m, n, rank, svals=None):
    """(m, n) of the given rank with singular values in [0.5, 2]; returns (A, U_r, s, V_r)."""
    u = _orth(seed, m)[:, :rank]
    v = _orth(seed + 1, n)[:, :rank]
    s = _g(seed + 2).uniform(0.5, 2.0, rank) if svals is None else svals
    return (u * s) @ v.T, u, s, v


def to_xp(a, xp, dtype):
    return backend.from_numpy(a, xp, dtype=dtype)


def host(x):
    """The array as the caller passed it (float32 rounding included), in float64 NumPy."""
    return backend.to_numpy(x).astype(np.float64)


def range_power(a, q, p):
    """Reference (A^+)^{-p} on the range: Q_r fractional_matrix_power(Q_r^T A Q_r, p) Q_r^T."""
    if q.shape[1] == 0:
        return np.zeros_like(a)
    core = q.T @ a @ q
    fp = np.eye(q.shape[1]) if p == 0 else scipy.linalg.fractional_matrix_power((core + core.T) / 2, p)
    assert np.allclose(np.imag(fp), 0, atol=1e-12)
    return q @ np.real(fp) @ q.T


def eye(xp, n, like):
    return xp.eye(n, dtype=like.dtype, device=backend.device_of(like))


# ------------------------------------------------------------------------- psd_power
@given(seed=seeds, n=sizes, data=st.data(), p=st.sampled_from(POWERS), dtype=dtypes)
def test_psd_power_matches_scipy_fractional_power_on_range(xp, seed, n, data, p, dtype):
    rank = data.draw(st.integers(1, n), label="rank")
    a_np, q = psd_np(seed, n, rank)
    a = to_xp(a_np, xp, dtype)
    if rank == n:  # full rank: default cut-off, plain SciPy reference
        expected = np.real(scipy.linalg.fractional_matrix_power(host(a), p))
        assert_close(psd_power(a, p), expected, like=a)
    else:
        assert_close(psd_power(a, p, rcond=0.1), range_power(host(a), q, p), like=a)


@given(seed=seeds, n=st.integers(2, 6), data=st.data(), dtype=dtypes)
def test_pseudo_inverse_identities(xp, seed, n, data, dtype):
    rank = data.draw(st.integers(1, n - 1), label="rank")
    a = to_xp(psd_np(seed, n, rank)[0], xp, dtype)
    pinv_ref = np.linalg.pinv(host(a), rcond=0.1)
    ap = psd_power(a, -1, rcond=0.1)
    assert_close(ap, pinv_ref, like=a, name="A^+")
    assert_close(xp.matmul(xp.matmul(a, ap), a), host(a), like=a, name="A A^+ A")
    assert_close(xp.matmul(xp.matmul(ap, a), ap), pinv_ref, like=a, name="A^+ A A^+")
    half = psd_power(a, -0.5, rcond=0.1)
    assert_close(xp.matmul(half, half), pinv_ref, like=a, name="(A^+)^(1/2) squared")
    root = psd_power(a, 0.5, rcond=0.1)
    assert_close(xp.matmul(root, root), host(a), like=a, name="A^(1/2) squared")


@given(seed=seeds, n=sizes, data=st.data(), dtype=dtypes)
def test_psd_power_group_law_on_range(xp, seed, n, data, dtype):
    rank = data.draw(st.integers(1, n), label="rank")
    p = data.draw(st.sampled_from(POWERS), label="p")
    r = data.draw(st.sampled_from([*POWERS, -p]), label="r")  # includes p + r = 0: the projector
    a_np, q = psd_np(seed, n, rank)
    a = to_xp(a_np, xp, dtype)
    prod = xp.matmul(psd_power(a, p, rcond=0.1), psd_power(a, r, rcond=0.1))
    assert_close(prod, range_power(host(a), q, p + r), like=a)
    assert_close(psd_power(a, p + r, rcond=0.1), range_power(host(a), q, p + r), like=a)


@given(seed=seeds, n=sizes, data=st.data(), p=st.sampled_from(POWERS), dtype=dtypes)
def test_psd_power_damping_is_adding_damping_identity(xp, seed, n, data, p, dtype):
    rank = data.draw(st.integers(0, n), label="rank")
    d = data.draw(st.floats(0.1, 1.0), label="damping")
    a = to_xp(psd_np(seed, n, rank)[0], xp, dtype)
    expected = np.real(scipy.linalg.fractional_matrix_power(host(a) + d * np.eye(n), p))
    assert_close(psd_power(a, p, damping=d), expected, like=a)


def test_psd_power_default_cutoff_is_n_eps(xp):
    # Diagonal input: eigh returns the diagonal exactly, so the cut-off n * eps is tested sharply.
    for dtype in ("float64", "float32"):
        eps = float(np.finfo(dtype).eps)
        lam = np.array([1.0, 0.5 * 3 * eps, 2.0 * 3 * eps])
        a = to_xp(np.diag(lam), xp, dtype)
        lam_in = host(a).diagonal()
        assert_close(psd_power(a, -1), np.diag([1.0, 0.0, 1.0 / lam_in[2]]), like=a)
        assert_close(psd_power(a, -1, rcond=10.0 * eps), np.diag([1.0, 0.0, 0.0]), like=a)
        assert_close(psd_power(a, -1, rcond=0.0), np.diag(1.0 / lam_in), like=a)


def test_psd_power_of_zero_and_negative_rounding(xp):
    z = xp.zeros((3, 3), dtype=xp.float64)
    assert_close(psd_power(z, -1), np.zeros((3, 3)), like=z)
    assert_close(psd_power(z, 0.5, damping=4.0), 2.0 * np.eye(3), like=z)
    # A tiny negative eigenvalue (rounding) maps to 0, not NaN.
    a = to_xp(np.diag([1.0, -1e-17]), xp, "float64")
    assert_close(psd_power(a, -0.5, rcond=0.0), np.diag([1.0, 0.0]), like=a)


# ------------------------------------------------------------------------- pinv_power
@given(seed=seeds, m=sizes, n=sizes, data=st.data(), dtype=dtypes)
def test_pinv_power_general_matrix(xp, seed, m, n, data, dtype):
    rank = data.draw(st.integers(1, min(m, n)), label="rank")
    p = data.draw(st.sampled_from([*POWERS, 0.0]), label="p")
    d = data.draw(st.sampled_from([0.0, 0.3]), label="damping")
    a_np, u, s, v = general_np(seed, m, n, rank)
    a = to_xp(a_np, xp, dtype)
    rcond = 0.1 if rank < min(m, n) else None
    assert_close(pinv_power(a, 1, rcond=rcond), np.linalg.pinv(host(a), rcond=0.1), like=a, name="pinv")
    # Closed form from the construction A = U diag(s) V^T: V diag((s + d)^-p) U^T.
    assert_close(pinv_power(a, p, rcond=rcond, damping=d), (v * (s + d) ** (-p)) @ u.T, like=a)


@given(seed=seeds, n=sizes, data=st.data(), p=st.sampled_from(POWERS), dtype=dtypes)
def test_pinv_power_equals_psd_power_for_psd(xp, seed, n, data, p, dtype):
    rank = data.draw(st.integers(1, n), label="rank")
    a = to_xp(psd_np(seed, n, rank)[0], xp, dtype)
    assert_close(pinv_power(a, p, rcond=0.1), psd_power(a, -p, rcond=0.1), like=a)
    if rank == n:  # damping agrees too at full rank (see the pinv_power docstring)
        d = 0.25
        expected = np.real(scipy.linalg.fractional_matrix_power(host(a) + d * np.eye(n), -p))
        assert_close(pinv_power(a, p, damping=d), expected, like=a)


@given(seed=seeds, n=sizes, data=st.data(), dtype=dtypes)
def test_return_info_reports_the_kept_rank(xp, seed, n, data, dtype):
    """``return_info=True``: (result, PowerInfo) with the rank of the construction (the
    nonzero eigen/singular values are in [0.5, 2], the rest 0, cut-off 0.1), the size,
    the cut-off and the routine's decomposition; the result is the plain call's."""
    rank = data.draw(st.integers(0, n), label="rank")
    m = data.draw(sizes, label="m")
    a = to_xp(psd_np(seed, n, rank)[0] if rank else np.zeros((n, n)), xp, dtype)
    out, info = psd_power(a, -0.5, rcond=0.1, return_info=True)
    assert (info.rank, info.size, info.rcond, info.form, info.ranks) == (rank, n, 0.1, "eigh", (rank,))
    assert info.dropped == n - rank
    assert_close(out, host(psd_power(a, -0.5, rcond=0.1)), like=a, rtol=0.0)
    r = min(rank, m, n)
    g = to_xp(general_np(seed, m, n, r)[0] if r else np.zeros((m, n)), xp, dtype)
    out, info = pinv_power(g, 1.0, rcond=0.1, return_info=True)
    assert (info.rank, info.size, info.rcond, info.form) == (r, min(m, n), 0.1, "svd")
    assert_close(out, host(pinv_power(g, 1.0, rcond=0.1)), like=g, rtol=0.0)


def test_flags_must_be_booleans(xp):
    """``return_info``, ``check`` and ``clip_negative`` are flags: 1 or "yes" raise, naming them."""
    a = to_xp(np.eye(3), xp, "float64")
    for kwargs, name in (({"return_info": 1}, "return_info"), ({"check": "yes"}, "check"),
                         ({"clip_negative": 0}, "clip_negative")):
        with pytest.raises(TypeError, match=f"^{name}: expected True or False"):
            psd_power(a, 0.5, **kwargs)
    with pytest.raises(TypeError, match="^return_info: expected True or False"):
        pinv_power(a, 1.0, return_info=1)


def test_return_info_batches_defaults_and_empty(xp):
    # a batch: the rank of every matrix (row-major) and the smallest; default cut-off n eps
    lam = np.array([[1.0, 0.5, 0.0], [1.0, 1e-20, 0.25]])
    a = to_xp(np.stack([np.diag(v) for v in lam]).reshape(2, 1, 3, 3), xp, "float64")
    _, info = psd_power(a, -1.0, return_info=True)
    assert info.ranks == (2, 2) and info.rank == 2 and info.rcond == 3 * float(np.finfo(np.float64).eps)
    b = to_xp(np.stack([np.diag([1.0, 0.5, 0.25]), np.diag([1.0, 0.0, 0.0])]), xp, "float32")
    _, info = pinv_power(b, 0.5, return_info=True)
    assert info.ranks == (3, 1) and info.rank == 1 and info.size == 3
    # float32: the default cut-off (3 eps32 ~ 3.6e-7 of the largest eigenvalue) drops 1e-8
    c = to_xp(np.diag([1.0, 1e-3, 1e-8]), xp, "float32")
    _, info = psd_power(c, -1.0, return_info=True)
    assert (info.rank, info.dropped) == (2, 1)
    e = to_xp(np.zeros((0, 0)), xp, "float64")
    assert psd_power(e, -1.0, return_info=True)[1].size == 0


# ------------------------------------------------------------------------- Kronecker
@given(seed=seeds, shape=st.tuples(sizes, sizes, sizes, sizes), batch=st.sampled_from([(), (2,), (2, 3)]),
       dtype=dtypes)
def test_kron_matches_numpy_kron(xp, seed, shape, batch, dtype):
    m, n, p, q = shape
    a = backend.normal(seed, batch + (m, n), xp, dtype=dtype)
    b = backend.normal(seed + 1, batch + (p, q), xp, dtype=dtype)
    an, bn = host(a), host(b)
    expected = np.stack([np.kron(an[i], bn[i]) for i in np.ndindex(batch)]).reshape(batch + (m * p, n * q))
    assert_close(kron(a, b), expected, like=a)
    # Leading axes broadcast: an unbatched b.
    b0 = backend.normal(seed + 2, (p, q), xp, dtype=dtype)
    expected0 = np.stack([np.kron(an[i], host(b0)) for i in np.ndindex(batch)]).reshape(batch + (m * p, n * q))
    assert_close(kron(a, b0), expected0, like=a)


@given(seed=seeds, shape=st.tuples(sizes, sizes, sizes, sizes), dtype=dtypes)
def test_kron_matvec_is_kron_times_row_major_vec(xp, seed, shape, dtype):
    m, n, p, q = shape
    a = backend.normal(seed, (m, n), xp, dtype=dtype)
    b = backend.normal(seed + 1, (p, q), xp, dtype=dtype)
    x = backend.normal(seed + 2, (n, q), xp, dtype=dtype)
    expected = (np.kron(host(a), host(b)) @ host(x).reshape(-1)).reshape(m, p)
    assert_close(kron_matvec(a, b, x), expected, like=a)
    # and kron() itself obeys (A kron B) vec_r(X) = vec_r(A X B^T)
    assert_close(xp.reshape(xp.matmul(kron(a, b), xp.reshape(x, (-1, 1))), (m, p)), expected, like=a)


@given(seed=seeds, m=sizes, n=sizes, data=st.data(), p=st.sampled_from(POWERS), dtype=dtypes)
def test_kron_power_is_kron_of_powers(xp, seed, m, n, data, p, dtype):
    ra = data.draw(st.integers(1, m), label="rank A")
    rb = data.draw(st.integers(1, n), label="rank B")
    a_np, qa = psd_np(seed, m, ra)
    b_np, qb = psd_np(seed + 7, n, rb)
    a, b = to_xp(a_np, xp, dtype), to_xp(b_np, xp, dtype)
    # Products of retained eigenvalues lie in [0.25, 4]: rcond 0.01 keeps all of them.
    expected = np.kron(range_power(host(a), qa, p), range_power(host(b), qb, p))
    assert_close(psd_power(kron(a, b), p, rcond=0.01), expected, like=a)


def _dense_psd_power_apply(a, b, x, p, rcond, damping):
    """Reference: eigh of the materialized kron(A, B) + damping I (NumPy, float64)."""
    k = np.kron(a, b) + damping * np.eye(a.shape[0] * b.shape[0])
    w, v = np.linalg.eigh((k + k.T) / 2)
    keep = (w > rcond * w.max()) & (w > 0)
    f = np.where(keep, np.where(keep, w, 1.0) ** p, 0.0)
    return ((v * f) @ v.T @ x.reshape(-1)).reshape(x.shape)


@given(seed=seeds, m=sizes, n=sizes, data=st.data(), p=st.sampled_from(POWERS), dtype=dtypes)
def test_kron_psd_power_apply_matches_dense(xp, seed, m, n, data, p, dtype):
    ra = data.draw(st.integers(1, m), label="rank A")
    rb = data.draw(st.integers(1, n), label="rank B")
    d = data.draw(st.sampled_from([0.0, 0.2]), label="damping")
    a = to_xp(psd_np(seed, m, ra)[0], xp, dtype)
    b = to_xp(psd_np(seed + 7, n, rb)[0], xp, dtype)
    x = backend.normal(seed + 3, (m, n), xp, dtype=dtype)
    expected = _dense_psd_power_apply(host(a), host(b), host(x), p, 0.01, d)
    assert_close(kron_psd_power_apply(a, b, x, p, rcond=0.01, damping=d), expected, like=a)
    # The same as psd_power of the materialized product (the cut-off is on the products).
    via_kron = xp.matmul(psd_power(kron(a, b), p, rcond=0.01, damping=d), xp.reshape(x, (-1, 1)))
    assert_close(xp.reshape(via_kron, (m, n)), expected, like=a)
    if ra == m and rb == n and d == 0.0:  # default cut-off at full rank
        assert_close(kron_psd_power_apply(a, b, x, p), expected, like=a)


@given(seed=seeds, m=sizes, n=sizes, dtype=dtypes)
def test_kron_solve_matches_dense_solve(xp, seed, m, n, dtype):
    a = to_xp(general_np(seed, m, m, m)[0], xp, dtype)
    b = to_xp(general_np(seed + 5, n, n, n)[0], xp, dtype)
    c = backend.normal(seed + 9, (m, n), xp, dtype=dtype)
    expected = np.linalg.solve(np.kron(host(a), host(b)), host(c).reshape(-1)).reshape(m, n)
    # cond(kron(A, B)) <= 16: the float32 tolerance needs a factor for it.
    assert_close(kron_solve(a, b, c), expected, like=a, rtol=16 * RTOL[dtype])


# ------------------------------------------------------------------------- Sylvester
def _kron_sum(a, b):
    """Dense K with vec_r(A X + X B) = K vec_r(X)."""
    return np.kron(a, np.eye(b.shape[0])) + np.kron(np.eye(a.shape[0]), b.T)


@given(seed=seeds, m=sizes, n=sizes, dtype=dtypes)
def test_solve_sylvester_matches_scipy(xp, seed, m, n, dtype):
    a = to_xp(sym_np(seed, m, -1.0, 1.0), xp, dtype)  # indefinite
    b = to_xp(sym_np(seed + 3, n, 1.5, 2.5), xp, dtype)  # a_i + b_j in [0.5, 3.5]
    c = backend.normal(seed + 6, (m, n), xp, dtype=dtype)
    expected = scipy.linalg.solve_sylvester(host(a), host(b), host(c))
    assert_close(solve_sylvester(a, b, c), expected, like=a, rtol=7 * RTOL[dtype])  # cond(K) <= 7


@given(seed=seeds, m=st.integers(2, 5), n=st.integers(2, 5), data=st.data(), dtype=dtypes)
def test_solve_sylvester_singular_is_min_norm_lstsq(xp, seed, m, n, data, dtype):
    ra = data.draw(st.integers(0, m - 1), label="rank A")
    rb = data.draw(st.integers(0, n - 1), label="rank B")
    a = to_xp(psd_np(seed, m, ra)[0], xp, dtype)
    b = to_xp(psd_np(seed + 3, n, rb)[0], xp, dtype)
    c = backend.normal(seed + 6, (m, n), xp, dtype=dtype)
    k = _kron_sum(host(a), host(b))  # eigenvalues a_i + b_j: 0 or in [0.5, 4]
    expected = np.linalg.lstsq(k, host(c).reshape(-1), rcond=0.05)[0].reshape(m, n)
    assert_close(solve_sylvester(a, b, c, rcond=0.05), expected, like=a)


@given(seed=seeds, n0=st.integers(2, 5), n2=st.integers(2, 5), data=st.data(), dtype=dtypes)
def test_huh_si9_optimality_with_bottleneck(xp, seed, n0, n2, data, dtype):
    """Huh (2020) S.I.1: Lambda solving S(Lambda) = w2 w2^T L + L w1^T w1 - Delta = 0 in the
    least-squares sense satisfies eq (S.I.9), w2^T S = S w1^T = 0, also when a bottleneck
    n1 < min(n0, n2) makes the equation singular."""
    n1 = data.draw(st.integers(1, min(n0, n2) - 1), label="n1")
    w1_np, _, _, v1 = general_np(seed, n1, n0, n1)  # rows of w1 span the columns of v1
    w2_np, u2, _, _ = general_np(seed + 4, n2, n1, n1)  # columns of w2 span those of u2
    w1, w2 = to_xp(w1_np, xp, dtype), to_xp(w2_np, xp, dtype)
    delta = backend.normal(seed + 8, (n2, n0), xp, dtype=dtype)
    a = xp.matmul(w2, xp.matrix_transpose(w2))
    b = xp.matmul(xp.matrix_transpose(w1), w1)
    lam = solve_sylvester(a, b, delta, rcond=0.01)  # a_i + b_j: 0 or in [0.25, 8]
    s = xp.matmul(a, lam) + xp.matmul(lam, b) - delta
    # Rounding: terms of size |w|^3 |Lambda| <= 8 * 4 |Delta| cancel in S.
    atol = 32 * RTOL[dtype] * float(np.abs(host(delta)).max())
    # The residual is minus the part of Delta the network cannot reach (closed form):
    # S = -(I - u2 u2^T) Delta (I - v1 v1^T), nonzero since n1 < min(n0, n2).
    s_expected = -(np.eye(n2) - u2 @ u2.T) @ host(delta) @ (np.eye(n0) - v1 @ v1.T)
    assert_close(s, s_expected, like=a, atol=atol)
    assert_close(xp.matmul(xp.matrix_transpose(w2), s), np.zeros((n1, n0)), like=a, atol=atol)
    assert_close(xp.matmul(s, xp.matrix_transpose(w1)), np.zeros((n2, n1)), like=a, atol=atol)


def _terms_to_xp(terms, xp, dtype):
    return tuple((to_xp(ai, xp, dtype), to_xp(bi, xp, dtype)) for ai, bi in terms)


def _k_general(terms):
    return sum(np.kron(ai, bi.T) for ai, bi in terms)


@given(seed=seeds, m=sizes, n=sizes, nterms=st.sampled_from([2, 3]), dtype=dtypes)
def test_generalized_sylvester_matches_dense_solve(xp, seed, m, n, nterms, dtype):
    # A dominant term (cond <= 16) plus small non-symmetric ones that change X by ~1e-2,
    # far above the tolerance, so dropping or transposing a term fails.
    terms = [(general_np(seed, m, m, m)[0], general_np(seed + 1, n, n, n)[0])]
    for i in range(1, nterms):
        terms.append((0.05 * backend.to_numpy(backend.normal(seed + 10 * i, (m, m), np)),
                      0.05 * backend.to_numpy(backend.normal(seed + 10 * i + 1, (n, n), np))))
    tx = _terms_to_xp(terms, xp, dtype)
    c = backend.normal(seed + 99, (m, n), xp, dtype=dtype)
    k = _k_general([(host(ai), host(bi)) for ai, bi in tx])
    assume(np.linalg.cond(k) < 40)  # almost always; keeps the tolerance below tied to cond(K)
    expected = np.linalg.solve(k, host(c).reshape(-1)).reshape(m, n)
    assert_close(solve_generalized_sylvester(tx, c), expected, like=c, rtol=4 * RTOL[dtype])


@given(seed=seeds, shape=st.tuples(sizes, sizes, sizes, sizes), nterms=st.sampled_from([1, 2, 3]),
       dtype=dtypes)
def test_generalized_sylvester_nonsquare_singular_is_min_norm_lstsq(xp, seed, shape, nterms, dtype):
    # A_i = U diag(s_i) V^T, B_i = P diag(t_i) R^T share singular vectors, so the singular
    # values of K = sum_i kron(A_i, B_i^T) are sum_i s_i t_i in [0.25 k, 4 k] or exactly 0.
    m, p, q, n = shape
    ra, rb = min(m, p), min(q, n)
    g = _g(seed + 50)
    terms = []
    for _ in range(nterms):
        a_i = general_np(seed, m, p, ra, svals=g.uniform(0.5, 2.0, ra))[0]
        b_i = general_np(seed + 3, q, n, rb, svals=g.uniform(0.5, 2.0, rb))[0]
        terms.append((a_i, b_i))
    tx = _terms_to_xp(terms, xp, dtype)
    c = backend.normal(seed + 99, (m, n), xp, dtype=dtype)
    k = _k_general([(host(ai), host(bi)) for ai, bi in tx])
    expected = np.linalg.lstsq(k, host(c).reshape(-1), rcond=0.02)[0].reshape(p, q)
    assert_close(solve_generalized_sylvester(tx, c, rcond=0.02), expected, like=c)


@given(seed=seeds, m=sizes, n=sizes, order=st.booleans(), dtype=dtypes)
def test_generalized_sylvester_sylvester_path(xp, seed, m, n, order, dtype):
    a_np = sym_np(seed, m, -1.0, 1.0)
    b_np = sym_np(seed + 3, n, 1.5, 2.5)
    beta, alpha = 0.5, 2.0  # eigenvalue sums in [2.5, 5.5]
    terms = [(a_np, beta * np.eye(n)), (alpha * np.eye(m), b_np)]
    if order:
        terms = terms[::-1]
    tx = _terms_to_xp(terms, xp, dtype)
    c = backend.normal(seed + 6, (m, n), xp, dtype=dtype)
    a, b = tx[int(order)][0], tx[1 - int(order)][1]
    expected = scipy.linalg.solve_sylvester(beta * host(a), alpha * host(b), host(c))
    rtol = 3 * RTOL[dtype]  # cond(K) <= 5.5 / 2.5
    for method in ("auto", "sylvester", "kronecker"):
        assert_close(solve_generalized_sylvester(tx, c, method=method), expected, like=c, rtol=rtol, name=method)


@given(seed=seeds, m=sizes, n=sizes, order=st.booleans(), dtype=dtypes)
def test_generalized_sylvester_cholesky_path(xp, seed, m, n, order, dtype):
    # A1 X B1 + A2 X B2 with all symmetric PD, eigenvalues in [0.5, 2]: cond(K) <= 16.
    terms = [(sym_np(seed, m, 0.5, 2.0), sym_np(seed + 1, n, 0.5, 2.0)),
             (sym_np(seed + 2, m, 0.5, 2.0), sym_np(seed + 3, n, 0.5, 2.0))]
    if order:
        terms = terms[::-1]
    tx = _terms_to_xp(terms, xp, dtype)
    c = backend.normal(seed + 6, (m, n), xp, dtype=dtype)
    k = _k_general([(host(ai), host(bi)) for ai, bi in tx])
    expected = np.linalg.solve(k, host(c).reshape(-1)).reshape(m, n)
    for method in ("auto", "cholesky", "kronecker"):
        assert_close(solve_generalized_sylvester(tx, c, method=method), expected, like=c,
                     rtol=16 * RTOL[dtype], name=method)


@given(seed=seeds, m=st.integers(2, 5), n=st.integers(2, 5), data=st.data(), dtype=dtypes)
def test_generalized_sylvester_singular_symmetric_falls_back_to_min_norm(xp, seed, m, n, data, dtype):
    # A1 X B1 + A2 X B2 with B1, A2 PD and A1, B2 rank-deficient PSD: K is singular on
    # null(A1) kron null(B2); its nonzero eigenvalues are >= 0.25 (and <= 8).
    ra = data.draw(st.integers(0, m - 1), label="rank A1")
    rb = data.draw(st.integers(0, n - 1), label="rank B2")
    terms = [(psd_np(seed, m, ra)[0], sym_np(seed + 1, n, 0.5, 2.0)),
             (sym_np(seed + 2, m, 0.5, 2.0), psd_np(seed + 3, n, rb)[0])]
    tx = _terms_to_xp(terms, xp, dtype)
    c = backend.normal(seed + 6, (m, n), xp, dtype=dtype)
    k = _k_general([(host(ai), host(bi)) for ai, bi in tx])
    expected = np.linalg.lstsq(k, host(c).reshape(-1), rcond=0.01)[0].reshape(m, n)
    rtol = 32 * RTOL[dtype]  # condition number of K on its range <= 8 / 0.25
    assert_close(solve_generalized_sylvester(tx, c, rcond=0.01), expected, like=c, rtol=rtol)


# ------------------------------------------------------------------------- batching
@settings(max_examples=8)  # 10 routines x 6 loop calls per example
@given(seed=seeds, n=st.integers(2, 4), m=st.integers(1, 3), dtype=dtypes)
def test_batched_equals_loop(xp, seed, n, m, dtype):
    """Leading axes: every routine equals a loop over the batch; cut-offs are per matrix
    (the batch mixes scales 1 and 1000, so a cut-off relative to the batch max would differ)."""
    batch = (2, 3)
    scales = np.array([[1.0, 1000.0, 1.0], [1000.0, 1.0, 1.0]])[..., None, None]
    a = to_xp(scales * np.stack([psd_np(seed + i, n, max(1, n - 1 - i % 2))[0] for i in range(6)]).reshape(
        batch + (n, n)), xp, dtype)
    b = to_xp(np.stack([psd_np(seed + 20 + i, m, m)[0] for i in range(6)]).reshape(batch + (m, m)), xp, dtype)
    x = backend.normal(seed + 40, batch + (n, m), xp, dtype=dtype)
    g = backend.normal(seed + 41, batch + (n, m + 1), xp, dtype=dtype)
    idx = list(np.ndindex(batch))

    def loop(fn, *args):
        outs = [fn(*(v[(*i, ...)] for v in args)) for i in idx]
        return xp.reshape(xp.stack(outs), batch + tuple(outs[0].shape))

    checks = {
        "psd_power": (lambda a_: psd_power(a_, -0.5, rcond=0.1, damping=0.01), a),
        "pinv_power": (lambda g_: pinv_power(g_, 0.5, rcond=0.1), g),
        "kron": (kron, a, b),
        "kron_matvec": (lambda a_, b_, x_: kron_matvec(a_, b_, x_), a, b, x),
        "kron_psd_power_apply": (lambda a_, b_, x_: kron_psd_power_apply(a_, b_, x_, -1, rcond=0.05), a, b, x),
        "kron_solve": (lambda a_, b_, x_: kron_solve(b_ + eye(xp, m, b_), a_ + eye(xp, n, a_), xp.matrix_transpose(x_)),
                       a, b, x),
        "solve_sylvester": (lambda a_, b_, x_: solve_sylvester(a_, b_, x_, rcond=0.05), a, b, x),
        "generalized (sylvester path)": (
            lambda a_, b_, x_: solve_generalized_sylvester(((a_, eye(xp, m, b_)), (eye(xp, n, a_), b_)), x_), a, b, x),
        "generalized (cholesky path)": (
            lambda a_, b_, x_: solve_generalized_sylvester(((a_, b_), (eye(xp, n, a_), b_)), x_), a, b, x),
        "generalized (kronecker path)": (
            lambda a_, b_, x_: solve_generalized_sylvester(((a_, b_), (eye(xp, n, a_), b_)), x_, method="kronecker"),
            a, b, x),
    }
    for name, (fn, *args) in checks.items():
        assert_close(fn(*args), loop(fn, *args), like=a, name=name)
    # Unbatched factors broadcast against a batched right-hand side.
    assert_close(kron_psd_power_apply(a[0, 0, ...], b[0, 0, ...], x, 0.5, rcond=0.05),
                 loop(lambda x_: kron_psd_power_apply(a[0, 0, ...], b[0, 0, ...], x_, 0.5, rcond=0.05), x), like=a)


# ------------------------------------------------------------------------- errors
def _bad_cases(xp):
    f = xp.float64
    good = xp.eye(3, dtype=f)
    nan = xp.where(good > 0, xp.asarray(float("nan"), dtype=f), good)
    inf = xp.where(good > 0, xp.asarray(float("inf"), dtype=f), good)
    nonsym = good + xp.reshape(xp.arange(9, dtype=f), (3, 3))
    rect = xp.ones((3, 2), dtype=f)
    c32 = xp.ones((3, 3), dtype=f)
    e2 = xp.eye(2, dtype=f)
    return [
        (ValueError, r"^a: expected finite", lambda: psd_power(nan, -1)),
        (ValueError, r"^a: expected finite", lambda: psd_power(inf, 0.5)),
        (ValueError, r"^a: expected a symmetric", lambda: psd_power(nonsym, -1)),
        (ValueError, r"^a: expected square", lambda: psd_power(rect, -1)),
        (ValueError, r"^a: expected a matrix", lambda: psd_power(xp.ones(3, dtype=f), -1)),
        (ValueError, r"^damping: expected a number >= 0", lambda: psd_power(good, -1, damping=-0.1)),
        (ValueError, r"^rcond: expected a number >= 0", lambda: psd_power(good, -1, rcond=-1e-3)),
        (ValueError, r"^p: expected a finite (real )?number", lambda: psd_power(good, float("nan"))),
        (TypeError, r"^p: expected a real number", lambda: psd_power(good, "1")),
        (TypeError, r"^a: expected dtype float32 or float64", lambda: psd_power(xp.eye(3, dtype=xp.int64), -1)),
        (ValueError, r"^a: expected finite", lambda: pinv_power(xp.concat([nan, rect], axis=1), 1)),
        (ValueError, r"^damping: expected a number >= 0", lambda: pinv_power(rect, 1, damping=-1.0)),
        (ValueError, r"^a: expected a matrix", lambda: pinv_power(xp.ones(3, dtype=f), 1)),
        (ValueError, r"^b: expected finite", lambda: kron(good, inf)),
        (ValueError, r"^b: expected leading \(batch\) axes", lambda: kron(xp.ones((2, 3, 3), dtype=f),
                                                                          xp.ones((3, 3, 3), dtype=f))),
        (TypeError, r"^b: expected dtype \S*float64", lambda: kron(good, xp.astype(good, xp.float32))),
        (ValueError, r"^x: expected shape \(\.\.\., 3, 3\)", lambda: kron_matvec(good, good, rect)),
        (ValueError, r"^b: expected a symmetric", lambda: kron_psd_power_apply(good, nonsym, good, -1)),
        (ValueError, r"^x: expected finite", lambda: kron_psd_power_apply(good, good, nan, -1)),
        (ValueError, r"^x: expected shape", lambda: kron_psd_power_apply(good, e2, good, -1)),
        (ValueError, r"^damping: expected", lambda: kron_psd_power_apply(good, good, good, -1, damping=-1)),
        (ValueError, r"^c: expected shape \(\.\.\., 3, 2\)", lambda: kron_solve(good, e2, good)),
        (ValueError, r"^a: expected an invertible matrix", lambda: kron_solve(good - good, good, good)),
        (ValueError, r"^b: expected square", lambda: kron_solve(good, rect, good)),
        (ValueError, r"^c: expected finite", lambda: kron_solve(good, good, inf)),
        (ValueError, r"^a: expected a symmetric", lambda: solve_sylvester(nonsym, good, good)),
        (ValueError, r"^b: expected a symmetric", lambda: solve_sylvester(good, nonsym, good)),
        (ValueError, r"^c: expected finite", lambda: solve_sylvester(good, good, nan)),
        (ValueError, r"^c: expected shape", lambda: solve_sylvester(good, e2, good)),
        (ValueError, r"^rcond: expected", lambda: solve_sylvester(good, good, good, rcond=-1.0)),
        (ValueError, r"^terms\[1\]\[0\]: expected shape", lambda: solve_generalized_sylvester(((good, good),
                                                                                                (e2, good)), c32)),
        (ValueError, r"^terms\[0\]\[1\]: expected finite", lambda: solve_generalized_sylvester(((good, nan),
                                                                                                 (good, good)), c32)),
        (ValueError, r"^c: expected shape", lambda: solve_generalized_sylvester(((good, good),), rect)),
        (ValueError, r"^c: expected finite", lambda: solve_generalized_sylvester(((good, good),), inf)),
        (ValueError, r"^terms: expected a non-empty", lambda: solve_generalized_sylvester((), c32)),
        (TypeError, r"^terms\[0\]: expected a pair", lambda: solve_generalized_sylvester((good,), c32)),
        (ValueError, r"^method: expected one of", lambda: solve_generalized_sylvester(((good, good),), c32,
                                                                                         method="lu")),
        (ValueError, r"^method: expected two terms", lambda: solve_generalized_sylvester(
            ((nonsym, good), (good, good)), c32, method="sylvester")),
        (ValueError, r"^method: expected two terms", lambda: solve_generalized_sylvester(
            ((-good, -good), (-good, -good)), c32, method="cholesky")),
    ]


def test_bad_input_errors_name_the_argument(xp):
    for exc, match, call in _bad_cases(xp):
        with pytest.raises(exc, match=match):
            call()


def test_mixed_namespaces_error_names_argument():
    import array_api_strict as xs

    with pytest.raises(TypeError, match=r"^b: expected an array of namespace"):
        kron(xs.eye(2, dtype=xs.float64), np.eye(2))
    with pytest.raises(TypeError, match=r"^terms\[1\]\[0\]: expected an array of namespace"):
        solve_generalized_sylvester(((xs.eye(2, dtype=xs.float64),) * 2, (np.eye(2), xs.eye(2))), xs.eye(2))


def test_top_level_exports():
    for name in ("psd_power", "pinv_power", "kron", "kron_matvec", "kron_psd_power_apply", "kron_solve",
                 "solve_sylvester", "solve_generalized_sylvester"):
        assert callable(getattr(ac.linalg, name))
        assert name in ac.linalg.__all__
