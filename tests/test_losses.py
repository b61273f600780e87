"""Losses (spec 2.5): MSE and softmax cross-entropy values against NumPy/SciPy, output
gradients and Hessians against finite differences, the Hessian factor S^T S = H, and
sampling from the predictive distribution against its probabilities (chi-square)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from tests.helpers import assert_close, assert_like, dtypes, seeds

MSE, CE = ac.MSE(), ac.SoftmaxCrossEntropy()
H = 1e-5
FD64_RTOL = {"float64": 1e-7, "float32": 5e-4}


@st.composite
def logits_cases(draw, min_k=1):
    b, k = draw(st.integers(1, 10)), draw(st.integers(min_k, 8))
    return b, k, draw(st.sampled_from([0.3, 1.0, 5.0])), draw(dtypes), draw(seeds)


def make(xp, b, k, scale, dtype, seed, loss):
    g = np.random.default_rng(seed)
    f = backend.normal(g, (b, k), xp, dtype=dtype, scale=scale)
    y = backend.normal(g, (b, k), xp, dtype=dtype) if loss == MSE else backend.integers(g, 0, k, (b,), xp)
    v = backend.normal(g, (b, k), xp, dtype=dtype)
    return f, y, v


def np64(a):
    return backend.to_numpy(a).astype(np.float64)


def ce_ref(f, y):
    """NumPy/SciPy reference: mean over the batch of logsumexp(f_b) - f_b[y_b]."""
    return float(np.mean(scipy.special.logsumexp(f, axis=1) - f[np.arange(f.shape[0]), y]))


# ------------------------------------------------------------------ values
@given(case=logits_cases(), loss=st.sampled_from([MSE, CE]))
def test_loss_value_matches_reference(xp, case, loss):
    b, k, scale, dtype, seed = case
    f, y, _ = make(xp, b, k, scale, dtype, seed, loss)
    val = ac.losses.loss_value(loss, f, y)
    if loss == CE:
        expected = ce_ref(np64(f), backend.to_numpy(y))
    else:
        expected = 0.5 * float(np.sum((np64(f) - np64(y)) ** 2)) / b
    assert_close(val, np.asarray(expected), like=f)


def test_cross_entropy_is_stable_for_huge_logits(xp):
    f = backend.from_numpy(np.array([[1000.0, -1000.0, 0.0], [-800.0, -790.0, -805.0]]), xp)
    y = xp.asarray([0, 2])
    val = ac.losses.loss_value(CE, f, y)
    expected = ce_ref(np.array([[1000.0, -1000.0, 0.0], [-800.0, -790.0, -805.0]]), np.array([0, 2]))
    assert_close(val, np.asarray(expected), like=f)
    for a in (ac.losses.loss_grad(CE, f, y), ac.losses.loss_hessian(CE, f), ac.losses.loss_hessian_factor(CE, f)):
        assert bool(xp.all(xp.isfinite(a)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_keeps_relative_accuracy_when_saturated(xp, dtype):
    # confident correct predictions: l = log1p(exp(-20) + exp(-25)) ~ 2e-9, far below eps
    # of float32 relative to the logits; value, gradient and Hessian keep relative accuracy
    logits = np.array([[20.0, 0.0, -5.0]])
    f = backend.from_numpy(logits, xp, dtype=dtype)
    y = xp.asarray([0])
    t = np.exp(-20.0) + np.exp(-25.0)
    p = np.array([1.0, np.exp(-20.0), np.exp(-25.0)]) / (1.0 + t)
    rtol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    assert_close(ac.losses.loss_value(CE, f, y), np.asarray(np.log1p(t)), like=f, rtol=rtol)
    assert_close(ac.losses.loss_grad(CE, f, y)[:, 0], np.array([-(p[1] + p[2])]), like=f, rtol=rtol)
    assert_close(ac.losses.loss_hessian(CE, f)[0, 0, 0], np.asarray(p[0] * (p[1] + p[2])), like=f, rtol=rtol)
    v = backend.from_numpy(np.array([[1.0, 2.0, -1.0]]), xp, dtype=dtype)
    hv0 = p[0] * (p[1] * (1.0 - 2.0) + p[2] * (1.0 + 1.0))  # p_0 sum_j p_j (v_0 - v_j)
    assert_close(ac.losses.loss_hessian_vp(CE, f, v)[:, 0], np.array([hv0]), like=f, rtol=rtol)


# ------------------------------------------------- gradient and Hessian vs FD
@given(case=logits_cases(), loss=st.sampled_from([MSE, CE]))
def test_output_gradient_and_hessian_against_finite_differences(xp, case, loss):
    b, k, scale, dtype, seed = case
    f, y, v = make(xp, b, k, scale, dtype, seed, loss)
    f64 = xp.astype(f, xp.float64)
    y64 = xp.astype(y, xp.float64) if loss == MSE else y
    # per-sample gradient: d (B * mean loss) / d f, by central differences in float64
    fd = np.zeros((b, k))
    fdh = np.zeros((b, k, k))
    for n in range(b):
        for j in range(k):
            e = np.zeros((b, k))
            e[n, j] = H
            e = backend.from_numpy(e, xp)
            lp, lm = float(ac.losses.loss_value(loss, f64 + e, y64)), float(ac.losses.loss_value(loss, f64 - e, y64))
            fd[n, j] = b * (lp - lm) / (2 * H)
            gp, gm = np64(ac.losses.loss_grad(loss, f64 + e, y64)), np64(ac.losses.loss_grad(loss, f64 - e, y64))
            fdh[n, :, j] = (gp[n] - gm[n]) / (2 * H)
    rtol = FD64_RTOL[dtype]
    assert_close(ac.losses.loss_grad(loss, f, y), fd, like=f, rtol=rtol, atol=1e-9)
    # the fused value and gradient: the same gradient, and the value of loss_value
    val, grad = ac.losses.loss_value_and_grad(loss, f, y)
    assert_close(grad, fd, like=f, rtol=rtol, atol=1e-9)
    assert_close(val, ac.losses.loss_value(loss, f, y), like=f, rtol=4 * float(np.finfo(np.dtype(dtype)).eps))
    hess = ac.losses.loss_hessian(loss, f)
    assert_close(hess, fdh, like=f, rtol=rtol, atol=1e-9)
    # H v and the factor: S^T S = H, both against the finite-difference Hessian
    assert_close(ac.losses.loss_hessian_vp(loss, f, v), np.einsum("bkl,bl->bk", fdh, np64(v)), like=f, rtol=rtol,
                 atol=1e-9)
    s = np64(ac.losses.loss_hessian_factor(loss, f))
    assert_like(ac.losses.loss_hessian_factor(loss, f), f)
    assert_close(np.einsum("bik,bil->bkl", s, s), fdh, rtol=rtol, atol=1e-9)


@given(case=logits_cases(min_k=2))
def test_cross_entropy_closed_forms(xp, case):
    b, k, scale, dtype, seed = case
    f, y, v = make(xp, b, k, scale, dtype, seed, CE)
    p = scipy.special.softmax(np64(f), axis=1)
    onehot = np.eye(k)[backend.to_numpy(y)]
    # entries are differences of O(1) probabilities: absolute rounding ~ eps (saturated rows)
    atol = {"float64": 1e-15, "float32": 1e-6}[dtype]
    assert_close(ac.losses.loss_grad(CE, f, y), p - onehot, like=f, atol=atol)
    hess = np.stack([np.diag(q) - np.outer(q, q) for q in p])
    assert_close(ac.losses.loss_hessian(CE, f), hess, like=f, atol=atol)
    s = np.stack([np.diag(np.sqrt(q)) - np.outer(np.sqrt(q), q) for q in p])
    assert_close(ac.losses.loss_hessian_factor(CE, f), s, like=f, atol=atol)
    # the factor is a square root of H: S^T S = diag(p) - p p^T uses sum_i p_i = 1
    assert np.allclose(np.einsum("bik,bil->bkl", s, s), hess, atol=1e-12)
    # H is PSD with the constant vector in its null space (softmax is shift-invariant)
    hv = ac.losses.loss_hessian_vp(CE, f, xp.ones_like(f))
    assert_close(hv, np.zeros((b, k)), like=f, atol={"float64": 1e-14, "float32": 1e-6}[dtype])


# ------------------------------------------------------------------ sampling
def test_cross_entropy_samples_follow_softmax(xp):
    """Chi-square goodness of fit per row: with N = 20000 samples and k - 1 degrees of
    freedom, each statistic must stay below the 1 - 1e-6 quantile (false alarm 1e-6 per
    row; the seed is fixed, so the test is deterministic)."""
    logits = np.array([[0.0, 1.0, -1.0, 2.0], [3.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    f = backend.from_numpy(logits, xp)
    n = 20000
    labels = ac.losses.sample_targets(CE, f, 123, num_samples=n)
    assert tuple(labels.shape) == (n, 3)
    assert xp.isdtype(labels.dtype, "integral")
    lab = backend.to_numpy(labels)
    p = scipy.special.softmax(logits, axis=1)
    crit = scipy.stats.chi2.ppf(1 - 1e-6, df=3)
    for r in range(3):
        counts = np.bincount(lab[:, r], minlength=4)
        assert counts.sum() == n and lab[:, r].min() >= 0 and lab[:, r].max() < 4
        chi2 = float(np.sum((counts - n * p[r]) ** 2 / (n * p[r])))
        assert chi2 < crit, (r, counts, n * p[r])
    # the same seed gives the same labels on every namespace
    ref = ac.losses.sample_targets(CE, logits, 123, num_samples=n)
    np.testing.assert_array_equal(lab, np.asarray(ref))


def test_cross_entropy_sampling_float32_and_extreme_probabilities(xp):
    f = backend.from_numpy(np.array([[50.0, 0.0, -50.0], [0.0, 0.0, 0.0]]), xp, dtype="float32")
    labels = backend.to_numpy(ac.losses.sample_targets(CE, f, 0, num_samples=5000))
    assert np.all(labels[:, 0] == 0)  # p_0 = 1 - 2e-22
    assert labels.min() >= 0 and labels.max() <= 2
    counts = np.bincount(labels[:, 1], minlength=3)
    chi2 = float(np.sum((counts - 5000 / 3) ** 2 / (5000 / 3)))
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-6, df=2)


def test_mse_samples_are_gaussian_around_outputs(xp):
    f = backend.from_numpy(np.array([[1.0, -2.0], [0.5, 3.0]]), xp)
    ys = np64(ac.losses.sample_targets(MSE, f, 7, num_samples=40000))
    assert ys.shape == (40000, 2, 2)
    # mean within 5 standard errors (1/sqrt(N) = 0.005), variance within 5 * sqrt(2/N) = 0.035
    assert np.max(np.abs(ys.mean(axis=0) - np64(f))) < 0.025
    assert np.max(np.abs(ys.var(axis=0) - 1.0)) < 0.035


# ------------------------------------------------------------------ errors
def test_bad_targets_name_the_argument(xp):
    f = backend.normal(0, (3, 4), xp)
    with pytest.raises(ValueError, match=r"targets: expected labels in \[0, 4\), got values in \[0, 4\]"):
        ac.losses.loss_value(CE, f, xp.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match=r"targets: expected labels in \[0, 4\)"):
        ac.losses.loss_grad(CE, f, xp.asarray([0, -1, 1]))
    with pytest.raises(TypeError, match="targets: expected an integer dtype"):
        ac.losses.loss_value(CE, f, xp.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"targets: expected integer labels of shape \(3,\)"):
        ac.losses.check_targets(CE, f, xp.asarray([0, 1]))
    with pytest.raises(ValueError, match=r"targets: expected integer labels of shape \(3,\)"):
        ac.losses.check_targets(CE, f, xp.asarray([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 4\)"):
        ac.losses.loss_value(MSE, f, backend.normal(0, (3, 3), xp))
    with pytest.raises(ValueError, match=r"v: expected shape \(3, 4\)"):
        ac.losses.loss_hessian_vp(CE, f, backend.normal(0, (4, 3), xp))
    with pytest.raises(ValueError, match="outputs: expected an array with 2 dimensions"):
        ac.losses.loss_hessian(CE, backend.normal(0, (3,), xp))
    with pytest.raises(ValueError, match="num_samples"):
        ac.losses.sample_targets(CE, f, 0, num_samples=0)
    with pytest.raises(TypeError, match="loss: expected MSE"):
        ac.losses.loss_value("mse", f, f)
