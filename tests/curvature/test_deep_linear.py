"""Deep linear networks: hand-written passes and closed-form curvature (spec 2.1, 3.1-3.4).

Every closed form is held against something independent: explicit product loops in
NumPy, central finite differences (in float64), materialized J^T J / B from the explicit
Jacobian, the interface's generic column-by-column defaults, np.kron, and the closed
forms of Huh (2020) eqs (2)-(3).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import generic as itf
from tests.helpers import FD_RTOL, RTOL, assert_close, deep_linear_cases, default_form, dtypes, fd_step, seeds


# ----------------------------------------------------------------------------- helpers
def make_case(xp, widths, b, seed, dtype="float64"):
    model = ac.DeepLinear(widths)
    params = ac.init_params(model, seed, xp, dtype=dtype)
    x = ac.backend.normal(seed + 1, (b, widths[0]), xp, dtype=dtype)
    y = ac.backend.normal(seed + 2, (b, widths[-1]), xp, dtype=dtype)
    return model, params, x, y


def rand_tangent(xp, model, seed, dtype="float64"):
    return ac.unflatten(ac.backend.normal(seed, (model.num_params,), xp, dtype=dtype), model.shapes)


def np_of(tree):
    return [backend.to_numpy(a).astype(np.float64) for a in tree]


def np_product(ws, start=0, stop=None):
    """W_stop ... W_{start+1} (0-based slice ws[start:stop]) by an explicit loop; identity if empty."""
    ws = ws[start:stop]
    n = ws[0].shape[1] if ws else None
    out = None
    for w in ws:
        out = w if out is None else w @ out
    return out if out is not None else np.eye(n)


def np_prefix(ws, i):
    """W_{<i+1} = W_i ... W_1 for 0-based layer i (identity for i = 0)."""
    return np_product(ws, 0, i) if i else np.eye(ws[0].shape[1])


def np_suffix(ws, i):
    """W_{>i+1} = W_L ... W_{i+2} for 0-based layer i (identity for the last layer)."""
    return np_product(ws, i + 1) if i + 1 < len(ws) else np.eye(ws[-1].shape[0])


def np_total(ws):
    out = ws[0]
    for w in ws[1:]:
        out = w @ out
    return out


def np_forward_loop(ws, x):
    """f(x_b) = W_L (... (W_1 x_b)) sample by sample."""
    out = []
    for xb in x:
        h = xb
        for w in ws:
            h = w @ h
        out.append(h)
    return np.stack(out)


def cast64(xp, tree):
    return tuple(xp.astype(a, xp.float64) for a in tree)


def to_xp(a, like):
    xp = backend.namespace_of(like=like)
    return backend.from_numpy(a, xp, dtype=like.dtype, device=backend.device_of(like))


def rtol_for(dtype, factor=1.0):
    return factor * RTOL[dtype]


def ref_rtol(dtype):
    """Tolerance for a result in ``dtype`` against a float64 finite-difference reference."""
    return max(FD_RTOL["float64"], 10 * RTOL[dtype])


@st.composite
def equal_width_cases(draw):
    n = draw(st.integers(1, 5))
    depth = draw(st.integers(1, 5))
    return (n,) * (depth + 1), draw(st.integers(1, 10)), draw(seeds)


# ----------------------------------------------------------------------------- model and passes
@given(case=deep_linear_cases(), dtype=dtypes)
def test_forward_matches_explicit_product_loop(xp, case, dtype):
    widths, b, seed = case
    model, params, x, _ = make_case(xp, widths, b, seed, dtype)
    out = ac.forward(model, params, x)
    ref = np_forward_loop(np_of(params), backend.to_numpy(x).astype(np.float64))
    assert_close(out, ref, like=x, rtol=rtol_for(dtype, 10))


@given(case=deep_linear_cases(), dtype=dtypes)
def test_total_map_and_partial_products(xp, case, dtype):
    widths, _, seed = case
    model, params, x, _ = make_case(xp, widths, 1, seed, dtype)
    ws = np_of(params)
    wbar = ac.models.total_map(params)
    assert_close(wbar, np_total(ws), like=params[0], rtol=rtol_for(dtype, 10))
    prefix, suffix = ac.models.partial_products(params)
    assert len(prefix) == len(suffix) == model.depth
    for k in range(model.depth):
        assert_close(prefix[k], np_prefix(ws, k), like=params[0], rtol=rtol_for(dtype, 10))
        assert_close(suffix[k], np_suffix(ws, k), like=params[0], rtol=rtol_for(dtype, 10))
        # w̄ = W_{>i} W_i W_{<i} for every layer
        assert_close(suffix[k] @ params[k] @ prefix[k], np_total(ws), like=params[0], rtol=rtol_for(dtype, 10))
    assert prefix[1] is not params[0] if model.depth > 1 else True


@settings(max_examples=15)
@given(case=deep_linear_cases(), dtype=dtypes)
def test_jvp_matches_finite_differences(xp, case, dtype):
    widths, b, seed = case
    model, params, x, _ = make_case(xp, widths, b, seed, dtype)
    v = rand_tangent(xp, model, seed + 3, dtype)
    out, jv = ac.jvp(model, params, x, v)
    assert_close(out, ac.forward(model, params, x), like=x, rtol=rtol_for(dtype, 10))
    p64, v64, x64 = cast64(xp, params), cast64(xp, v), xp.astype(x, xp.float64)
    h = fd_step("float64")
    fd = (ac.forward(model, ac.params.tree_axpy(h, v64, p64), x64)
          - ac.forward(model, ac.params.tree_axpy(-h, v64, p64), x64)) / (
        2 * h
    )
    assert_close(jv, fd, like=x, rtol=ref_rtol(dtype))


@settings(max_examples=15)
@given(case=deep_linear_cases(max_width=5, max_depth=4), dtype=dtypes)
def test_vjp_is_the_adjoint_of_jvp_and_matches_fd(xp, case, dtype):
    widths, b, seed = case
    model, params, x, _ = make_case(xp, widths, b, seed, dtype)
    v = rand_tangent(xp, model, seed + 3, dtype)
    u = ac.backend.normal(seed + 4, (b, widths[-1]), xp, dtype=dtype)
    _, jv = ac.jvp(model, params, x, v)
    jtu = ac.vjp(model, params, x, u)
    lhs = float(xp.sum(jv * u))
    rhs = float(ac.params.tree_vdot(v, jtu))
    scale = float(xp.sqrt(xp.sum(jv * jv) * xp.sum(u * u))) + float(ac.params.tree_norm(v) * ac.params.tree_norm(jtu))
    assert abs(lhs - rhs) <= 10 * RTOL[dtype] * scale
    # J^T u is the gradient of phi(theta) = sum_b <f(x_b), u_b>: central differences in float64
    p64, x64, u64 = cast64(xp, params), xp.astype(x, xp.float64), xp.astype(u, xp.float64)
    h = fd_step("float64")
    shapes = model.shapes
    flat = ac.flatten(p64)
    eye = np.eye(model.num_params)
    fd = []
    for k in range(model.num_params):
        e = backend.from_numpy(eye[k], xp, device=backend.device_of(x))
        fp = ac.forward(model, ac.unflatten(flat + h * e, shapes), x64)
        fm = ac.forward(model, ac.unflatten(flat - h * e, shapes), x64)
        fd.append(float(xp.sum((fp - fm) * u64)) / (2 * h))
    assert_close(ac.flatten(jtu), np.asarray(fd), like=x, rtol=ref_rtol(dtype))


# ----------------------------------------------------------------------------- loss and gradient
@settings(max_examples=15)
@given(case=deep_linear_cases(max_width=5, max_depth=4), dtype=dtypes)
def test_value_and_grad_matches_fd_default_and_moments(xp, case, dtype):
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    loss, grad = ac.value_and_grad(model, params, (x, y))
    xs, ys = backend.to_numpy(x).astype(np.float64), backend.to_numpy(y).astype(np.float64)
    r = np_forward_loop(np_of(params), xs) - ys
    assert_close(loss, 0.5 * np.sum(r * r) / b, like=x, rtol=rtol_for(dtype, 10))
    # generic default: forward + vjp of the output gradient
    loss_d, grad_d = default_form(itf.value_and_grad)(model, params, (x, y))
    assert_close(grad, grad_d, like=x, rtol=rtol_for(dtype, 10))
    # the generic Linearization's cached form
    loss_c, grad_c = ac.linearize(model, params, x).value_and_grad(y)
    assert_close(loss_c, 0.5 * np.sum(r * r) / b, like=x, rtol=rtol_for(dtype, 10))
    assert_close(ac.flatten(grad_c), ac.flatten(grad_d), like=x, rtol=rtol_for(dtype, 10))
    # from moments: same value (up to the cancellation in Huh eq 1, relative to <|y|^2>) and gradient
    mom = ac.models.moments(x, y)
    loss_m, grad_m = ac.value_and_grad(model, params, mom)
    yy = float(np.sum(ys * ys) / b) + float(np.sum(r * r) / b)
    assert_close(loss_m, 0.5 * np.sum(r * r) / b, like=x, rtol=0.0, atol=100 * RTOL[dtype] * yy)
    gscale = max(float(np.max(np.abs(backend.to_numpy(ac.flatten(grad))))), 1.0)
    assert_close(grad_m, grad, like=x, rtol=0.0, atol=100 * RTOL[dtype] * gscale * (1 + yy))
    # finite differences of the loss (float64)
    p64, b64 = cast64(xp, params), (xp.astype(x, xp.float64), xp.astype(y, xp.float64))
    h = fd_step("float64")
    flat, shapes, eye = ac.flatten(p64), model.shapes, np.eye(model.num_params)
    fd = []
    for k in range(model.num_params):
        e = backend.from_numpy(eye[k], xp, device=backend.device_of(x))
        lp = float(ac.value_and_grad(model, ac.unflatten(flat + h * e, shapes), b64)[0])
        lm = float(ac.value_and_grad(model, ac.unflatten(flat - h * e, shapes), b64)[0])
        fd.append((lp - lm) / (2 * h))
    assert_close(ac.flatten(grad), np.asarray(fd), like=x, rtol=ref_rtol(dtype), atol=1e-9)


@given(case=deep_linear_cases(), dtype=dtypes)
def test_moments_match_explicit_sums(xp, case, dtype):
    widths, b, seed = case
    _, _, x, y = make_case(xp, widths, b, seed, dtype)
    mom = ac.models.moments(x, y)
    xs, ys = backend.to_numpy(x).astype(np.float64), backend.to_numpy(y).astype(np.float64)
    assert_close(mom.sxx, sum(np.outer(a, a) for a in xs) / b, like=x)
    assert_close(mom.syx, sum(np.outer(c, a) for a, c in zip(xs, ys)) / b, like=x)
    assert_close(mom.syy, np.sum(ys * ys) / b, like=x)
    assert mom.count == b


@given(case=deep_linear_cases(), dtype=dtypes)
def test_whitened_moments_give_huh_eq1(xp, case, dtype):
    """L = 1/2 ||w̄ - w̄_*||_F^2 with Sigma_x = I (Huh eq 1) and g = J Delta (Sec. 2)."""
    widths, _, seed = case
    model, params, _, _ = make_case(xp, widths, 1, seed, dtype)
    target = ac.backend.normal(seed + 5, (widths[-1], widths[0]), xp, dtype=dtype)
    mom = ac.models.whitened_moments(target)
    assert_close(mom.sxx, np.eye(widths[0]), like=target)
    ws, t = np_of(params), backend.to_numpy(target).astype(np.float64)
    delta = np_total(ws) - t
    loss, grad = ac.value_and_grad(model, params, mom)
    assert_close(loss, 0.5 * np.sum(delta * delta), like=target, rtol=0.0,
                 atol=100 * RTOL[dtype] * (1 + np.sum(t * t) + np.sum(np_total(ws) ** 2)))
    for i in range(model.depth):
        ref = np_suffix(ws, i).T @ delta @ np_prefix(ws, i).T  # g_i = W_{>i}^T Delta W_{<i}^T
        assert_close(grad[i], ref, like=target, rtol=rtol_for(dtype, 100))
    loss2, _ = ac.value_and_grad(model, params, ac.models.whitened_moments(target, syy=2.5))
    assert_close(loss2 - loss, 0.5 * (2.5 - np.sum(t * t)), like=target, rtol=0.0, atol=1e-3 if dtype == "float32"
                 else 1e-10)


# ----------------------------------------------------------------------------- Jacobians
@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=6, max_depth=4), dtype=dtypes)
def test_explicit_jacobian_matches_basis_jvps_and_fd(xp, case, dtype):
    widths, b, seed = case
    model, params, x, _ = make_case(xp, widths, b, seed, dtype)
    jac = ac.jacobian(model, params, x)
    assert tuple(jac.shape) == (b, widths[-1], model.num_params)
    eye = np.eye(model.num_params)
    cols = [ac.jvp(model, params, x, ac.unflatten(to_xp(eye[k], x), model.shapes))[1]
            for k in range(model.num_params)]
    assert_close(jac, np.stack([backend.to_numpy(c) for c in cols], axis=-1), like=x, rtol=rtol_for(dtype, 10))
    # finite differences along random directions (float64)
    p64, x64 = cast64(xp, params), xp.astype(x, xp.float64)
    h = fd_step("float64")
    jn = backend.to_numpy(jac).astype(np.float64)
    for k in range(3):
        d = ac.backend.normal(seed + 10 + k, (model.num_params,), xp)
        dt = ac.unflatten(d, model.shapes)
        fd = (ac.forward(model, ac.params.tree_axpy(h, dt, p64), x64)
              - ac.forward(model, ac.params.tree_axpy(-h, dt, p64), x64)) / (
            2 * h
        )
        assert_close(to_xp(jn @ backend.to_numpy(d), x64), fd, rtol=ref_rtol(dtype))


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=6, max_depth=4), dtype=dtypes)
def test_map_jacobian_matches_basis_jvps_and_fd(xp, case, dtype):
    widths, _, seed = case
    model, params, _, _ = make_case(xp, widths, 1, seed, dtype)
    n0, nl = widths[0], widths[-1]
    jm = ac.curvature.map_jacobian(model, params)
    assert tuple(jm.shape) == (nl * n0, model.num_params)
    # JVP on the identity batch: row c of J v is (dw̄ e_c)^T, so vec_r(dw̄) = (J v)^T flattened
    ident = xp.eye(n0, dtype=params[0].dtype, device=backend.device_of(params[0]))
    eye = np.eye(model.num_params)
    cols = []
    for k in range(model.num_params):
        _, jv = ac.jvp(model, params, ident, ac.unflatten(to_xp(eye[k], ident), model.shapes))
        cols.append(backend.to_numpy(jv).T.reshape(-1))
    assert_close(jm, np.stack(cols, axis=1), like=params[0], rtol=rtol_for(dtype, 10))
    p64 = cast64(xp, params)
    h = fd_step("float64")
    for k in range(3):
        d = ac.backend.normal(seed + 20 + k, (model.num_params,), xp)
        dt = ac.unflatten(d, model.shapes)
        fd = (ac.models.total_map(ac.params.tree_axpy(h, dt, p64))
              - ac.models.total_map(ac.params.tree_axpy(-h, dt, p64))) / (2 * h)
        got = backend.to_numpy(jm).astype(np.float64) @ backend.to_numpy(d)
        assert_close(got, backend.to_numpy(fd).reshape(-1), rtol=ref_rtol(dtype))


# ----------------------------------------------------------------------------- GGN
def _check_ggn_forms(xp, widths, b, seed, dtype):
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    batch = (x, y)
    g = ac.ggn_matrix(model, params, batch)
    p = model.num_params
    assert tuple(g.shape) == (p, p)
    gn = backend.to_numpy(g).astype(np.float64)
    # materialized J^T J / B from the explicit Jacobian (H_b = I for MSE)
    jn = backend.to_numpy(ac.jacobian(model, params, x)).astype(np.float64).reshape(-1, p)
    assert_close(g, jn.T @ jn / b, like=x, rtol=rtol_for(dtype, 10))
    # the interface's generic default: column by column from the matrix-free product
    assert_close(g, default_form(itf.ggn_matrix)(model, params, batch), like=x, rtol=rtol_for(dtype, 10))
    # matrix-free product against the materialized matrix
    v = rand_tangent(xp, model, seed + 3, dtype)
    gv = ac.ggn_vp(model, params, batch, v)
    assert_close(ac.flatten(gv), gn @ backend.to_numpy(ac.flatten(v)).astype(np.float64), like=x,
                 rtol=rtol_for(dtype, 10))
    # the generic Linearization's cached form of the product, against the materialized matrix
    assert_close(ac.flatten(ac.linearize(model, params, x).ggn_vp(v)),
                 gn @ backend.to_numpy(ac.flatten(v)).astype(np.float64), like=x, rtol=rtol_for(dtype, 10))
    # and from the moments
    assert_close(ac.ggn_matrix(model, params, ac.models.moments(x, y)), gn, like=x, rtol=rtol_for(dtype, 10))
    # symmetric and PSD
    assert np.max(np.abs(gn - gn.T)) <= RTOL[dtype] * np.max(np.abs(gn))
    lam = np.linalg.eigvalsh((gn + gn.T) / 2)
    assert lam.min() >= -10 * RTOL[dtype] * max(lam.max(), 1e-300)
    return model, params, batch, gn


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=6, max_depth=4), dtype=dtypes)
def test_ggn_forms_agree(xp, case, dtype):
    _check_ggn_forms(xp, *case, dtype)


@settings(max_examples=10)
@given(case=equal_width_cases(), dtype=dtypes)
def test_ggn_forms_agree_equal_widths(xp, case, dtype):
    """The single-broadcast path for equal widths."""
    _check_ggn_forms(xp, *case, dtype)


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=6, max_depth=4), dtype=dtypes)
def test_ggn_blocks_and_fisher_kron_factors(xp, case, dtype):
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    g = backend.to_numpy(ac.ggn_matrix(model, params, (x, y))).astype(np.float64)
    blocks = ac.ggn_blocks(model, params, (x, y))
    diag = ac.ggn_block_diag(model, params, (x, y))
    factors = ac.curvature.fisher_kron_factors(model, params, (x, y))
    offs = np.cumsum([0] + [a * c for a, c in model.shapes])
    ws, xs = np_of(params), backend.to_numpy(x).astype(np.float64)
    for i in range(model.depth):
        for j in range(model.depth):
            assert_close(blocks[i][j], g[offs[i]:offs[i + 1], offs[j]:offs[j + 1]], like=x, rtol=rtol_for(dtype, 10))
        assert_close(diag[i], g[offs[i]:offs[i + 1], offs[i]:offs[i + 1]], like=x, rtol=rtol_for(dtype, 10))
        e_i, a_i = factors[i]
        en, an = backend.to_numpy(e_i).astype(np.float64), backend.to_numpy(a_i).astype(np.float64)
        # row-major vec: G_ii = kron(E_i, A_i)
        assert_close(np.kron(en, an), g[offs[i]:offs[i + 1], offs[i]:offs[i + 1]], rtol=rtol_for(dtype, 10))
        # Bernacchia eq 22 for the column-major vec: <x x^T> kron <e e^T>
        n_i, n_im1 = model.shapes[i]
        perm = np.arange(n_i * n_im1).reshape(n_i, n_im1).T.reshape(-1)  # column-major order of entries
        gcol = g[offs[i]:offs[i + 1], offs[i]:offs[i + 1]][np.ix_(perm, perm)]
        assert_close(np.kron(an, en), gcol, rtol=rtol_for(dtype, 10))
        # A_i = <x_{i-1} x_{i-1}^T> from the activations; E_i = W_{>i}^T W_{>i} by a loop
        hs = np.stack([np_prefix(ws, i) @ xb for xb in xs])
        assert_close(a_i, hs.T @ hs / b, like=x, rtol=rtol_for(dtype, 10))
        suf = np_suffix(ws, i)
        assert_close(e_i, suf.T @ suf, like=x, rtol=rtol_for(dtype, 10))


def test_fisher_error_covariance_by_sampling(numpy_xp):
    """E_i = <e_i e_i^T> under y ~ N(f(x), I) (Bernacchia eq 14): Monte Carlo with many samples."""
    xp = numpy_xp
    model, params, x, _ = make_case(xp, (3, 4, 2, 3), 5, 7)
    out = ac.forward(model, params, x)
    k = 20000
    ys = ac.losses.sample_targets(ac.MSE(), out, 11, num_samples=k)  # (k, B, nL)
    prefix, suffix = ac.models.partial_products(params)
    factors = ac.curvature.fisher_kron_factors(model, params, (x, out))
    for i in range(model.depth):
        e = np.einsum("on,kbo->kbn", suffix[i], np.asarray(ys) - np.asarray(out)[None])  # e_i = W_{>i}^T (y - f)
        cov = np.einsum("kbn,kbm->nm", e, e) / (k * x.shape[0])
        # standard error of a sample covariance entry <= sqrt(2) max|E| / sqrt(N); allow 6 of them
        n_samples = k * x.shape[0]
        np.testing.assert_allclose(cov, factors[i][0], atol=6 * np.sqrt(2) * np.abs(factors[i][0]).max()
                                   / np.sqrt(n_samples))


# ----------------------------------------------------------------------------- Hessian
def np_second_term(ws, e, u, v):
    """sum_{i != j} Tr[E^T (W_L .. U_i .. V_j .. W_1)]: the J' Delta term u^T (H - G) v."""
    L = len(ws)
    total = 0.0
    for i in range(L):
        for j in range(L):
            if i == j:
                continue
            mats = list(ws)
            mats[i], mats[j] = u[i], v[j]
            total += np.sum(e * np_total(mats))
    return total


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=5, max_depth=4), dtype=dtypes)
def test_hvp_matches_fd_of_gradient_and_hessian_matrix(xp, case, dtype):
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    batch = (x, y)
    v = rand_tangent(xp, model, seed + 3, dtype)
    hv = ac.hvp(model, params, batch, v)
    p64, v64, b64 = cast64(xp, params), cast64(xp, v), (xp.astype(x, xp.float64), xp.astype(y, xp.float64))
    h = fd_step("float64")
    gp = ac.value_and_grad(model, ac.params.tree_axpy(h, v64, p64), b64)[1]
    gm = ac.value_and_grad(model, ac.params.tree_axpy(-h, v64, p64), b64)[1]
    fd = ac.flatten(ac.params.tree_scale(ac.params.tree_sub(gp, gm), 1 / (2 * h)))
    assert_close(ac.flatten(hv), fd, like=x, rtol=ref_rtol(dtype))
    # from moments
    mom = ac.models.moments(x, y)
    hv_m = ac.hvp(model, params, mom, v)
    assert_close(ac.flatten(hv_m), ac.flatten(hv), like=x, rtol=0.0,
                 atol=100 * RTOL[dtype] * (1 + float(mom.syy)) * (1 + float(xp.max(xp.abs(ac.flatten(hv))))))
    # explicit Hessian: symmetric, equals the hvp columns (generic default) and H v
    hm = ac.hessian_matrix(model, params, batch)
    hn = backend.to_numpy(hm).astype(np.float64)
    assert np.max(np.abs(hn - hn.T)) <= 10 * RTOL[dtype] * np.max(np.abs(hn))
    assert_close(hm, default_form(itf.hessian_matrix)(model, params, batch), like=x, rtol=rtol_for(dtype, 10))
    assert_close(ac.flatten(hv), hn @ backend.to_numpy(ac.flatten(v)).astype(np.float64), like=x,
                 rtol=rtol_for(dtype, 10))


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=5, max_depth=4), dtype=dtypes)
def test_hessian_is_ggn_plus_second_term(xp, case, dtype):
    """H = J J^T + J' Delta (Huh Sec. 2): u^T (H - G) v against an explicit double loop."""
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    hn = backend.to_numpy(ac.hessian_matrix(model, params, (x, y))).astype(np.float64)
    gn = backend.to_numpy(ac.ggn_matrix(model, params, (x, y))).astype(np.float64)
    ws, xs, ys = np_of(params), backend.to_numpy(x).astype(np.float64), backend.to_numpy(y).astype(np.float64)
    e = (np_forward_loop(ws, xs) - ys).T @ xs / b  # residual moment <(f - y) x^T>
    u = np_of(rand_tangent(xp, model, seed + 4))
    v = np_of(rand_tangent(xp, model, seed + 5))
    uf, vf = np.concatenate([a.ravel() for a in u]), np.concatenate([a.ravel() for a in v])
    ref = np_second_term(ws, e, u, v)
    scale = np.abs(hn - gn).max() * np.linalg.norm(uf) * np.linalg.norm(vf) + abs(ref)
    assert abs(uf @ (hn - gn) @ vf - ref) <= 100 * RTOL[dtype] * max(scale, 1e-300)


@settings(max_examples=10)
@given(case=deep_linear_cases(max_width=5, max_depth=4), dtype=dtypes)
def test_hessian_equals_ggn_at_zero_residual(xp, case, dtype):
    widths, b, seed = case
    model, params, x, _ = make_case(xp, widths, b, seed, dtype)
    y = ac.forward(model, params, x)  # Delta = 0
    hm = ac.hessian_matrix(model, params, (x, y))
    gm = ac.ggn_matrix(model, params, (x, y))
    assert_close(hm, gm, like=x, rtol=rtol_for(dtype, 100))
    v = rand_tangent(xp, model, seed + 3, dtype)
    assert_close(ac.hvp(model, params, (x, y), v), ac.ggn_vp(model, params, (x, y), v), like=x,
                 rtol=rtol_for(dtype, 100))


@given(seed=seeds, n=st.integers(1, 5), dtype=dtypes)
def test_huh_eq2_eq3_depth_two(xp, seed, n, dtype):
    """Huh (2020) eqs (2)-(3) for d = 2, Sigma_x = I: H w' = [w2^T D' + w2'^T D; D' w1^T + D w1'^T]."""
    model = ac.DeepLinear((n, n + 1, n))
    params = ac.init_params(model, seed, xp, dtype=dtype)
    target = ac.backend.normal(seed + 1, (n, n), xp, dtype=dtype)
    mom = ac.models.whitened_moments(target)
    v = rand_tangent(xp, model, seed + 2, dtype)
    (w1, w2), (v1, v2), t = np_of(params), np_of(v), backend.to_numpy(target).astype(np.float64)
    delta = w2 @ w1 - t
    ddelta = w2 @ v1 + v2 @ w1
    hv = ac.hvp(model, params, mom, v)
    assert_close(hv, (w2.T @ ddelta + v2.T @ delta, ddelta @ w1.T + delta @ v1.T), like=target,
                 rtol=rtol_for(dtype, 100))
    gv = ac.ggn_vp(model, params, mom, v)
    assert_close(gv, (w2.T @ ddelta, ddelta @ w1.T), like=target, rtol=rtol_for(dtype, 100))


# ----------------------------------------------------------------------------- null space
@settings(max_examples=15)
@given(case=deep_linear_cases(min_depth=2), dtype=dtypes, data=st.data())
def test_null_direction_leaves_the_map_unchanged(xp, case, dtype, data):
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    i = data.draw(st.integers(1, model.depth - 1))
    ni = widths[i]
    m = ac.backend.normal(seed + 7, (ni, ni), xp, dtype=dtype, scale=1 / np.sqrt(ni))
    nd = ac.curvature.null_space_direction(params, i, m)
    ws, mn = np_of(params), backend.to_numpy(m).astype(np.float64)
    # the definition: m W_i at layer i, -W_{i+1} m at layer i+1, zero elsewhere
    ref = [np.zeros_like(w) for w in ws]
    ref[i - 1], ref[i] = mn @ ws[i - 1], -ws[i] @ mn
    assert_close(nd, ref, like=params[0], rtol=rtol_for(dtype, 10))
    # first order: d w̄ / dt = 0 along the direction (central differences, float64); compare with
    # the map's derivative along a generic direction of the same layers
    p64, m64 = cast64(xp, params), xp.astype(m, xp.float64)
    n64 = ac.curvature.null_space_direction(p64, i, m64)
    h = fd_step("float64")

    def dmap(d):
        return (ac.models.total_map(ac.params.tree_axpy(h, d, p64))
                - ac.models.total_map(ac.params.tree_axpy(-h, d, p64))) / (2 * h)

    flip = tuple(-a if k == i else a for k, a in enumerate(n64))  # m W_i, +W_{i+1} m: not a symmetry
    generic = float(xp.max(xp.abs(dmap(flip))))
    # central differences round at eps * |w̄| / h: the floor below which no derivative is resolved
    floor = 100 * float(np.finfo(np.float64).eps) * float(xp.max(xp.abs(ac.models.total_map(p64)))) / h
    assert float(xp.max(xp.abs(dmap(n64)))) <= 1e-7 * max(generic, 1e-300) + floor
    # exactly for the finite symmetry W_i -> (I + t m) W_i, W_{i+1} -> W_{i+1} (I + t m)^{-1}
    t = 0.1
    a = np.eye(ni) + t * mn
    moved = list(ws)
    moved[i - 1], moved[i] = a @ ws[i - 1], ws[i] @ np.linalg.inv(a)
    np.testing.assert_allclose(np_total(moved), np_total(ws), rtol=0,
                               atol=1e-13 * np.linalg.cond(a) * np.abs(np_total(ws)).max() * model.depth)
    # ... whose derivative at t = 0 is the null direction
    d_fd = [(b1 - b2) / (2e-6) for b1, b2 in zip(
        [(np.eye(ni) + 1e-6 * mn) @ ws[i - 1], ws[i] @ np.linalg.inv(np.eye(ni) + 1e-6 * mn)],
        [(np.eye(ni) - 1e-6 * mn) @ ws[i - 1], ws[i] @ np.linalg.inv(np.eye(ni) - 1e-6 * mn)])]
    assert_close(nd[i - 1], d_fd[0], rtol=max(1e-5, 10 * RTOL[dtype]))
    assert_close(nd[i], d_fd[1], rtol=max(1e-5, 10 * RTOL[dtype]))
    # annihilated by the GGN (relative to the GGN applied to the non-symmetry 'flip');
    # orthogonal to the gradient (g = J Delta, Huh Sec. 2)
    eps = float(np.finfo(dtype).eps)
    gn = ac.ggn_vp(model, params, (x, y), nd)
    gflip = ac.ggn_vp(model, params, (x, y), tuple(-a if k == i else a for k, a in enumerate(nd)))
    assert float(ac.params.tree_norm(gn)) <= 1e3 * eps * max(float(ac.params.tree_norm(gflip)), 1e-300)
    _, grad = ac.value_and_grad(model, params, (x, y))
    assert abs(float(ac.params.tree_vdot(grad, nd))) <= 1e3 * eps * max(
        float(ac.params.tree_norm(grad) * ac.params.tree_norm(nd)), 1e-300)


def _abs_map_jacobian(model, params):
    """The map Jacobian of the network with |W_l| in place of W_l: the magnitudes of the
    products that form each entry of J (and, with |X|^T |X| / B, of G = J^T (I kron Sxx) J)."""
    return backend.to_numpy(ac.curvature.map_jacobian(model, tuple(ac.backend.from_numpy(
        np.abs(backend.to_numpy(p)).astype(np.float64), backend.namespace_by_name("numpy")) for p in params)))


@settings(max_examples=12)
@given(case=deep_linear_cases(max_width=5), dtype=dtypes)
@example(case=((3, 3, 4, 1, 2, 1), 8, 1979425), dtype="float64")  # G entries with cancellation (width-1 layers)
def test_null_space_basis(xp, case, dtype):
    widths, b, seed = case
    model, params, x, y = make_case(xp, widths, b, seed, dtype)
    basis = ac.curvature.null_space_basis(model, params)
    k = sum(n * n for n in widths[1:-1])
    assert tuple(basis.shape) == (k, model.num_params)
    if k == 0:
        return
    rows = []
    for i in range(1, model.depth):
        ni = widths[i]
        for a in range(ni):
            for c in range(ni):
                m = np.zeros((ni, ni))
                m[a, c] = 1.0
                nd = ac.curvature.null_space_direction(params, i, to_xp(m, params[0]))
                rows.append(backend.to_numpy(ac.flatten(nd)))
    assert_close(basis, np.stack(rows), like=params[0], rtol=0.0, atol=0.0)
    # J n = 0 and G n = 0 for every row, up to the rounding of the entries of J and G. Each
    # entry is a sum of products of weights (and inputs); its rounding error is ~L eps
    # relative to the same sum of the products' absolute values, not to the entry itself,
    # which cancellation can make far smaller (e.g. through a width-1 layer). So the bound
    # is c L eps (|J|_abs |n|) with |J|_abs the map Jacobian of the |W_l|, and for
    # G = J^T (I kron Sxx) J: c L eps (|J|_abs^T (I kron |X|^T |X| / B) |J|_abs) |n|.
    eps = float(np.finfo(dtype).eps)
    bn = np.abs(backend.to_numpy(basis).astype(np.float64))
    ja = _abs_map_jacobian(model, params)
    xa = np.abs(backend.to_numpy(x).astype(np.float64))
    ga = ja.T @ np.kron(np.eye(widths[-1]), xa.T @ xa / b) @ ja
    for mat, mag in ((ac.curvature.map_jacobian(model, params), ja), (ac.ggn_matrix(model, params, (x, y)), ga)):
        mn = backend.to_numpy(mat).astype(np.float64)
        bound = 20 * model.depth * eps * (mag @ bn.T)
        assert np.all(np.abs(mn @ backend.to_numpy(basis).astype(np.float64).T) <= bound + 1e-300)


# ----------------------------------------------------------------------------- init
def test_init_params_gaussian_and_orthogonal(xp):
    model = ac.DeepLinear((40, 60, 30))
    ps = ac.init_params(model, 0, xp, scale=2.0)
    assert [tuple(p.shape) for p in ps] == [(60, 40), (30, 60)]
    for p, fan_in in zip(ps, (40, 60)):
        var = float(np.var(backend.to_numpy(p)))
        # sample variance of >= 1800 draws: within 15% of scale^2 / fan_in
        assert abs(var - 4.0 / fan_in) <= 0.15 * 4.0 / fan_in
    again = ac.init_params(model, 0, xp, scale=2.0)
    for a, c in zip(ps, again):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(c))
    orth = ac.init_params(model, 1, xp, scale=0.5, method="orthogonal", dtype="float32")
    assert orth[0].dtype == xp.float32
    w1, w2 = np_of(orth)
    np.testing.assert_allclose(w1.T @ w1, 0.25 * np.eye(40), atol=1e-6)  # tall: orthonormal columns
    np.testing.assert_allclose(w2 @ w2.T, 0.25 * np.eye(30), atol=1e-6)  # wide: orthonormal rows
    ref = np.random.default_rng(3)
    first = ref.standard_normal((60, 40)) / np.sqrt(40)
    np.testing.assert_allclose(backend.to_numpy(ac.init_params(model, 3, xp)[0]), first, rtol=1e-14)


def test_model_properties():
    model = ac.DeepLinear([3, 4, 2])
    assert model.widths == (3, 4, 2) and model.depth == 2 and model.num_params == 20
    assert ac.param_shapes(model) == ((4, 3), (2, 4))
    assert model == ac.DeepLinear((3, 4, 2)) and hash(model) == hash(ac.DeepLinear((3, 4, 2)))


# ----------------------------------------------------------------------------- bad input
def test_bad_widths():
    for w in [(3,), (3, 0), (3, 2.5), (3, True), "34", 5]:
        with pytest.raises(ValueError, match=r"widths: expected a tuple of at least 2 positive integers"):
            ac.DeepLinear(w)


def test_bad_params_and_batch(xp):
    model, params, x, y = make_case(xp, (3, 4, 2), 5, 0)
    batch = (x, y)
    v = rand_tangent(xp, model, 1)
    bad = (params[0], xp.ones((4, 2), dtype=xp.float64))
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape \(2, 4\), got \(4, 2\)"):
        ac.value_and_grad(model, bad, batch)
    with pytest.raises(ValueError, match=r"params: expected 2 arrays"):
        ac.forward(model, params[:1], x)
    with pytest.raises(ValueError, match=r"v\[0\]: expected shape"):
        ac.ggn_vp(model, params, batch, (v[0].T, v[1]))
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 3\)"):
        ac.forward(model, params, xp.ones((5, 4), dtype=xp.float64))
    with pytest.raises(ValueError, match=r"^x: expected an array with 2 dimensions"):
        ac.jvp(model, params, xp.ones((3,), dtype=xp.float64), v)
    with pytest.raises(ValueError, match=r"batch x: expected shape \(\*, 3\)"):
        ac.value_and_grad(model, params, (xp.ones((5, 4), dtype=xp.float64), y))
    with pytest.raises(ValueError, match=r"batch: expected x and y with the same batch size, got 5 and 3"):
        ac.hvp(model, params, (x, y[:3, :]), v)
    with pytest.raises(ValueError, match=r"batch y: expected shape \(5, 2\)"):
        ac.hvp(model, params, (x, y[:, :1]), v)
    with pytest.raises(TypeError, match=r"batch: expected a tuple \(x, y\) or LinearMoments"):
        ac.ggn_matrix(model, params, x)
    with pytest.raises(ValueError, match=r"cotangent: expected shape \(5, 2\)"):
        ac.vjp(model, params, x, y[:, :1])
    with pytest.raises(TypeError, match=r"batch x: expected dtype"):
        ac.value_and_grad(model, params, (xp.astype(x, xp.float32), y))
    with pytest.raises(TypeError, match=r"v\[1\]: expected dtype"):
        ac.hvp(model, params, batch, (v[0], xp.astype(v[1], xp.float32)))
    with pytest.raises(TypeError, match=r"model: expected a DeepLinear"):
        ac.curvature.fisher_kron_factors("net", params, batch)
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape \(\*, 4\)"):
        ac.models.total_map((params[0], xp.ones((2, 3), dtype=xp.float64)))
    with pytest.raises(ValueError, match=r"method: expected 'gaussian' or 'orthogonal'"):
        ac.init_params(model, 0, xp, method="xavier")


def test_other_losses_defer_to_the_generic_defaults(xp):
    """DeepLinear overrides cover the squared error; with softmax cross-entropy every verb
    runs through the generic defaults (the closed-form hvp generalizes, Huh eq 2 with
    E = <g_b x_b^T>), checked against the same network as a Sequential (independent
    passes: Dense layers without bias, identity activations)."""
    model, params, x, _ = make_case(xp, (3, 4, 2), 5, 0)
    y = backend.integers(7, 0, 2, (5,), xp)
    v = rand_tangent(xp, model, 1)
    ce = ac.SoftmaxCrossEntropy()
    seq = ac.models.sequential.as_sequential(model)
    batch = (x, y)
    loss_d, g_d = ac.value_and_grad(model, params, batch, ce)
    loss_s, g_s = ac.value_and_grad(seq, params, batch, ce)
    assert_close(loss_d, loss_s, like=x)
    for a, b in zip(g_d, g_s):
        assert_close(a, b, like=x)
    for fn, args in [(ac.ggn_vp, (v,)), (ac.hvp, (v,))]:
        for a, b in zip(fn(model, params, batch, *args, loss=ce), fn(seq, params, batch, *args, loss=ce)):
            assert_close(a, b, like=x)
    for fn in (ac.ggn_matrix, ac.hessian_matrix):
        assert_close(fn(model, params, batch, ce), fn(seq, params, batch, ce), like=x)
    diag = ac.ggn_block_diag(model, params, batch, ce)
    blocks = ac.ggn_blocks(model, params, batch, ce)
    g = ac.ggn_matrix(seq, params, batch, ce)
    assert_close(diag[1], g[12:, 12:], like=x)
    assert_close(blocks[0][1], g[:12, 12:], like=x)
    with pytest.raises(TypeError, match=r"^loss: expected"):
        ac.curvature.fisher_kron_factors(model, params, batch, loss=ce)
    with pytest.raises(TypeError, match=r"^batch: expected a tuple \(x, y\) for loss"):
        ac.ggn_vp(model, params, ac.models.moments(x, backend.normal(1, (5, 2), xp)), v, ce)
    with pytest.raises(ValueError, match=r"^batch y: expected integer labels of shape \(5,\)"):
        ac.ggn_vp(model, params, (x, backend.normal(1, (5, 2), xp)), v, ce)


def test_nan_and_inf_are_rejected(xp):
    model, params, x, y = make_case(xp, (3, 4, 2), 5, 0)
    v = rand_tangent(xp, model, 1)
    nan_w = (params[0], params[1] * float("nan"))
    with pytest.raises(ValueError, match=r"params\[1\]: expected finite values, got 8 NaN/Inf"):
        ac.ggn_matrix(model, nan_w, (x, y))
    with pytest.raises(ValueError, match=r"params\[1\]: expected finite"):
        ac.forward(model, nan_w, x)
    inf_x = x + backend.from_numpy(np.array([0.0, np.inf, 0.0]), xp)
    with pytest.raises(ValueError, match=r"batch x: expected finite values, got 5 NaN/Inf"):
        ac.hvp(model, params, (inf_x, y), v)
    with pytest.raises(ValueError, match=r"v\[0\]: expected finite"):
        ac.ggn_vp(model, params, (x, y), (v[0] * float("inf"), v[1]))
    mom = ac.models.moments(x, y)
    with pytest.raises(ValueError, match=r"batch.syx: expected finite"):
        ac.value_and_grad(model, params, ac.LinearMoments(mom.sxx, mom.syx * float("nan"), mom.syy))
    with pytest.raises(ValueError, match=r"^x: expected finite"):
        ac.models.moments(inf_x, y)


def test_bad_moments(xp):
    model, params, x, y = make_case(xp, (3, 4, 2), 5, 0)
    mom = ac.models.moments(x, y)
    with pytest.raises(ValueError, match=r"batch.sxx: expected shape \(3, 3\)"):
        ac.ggn_vp(model, params, ac.LinearMoments(mom.sxx[:2, :2], mom.syx, mom.syy), params)
    with pytest.raises(ValueError, match=r"batch.syx: expected shape \(2, 3\)"):
        ac.value_and_grad(model, params, ac.LinearMoments(mom.sxx, mom.syx.T, mom.syy))
    asym = mom.sxx + xp.asarray([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=xp.float64)
    with pytest.raises(ValueError, match=r"batch.sxx: expected a symmetric matrix"):
        ac.ggn_matrix(model, params, ac.LinearMoments(asym, mom.syx, mom.syy))
    with pytest.raises(TypeError, match=r"batch.syy: expected an array"):
        ac.value_and_grad(model, params, ac.LinearMoments(mom.sxx, mom.syx, "1.0"))
    with pytest.raises(ValueError, match=r"batch.syy: expected a finite value"):
        ac.value_and_grad(model, params, ac.LinearMoments(mom.sxx, mom.syx, float("nan")))
    # a plain number for syy is accepted (e.g. xp.sum(...) of NumPy returns a scalar)
    loss_num, _ = ac.value_and_grad(model, params, ac.LinearMoments(mom.sxx, mom.syx, float(mom.syy)))
    assert_close(loss_num, ac.value_and_grad(model, params, mom)[0], like=x)
    with pytest.raises(ValueError, match=r"^y: expected 5 rows"):
        ac.models.moments(x, y[:4, :])
    with pytest.raises(ValueError, match=r"^target_map: expected an array with 2 dimensions"):
        ac.models.whitened_moments(y[0, :])
    with pytest.raises(ValueError, match=r"^syy: expected a scalar"):
        ac.models.whitened_moments(y, syy=xp.ones((2,), dtype=xp.float64))


def test_mixed_namespaces_are_named(xp):
    other = backend.namespace_by_name("array_api_strict" if backend.namespace_name(xp) == "numpy" else "numpy")
    model, params, x, y = make_case(xp, (3, 4, 2), 5, 0)
    x_other = backend.from_numpy(backend.to_numpy(x), other)
    with pytest.raises(TypeError, match=r"batch x: expected an array of namespace"):
        ac.value_and_grad(model, params, (x_other, y))
    with pytest.raises(TypeError, match=r"^x: expected an array of namespace"):
        ac.jacobian(model, params, x_other)
    m_other = backend.from_numpy(np.eye(4), other)
    with pytest.raises(TypeError, match=r"^m: expected an array of namespace"):
        ac.curvature.null_space_direction(params, 1, m_other)


def test_null_space_direction_bad_input(xp):
    model, params, _, _ = make_case(xp, (3, 4, 5, 2), 5, 0)
    m = xp.eye(4, dtype=xp.float64)
    for i in (0, 3, 1.0, True):
        with pytest.raises(ValueError, match=r"^i: expected a hidden layer index 1 <= i <= 2"):
            ac.curvature.null_space_direction(params, i, m)
    with pytest.raises(ValueError, match=r"^m: expected shape \(5, 5\)"):
        ac.curvature.null_space_direction(params, 2, m)
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape \(\*, 4\) \(columns = rows of params\[0\]\)"):
        ac.curvature.null_space_direction((params[0], params[2], params[1]), 1, m)
