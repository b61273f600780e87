"""The online NGD rule of Bernacchia et al. (2018) Sec. 5: eq (20) steps, the adaptive
damping of eq (21) with footnote 1's prediction (rho recomputed here from losses and the
explicit Fisher), and the running Sherman-Morrison inverses (against NumPy inverses of the
moving average they track)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend
from arraycurv.directions.bernacchia import bernacchia_ngd_direction
from arraycurv.rules.bernacchia import BernacchiaState, bernacchia_ngd, scale_by_bernacchia
from arraycurv.rules.damping import constant, levenberg_marquardt, lm_damping
from tests.helpers import assert_close, assert_tree_close


def _case(widths=(3, 4, 4, 2), nb=12, seed=0, xp=np):
    model = ac.DeepLinear(widths)
    params = ac.init_params(model, seed, xp, method="orthogonal")
    g = np.random.default_rng(seed)
    x = g.standard_normal((nb, widths[0]))
    y = x @ g.standard_normal((widths[-1], widths[0])).T
    return model, params, (backend.from_numpy(x, xp), backend.from_numpy(y, xp))


def _step(rule, model, params, batch, state):
    value, g = ac.value_and_grad(model, params, batch)
    return rule.update(g, state, params, model=model, batch=batch, loss=ac.MSE(), value=value)


def _loss(model, params, batch):
    x, y = batch
    r = backend.to_numpy(ac.forward(model, params, x)) - backend.to_numpy(y)
    return 0.5 * float(np.sum(r * r)) / r.shape[0]


def test_one_step_is_alpha_times_the_damped_direction(xp):
    model, params, batch = _case(xp=xp)
    rule = bernacchia_ngd(0.7, damping=constant(0.05), num_samples=None)
    upd, state = _step(rule, model, params, batch, rule.init(params))
    ref = bernacchia_ngd_direction(model, params, batch, damping=0.05, alpha=0.7)
    assert_tree_close(upd, ref, like=params[0])
    assert isinstance(state[0], BernacchiaState) and state[0].count == 1


def test_adaptive_damping_follows_eq_21_with_footnote_1():
    """rho = (L(p1; b0) - L(p0; b0)) / ((alpha - alpha^2/2) <g0, d0>), lambda by eq (21)."""
    model, params, batch0 = _case(seed=1)
    _, _, batch1 = _case(seed=2)
    alpha, lam0 = 0.9, 0.02
    rule = bernacchia_ngd(alpha, damping=levenberg_marquardt(lam0), num_samples=None)
    state = rule.init(params)
    upd0, state = _step(rule, model, params, batch0, state)
    assert state[0].damping.damping == lam0  # first step: no prediction yet
    p1 = ac.apply_direction(params, upd0)
    _, state = _step(rule, model, p1, batch1, state)
    d0 = bernacchia_ngd_direction(model, params, batch0, damping=lam0)  # unit-rate direction
    _, g0 = ac.value_and_grad(model, params, batch0)
    pred = (alpha - alpha**2 / 2) * sum(float(np.sum(a * b)) for a, b in zip(g0, d0))
    rho = (_loss(model, p1, batch0) - _loss(model, params, batch0)) / pred
    assert math.isclose(state[0].damping.rho, rho, rel_tol=1e-8)
    assert state[0].damping.damping == lm_damping(lam0, rho)


def test_rho_on_consecutive_batches_when_same_batch_is_false():
    model, params, batch0 = _case(seed=1)
    _, _, batch1 = _case(seed=2)
    rule = bernacchia_ngd(1.0, damping=0.02, num_samples=None, same_batch=False)
    state = rule.init(params)
    upd0, state = _step(rule, model, params, batch0, state)
    p1 = ac.apply_direction(params, upd0)
    _, state = _step(rule, model, p1, batch1, state)
    d0 = bernacchia_ngd_direction(model, params, batch0, damping=0.02)
    _, g0 = ac.value_and_grad(model, params, batch0)
    pred = 0.5 * sum(float(np.sum(a * b)) for a, b in zip(g0, d0))
    rho = (_loss(model, p1, batch1) - _loss(model, params, batch0)) / pred
    assert math.isclose(state[0].damping.rho, rho, rel_tol=1e-8)


def test_running_sherman_morrison_inverse_of_the_input_covariance():
    """After a refresh, one Woodbury step with all rows: the inverse of
    decay (A_0 + sqrt(lambda) I) + (1 - decay) X_1^T X_1 / B for every layer input."""
    widths = (3, 4, 4, 2)
    model, params, batch0 = _case(widths, seed=3)
    _, _, batch1 = _case(widths, seed=4)
    lam, decay = 0.04, 0.6
    rule = bernacchia_ngd(0.5, damping=constant(lam), inverse="sherman_morrison", decay=decay, sm_rows=100,
                          refresh=1000)
    state = rule.init(params)
    upd, state = _step(rule, model, params, batch0, state)
    p1 = ac.apply_direction(params, upd)
    _, state = _step(rule, model, p1, batch1, state)
    x0, x1 = batch0[0], batch1[0]
    for i in range(3):
        pre0, pre1 = np.eye(3), np.eye(3)
        for w0, w1 in zip(params[:i], p1[:i]):
            pre0, pre1 = w0 @ pre0, w1 @ pre1
        a0 = (x0 @ pre0.T).T @ (x0 @ pre0.T) / 12 + math.sqrt(lam) * np.eye(widths[i])
        r1 = x1 @ pre1.T
        want = np.linalg.inv(decay * a0 + (1 - decay) * r1.T @ r1 / 12)
        assert_close(state[0].inverses[i][1], want, rtol=1e-8)


def test_rule_trains_deep_linear_and_mlp():
    widths = (4, 4, 4, 4, 4)
    data = ac.data.bernacchia_teacher_student(widths, num_train=400, num_test=100, seed=0)
    model = ac.DeepLinear(widths)
    params = ac.init_params(model, 1)
    train = (data.x_train, data.y_train)
    for inverse in ("direct", "sherman_morrison", "randomized"):
        res = ac.train(model, params, train, bernacchia_ngd(1.0, inverse=inverse), 30, record_every=30)
        assert res.losses[-1] < 1e-3 * res.losses[0]
    mlp = ac.mlp((4, 6, 4), "tanh")
    p = ac.init_params(mlp, 0)
    res = ac.train(mlp, p, train, bernacchia_ngd(0.5), 20, record_every=20)
    assert res.losses[-1] < 0.5 * res.losses[0]


def test_errors():
    model, params, batch = _case()
    with pytest.raises(ValueError, match="inverse: expected"):
        bernacchia_ngd(1.0, inverse="cg")
    with pytest.raises(ValueError, match="num_samples: expected"):
        scale_by_bernacchia(num_samples=0)
    rule = bernacchia_ngd(1.0)
    _, g = ac.value_and_grad(model, params, batch)
    with pytest.raises(TypeError, match="state: expected a BernacchiaState"):
        rule.update(g, (None, None), params, model=model, batch=batch, loss=ac.MSE())
    with pytest.raises(TypeError, match="loss: expected MSE"):
        rule.update(g, rule.init(params), params, model=model, batch=batch, loss=ac.SoftmaxCrossEntropy())


def test_registered_in_the_rule_registry():
    from arraycurv.rules import make_rule, rule_spec

    spec = rule_spec("bernacchia_ngd")
    assert spec.q == 1.0 and "Bernacchia" in spec.paper
    model, params, batch = _case()
    rule = make_rule("bernacchia_ngd", 0.5, damping=constant(0.1), num_samples=None)
    upd, _ = _step(rule, model, params, batch, rule.init(params))
    assert_tree_close(upd, bernacchia_ngd_direction(model, params, batch, damping=0.1, alpha=0.5))
    assert ac.rules.bernacchia_ngd is bernacchia_ngd
