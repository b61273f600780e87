"""Lanczos, block Lanczos, Hutchinson, Hutch++ and SLQ against the materialized matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.linalg import spectral
from tests.helpers import assert_close, assert_like

EIG_RTOL = {"float64": 1e-8, "float32": 2e-4}


def _sym(xp, seed, n, dtype, *, spectrum=None):
    """A random symmetric matrix (and its host float64 copy), optionally with a given spectrum."""
    g = np.random.default_rng(seed)
    if spectrum is None:
        a = g.standard_normal((n, n))
        a = 0.5 * (a + a.T)
    else:
        q, _ = np.linalg.qr(g.standard_normal((n, n)))
        a = (q * np.asarray(spectrum)) @ q.T
        a = 0.5 * (a + a.T)
    if dtype == "float32":
        a = a.astype(np.float32).astype(np.float64)
    return backend.from_numpy(a, xp, dtype=dtype), a


def _wanted(ev, k, which):
    if which == "largest":
        return np.sort(ev)[::-1][:k]
    if which == "smallest":
        return np.sort(ev)[:k]
    return ev[np.argsort(-np.abs(ev))][:k]


def _check_pairs(res, a_host, k, which, dtype, flat_vectors):
    ev = np.linalg.eigvalsh(a_host)
    scale = np.max(np.abs(ev))
    got = backend.to_numpy(res.eigenvalues).astype(np.float64)
    want = _wanted(ev, k, which)
    if which == "magnitude":  # ties in |lambda| may swap order: compare as sets by magnitude
        got, want = np.sort(got), np.sort(want)
    assert np.max(np.abs(got - want)) <= EIG_RTOL[dtype] * scale
    y = flat_vectors.astype(np.float64)
    assert np.max(np.abs(y.T @ y - np.eye(k))) <= (1e-8 if dtype == "float64" else 1e-4)
    resid = np.linalg.norm(a_host @ y - y * backend.to_numpy(res.eigenvalues), axis=0)
    assert np.max(resid) <= (1e-7 if dtype == "float64" else 2e-3) * scale


@settings(max_examples=12)
@given(n=st.integers(2, 24), k=st.integers(1, 4), seed=st.integers(0, 2**16),
       which=st.sampled_from(spectral.WHICH), dtype=st.sampled_from(["float64", "float32"]))
def test_lanczos_full_run_matches_eigh(xp, n, k, seed, which, dtype):
    k = min(k, n)
    a, a_host = _sym(xp, seed, n, dtype)
    like = xp.zeros((n,), dtype=a.dtype)
    res = spectral.lanczos(lambda v: a @ v, like, k, num_iters=n, tol=0.0, which=which, seed=seed)
    assert_like(res.eigenvalues, like)
    assert_like(res.eigenvectors, like)
    assert res.num_matvecs == n
    _check_pairs(res, a_host, k, which, dtype, backend.to_numpy(res.eigenvectors))


@settings(max_examples=10)
@given(n=st.integers(3, 24), k=st.integers(1, 4), b=st.integers(1, 4), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float64", "float32"]))
def test_block_lanczos_full_run_matches_eigh(xp, n, k, b, seed, dtype):
    k, b = min(k, n), min(b, n)
    a, a_host = _sym(xp, seed, n, dtype)
    like = xp.zeros((n,), dtype=a.dtype)
    res = spectral.block_lanczos(lambda v: v @ a, like, k, block_size=b, num_iters=n, tol=0.0, seed=seed,
                                 batched=True)
    assert res.num_matvecs <= b * math.ceil(n / b)
    _check_pairs(res, a_host, k, "largest", dtype, backend.to_numpy(res.eigenvectors))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lanczos_converges_early_on_outliers(xp, dtype):
    """Ten outliers over a bulk (the shape of a classifier's Hessian, Papyan 2020): the
    default stopping rule finds them to 1e-8 relative well before n products."""
    n = 200
    spec = np.concatenate([np.linspace(10.0, 20.0, 10), np.random.default_rng(0).uniform(0, 1, n - 10)])
    a, a_host = _sym(xp, 1, n, dtype, spectrum=spec)
    like = xp.zeros((n,), dtype=a.dtype)
    for fn, kw in ((spectral.lanczos, {}), (spectral.block_lanczos, {"block_size": 5, "batched": True})):
        mv = (lambda v: a @ v) if not kw else (lambda v: v @ a)
        res = fn(mv, like, 10, seed=3, **kw)
        assert res.num_matvecs < n / 2
        ev = np.sort(spec)[::-1][:10]
        got = backend.to_numpy(res.eigenvalues).astype(np.float64)
        exact = np.sort(np.linalg.eigvalsh(a_host))[::-1][:10]
        assert np.max(np.abs(got - exact)) <= EIG_RTOL[dtype] * 20
        assert np.max(np.abs(exact - ev)) <= (1e-10 if dtype == "float64" else 1e-5) * 20
        assert float(np.max(backend.to_numpy(res.residuals))) <= (np.sqrt(np.finfo(dtype).eps) * 20 * 1.01)


def test_low_rank_operator_restarts_after_breakdown(xp):
    """A rank-3 matrix: the Krylov space becomes invariant after 3 steps; the run goes on
    from fresh vectors and still returns the exact top eigenpairs (zeros after the 3rd)."""
    g = np.random.default_rng(5)
    u = g.standard_normal((12, 3))
    a_host = u @ u.T
    a = backend.from_numpy(a_host, xp)
    like = xp.zeros((12,), dtype=xp.float64)
    res = spectral.lanczos(lambda v: a @ v, like, 5, num_iters=12, tol=0.0)
    _check_pairs(res, a_host, 5, "largest", "float64", backend.to_numpy(res.eigenvectors))
    assert np.all(np.isfinite(backend.to_numpy(res.eigenvectors)))


def test_parameter_tuple_space_matches_flat(xp):
    """Vectors as parameter tuples: the GGN of a small MLP through ggn_vp against eigh of
    the explicit GGN (both the one-at-a-time and the batched block forms)."""
    model = ac.mlp((3, 4, 3), "tanh")
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (6, 3), xp)
    y = xp.asarray([0, 1, 2, 0, 1, 2])
    loss = ac.SoftmaxCrossEntropy()
    gmat = backend.to_numpy(ac.ggn_matrix(model, params, (x, y), loss))
    res = spectral.lanczos(lambda v: ac.ggn_vp(model, params, (x, y), v, loss), params, 3, tol=1e-12)
    assert [tuple(t.shape) for t in res.eigenvectors] == [(3, *p.shape) for p in params]
    flat = backend.to_numpy(ac.linalg.subspaces.stack_directions(res.eigenvectors))
    _check_pairs(res, gmat, 3, "largest", "float64", flat)
    hv = lambda v: ac.hvp(model, params, (x, y), v, loss)  # noqa: E731 (stacked tangents)
    hmat = backend.to_numpy(ac.hessian_matrix(model, params, (x, y), loss))
    res = spectral.block_lanczos(hv, params, 3, block_size=3, which="magnitude", tol=1e-12, batched=True)
    _check_pairs(res, hmat, 3, "magnitude", "float64",
                 backend.to_numpy(ac.linalg.subspaces.stack_directions(res.eigenvectors)))


# ------------------------------------------------------------------------ traces
def _rademacher_sd(a):
    return math.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)))


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), n=st.integers(4, 30))
def test_hutchinson_within_six_sigma(xp, seed, n):
    """CLT bound: with N = 1000 probes the error is below 6 standard deviations
    sigma / sqrt(N), sigma^2 = 2 (||A||_F^2 - sum_i A_ii^2) for Rademacher probes and
    2 ||A||_F^2 for Gaussian ones (failure probability about 2e-9 per case)."""
    a, a_host = _sym(xp, seed, n, "float64")
    like = xp.zeros((n,), dtype=xp.float64)
    tr = np.trace(a_host)
    for dist, sd in (("rademacher", _rademacher_sd(a_host)), ("normal", math.sqrt(2) * np.linalg.norm(a_host))):
        est = spectral.hutchinson_trace(lambda v: a @ v, like, 1000, seed=seed, distribution=dist)
        assert_like(est.trace, like)
        assert abs(float(est.trace) - tr) <= 6 * sd / math.sqrt(1000) + 1e-10
        assert est.num_matvecs == 1000
        # the reported standard error estimates sigma / sqrt(N) (within 30%: a 1000-sample sd)
        assert abs(float(est.stderr) * math.sqrt(1000) - sd) <= 0.3 * sd + 1e-12


def test_hutchpp_exact_on_low_rank_and_better_on_decaying_spectra(xp):
    g = np.random.default_rng(2)
    u = g.standard_normal((40, 4))
    a_host = u @ u.T
    a = backend.from_numpy(a_host, xp)
    like = xp.zeros((40,), dtype=xp.float64)
    est = spectral.hutchpp_trace(lambda v: v @ a, like, 15, seed=1, batched=True)  # sketch of 5 >= rank 4
    assert_close(est.trace, xp.asarray(np.trace(a_host)), rtol=1e-10)
    # a decaying spectrum 1/i^2: Hutch++ with 60 products beats Hutchinson with 60 (RMS over 12 seeds)
    b, b_host = _sym(xp, 3, 100, "float64", spectrum=1.0 / np.arange(1, 101) ** 2)
    like = xp.zeros((100,), dtype=xp.float64)
    tr = np.trace(b_host)
    err_pp = [float(spectral.hutchpp_trace(lambda v: b @ v, like, 60, seed=s).trace) - tr for s in range(12)]
    err_h = [float(spectral.hutchinson_trace(lambda v: b @ v, like, 60, seed=s).trace) - tr for s in range(12)]
    assert np.sqrt(np.mean(np.square(err_pp))) < 0.5 * np.sqrt(np.mean(np.square(err_h)))
    # and stays within 6 sigma of its own Hutchinson part (sigma <= sqrt(2/g) ||A||_F, g = 20 probes)
    assert max(abs(e) for e in err_pp) <= 6 * math.sqrt(2 / 20) * np.linalg.norm(b_host)


# ------------------------------------------------------------------------ SLQ
@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), n=st.integers(6, 30), m=st.integers(1, 5),
       dtype=st.sampled_from(["float64", "float32"]))
def test_slq_gauss_rule_is_exact_for_low_degree(xp, seed, n, m, dtype):
    """For each probe q, sum_i w_i theta_i^j = q^T A^j q / q^T q for j <= 2 m - 1."""
    a, a_host = _sym(xp, seed, n, dtype)
    like = xp.zeros((n,), dtype=a.dtype)
    probes_host = np.random.default_rng(seed + 1).standard_normal((3, n))
    probes = backend.from_numpy(probes_host, xp, dtype=dtype)
    quad = spectral.slq(lambda v: a @ v, like, m, probes=probes)
    assert_like(quad.nodes, like)
    nodes = backend.to_numpy(quad.nodes).astype(np.float64)
    w = backend.to_numpy(quad.weights).astype(np.float64)
    scale = np.max(np.abs(np.linalg.eigvalsh(a_host)))
    for j in range(2 * m):
        q = backend.to_numpy(probes).astype(np.float64)
        want = np.einsum("li,ij,lj->l", q, np.linalg.matrix_power(a_host, j), q) / np.sum(q**2, axis=1)
        got = np.sum(w * nodes**j, axis=1)
        assert np.max(np.abs(got - want)) <= (1e-9 if dtype == "float64" else 1e-4) * max(scale, 1.0) ** j


def test_slq_moments_match_the_spectrum(xp):
    """Moments (1/n) tr A^j, j = 0..4, of the SLQ density against the materialized
    spectrum, within 6 sigma of the probe average (Rademacher unit probes: sd of
    q^T A^j q is sqrt(2 (||A^j||_F^2 - sum diag(A^j)^2)) / n); the linear moment equals
    Hutchinson with the same probes exactly."""
    n, probes = 40, 400
    a, a_host = _sym(xp, 7, n, "float64", spectrum=np.concatenate([[8.0, 6.0, 5.0], np.linspace(-1, 1, n - 3)]))
    like = xp.zeros((n,), dtype=xp.float64)
    quad = spectral.slq(lambda v: v @ a, like, 12, probes, seed=4, batched=True)
    assert tuple(quad.nodes.shape) == (probes, 12) and quad.dim == n
    ev = np.linalg.eigvalsh(a_host)
    for j in range(5):
        aj = np.linalg.matrix_power(a_host, j)
        sd = math.sqrt(2 * (np.sum(aj**2) - np.sum(np.diag(aj) ** 2))) / n
        got = float(spectral.slq_trace(quad, lambda t, j=j: t**j)) / n
        assert abs(got - np.mean(ev**j)) <= 6 * sd / math.sqrt(probes) + 1e-12
    hutch = spectral.hutchinson_trace(lambda v: v @ a, like, probes, seed=4, batched=True)
    assert_close(spectral.slq_trace(quad, lambda t: t), hutch.trace, rtol=1e-10)


def test_spectral_density_is_normalized_and_has_the_right_mean(xp):
    n = 30
    a, a_host = _sym(xp, 2, n, "float64")
    like = xp.zeros((n,), dtype=xp.float64)
    quad = spectral.slq(lambda v: a @ v, like, n, 6, seed=0)  # m = n: every rule holds the whole spectrum
    grid, dens = spectral.spectral_density(quad, num_points=4000, margin=0.3)
    assert_like(dens, like)
    t, d = backend.to_numpy(grid), backend.to_numpy(dens)
    h = t[1] - t[0]
    assert abs(np.sum(d) * h - 1.0) < 1e-3
    mean = float(spectral.slq_trace(quad, lambda s: s)) / n
    assert abs(np.sum(t * d) * h - mean) < 1e-3 * np.max(np.abs(t))
    nodes = np.sort(backend.to_numpy(quad.nodes)[0])
    assert np.max(np.abs(nodes - np.linalg.eigvalsh(a_host))) < 1e-9 * np.max(np.abs(nodes))


# ------------------------------------------------------------------------ errors
def test_errors_name_the_argument(xp):
    like = xp.zeros((4,), dtype=xp.float64)
    a = xp.eye(4, dtype=xp.float64)
    with pytest.raises(TypeError, match="matvec: expected a callable"):
        spectral.lanczos(None, like)
    with pytest.raises(ValueError, match="k: expected at most"):
        spectral.lanczos(lambda v: a @ v, like, 5)
    with pytest.raises(ValueError, match=r"block_size: expected at most the dimension n = 4 of the operator, got 5"):
        spectral.block_lanczos(lambda v: v @ a, like, 2, block_size=5, batched=True)
    with pytest.raises(ValueError, match="which: expected one of"):
        spectral.lanczos(lambda v: a @ v, like, 1, which="top")
    with pytest.raises(ValueError, match=r"matvec: expected a result of shape \(4,\)"):
        spectral.lanczos(lambda v: xp.zeros((3,), dtype=xp.float64), like)
    with pytest.raises(ValueError, match="num_samples: expected an int >= 1"):
        spectral.hutchinson_trace(lambda v: a @ v, like, 0)
    with pytest.raises(ValueError, match="num_matvecs: expected an int >= 3"):
        spectral.hutchpp_trace(lambda v: a @ v, like, 2)
    with pytest.raises(ValueError, match="distribution: expected one of"):
        spectral.hutchinson_trace(lambda v: a @ v, like, 3, distribution="uniform")
    with pytest.raises(TypeError, match="like: expected a 1-D array"):
        spectral.lanczos(lambda v: v, [1.0, 2.0])
    with pytest.raises(ValueError, match="probes: expected finite values"):
        spectral.slq(lambda v: a @ v, like, 2, probes=xp.full((1, 4), float("nan"), dtype=xp.float64))
    with pytest.raises(TypeError, match="quad: expected a SpectralQuadrature"):
        spectral.spectral_density((1, 2, 3))
