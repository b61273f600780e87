"""Taylor-mode (jet) passes of order <= 3 against finite differences, jvp and the R-operator."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv.losses import loss_value
from arraycurv.models import layers as L
from arraycurv.models.base import input_shape, output_shape
from arraycurv.models.jets import activation_jet_derivatives, layer_jet, loss_jet, taylor
from tests.helpers import assert_close, cnn_models, mlp_models, seeds

SMOOTH = ("identity", "tanh", "sigmoid", "softplus", "gelu")
LOSSES = (ac.MSE(), ac.SoftmaxCrossEntropy())


def _case(model, xp, seed, dtype="float64", m=2, b=3, scale=0.3):
    g = ac.backend.rng(seed)
    params = tuple(p + ac.backend.normal(g, tuple(p.shape), xp, dtype=p.dtype, scale=scale)
                   for p in ac.init_params(model, seed, xp, dtype=dtype))
    x = ac.backend.normal(g, (b, *input_shape(model)), xp, dtype=params[0].dtype)
    u = tuple(ac.backend.normal(g, (m, *p.shape), xp, dtype=p.dtype) for p in params)
    return params, x, u


def _targets(loss, model, xp, b, seed, dtype):
    k = output_shape(model)[0]
    if isinstance(loss, ac.MSE):
        return ac.backend.normal(seed, (b, k), xp, dtype=dtype)
    return ac.backend.integers(seed, 0, k, (b,), xp)


def _stencils(fn, h):
    f = [np.asarray(ac.backend.to_numpy(fn(k * h)), dtype=np.float64) for k in (-2, -1, 0, 1, 2)]
    return ((f[3] - f[1]) / (2 * h), (f[3] - 2 * f[2] + f[1]) / h**2, (f[4] - 2 * f[3] + 2 * f[1] - f[0]) / (2 * h**3))


def _fd_derivs(fn, h):
    """First three derivatives at 0 of fn by 5-point central stencils with one Richardson
    step (steps 2h and h: the h^2 error term cancels)."""
    coarse, fine = _stencils(fn, 2 * h), _stencils(fn, h)
    return tuple((4 * b - a) / 3 for a, b in zip(coarse, fine))


def _fd_atol(f0, k):
    """Rounding floor of the k-th 5-point stencil with h = 1e-3: about eps |f| / h^k."""
    return (1e-8, 1e-7, 1e-5)[k] * (1.0 + float(np.max(np.abs(ac.backend.to_numpy(f0)))))


def _moved(params, u, i, t):
    return tuple(p + t * v[i] for p, v in zip(params, u))


@settings(max_examples=15)
@given(model=mlp_models(max_depth=3, max_width=5), act=st.sampled_from(SMOOTH), seed=seeds)
def test_taylor_matches_finite_differences(model, act, seed):
    """d^k f[u, ..., u] of the jet = central differences of f(theta + t u), k = 1, 2, 3."""
    sizes = tuple([model.layers[0].n_in] + [ly.n_out for ly in model.layers if isinstance(ly, L.Dense)])
    model = ac.mlp(sizes, act)
    params, x, u = _case(model, np, seed % 1000)
    jet = taylor(model, params, x, u, order=3)
    for i in range(2):
        fd = _fd_derivs(lambda t, i=i: ac.forward(model, _moved(params, u, i, t), x), 1e-3)
        for k in range(3):
            assert_close(jet[k + 1][i], fd[k], rtol=2e-5, atol=_fd_atol(jet[0], k))


@settings(max_examples=10)
@given(model=cnn_models(pools=(L.AvgPool2d(2),)), seed=seeds)
def test_taylor_cnn_matches_finite_differences(model, seed):
    layers = tuple(L.Activation("tanh") if isinstance(ly, L.Activation) else ly for ly in model.layers)
    model = ac.Sequential(layers, model.input_shape)
    params, x, u = _case(model, np, seed % 1000, m=1)
    jet = taylor(model, params, x, u, order=3)
    fd = _fd_derivs(lambda t: ac.forward(model, _moved(params, u, 0, t), x), 1e-3)
    for k in range(3):
        assert_close(jet[k + 1][0], fd[k], rtol=2e-5, atol=_fd_atol(jet[0], k))


@settings(max_examples=10)
@given(model=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models()), seed=seeds)
def test_order_one_is_the_jvp(model, seed):
    """f_1 = J u for every layer and activation (relu, elu and max pooling included)."""
    params, x, u = _case(model, np, seed % 1000)
    jet = taylor(model, params, x, u, order=1)
    for i in range(2):
        assert_close(jet[1][i], ac.jvp(model, params, x, tuple(t[i] for t in u))[1])
    assert_close(jet[0], ac.forward(model, params, x))


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_order_two_loss_is_the_r_operator(xp, loss, dtype):
    """d^2 L[u, u] of the loss jet = <u, H u> with Pearlmutter's H u, and d L = <g, u>, on every
    backend (relu, elu, max pooling: piecewise terms included)."""
    for model in (ac.mlp((3, 4, 3), "elu"), ac.lenet5((1, 8, 8), 3, "tanh", "max"), ac.DeepLinear((3, 4, 3))):
        params, x, u = _case(model, xp, 3, dtype, b=4)
        y = _targets(loss, model, xp, 4, 5, params[0].dtype)
        lj = loss_jet(loss, taylor(model, params, x, u, order=2), y)
        value, g = ac.value_and_grad(model, params, (x, y), loss)
        assert_close(lj[0], value, like=params[0])
        for i in range(2):
            ui = tuple(t[i, ...] for t in u)
            hu = ac.hvp(model, params, (x, y), ui, loss)
            assert_close(lj[1][i], ac.params.tree_vdot(g, ui), like=params[0])
            assert_close(lj[2][i], ac.params.tree_vdot(ui, hu), like=params[0], rtol=1e-8 if dtype == "float64"
                         else 2e-3)


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
def test_order_three_loss_matches_finite_differences(loss):
    for model in (ac.mlp((3, 5, 4, 3), "tanh"), ac.mlp((2, 4, 3), "gelu"), ac.DeepLinear((3, 2, 4, 3))):
        params, x, u = _case(model, np, 7, b=5)
        y = _targets(loss, model, np, 5, 2, params[0].dtype)
        lj = loss_jet(loss, taylor(model, params, x, u, order=3), y)
        def value(t, model=model, params=params, u=u, x=x, y=y):
            return loss_value(loss, ac.forward(model, _moved(params, u, 0, t), x), y)

        fd = _fd_derivs(value, 1e-3)
        for k in range(3):
            assert_close(lj[k + 1][0], fd[k], rtol=1e-5, atol=_fd_atol(lj[0], k))


@pytest.mark.parametrize("name", L.ACTIVATIONS)
def test_activation_third_derivative(name):
    x = np.linspace(-3, 3, 41) + 0.013  # avoid the kinks of relu/elu at 0
    h = 1e-4
    d = activation_jet_derivatives(name, x)
    fd = (activation_jet_derivatives(name, x + h)[2] - activation_jet_derivatives(name, x - h)[2]) / (2 * h)
    assert_close(d[3], fd, rtol=1e-6, atol=1e-8)
    assert_close(d[2], L.activation_derivatives(name, x)[2])


@pytest.mark.skipif(not hasattr(L, "LayerNorm"), reason="no LayerNorm layer")
def test_layer_norm_jet_matches_finite_differences():
    model = ac.Sequential((L.Dense(3, 4), L.LayerNorm(4), L.Activation("tanh"), L.Dense(4, 2)), (3,))
    params, x, u = _case(model, np, 11, m=1)
    jet = taylor(model, params, x, u, order=3)
    fd = _fd_derivs(lambda t: ac.forward(model, _moved(params, u, 0, t), x), 1e-3)
    for k in range(3):
        assert_close(jet[k + 1][0], fd[k], rtol=5e-5, atol=_fd_atol(jet[0], k))


def test_layer_jet_with_primal_and_none_coefficients():
    """The primal (y0, cache) shortcut gives the same jet; a zero input jet and no dp give zeros."""
    layer = L.Dense(3, 2)
    p = (np.arange(6.0).reshape(2, 3) / 7, np.ones(2))
    x0 = np.linspace(-1, 1, 12).reshape(4, 3)
    x1 = np.ones((2, 4, 3))
    dp = (np.ones((2, 2, 3)), None)
    a = layer_jet(layer, p, (x0, x1, None, None), dp)
    b = layer_jet(layer, p, (x0, x1, None, None), dp, primal=L.layer_forward(layer, p, x0))
    for s, t in zip(a, b):
        assert (s is None) == (t is None)
        if s is not None:
            assert_close(s, t)
    # y_2 = 2 x_1 dW^T, y_3 = 0
    assert_close(a[2], 2 * x1 @ np.swapaxes(dp[0], -1, -2))
    assert a[3] is None
    assert layer_jet(layer, p, (x0, None), None)[1] is None


def test_taylor_errors():
    model = ac.mlp((3, 2))
    params, x, u = _case(model, np, 0)
    with pytest.raises(ValueError, match="order: expected an int in"):
        taylor(model, params, x, u, order=4)
    with pytest.raises(ValueError, match=r"u\[0\]"):
        taylor(model, params, x, (u[0][..., :2], u[1]), order=2)
    with pytest.raises(TypeError, match="model: taylor is not implemented"):
        taylor(object(), params, x, u)
    with pytest.raises(TypeError, match="loss: expected MSE"):
        loss_jet("mse", (x,), x)
