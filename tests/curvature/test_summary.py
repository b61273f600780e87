"""Summary tensors over a partition (Wolinski GN-2 to GN-8): fast forms against the
materialized V^T H V, the default form and finite differences of the restricted function."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv.curvature import summary as S
from arraycurv.directions.newton_summary import newton_step
from arraycurv.losses import loss_value
from arraycurv.models import layers as L
from arraycurv.models.base import input_shape, output_shape
from arraycurv.params import partition as P
from tests.helpers import assert_close, cnn_models, default_form, mlp_models, seeds

LOSSES = (ac.MSE(), ac.SoftmaxCrossEntropy())
BUILDERS = ("canonical", "trivial", "by_layer", "by_kind", "discrete")


def _case(model, xp, seed, loss, dtype="float64", b=4, scale=0.3):
    g = ac.backend.rng(seed)
    params = tuple(p + ac.backend.normal(g, tuple(p.shape), xp, dtype=p.dtype, scale=scale)
                   for p in ac.init_params(model, seed, xp, dtype=dtype))
    x = ac.backend.normal(g, (b, *input_shape(model)), xp, dtype=params[0].dtype)
    k = output_shape(model)[0]
    y = (ac.backend.normal(g, (b, k), xp, dtype=params[0].dtype) if isinstance(loss, ac.MSE)
         else ac.backend.integers(g, 0, k, (b,), xp))
    u = tuple(ac.backend.normal(g, tuple(p.shape), xp, dtype=p.dtype) for p in params)
    return params, (x, y), u


def _partition(model, name):
    if name == "discrete" and sum(int(np.prod(s)) for s in ac.param_shapes(model)) > 60:
        name = "canonical"
    return getattr(P, name)(model)


def _assert_summary(a, r, rtol=None, like=None):
    assert_close(a.loss, r.loss, rtol=rtol, like=like)
    assert_close(a.gbar, r.gbar, rtol=rtol, like=like)
    assert_close(a.hbar, r.hbar, rtol=rtol, like=like)
    assert_close(a.d3, r.d3, rtol=rtol, like=like)


@settings(max_examples=12)
@given(model=st.one_of(mlp_models(max_depth=3, max_width=5), cnn_models(max_hw=8)),
       name=st.sampled_from(BUILDERS), loss=st.sampled_from(LOSSES), seed=seeds)
def test_summary_matches_materialized_reference(model, name, loss, seed):
    """gbar = V^T g, Hbar = V^T H V (explicit Hessian), D3_sss from one plain jet per group."""
    params, batch, u = _case(model, np, seed % 1000, loss)
    part = _partition(model, name)
    _assert_summary(S.summary(model, params, batch, u, part, loss),
                    S.summary_reference(model, params, batch, u, part, loss), rtol=1e-8)


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_summary_every_backend(xp, loss, dtype):
    """Fast form = default form (jets + batched hvp) = reference, in the caller's namespace and dtype."""
    cnn = ac.Sequential((L.Conv2d(1, 2, 3, padding=1), L.Activation("tanh"), L.MaxPool2d(2), L.Flatten(),
                         L.Dense(8, 3)), (1, 4, 4))
    models = (ac.mlp((3, 4, 3), "tanh"), cnn, ac.DeepLinear((3, 4, 2)))
    rtol = 1e-9 if dtype == "float64" else 2e-3
    for model in models:
        params, batch, u = _case(model, xp, 2, loss, dtype)
        for part in (P.canonical(model), P.by_layer(model)):
            fast = S.summary(model, params, batch, u, part, loss)
            ref = S.summary_reference(model, params, batch, u, part, loss)
            _assert_summary(fast, ref, rtol=rtol, like=params[0])
    model = models[0]
    params, batch, u = _case(model, xp, 4, loss, dtype)
    part = P.canonical(model)
    dflt = default_form(S._summary)(model, ac.backend.namespace_of(p=params[0]), params, batch, u, part, loss, 3)
    _assert_summary(S.summary(model, params, batch, u, part, loss), dflt, rtol=rtol, like=params[0])


def _phi(model, params, batch, u, part, loss):
    """The restricted function t -> L(theta + sum_s t_s u^(s)) (GN-2) on host floats."""
    v = P.restrict(u, part)

    def phi(t):
        moved = tuple(p + np.tensordot(np.asarray(t), vv, axes=(0, 0)) for p, vv in zip(params, v))
        return float(loss_value(loss, ac.forward(model, moved, batch[0]), batch[1]))

    return phi


@settings(max_examples=8)
@given(model=mlp_models(max_depth=3, max_width=4), loss=st.sampled_from(LOSSES), seed=seeds)
def test_summary_matches_finite_differences_of_the_restricted_function(model, loss, seed):
    """gbar, Hbar and D3_sss are the derivatives of phi (GN-2, GN-3) at t = 0."""
    model = ac.mlp((model.layers[0].n_in,) + tuple(ly.n_out for ly in model.layers if hasattr(ly, "n_out")), "tanh")
    params, batch, u = _case(model, np, seed % 1000, loss)
    part = P.canonical(model)
    s = part.num_groups
    phi = _phi(model, params, batch, u, part, loss)
    summ = S.summary(model, params, batch, u, part, loss)
    e = np.eye(s)

    def central(i, h):
        return (phi(h * e[i]) - phi(-h * e[i])) / (2 * h)

    def mixed(i, j, h):
        return (phi(h * (e[i] + e[j])) - phi(h * (e[i] - e[j])) - phi(h * (e[j] - e[i]))
                + phi(-h * (e[i] + e[j]))) / (4 * h * h)

    def third(i, h):
        return (phi(2 * h * e[i]) - 2 * phi(h * e[i]) + 2 * phi(-h * e[i]) - phi(-2 * h * e[i])) / (2 * h**3)

    def richardson(fn, *idx, h=2e-3):  # the h^2 error terms cancel
        return (4 * fn(*idx, h / 2) - fn(*idx, h)) / 3

    grad = np.array([richardson(central, i) for i in range(s)])
    hess = np.array([[richardson(mixed, i, j) for j in range(s)] for i in range(s)])
    d3 = np.array([richardson(third, i, h=4e-3) for i in range(s)])
    scale = 1.0 + abs(phi(np.zeros(s)))
    assert_close(summ.gbar, grad, rtol=1e-5, atol=1e-8 * scale)
    assert_close(summ.hbar, hess, rtol=1e-4, atol=1e-6 * scale)
    assert_close(summ.d3, d3, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
def test_taylor_expansion_to_third_order(loss):
    """L(theta - V eta) = T_0 - T_1 + T_2/2 - T_3/6 + O(|eta|^4) (GN-7); T_d = D^(d)[eta^d]."""
    model = ac.mlp((3, 4, 3), "tanh")
    params, batch, u = _case(model, np, 5, loss)
    part = P.canonical(model)
    eta = np.random.default_rng(0).standard_normal(part.num_groups)
    summ = S.summary(model, params, batch, u, part, loss)
    d3 = S.summary_third(model, params, batch, u, part, loss)
    terms = S.summary_taylor_terms(model, params, batch, u, part, eta, loss)
    assert_close(terms[1], summ.gbar @ eta)
    assert_close(terms[2], eta @ summ.hbar @ eta)
    assert_close(terms[3], np.einsum("ijk,i,j,k->", d3, eta, eta, eta))
    phi = _phi(model, params, batch, u, part, loss)
    errs = []
    for eps in (1e-2, 5e-3):
        t = [float(v) * eps**d for d, v in enumerate(terms)]
        errs.append(abs(phi(-eps * eta) - (t[0] - t[1] + t[2] / 2 - t[3] / 6)))
    assert errs[1] < errs[0] / 10  # fourth order: a factor 16 per halving


def test_full_third_tensor_is_symmetric_with_the_jet_diagonal():
    model = ac.mlp((2, 3, 2), "sigmoid")
    loss = ac.SoftmaxCrossEntropy()
    params, batch, u = _case(model, np, 9, loss)
    part = P.canonical(model)
    d3 = S.summary_third(model, params, batch, u, part, loss)
    assert_close(np.diagonal(np.diagonal(d3)), S.summary(model, params, batch, u, part, loss).d3, rtol=1e-9)
    for perm in ((1, 0, 2), (2, 1, 0), (0, 2, 1)):
        assert_close(np.transpose(d3, perm), d3, rtol=1e-12)
    # off-diagonal entries against finite differences of the summary Hessian along u^(k)
    v = P.restrict(u, part)
    h = 1e-5
    for k in range(part.num_groups):
        plus = tuple(p + h * vv[k] for p, vv in zip(params, v))
        minus = tuple(p - h * vv[k] for p, vv in zip(params, v))
        fd = (S.summary(model, plus, batch, u, part, loss).hbar - S.summary(model, minus, batch, u, part, loss).hbar)
        assert_close(d3[:, :, k], fd / (2 * h), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
def test_coarsening(loss):
    """Merged groups: gbar_c = M^T gbar, Hbar_c = M^T Hbar M, D3_c = D3 x_1 M^T x_2 M^T x_3 M^T."""
    model = ac.mlp((3, 4, 3, 2), "tanh")
    params, batch, u = _case(model, np, 3, loss)
    fine = P.canonical(model)
    mapping = (0, 0, 1, 2, 1, 2)
    coarse = P.merge(fine, mapping)
    m = np.zeros((6, 3))
    m[np.arange(6), mapping] = 1.0
    f = S.summary(model, params, batch, u, fine, loss)
    c = S.summary(model, params, batch, u, coarse, loss)
    d3 = S.summary_third(model, params, batch, u, fine, loss)
    assert_close(c.gbar, m.T @ f.gbar)
    assert_close(c.hbar, m.T @ f.hbar @ m)
    assert_close(c.d3, np.einsum("ijk,ia,ja,ka->a", d3, m, m, m), rtol=1e-8)


def test_scale_equivariance():
    """u^(s) -> c_s u^(s): gbar -> C gbar, Hbar -> C Hbar C, D3_sss -> c_s^3 D3_sss, d_s -> |c_s| d_s (GN-8)."""
    model = ac.mlp((3, 4, 2), "tanh")
    loss = ac.SoftmaxCrossEntropy()
    params, batch, u = _case(model, np, 1, loss)
    part = P.by_layer(model)
    c = np.array([-2.5, 0.3])
    u2 = P.scale_groups(u, c, part)
    a = S.summary(model, params, batch, u, part, loss)
    b = S.summary(model, params, batch, u2, part, loss)
    assert_close(b.gbar, c * a.gbar)
    assert_close(b.hbar, np.outer(c, c) * a.hbar)
    assert_close(b.d3, c**3 * a.d3)
    assert_close(b.d, np.abs(c) * a.d)


def test_discrete_partition_gives_newton():
    """S = P: V eta* = H^{-1} g whatever u is (spec 3, Appendix C). MSE: the softmax
    cross-entropy Hessian is singular (shifting all logits leaves the loss unchanged)."""
    loss = ac.MSE()
    model = ac.mlp((2, 3, 2), "tanh")
    params, batch, u = _case(model, np, 4, loss)
    part = P.discrete(model)
    summ = S.summary(model, params, batch, u, part, loss)
    eta = newton_step(summ.gbar, summ.hbar)
    _, g = ac.value_and_grad(model, params, batch, loss)
    hess = ac.hessian_matrix(model, params, batch, loss)
    assert_close(ac.flatten(P.scale_groups(u, eta, part)), np.linalg.solve(hess, ac.flatten(g)), rtol=1e-7)


def test_trivial_partition_gives_cauchy():
    """S = 1, u = g: eta* = ||g||^2 / g^T H g, Cauchy's steepest-descent step (spec 3)."""
    model = ac.mlp((3, 4, 2), "elu")
    loss = ac.MSE()
    params, batch, _ = _case(model, np, 6, loss)
    _, g = ac.value_and_grad(model, params, batch, loss)
    summ = S.summary(model, params, batch, g, P.trivial(model), loss)
    gf = ac.flatten(g)
    hess = ac.hessian_matrix(model, params, batch, loss)
    assert_close(newton_step(summ.gbar, summ.hbar), np.array([gf @ gf / (gf @ hess @ gf)]))


def test_order_and_partition_errors():
    model = ac.mlp((3, 2))
    loss = ac.MSE()
    params, batch, u = _case(model, np, 0, loss)
    part = P.canonical(model)
    s1 = S.summary(model, params, batch, u, part, loss, order=1)
    assert s1.hbar is None and s1.d3 is None and s1.d is None
    with pytest.raises(ValueError, match="order: expected an int in"):
        S.summary(model, params, batch, u, part, loss, order=4)
    with pytest.raises(ValueError, match="partition: expected a partition of the shapes"):
        S.summary(model, params, batch, u, P.canonical(ac.mlp((3, 3))), loss)
    with pytest.raises(TypeError, match="partition: expected a Partition"):
        S.summary(model, params, batch, u, "canonical", loss)
    with pytest.raises(ValueError, match=r"direction\[0\]"):
        S.summary(model, params, batch, (u[0][:, :2], u[1]), part, loss)
    with pytest.raises(ValueError, match=r"eta: expected shape \(\.\.\., 2\)"):
        S.summary_taylor_terms(model, params, batch, u, part, np.zeros(3), loss)
    bad = (np.full_like(u[0], np.nan), u[1])
    with pytest.raises(ValueError, match="direction"):
        S.summary(model, params, batch, bad, part, loss)


@pytest.mark.parametrize("loss", LOSSES, ids=["mse", "ce"])
def test_layer_norm_and_smooth_activations(loss):
    """The generic R-operator path (LayerNorm has parameters and is not bilinear) and the
    third-order sources of gelu and softplus, against the reference, for every builder."""
    model = ac.Sequential((L.Dense(3, 4), L.LayerNorm(4), L.Activation("gelu"), L.Dense(4, 4),
                           L.Activation("softplus"), L.Dense(4, 2)), (3,))
    params, batch, u = _case(model, np, 8, loss, b=5)
    for name in BUILDERS:
        part = getattr(P, name)(model)
        _assert_summary(S.summary(model, params, batch, u, part, loss),
                        S.summary_reference(model, params, batch, u, part, loss), rtol=1e-9)
