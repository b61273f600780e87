"""Huh (2020) learning-dynamics theory (spec 4.1, 4.2) against independent references:
the paper's Table 1 and closed forms, NumPy pseudo-inverse powers of materialized
Hessian+ matrices, SciPy integration/quadrature, and direct NumPy computations."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad, solve_ivp

import arraycurv as ac
from arraycurv import backend
from arraycurv.data import aligned_params
from arraycurv.dynamics.theory import (
    RULES,
    balance_diagnostics,
    blockdiag_invariants,
    conserved_quantities,
    depth_calibrated_rate,
    effective_depth,
    escape_time,
    half_max_time,
    layer_mode_strengths,
    map_strength,
    map_strength_closed_form,
    map_velocity,
    mode_jacobian,
    mode_strengths,
    p_exponent,
    regularized_ngd_velocity,
    singular_mode_ode,
    singular_mode_velocity,
    table1,
)
from arraycurv.experiments.huh_theory import format_table1
from tests.helpers import RTOL, assert_close, dtype_name, dtypes, seeds, widths

INF = math.inf


# ============================================================== exponent, Table 1
def test_table1_matches_the_paper():
    # Huh (2020) Table 1: rows d = 1, 2, inf; columns q = 1, 2, inf.
    expected = {1: {1: 0.0, 2: 0.0, INF: 0.0}, 2: {1: 0.0, 2: 0.5, INF: 1.0}, INF: {1: 0.0, 2: 1.0, INF: 2.0}}
    assert table1() == expected
    text = format_table1()
    assert "| d = 2 | 0 | 1/2 | 1 |" in text and "| d = inf | 0 | 1 | 2 |" in text and "| d = 1 | 0 | 0 | 0 |" in text


def test_p_exponent_special_cases_from_the_text():
    # Sec 4.2: SGD p = 2 - 2/d, sqrt-NGD p = 1 - 1/d, NGD p = 0; Sec 4.1: d = 1 gives p = 0.
    for d in (1, 2, 3, 4, 7):
        assert p_exponent(d, INF) == pytest.approx(2 - 2 / d, rel=1e-15)
        assert p_exponent(d, 2) == pytest.approx(1 - 1 / d, rel=1e-15)
        assert p_exponent(d, 1) == 0.0
    assert p_exponent(1, 5) == 0.0
    assert p_exponent(INF, 3) == pytest.approx(4 / 3)


@given(d=st.floats(1.0, 50.0), q=st.one_of(st.floats(1.0, 50.0), st.just(INF)))
def test_effective_depth_identity(d, q):
    # eq (18): SGD at depth d_eff has the nonlinearity of q-NGD at depth d.
    assert p_exponent(effective_depth(d, q), INF) == pytest.approx(p_exponent(d, q), rel=1e-12, abs=1e-14)
    assert effective_depth(d, q) <= min(d, q) * (1 + 1e-12)


def test_effective_depth_limits():
    assert effective_depth(5, INF) == 5 and effective_depth(INF, 3) == 3 and effective_depth(7, 1) == 1.0
    assert effective_depth(INF, INF) == INF
    assert effective_depth(4, 2) == pytest.approx(8 / 5)  # sqrt-NGD: d_eff < 2
    assert depth_calibrated_rate(0.1, 4, 2) == pytest.approx(0.2) and depth_calibrated_rate(0.1, 4, INF) == 0.4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: p_exponent(0.5, 2), "d: expected a number >= 1"),
        (lambda: p_exponent(2, 0.9), "q: expected a number >= 1"),
        (lambda: p_exponent(2, math.nan), "q: expected a real number or math.inf"),
        (lambda: effective_depth("x", 2), "d: expected a real number"),
        (lambda: depth_calibrated_rate(0.1, INF, 2), "d: expected a finite real number"),
    ],
)
def test_scalar_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ====================================================== singular-mode velocities
def _j_loop(s):
    """j_i = prod_{k != i} s_k by a direct loop (NumPy, one mode)."""
    return np.array([np.prod([s[k] for k in range(len(s)) if k != i]) for i in range(len(s))])


def _pinv_power(h, power, rcond=1e-10):
    """(H^+)^power for symmetric PSD H by eigh with a relative cut-off."""
    lam, v = np.linalg.eigh(h)
    keep = lam > rcond * max(lam.max(), 0.0) if lam.max() > 0 else np.zeros_like(lam, bool)
    inv = np.zeros_like(lam)
    inv[keep] = lam[keep] ** (-power)
    return (v * inv) @ v.T


def _reference_velocity(sigma, sigma_star, eta, rule, q):
    """Velocity from the mode's Hessian+ j j^T and gradient j sigma_Delta (one mode per row)."""
    out = np.zeros_like(sigma)
    for r in range(sigma.shape[0]):
        s = sigma[r]
        d = len(s)
        j = _j_loop(s)
        sd = np.prod(s) - (sigma_star[r] if np.ndim(sigma_star) else sigma_star)
        g = j * sd
        qq = {"sgd": INF, "ngd": 1.0, "sqrt_ngd": 2.0, "ngd_d": 1.0, "sqrt_ngd_d": 2.0}.get(rule, q)
        if rule in ("sgd", "ngd", "qngd", "sqrt_ngd"):
            out[r] = -eta * g if qq == INF else -eta * _pinv_power(np.outer(j, j), 1.0 / qq) @ g
        else:  # block diagonal: per layer -eta (1/d)^(1/q) ((j_i^2)^+)^(1/q) g_i
            for i in range(d):
                blk = g[i] if qq == INF else _pinv_power(np.array([[j[i] ** 2]]), 1.0 / qq)[0, 0] * g[i] / d ** (1 / qq)
                out[r, i] = -eta * blk
    return out


rules_and_q = st.sampled_from(
    [("sgd", None), ("ngd", None), ("sqrt_ngd", None), ("qngd", 1.0), ("qngd", 1.5), ("qngd", 3.0), ("qngd", INF),
     ("ngd_d", None), ("sqrt_ngd_d", None), ("qngd_d", 1.0), ("qngd_d", 1.5), ("qngd_d", 2.0), ("qngd_d", 4.0),
     ("qngd_d", INF)]
)


@st.composite
def mode_arrays(draw, max_modes=4, max_depth=5):
    k = draw(st.integers(1, max_modes))
    d = draw(st.integers(1, max_depth))
    seed = draw(seeds)
    g = np.random.default_rng(seed)
    s = g.uniform(-1.5, 1.5, (k, d))
    if draw(st.booleans()):  # a zero strength somewhere: j_i must still be the product of the others
        s[g.integers(k), g.integers(d)] = 0.0
    return s, g.uniform(0.1, 2.0, k)


@given(case=mode_arrays(), rq=rules_and_q, dtype=dtypes, array_star=st.booleans())
def test_velocity_equals_pseudo_inverse_power_of_mode_hessian(xp, case, rq, dtype, array_star):
    s_np, star_np = case
    rule, q = rq
    sigma = backend.from_numpy(s_np, xp, dtype=dtype)
    s_ref = backend.to_numpy(sigma).astype(np.float64)
    star = backend.from_numpy(star_np, xp, dtype=dtype) if array_star else 0.7
    star_ref = backend.to_numpy(star).astype(np.float64) if array_star else 0.7
    got = singular_mode_velocity(sigma, star, 0.3, rule, q)
    expected = _reference_velocity(s_ref, star_ref, 0.3, rule, q)
    assert_close(got, expected, like=sigma, rtol=RTOL[dtype_name(sigma)] * 10, atol=1e-12)


def test_velocity_literal_equations_and_zero_strengths(xp):
    s = backend.from_numpy(np.array([[0.0, 2.0, 3.0], [0.5, -2.0, 1.5]]), xp)
    # j = products excluding i: (6, 0, 0) and (-3, 0.75, -1); sigma_Delta = 0 - 1 and -1.5 - 1.
    assert_close(mode_jacobian(s), np.array([[6.0, 0.0, 0.0], [-3.0, 0.75, -1.0]]), like=s)
    sd = np.array([[-1.0], [-2.5]])
    j = np.array([[6.0, 0.0, 0.0], [-3.0, 0.75, -1.0]])
    n2 = np.sum(j**2, axis=1, keepdims=True)
    eta, d = 0.2, 3
    assert_close(singular_mode_velocity(s, 1.0, eta, "sgd"), -eta * sd * j, like=s)  # eq (5)
    star0d = xp.asarray(1.0, dtype=xp.float64)  # a 0-d target array acts as a scalar
    assert_close(singular_mode_velocity(s, star0d, eta, "sgd"), -eta * sd * j, like=s)
    assert_close(singular_mode_velocity(s, 1.0, eta, "ngd"), -eta * sd * j / n2, like=s)  # eq (10)
    assert_close(singular_mode_velocity(s, 1.0, eta, "sqrt_ngd"), -eta * sd * j / np.sqrt(n2), like=s)  # eq (12)
    assert_close(singular_mode_velocity(s, 1.0, eta, "qngd", 3.0), -eta * sd * j / n2 ** (1 / 3), like=s)
    with np.errstate(divide="ignore"):
        ngd_d = np.where(j == 0, 0.0, -eta * sd / (d * j))  # eq (20), Moore-Penrose 0 at j_i = 0
    assert_close(singular_mode_velocity(s, 1.0, eta, "ngd_d"), ngd_d, like=s)
    assert_close(singular_mode_velocity(s, 1.0, eta, "sqrt_ngd_d"), -eta * sd * np.sign(j) / np.sqrt(d), like=s)
    # footnote 4 reduces to eqs (20), (21) at q = 1, 2
    assert_close(singular_mode_velocity(s, 1.0, eta, "qngd_d", 1.0), ngd_d, like=s)
    assert_close(
        singular_mode_velocity(s, 1.0, eta, "qngd_d", 2.0), singular_mode_velocity(s, 1.0, eta, "sqrt_ngd_d"), like=s
    )
    # q = inf gives SGD for both q-rules
    assert_close(singular_mode_velocity(s, 1.0, eta, "qngd", INF), -eta * sd * j, like=s)
    assert_close(singular_mode_velocity(s, 1.0, eta, "qngd_d", INF), -eta * sd * j, like=s)
    # all-zero mode: full rules give 0 (pseudo-inverse of the zero Hessian+)
    z = backend.from_numpy(np.zeros((1, 3)), xp)
    for rule, q in [("ngd", None), ("qngd", 1.5), ("ngd_d", None), ("qngd_d", 1.5)]:
        assert_close(singular_mode_velocity(z, 1.0, eta, rule, q), np.zeros((1, 3)), like=z)


@given(case=mode_arrays(), eps=st.sampled_from([0.0, 1e-3, 0.5, 10.0]))
def test_regularized_ngd_matches_damped_inverse_and_si16(xp, case, eps):
    s_np, star_np = case
    sigma = backend.from_numpy(s_np, xp)
    got = regularized_ngd_velocity(sigma, backend.from_numpy(star_np, xp), 0.4, eps)
    ref = np.zeros_like(s_np)
    for r in range(s_np.shape[0]):
        j = _j_loop(s_np[r])
        g = j * (np.prod(s_np[r]) - star_np[r])
        h = eps * np.eye(len(j)) + np.outer(j, j)
        ref[r] = -0.4 * (eps + 1) * (np.linalg.pinv(h, rcond=1e-12) @ g)  # S.I.15
        nj = np.linalg.norm(j)
        if nj > 0:  # S.I.16 literally, a = eps / ||j||
            a = eps / nj
            lit = -0.4 * (np.prod(s_np[r]) - star_np[r]) * (j / nj) * (a * nj + 1) / (a + nj)
            np.testing.assert_allclose(ref[r], lit, rtol=1e-9, atol=1e-12)
    assert_close(got, ref, like=sigma, rtol=1e-9, atol=1e-12)


def test_regularized_ngd_interpolates_between_ngd_and_sgd():
    s = np.array([[0.4, 0.9, 1.3]])
    ngd = singular_mode_velocity(s, 2.0, 0.5, "ngd")
    sgd = singular_mode_velocity(s, 2.0, 0.5, "sgd")
    np.testing.assert_allclose(regularized_ngd_velocity(s, 2.0, 0.5, 0.0), ngd, rtol=1e-14)
    np.testing.assert_allclose(regularized_ngd_velocity(s, 2.0, 0.5, 1e9), sgd, rtol=1e-8)


@given(case=mode_arrays(), q=st.sampled_from([1.0, 1.5, 2.0, 3.0, INF]))
def test_map_velocity_eq16_and_blockdiag_map_dynamics(case, q):
    s, star = case
    j = np.array([_j_loop(r) for r in s])
    sd = np.prod(s, axis=1) - star
    rule, qq = ("qngd", q)
    v = singular_mode_velocity(s, star, 0.3, rule, qq)
    n2 = np.sum(j**2, axis=1)
    # eq (16): sigma_bar' = sum_i sigma_i' j_i = -eta sigma_Delta ||j||^(2(1-1/q))
    expo = 1.0 if q == INF else 1.0 - 1.0 / q
    np.testing.assert_allclose(np.sum(v * j, axis=1), -0.3 * sd * n2**expo, rtol=1e-10, atol=1e-13)
    # Sec 5: NGD-d has the same linear map dynamics as NGD, -eta sigma_Delta, where every j_i != 0
    ok = np.all(j != 0, axis=1)
    vd = singular_mode_velocity(s, star, 0.3, "ngd_d")
    np.testing.assert_allclose(np.sum(vd * j, axis=1)[ok], -0.3 * sd[ok], rtol=1e-10, atol=1e-13)


@given(d=st.integers(1, 6), q=st.sampled_from([1.0, 1.5, 2.0, 3.0, INF]), sbar=st.floats(0.01, 5.0))
def test_balanced_map_velocity_is_eq17(d, q, sbar):
    # At balance sigma_i = sigma_bar^(1/d): eq (16) becomes eq (17) with eta_bar and p.
    s = np.full((1, d), sbar ** (1.0 / d))
    v = singular_mode_velocity(s, 1.3, 0.2, "qngd", q)
    j = _j_loop(s[0])
    lhs = float(np.sum(v[0] * j))
    rhs = map_velocity(sbar, 1.3, depth_calibrated_rate(0.2, d, q), p_exponent(d, q))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-14)


def test_map_velocity_array_and_float(xp):
    s = backend.from_numpy(np.array([0.0, 0.5, 2.0]), xp, dtype="float32")
    assert_close(map_velocity(s, 1.0, 2.0, 0.5), -2.0 * (np.array([0.0, 0.5, 2.0]) - 1.0) * np.sqrt([0.0, 0.5, 2.0]),
                 like=s)
    assert map_velocity(0.25, 1.0, 2.0, 0.5) == pytest.approx(-2.0 * (0.25 - 1.0) * 0.5)
    assert map_velocity(0.0, 1.0, 2.0, 0.0) == 2.0  # p = 0: linear dynamics, 0^0 = 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda xp, s: singular_mode_velocity(s, 1.0, 0.1, "adam"), r"rule: expected one of \('sgd'"),
        (lambda xp, s: singular_mode_velocity(s, 1.0, 0.1, "qngd"), "q: expected a number >= 1 .* got None"),
        (lambda xp, s: singular_mode_velocity(s, 1.0, 0.1, "qngd", 0.5), "q: expected a number >= 1"),
        (lambda xp, s: singular_mode_velocity(s, 1.0, 0.1, "sgd", 2.0), "q: expected None for rule 'sgd'"),
        (lambda xp, s: singular_mode_velocity(s, xp.ones((3,), dtype=xp.float64), 0.1, "sgd"),
         r"sigma_star: expected shape \(2,\), got \(3,\)"),
        (lambda xp, s: singular_mode_velocity(xp.asarray(1.0, dtype=xp.float64), 1.0, 0.1, "sgd"),
         r"sigma: expected an array of shape \(\.\.\., d\)"),
        (lambda xp, s: singular_mode_velocity(s, 1.0, math.nan, "sgd"), "eta: expected a finite real number"),
        (lambda xp, s: regularized_ngd_velocity(s, 1.0, 0.1, -1.0), "eps: expected a number >= 0"),
        (lambda xp, s: singular_mode_ode(1.0, 0.1, "qngd_d"), "q: expected a number >= 1"),
        (lambda xp, s: blockdiag_invariants(s, 0.0), "q: expected a number >= 1"),
    ],
)
def test_velocity_argument_errors(xp, call, match):
    s = backend.from_numpy(np.ones((2, 3)), xp)
    with pytest.raises(ValueError, match=match):
        call(xp, s)


def test_velocity_of_a_non_array_or_integers_is_a_type_error(xp):
    with pytest.raises(TypeError, match="sigma: expected an array of shape"):
        singular_mode_velocity([1.0, 2.0], 1.0, 0.1, "sgd")
    with pytest.raises(TypeError, match="sigma: expected dtype float32 or float64"):
        singular_mode_velocity(xp.asarray([[1, 2]]), 1.0, 0.1, "sgd")


# ======================================== singular modes of networks (footnote 1)
def _map_jacobian(ws):
    """d vec(W_L..W_1) / d (vec W_1, ..., vec W_L), C-order vec: vec(A W B) = (A kron B^T) vec(W)."""
    cols = []
    for i in range(len(ws)):
        a = np.eye(ws[i].shape[0])
        for w in ws[i + 1 :]:
            a = w @ a
        b = np.eye(ws[0].shape[1])
        for w in ws[:i]:
            b = w @ b
        cols.append(np.kron(a, b.T))
    return np.concatenate(cols, axis=1)


def _split(vec, ws):
    out, k = [], 0
    for w in ws:
        out.append(vec[k : k + w.size].reshape(w.shape))
        k += w.size
    return out


def _rule_update(ws, target, eta, rule, q=None, eps=None):
    """Materialized update rule on whitened data: g = J^T vec(Delta), H+ = J^T J (Huh Sec 2)."""
    jac = _map_jacobian(ws)
    prod = ws[0]
    for w in ws[1:]:
        prod = w @ prod
    g = jac.T @ (prod - target).reshape(-1)
    h = jac.T @ jac
    d = len(ws)
    if rule == "regularized":
        return _split(-eta * (eps + 1) * np.linalg.solve(eps * np.eye(len(g)) + h, g), ws)
    qq = {"sgd": INF, "ngd": 1.0, "sqrt_ngd": 2.0, "ngd_d": 1.0, "sqrt_ngd_d": 2.0}.get(rule, q)
    if rule in ("sgd", "ngd", "sqrt_ngd", "qngd"):
        return _split(-eta * (g if qq == INF else _pinv_power(h, 1 / qq) @ g), ws)
    ups, k = [], 0
    for w in ws:  # block diagonal (eq 19 and its q-th root version)
        sl = slice(k, k + w.size)
        k += w.size
        ups.append((-eta * _pinv_power(h[sl, sl], 1 / qq) @ g[sl] / d ** (1 / qq)).reshape(w.shape))
    return ups


@st.composite
def aligned_cases(draw):
    ws = draw(widths(min_depth=1, max_depth=4, min_width=1, max_width=4))
    r = draw(st.integers(1, min(ws)))
    g = np.random.default_rng(draw(seeds))
    sig = g.uniform(0.5, 1.5, (len(ws) - 1, r))
    star = g.uniform(0.2, 2.0, r)
    u = np.linalg.qr(g.standard_normal((ws[-1], ws[-1])))[0][:, :r]
    v = np.linalg.qr(g.standard_normal((ws[0], ws[0])))[0][:, :r]
    return ws, sig, star, u, v


@settings(max_examples=15)
@given(case=aligned_cases(), rq=st.sampled_from(
    [("sgd", None), ("ngd", None), ("sqrt_ngd", None), ("qngd", 3.0), ("ngd_d", None), ("sqrt_ngd_d", None),
     ("qngd_d", 3.0), ("regularized", 0.3)]))
def test_network_rules_decouple_into_singular_mode_dynamics(case, rq):
    # Footnote 1: with aligned singular vectors, the matrix update of every rule is
    # W_i' = B_i diag(sigma_i') B_{i-1}^T with sigma' from eqs (5), (10), (12), (20), (21),
    # footnote 4 and S.I.16 -- checked against materialized (pseudo-)inverse powers of Hessian+.
    ws_, sig, star, u, v = case
    rule, q = rq
    params = aligned_params(sig, u, v, ws_)  # seed=None: hidden bases = first r columns of I
    ws = [np.asarray(w) for w in params]
    target = u @ np.diag(star) @ v.T
    eps = q if rule == "regularized" else None
    ups = _rule_update(ws, target, 0.7, rule, q if rule != "regularized" else None, eps)
    modes = sig.T  # (r, d): one row per mode
    if rule == "regularized":
        vel = regularized_ngd_velocity(modes, star, 0.7, eps).T
    else:
        vel = singular_mode_velocity(modes, star, 0.7, rule, q).T
    bases = [v] + [np.eye(n, sig.shape[1]) for n in ws_[1:-1]] + [u]
    for i, up in enumerate(ups):
        expected = bases[i + 1] @ np.diag(vel[i]) @ bases[i].T
        np.testing.assert_allclose(up, expected, rtol=0, atol=1e-9 * max(1.0, np.abs(expected).max()))


@given(case=aligned_cases(), seed=seeds, dtype=dtypes)
def test_aligned_params_map_strengths_and_structure(xp, case, seed, dtype):
    ws_, sig, star, u_np, v_np = case
    u = backend.from_numpy(u_np, xp, dtype=dtype)
    v = backend.from_numpy(v_np, xp, dtype=dtype)
    sigmas = backend.from_numpy(sig, xp, dtype=dtype)
    params = aligned_params(sigmas, u, v, ws_, seed=seed)
    assert [tuple(w.shape) for w in params] == [(b, a) for a, b in zip(ws_[:-1], ws_[1:])]
    tol = RTOL[dtype] * 10
    sig_r = backend.to_numpy(sigmas).astype(np.float64)
    u_r, v_r = (backend.to_numpy(a).astype(np.float64) for a in (u, v))
    total = np.linalg.multi_dot([np.eye(ws_[-1])] + [backend.to_numpy(w).astype(np.float64) for w in params[::-1]])
    np.testing.assert_allclose(total, u_r @ np.diag(np.prod(sig_r, axis=0)) @ v_r.T, atol=tol * 10)
    assert_close(mode_strengths(params, u, v), np.prod(sig_r, axis=0), like=u, rtol=tol)
    assert_close(layer_mode_strengths(params, u, v), sig_r, like=u, rtol=tol)
    # c_i = U_i diag(sigma_i^2 - sigma_{i+1}^2) U_i^T: its nonzero eigenvalues are those differences
    for i, c in enumerate(conserved_quantities(params)):
        ev = np.sort(np.linalg.eigvalsh(backend.to_numpy(c).astype(np.float64)))
        want = np.sort(np.concatenate([sig_r[i] ** 2 - sig_r[i + 1] ** 2, np.zeros(ws_[i + 1] - sig_r.shape[1])]))
        np.testing.assert_allclose(ev, want, atol=tol * 10 * max(1.0, np.abs(want).max()))


def test_aligned_params_seed_reproducible_and_defaults():
    u, v = np.eye(3)[:, :2], np.eye(4)[:, :2]
    a = aligned_params([[1.0, 2.0], [3.0, 4.0]], u, v, (4, 5, 3), seed=1)
    b = aligned_params([[1.0, 2.0], [3.0, 4.0]], u, v, (4, 5, 3), seed=1)
    c = aligned_params([[1.0, 2.0], [3.0, 4.0]], u, v, (4, 5, 3), seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], c[0])
    d = aligned_params([[1.0, 2.0], [3.0, 4.0]], u, v, (4, 5, 3))
    np.testing.assert_array_equal(d[0], np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                                                  [0, 0, 0, 0]], dtype=float))
    assert d[0].dtype == np.float64


def test_layer_mode_strengths_moves_hidden_signs_to_the_last_layer(xp):
    u = backend.from_numpy(np.eye(2), xp)
    v = backend.from_numpy(np.eye(2), xp)
    sig = np.array([[-1.0, 2.0], [0.5, 3.0], [2.0, -1.0]])
    params = aligned_params(backend.from_numpy(sig, xp), u, v, (2, 2, 2, 2), seed=4)
    got = backend.to_numpy(layer_mode_strengths(params, u, v))
    np.testing.assert_allclose(got[:-1], np.abs(sig[:-1]), rtol=1e-12)
    np.testing.assert_allclose(np.prod(got, axis=0), np.prod(sig, axis=0), rtol=1e-12)


def test_mode_strengths_of_a_map_equals_direct_projection(xp):
    g = np.random.default_rng(0)
    m = g.standard_normal((4, 3))
    u, v = np.linalg.qr(g.standard_normal((4, 2)))[0], np.linalg.qr(g.standard_normal((3, 2)))[0]
    mx = backend.from_numpy(m, xp)
    assert_close(mode_strengths(mx, backend.from_numpy(u, xp), backend.from_numpy(v, xp)), np.diag(u.T @ m @ v),
                 like=mx)


def test_aligned_params_errors():
    u, v = np.eye(3)[:, :2], np.eye(4)[:, :2]
    with pytest.raises(ValueError, match=r"sigmas: expected at most min\(widths\) = 1 modes"):
        aligned_params(np.ones((2, 2)), u, v, (4, 1, 3))
    with pytest.raises(ValueError, match=r"sigmas: expected shape \(2, \*\)"):
        aligned_params(np.ones((3, 2)), u, v, (4, 5, 3))
    with pytest.raises(ValueError, match="u_out: expected orthonormal columns"):
        aligned_params(np.ones((2, 2)), 2 * u, v, (4, 5, 3))
    with pytest.raises(ValueError, match=r"v_in: expected shape \(4, 2\)"):
        aligned_params(np.ones((2, 2)), u, v[:3], (4, 5, 3))
    with pytest.raises(ValueError, match="widths: expected"):
        aligned_params(np.ones((2, 2)), u, v, (4,))
    with pytest.raises(ValueError, match=r"v: expected shape \(3, 2\)"):
        mode_strengths(np.ones((3, 3)), u, v)


# ============================================ conserved quantities (Theorem 1)
@given(ws=widths(min_depth=1, max_depth=4, max_width=5), seed=seeds, dtype=dtypes)
def test_conserved_quantities_and_balance_against_numpy(xp, ws, seed, dtype):
    params = tuple(backend.normal(seed + i, (b, a), xp, dtype=dtype) for i, (a, b) in enumerate(zip(ws[:-1], ws[1:])))
    ref = [backend.to_numpy(w).astype(np.float64) for w in params]
    cs = conserved_quantities(params)
    assert len(cs) == len(ws) - 2
    for i, c in enumerate(cs):
        assert_close(c, ref[i] @ ref[i].T - ref[i + 1].T @ ref[i + 1], like=params[0], rtol=RTOL[dtype] * 10)
    diag = balance_diagnostics(params)
    cn = [np.linalg.norm(ref[i] @ ref[i].T - ref[i + 1].T @ ref[i + 1]) for i in range(len(ref) - 1)]
    den = [np.linalg.norm(ref[i] @ ref[i].T) + np.linalg.norm(ref[i + 1].T @ ref[i + 1]) for i in range(len(ref) - 1)]
    assert_close(diag["c_norm"], np.array(cn).reshape(-1), like=params[0], rtol=RTOL[dtype] * 10)
    assert_close(diag["relative_imbalance"], (np.array(cn) / np.array(den)).reshape(-1), like=params[0],
                 rtol=RTOL[dtype] * 10)
    assert_close(diag["layer_norm"], np.array([np.linalg.norm(w) for w in ref]), like=params[0], rtol=RTOL[dtype] * 10)


def test_conserved_quantities_errors(xp):
    w1 = xp.ones((3, 2), dtype=xp.float64)
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape \(\*, 3\), got \(2, 4\)"):
        conserved_quantities((w1, xp.ones((2, 4), dtype=xp.float64)))
    with pytest.raises(ValueError, match=r"params\[0\]: expected an array with 2 dimensions"):
        conserved_quantities((xp.ones((3,), dtype=xp.float64),))
    with pytest.raises(TypeError, match="params: expected a non-empty tuple"):
        conserved_quantities(w1)


def _drift(values):
    values = np.asarray(values)
    return np.max(np.abs(values - values[0])) / max(np.max(np.abs(values[0])), 1e-300)


#: Invariant drift allowed along an integrated trajectory: relative drift <= C_DRIFT * rtol
#: (measured <= 3 for these trajectories; linear invariants are kept to rounding).
C_DRIFT = 10.0


@pytest.mark.parametrize("rule, q", [("sgd", None), ("ngd", None), ("sqrt_ngd", None), ("qngd", 3.0)])
def test_full_rules_keep_hyperbolic_paths_eq6(rule, q):
    s0 = np.array([[0.3, 0.5, 0.8], [0.05, 0.1, 0.2]])
    star = np.array([2.0, 0.7])
    drifts = []
    for rtol in (1e-6, 1e-10):
        sol = ac.dynamics.solve_ode(singular_mode_ode(star, 1.0, rule, q), (0.0, 6.0), s0, rtol=rtol, atol=1e-3 * rtol)
        hyper = [y[:, :-1] ** 2 - y[:, 1:] ** 2 for y in sol.y]  # eq (6), computed directly
        drifts.append(_drift(hyper))
        assert drifts[-1] <= C_DRIFT * rtol
        assert np.max(np.abs(np.prod(sol.y[-1], axis=1) - star)) < 0.05 * np.max(star) or rule == "sgd"
    assert drifts[1] < drifts[0]


@pytest.mark.parametrize("rule, q, q_inv", [("ngd_d", None, 1.0), ("sqrt_ngd_d", None, 2.0), ("qngd_d", 3.0, 3.0)])
def test_blockdiag_rules_keep_their_invariants_and_break_eq6(rule, q, q_inv):
    s0 = np.array([[0.3, 0.5, 0.8], [0.05, 0.1, 0.2]])
    star = np.array([2.0, 0.7])
    for rtol in (1e-6, 1e-10):
        sol = ac.dynamics.solve_ode(singular_mode_ode(star, 1.0, rule, q), (0.0, 6.0), s0, rtol=rtol, atol=1e-3 * rtol)
        a = 2 * (1 - 1 / q_inv)
        direct = [y[:, :-1] / y[:, 1:] if q_inv == 1 else np.abs(y[:, :-1]) ** a - np.abs(y[:, 1:]) ** a
                  for y in sol.y]  # footnote 4, computed directly
        np.testing.assert_allclose(blockdiag_invariants(sol.y[-1], q_inv), direct[-1], rtol=1e-12)
        assert _drift(direct) <= C_DRIFT * rtol
        hyper = [y[:, :-1] ** 2 - y[:, 1:] ** 2 for y in sol.y]
        assert _drift(hyper) > 1e-2  # the hyperbolic paths of eq (6) are left


def _sgd_flow(xp, target):
    """Gradient flow of Huh eq (1) on whitened data: W_i' = -W_{>i}^T Delta W_{<i}^T, written here."""

    def fun(t, ws):
        n = len(ws)
        prod = ws[0]
        for w in ws[1:]:
            prod = xp.matmul(w, prod)
        delta = prod - target
        out = []
        for i in range(n):
            a = xp.eye(ws[-1].shape[0], dtype=target.dtype, device=backend.device_of(target))
            for w in ws[i + 1 :][::-1]:
                a = xp.matmul(a, w)
            b = xp.eye(ws[0].shape[1], dtype=target.dtype, device=backend.device_of(target))
            for w in ws[:i]:
                b = xp.matmul(w, b)
            out.append(-xp.matmul(xp.matmul(xp.matrix_transpose(a), delta), xp.matrix_transpose(b)))
        return tuple(out)

    return fun


def test_theorem1_sgd_flow_conserves_c_i(xp):
    g = np.random.default_rng(3)
    ws_ = (3, 4, 2, 3)
    params = tuple(backend.from_numpy(0.5 * g.standard_normal((b, a)), xp) for a, b in zip(ws_[:-1], ws_[1:]))
    target = backend.from_numpy(g.standard_normal((3, 3)), xp)
    c0 = [backend.to_numpy(c) for c in conserved_quantities(params)]
    drifts = []
    for rtol in (1e-5, 1e-9):
        sol = ac.dynamics.solve_ode(_sgd_flow(xp, target), (0.0, 3.0), params, rtol=rtol, atol=1e-3 * rtol,
                                    t_eval=[3.0])
        c1 = [backend.to_numpy(c) for c in conserved_quantities(sol.y[-1])]
        drift = max(np.max(np.abs(a - b)) for a, b in zip(c0, c1)) / max(np.max(np.abs(c)) for c in c0)
        assert drift <= C_DRIFT * rtol
        drifts.append(drift)
    assert drifts[1] < drifts[0]


@pytest.mark.parametrize("rule, q", [("ngd", None), ("qngd", 3.0), ("ngd_d", None)])
def test_theorem1_curvature_corrected_flows_materialized(rule, q):
    # Full NGD / q-NGD conserve c_i (Theorem 1); NGD-d does not (Sec 5).
    g = np.random.default_rng(5)
    ws_ = (2, 3, 2)
    ws0 = [0.8 * g.standard_normal((b, a)) for a, b in zip(ws_[:-1], ws_[1:])]
    target = g.standard_normal((2, 2))
    shapes = [w.shape for w in ws0]

    def fun(t, y):
        ws = _split(y, [np.empty(s) for s in shapes])
        return np.concatenate([u.reshape(-1) for u in _rule_update(ws, target, 1.0, rule, q)])

    y0 = np.concatenate([w.reshape(-1) for w in ws0])
    c0 = conserved_quantities(tuple(ws0))[0]
    sol = ac.dynamics.solve_ode(fun, (0.0, 1.0), y0, rtol=1e-9, atol=1e-12, t_eval=[1.0])
    c1 = conserved_quantities(tuple(_split(sol.y[-1], [np.empty(s) for s in shapes])))[0]
    drift = np.max(np.abs(c1 - c0)) / np.max(np.abs(c0))
    if rule == "ngd_d":
        assert drift > 1e-2
    else:
        assert drift <= C_DRIFT * 1e-9


# ========================================================== map dynamics eq (17)
def _scipy_map(t, p, star, eta, s0):
    sol = solve_ivp(lambda tt, s: -eta * (s - star) * np.abs(s) ** p, (0.0, float(np.max(t))), [s0],
                    t_eval=np.asarray(t, float), rtol=1e-12, atol=1e-14, method="DOP853")
    return sol.y[0]


@pytest.mark.parametrize("p, s0", [(0.0, 0.3), (0.0, 3.0), (0.0, -1.0), (0.5, 0.01), (0.5, 1.5), (0.5, 4.0),
                                   (1.0, 0.01), (1.0, 5.0)])
def test_closed_forms_against_scipy_integration(xp, p, s0):
    t = np.linspace(0.0, 6.0, 13)
    tx = backend.from_numpy(t, xp)
    got = map_strength_closed_form(tx, p, 1.5, 0.8, s0)
    assert_close(got, _scipy_map(t, p, 1.5, 0.8, s0), like=tx, rtol=1e-9)
    assert map_strength_closed_form(2.0, p, 1.5, 0.8, s0) == pytest.approx(_scipy_map([0, 2.0], p, 1.5, 0.8, s0)[-1],
                                                                           rel=1e-9)


def test_closed_forms_from_zero_are_the_papers(xp):
    t = np.linspace(0.0, 5.0, 11)
    tx = backend.from_numpy(t, xp, dtype="float32")
    star, eta = 2.0, 0.7
    assert_close(map_strength_closed_form(tx, 0, star, eta), star * (1 - np.exp(-eta * t)), like=tx)  # p = 0
    assert_close(map_strength_closed_form(tx, 0.5, star, eta), star * np.tanh(eta * np.sqrt(star) * t / 2) ** 2,
                 like=tx)  # p = 1/2
    assert_close(map_strength_closed_form(tx, 1, star, eta, 0.02),
                 star / (1 + (star / 0.02 - 1) * np.exp(-eta * star * t)), like=tx)  # p = 1


@pytest.mark.parametrize("p, s0", [(0.3, 0.05), (0.75, 0.2), (4 / 3, 0.01), (1.6, 2.5), (2.0, 0.1)])
def test_numerical_map_strength_against_scipy(p, s0):
    t = np.linspace(0.0, 8.0, 9)
    got = map_strength(t, p, 1.5, 1.0, s0)
    np.testing.assert_allclose(got, _scipy_map(t, p, 1.5, 1.0, s0), rtol=1e-7)
    assert map_strength(3.0, p, 1.5, 1.0, s0) == pytest.approx(got[3], rel=1e-9)


@pytest.mark.parametrize("p", [0.3, 0.75, 0.9])
def test_numerical_map_strength_leaves_zero_like_the_closed_forms(p):
    # From sigma0 = 0 with p < 1 the non-trivial solution is taken; it reaches each level at
    # the time given by the quadrature t = int ds / (eta (s* - s) s^p) (SciPy quad).
    star, eta = 1.5, 1.0
    for level in (0.1, 0.75, 1.2):
        t_level = quad(lambda s: 1 / (eta * (star - s) * s**p), 0.0, level, limit=200, epsabs=1e-13, epsrel=1e-12)[0]
        assert map_strength(t_level, p, star, eta, 0.0) == pytest.approx(level, rel=1e-7)
    # near 0: sigma ~ ((1 - p) eta s* t)^(1/(1-p)) (polynomial growth, Sec 4.2)
    t = 1e-6
    assert map_strength(t, p, star, eta, 0.0) == pytest.approx(((1 - p) * eta * star * t) ** (1 / (1 - p)), rel=1e-4)


@pytest.mark.parametrize("d, q", [(2, 2.0), (2, INF), (3, INF), (4, 2.0), (3, 1.0), (5, 3.0)])
def test_map_strength_matches_balanced_singular_mode_dynamics(d, q):
    # Integrate the per-layer q-NGD ODE (eq 12) from balanced sigma_i = s0^(1/d) with SciPy;
    # sigma_bar(t) follows eq (17) with p(d, q) and eta_bar = eta d^(1-1/q).
    eta, star, s0 = 0.3, 1.7, 0.02
    t = np.linspace(0.0, 25.0, 11)

    def fun(tt, s):
        return singular_mode_velocity(s[None, :], star, eta, "qngd", q)[0]

    ref = solve_ivp(fun, (0.0, 25.0), np.full(d, s0 ** (1 / d)), t_eval=t, rtol=1e-12, atol=1e-14, method="DOP853")
    sbar = np.prod(ref.y, axis=0)
    got = map_strength(t, p_exponent(d, q), star, depth_calibrated_rate(eta, d, q), s0)
    np.testing.assert_allclose(got, sbar, rtol=1e-7)


@pytest.mark.parametrize("p", [0.0, 0.5, 0.75, 1.0, 4 / 3, 1.8])
def test_half_max_time_scaling_and_quadrature(p):
    # Fig 2: the half-max time scales as sigma_star^-p at fixed sigma0 / sigma_star.
    eta = 0.9
    star = 2.0
    s0 = 0.0 if p < 1 else star / 100
    t1 = half_max_time(p, star, eta, s0)
    for c in (0.25, 3.0):
        assert half_max_time(p, c * star, eta, c * s0) == pytest.approx(t1 * c**-p, rel=1e-8)
    ref = quad(lambda s: 1 / (eta * (star - s) * s**p), s0, star / 2, limit=200, epsabs=1e-13, epsrel=1e-12)[0]
    assert t1 == pytest.approx(ref, rel=1e-8)
    assert map_strength(t1, p, star, eta, s0) == pytest.approx(star / 2, rel=1e-7)


def test_escape_time_asymptotics():
    star, eta = 1.5, 0.8
    # p > 1: t ~ sigma0^(1-p) / ((p - 1) eta s*)
    for p in (4 / 3, 1.5):
        s0 = 1e-10
        assert escape_time(p, star, eta, s0) * s0 ** (p - 1) * (p - 1) * eta * star == pytest.approx(1.0, rel=1e-3)
    # p = 1: t + ln(sigma0) / (eta s*) tends to a constant
    a = escape_time(1.0, star, eta, 1e-8) + math.log(1e-8) / (eta * star)
    b = escape_time(1.0, star, eta, 1e-12) + math.log(1e-12) / (eta * star)
    assert a == pytest.approx(b, abs=1e-6)
    # p < 1: finite and continuous at sigma0 = 0, t(0) - t(s0) ~ (s0/s*)^(1-p) / ((1-p) eta s*^p)
    for p in (0.5, 0.75):
        for s0 in (1e-12, 1e-8):
            gap = escape_time(p, star, eta, 0.0) - escape_time(p, star, eta, s0)
            assert gap == pytest.approx((s0 / star) ** (1 - p) / ((1 - p) * eta * star**p), rel=1e-4)
    assert escape_time(1.2, star, eta, 0.0) == math.inf
    assert escape_time(0.7, star, eta, star) == 0.0
    assert escape_time(0.7, star, eta, 0.0, fraction=0.9) > escape_time(0.7, star, eta, 0.0, fraction=0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: map_strength_closed_form(1.0, 1.0, 1.0, 1.0, 0.0), "sigma0: expected sigma0 > 0 for p = 1"),
        (lambda: map_strength_closed_form(1.0, 0.3, 1.0, 1.0, 0.1), "p: expected 0, 1/2 or 1"),
        (lambda: map_strength_closed_form(1.0, 0.5, 1.0, 1.0, -0.1), "sigma0: expected sigma0 >= 0"),
        (lambda: map_strength_closed_form(-1.0, 0.5, 1.0, 1.0), "t: expected finite times >= 0"),
        (lambda: map_strength(1.0, 1.5, 1.0, 1.0, 0.0), "sigma0: expected sigma0 > 0 for p = 1.5"),
        (lambda: map_strength(1.0, -0.5, 1.0, 1.0), "p: expected a number >= 0"),
        (lambda: map_strength(1.0, 0.5, 0.0, 1.0), "sigma_star: expected a target strength > 0"),
        (lambda: map_strength(1.0, 0.5, 1.0, 0.0), "eta_bar: expected a number > 0"),
        (lambda: escape_time(0.5, 1.0, 1.0, fraction=1.0), r"fraction: expected a number in \(0, 1\)"),
        (lambda: escape_time(0.5, -1.0, 1.0), "sigma_star: expected a number > 0"),
        (lambda: half_max_time(0.5, 1.0, 1.0, -0.2), "sigma0: expected sigma0 >= 0"),
    ],
)
def test_map_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_map_strength_array_keeps_namespace_dtype_and_shape(xp):
    t = np.array([[0.0, 1.0], [2.5, 7.0]])
    tx = backend.from_numpy(t, xp, dtype="float32")
    got = map_strength(tx, 0.75, 1.5, 1.0, 0.05)
    assert_close(got, _scipy_map(t.reshape(-1), 0.75, 1.5, 1.0, 0.05).reshape(2, 2), like=tx)


def test_exports():
    for name in ("p_exponent", "table1", "singular_mode_velocity", "map_strength", "conserved_quantities", "RULES"):
        assert getattr(ac.dynamics.theory, name) is not None
    assert ac.data.aligned_params is not None
    assert set(RULES) == {"sgd", "ngd", "qngd", "sqrt_ngd", "ngd_d", "sqrt_ngd_d", "qngd_d"}
