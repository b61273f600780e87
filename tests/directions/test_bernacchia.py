"""Exact natural gradient of Bernacchia, Lengyel & Hennequin (2018), eq (10)/(20), against
independent references: the Fisher F = (1/B) sum_b J_b^T Sigma~^{-1} J_b materialized on the
host in float64 from the explicit Jacobian, NumPy inverses, a NumPy forward/backward pass of a
tanh MLP written here, the Moore-Penrose NGD of arraycurv.directions.qngd_direction, the
closed-form loss decay e^{-2 alpha t} of eq (18), and Monte-Carlo standard errors.

Networks are initialized near orthogonal (orthogonal weights plus a small Gaussian
perturbation) and inputs have B >= 2 n_0 + 2 rows, so that the factors stay well conditioned
and rounding-level tolerances (tests/helpers.py RTOL times a small factor) apply.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.directions.bernacchia import (
    BottleneckWarning,
    SingularPathWarning,
    bernacchia_factors,
    bernacchia_ngd_direction,
    check_map_path,
    has_bottleneck,
    map_path_singularity,
    map_velocity,
    predicted_change,
)
from arraycurv.dynamics.integrate import solve_ode
from arraycurv.models.deep_linear import partial_products
from arraycurv.params import flatten
from tests.helpers import RTOL, assert_close, assert_tree_close, dtypes, seeds


# ----------------------------------------------------------------------------- cases
@st.composite
def exact_widths(draw, max_depth=4, max_width=5):
    """Widths whose hidden layers are all >= max(n_0, n_L) (no bottleneck), depth >= 2."""
    depth = draw(st.integers(2, max_depth))
    n0, nl = draw(st.integers(1, max_width)), draw(st.integers(1, max_width))
    lo = max(n0, nl)
    hidden = [draw(st.integers(lo, lo + 2)) for _ in range(depth - 1)]
    return (n0, *hidden, nl)


def _params(model, seed, xp=np, dtype="float64", eps=0.2):
    g = np.random.default_rng(seed)
    p = ac.init_params(model, seed, method="orthogonal")
    p = tuple(backend.to_numpy(w) + eps * g.standard_normal(w.shape) / math.sqrt(w.shape[1]) for w in p)
    return tuple(backend.from_numpy(w, xp, dtype=dtype) for w in p)


def _batch(widths, nb, seed, xp=np, dtype="float64"):
    g = np.random.default_rng(seed + 7)
    x, y = g.standard_normal((nb, widths[0])), g.standard_normal((nb, widths[-1]))
    return backend.from_numpy(x, xp, dtype=dtype), backend.from_numpy(y, xp, dtype=dtype)


def _host(t):
    return tuple(backend.to_numpy(a).astype(np.float64) for a in t)


def _fisher_and_grad(model, params, batch, noise_cov=None):
    """Host float64 F = (1/B) sum J_b^T S^{-1} J_b and g = (1/B) sum J_b^T S^{-1} (f_b - y_b)."""
    p = _host(params)
    x, y = (backend.to_numpy(a).astype(np.float64) for a in batch)
    jac = backend.to_numpy(ac.jacobian(model, p, x))
    out = backend.to_numpy(ac.forward(model, p, x))
    s_inv = np.eye(y.shape[1]) if noise_cov is None else np.linalg.inv(backend.to_numpy(noise_cov))
    nb = x.shape[0]
    fisher = np.einsum("bkp,kl,blq->pq", jac, s_inv, jac) / nb
    grad = np.einsum("bkp,kl,bl->p", jac, s_inv, out - y) / nb
    return fisher, grad


def _factor_condition(widths, ws, x):
    """max over layers of cond(error factor) * cond(input factor) of a deep linear network
    (MSE, unit noise), each over its structural rank, from the weights in NumPy float64:
    error factor (W_L ... W_{l+1})^T (W_L ... W_{l+1}), input factor
    (W_{l-1} ... W_1) <x x^T> (W_{l-1} ... W_1)^T (Bernacchia et al. 2018 eq 10)."""
    depth = len(ws)
    worst = 1.0
    for i in range(depth):
        after = np.eye(widths[-1])
        for w in ws[:i:-1]:
            after = after @ w
        before = np.eye(widths[0])
        for w in ws[:i]:
            before = w @ before
        conds = []
        for f, r in ((after.T @ after, min(widths[i + 1:])), (before @ (x.T @ x / x.shape[0]) @ before.T,
                                                            min(min(widths[: i + 1]), x.shape[0]))):
            ev = np.sort(np.linalg.eigvalsh(f))[::-1][:r]
            conds.append(ev[0] / ev[-1])
        worst = max(worst, conds[0] * conds[1])
    return worst


def _loss(model, params, batch):
    x, y = batch
    r = backend.to_numpy(ac.forward(model, params, x)) - backend.to_numpy(y)
    return 0.5 * float(np.sum(r * r)) / r.shape[0]


# ----------------------------------------------------------------------------- generalized inverse
@given(widths=exact_widths(), seed=seeds, dtype=dtypes)
@settings(max_examples=20)
@example(widths=(3, 4, 6, 4), seed=922, dtype="float32")  # |d| ~ 100 |g|: F d rounds at 1e-2 |g|
def test_eq10_solves_the_fisher_system_and_differs_from_moore_penrose(xp, widths, seed, dtype):
    model = ac.DeepLinear(widths)
    params = _params(model, seed, xp, dtype)
    batch = _batch(widths, 2 * widths[0] + 2, seed, xp, dtype)
    d = bernacchia_ngd_direction(model, params, batch)
    assert_tree_close(d, d, like=params[0])
    fisher, grad = _fisher_and_grad(model, params, batch)
    dv = flatten(_host(d))
    # float32: the error of the inverted factors grows with their conditioning, so the
    # bound scales with it; a factor whose structural-rank eigenvalues reach float32's
    # resolution is truncated there (a different generalized inverse), so such draws are
    # left to float64 (e.g. widths (4, 5, 7, 7, 5), seed 4790: the 5 x 5 error factor of
    # layer 0, (W4 W3 W2)^T (W4 W3 W2), has an eigenvalue 2e-7 of its largest)
    kappa = _factor_condition(widths, _host(params), backend.to_numpy(batch[0]).astype(np.float64))
    if dtype == "float32":
        assume(kappa <= 1e3)
    tol = 1e-9 if dtype == "float64" else max(2e-3, 100 * float(np.finfo(np.float32).eps) * kappa)
    # the residual of a backward-stable solve is relative to |F| |d| + |g|: where d is much
    # larger than g (small nonzero Fisher eigenvalues) float32 rounding of F d dominates
    scale = np.max(np.abs(grad)) if dtype == "float64" else np.max(np.abs(fisher) @ np.abs(dv) + np.abs(grad))
    assert np.max(np.abs(fisher @ dv + grad)) <= tol * scale + 1e-300
    d_mp = -np.linalg.pinv(fisher, rcond=1e-10, hermitian=True) @ grad
    diff = dv - d_mp
    assert np.max(np.abs(fisher @ diff)) <= tol * scale  # a null-space component
    if dtype == "float64" and model.num_params > widths[0] * widths[-1]:
        assert np.linalg.norm(diff) > 1e-6 * np.linalg.norm(dv)  # ... which is not zero


@given(widths=exact_widths(max_depth=3, max_width=4), seed=seeds)
@settings(max_examples=10)
def test_eq10_with_noise_covariance_solves_the_weighted_fisher_system(widths, seed):
    model = ac.DeepLinear(widths)
    params = _params(model, seed)
    batch = _batch(widths, 2 * widths[0] + 2, seed)
    g = np.random.default_rng(seed)
    a = g.standard_normal((widths[-1], widths[-1]))
    cov = a @ a.T + 0.5 * np.eye(widths[-1])
    d = bernacchia_ngd_direction(model, params, batch, noise_cov=cov)
    fisher, grad = _fisher_and_grad(model, params, batch, cov)
    assert np.max(np.abs(fisher @ flatten(d) + grad)) <= 1e-9 * np.max(np.abs(grad))
    # a scalar noise covariance c I does not change the direction (the paper's 1e-6 I)
    assert_tree_close(bernacchia_ngd_direction(model, params, batch, noise_cov=1e-6 * np.eye(widths[-1])),
                      bernacchia_ngd_direction(model, params, batch), rtol=1e-8)


def test_eq10_equals_numpy_reference_formula(xp):
    widths = (3, 4, 5, 2)
    model = ac.DeepLinear(widths)
    params = _params(model, 3, xp)
    x, y = _batch(widths, 11, 3, xp)
    p, xn, yn = _host(params), backend.to_numpy(x), backend.to_numpy(y)
    lam = 0.3
    got = bernacchia_ngd_direction(model, params, (x, y), damping=lam, alpha=0.7)
    ref = []
    for i in range(3):
        below = np.eye(3) if i == 0 else np.linalg.multi_dot([*p[:i][::-1], np.eye(3)])
        above = np.eye(2) if i == 2 else np.linalg.multi_dot([np.eye(2), *p[i + 1:][::-1]])
        xi = xn @ below.T
        ei = (yn - xn @ np.linalg.multi_dot(p[::-1]).T) @ above  # e_i = W_{>i}^T (y - f)
        e_cov = above.T @ above + math.sqrt(lam) * np.eye(widths[i + 1])
        x_cov = xi.T @ xi / 11 + math.sqrt(lam) * np.eye(widths[i])
        ref.append(0.7 / 3 * np.linalg.solve(e_cov, ei.T @ xi / 11) @ np.linalg.inv(x_cov))
    assert_tree_close(got, tuple(ref), like=params[0])


# ----------------------------------------------------------------------------- map velocity
@given(widths=st.one_of(exact_widths(), st.sampled_from([(4, 2, 4), (5, 3, 3), (3, 3, 2, 3), (4, 6, 2, 5)])),
       seed=seeds, alpha=st.floats(0.2, 2.0))
@settings(max_examples=20)
def test_map_velocity_identity_eqs_17_to_19(widths, seed, alpha):
    model = ac.DeepLinear(widths)
    params = _params(model, seed)
    x, y = _batch(widths, 2 * widths[0] + 2, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BottleneckWarning)
        d = bernacchia_ngd_direction(model, params, (x, y), alpha=alpha)
    pre, suf = partial_products(params)
    via_eq17 = sum(s @ di @ p for s, di, p in zip(suf, d, pre))
    vel = map_velocity(model, params, (x, y), alpha=alpha)
    assert_close(vel, via_eq17, rtol=1e-8)
    if not has_bottleneck(model):  # eq (18): -alpha (W - <y x^T> Sigma^{-1})
        wbar = np.linalg.multi_dot([np.eye(widths[-1]), *params[::-1]])
        target = np.linalg.solve(x.T @ x, x.T @ y).T
        assert_close(vel, -alpha * (wbar - target), rtol=1e-8)


# ----------------------------------------------------------------------------- continuous time
def _flow(model, batch, fn):
    return lambda t, p: tuple(fn(model, tuple(p), batch))


def _target_batch(widths, seed, nb=12):
    """Inputs and noisy targets of a random teacher whose map has det > 0 (square case)."""
    g = np.random.default_rng(seed)
    t = g.standard_normal((widths[-1], widths[0]))
    x = g.standard_normal((nb, widths[0]))
    return x, x @ t.T + 0.1 * g.standard_normal((nb, widths[-1]))


def _no_crossing_params(model, batch, seed):
    for s in range(seed, seed + 50):
        p = _params(model, s)
        res = check_map_path(model, p, batch, warn=False)
        if res is None or not res.times:
            return p
    raise AssertionError("no initialization without a singular crossing")


@pytest.mark.slow
@pytest.mark.parametrize("widths", [(3, 3, 3), (2, 4, 3, 2), (3, 5, 4)])
def test_loss_trajectory_equals_moore_penrose_ngd_and_decays_exponentially(widths):
    model = ac.DeepLinear(widths)
    batch = _target_batch(widths, 1)
    params = _no_crossing_params(model, batch, 2)
    alpha = 0.8
    ts = np.linspace(0.0, 3.0, 7)
    eq10 = solve_ode(_flow(model, batch, lambda m, p, b: bernacchia_ngd_direction(m, p, b, alpha=alpha)),
                     (0.0, 3.0), params, rtol=1e-10, atol=1e-12, t_eval=ts)
    mp = solve_ode(_flow(model, batch, lambda m, p, b: bernacchia_ngd_direction(m, p, b, alpha=alpha,
                                                                                form="moore_penrose")),
                   (0.0, 3.0), params, rtol=1e-10, atol=1e-12, t_eval=ts)
    l10 = np.array([_loss(model, p, batch) for p in eq10.y])
    lmp = np.array([_loss(model, p, batch) for p in mp.y])
    np.testing.assert_allclose(l10, lmp, rtol=1e-7)
    x, y = batch
    target = np.linalg.lstsq(x, y, rcond=None)[0].T
    l_min = 0.5 * np.sum((x @ target.T - y) ** 2) / x.shape[0]
    np.testing.assert_allclose(l10 - l_min, (l10[0] - l_min) * np.exp(-2 * alpha * ts), rtol=1e-6)
    assert np.max(np.abs(flatten(eq10.y[-1]) - flatten(mp.y[-1]))) > 1e-3  # parameter paths differ


@pytest.mark.slow
def test_bottleneck_trajectory_departs_from_moore_penrose():
    widths = (5, 2, 5)
    model = ac.DeepLinear(widths)
    batch = _target_batch(widths, 3, nb=20)
    params = _params(model, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BottleneckWarning)
        eq10 = solve_ode(_flow(model, batch, bernacchia_ngd_direction), (0.0, 4.0), params, rtol=1e-8, atol=1e-10)
    mp = solve_ode(_flow(model, batch, lambda m, p, b: bernacchia_ngd_direction(m, p, b, form="moore_penrose")),
                   (0.0, 4.0), params, rtol=1e-8, atol=1e-10)
    l10, lmp = _loss(model, eq10.y[-1], batch), _loss(model, mp.y[-1], batch)
    assert abs(l10 - lmp) > 1e-3 * lmp


# ----------------------------------------------------------------------------- Monte Carlo
def _standardized_deviation(est, mean, var):
    return np.max(np.abs(est - mean) / np.sqrt(var))


def test_monte_carlo_error_covariance_converges_deep_linear():
    """Each entry of <e e^T> from N = K B Gaussian draws has variance
    (S_aa S_bb + S_ab^2) / N around the closed form S = W_{>i}^T S~^{-1} W_{>i}; every entry
    must lie within 5 standard errors (a 5-sigma two-sided bound, ~6e-7 per entry), and the
    error must shrink as N grows (K = 50 -> 800)."""
    widths = (3, 4, 4, 2)
    model = ac.DeepLinear(widths)
    params = _params(model, 5)
    batch = _batch(widths, 40, 5)
    cov = np.array([[1.5, 0.4], [0.4, 0.7]])
    exact = bernacchia_factors(model, params, batch, noise_cov=cov)
    devs = []
    for k in (50, 800):
        mc = bernacchia_factors(model, params, batch, num_samples=k, seed=11, noise_cov=cov)
        n = k * 40
        dev = 0.0
        for fe, fm in zip(exact.layers, mc.layers):
            s = fe.error_cov
            var = (np.outer(np.diag(s), np.diag(s)) + s * s) / n
            dev = max(dev, _standardized_deviation(fm.error_cov, s, var))
            assert_close(fm.input_cov, fe.input_cov, rtol=1e-12)
            assert_close(fm.grad, fe.grad, rtol=1e-12)
        assert dev < 5.0
        devs.append(max(np.max(np.abs(fm.error_cov - fe.error_cov)) for fe, fm in zip(exact.layers, mc.layers)))
    assert devs[1] < devs[0]


def test_monte_carlo_error_covariance_converges_mlp():
    """Same 5-sigma test for a tanh MLP, with the exact per-entry variance
    (1 / (K B^2)) sum_b (C_b,aa C_b,bb + C_b,ab^2) from the per-sample covariances
    C_b = J_b^T J_b (identity columns back-propagated per sample)."""
    model = ac.mlp((3, 5, 4, 2), "tanh")
    params = ac.init_params(model, 2)
    x, y = _batch((3, 2), 30, 2)
    k = 400
    exact = bernacchia_factors(model, params, (x, y))
    mc = bernacchia_factors(model, params, (x, y), num_samples=k, seed=3)
    from arraycurv.models import sequential as seq

    lin = ac.linearize(model, params, x)
    deltas = seq.backprop_to_layer_outputs(lin, np.broadcast_to(np.eye(2)[:, None, :], (2, 30, 2)))
    dense = [i for i, (a, b) in enumerate(seq.layer_param_indices(model)) if b > a]
    for li, (fe, fm) in zip(dense, zip(exact.layers, mc.layers)):
        c_b = np.einsum("sbi,sbj->bij", deltas[li], deltas[li])  # (B, n, n)
        assert_close(fe.error_cov, c_b.mean(axis=0), rtol=1e-12)
        diag = np.einsum("bii->bi", c_b)
        var = (np.einsum("bi,bj->ij", diag, diag) + np.sum(c_b * c_b, axis=0)) / (k * 30**2)
        assert _standardized_deviation(fm.error_cov, fe.error_cov, var) < 5.0


def test_monte_carlo_never_uses_the_targets():
    widths = (3, 4, 2)
    model = ac.DeepLinear(widths)
    params = _params(model, 1)
    x, y = _batch(widths, 10, 1)
    a = bernacchia_factors(model, params, (x, y), num_samples=3, seed=4)
    b = bernacchia_factors(model, params, (x, 5.0 + 3.0 * y), num_samples=3, seed=4)
    for fa, fb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(fa.error_cov, fb.error_cov)


# ----------------------------------------------------------------------------- damping
@given(seed=seeds, dtype=dtypes)
@settings(max_examples=10)
def test_large_damping_gives_a_small_sgd_step(xp, seed, dtype):
    widths = (3, 4, 4, 2)
    model = ac.DeepLinear(widths)
    params = _params(model, seed, xp, dtype)
    batch = _batch(widths, 9, seed, xp, dtype)
    _, g = ac.value_and_grad(model, params, batch)
    errs = []
    for lam in (1e6, 1e10):
        d = bernacchia_ngd_direction(model, params, batch, damping=lam, alpha=1.0)
        scaled = tuple(lam * model.depth * di for di in d)  # -> -g as lambda -> inf
        errs.append(max(float(np.max(np.abs(backend.to_numpy(s) + backend.to_numpy(gi))))
                        for s, gi in zip(scaled, g)))
        assert_close(d[0], d[0], like=params[0])
    gmax = max(float(np.max(np.abs(backend.to_numpy(gi)))) for gi in g)
    assert errs[0] < 1e-2 * gmax
    if dtype == "float64":
        assert errs[1] < 1e-1 * errs[0]  # the SGD limit is approached as 1 / sqrt(lambda)


def test_randomized_inverse_route_matches_direct():
    widths = (6, 4, 2, 4, 6)
    model = ac.DeepLinear(widths)
    params = _params(model, 0)
    batch = _batch(widths, 20, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BottleneckWarning)
        for lam in (0.0, 0.05):
            assert_tree_close(bernacchia_ngd_direction(model, params, batch, damping=lam, inverse="randomized"),
                              bernacchia_ngd_direction(model, params, batch, damping=lam), rtol=1e-8)


# ----------------------------------------------------------------------------- predicted decrease
@given(seed=seeds, alpha=st.floats(0.1, 1.9))
@settings(max_examples=10)
def test_predicted_change_footnote_1(seed, alpha):
    widths = (3, 4, 2)
    model = ac.DeepLinear(widths)
    params = _params(model, seed)
    batch = _batch(widths, 10, seed)
    d = bernacchia_ngd_direction(model, params, batch)
    fisher, grad = _fisher_and_grad(model, params, batch)
    dv = flatten(d)
    quad = alpha * grad @ dv + 0.5 * alpha**2 * dv @ fisher @ dv  # the quadratic model along d
    assert_close(predicted_change(tuple(ac.value_and_grad(model, params, batch)[1]), d, alpha), quad, rtol=1e-8)
    # one layer: the loss is quadratic in W and d is its Newton step, so the prediction is exact
    one = ac.DeepLinear((3, 2))
    p1 = _params(one, seed)
    b1 = _batch((3, 2), 10, seed)
    d1 = bernacchia_ngd_direction(one, p1, b1)
    actual = _loss(one, tuple(p + alpha * di for p, di in zip(p1, d1)), b1) - _loss(one, p1, b1)
    assert_close(predicted_change(ac.value_and_grad(one, p1, b1)[1], d1, alpha), actual, rtol=1e-8, atol=1e-14)


# ----------------------------------------------------------------------------- MLPs (Sec. 5)
def _numpy_mlp_reference(params, x, y, damping, alpha):
    """Eq (10)/(20) for a 2-layer tanh MLP with biases, computed by hand."""
    w1, b1, w2, b2 = params
    nb = x.shape[0]
    z1 = x @ w1.T + b1
    h1 = np.tanh(z1)
    out = h1 @ w2.T + b2
    e2 = y - out  # errors e_2 = y - f (Sigma~ = I)
    e1 = (e2 @ w2) * (1 - h1**2)
    a0 = np.hstack([x, np.ones((nb, 1))])
    a1 = np.hstack([h1, np.ones((nb, 1))])
    # closed-form error covariances: identity columns back-propagated per sample
    c2 = np.eye(2)
    c1 = sum(np.einsum("bi,bj->ij", (c2[s] @ w2) * (1 - h1**2), (c2[s] @ w2) * (1 - h1**2)) for s in range(2)) / nb
    r = math.sqrt(damping)
    out_dirs = []
    for e, a, cov in ((e1, a0, c1), (e2, a1, c2)):
        lam_e = cov + r * np.eye(cov.shape[0])
        lam_x = a.T @ a / nb + r * np.eye(a.shape[1])
        out_dirs.append(alpha / 2 * np.linalg.solve(lam_e, e.T @ a / nb) @ np.linalg.inv(lam_x))
    (d1, d2) = out_dirs
    return d1[:, :-1], d1[:, -1], d2[:, :-1], d2[:, -1]


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_mlp_direction_matches_numpy_reference(xp, damping):
    model = ac.mlp((3, 5, 2), "tanh")
    params = ac.init_params(model, 1, xp)
    g = np.random.default_rng(1)
    params = tuple(p + backend.from_numpy(0.1 * g.standard_normal(p.shape), xp) for p in params)
    x, y = _batch((3, 2), 12, 1, xp)
    got = bernacchia_ngd_direction(model, params, (x, y), damping=damping, alpha=0.9)
    ref = _numpy_mlp_reference(_host(params), backend.to_numpy(x), backend.to_numpy(y), damping, 0.9)
    assert_tree_close(got, ref, like=params[0], rtol=1e-8)


def test_identity_mlp_without_bias_equals_deep_linear():
    widths = (3, 4, 5, 2)
    params = _params(ac.DeepLinear(widths), 2)
    batch = _batch(widths, 10, 2)
    cov = np.array([[2.0, 0.3], [0.3, 0.5]])
    for kw in ({}, {"noise_cov": cov}, {"damping": 0.2}):
        assert_tree_close(bernacchia_ngd_direction(ac.mlp(widths, "identity", bias=False), params, batch, **kw),
                          bernacchia_ngd_direction(ac.DeepLinear(widths), params, batch, **kw), rtol=1e-9)


# ----------------------------------------------------------------------------- limitations
def test_bottleneck_warns_and_offers_moore_penrose():
    model = ac.DeepLinear((5, 2, 5))
    assert has_bottleneck(model) and not has_bottleneck(ac.DeepLinear((3, 5, 5, 2)))
    assert has_bottleneck(ac.DeepLinear((5, 3, 3)))  # contracting: P^b != I
    params = _params(model, 0)
    batch = _batch((5, 5), 12, 0)
    with pytest.warns(BottleneckWarning, match="moore_penrose"):
        bernacchia_ngd_direction(model, params, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = bernacchia_ngd_direction(model, params, batch, form="moore_penrose", alpha=0.5)
    ref = ac.qngd_direction(model, params, batch, 1.0)
    assert_tree_close(d, tuple(0.5 * r for r in ref))
    fisher, grad = _fisher_and_grad(model, params, batch)
    d10 = flatten(bernacchia_ngd_direction(model, params, batch, warn=False))
    assert np.max(np.abs(fisher @ d10 + grad)) > 1e-3 * np.max(np.abs(grad))  # not a generalized inverse


def test_singular_map_path_is_detected(xp):
    g = np.random.default_rng(0)
    w0 = g.standard_normal((3, 3))
    w_star = g.standard_normal((3, 3))
    if np.linalg.det(w0) * np.linalg.det(w_star) > 0:
        w_star[0] *= -1
    res = map_path_singularity(backend.from_numpy(w0, xp), backend.from_numpy(w_star, xp), alpha=0.5)
    assert res.crosses and len(res.times) % 2 == 1
    for t in res.times:  # the path is singular there (independent check)
        w_t = w_star + math.exp(-0.5 * t) * (w0 - w_star)
        assert abs(np.linalg.det(w_t)) < 1e-9 * np.linalg.norm(w_t) ** 3
    assert not map_path_singularity(w0, w0 + 0.01 * np.eye(3)).crosses
    model = ac.DeepLinear((2, 2, 2))
    params = (np.eye(2), np.diag([1.0, -1.0]))  # det W0 < 0
    x = g.standard_normal((10, 2))
    with pytest.warns(SingularPathWarning, match="crosses a singular matrix"):
        res = check_map_path(model, params, (x, x))  # target map I, det > 0
    assert res.crosses
    assert check_map_path(ac.DeepLinear((2, 3, 2)), _params(ac.DeepLinear((2, 3, 2)), 0), (x, x)) is None


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    model = ac.DeepLinear((3, 4, 2))
    params = _params(model, 0)
    batch = _batch((3, 2), 5, 0)
    with pytest.raises(ValueError, match="form: expected"):
        bernacchia_ngd_direction(model, params, batch, form="kfac")
    with pytest.raises(ValueError, match="inverse: expected"):
        bernacchia_ngd_direction(model, params, batch, inverse="cholesky")
    with pytest.raises(ValueError, match="damping: expected"):
        bernacchia_ngd_direction(model, params, batch, damping=-1.0)
    with pytest.raises(ValueError, match="num_samples: expected"):
        bernacchia_ngd_direction(model, params, batch, num_samples=0)
    with pytest.raises(ValueError, match="noise_cov: expected shape"):
        bernacchia_ngd_direction(model, params, batch, noise_cov=np.eye(3))
    with pytest.raises(ValueError, match="noise_cov: expected a symmetric positive definite"):
        bernacchia_ngd_direction(model, params, batch, noise_cov=-np.eye(2))
    with pytest.raises(ValueError, match="params\\[0\\]: expected finite"):
        bernacchia_ngd_direction(model, (np.full((4, 3), np.nan), params[1]), batch)
    with pytest.raises(TypeError, match="model: expected Dense layers"):
        lenet = ac.lenet5((1, 8, 8))
        bernacchia_ngd_direction(lenet, ac.init_params(lenet, 0), (np.zeros((2, 1, 8, 8)), np.zeros((2, 10))))
    with pytest.raises(ValueError, match="form: expected 'kronecker'"):
        bernacchia_ngd_direction(model, params, batch, form="moore_penrose", num_samples=2)


def test_inputs_are_not_modified_and_moments_batch_works(xp):
    model = ac.DeepLinear((3, 4, 2))
    params = _params(model, 0, xp)
    x, y = _batch((3, 2), 8, 0, xp)
    before = [backend.to_numpy(a).copy() for a in (*params, x, y)]
    d = bernacchia_ngd_direction(model, params, (x, y), damping=0.1, num_samples=2)
    for a, b in zip((*params, x, y), before):
        np.testing.assert_array_equal(backend.to_numpy(a), b)
    mom = ac.models.deep_linear.moments(x, y)
    assert_tree_close(bernacchia_ngd_direction(model, params, mom), bernacchia_ngd_direction(model, params, (x, y)),
                      like=params[0])
    assert len(d) == 2
    assert RTOL  # tolerances imported for the per-dtype checks above
