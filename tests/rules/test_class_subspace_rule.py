"""The class-subspace quasi-Newton rule (Tuddenham et al. 2020 eq 6 with moving averages)."""

from __future__ import annotations

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import subspace as cs
from arraycurv.directions import class_subspace as dcs
from arraycurv.rules import class_subspace as rcs
from arraycurv.rules.registry import make_rule, rule_spec
from tests.helpers import assert_close, assert_tree_close

CE = ac.SoftmaxCrossEntropy()


def _data(xp, seed, b=12, dtype="float64"):
    model = ac.mlp((4, 5, 3), "tanh")
    params = ac.init_params(model, 0, xp, dtype=dtype)
    x = backend.normal(seed, (b, 4), xp, dtype=dtype)
    y = xp.asarray(np.random.default_rng(seed).integers(0, 3, size=b))
    return model, params, (x, y)


def _step(rule, state, model, params, batch):
    value, g = ac.value_and_grad(model, params, batch, CE)
    return rule.update(g, state, params, model=model, batch=batch, loss=CE, value=value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["orthogonal", "exact"])
def test_without_averaging_the_rule_is_the_direction_of_eq6(xp, dtype, variant):
    model, params, batch = _data(xp, 1, dtype=dtype)
    rule = rcs.class_subspace_newton(0.2, decay=0.0, variant=variant)
    updates, state = _step(rule, rule.init(params), model, params, batch)
    want = dcs.class_subspace_direction(model, params, batch, lr=0.2, loss=CE, variant=variant)
    assert_tree_close(updates, want, like=params[0], rtol=1e-9 if dtype == "float64" else 2e-4)
    assert state[0].count == 1


def test_moving_averages_of_v_and_lambda(xp):
    """Two steps with decay 1/2: the second step uses the debiased averages
    (v1 + 2 v2) / 3 (rescaled to unit length) and (lambda1 + 2 lambda2) / 3 in eq 6."""
    model, params, b1 = _data(xp, 1)
    _, _, b2 = _data(xp, 2)
    rule = rcs.class_subspace_newton(0.1, decay=0.5)
    _, state = _step(rule, rule.init(params), model, params, b1)
    params2 = tuple(p * 1.01 for p in params)
    updates, state = _step(rule, state, model, params2, b2)
    s1, s2 = cs.class_subspace(model, params, b1), cs.class_subspace(model, params2, b2)
    vec = tuple((a + 2 * b) / 3 for a, b in zip(s1.vectors, s2.vectors))
    nrm = np.sqrt(sum(np.sum(backend.to_numpy(v).reshape(3, -1) ** 2, axis=1) for v in vec))
    unit = tuple(v / xp.reshape(backend.from_numpy(nrm, xp), (-1,) + (1,) * (v.ndim - 1)) for v in vec)
    lam = (s1.eigenvalues + 2 * s2.eigenvalues) / 3
    _, g = ac.value_and_grad(model, params2, b2, CE)
    assert_tree_close(updates, dcs.class_subspace_newton_direction(g, unit, lam, 0.1))
    assert state[0].count == 2
    assert_close(state[0].eigenvalues, 0.25 * s1.eigenvalues + 0.5 * s2.eigenvalues)


def test_registered_and_trains(xp):
    spec = rule_spec("class_subspace_newton")
    assert spec.factory is rcs.class_subspace_newton and "eq (6)" in spec.equation
    model, params, batch = _data(xp, 3, b=30)
    rule = make_rule("class_subspace_newton", 0.05, damping=1.0)
    res = ac.train(model, params, batch, rule, 20, loss=CE)
    losses = np.asarray(res.losses, dtype=float)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_errors(xp):
    with pytest.raises(ValueError, match="decay: expected a number in"):
        rcs.class_subspace_newton(0.1, decay=1.0)
    with pytest.raises(ValueError, match="variant: expected one of"):
        rcs.class_subspace_newton(0.1, variant="full")
    with pytest.raises(ValueError, match="lr: expected"):
        rcs.class_subspace_newton(-0.1)
    model, params, batch = _data(xp, 0)
    rule = rcs.scale_by_class_subspace(0.1)
    with pytest.raises(TypeError, match="state: expected a ClassSubspaceState"):
        rule.update(params, (), params, model=model, batch=batch, loss=CE)
