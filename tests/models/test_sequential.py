"""Sequential networks: forward against NumPy references, JVP/VJP/Jacobian/HVP/Hessian
against finite differences (float64) and against each other, GGN == Hessian for a model
linear in its parameters, the cached linearization API, initialization, LeNet-5 shapes,
and bad-input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import Sequential, backend, flatten, lenet5, linearize, mlp, unflatten
from arraycurv.models.layers import ACTIVATIONS, Activation, AvgPool2d, Conv2d, Dense, Flatten, LayerNorm, MaxPool2d
from arraycurv.models.sequential import (
    backprop_to_layer_outputs,
    hvp_linearized,
    jvp_linearized,
    layer_inputs,
    layer_param_indices,
    vjp_linearized,
)
from arraycurv.params import num_params
from tests.helpers import (
    assert_close,
    assert_like,
    assert_tree_close,
    cnn_models,
    default_form,
    dtypes,
    mlp_models,
    seeds,
)
from tests.references.curvature import default_ggn_matrix
from tests.references.layers import act_ref, conv_ref, near_kink, pool_ref

FD64_RTOL = {"float64": 1e-6, "float32": 5e-4}
H = 1e-5
MSE, CE = ac.MSE(), ac.SoftmaxCrossEntropy()


# ---------------------------------------------------------------- strategies
@st.composite
def norm_models(draw):
    """Networks with a LayerNorm over vector features or over a whole (C, H, W) image, and
    any activation (at least 3 normalized features: fewer make the normalized output
    nearly constant and its derivatives a float32 cancellation)."""
    act = Activation(draw(st.sampled_from(ACTIVATIONS)))
    k = draw(st.integers(1, 2))
    if draw(st.booleans()):
        n0, n1 = draw(st.integers(1, 3)), draw(st.integers(3, 5))
        return Sequential((Dense(n0, n1), LayerNorm(n1), act, Dense(n1, k)), (n0,))
    c, o = draw(st.integers(1, 2)), 1
    return Sequential((Conv2d(c, o, 3, padding=1), LayerNorm((o, 3, 3), eps=draw(st.sampled_from([1e-5, 0.1]))),
                       act, Flatten(), Dense(9 * o, k)), (c, 3, 3))


@st.composite
def cases(draw, models=None, max_batch=10):
    model = draw(models if models is not None else st.one_of(mlp_models(), cnn_models(), norm_models()))
    b = draw(st.integers(1, max_batch if not isinstance(model.layers[0], Conv2d) else 4))
    return model, b, draw(dtypes), draw(seeds), draw(st.sampled_from([MSE, CE]))


def make_data(xp, model, b, dtype, seed, loss=MSE):
    g = np.random.default_rng(seed)
    params = tuple(backend.normal(g, s, xp, dtype=dtype, scale=0.6) for s in ac.param_shapes(model))
    x = backend.normal(g, (b, *model.input_shape), xp, dtype=dtype)
    k = ac.models.sequential._shapes(model)[1][0]
    y = backend.normal(g, (b, k), xp, dtype=dtype) if loss == MSE else backend.integers(g, 0, k, (b,), xp)
    v = tuple(backend.normal(g, s, xp, dtype=dtype) for s in ac.param_shapes(model))
    u = tuple(backend.normal(g, s, xp, dtype=dtype) for s in ac.param_shapes(model))
    return params, x, y, v, u, g


def to64(xp, tree):
    return tuple(xp.astype(t, xp.float64) for t in tree)


def np64(a):
    if isinstance(a, (tuple, list)):
        return np.concatenate([np64(t).ravel() for t in a])
    return backend.to_numpy(a).astype(np.float64)


def axpy(t, d, a):
    return tuple(ai + t * di for ai, di in zip(a, d))


def ref_forward(model, params, x):
    """NumPy reference forward with the loop/closed-form references of test_layers."""
    a = x
    ps = ac.models.sequential._split(model, tuple(np64(p).reshape(p.shape) for p in params))
    for layer, p in zip(model.layers, ps):
        if isinstance(layer, Dense):
            a = a @ p[0].T + (p[1] if layer.bias else 0.0)
        elif isinstance(layer, Activation):
            a = act_ref(layer.name, a)
        elif isinstance(layer, Conv2d):
            a = conv_ref(a, p[0], p[1] if layer.bias else None, layer.stride, layer.padding)
        elif isinstance(layer, (AvgPool2d, MaxPool2d)):
            a = pool_ref(a, layer.kernel_size, layer.stride, np.mean if isinstance(layer, AvgPool2d) else np.max)
        elif isinstance(layer, LayerNorm):
            ax = tuple(range(1, a.ndim))
            c = a - a.mean(axis=ax, keepdims=True)
            a = p[0] * c / np.sqrt((c * c).mean(axis=ax, keepdims=True) + layer.eps) + p[1]
        else:
            a = a.reshape(a.shape[0], -1)
    return a


def assume_smooth(xp, model, params, x):
    """Reject cases where the float64 finite differences could cross a relu/max-pool kink."""
    lin = linearize(model, to64(xp, params), xp.astype(x, xp.float64))
    assume(not any(near_kink(layer, np64(a).reshape(a.shape)) for layer, a in zip(model.layers, lin.inputs)))


# ----------------------------------------------------------------- forward
@given(seed=seeds, sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5), b=st.integers(1, 6), dtype=dtypes)
def test_dense_identity_chain_is_the_deep_linear_product(xp, seed, sizes, b, dtype):
    layers = []
    for i in range(len(sizes) - 1):
        layers += [Dense(sizes[i], sizes[i + 1], bias=False), Activation("identity")]
    model = Sequential(tuple(layers), (sizes[0],))
    params, x, *_ = make_data(xp, model, b, dtype, seed)
    prod = np.eye(sizes[0])
    for w in params:
        prod = np64(w).reshape(w.shape) @ prod  # W_L ... W_1
    assert_close(ac.forward(model, params, x), np64(x).reshape(x.shape) @ prod.T, like=x)


@settings(max_examples=15)
@given(case=cases())
def test_forward_matches_numpy_reference(xp, case):
    model, b, dtype, seed, _ = case
    params, x, *_ = make_data(xp, model, b, dtype, seed)
    out = ac.forward(model, params, x)
    assert_close(out, ref_forward(model, params, np64(x).reshape(x.shape)), like=x)
    assert_close(linearize(model, params, x).outputs, out, like=x)


# ------------------------------------------------------- first-order passes
@settings(max_examples=20)
@given(case=cases())
def test_jvp_and_vjp_are_adjoint(xp, case):
    model, b, dtype, seed, _ = case
    params, x, _, v, _, g = make_data(xp, model, b, dtype, seed)
    out, jv = ac.jvp(model, params, x, v)
    u = backend.normal(g, tuple(out.shape), xp, dtype=dtype)
    jtu = ac.vjp(model, params, x, u)
    assert_like(jv, x)
    lhs, rhs = float(np.sum(np64(jv) * np64(u))), float(np.sum(np64(v) * np64(jtu)))
    scale = np.linalg.norm(np64(jv)) * np.linalg.norm(np64(u)) + np.linalg.norm(np64(v)) * np.linalg.norm(np64(jtu))
    assert abs(lhs - rhs) <= {"float64": 1e-10, "float32": 1e-4}[dtype] * scale


@settings(max_examples=10)
@given(case=cases(models=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models()), max_batch=4))
def test_jacobian_explicit_vs_jvps_vs_finite_differences(xp, case):
    model, b, dtype, seed, _ = case
    params, x, _, v, _, _ = make_data(xp, model, b, dtype, seed)
    assume_smooth(xp, model, params, x)
    jac = ac.jacobian(model, params, x)
    k = ac.models.sequential._shapes(model)[1][0]
    assert tuple(jac.shape) == (b, k, num_params(ac.param_shapes(model)))
    # columns against single JVPs with unit tangents (a random subset of 6 columns)
    shapes = ac.param_shapes(model)
    p = num_params(shapes)
    for i in np.random.default_rng(seed).choice(p, size=min(p, 6), replace=False):
        e = backend.from_numpy(np.eye(p)[i], xp, dtype=dtype)
        assert_close(jac[:, :, int(i)], ac.jvp(model, params, x, unflatten(e, shapes))[1], like=x)
    p64, x64, v64 = to64(xp, params), xp.astype(x, xp.float64), to64(xp, v)
    fd = (np64(ac.forward(model, axpy(H, v64, p64), x64)) - np64(ac.forward(model, axpy(-H, v64, p64), x64))) / (2 * H)
    jv = xp.matmul(jac, flatten(v)[:, None])[..., 0]
    # the single-precision Jacobian's rounding is relative to sum_j |J_ij v_j|, which can be
    # far above |J v| when the terms cancel
    terms = np.abs(np64(jac)).reshape(b * k, -1) @ np.abs(np64(flatten(v)))
    assert_close(jv, fd.reshape(b, k), like=x, rtol=FD64_RTOL[dtype], atol=FD64_RTOL[dtype] * float(np.max(terms)))


@settings(max_examples=20)
@given(case=cases())
def test_gradient_against_finite_differences(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v, _, _ = make_data(xp, model, b, dtype, seed, loss)
    assume_smooth(xp, model, params, x)
    val, grad = ac.value_and_grad(model, params, (x, y), loss)
    assert_close(val, ac.losses.loss_value(loss, ac.forward(model, params, x), y), like=x)
    p64, x64, v64 = to64(xp, params), xp.astype(x, xp.float64), to64(xp, v)
    y64 = xp.astype(y, xp.float64) if loss == MSE else y

    def lval(t):
        return float(ac.losses.loss_value(loss, ac.forward(model, axpy(t, v64, p64), x64), y64))

    # the cached linearization's value and gradient are the same computation
    lval_c, lgrad = linearize(model, params, x).value_and_grad(y, loss)
    assert_close(lval_c, val, like=x)
    assert_tree_close(lgrad, grad, like=x)

    fd = (lval(H) - lval(-H)) / (2 * H)
    dd = float(np.sum(np64(grad) * np64(v)))
    # truncation error relative to |grad||v|; roundoff of the differenced loss ~ eps |f| / H
    roundoff = 1e-15 * (1.0 + float(np.max(np.abs(np64(ac.forward(model, p64, x64)))))) / H
    assert abs(dd - fd) <= FD64_RTOL[dtype] * np.linalg.norm(np64(grad)) * np.linalg.norm(np64(v)) + roundoff


# ------------------------------------------------------------ second order
@settings(max_examples=20)
@given(case=cases())
def test_hvp_is_symmetric_and_the_derivative_of_the_gradient(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v, u, _ = make_data(xp, model, b, dtype, seed, loss)
    assume_smooth(xp, model, params, x)
    hv = ac.hvp(model, params, (x, y), v, loss)
    hu = ac.hvp(model, params, (x, y), u, loss)
    assert_like(hv[0], x)
    a, c = float(np.sum(np64(u) * np64(hv))), float(np.sum(np64(v) * np64(hu)))
    scale = np.linalg.norm(np64(u)) * np.linalg.norm(np64(hv)) + np.linalg.norm(np64(v)) * np.linalg.norm(np64(hu))
    # rounding is relative to the unit curvature scale of these nets (weights ~0.6, unit
    # inputs), not to <u, Hv> itself, which is tiny when the softmax saturates
    eps = {"float64": 2.2e-16, "float32": 1.2e-7}[dtype]
    unit = 1000 * eps * np.linalg.norm(np64(u)) * np.linalg.norm(np64(v))
    assert abs(a - c) <= {"float64": 1e-10, "float32": 1e-4}[dtype] * scale + unit
    # finite difference of the gradient along v, at the same point in float64
    p64, x64, v64 = to64(xp, params), xp.astype(x, xp.float64), to64(xp, v)
    y64 = xp.astype(y, xp.float64) if loss == MSE else y
    gp = ac.value_and_grad(model, axpy(H, v64, p64), (x64, y64), loss)[1]
    gm = ac.value_and_grad(model, axpy(-H, v64, p64), (x64, y64), loss)[1]
    atol = {"float64": 1e-9, "float32": 1e-5 * float(np.max(np.abs(np64(v))))}[dtype]
    assert_tree_close(hv, tuple((np64(s) - np64(t)).reshape(s.shape) / (2 * H) for s, t in zip(gp, gm)),
                      like=x, rtol=FD64_RTOL[dtype], atol=atol)


@settings(max_examples=10)
@given(case=cases(models=mlp_models(max_depth=3, max_width=4), max_batch=5))
def test_hessian_matrix_equals_hvp_columns(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, *_ = make_data(xp, model, b, dtype, seed, loss)
    hm = ac.hessian_matrix(model, params, (x, y), loss)
    shapes = ac.param_shapes(model)
    p = num_params(shapes)
    eye = np.eye(p)
    cols = [np64(ac.hvp(model, params, (x, y), unflatten(backend.from_numpy(eye[i], xp, dtype=dtype), shapes), loss))
            for i in range(p)]
    assert_close(hm, np.stack(cols, 1), like=x)
    hn = np64(hm).reshape(p, p)
    assert np.max(np.abs(hn - hn.T)) <= {"float64": 1e-12, "float32": 1e-5}[dtype] * max(1.0, np.max(np.abs(hn)))


@settings(max_examples=15)
@given(seed=seeds, n0=st.integers(1, 6), n1=st.integers(1, 5), bias=st.booleans(), b=st.integers(1, 8), dtype=dtypes,
       loss=st.sampled_from([MSE, CE]))
def test_ggn_equals_hessian_for_a_model_linear_in_its_parameters(xp, seed, n0, n1, bias, b, dtype, loss):
    model = mlp((n0, n1), "identity", bias=bias)  # one layer: f = W x + b, linear in (W, b)
    params, x, y, *_ = make_data(xp, model, b, dtype, seed, loss)
    hm = ac.hessian_matrix(model, params, (x, y), loss)
    assert_close(hm, default_ggn_matrix(model, params, (x, y), loss), like=x, atol=1e-12)


@settings(max_examples=15)
@given(case=cases(models=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models()), max_batch=5))
def test_ggn_override_equals_interface_default_and_explicit_jtj(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v, _, _ = make_data(xp, model, b, dtype, seed, loss)
    gv = ac.ggn_vp(model, params, (x, y), v, loss)
    assert_tree_close(gv, default_form(ac.ggn_vp)(model, params, (x, y), v, loss), like=x)
    # explicit (1/B) sum_b J_b^T H_b J_b v in NumPy from the explicit Jacobian and loss Hessian
    jac = np64(ac.jacobian(model, params, x)).reshape(ac.jacobian(model, params, x).shape)
    out = ac.forward(model, params, x)
    hl = np64(ac.losses.loss_hessian(loss, out)).reshape(b, out.shape[1], out.shape[1])
    expected = np.einsum("bkp,bkl,blq,q->p", jac, hl, jac, np64(v)) / b
    # rounding is relative to the sums of |terms| before cancellation: for CE, H_b is the
    # difference diag(p) - p p^T, whose entries cancel to ~eps when the softmax saturates
    if loss == CE:
        pr = np.exp(np64(out) - np.max(np64(out), axis=1, keepdims=True))
        pr /= pr.sum(axis=1, keepdims=True)
        hl_abs = pr[:, :, None] * np.eye(pr.shape[1]) + pr[:, :, None] * pr[:, None, :]
    else:
        hl_abs = np.abs(hl)
    bound = np.einsum("bkp,bkl,blq,q->p", np.abs(jac), hl_abs, np.abs(jac), np.abs(np64(v))) / b
    eps = {"float64": 2.2e-16, "float32": 1.2e-7}[dtype]
    assert_close(flatten(gv), expected, like=x, atol=1000 * eps * float(np.max(bound)))
    # the cached linearization's own product (one check, the trusted passes) too
    assert_close(flatten(linearize(model, params, x).ggn_vp(v, loss)), expected, like=x,
                 atol=1000 * eps * float(np.max(bound)))


@settings(max_examples=10)
@given(case=cases(models=st.one_of(mlp_models(max_depth=3, max_width=4), cnn_models(max_hw=6)), max_batch=4))
def test_ggn_matrix_override_equals_columns_of_the_default_product(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, *_ = make_data(xp, model, b, dtype, seed, loss)
    g = ac.ggn_matrix(model, params, (x, y), loss)
    ref = default_ggn_matrix(model, params, (x, y), loss)
    scale = max(1.0, float(np.max(np.abs(np64(ref)))))
    assert_close(g, np64(ref).reshape(ref.shape), like=x, atol={"float64": 1e-12, "float32": 1e-5}[dtype] * scale)


@settings(max_examples=8, deadline=None)
@given(case=cases(models=norm_models(), max_batch=3))
def test_layer_norm_networks_get_every_curvature_routine(xp, case):
    """A LayerNorm touches only the layer module, yet the explicit Jacobian, the GGN (product,
    matrix, operator), the Hessian (matrix and operator) and the exact Fisher all work: each
    explicit matrix against the generic default products (jvp, vjp, Pearlmutter hvp) along
    random directions. (HVP against finite differences of the gradient, JVP/VJP adjointness
    and the gradient against finite differences run on these networks in the tests above.)"""
    model, b, dtype, seed, loss = case
    params, x, y, v, u, _ = make_data(xp, model, b, dtype, seed, loss)
    vn, un = np64(v), np64(u)
    jac = np64(ac.jacobian(model, params, x)).reshape(b, -1, vn.size)
    assert_close(ac.jvp(model, params, x, v)[1], jac @ vn, like=x)
    gv = default_form(ac.ggn_vp)(model, params, (x, y), v, loss)
    assert_tree_close(ac.ggn_vp(model, params, (x, y), v, loss), gv, like=x)
    g = np64(ac.ggn_matrix(model, params, (x, y), loss)).reshape(vn.size, vn.size)
    f = np64(ac.curvature.fisher_exact_matrix(model, params, x, loss)).reshape(vn.size, vn.size)
    hm = np64(ac.hessian_matrix(model, params, (x, y), loss)).reshape(vn.size, vn.size)
    scale = {"float64": 1e-10, "float32": 1e-4}[dtype]
    for mat, product in ((g, gv), (f, gv), (hm, ac.hvp(model, params, (x, y), v, loss))):
        ref = np64(product)
        np.testing.assert_allclose(mat @ vn, ref, rtol=100 * scale, atol=scale * max(1.0, np.abs(ref).max()))
        assert np.max(np.abs(mat - mat.T)) <= scale * max(1.0, np.abs(mat).max())
    # u^T H v from the explicit Hessian and from a Pearlmutter product along u
    assert abs(un @ hm @ vn - float(np.sum(vn * np64(ac.hvp(model, params, (x, y), u, loss))))) \
        <= 100 * scale * max(1.0, np.abs(hm).max()) * np.linalg.norm(un) * np.linalg.norm(vn)
    # the SciPy operators (NumPy only: SciPy speaks NumPy)
    if backend.namespace_name(x) == "numpy":
        np.testing.assert_allclose(ac.curvature.hessian_operator(model, params, (x, y), loss) @ vn, hm @ vn,
                                   rtol=100 * scale, atol=scale * max(1.0, np.abs(hm @ vn).max()))
        np.testing.assert_allclose(ac.curvature.ggn_operator(model, params, (x, y), loss) @ vn, g @ vn,
                                   rtol=100 * scale, atol=scale * max(1.0, np.abs(g @ vn).max()))


def test_layer_init_kron_rows_and_cost_of_the_layers():
    np_ns = backend.namespace_by_name("numpy")
    model = Sequential((Conv2d(1, 2, 3), LayerNorm((2, 3, 3)), Activation("softplus"), Flatten(), Dense(18, 2)),
                       (1, 5, 5))
    params = ac.init_params(model, 0, np_ns)
    gamma, beta = params[2], params[3]
    assert np.all(gamma == 1.0) and np.all(beta == 0.0)  # not the "1-D means a zero bias" rule
    assert np.all(params[1] == 0.0) and np.all(params[5] == 0.0) and np.std(params[4]) > 0
    lin = linearize(model, params, backend.normal(1, (2, 1, 5, 5), np_ns))
    rows = [ac.models.layers.layer_kron_rows(layer, (), c) if not ac.models.layers.layer_param_shapes(layer)
            else None for layer, c in zip(model.layers, lin.caches)]
    assert all(r is None for r in rows)  # parameter-free layers report no Kronecker rows
    conv_a, _ = ac.models.layers.layer_kron_rows(model.layers[0], params[:2], lin.caches[0])
    assert conv_a.shape == (2, 9, 10)  # (B, T = 3 x 3 output pixels, C kh kw + 1)
    assert ac.models.layers.layer_kron_rows(model.layers[1], params[2:4], lin.caches[1]) is None
    assert ac.models.layers.layer_cost(model.layers[0], (1, 5, 5)) == 25 * 10
    assert ac.models.layers.layer_cost(model.layers[1], (2, 3, 3)) == 36


# ----------------------------------------------------- linearization API
@settings(max_examples=15)
@given(case=cases(models=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models()), max_batch=5))
def test_linearized_products_with_leading_axes(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, v, u, g = make_data(xp, model, b, dtype, seed, loss)
    lin = linearize(model, params, x)
    k = lin.outputs.shape[1]
    vs = tuple(xp.stack([a, c]) for a, c in zip(v, u))  # (2, *shape)
    jvs = jvp_linearized(lin, vs)
    assert_close(jvs[0, ...], ac.jvp(model, params, x, v)[1], like=x)
    assert_close(jvs[1, ...], ac.jvp(model, params, x, u)[1], like=x)
    cot = backend.normal(g, (3, b, k), xp, dtype=dtype)
    res = vjp_linearized(lin, cot)
    per = vjp_linearized(lin, cot, per_sample=True)
    jac = np64(ac.jacobian(model, params, x)).reshape(b, k, -1)
    cn = np64(cot).reshape(3, b, k)
    for i in range(3):
        assert_close(flatten(tuple(t[i, ...] for t in res)), flatten(ac.vjp(model, params, x, cot[i, ...])), like=x)
        for n in range(b):  # per-sample J_b^T u_b from the explicit Jacobian
            got = np.concatenate([np64(t[i, n, ...]).ravel() for t in per])
            assert_close(got, jac[n].T @ cn[i, n], rtol={"float64": 1e-9, "float32": 2e-4}[dtype],
                         atol={"float64": 1e-12, "float32": 1e-5}[dtype])
    hv = ac.hvp(model, params, (x, y), vs, loss)
    assert_tree_close(tuple(t[1, ...] for t in hv), ac.hvp(model, params, (x, y), u, loss), like=x)
    assert_tree_close(hvp_linearized(lin, y, v, loss), tuple(t[0, ...] for t in hv), like=x)
    gvs = ac.ggn_vp(model, params, (x, y), vs, loss)
    assert_tree_close(tuple(t[0, ...] for t in gvs), ac.ggn_vp(model, params, (x, y), v, loss), like=x)


@settings(max_examples=15)
@given(case=cases(models=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models()), max_batch=5))
def test_backprop_to_layer_outputs_and_layer_inputs(xp, case):
    model, b, dtype, seed, _ = case
    params, x, _, _, _, g = make_data(xp, model, b, dtype, seed)
    assume_smooth(xp, model, params, x)
    lin = linearize(model, params, x)
    k = lin.outputs.shape[1]
    cot = backend.normal(g, (2, b, k), xp, dtype=dtype)
    outs = backprop_to_layer_outputs(lin, cot)
    ins = layer_inputs(lin)
    assert len(outs) == len(ins) == len(model.layers)
    assert_close(outs[-1], cot, like=x)
    assert_close(ins[0], x, like=x)
    grads = vjp_linearized(lin, cot)
    ps = ac.models.sequential._split(model, params)
    for layer_idx, ((start, _), layer) in enumerate(zip(layer_param_indices(model), model.layers)):
        # the input of layer l+1 is the output of layer l
        if layer_idx + 1 < len(model.layers):
            assert tuple(outs[layer_idx].shape) == (2, *ins[layer_idx + 1].shape)
        if isinstance(layer, Dense):  # K-FAC identity: dW = sum_b g_b a_b^T, db = sum_b g_b
            gl, al = np64(outs[layer_idx]), np64(ins[layer_idx])
            assert_close(grads[start], np.einsum("mbo,bi->moi", gl, al), like=x)
    # directional finite difference of <cot, f> w.r.t. each layer's output (float64)
    x64, p64 = xp.astype(x, xp.float64), to64(xp, params)
    lin64 = linearize(model, p64, x64)
    cot64 = np64(cot)
    for li in range(len(model.layers)):
        a = lin64.inputs[li + 1] if li + 1 < len(model.layers) else lin64.outputs
        d = backend.normal(g, tuple(a.shape), xp)

        def rest(t, a=a, d=d, li=li):
            z = a + t * d
            for layer, p in zip(model.layers[li + 1 :], ps[li + 1 :]):
                z, _ = ac.models.layers.layer_forward(layer, tuple(xp.astype(q, xp.float64) for q in p), z)
            return np64(z)

        fd = np.einsum("mbk,bk->m", cot64, (rest(H) - rest(-H)) / (2 * H))
        got = np64(outs[li]).reshape(2, -1) @ np64(d).ravel()
        assert_close(got, fd, rtol=FD64_RTOL[dtype], atol=1e-9)


# ----------------------------------------------------- init and builders
def test_init_params_reproducible_across_namespaces_and_dtypes(xp):
    model = lenet5((1, 8, 8))
    a = ac.init_params(model, 3, xp, dtype="float32")
    ref = ac.init_params(model, 3)
    assert len(a) == len(ac.param_shapes(model))
    for t, r, s in zip(a, ref, ac.param_shapes(model)):
        assert t.dtype == xp.float32 and tuple(t.shape) == s
        np.testing.assert_array_equal(backend.to_numpy(t), np.asarray(r, dtype=np.float32))


def test_init_params_gaussian_variance_and_zero_bias():
    gain = 1.7
    model = mlp((400, 300, 50))
    w1, b1, w2, b2 = ac.init_params(model, 0, gain=gain)
    # sample variance of 120000 N(0, gain^2/400) draws: relative std sqrt(2/120000) = 0.4%; tolerance 2%
    assert abs(np.var(w1) / (gain**2 / 400) - 1) < 0.02
    assert abs(np.var(w2) / (gain**2 / 300) - 1) < 0.05  # 15000 draws: relative std 1.2%
    assert np.all(b1 == 0) and np.all(b2 == 0)
    conv = Sequential((Conv2d(3, 64, 5), Flatten()), (3, 8, 8))
    (k, b) = ac.init_params(conv, 1, gain=gain)
    assert abs(np.var(k) / (gain**2 / 75) - 1) < 0.05 and np.all(b == 0)  # 4800 draws: 2%


def test_init_params_orthogonal(xp):
    gain = 0.5
    model = Sequential((Conv2d(2, 4, 3), Flatten(), Dense(64, 7), Activation("relu"), Dense(7, 3)), (2, 6, 6))
    k, _, w1, _, w2, _ = (backend.to_numpy(t) for t in ac.init_params(model, 0, xp, method="orthogonal", gain=gain))
    k2 = k.reshape(4, 18)
    np.testing.assert_allclose(k2 @ k2.T, gain**2 * np.eye(4), atol=1e-12)  # orthonormal rows of the reshape
    np.testing.assert_allclose(w1 @ w1.T, gain**2 * np.eye(7), atol=1e-12)
    np.testing.assert_allclose(w2 @ w2.T, gain**2 * np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        ac.init_params(model, 0, xp, method="xavier")


@pytest.mark.parametrize(
    ("shape", "pool", "features"),
    [((1, 32, 32), "avg", 16 * 5 * 5), ((1, 28, 28), "max", 16 * 5 * 5), ((1, 8, 8), "avg", 16 * 2 * 2),
     ((3, 16, 16), "max", 16 * 4 * 4)],
)
def test_lenet5_shapes_and_parameter_count(xp, shape, pool, features):
    model = lenet5(shape, num_classes=10, pool=pool)
    c = shape[0]
    expected = (6 * c * 25 + 6) + (16 * 6 * 25 + 16) + (features * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert num_params(ac.param_shapes(model)) == expected
    if shape == (1, 32, 32):
        assert expected == 61706  # the classic LeNet-5 count (LeCun et al. 1998, with a 10-way linear output)
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (3, *shape), xp)
    out = ac.forward(model, params, x)
    assert tuple(out.shape) == (3, 10)
    assert_like(out, x)


def test_lenet5_on_8x8_digits_hvp_and_ggn(xp):
    # LeNet-5 on 8x8 digit-sized inputs (P = 21386): exact HVP against the finite
    # difference of gradients, GGN product against the interface default
    model = lenet5((1, 8, 8))
    shapes = ac.param_shapes(model)
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (4, 1, 8, 8), xp)
    y = backend.integers(2, 0, 10, (4,), xp)
    v = unflatten(backend.normal(3, (num_params(shapes),), xp), shapes)
    hv = ac.hvp(model, params, (x, y), v, CE)
    gp = ac.value_and_grad(model, axpy(H, v, params), (x, y), CE)[1]
    gm = ac.value_and_grad(model, axpy(-H, v, params), (x, y), CE)[1]
    assert_tree_close(hv, tuple((a - c) / (2 * H) for a, c in zip(gp, gm)), like=x, rtol=1e-6)
    gv = ac.ggn_vp(model, params, (x, y), v, CE)
    assert_tree_close(gv, default_form(ac.ggn_vp)(model, params, (x, y), v, CE), like=x)


# ------------------------------------------------------------------ errors
def test_bad_inputs_raise_named_errors(xp):
    model = mlp((3, 4, 2))
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (5, 3), xp)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 3\) for the input of layers\[0\] = Dense"):
        ac.forward(model, params, backend.normal(1, (5, 4), xp))
    with pytest.raises(ValueError, match=r"params\[2\]: expected shape \(2, 4\)"):
        ac.forward(model, (params[0], params[1], params[0], params[3]), x)
    with pytest.raises(ValueError, match=r"params: expected 4 arrays"):
        ac.forward(model, params[:3], x)
    with pytest.raises(TypeError, match=r"x: expected dtype \S*float64 \(like params\)"):
        ac.forward(model, params, xp.astype(x, xp.float32))
    y = backend.integers(2, 0, 2, (5,), xp)
    v = params
    with pytest.raises(ValueError, match=r"batch y: expected labels in \[0, 2\)"):
        ac.hvp(model, params, (x, y + 1), v, CE)
    with pytest.raises(ValueError, match="batch: expected x and y with the same batch size"):
        ac.hvp(model, params, (x, y[:4]), v, CE)
    with pytest.raises(ValueError, match=r"v\[1\]: expected shape \(\.\.\., 4\)"):
        ac.hvp(model, params, (x, y), (params[0], params[0], params[2], params[3]), CE)
    lin = linearize(model, params, x)
    with pytest.raises(ValueError, match=r"cotangent: expected shape \(5, 2\)"):
        vjp_linearized(lin, backend.normal(1, (5, 3), xp))
    with pytest.raises(TypeError, match=r"tangent\[0\]: expected dtype"):
        jvp_linearized(lin, (xp.astype(params[0], xp.float32),) + params[1:])
    with pytest.raises(TypeError, match=r"cotangent: expected dtype"):
        vjp_linearized(lin, backend.normal(1, (5, 2), xp, dtype="float32"))
    with pytest.raises(ValueError, match=r"tangent\[1\]: expected leading axes"):
        jvp_linearized(lin, (xp.stack([params[0]] * 2), params[1], params[2], params[3]))


def test_bad_architectures_raise_named_errors():
    with pytest.raises(ValueError, match=r"^layers\[0\]: expected at most the padded input size .*\(kernel_size"):
        Sequential((Conv2d(1, 2, 5, padding=1), Flatten()), (1, 2, 8))
    with pytest.raises(ValueError, match=r"^layers\[1\]: expected .*\(kernel_size of layers\[1\]"):
        Sequential((Conv2d(1, 2, 3), MaxPool2d(4), Flatten()), (1, 4, 4))
    with pytest.raises(ValueError, match=r"layers: expected the last layer to output a vector"):
        Sequential((Conv2d(1, 2, 3),), (1, 4, 4))
    with pytest.raises(ValueError, match=r"^layers\[0\]: expected \(4,\) .*\(input_shape of layers\[0\]"):
        Sequential((Dense(4, 2),), (3,))
    with pytest.raises(ValueError, match="input_shape: expected a tuple of positive ints"):
        Sequential((Dense(4, 2),), (0,))
    with pytest.raises(ValueError, match="sizes"):
        mlp((3,))
    with pytest.raises(ValueError, match=r"^activation: expected one of \(.identity.*got .swish."):
        mlp((3, 2, 1), activation="swish")
    with pytest.raises(ValueError, match="pool"):
        lenet5(pool="median")
    assert math.prod(lenet5((1, 8, 8)).input_shape) == 64


def test_repeated_linearized_hvps_reuse_the_gradient_pass_and_see_new_targets(xp):
    """A linearization keeps the gradient's backward pass (v-independent) for repeated
    HVPs: the products equal the public hvp, for other targets and losses too, including
    targets changed in place between calls (compared by value; NumPy)."""
    model = mlp((4, 5, 3), "tanh")
    params = ac.init_params(model, 0, xp)
    x, y = backend.normal(1, (6, 4), xp), backend.normal(2, (6, 3), xp)
    v, w = ac.init_params(model, 3, xp), ac.init_params(model, 4, xp)
    lin = linearize(model, params, x)
    for t in (v, w, v):
        assert_tree_close(lin.hvp(y, t), ac.hvp(model, params, (x, y), t), like=x)
    y3 = y + 1.0  # other target values
    assert_tree_close(lin.hvp(y3, v), ac.hvp(model, params, (x, y3), v), like=x)
    assert_tree_close(lin.hvp(y, v), ac.hvp(model, params, (x, y), v), like=x)
    if not isinstance(x, np.ndarray) or not x.flags.writeable:
        return
    y2 = np.array(y, copy=True)
    lin.hvp(y2, v)
    y2[0, 0] += 3.0  # in place: the kept pass must not be reused
    assert_tree_close(lin.hvp(y2, v), ac.hvp(model, params, (x, y2.copy()), v), like=x)
    labels = np.array([0, 2, 1, 1, 0, 2])
    assert_tree_close(lin.hvp(labels, v, CE), ac.hvp(model, params, (x, labels), v, CE), like=x)
    assert_tree_close(hvp_linearized(lin, y, w), ac.hvp(model, params, (x, y), w), like=x)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_linearization_products_reject_non_finite_arguments(xp, bad):
    """The products of a (cached) linearization check their own arguments: a NaN/Inf in
    the tangent, the cotangent or the targets raises, naming it (issue 9)."""
    from arraycurv.models import sequential as seq

    model = mlp((3, 4, 2))
    params = ac.init_params(model, 0, xp)
    v = ac.init_params(model, 1, xp)
    x = backend.normal(2, (5, 3), xp)
    y = backend.normal(3, (5, 2), xp)
    lin = linearize(model, params, x)
    poisoned = (v[0],) + (v[1] + bad,) + tuple(v[2:])
    u = backend.normal(4, (5, 2), xp)
    calls = {
        r"^tangent\[1\]": lambda: lin.jvp(poisoned),
        r"^v\[1\]": lambda: lin.hvp(y, poisoned),
        r"^cotangent": lambda: lin.vjp(u + bad),
        r"^y": lambda: lin.hvp(y + bad, v),
        r"^v\[1\]:": lambda: lin.ggn_vp(poisoned),
        r"^y:": lambda: lin.value_and_grad(y + bad),
        r"^cotangent:": lambda: seq.backprop_to_layer_outputs(lin, u + bad),
    }
    for match, call in calls.items():
        with pytest.raises(ValueError, match=match + r".*expected finite values"):
            call()
    # the same calls with finite arguments agree with the public verbs
    assert_tree_close(lin.hvp(y, v), ac.hvp(model, params, (x, y), v), like=x)
