"""Fisher variants (spec 3.2): exact / Monte-Carlo / empirical, matrices and products.

References, all independent of the code under test:

* the exact Fisher against the interface's generic column-by-column GGN (jvp then vjp,
  no Jacobian), the deep linear closed form (Bernacchia eq 22) and, for softmax CE, the
  DEFINITION E_{y ~ softmax}[g g^T] by enumerating the classes with per-sample
  gradients from ``value_and_grad`` on single-sample batches;
* the Monte-Carlo Fisher against the definition (per-sample gradient outer products at
  the drawn targets, loop over draws and samples), and its convergence to the exact
  Fisher against the closed-form variance of the estimator (MSE: Gaussian fourth
  moments; CE: enumeration over classes);
* the empirical Fisher against per-sample gradients by central finite differences and by
  single-sample ``value_and_grad``; a documented example where it differs from the GGN.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import Sequential, backend, mlp
from arraycurv.models.layers import Activation, Conv2d, Dense, Flatten
from tests.cases import CE, MSE, cases, cnn_models, deep_linear_models, make_case, mlp_models, out_dim
from tests.helpers import assert_close
from tests.references.curvature import default_ggn, npf


# ---------------------------------------------------------------- helpers
def single(xp, a, i):
    return a[i : i + 1, ...]


def sample_grad(xp, model, params, x, y, i, target):
    """Gradient of the per-sample loss l_i at ``target`` (single-sample value_and_grad)."""
    _, g = ac.value_and_grad(model, params, (single(xp, x, i), target), loss_of(target))
    return npf(g)


def loss_of(target):
    return CE if "int" in str(target.dtype) else MSE


def softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------- exact
@settings(max_examples=8)
@given(case=cases())
def test_exact_fisher_equals_generic_ggn_and_its_product(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v = make_case(xp, model, b, dtype, seed, loss)
    f = ac.curvature.fisher_exact_matrix(model, params, x, loss)
    ref = default_ggn(model, params, (x, y), loss)
    assert_close(f, ref, like=params[0])
    assert_close(f, np.transpose(npf(f)), like=params[0])
    fv = ac.curvature.fisher_exact_vp(model, params, x, v, loss)
    assert_close(ac.flatten(fv), ref @ npf(v), like=params[0])
    # a batch (x, y) is accepted in place of x; targets are ignored
    assert_close(ac.curvature.fisher_exact_matrix(model, params, (x, y), loss), ref, like=params[0])


@settings(max_examples=10)
@given(case=cases(models=st.one_of(mlp_models(), cnn_models()), losses=(CE,)))
def test_exact_fisher_is_the_expectation_over_the_predictive_distribution(xp, case):
    """CE: F = (1/B) sum_b sum_c p_bc g_b(c) g_b(c)^T by enumerating the labels c."""
    model, b, dtype, seed, loss = case
    params, x, y, _ = make_case(xp, model, b, dtype, seed, loss)
    k = out_dim(model)
    p = softmax(npf(ac.forward(model, params, x)))
    ref = 0.0
    for i in range(b):
        for c in range(k):
            g = sample_grad(xp, model, params, x, y, i, xp.asarray([c], dtype=xp.int64))
            ref = ref + p[i, c] * np.outer(g, g)
    assert_close(ac.curvature.fisher_exact_matrix(model, params, x, CE), ref / b, like=params[0])


@settings(max_examples=10)
@given(case=cases(models=deep_linear_models()))
def test_exact_fisher_of_deep_linear_net_is_the_kronecker_closed_form(xp, case):
    """Bernacchia (2018) eq (22): block (i, j) = kron(W_{>i}^T W_{>j}, W_{<i} Sxx W_{<j}^T) (row-major)."""
    model, b, dtype, seed, _ = case
    params, x, y, _ = make_case(xp, model, b, dtype, seed)
    ws = [npf(w) for w in params]
    xs = npf(x)
    sxx = xs.T @ xs / b
    L = len(ws)

    def prod(mats, n):
        out = np.eye(n)
        for m in mats:
            out = m @ out
        return out

    pre = [prod(ws[:i], ws[0].shape[1]) for i in range(L)]
    suf = [prod(ws[i + 1 :], ws[i].shape[0]) for i in range(L)]
    ref = np.block([[np.kron(suf[i].T @ suf[j], pre[i] @ sxx @ pre[j].T) for j in range(L)] for i in range(L)])
    assert_close(ac.curvature.fisher_exact_matrix(model, params, x), ref, like=params[0])


# ------------------------------------------------------------------ Monte Carlo
@settings(max_examples=10)
@given(case=cases(), n=st.integers(1, 3))
def test_mc_fisher_is_the_mean_of_outer_products_at_sampled_targets(xp, case, n):
    model, b, dtype, seed, loss = case
    params, x, y, v = make_case(xp, model, b, dtype, seed, loss)
    ys = ac.losses.sample_targets(loss, ac.forward(model, params, x), seed, n)
    ref = 0.0
    for s in range(n):
        for i in range(b):
            g = sample_grad(xp, model, params, x, y, i, ys[s, i : i + 1, ...])
            ref = ref + np.outer(g, g)
    ref = ref / (n * b)
    f = ac.curvature.fisher_mc_matrix(model, params, x, loss, num_samples=n, seed=seed)
    assert_close(f, ref, like=params[0])
    fv = ac.curvature.fisher_mc_vp(model, params, x, v, loss, num_samples=n, seed=seed)
    assert_close(ac.flatten(fv), ref @ npf(v), like=params[0])
    assert np.linalg.matrix_rank(npf(f), tol=1e-6 * max(1.0, np.abs(npf(f)).max())) <= n * b


def _mc_errors(model, params, x, loss, n, seeds_):
    f = npf(ac.curvature.fisher_exact_matrix(model, params, x, loss))
    return np.array([np.sum((npf(ac.curvature.fisher_mc_matrix(model, params, x, loss, n, s)) - f) ** 2)
                     for s in seeds_])


def test_mc_fisher_converges_at_the_rate_of_its_closed_form_variance_mse():
    """E ||F_N - F||_F^2 = sigma^2 / N with sigma^2 = (1/B^2) sum_b [(tr M_b)^2 + tr(M_b^2)],
    M_b = J_b J_b^T (fourth moments of y ~ N(f, I)). Over R = 200 fixed seeds the mean
    squared error must lie within [0.7, 1.3] sigma^2 / N for N = 4, 16, 64 -- the
    O(1/sqrt(N)) Frobenius rate with the right constant. The band is about 3.5 standard
    errors of the mean (the per-seed ratio has a standard deviation of about 1.2 at N = 4,
    measured over 2000 other seeds, so the standard error is ~0.085)."""
    model = mlp((3, 4, 2), "tanh")
    xp = backend.namespace_by_name("numpy")
    params, x, _, _ = make_case(xp, model, 4, "float64", 7)
    jac = npf(ac.jacobian(model, params, x)).reshape(4, 2, -1)
    m = jac @ jac.transpose(0, 2, 1)
    sigma2 = sum(np.trace(mb) ** 2 + np.trace(mb @ mb) for mb in m) / 16
    for n in (4, 16, 64):
        err2 = _mc_errors(model, params, x, MSE, n, range(1000 * n, 1000 * n + 200))
        ratio = err2.mean() / (sigma2 / n)
        assert 0.7 < ratio < 1.3, (n, ratio)


def test_mc_fisher_converges_at_the_rate_of_its_closed_form_variance_ce():
    """CE: sigma^2 = (1/B^2) sum_b [sum_c p_bc ||g_bc||^4 - ||F_b||_F^2] by enumerating the
    labels (F_b = sum_c p_bc g_bc g_bc^T); same acceptance band and seeds count as for MSE."""
    model = mlp((3, 4, 3), "tanh")
    xp = backend.namespace_by_name("numpy")
    params, x, y, _ = make_case(xp, model, 4, "float64", 8, CE, scale=1.5)
    p = softmax(npf(ac.forward(model, params, x)))
    sigma2 = 0.0
    for i in range(4):
        gs = [sample_grad(xp, model, params, x, y, i, np.asarray([c])) for c in range(3)]
        fb = sum(p[i, c] * np.outer(g, g) for c, g in enumerate(gs))
        sigma2 += sum(p[i, c] * np.sum(g * g) ** 2 for c, g in enumerate(gs)) - np.sum(fb * fb)
    sigma2 /= 16
    for n in (4, 16, 64):
        err2 = _mc_errors(model, params, x, CE, n, range(1000 * n + 500, 1000 * n + 700))
        ratio = err2.mean() / (sigma2 / n)
        assert 0.7 < ratio < 1.3, (n, ratio)


def test_mc_fisher_same_values_on_every_namespace(xp):
    model = mlp((3, 4, 3), "elu")
    np_ns = backend.namespace_by_name("numpy")
    for loss in (MSE, CE):
        ref = ac.curvature.fisher_mc_matrix(model, *make_case(np_ns, model, 3, "float64", 5, loss)[:2], loss, 4, 11)
        params, x, _, _ = make_case(xp, model, 3, "float64", 5, loss)
        assert_close(ac.curvature.fisher_mc_matrix(model, params, x, loss, 4, 11), ref, like=params[0])


# -------------------------------------------------------------------- empirical
@settings(max_examples=12)
@given(case=cases())
def test_per_sample_grads_and_empirical_fisher_against_single_sample_gradients(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v = make_case(xp, model, b, dtype, seed, loss)
    gs = np.stack([sample_grad(xp, model, params, x, y, i, y[i : i + 1, ...]) for i in range(b)])
    psg = ac.curvature.per_sample_grads(model, params, (x, y), loss)
    assert_close(psg, gs, like=params[0])
    _, grad = ac.value_and_grad(model, params, (x, y), loss)
    assert_close(ac.flatten(grad), npf(psg).mean(axis=0), like=params[0])
    f = ac.curvature.fisher_empirical_matrix(model, params, (x, y), loss)
    ref = gs.T @ gs / b
    assert_close(f, ref, like=params[0])
    assert_close(ac.flatten(ac.curvature.fisher_empirical_vp(model, params, (x, y), v, loss)), ref @ npf(v),
                 like=params[0])


@pytest.mark.parametrize("loss", [MSE, CE])
def test_per_sample_grads_against_finite_differences(loss):
    """Central differences of the per-sample losses l_b (float64, NumPy)."""
    xp = backend.namespace_by_name("numpy")
    model = Sequential((Conv2d(1, 2, 2), Activation("tanh"), Flatten(), Dense(18, 3)), (1, 4, 4))
    params, x, y, _ = make_case(xp, model, 3, "float64", 3, loss)
    psg = npf(ac.curvature.per_sample_grads(model, params, (x, y), loss))
    flat = npf(params)
    shapes = ac.param_shapes(model)
    h = 1e-6

    def losses(theta):
        ps = ac.unflatten(theta, shapes)
        f = npf(ac.forward(model, ps, x))
        if loss == MSE:
            return 0.5 * np.sum((f - npf(y)) ** 2, axis=1)
        lse = np.log(np.exp(f).sum(axis=1))
        return lse - f[np.arange(3), backend.to_numpy(y)]

    fd = np.stack([(losses(flat + h * e) - losses(flat - h * e)) / (2 * h) for e in np.eye(flat.size)], axis=1)
    np.testing.assert_allclose(psg, fd, rtol=1e-6, atol=1e-8)


def test_empirical_fisher_differs_from_the_ggn_documented_example(xp):
    """docs/curvature.md: at a perfect fit (y = f(x)) every residual vanishes, so the
    empirical Fisher is 0 while the GGN (= exact Fisher) is not; with the targets drawn
    from the model instead (one draw per input) the two agree only on average."""
    model = mlp((2, 3, 2), "tanh")
    params, x, _, _ = make_case(xp, model, 4, "float64", 1)
    y = ac.forward(model, params, x)
    emp = ac.curvature.fisher_empirical_matrix(model, params, (x, y))
    assert_close(emp, np.zeros(npf(emp).shape), like=params[0], atol=1e-30)
    ggn = npf(ac.ggn_matrix(model, params, (x, y)))
    assert np.linalg.norm(ggn) > 0.1
    # the same residual structure scaled by 3 scales the empirical Fisher by 9, not the GGN
    y2 = y + 1.0
    y3 = y + 3.0
    e2 = npf(ac.curvature.fisher_empirical_matrix(model, params, (x, y2)))
    e3 = npf(ac.curvature.fisher_empirical_matrix(model, params, (x, y3)))
    np.testing.assert_allclose(e3, 9.0 * e2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(npf(ac.curvature.fisher_exact_matrix(model, params, (x, y3))), ggn,
                               rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------- bad input
def test_bad_inputs_raise_named_errors(xp):
    model = mlp((3, 4, 2))
    params, x, y, v = make_case(xp, model, 3, "float64", 0)
    with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
        ac.curvature.fisher_mc_matrix(model, params, x, MSE, num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        ac.curvature.fisher_mc_vp(model, params, x, v, MSE, num_samples=1.5)
    with pytest.raises(ValueError, match=r"v\[1\]: expected shape"):
        ac.curvature.fisher_exact_vp(model, params, x, (v[0], v[0], v[2], v[3]))
    with pytest.raises(ValueError, match=r"params: expected 4 arrays"):
        ac.curvature.fisher_exact_matrix(model, params[:3], x)
    with pytest.raises(TypeError, match="x: expected an array"):
        ac.curvature.fisher_exact_matrix(model, params, 3.0)
    with pytest.raises(TypeError, match="x: expected an input array or a batch"):
        ac.curvature.fisher_exact_matrix(model, params, (x, y, y))
    with pytest.raises(ValueError, match="x: expected shape"):
        ac.curvature.fisher_exact_matrix(model, params, x[:, :2])
    with pytest.raises(TypeError, match="loss: expected"):
        ac.curvature.fisher_exact_matrix(model, params, x, "mse")
    with pytest.raises(TypeError, match="batch: expected a tuple"):
        ac.curvature.fisher_empirical_matrix(model, params, x)
    with pytest.raises(ValueError, match="batch y: expected shape"):
        ac.curvature.per_sample_grads(model, params, (x, y[:, :1]))
    with pytest.raises(ValueError, match="batch y: expected integer labels"):
        ac.curvature.fisher_empirical_vp(model, params, (x, y), v, CE)
