"""Fractional curvature correction (spec 3.5): q-NGD in three exact forms, block-diagonal
rules, regularized NGD, clipping.

References are independent of the library: the deep linear Jacobian of the total map,
d vec_r(W) = sum_i kron(W_{>i}, W_{<i}^T) vec_r(dW_i), is built here in NumPy, the GGN
G = J^T kron(I, Sxx) J and the gradient g = J^T vec_r(R) from it, and the spectral
powers from ``numpy.linalg.eigh``; closed forms from Huh (2020) eqs 12, 19-21 and
S.I.15-16 check the singular-mode behaviour.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.directions import fractional as fr
from tests.helpers import assert_close, seeds
from tests.references.deep_linear import (
    make_case,
    np_ggn_grad,
    np_map_jacobian,
    np_of,
    np_psd_power,
    ref_blockdiag,
    ref_qngd,
)


def spectrum_ok(ws, x, y, rcond, *, gap=100.0, kappa_max=1e4):
    """Eigenvalues of G far from the cut-off (by ``gap`` on both sides) and a bounded
    condition number on the retained range: the pseudo-inverse is then well defined."""
    gg, _ = np_ggn_grad(ws, x, y)
    lam = np.linalg.eigvalsh(gg)
    top = lam.max()
    if top <= 0:
        return False, 1.0
    rel = lam / top
    if np.any((rel > rcond / gap) & (rel < rcond * gap)):
        return False, 1.0
    kept = rel[rel >= rcond * gap]
    kappa = 1.0 / kept.min()
    return kappa <= kappa_max, kappa


@st.composite
def dl_cases(draw, min_depth=2, max_depth=4, min_width=2, max_width=5, max_batch=8):
    depth = draw(st.integers(min_depth, max_depth))
    widths = tuple(draw(st.integers(min_width, max_width)) for _ in range(depth + 1))
    nb = draw(st.integers(1, max_batch))
    return widths, nb, draw(seeds)


qs = st.one_of(st.sampled_from([1.0, 2.0, 3.0]), st.floats(1.0, 5.0))
FORMS = ("full", "dual", "svd", "map")


# --------------------------------------------------------------------------- three forms agree
@given(case=dl_cases(), q=qs)
def test_three_forms_agree_with_reference_float64(xp, case, q):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    rcond = 1e-9
    ok, kappa = spectrum_ok(np_of(params), *np_of(batch), rcond)
    assume(ok)
    expected = ref_qngd(np_of(params), *np_of(batch), q, rcond)
    # perturbation bound of a pseudo-inverse power: eps * kappa^(1 + 1/q) (relative)
    rtol = max(1e-11, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    for form in FORMS:
        d = fr.qngd_direction(model, params, batch, q, form=form, rcond=rcond)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name=form)


@settings(max_examples=15)
@given(case=dl_cases(max_depth=3, max_width=4), q=qs, damping=st.floats(1e-3, 1.0))
def test_three_forms_agree_with_damping(xp, case, q, damping):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    gg, _ = np_ggn_grad(np_of(params), *np_of(batch))
    expected = ref_qngd(np_of(params), *np_of(batch), q, 0.0, damping)
    # (G + damping I) is invertible: its condition number bounds the error
    kappa = (np.linalg.eigvalsh(gg).max() + damping) / damping
    rtol = max(1e-11, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    for form in FORMS:
        d = fr.qngd_direction(model, params, batch, q, form=form, damping=damping)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name=form)


@settings(max_examples=15)
@given(case=dl_cases(max_depth=3, max_width=4), q=qs)
def test_three_forms_agree_float32(xp, case, q):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed, dtype="float32")
    rcond = 1e-3
    ok, kappa = spectrum_ok(np_of(params), *np_of(batch), rcond, gap=30.0, kappa_max=30.0)
    assume(ok)
    expected = ref_qngd(np_of(params), *np_of(batch), q, rcond)
    # stated float32 tolerance: 50 eps32 kappa^(1 + 1/q) (at most ~6e-3 here)
    rtol = 50 * float(np.finfo(np.float32).eps) * kappa ** (1 + 1 / q)
    for form in FORMS:
        d = fr.qngd_direction(model, params, batch, q, form=form, rcond=rcond)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name=form)


def test_default_rcond_and_auto_form(xp):
    # well-conditioned case: default cut-off (P eps) everywhere; auto picks a valid form
    model, params, batch = make_case(xp, (3, 4, 4, 2), 6, 7)
    expected = ref_qngd(np_of(params), *np_of(batch), 2.0, 1e-10)
    for form in ("auto",) + FORMS:
        d = fr.qngd_direction(model, params, batch, 2.0, form=form)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=1e-8, name=form)


@settings(max_examples=15)
@given(case=dl_cases(max_depth=3), q=qs)
def test_map_form_from_moments_and_whitened_batches(xp, case, q):
    # the map form from LinearMoments (C = Sxx^{1/2}, S = R Sxx^{+1/2}) and from a raw
    # whitened batch (C = I) against the reference built from the equivalent raw batch
    widths, nb, seed = case
    model, params, (x, y) = make_case(xp, widths, nb, seed)
    ok, kappa = spectrum_ok(np_of(params), *np_of((x, y)), 1e-9)
    assume(ok)
    xs = backend.to_numpy(x)
    sw = np.linalg.eigvalsh(xs.T @ xs / nb)
    sw = sw[sw > 1e-9 * sw.max()]
    assume(sw.max() / sw.min() < 1e6)  # the moments path is accurate to eps * sqrt(cond(Sxx))
    expected = ref_qngd(np_of(params), *np_of((x, y)), q, 1e-9)
    rtol = max(1e-10, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q) * math.sqrt(sw.max() / sw.min()))
    for form in ("map", "full"):
        d = fr.qngd_direction(model, params, ac.models.moments(x, y), q, form=form, rcond=1e-9)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name=form)
    # whitened raw batch x_b = sqrt(n0) e_b, y_b = sqrt(n0) w* e_b has Sxx = I, Syx = w*
    n0 = widths[0]
    target = backend.normal(seed + 7, (widths[-1], n0), xp)
    xw = math.sqrt(n0) * xp.eye(n0, dtype=xp.float64)
    yw = math.sqrt(n0) * xp.matrix_transpose(target)
    expected = ref_qngd(np_of(params), *np_of((xw, yw)), q, 1e-9)
    ok, kappa = spectrum_ok(np_of(params), *np_of((xw, yw)), 1e-9)
    assume(ok)
    rtol = max(1e-10, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    for batch in ((xw, yw), ac.models.whitened_moments(target)):
        d = fr.qngd_direction_map(model, params, batch, q, rcond=1e-9)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol)


def test_sylvester_shortcut_matches_kernel_power(xp):
    # q = 1, depth 2, whitened: the Sylvester path; compare with the materialized reference
    model, params, _ = make_case(xp, (3, 5, 4), 1, 11)
    target = backend.normal(12, (4, 3), xp)
    mom = ac.models.whitened_moments(target)
    ws = np_of(params)
    jm = np_map_jacobian(ws)
    wbar = ws[1] @ ws[0]
    g = jm.T @ (wbar - backend.to_numpy(target)).reshape(-1)
    expected = -np_psd_power(jm.T @ jm, -1.0, 1e-10) @ g
    d = fr.qngd_direction_map(model, params, mom, 1.0)
    assert_close(ac.flatten(d), expected, like=params[0], rtol=1e-9)
    # and with damping: (G + eps I)^{-1} g
    expected = -np.linalg.solve(jm.T @ jm + 0.01 * np.eye(jm.shape[1]), g)
    d = fr.qngd_direction_map(model, params, mom, 1.0, damping=0.01)
    assert_close(ac.flatten(d), expected, like=params[0], rtol=1e-9)


@settings(max_examples=10)
@given(seed=seeds, q=qs, nb=st.integers(1, 6), ce=st.booleans())
def test_dual_equals_full_for_mlp(numpy_xp, seed, q, nb, ce):
    # a generic (nonlinear) model; cross-entropy has a singular output Hessian, so the
    # dual form needs s_b with S_b^T s_b = grad_b
    from arraycurv import SoftmaxCrossEntropy, mlp

    xp = numpy_xp
    model = mlp((3, 4, 3), activation="tanh")
    params = ac.init_params(model, seed, xp)
    x = backend.normal(seed + 1, (nb, 3), xp)
    if ce:
        y, loss = backend.integers(seed + 2, 0, 3, (nb,), xp), SoftmaxCrossEntropy()
    else:
        y, loss = backend.normal(seed + 2, (nb, 3), xp), ac.MSE()
    gg = backend.to_numpy(ac.ggn_matrix(model, params, (x, y), loss))
    _, g = ac.value_and_grad(model, params, (x, y), loss)
    lam = np.linalg.eigvalsh(gg)
    rel = lam / lam.max()
    assume(not np.any((rel > 1e-11) & (rel < 1e-7)))
    kappa = 1.0 / rel[rel > 1e-9].min()
    assume(kappa < 1e5)
    expected = -np_psd_power(gg, -1.0 / q, 1e-9) @ backend.to_numpy(ac.flatten(g))
    rtol = max(1e-10, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    for form in ("full", "dual", "svd", "auto"):
        d = fr.qngd_direction(model, params, (x, y), q, form=form, rcond=1e-9, loss=loss)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name=form)


# --------------------------------------------------------------------------- structure
def _null_directions(ws, rng):
    """Huh Sec. 2 null-updates (.., m W_i, -W_{i+1} m, ..) for random m, flat."""
    out = []
    for i in range(len(ws) - 1):
        m = rng.standard_normal((ws[i].shape[0], ws[i].shape[0]))
        parts = [np.zeros(w.size) for w in ws]
        parts[i] = (m @ ws[i]).reshape(-1)
        parts[i + 1] = (-ws[i + 1] @ m).reshape(-1)
        out.append(np.concatenate(parts))
    return np.array(out)


@given(case=dl_cases(), q=qs, which=st.sampled_from(["full", "dual", "svd", "map", "regularized"]))
def test_full_curvature_updates_are_orthogonal_to_null_space(xp, case, q, which):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    if which == "regularized":
        d = fr.regularized_ngd_direction(model, params, batch, 0.1)
    else:
        d = fr.qngd_direction(model, params, batch, q, form=which, rcond=1e-9)
    dflat = backend.to_numpy(ac.flatten(d))
    ws = np_of(params)
    basis = np.concatenate([backend.to_numpy(ac.curvature.null_space_basis(model, params)),
                            _null_directions(ws, np.random.default_rng(seed))])
    # relative to |d| |n|; the pseudo-inverse amplifies rounding by at most kappa
    gg, _ = np_ggn_grad(ws, *np_of(batch))
    lam = np.linalg.eigvalsh(gg)
    kept = lam[lam > 1e-9 * lam.max()]
    kappa = kept.max() / kept.min()
    assume(kappa < 1e6)
    for n in basis:
        nn = np.linalg.norm(n)
        if nn == 0:
            continue
        cos = abs(dflat @ n) / (np.linalg.norm(dflat) * nn + 1e-300)
        assert cos <= 1e3 * np.finfo(np.float64).eps * kappa, f"{which}: |cos(d, null)| = {cos:.3e}"


@given(depth=st.integers(2, 4), q=st.sampled_from([1.0, 2.0, 3.0]), data=st.data())
def test_blockdiag_is_not_orthogonal_to_null_space(xp, depth, q, data):
    # The counterpart of the previous test (Huh Sec. 5, Fig. 3): on an aligned network
    # the null-update of hidden layer i with m = U_i diag(mu) U_i^T has, with the
    # block-diagonal mode rates r_ik = -sigma_Delta j_ik^{1-2/q} / d^{1/q} (eqs 20-21),
    # <d, n> = sum_k mu_k (sigma_ik r_ik - sigma_{i+1,k} r_{i+1,k}), non-zero unless
    # the layers are balanced; the full-curvature direction gives 0 there.
    n = 3
    sig = np.array(data.draw(st.lists(st.lists(st.floats(0.3, 2.0), min_size=n, max_size=n),
                                      min_size=depth, max_size=depth)))
    star = np.array(data.draw(st.lists(st.floats(0.1, 3.0), min_size=n, max_size=n)))
    mu = np.array(data.draw(st.lists(st.floats(-1.0, 1.0).map(lambda v: v if abs(v) > 1e-3 else 0.0),
                                     min_size=n, max_size=n)))
    model, params, mom, us = aligned_case(xp, sig, star, n, data.draw(seeds))
    prod = np.prod(sig, axis=0)
    rates = [-(prod - star) * (prod / s) ** (1 - 2 / q) / depth ** (1 / q) for s in sig]
    d_block = fr.qngd_blockdiag_direction(model, params, mom, q)
    d_full = fr.qngd_direction(model, params, mom, q)
    for i in range(1, depth):
        m = backend.from_numpy(us[i] @ np.diag(mu) @ us[i].T, xp)
        null = ac.curvature.null_space_direction(params, i, m)
        expected = np.sum(mu * (sig[i - 1] * rates[i - 1] - sig[i] * rates[i]))
        n_norm = float(ac.params.tree_norm(null))
        got = float(ac.params.tree_vdot(d_block, null))
        assert abs(got - expected) <= 1e-12 * (float(ac.params.tree_norm(d_block)) * n_norm + abs(expected))
        assert abs(float(ac.params.tree_vdot(d_full, null))) <= 1e-12 * float(ac.params.tree_norm(d_full)) * n_norm


@settings(max_examples=15)
@given(case=dl_cases())
def test_large_q_approaches_sgd(xp, case):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ok, kappa = spectrum_ok(np_of(params), *np_of(batch), 1e-9, kappa_max=1e8)
    assume(ok)
    _, g = ac.value_and_grad(model, params, batch)
    gflat = backend.to_numpy(ac.flatten(g))
    assume(np.linalg.norm(gflat) > 0)
    q = 1e6
    d = backend.to_numpy(ac.flatten(fr.qngd_direction(model, params, batch, q, form="full", rcond=1e-9)))
    cos = -(d @ gflat) / (np.linalg.norm(d) * np.linalg.norm(gflat))
    # lambda^(-1/q) varies by a factor kappa^(1/q) over the range: 1 - cos <= (log(kappa)/q)^2
    assert 1 - cos <= (math.log(kappa) / q) ** 2 + 1e-12
    # q = inf is exactly the negative gradient in every form
    for form in FORMS:
        d = fr.qngd_direction(model, params, batch, math.inf, form=form)
        assert_close(ac.flatten(d), -gflat, like=params[0], rtol=1e-12, name=form)


@settings(max_examples=15)
@given(case=dl_cases(max_depth=3, max_width=4))
def test_regularized_ngd_limits_and_closed_form(xp, case):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ws, bt = np_of(params), np_of(batch)
    gg, g = np_ggn_grad(ws, *bt)
    lam = np.linalg.eigvalsh(gg)
    p = gg.shape[0]
    # S.I.15 directly: -(eps + 1)(eps I + G)^{-1} g
    for eps in (0.05, 1.0, 30.0):
        expected = -(eps + 1) * np.linalg.solve(eps * np.eye(p) + gg, g)
        kappa = (lam.max() + eps) / eps
        d = fr.regularized_ngd_direction(model, params, batch, eps)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=max(1e-11, 100 * 2.2e-16 * kappa))
    # eps -> inf: SGD, |d + g| <= max|1 - lambda| / eps |g|
    big = 1e8
    d = backend.to_numpy(ac.flatten(fr.regularized_ngd_direction(model, params, batch, big)))
    bound = np.max(np.abs(1 - lam)) / big * np.linalg.norm(g)
    assert np.linalg.norm(d + g) <= bound * 1.01 + 1e-12 * np.linalg.norm(g)
    assert_close(ac.flatten(fr.regularized_ngd_direction(model, params, batch, math.inf)), -g, like=params[0])
    # eps -> 0: NGD on the range, |d - d_ngd| <= eps max|lambda - 1| / lambda_min^2 |g|
    ok, kappa = spectrum_ok(ws, *bt, 1e-9, kappa_max=1e5)
    assume(ok)
    kept = lam[lam > 1e-9 * lam.max()]
    small = 1e-4 * kept.min()
    d_ngd = ref_qngd(ws, *bt, 1.0, 1e-9)
    d = backend.to_numpy(ac.flatten(fr.regularized_ngd_direction(model, params, batch, small, rcond=1e-9)))
    bound = small * np.max(np.abs(kept - 1)) / kept.min() ** 2 * np.linalg.norm(g)
    err_round = 1e3 * np.finfo(np.float64).eps * kappa**2 * np.linalg.norm(d_ngd)
    assert np.linalg.norm(d - d_ngd) <= 1.01 * bound + err_round


# --------------------------------------------------------------------------- block-diagonal
@given(case=dl_cases(), q=qs, damping=st.sampled_from([0.0, 0.01]))
def test_blockdiag_matches_reference(xp, case, q, damping):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ws, bt = np_of(params), np_of(batch)
    gg, _ = np_ggn_grad(ws, *bt)
    # condition of each diagonal block on its retained range
    kappa, off = 1.0, 0
    for w in ws:
        lam = np.linalg.eigvalsh(gg[off : off + w.size, off : off + w.size]) + damping
        off += w.size
        rel = lam / lam.max()
        assume(not np.any((rel > 1e-11) & (rel < 1e-7)))
        kappa = max(kappa, 1.0 / rel[rel > 1e-9].min())
    assume(kappa < 1e6)
    expected = ref_blockdiag(ws, *bt, q, rcond=1e-9, damping=damping)
    d = fr.qngd_blockdiag_direction(model, params, batch, q, rcond=1e-9, damping=damping)
    rtol = max(1e-11, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol)


@settings(max_examples=10)
@given(seed=seeds, q=qs, nb=st.integers(1, 6), damping=st.sampled_from([0.0, 0.01]))
def test_blockdiag_generic_model_uses_materialized_blocks(numpy_xp, seed, q, nb, damping):
    # MLP with biases: one block per tensor, normalization n^{1/q} with n = number of tensors
    from arraycurv import mlp

    xp = numpy_xp
    model = mlp((3, 4, 2), activation="tanh")
    params = ac.init_params(model, seed, xp)
    batch = (backend.normal(seed + 1, (nb, 3), xp), backend.normal(seed + 2, (nb, 2), xp))
    gg = backend.to_numpy(ac.ggn_matrix(model, params, batch))
    _, g = ac.value_and_grad(model, params, batch)
    gflat = backend.to_numpy(ac.flatten(g))
    out, off, kappa = [], 0, 1.0
    n_layers = 2  # Huh's d: two Dense layers (their biases do not count as layers)
    for p in params:
        n = p.size
        blk = gg[off : off + n, off : off + n]
        lam = np.linalg.eigvalsh(blk) + damping
        rel = lam / lam.max()
        assume(not np.any((rel > 1e-11) & (rel < 1e-7)))
        kappa = max(kappa, 1.0 / rel[rel > 1e-9].min())
        out.append(-np_psd_power(blk, -1.0 / q, 1e-9, damping) @ gflat[off : off + n] / n_layers ** (1 / q))
        off += n
    assume(kappa < 1e6)
    d = fr.qngd_blockdiag_direction(model, params, batch, q, rcond=1e-9, damping=damping)
    rtol = max(1e-10, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    assert_close(ac.flatten(d), np.concatenate(out), like=params[0], rtol=rtol)


def aligned_case(xp, sigmas, sigma_star, n, seed):
    """Square width-n deep linear net whose layers share singular vectors (Huh footnote 1):
    W_i = U_i diag(sigmas[i]) U_{i-1}^T, target U_L diag(sigma_star) U_0^T, whitened."""
    us = [np.linalg.qr(np.random.default_rng(seed + i).standard_normal((n, n)))[0] for i in range(len(sigmas) + 1)]
    ws = [us[i + 1] @ np.diag(s) @ us[i].T for i, s in enumerate(sigmas)]
    target = us[-1] @ np.diag(sigma_star) @ us[0].T
    params = tuple(backend.from_numpy(w, xp) for w in ws)
    mom = ac.models.whitened_moments(backend.from_numpy(target, xp))
    return ac.DeepLinear((n,) * (len(sigmas) + 1)), params, mom, us


def _draw_aligned(xp, depth, data, n=3):
    """Draw singular values sigma (depth, n) and a target sigma_* (n,), and build the
    aligned case (:func:`aligned_case`) of a depth-``depth`` network of width ``n``."""
    sig = np.array(data.draw(st.lists(st.lists(st.floats(0.3, 2.0), min_size=n, max_size=n),
                                      min_size=depth, max_size=depth)))
    star = np.array(data.draw(st.lists(st.floats(0.1, 3.0), min_size=n, max_size=n)))
    return sig, star, aligned_case(xp, sig, star, n, data.draw(seeds))


@given(
    depth=st.integers(2, 4),
    q=st.sampled_from([1.0, 2.0, 3.0]),
    data=st.data(),
)
def test_blockdiag_singular_modes_follow_huh_eq_20_21(xp, depth, q, data):
    # sigma_i' = -sigma_Delta j_i^{1 - 2/q} / d^{1/q}: eq 20 (q=1), eq 21 (q=2), footnote 4
    sig, star, (model, params, mom, us) = _draw_aligned(xp, depth, data)
    d = fr.qngd_blockdiag_direction(model, params, mom, q)
    prod = np.prod(sig, axis=0)
    for i in range(depth):
        j = prod / sig[i]
        rate = -(prod - star) * np.sign(j) * np.abs(j) ** (1 - 2 / q) / depth ** (1 / q)
        expected = us[i + 1] @ np.diag(rate) @ us[i].T
        assert_close(d[i], expected, like=params[0], rtol=1e-10)


@settings(max_examples=15)
@given(depth=st.integers(2, 4), q=qs, data=st.data())
def test_full_qngd_singular_modes_follow_huh_eq_12(xp, depth, q, data):
    # sigma_i' = -sigma_Delta j_i / ||j||^{2/q} (eq 12) on aligned square networks
    sig, star, (model, params, mom, us) = _draw_aligned(xp, depth, data)
    prod = np.prod(sig, axis=0)
    jn2 = np.sum((prod / sig) ** 2, axis=0)
    for form in ("full", "map"):
        d = fr.qngd_direction(model, params, mom, q, form=form)
        for i in range(depth):
            rate = -(prod - star) * (prod / sig[i]) / jn2 ** (1 / q)
            assert_close(d[i], us[i + 1] @ np.diag(rate) @ us[i].T, like=params[0], rtol=1e-9, name=form)
    # S.I.16: regularized NGD rate (eps + 1) / (eps + ||j||^2)
    d = fr.regularized_ngd_direction(model, params, mom, 0.7)
    for i in range(depth):
        rate = -(prod - star) * (prod / sig[i]) * 1.7 / (0.7 + jn2)
        assert_close(d[i], us[i + 1] @ np.diag(rate) @ us[i].T, like=params[0], rtol=1e-9)


# --------------------------------------------------------------------------- clipping
@given(
    norms=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=4),
    max_norm=st.floats(1e-3, 5.0),
    seed=seeds,
)
def test_clip_direction_never_exceeds_max_norm(xp, norms, max_norm, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((2, 3)) * s for s in norms]
    direction = tuple(backend.from_numpy(a, xp) for a in arrays)
    out = fr.clip_direction(direction, max_norm)
    total = math.sqrt(sum(float(np.sum(a * a)) for a in arrays))
    got = math.sqrt(sum(float(np.sum(backend.to_numpy(o) ** 2)) for o in out))
    assert got <= max_norm * (1 + 1e-12)
    if total <= max_norm:
        assert_close(out, arrays, like=direction[0], rtol=0.0)
    else:
        assert_close(out, [a * (max_norm / total) for a in arrays], like=direction[0], rtol=1e-12)


def test_clip_direction_float32(xp):
    direction = (backend.from_numpy(np.full((3,), 4.0), xp, dtype="float32"),)
    out = fr.clip_direction(direction, 1.0)
    assert_close(out[0], np.full(3, 1 / math.sqrt(3)), like=direction[0])
    assert float(np.linalg.norm(backend.to_numpy(out[0]))) <= 1.0 * (1 + 4 * np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- errors
def test_bad_arguments_raise_naming_them(xp):
    model, params, batch = make_case(xp, (2, 3, 2), 4, 0)
    with pytest.raises(ValueError, match=r"q: expected a real number >= 1"):
        fr.qngd_direction(model, params, batch, 0.5)
    with pytest.raises(ValueError, match=r"q: expected"):
        fr.qngd_blockdiag_direction(model, params, batch, float("nan"))
    with pytest.raises(ValueError, match=r"damping: expected a real number >= 0"):
        fr.qngd_direction(model, params, batch, 2.0, damping=-1e-3)
    with pytest.raises(ValueError, match=r"damping: expected"):
        fr.qngd_blockdiag_direction(model, params, batch, 2.0, damping=-1.0)
    with pytest.raises(ValueError, match=r"form: expected one of"):
        fr.qngd_direction(model, params, batch, 2.0, form="kernel")
    with pytest.raises(ValueError, match=r"rcond: expected"):
        fr.qngd_direction(model, params, batch, 2.0, form="full", rcond=-1.0)
    with pytest.raises(ValueError, match=r"eps: expected"):
        fr.regularized_ngd_direction(model, params, batch, -0.1)
    with pytest.raises(ValueError, match=r"max_norm: expected"):
        fr.clip_direction(params, 0.0)
    moments = ac.models.whitened_moments(params[1] @ params[0])
    for form in ("dual", "svd"):
        with pytest.raises(TypeError, match=rf"batch: expected a tuple \(x, y\) for form='{form}'"):
            fr.qngd_direction(model, params, moments, 1.0, form=form)
    with pytest.raises(TypeError, match=r"batch: expected a tuple \(x, y\) for form='svd'"):
        fr.qngd_direction_svd(model, params, moments, 1.0)
    with pytest.raises(TypeError, match=r"return_info: expected True or False"):
        fr.qngd_direction(model, params, batch, 1.0, return_info=1)
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape"):
        fr.qngd_direction(model, (params[0], params[0]), batch, 1.0)


def test_map_form_needs_a_deep_linear_network(numpy_xp):
    from arraycurv import mlp

    model = mlp((2, 3, 2))
    params = ac.init_params(model, 0, numpy_xp)
    x = backend.normal(1, (4, 2), numpy_xp)
    with pytest.raises(TypeError, match=r"model: expected a DeepLinear"):
        fr.qngd_direction(model, params, (x, x), 1.0, form="map")


def test_nan_in_params_or_gradient_raises(xp):
    model, params, (x, y) = make_case(xp, (2, 3, 2), 4, 0)
    nan = xp.asarray(float("nan"), dtype=xp.float64)
    bad = (params[0], params[1] * nan)
    for form in ("auto",) + FORMS:
        with pytest.raises(ValueError, match=r"params\[1\]: expected finite values"):
            fr.qngd_direction(model, bad, (x, y), 1.0, form=form)
    with pytest.raises(ValueError, match=r"params\[1\]: expected finite values"):
        fr.qngd_blockdiag_direction(model, bad, (x, y), 1.0)
    with pytest.raises(ValueError, match=r"expected finite values"):
        fr.qngd_direction(model, params, (x, y * nan), 1.0, form="full")
    with pytest.raises(ValueError, match=r"expected finite values"):
        fr.qngd_direction(model, params, (x, y * nan), 1.0, form="dual")
    with pytest.raises(ValueError, match=r"expected finite values"):
        fr.qngd_direction(model, params, (x, y * nan), 1.0, form="svd")


def test_overflowing_loss_names_the_callers_argument(numpy_xp):
    """Finite params and batch whose loss gradient overflows: the error names ``params``
    (the caller's argument) and the derived quantity, never an internal name alone."""
    xp = numpy_xp
    model, params, (x, y) = make_case(xp, (2, 3, 2), 4, 0)
    big = (params[0] * 1e160, params[1] * 1e160)
    for form in ("auto",) + FORMS:
        with pytest.raises(ValueError, match=r"^params: expected parameters at which the .* is finite") as err:
            fr.qngd_direction(model, big, (x, y), 1.0, form=form)
        assert "gradient[" not in str(err.value)
    with pytest.raises(ValueError, match=r"^params: expected parameters at which the loss gradient for params\[0\]"):
        fr.qngd_blockdiag_direction(model, big, (x, y), 1.0)


# --------------------------------------------------------------------------- form choice as a generic
def test_qngd_forms_is_a_generic_over_the_model_family():
    dl = ac.DeepLinear((3, 4, 2))
    assert fr.qngd_forms(dl, ac.MSE()) == ("full", "dual", "svd", "map")
    assert fr.qngd_forms(dl, ac.SoftmaxCrossEntropy()) == ("full", "dual", "svd")
    assert fr.qngd_forms(ac.mlp((3, 4, 2)), ac.MSE()) == ("full", "dual", "svd")


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_auto_form_works_for_sequential_models_on_every_backend(xp, net):
    """The default form="auto" chooses from the model's output shape (no x[:1] pass, which
    array-api-strict rejects for images) and agrees with the full form."""
    if net == "mlp":
        model = ac.mlp((3, 4, 2))
        x = backend.normal(1, (3, 3), xp)
    else:
        lay = ac.models.layers
        model = ac.Sequential((lay.Conv2d(1, 2, 3), lay.Activation("tanh"), lay.AvgPool2d(2), lay.Flatten(),
                               lay.Dense(8, 2)), (1, 6, 6))  # P = 38
        x = backend.normal(1, (2, 1, 6, 6), xp)
    params = ac.init_params(model, 0, xp)
    y = backend.integers(2, 0, 2, (x.shape[0],), xp)
    loss = ac.SoftmaxCrossEntropy()
    d = fr.qngd_direction(model, params, (x, y), 2.0, damping=1e-3, loss=loss)
    full = fr.qngd_direction(model, params, (x, y), 2.0, form="full", damping=1e-3, loss=loss)
    assert_close(ac.flatten(d), ac.flatten(full), like=params[0], rtol=1e-7)


def test_deep_linear_with_cross_entropy_uses_the_generic_forms(xp):
    """DeepLinear + softmax cross-entropy: no map form; auto (dual here), full and the
    block-diagonal rule run through the generic defaults and agree with the same network
    as a Sequential."""
    model = ac.DeepLinear((3, 4, 2))
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (5, 3), xp)
    y = backend.integers(2, 0, 2, (5,), xp)
    seq = ac.models.sequential.as_sequential(model)
    loss = ac.SoftmaxCrossEntropy()
    for form in ("auto", "full", "dual", "svd"):
        d = fr.qngd_direction(model, params, (x, y), 1.0, form=form, damping=1e-3, loss=loss)
        ref = fr.qngd_direction(seq, params, (x, y), 1.0, form="full", damping=1e-3, loss=loss)
        assert_close(ac.flatten(d), ac.flatten(ref), like=params[0], rtol=1e-7, name=form)
    bd = fr.qngd_blockdiag_direction(model, params, (x, y), 2.0, damping=1e-3, loss=loss)
    ref = fr.qngd_blockdiag_direction(seq, params, (x, y), 2.0, damping=1e-3, loss=loss)
    assert_close(ac.flatten(bd), ac.flatten(ref), like=params[0], rtol=1e-7)
    with pytest.raises(TypeError, match=r"loss: expected MSE\(\) for form='map'"):
        fr.qngd_direction(model, params, (x, y), 1.0, form="map", loss=loss)


@settings(max_examples=25)
@given(exponent=st.integers(-300, 300), seed=seeds)
def test_norm_and_clip_do_not_overflow(exponent, seed):
    """tree_norm and clip_direction scale before squaring: a direction of entries 10^e has
    norm 10^e |base| for every representable e (no inf at 1e200, no 0 at 1e-200)."""
    xp = backend.namespace_by_name("numpy")
    base = (backend.normal(seed, (3, 2), xp), backend.normal(seed + 1, (4,), xp))
    big = tuple(b * 10.0**exponent for b in base)
    ref = math.sqrt(sum(float(np.sum(np.asarray(b, dtype=np.float64) ** 2)) for b in base))
    assert float(ac.params.tree_norm(big)) == pytest.approx(ref * 10.0**exponent, rel=1e-12)
    clipped = fr.clip_direction(big, 1.0)
    want = min(1.0, ref * 10.0**exponent)
    assert float(ac.params.tree_norm(clipped)) == pytest.approx(want, rel=1e-12)


def test_clip_rejects_non_finite_directions(xp):
    d = (xp.asarray([1.0, float("inf")], dtype=xp.float64),)
    with pytest.raises(ValueError, match=r"^direction\[0\]: expected finite values"):
        fr.clip_direction(d, 1.0)


def test_auto_picks_the_faster_form_and_reports_it(xp):
    """form="auto": dual where B k <= P, full where B k > P (svd ties and loses: it is
    the slower route to the same matrix), map for deep linear + MSE; the chosen form
    is reported by return_info and the direction equals that form's."""
    model = ac.mlp((3, 4, 2))  # P = 26
    params = ac.init_params(model, 0, xp)
    loss = ac.SoftmaxCrossEntropy()
    for nb, want in ((3, "dual"), (13, "dual"), (14, "full")):  # B k = 6, 26 (tie: dual), 28
        x = backend.normal(1, (nb, 3), xp)
        y = backend.integers(2, 0, 2, (nb,), xp)
        d, info = fr.qngd_direction(model, params, (x, y), 2.0, damping=1e-3, loss=loss, return_info=True)
        assert info.form == want
        ref = fr.qngd_direction(model, params, (x, y), 2.0, form=want, damping=1e-3, loss=loss)
        assert_close(ac.flatten(d), ac.flatten(ref), like=params[0], rtol=1e-12)
    dl, dparams, batch = make_case(xp, (3, 4, 2), 5, 1)
    assert fr.qngd_direction(dl, dparams, batch, 1.0, return_info=True)[1].form == "map"
    labels = backend.integers(3, 0, 2, (5,), xp)
    assert fr.qngd_direction(dl, dparams, (batch[0], labels), 1.0, loss=loss, return_info=True)[1].form == "dual"


def test_return_info_reports_the_same_kept_rank_in_every_form(xp):
    """A bottleneck deep linear network (rank-deficient GGN): every form keeps rank(G)
    eigenvalues (counted independently with numpy), reports its own size, the cut-off
    and its name; the direction is unchanged by return_info; q = inf drops nothing."""
    model, params, batch = make_case(xp, (4, 2, 3), 6, 3)
    gg, _ = np_ggn_grad(np_of(params), *np_of(batch))
    lam = np.linalg.eigvalsh(gg)
    rank = int(np.sum(lam > 1e-9 * lam.max()))
    nb, k, p = 6, 3, 4 * 2 + 2 * 3
    sizes = {"full": p, "dual": nb * k, "svd": min(nb * k, p), "map": 3 * 4}
    for form in FORMS:
        d, info = fr.qngd_direction(model, params, batch, 2.0, form=form, rcond=1e-9, return_info=True)
        assert (info.rank, info.size, info.rcond, info.form) == (rank, sizes[form], 1e-9, form), form
        assert info.ranks == (rank,) and info.dropped == sizes[form] - rank
        plain = fr.qngd_direction(model, params, batch, 2.0, form=form, rcond=1e-9)
        assert_close(ac.flatten(d), ac.flatten(plain), like=params[0], rtol=0.0)
        _, inf_info = fr.qngd_direction(model, params, batch, math.inf, form=form, return_info=True)
        assert inf_info.rank == inf_info.size
    # the Sylvester path of the map form (q = 1, depth 2, whitened) reports it too
    target = backend.normal(12, (3, 4), xp)
    _, info = fr.qngd_direction_map(model, params, ac.models.whitened_moments(target), 1.0, rcond=1e-9,
                                    return_info=True)
    jm = np_map_jacobian(np_of(params))
    lam = np.linalg.eigvalsh(jm.T @ jm)
    assert info.rank == int(np.sum(lam > 1e-9 * lam.max())) and info.size == 12
