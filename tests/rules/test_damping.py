"""Damping controllers: the rho rule of Levenberg-Marquardt (Bernacchia et al. 2018 eq 21,
kfac-jax), reduce-on-plateau (PyTorch ReduceLROnPlateau logic), constant and schedule;
checked against hand computations, and the predicted change of footnote 1."""

from __future__ import annotations

import math

import numpy as np
import pytest

import arraycurv as ac
from arraycurv.rules import chain, damping, scale_by_lr
from arraycurv.rules.damping import (
    LevenbergMarquardtState,
    PlateauState,
    levenberg_marquardt,
    lm_damping,
    reduce_on_plateau,
)
from arraycurv.rules.transforms import PreconditionState, precondition, predicted_change
from tests.references.deep_linear import make_case, np_ggn_grad, np_loss, np_of


def kfac_jax_rule(old_loss, new_loss, quad_change, current, lower=0.25, upper=0.75, decay=2.0 / 3.0):
    """kfac-jax ``_compute_new_damping_and_rho`` written out (no clipping)."""
    rho = (new_loss - old_loss) / quad_change
    if rho < lower:
        return current / decay, rho
    if rho > upper:
        return current * decay, rho
    return current, rho


def test_lm_rho_rule_by_hand():
    assert lm_damping(1.0, 0.1) == 1.5  # rho < 0.25: 3/2 lambda
    assert lm_damping(1.0, 0.9) == pytest.approx(2.0 / 3.0)  # rho > 0.75: 2/3 lambda
    assert lm_damping(1.0, 0.25) == 1.0 and lm_damping(1.0, 0.75) == 1.0
    assert lm_damping(1.0, math.nan) == 1.5  # a NaN ratio is a failed step
    assert lm_damping(1.0, 0.1, min_damping=0.1, max_damping=1.2) == 1.2
    assert lm_damping(0.1, 0.9, min_damping=0.09) == 0.09
    assert lm_damping(2.0, 0.5, lower=0.6, upper=0.9, increase=2.0, decrease=0.5) == 4.0
    assert lm_damping(2.0, 0.95, lower=0.6, upper=0.9, increase=2.0, decrease=0.5) == 1.0
    for rho in (-3.0, 0.0, 0.2, 0.5, 0.8, 2.0):
        expected, _ = kfac_jax_rule(1.0, 1.0 + rho * -0.5, -0.5, 0.7)
        assert lm_damping(0.7, rho) == pytest.approx(expected, rel=1e-15)


def test_levenberg_marquardt_controller_sequence():
    ctl = levenberg_marquardt(1.0)
    s = ctl.init()
    assert s == LevenbergMarquardtState(1.0) and math.isnan(s.rho)
    s = ctl.update(s, value=10.0, predicted_change=None)  # first step: nothing to compare
    assert s.damping == 1.0 and math.isnan(s.rho) and s.value == 10.0
    s = ctl.update(s, value=9.0, predicted_change=-4.0)  # rho = -1 / -4 = 0.25: unchanged
    assert (s.damping, s.rho) == (1.0, 0.25)
    s = ctl.update(s, value=5.0, predicted_change=-4.0)  # rho = 1: decrease
    assert s.damping == pytest.approx(2.0 / 3.0) and s.rho == 1.0
    s = ctl.update(s, value=5.5, predicted_change=-1.0)  # rho = -0.5: increase
    assert s.damping == pytest.approx(1.0) and s.rho == -0.5
    s = ctl.update(s, value=5.5, predicted_change=0.0)  # no predicted change: NaN, increase
    assert s.damping == pytest.approx(1.5) and math.isnan(s.rho)
    for old, new, quad in ((3.0, 2.0, -1.5), (3.0, 2.9, -1.0), (3.0, 3.5, -1.0)):
        st = ctl.update(LevenbergMarquardtState(0.4, math.nan, old), value=new, predicted_change=quad)
        expected, rho = kfac_jax_rule(old, new, quad, 0.4)
        assert st.damping == pytest.approx(expected, rel=1e-15) and st.rho == pytest.approx(rho, rel=1e-15)


def test_reduce_on_plateau_sequence():
    ctl = reduce_on_plateau(1.0, factor=0.5, patience=1, rtol=0.0)
    s, lams = ctl.init(), []
    for v in (10.0, 9.0, 9.0, 9.0, 9.0, 8.0):
        s = ctl.update(s, value=v)
        lams.append(s.damping)
    assert lams == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5] and s == PlateauState(0.5, 8.0, 0)
    # relative threshold: 9.5 is not below 10 (1 - 0.1) = 9, so it counts as bad
    ctl = reduce_on_plateau(1.0, factor=0.1, patience=0, rtol=0.1, min_damping=0.2)
    s = ctl.update(ctl.update(ctl.init(), value=10.0), value=9.5)
    assert s.damping == 0.2 and s.best == 10.0


def test_constant_and_schedule():
    c = damping.constant(0.3)
    assert c.update(c.init(), value=1.0).damping == 0.3
    sch = damping.schedule(lambda k: 1.0 / (k + 1))
    s = sch.init()
    assert s.damping == 1.0
    lams = []
    for _ in range(3):
        s = sch.update(s, value=None)
        lams.append(s.damping)
    assert lams == [1.0, 0.5, 1.0 / 3.0]


def test_predicted_change_of_footnote_1():
    pg = (np.array([1.0, 2.0]),)
    g_dot_pg = 3.0
    # step -t P g: -(t - t^2 / 2) g . P g
    for t in (0.5, 1.0, 2.0):
        assert predicted_change((-t * pg[0],), pg, g_dot_pg) == pytest.approx(-(t - t * t / 2) * 3.0, rel=1e-15)
    assert predicted_change((np.zeros(2),), (np.zeros(2),), 0.0) == 0.0


def test_lm_damped_ngd_rho_against_hand_computation(numpy_xp):
    """Two steps of damped NGD with lr alpha: rho = (L1 - L0) / predicted, the predicted
    change of Bernacchia footnote 1, (-alpha + alpha^2 / 2) g . (G + lambda)^{-1} g."""
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 8, 6)
    alpha, lam0 = 0.5, 0.1

    def direction(model, params, batch, *, loss, damping):
        return ac.qngd_direction(model, params, batch, 1.0, loss=loss, damping=damping, form="full")

    rule = chain(precondition(direction, damping=levenberg_marquardt(lam0)), scale_by_lr(alpha))
    res = ac.train(model, params, batch, rule, 2)
    ws0, bt = np_of(params), np_of(batch)
    gg, g = np_ggn_grad(ws0, *bt)
    pg = np.linalg.solve(gg + lam0 * np.eye(len(g)), g)
    predicted = (-alpha + alpha**2 / 2) * g @ pg
    l0 = np_loss(ws0, *bt)
    l1 = res.losses[1]
    rho = (l1 - l0) / predicted
    state = res.state[0]
    assert isinstance(state, PreconditionState)
    assert state.damping.rho == pytest.approx(rho, rel=1e-8)
    assert state.damping.damping == pytest.approx(lm_damping(lam0, rho), rel=1e-12)
    assert not ac.rules.is_stateless(rule)


def test_damping_argument_errors():
    with pytest.raises(ValueError, match=r"damping: expected a finite real number > 0"):
        levenberg_marquardt(0.0)
    with pytest.raises(ValueError, match=r"upper: expected a number >= lower = 0.5"):
        levenberg_marquardt(1.0, lower=0.5, upper=0.4)
    with pytest.raises(ValueError, match=r"increase: expected a finite number >= 1"):
        levenberg_marquardt(1.0, increase=0.5)
    with pytest.raises(ValueError, match=r"decrease: expected a number in \(0, 1\]"):
        levenberg_marquardt(1.0, decrease=1.5)
    with pytest.raises(ValueError, match=r"max_damping: expected a number >= min_damping"):
        levenberg_marquardt(1.0, min_damping=1.0, max_damping=0.5)
    with pytest.raises(ValueError, match=r"patience: expected an integer >= 0"):
        reduce_on_plateau(1.0, patience=-1)
    with pytest.raises(ValueError, match=r"damping: expected a real number >= 0"):
        damping.constant(-1.0)
    with pytest.raises(TypeError, match=r"fn: expected a callable"):
        damping.schedule(0.1)
    ctl = levenberg_marquardt(1.0)
    with pytest.raises(ValueError, match=r"value: expected the loss at the current parameters"):
        ctl.update(ctl.init(), value=None)
