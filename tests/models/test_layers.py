"""Layers: forward passes against direct NumPy loops / closed forms, and every layer's
JVP, VJP and R-operator pass against central finite differences (computed in float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from arraycurv import backend
from arraycurv.models import layers as L
from arraycurv.models.layers import Activation, AvgPool2d, Conv2d, Dense, Flatten, LayerNorm, MaxPool2d, layer_forward
from tests.helpers import assert_close, assert_like, assert_tree_close, dtypes, seeds
from tests.references.layers import act_ref, conv_ref, near_kink, pool_ref

#: Tolerance of a float32/float64 result against a float64 central difference (h = 1e-5).
FD64_RTOL = {"float64": 1e-6, "float32": 5e-4}
H = 1e-5


# ---------------------------------------------------------------- helpers
def rand(seed, shape, xp, dtype, scale=1.0):
    return backend.normal(seed, shape, xp, dtype=dtype, scale=scale)


def f64(xp, a):
    """The same values in float64 (the point at which the float64 reference is taken)."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(f64(xp, t) for t in a)
    return xp.astype(a, xp.float64)


def axpy(t, d, a):
    """a + t d for arrays or tuples (d None -> a)."""
    if d is None:
        return a
    if isinstance(a, tuple):
        return tuple(ai + t * di for ai, di in zip(a, d))
    return a + t * d


def np64(a):
    if isinstance(a, tuple):
        return tuple(np64(t) for t in a)
    return backend.to_numpy(a).astype(np.float64)


def vdot(a, b):
    if isinstance(a, tuple):
        return sum(vdot(x, y) for x, y in zip(a, b))
    return float(np.sum(np64(a) * np64(b)))


# ---------------------------------------------------------------- strategies
@st.composite
def layer_cases(draw, kinds=("dense", "activation", "conv", "avgpool", "maxpool", "flatten", "layernorm")):
    kind = draw(st.sampled_from(kinds))
    if kind == "dense":
        n_in, n_out = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        layer, in_shape = Dense(n_in, n_out, bias=draw(st.booleans())), (n_in,)
    elif kind == "activation":
        layer = Activation(draw(st.sampled_from(L.ACTIVATIONS)))
        in_shape = draw(st.sampled_from([(5,), (2, 3, 3)]))
    elif kind == "conv":
        c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        h, w = draw(st.integers(6, 10)), draw(st.integers(6, 10))
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        layer = Conv2d(c, o, (kh, kw), stride=stride, padding=padding, bias=draw(st.booleans()))
        in_shape = (c, h, w)
    elif kind in ("avgpool", "maxpool"):
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 10)), draw(st.integers(3, 10))
        k = draw(st.integers(1, 3))
        stride = draw(st.sampled_from([None, 1, 2, 3]))
        layer = (AvgPool2d if kind == "avgpool" else MaxPool2d)(k, stride)
        in_shape = (c, h, w)
    elif kind == "layernorm":
        # at least 3 features: with 1 or 2 the normalized output is (nearly) constant and its
        # derivative a float32 cancellation of O(eps / var)
        in_shape = draw(st.sampled_from([(draw(st.integers(3, 7)),), (2, 3, 3), (1, 3)]))
        layer = LayerNorm(in_shape if len(in_shape) > 1 else in_shape[0], eps=draw(st.sampled_from([1e-5, 0.1])))
    else:
        layer, in_shape = Flatten(), (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return layer, in_shape, draw(st.integers(1, 4)), draw(dtypes), draw(seeds)


def make_case(xp, layer, in_shape, b, dtype, seed, lead=()):
    g = np.random.default_rng(seed)
    p = tuple(rand(g, s, xp, dtype, 0.7) for s in L.layer_param_shapes(layer))
    x = rand(g, (b, *in_shape), xp, dtype)
    out = (b, *L.layer_output_shape(layer, in_shape))
    dp = tuple(rand(g, lead + s, xp, dtype) for s in L.layer_param_shapes(layer)) if p else None
    dx = rand(g, lead + (b, *in_shape), xp, dtype)
    dy = rand(g, out, xp, dtype)
    rdy = rand(g, lead + out, xp, dtype)
    return p, x, dp, dx, dy, rdy


# ---------------------------------------------------------------- forward passes
@given(seed=seeds, b=st.integers(1, 5), n_in=st.integers(1, 8), n_out=st.integers(1, 8), bias=st.booleans(),
       dtype=dtypes)
def test_dense_forward_matches_numpy(xp, seed, b, n_in, n_out, bias, dtype):
    layer = Dense(n_in, n_out, bias=bias)
    p, x, *_ = make_case(xp, layer, (n_in,), b, dtype, seed)
    y, _ = layer_forward(layer, p, x)
    w = np64(p[0])
    expected = np64(x) @ w.T + (np64(p[1]) if bias else 0.0)
    assert_close(y, expected, like=x)


@given(seed=seeds, name=st.sampled_from(L.ACTIVATIONS), dtype=dtypes)
def test_activation_values_and_derivatives(xp, seed, name, dtype):
    xn = 3.0 * np.random.default_rng(seed).standard_normal((4, 6))
    xn = np.where(np.abs(xn) < 0.05, 0.5, xn)  # keep the finite differences off relu/elu kinks
    x = backend.from_numpy(xn, xp, dtype=dtype)
    xn = np64(x)
    y, d1, d2 = L.activation_derivatives(name, x)
    assert_close(y, act_ref(name, xn), like=x)
    # derivatives against central differences of the NumPy closed forms (float64)
    assert_close(d1, (act_ref(name, xn + H) - act_ref(name, xn - H)) / (2 * H), like=x, rtol=FD64_RTOL[dtype])
    fd1 = lambda z: (act_ref(name, z + H) - act_ref(name, z - H)) / (2 * H)  # noqa: E731
    fd2 = (fd1(xn + 1e-3) - fd1(xn - 1e-3)) / 2e-3  # truncation ~1e-6 |phi^(4)|, roundoff ~1e-8
    assert_close(d2, fd2, like=x, rtol=1e-5 if dtype == "float64" else 5e-4, atol=1e-6)
    big = backend.from_numpy(np.array([[-800.0, 800.0]]), xp, dtype=dtype)
    for a in L.activation_derivatives(name, big):
        assert bool(xp.all(xp.isfinite(a)))


@settings(max_examples=15)
@given(data=st.data(), dtype=dtypes, seed=seeds)
def test_conv2d_forward_matches_loop(xp, data, dtype, seed):
    layer, in_shape, b, _, _ = data.draw(layer_cases(kinds=("conv",)))
    p, x, *_ = make_case(xp, layer, in_shape, b, dtype, seed)
    y, _ = layer_forward(layer, p, x)
    expected = conv_ref(np64(x), np64(p[0]), np64(p[1]) if layer.bias else None, layer.stride, layer.padding)
    assert_close(y, expected, like=x)
    assert tuple(y.shape[1:]) == L.layer_output_shape(layer, in_shape)


@settings(max_examples=15)
@given(data=st.data(), dtype=dtypes, seed=seeds)
def test_pooling_forward_matches_loop(xp, data, dtype, seed):
    layer, in_shape, b, _, _ = data.draw(layer_cases(kinds=("avgpool", "maxpool")))
    _, x, *_ = make_case(xp, layer, in_shape, b, dtype, seed)
    y, _ = layer_forward(layer, (), x)
    op = np.mean if isinstance(layer, AvgPool2d) else np.max
    assert_close(y, pool_ref(np64(x), layer.kernel_size, layer.stride, op), like=x)


def test_flatten_is_c_order(xp):
    x = rand(0, (2, 3, 2, 2), xp, "float64")
    y, _ = layer_forward(Flatten(), (), x)
    assert_close(y, np64(x).reshape(2, 12), like=x)


def test_maxpool_ties_route_to_first_maximum(xp):
    # all four entries of the window tie: the cotangent goes to the first (row-major)
    x = xp.zeros((1, 1, 2, 4), dtype=xp.float64)
    layer = MaxPool2d(2)
    _, cache = layer_forward(layer, (), x)
    dy = backend.from_numpy(np.array([[[[3.0, 5.0]]]]), xp)
    dx, _ = L.layer_vjp(layer, (), cache, dy)
    expected = np.array([[[[3.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    assert_close(dx, expected, like=x)


# ------------------------------------------------------- derivative passes vs FD
@settings(max_examples=40)
@given(case=layer_cases())
def test_layer_jvp_vjp_rop_against_finite_differences(xp, case):
    layer, in_shape, b, dtype, seed = case
    p, x, dp, dx, dy, rdy = make_case(xp, layer, in_shape, b, dtype, seed)
    assume(not near_kink(layer, np64(x)))
    rtol = FD64_RTOL[dtype]
    y, cache = layer_forward(layer, p, x)
    p64, x64, dp64, dx64, dy64, rdy64 = (f64(xp, a) for a in (p, x, dp, dx, dy, rdy))

    def fwd(t):
        return np64(layer_forward(layer, axpy(t, dp64, p64), axpy(t, dx64, x64))[0])

    # JVP: d/dt f(p + t dp, x + t dx)
    jv_fd = (fwd(H) - fwd(-H)) / (2 * H)
    jv = L.layer_jvp(layer, p, cache, dp, dx)
    assert_close(jv, jv_fd, like=x, rtol=rtol)

    # VJP: <J^T dy, (dp, dx)> = d/dt <dy, f(p + t dp, x + t dx)>
    gx, gp = L.layer_vjp(layer, p, cache, dy)
    assert_like(gx, x, name="dx")
    assert tuple(gx.shape) == tuple(x.shape)
    lhs = vdot(gx, dx) + (vdot(gp, dp) if dp is not None else 0.0)
    rhs = float(np.sum(np64(dy) * jv_fd))
    scale = np.linalg.norm(np64(dy)) * np.linalg.norm(jv_fd) + np.linalg.norm(np64(gx)) * np.linalg.norm(np64(dx))
    assert abs(lhs - rhs) <= rtol * scale + 1e-300

    # R-op: d/dt vjp(p + t dp, x + t dx; dy + t rdy)
    def back(t):
        _, c = layer_forward(layer, axpy(t, dp64, p64), axpy(t, dx64, x64))
        gx_t, gp_t = L.layer_vjp(layer, axpy(t, dp64, p64), c, dy64 + t * rdy64)
        return np64(gx_t), np64(gp_t)

    (gxp, gpp), (gxm, gpm) = back(H), back(-H)
    rgx, rgp = L.layer_rop_vjp(layer, p, cache, dp, dx, dy, rdy)
    assert_close(rgx, (gxp - gxm) / (2 * H), like=x, rtol=rtol)
    assert_tree_close(rgp, tuple((a - c) / (2 * H) for a, c in zip(gpp, gpm)), like=x, rtol=rtol)
    assert len(rgp) == len(p)


@settings(max_examples=30)
@given(case=layer_cases())
def test_vjp_is_the_adjoint_of_the_jvp(xp, case):
    """<dy, J (dp, dx)> = <J^T dy, (dp, dx)> to rounding, with no finite difference (every
    layer, including LayerNorm and the softplus / gelu activations)."""
    layer, in_shape, b, dtype, seed = case
    p, x, dp, dx, dy, _ = make_case(xp, layer, in_shape, b, dtype, seed)
    _, cache = layer_forward(layer, p, x)
    jv = L.layer_jvp(layer, p, cache, dp, dx)
    gx, gp = L.layer_vjp(layer, p, cache, dy)
    lhs = vdot(dy, jv)
    rhs = vdot(gx, dx) + (vdot(gp, dp) if dp is not None else 0.0)
    eps = {"float64": 2.2e-16, "float32": 1.2e-7}[dtype]
    scale = np.linalg.norm(np64(dy)) * np.linalg.norm(np64(jv)) + np.linalg.norm(np64(gx)) * np.linalg.norm(np64(dx))
    if dp is not None:
        scale += sum(np.linalg.norm(np64(a)) * np.linalg.norm(np64(c)) for a, c in zip(gp, dp))
    assert abs(lhs - rhs) <= 1e3 * eps * (scale + 1e-30)


@settings(max_examples=20)
@given(case=layer_cases())
def test_leading_axes_equal_separate_passes(xp, case):
    layer, in_shape, b, dtype, seed = case
    m = 2
    p, x, dp, dx, dy, rdy = make_case(xp, layer, in_shape, b, dtype, seed, lead=(m,))
    _, cache = layer_forward(layer, p, x)
    jv = L.layer_jvp(layer, p, cache, dp, dx)
    dys = rdy  # an (m, B, ...) cotangent
    gx, gp = L.layer_vjp(layer, p, cache, dys)
    rgx, rgp = L.layer_rop_vjp(layer, p, cache, dp, dx, dy, rdy)
    for i in range(m):
        dpi = None if dp is None else tuple(t[i, ...] for t in dp)
        assert_close(jv[i, ...], L.layer_jvp(layer, p, cache, dpi, dx[i, ...]), like=x)
        gxi, gpi = L.layer_vjp(layer, p, cache, dys[i, ...])
        assert_close(gx[i, ...], gxi, like=x)
        assert_tree_close(tuple(t[i, ...] for t in gp), gpi, like=x)
        rgxi, rgpi = L.layer_rop_vjp(layer, p, cache, dpi, dx[i, ...], dy, rdy[i, ...])
        assert_close(rgx[i, ...], rgxi, like=x)
        assert_tree_close(tuple(t[i, ...] for t in rgp), rgpi, like=x)


@settings(max_examples=15)
@given(case=layer_cases(kinds=("dense", "conv")))
def test_per_sample_param_cotangents_equal_single_sample_passes(xp, case):
    layer, in_shape, b, dtype, seed = case
    p, x, _, _, dy, _ = make_case(xp, layer, in_shape, b, dtype, seed)
    _, cache = layer_forward(layer, p, x)
    _, per = L.layer_vjp(layer, p, cache, dy, params_mode="per_sample")
    for n in range(b):
        _, c1 = layer_forward(layer, p, x[n : n + 1, ...])
        _, g1 = L.layer_vjp(layer, p, c1, dy[n : n + 1, ...])
        assert_tree_close(tuple(t[n, ...] for t in per), g1, like=x)
    dx_only, none = L.layer_vjp(layer, p, cache, dy, params_mode="none")
    assert none is None and dx_only.shape == x.shape


# ------------------------------------------------------------------------ errors
def test_conv_kernel_larger_than_padded_image_is_an_error(xp):
    layer = Conv2d(1, 2, 5, padding=1)
    with pytest.raises(ValueError, match=r"kernel_size: expected at most the padded input size \(4, 6\)"):
        L.layer_output_shape(layer, (1, 2, 4))
    x = xp.zeros((2, 1, 2, 4), dtype=xp.float64)
    p = tuple(xp.zeros(s, dtype=xp.float64) for s in L.layer_param_shapes(layer))
    with pytest.raises(ValueError, match="kernel_size"):
        layer_forward(layer, p, x)
    with pytest.raises(ValueError, match="kernel_size"):
        layer_forward(MaxPool2d(3), (), x)


def test_wrong_input_shape_names_x_and_the_layer(xp):
    z = lambda s: xp.zeros(s, dtype=xp.float64)  # noqa: E731
    layer = Dense(4, 3)
    p = tuple(xp.zeros(s, dtype=xp.float64) for s in L.layer_param_shapes(layer))
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 4\) for the input of Dense\(n_in=4"):
        layer_forward(layer, p, xp.zeros((2, 5), dtype=xp.float64))
    with pytest.raises(ValueError, match=r"x: .*Conv2d"):
        layer_forward(Conv2d(2, 1, 3), (z((1, 2, 3, 3)), z((1,))), z((2, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"x: .*AvgPool2d"):
        layer_forward(AvgPool2d(2), (), z((2, 5, 5)))


def test_params_not_matching_the_layer_name_the_tensor(xp):
    layer = Dense(4, 3)
    x = xp.zeros((2, 4), dtype=xp.float64)
    z = lambda s: xp.zeros(s, dtype=xp.float64)  # noqa: E731
    with pytest.raises(ValueError, match=r"params\[1\]: expected shape \(3,\)"):
        layer_forward(layer, (z((3, 4)), z((4,))), x)
    with pytest.raises(ValueError, match=r"params: expected 2 arrays"):
        layer_forward(layer, (z((3, 4)),), x)
    _, cache = layer_forward(layer, (z((3, 4)), z((3,))), x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(\.\.\., 2, 3\)"):
        L.layer_vjp(layer, (z((3, 4)), z((3,))), cache, z((2, 4)))


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="name: expected an activation"):
        Activation("swish")
    with pytest.raises(ValueError, match="shape: expected an integer >= 1"):
        LayerNorm(0)
    with pytest.raises(ValueError, match="eps: expected a finite real number > 0"):
        LayerNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="stride"):
        Conv2d(1, 1, 3, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="n_in"):
        Dense(0, 3)
    with pytest.raises(ValueError, match="params_mode"):
        x = np.zeros((1, 2))
        L.layer_vjp(Dense(2, 2), (np.zeros((2, 2)), np.zeros(2)), x, x, params_mode="mean")
    with pytest.raises(TypeError, match="layer: layer_forward is not implemented"):
        layer_forward(object(), (), np.zeros((1, 2)))


@pytest.mark.parametrize("stride,padding,lead", [((1, 1), (0, 0), ()), ((2, 1), (1, 2), ()), ((1, 1), (1, 1), (3,))])
def test_conv2d_batch_inner_gather_matches_the_loop(xp, monkeypatch, stride, padding, lead):
    """Conv2d's wide-layer path (NumPy: the forward gather stored batch-inner, the forward
    and the kernel tangent as one GEMM over the batch, out-major results) against the
    direct loop, the kernel tangent against the exact linearity in the kernel, and the
    backward pass against the per-sample layout; on other backends the generic path runs."""
    monkeypatch.setattr(L, "_BATCH_INNER_MIN_PIXELS", 1)
    layer = Conv2d(2, 3, (3, 2), stride=stride, padding=padding)
    g = np.random.default_rng(5)
    x, k, bias = g.standard_normal((4, 2, 7, 6)), g.standard_normal((3, 2, 3, 2)), g.standard_normal(3)
    dk, db = g.standard_normal(lead + (3, 2, 3, 2)), g.standard_normal(lead + (3,))
    p = (backend.from_numpy(k, xp), backend.from_numpy(bias, xp))
    y, cache = layer_forward(layer, p, backend.from_numpy(x, xp))
    assert (cache.cols_mat is not None) == (backend.namespace_name(xp) == "numpy")
    assert_close(y, conv_ref(x, k, bias, stride, padding), like=y, rtol=1e-12)
    t = L.layer_jvp(layer, p, cache, (backend.from_numpy(dk, xp), backend.from_numpy(db, xp)), None)
    for i in np.ndindex(*lead):
        # the convolution is linear in (K, b): its tangent is the convolution with (dK, db)
        assert_close(t[(*i, ...)], conv_ref(x, dk[i], db[i], stride, padding), like=y, rtol=1e-12)
    dy = backend.from_numpy(g.standard_normal(tuple(y.shape)), xp)
    monkeypatch.setattr(L, "_BATCH_INNER_MIN_PIXELS", 10**9)
    y2, cache2 = layer_forward(layer, p, backend.from_numpy(x, xp))
    assert cache2.cols_mat is None
    gx, gp = L.layer_vjp(layer, p, cache, dy)
    gx2, gp2 = L.layer_vjp(layer, p, cache2, dy)
    assert_close(gx, gx2, like=y, rtol=1e-12)
    assert_tree_close(gp, gp2, like=y)


@pytest.mark.parametrize("name", L.ACTIVATIONS)
def test_prepared_rop_equals_the_plain_one(xp, name):
    """layer_rop_vjp with the dy-only part from layer_rop_prepare (dy phi''(x), None for
    piecewise-linear activations) equals the product that computes it itself, and that
    part equals dy * phi''(x) from activation_derivatives."""
    layer = Activation(name)
    g = np.random.default_rng(3)
    x, dx, dy, rdy = (backend.from_numpy(g.standard_normal((5, 4)), xp) for _ in range(4))
    _, cache = layer_forward(layer, (), x)
    prep = L.layer_rop_prepare(layer, (), cache, dy)
    plain = L.layer_rop_vjp(layer, (), cache, None, dx, dy, rdy)[0]
    if name in ("identity", "relu"):
        assert prep is None
        return
    d2 = L.activation_derivatives(name, x)[2]
    assert_close(prep, dy * d2, like=x, rtol=1e-13)
    assert_close(L.layer_rop_vjp(layer, (), cache, None, dx, dy, rdy, prepared=prep)[0], plain, like=x,
                 rtol=1e-13)
    with pytest.raises(ValueError, match=r"dy: expected shape \(\.\.\., 5, 4\)"):
        L.layer_rop_prepare(layer, (), cache, backend.from_numpy(np.ones((5, 1)), xp))  # no silent broadcast


def test_layers_without_a_prepared_rop_keep_none(xp):
    layer = Dense(3, 2)
    p = tuple(backend.from_numpy(np.ones(s), xp) for s in L.layer_param_shapes(layer))
    _, cache = layer_forward(layer, p, backend.from_numpy(np.ones((4, 3)), xp))
    assert L.layer_rop_prepare(layer, p, cache, backend.from_numpy(np.ones((4, 2)), xp)) is None
