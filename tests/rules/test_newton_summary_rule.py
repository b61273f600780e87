"""The NewtonSummary rule (Wolinski, spec grouped_newton.md 5-6): composition, recorded rates,
and invariance of the trajectory under group-wise affine reparameterization (Appendix E)."""

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import arraycurv as ac
from arraycurv.models import base as mb
from arraycurv.models.jets import taylor
from arraycurv.params import partition as P
from arraycurv.rules.registry import make_rule, rule_spec

# the module (arraycurv.rules.newton_summary is the factory function of the same name)
NS = importlib.import_module("arraycurv.rules.newton_summary")


@dataclass(frozen=True, eq=False)
class Affine:
    """theta = alpha_i phi_i + b_i tensor by tensor: the same network in other coordinates."""

    inner: Any
    alpha: tuple
    offset: tuple

    def theta(self, phi):
        return tuple(a * p + b for a, p, b in zip(self.alpha, phi, self.offset))

    def scale(self, t):
        return tuple(a * v for a, v in zip(self.alpha, t))


mb.param_shapes.register(Affine)(lambda m: mb.param_shapes(m.inner))
mb.input_shape.register(Affine)(lambda m: mb.input_shape(m.inner))
mb.output_shape.register(Affine)(lambda m: mb.output_shape(m.inner))
mb.stacked_tangents.register(Affine)(lambda m: True)
mb.forward.register(Affine)(lambda m, p, x: ac.forward(m.inner, m.theta(p), x))
mb.jvp.register(Affine)(lambda m, p, x, t: ac.jvp(m.inner, m.theta(p), x, m.scale(t)))
mb.vjp.register(Affine)(lambda m, p, x, c: m.scale(ac.vjp(m.inner, m.theta(p), x, c)))
mb.hvp.register(Affine)(lambda m, p, b, v, loss=ac.MSE(): m.scale(ac.hvp(m.inner, m.theta(p), b, m.scale(v), loss)))
taylor.register(Affine)(lambda m, p, x, u, order=3: taylor(m.inner, m.theta(p), x, m.scale(u), order))


def _data(seed=0, n=64, d=4, k=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    return x, y


def _run(model, params, rule, steps, batches, loss):
    state = rule.init(params)
    out = [params]
    for k in range(steps):
        batch = batches(k)
        value, g = ac.value_and_grad(model, params, batch, loss)
        upd, state = rule.update(g, state, params, model=model, batch=batch, loss=loss, value=value)
        params = ac.rules.apply_direction(params, upd)
        out.append(params)
    return out, state


def _setup():
    model = ac.mlp((4, 6, 5, 3), "tanh")
    params = ac.init_params(model, 3)
    x, y = _data()
    rng = np.random.default_rng(7)
    alpha = tuple(float(s * a) for s, a in zip(rng.choice([-1.0, 1.0], len(params)),
                                               rng.uniform(0.2, 5.0, len(params))))
    offset = tuple(rng.standard_normal(p.shape) for p in params)
    wrapped = Affine(model, alpha, offset)
    phi0 = tuple((p - b) / a for p, a, b in zip(params, alpha, offset))

    def batches(k):
        i = (16 * k) % 64
        return x[i:i + 16], y[i:i + 16]

    h_batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    return model, params, wrapped, phi0, batches, h_batches


def _max_dev(model, wrapped, theta_traj, phi_traj):
    moves = max(float(np.max(np.abs(a - b))) for a, b in zip(theta_traj[-1], theta_traj[0]))
    dev = max(float(np.max(np.abs(t - w))) for th, ph in zip(theta_traj, phi_traj)
              for t, w in zip(th, wrapped.theta(ph)))
    return dev, moves


def test_trajectory_is_invariant_under_groupwise_affine_reparameterization():
    """theta_k = A phi_k + b for all k (spec 6, Appendix E), the rates transform as
    eta~ = C^{-1} eta with c_s = alpha_s^2, r* is invariant; the solver always finds a step."""
    model, params, wrapped, phi0, batches, h_batches = _setup()
    loss = ac.SoftmaxCrossEntropy()
    kw = dict(period=3, lr_momentum=0.5, damping_int=1.0, h_batches=h_batches, epoch_steps=4)
    th, st_a = _run(model, params, NS.newton_summary(0.1, **kw), 30, batches, loss)
    ph, st_b = _run(wrapped, phi0, NS.newton_summary(0.1, **kw), 30, batches, loss)
    dev, moves = _max_dev(model, wrapped, th, ph)
    assert moves > 0.1
    assert dev <= 1e-8 * max(1.0, moves)
    info_a, info_b = NS.summary_info(st_a), NS.summary_info(st_b)
    assert info_a["found"] and info_b["found"]
    assert np.isclose(info_a["r"], info_b["r"], rtol=1e-6)
    c = np.array(wrapped.alpha) ** 2
    np.testing.assert_allclose(NS.per_group_lrs(st_b), NS.per_group_lrs(st_a) / c, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("control", ["ridge", "sgd"])
def test_negative_controls_are_not_invariant(control):
    """The ridge (Hbar + rho I) and plain SGD break the invariance (spec 6, negative controls)."""
    model, params, wrapped, phi0, batches, h_batches = _setup()
    loss = ac.SoftmaxCrossEntropy()
    if control == "ridge":
        make = lambda: NS.newton_summary(0.1, method="ridge", ridge=1e-2, period=3, h_batches=h_batches)  # noqa: E731
    else:
        make = lambda: ac.sgd(0.1)  # noqa: E731
    th, _ = _run(model, params, make(), 20, batches, loss)
    ph, _ = _run(wrapped, phi0, make(), 20, batches, loss)
    dev, moves = _max_dev(model, wrapped, th, ph)
    assert dev > 1e-3 * max(1.0, moves)


def test_rule_is_composed_and_registered():
    rule = make_rule("newton_summary", 0.2, period=2)
    assert rule_spec("newton_summary").label == "NewtonSummary"
    model = ac.mlp((4, 5, 3), "tanh")
    params = ac.init_params(model, 0)
    state = rule.init(params)
    assert type(state) is tuple and len(state) == 3 and NS.per_group_lrs(state) is None
    x, y = _data()
    loss = ac.SoftmaxCrossEntropy()
    res = ac.train(model, params, (x, y), rule, 6, loss=loss)
    lrs = NS.per_group_lrs(res.state)
    assert lrs.shape == (4,) and np.all(lrs >= 0)
    assert NS.summary_info(res.state)["computations"] == 3
    assert res.losses[-1] < res.losses[0]


def test_dampened_momentum_and_rate_momentum():
    """buf <- G, then mu buf + (1 - tau) G; eta_hat <- rho eta_hat + (1 - rho) eta* after the first."""
    mom = NS.dampened_momentum(0.9, 0.5)
    p = (np.zeros(2),)
    s = mom.init(p)
    u, s = mom.update((np.ones(2),), s, p)
    np.testing.assert_allclose(u[0], 1.0)
    u, s = mom.update((np.full(2, 2.0),), s, p)
    np.testing.assert_allclose(u[0], 0.9 + 0.5 * 2.0)
    model = ac.mlp((3, 2), "tanh")
    params = ac.init_params(model, 1)
    x, y = _data(d=3, k=2)
    loss = ac.MSE()
    y = np.eye(2)[y]
    part = P.trivial(model)
    rates = NS.summary_rates(part, period=1, rho=0.25, method="newton", positive=False)
    st = rates.init(params)
    _, g = ac.value_and_grad(model, params, (x, y), loss)
    _, st = rates.update(g, st, params, model=model, batch=(x, y), loss=loss)
    first = st.eta_hat
    _, st = rates.update(g, st, params, model=model, batch=(x, y), loss=loss)
    np.testing.assert_allclose(st.eta_hat, first)  # same summary: the average stays
    summ = ac.curvature.summary.summary(model, params, (x, y), g, part, loss, order=2)
    np.testing.assert_allclose(first, summ.gbar / np.diag(summ.hbar))


def test_plateau_halves_the_damping():
    sc = NS.scale_by_damping(ac.rules.damping.reduce_on_plateau(1.0, factor=0.5, patience=0), epoch_steps=2)
    p = (np.zeros(1),)
    s = sc.init(p)
    for v in (1.0, 1.0, 2.0, 2.0):
        out, s = sc.update((np.ones(1),), s, p, value=v)
    assert s.controller.damping == 0.5 and out[0][0] == 0.5


def test_rule_errors():
    with pytest.raises(ValueError, match="method: expected"):
        NS.summary_rates(method="lbfgs")
    with pytest.raises(ValueError, match="period"):
        NS.newton_summary(0.1, period=0)
    with pytest.raises(TypeError, match="controller: expected a DampingController"):
        NS.scale_by_damping("plateau")
    with pytest.raises(TypeError, match="state: expected the state of newton_summary"):
        NS.per_group_lrs(())


def test_rule_runs_on_every_backend(xp):
    """A few NewtonSummary steps in the caller's namespace and dtype (float32 too)."""
    from arraycurv.directions.newton_summary import newton_summary_direction

    model = ac.mlp((4, 5, 3), "tanh")
    for dtype in ("float64", "float32"):
        params = ac.init_params(model, 0, xp, dtype=dtype)
        x = ac.backend.normal(1, (24, 4), xp, dtype=dtype)
        y = ac.backend.integers(2, 0, 3, (24,), xp)
        loss = ac.SoftmaxCrossEntropy()
        res = ac.train(model, params, (x, y), NS.newton_summary(0.2, period=2), 4, loss=loss)
        lrs = NS.per_group_lrs(res.state)
        assert ac.backend.namespace_of(lrs=lrs) is ac.backend.namespace_of(p=params[0]) and lrs.dtype == params[0].dtype
        assert float(res.losses[-1]) < float(res.losses[0])
        _, g = ac.value_and_grad(model, params, (x, y), loss)
        out = newton_summary_direction(model, params, (x, y), g, P.canonical(model), loss, method="cubic")
        assert out.solve.found and out.eta.dtype == params[0].dtype
        expect = P.scale_groups(g, out.eta, P.canonical(model))
        for a, b in zip(out.step, expect):
            assert float(xp.max(xp.abs(a - b))) == 0.0
        newton = newton_summary_direction(model, params, (x, y), g, P.canonical(model), loss, method="newton")
        assert newton.solve is None and newton.summary.d3 is None
