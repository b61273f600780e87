"""Orthonormal bases, projections, principal angles and overlaps against SVD references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arraycurv import backend
from arraycurv.linalg import subspaces
from tests.helpers import assert_close, assert_like

TOL = {"float64": 1e-10, "float32": 1e-4}


def _host_angles(a, b):
    """Reference: arccos of the singular values of Q_a^T Q_b (NumPy QR + SVD), ascending."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    s = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return np.sort(np.arccos(s))


@settings(max_examples=15)
@given(n=st.integers(3, 20), ka=st.integers(1, 4), kb=st.integers(1, 4), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float64", "float32"]))
def test_principal_angles_against_svd(xp, n, ka, kb, seed, dtype):
    ka, kb = min(ka, n), min(kb, n)
    g = np.random.default_rng(seed)
    a_h, b_h = g.standard_normal((n, ka)), g.standard_normal((n, kb))
    a, b = backend.from_numpy(a_h, xp, dtype=dtype), backend.from_numpy(b_h, xp, dtype=dtype)
    got = subspaces.principal_angles(a, b)
    assert_like(got, a)
    want = _host_angles(a_h, b_h)
    assert got.shape == (min(ka, kb),)
    # angles near pi/2 (cos near 0) and near 0 (from the sines) are both accurate
    assert np.max(np.abs(backend.to_numpy(got) - want)) <= (1e-7 if dtype == "float64" else 2e-3)
    # symmetric in its arguments
    assert_close(subspaces.principal_angles(b, a), got, rtol=TOL[dtype], atol=TOL[dtype])


def test_small_angles_are_accurate(xp):
    """Angles of 1e-10 rad: arccos of the cosines would give 0 or 1e-8; the sine branch is exact."""
    t = 1e-10
    n = 6
    a = xp.eye(n, dtype=xp.float64)[:, :2]
    e = np.eye(n)
    b_h = np.stack([np.cos(t) * e[0] + np.sin(t) * e[2], np.cos(2 * t) * e[1] + np.sin(2 * t) * e[3]], axis=1)
    got = backend.to_numpy(subspaces.principal_angles(a, backend.from_numpy(b_h, xp)))
    assert np.allclose(got, [t, 2 * t], rtol=1e-6, atol=0)


@settings(max_examples=10)
@given(n=st.integers(4, 15), k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_basis_projections_and_fractions(xp, n, k, seed):
    k = min(k, n - 1)
    g = np.random.default_rng(seed)
    a_h = g.standard_normal((n, k))
    a_h = np.concatenate([a_h, a_h[:, :1] * 2.0], axis=1)  # a dependent column: rank k
    a = backend.from_numpy(a_h, xp)
    q = subspaces.orthonormal_basis(a)
    assert q.shape == (n, k)
    q_h = backend.to_numpy(q)
    assert np.allclose(q_h.T @ q_h, np.eye(k), atol=1e-12)
    assert np.allclose(q_h @ (q_h.T @ a_h), a_h, atol=1e-10)  # spans the columns
    v_h = g.standard_normal((n,))
    v = backend.from_numpy(v_h, xp)
    p_in, p_out = subspaces.project(q, v), subspaces.complement_project(q, v)
    assert_like(p_in, v)
    assert_close(p_in + p_out, v)
    assert np.max(np.abs(q_h.T @ backend.to_numpy(p_out))) <= 1e-12 * np.linalg.norm(v_h)
    assert_close(subspaces.complement_project(q, p_out), p_out)  # idempotent
    # fraction in the span = cos^2 of the angle between v and the span
    ang = _host_angles(a_h[:, :k], v_h[:, None])[0]
    assert_close(subspaces.fraction_in_span(a, v), xp.asarray(np.cos(ang) ** 2), rtol=1e-9)
    assert_close(subspaces.fraction_in_span(a, a[:, 0]), xp.asarray(1.0), rtol=1e-12)
    assert_close(subspaces.fraction_in_span(a, p_out), xp.asarray(0.0), atol=1e-20)
    assert_close(subspaces.fraction_in_span(a, xp.zeros((n,), dtype=xp.float64)), xp.asarray(0.0), atol=0)


@settings(max_examples=10)
@given(n=st.integers(4, 15), ka=st.integers(1, 4), kb=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_overlap_is_the_mean_squared_cosine(xp, n, ka, kb, seed):
    ka, kb = min(ka, n), min(kb, n)
    g = np.random.default_rng(seed)
    a_h, b_h = g.standard_normal((n, ka)), g.standard_normal((n, kb))
    a, b = backend.from_numpy(a_h, xp), backend.from_numpy(b_h, xp)
    cos2 = np.cos(_host_angles(a_h, b_h)) ** 2
    assert_close(subspaces.subspace_overlap(a, b), xp.asarray(np.sum(cos2) / ka), rtol=1e-9)
    assert_close(subspaces.subspace_overlap(a[:, :1], a), xp.asarray(1.0), rtol=1e-12)  # a subset: overlap 1
    # overlap = mean fraction in span(b) of an orthonormal basis of span(a)
    q = subspaces.orthonormal_basis(a)
    assert_close(subspaces.subspace_overlap(a, b), xp.mean(subspaces.fraction_in_span(b, q)), rtol=1e-9)


def test_stack_directions_flat_order(xp):
    t = (xp.reshape(xp.arange(12, dtype=xp.float64), (2, 2, 3)), xp.reshape(xp.arange(4, dtype=xp.float64), (2, 2)))
    m = backend.to_numpy(subspaces.stack_directions(t))
    assert m.shape == (8, 2)
    assert np.array_equal(m[:, 0], [0, 1, 2, 3, 4, 5, 0, 1]) and np.array_equal(m[:, 1], [6, 7, 8, 9, 10, 11, 2, 3])


def test_errors_name_the_argument(xp):
    a = xp.ones((4, 2), dtype=xp.float64)
    with pytest.raises(ValueError, match="a: expected an array with 2 dimensions"):
        subspaces.orthonormal_basis(xp.ones((4,), dtype=xp.float64))
    with pytest.raises(ValueError, match="a: expected finite values"):
        subspaces.principal_angles(a * float("nan"), a)
    with pytest.raises(ValueError, match="b: expected 4 rows like a"):
        subspaces.subspace_overlap(a, xp.ones((3, 2), dtype=xp.float64))
    with pytest.raises(ValueError, match="v: expected a leading axis of length n = 4"):
        subspaces.fraction_in_span(a, xp.ones((3,), dtype=xp.float64))
    with pytest.raises(ValueError, match="rcond: expected a real number >= 0"):
        subspaces.orthonormal_basis(a, rcond=-1.0)
    with pytest.raises(ValueError, match=r"directions\[1\]: expected a leading axis of length 4"):
        subspaces.stack_directions((a, xp.ones((3,), dtype=xp.float64)))
