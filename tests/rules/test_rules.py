"""Update rules behind one interface (spec 5): SGD, Adam, q-NGD family, block-diagonal,
regularized NGD; checked against NumPy reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from tests.helpers import assert_close, seeds
from tests.references.deep_linear import make_case, np_grad_tree, np_of, ref_blockdiag, ref_qngd


@st.composite
def small_cases(draw):
    depth = draw(st.integers(2, 4))
    widths = tuple(draw(st.integers(2, 5)) for _ in range(depth + 1))
    return widths, draw(st.integers(2, 8)), draw(seeds)


def update(rule, model, params, batch, state, loss=ac.MSE()):
    """``rule.update`` with the gradient and loss of ``batch`` (as arraycurv.train calls it)."""
    value, g = ac.value_and_grad(model, params, batch, loss)
    return rule.update(g, state, params, model=model, batch=batch, loss=loss, value=value)


def run_steps(rule, model, params, batch, n):
    state = rule.init(params)
    for _ in range(n):
        direction, state = update(rule, model, params, batch, state)
        params = ac.apply_direction(params, direction)
    return params, state


# --------------------------------------------------------------------------- SGD and Adam
@given(case=small_cases(), lr=st.floats(1e-3, 0.2))
def test_sgd_matches_numpy_loop(xp, case, lr):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ws, (x, y) = np_of(params), np_of(batch)
    for _ in range(3):
        g = np_grad_tree(ws, x, y)
        ws = [w - lr * gi for w, gi in zip(ws, g)]
    rule = ac.sgd(lr)
    assert rule.stateless and rule.name == "sgd" and ac.rules.is_empty_state(rule.init(params))
    out, _ = run_steps(rule, model, params, batch, 3)
    assert_close(out, ws, like=params[0], rtol=1e-10)


def np_adam(ws, x, y, lr, b1, b2, eps, n):
    """Kingma & Ba (2015) Algorithm 1, written out in NumPy."""
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    for t in range(1, n + 1):
        g = np_grad_tree(ws, x, y)
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g)]
        mhat = [mi / (1 - b1**t) for mi in m]
        vhat = [vi / (1 - b2**t) for vi in v]
        ws = [w - lr * mh / (np.sqrt(vh) + eps) for w, mh, vh in zip(ws, mhat, vhat)]
    return ws, m, v


@given(case=small_cases(), lr=st.floats(1e-3, 0.1), b1=st.floats(0.0, 0.95), b2=st.floats(0.5, 0.999))
def test_adam_matches_numpy_reference(xp, case, lr, b1, b2):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    expected, m, v = np_adam(np_of(params), *np_of(batch), lr, b1, b2, 1e-8, 4)
    rule = ac.adam(lr, b1, b2)
    assert not rule.stateless
    out, (_, state, _) = run_steps(rule, model, params, batch, 4)
    assert isinstance(state, ac.rules.AdamState) and state.count == 4
    assert_close(out, expected, like=params[0], rtol=1e-9)
    assert_close(state.mu, m, like=params[0], rtol=1e-9)
    assert_close(state.nu, v, like=params[0], rtol=1e-9)


def test_adam_float32_and_inputs_untouched(xp):
    model, params, batch = make_case(xp, (3, 4, 2), 5, 3, dtype="float32")
    before = np_of(params)
    expected, _, _ = np_adam(np_of(params), *np_of(batch), 0.01, 0.9, 0.999, 1e-8, 3)
    out, _ = run_steps(ac.adam(0.01), model, params, batch, 3)
    assert_close(out, expected, like=params[0], rtol=1e-4)
    assert_close(params, before, like=params[0], rtol=0.0)


# --------------------------------------------------------------------------- q-NGD family
@settings(max_examples=15)
@given(case=small_cases(), lr=st.floats(1e-3, 1.0), q=st.floats(1.0, 4.0))
def test_curvature_rules_scale_reference_directions(xp, case, lr, q):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ws, bt = np_of(params), np_of(batch)
    damping = 0.05  # keeps the reference well conditioned for every draw
    cases = [
        (ac.qngd(lr, q, damping=damping), ref_qngd(ws, *bt, q, 0.0, damping)),
        (ac.ngd(lr, damping=damping, form="full"), ref_qngd(ws, *bt, 1.0, 0.0, damping)),
        (ac.sqrt_ngd(lr, damping=damping, form="dual"), ref_qngd(ws, *bt, 2.0, 0.0, damping)),
        (ac.qngd_blockdiag(lr, q, damping=damping), ref_blockdiag(ws, *bt, q, damping=damping)),
        (ac.ngd_d(lr, damping=damping), ref_blockdiag(ws, *bt, 1.0, damping=damping)),
        (ac.sqrt_ngd_d(lr, damping=damping), ref_blockdiag(ws, *bt, 2.0, damping=damping)),
    ]
    for rule, expected in cases:
        direction, state = update(rule, model, params, batch, rule.init(params))
        assert ac.rules.is_empty_state(state) and rule.stateless
        assert_close(ac.flatten(direction), lr * expected, like=params[0], rtol=1e-7, name=rule.name)


def test_regularized_rule_matches_si15(xp):
    model, params, batch = make_case(xp, (3, 4, 2), 5, 1)
    from tests.references.deep_linear import np_ggn_grad

    gg, g = np_ggn_grad(np_of(params), *np_of(batch))
    eps = 0.3
    expected = -0.1 * (eps + 1) * np.linalg.solve(eps * np.eye(len(g)) + gg, g)
    rule = ac.regularized_ngd(0.1, eps)
    direction, _ = update(rule, model, params, batch, rule.init(params))
    assert_close(ac.flatten(direction), expected, like=params[0], rtol=1e-10)


@given(case=small_cases(), clip=st.floats(1e-3, 1.0))
def test_clipped_rules_never_exceed_clip(xp, case, clip):
    widths, nb, seed = case
    model, params, batch = make_case(xp, widths, nb, seed)
    ws, bt = np_of(params), np_of(batch)
    for rule, unclipped in [
        (ac.ngd(0.5, clip=clip, damping=1e-3), 0.5 * ref_qngd(ws, *bt, 1.0, 0.0, 1e-3)),
        (ac.ngd_d(0.5, clip=clip, damping=1e-3), 0.5 * ref_blockdiag(ws, *bt, 1.0, damping=1e-3)),
    ]:
        d = backend.to_numpy(ac.flatten(update(rule, model, params, batch, rule.init(params))[0]))
        norm = np.linalg.norm(unclipped)
        assert np.linalg.norm(d) <= clip * (1 + 1e-12)
        expected = unclipped * min(1.0, clip / norm)
        np.testing.assert_allclose(d, expected, rtol=1e-6, atol=1e-9 * norm)


# --------------------------------------------------------------------------- names, errors
@pytest.mark.parametrize(
    "name, kw, q, block",
    [
        ("sgd", {}, math.inf, False),
        ("ngd", {}, 1.0, False),
        ("sqrt_ngd", {}, 2.0, False),
        ("qngd", {"q": 3.0}, 3.0, False),
        ("ngd_d", {}, 1.0, True),
        ("sqrt_ngd_d", {}, 2.0, True),
        ("qngd_d", {"q": 3.0}, 3.0, True),
    ],
)
def test_rule_by_name(numpy_xp, name, kw, q, block):
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 5)
    ws, bt = np_of(params), np_of(batch)
    rule = ac.rules.rule_by_name(name, 0.2, **kw)
    assert name in ac.rules.RULE_NAMES and rule.stateless
    expected = ref_blockdiag(ws, *bt, q) if block else ref_qngd(ws, *bt, q, 1e-10)
    if math.isinf(q):
        expected = -np.concatenate([g.reshape(-1) for g in np_grad_tree(ws, *bt)])
    direction, _ = update(rule, model, params, batch, rule.init(params))
    assert_close(ac.flatten(direction), 0.2 * expected, like=params[0], rtol=1e-8)


def test_rule_by_name_adam_and_regularized(numpy_xp):
    assert ac.rules.rule_by_name("adam", 0.1, b1=0.8).name == "adam"
    assert ac.rules.rule_by_name("regularized_ngd", 0.1, eps=2.0).name.startswith("regularized_ngd")
    with pytest.raises(ValueError, match=r"name: expected one of"):
        ac.rules.rule_by_name("lbfgs", 0.1)
    with pytest.raises(TypeError, match=r"qngd: .*q"):
        ac.rules.rule_by_name("qngd", 0.1)


def test_update_rule_is_frozen():
    rule = ac.sgd(0.1)
    with pytest.raises(AttributeError):  # a NamedTuple: fields cannot be assigned
        rule.name = "other"
    assert rule._replace(name="other").name == "other" and rule.name == "sgd"


def test_bad_arguments_raise_naming_them(numpy_xp):
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"lr: expected a finite real number > 0"):
            ac.sgd(bad)
    with pytest.raises(ValueError, match=r"q: expected a real number >= 1"):
        ac.qngd(0.1, 0.5)
    with pytest.raises(ValueError, match=r"q: expected"):
        ac.qngd_blockdiag(0.1, 0.0)
    with pytest.raises(ValueError, match=r"damping: expected"):
        ac.ngd(0.1, damping=-1.0)
    with pytest.raises(ValueError, match=r"damping: expected"):
        ac.ngd_d(0.1, damping=-1.0)
    with pytest.raises(ValueError, match=r"clip: expected None or a finite real number > 0"):
        ac.sqrt_ngd(0.1, clip=0.0)
    with pytest.raises(ValueError, match=r"eps: expected"):
        ac.regularized_ngd(0.1, -1.0)
    with pytest.raises(ValueError, match=r"b1: expected a number in \[0, 1\)"):
        ac.adam(0.1, b1=1.0)
    with pytest.raises(ValueError, match=r"b2: expected"):
        ac.adam(0.1, b2=-0.1)
    model, params, batch = make_case(numpy_xp, (2, 3, 2), 4, 0)
    with pytest.raises(TypeError, match=r"state: expected the state of rule.init\(params\).*scale_by_adam"):
        update(ac.adam(0.1), model, params, batch, None)
    with pytest.raises(TypeError, match=r"state: expected an AdamState"):
        update(ac.adam(0.1), model, params, batch, (ac.rules.EmptyState(), None, ac.rules.EmptyState()))
    with pytest.raises(ValueError, match=r"direction\[1\]: expected shape \(2, 3\)"):
        ac.apply_direction(params, (params[0], params[0]))
    with pytest.raises(ValueError, match=r"direction: expected a tuple of 2 arrays"):
        ac.apply_direction(params, (params[0],))


def test_nan_gradient_raises_in_sgd_and_adam(numpy_xp):
    model, params, (x, y) = make_case(numpy_xp, (2, 3, 2), 4, 0)
    bad = (x, y * np.nan)
    for rule in (ac.sgd(0.1), ac.adam(0.1)):
        with pytest.raises(ValueError, match=r"expected finite values"):
            update(rule, model, params, bad, rule.init(params))
