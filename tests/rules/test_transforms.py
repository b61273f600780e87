"""Composable transforms (optax style): chain, partition, scale_by_lr (scalar and
schedule), momentum, ema, clip_by_norm, scale_by_adam and precondition, each checked
against a sequence computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend
from arraycurv.rules import EmptyState, chain, is_empty_state, is_stateless
from arraycurv.rules import transforms as tx
from arraycurv.rules.transforms import clip_by_norm, ema, momentum, partition, precondition, scale_by_adam, scale_by_lr
from tests.helpers import assert_close
from tests.references.deep_linear import make_case, np_grad_tree, np_of


def tree(xp, *rows, dtype="float64"):
    return tuple(xp.asarray(r, dtype=getattr(xp, dtype)) for r in rows)


def run(rule, grads_seq, params):
    """Apply ``rule`` to a sequence of gradients; returns the updates and final state."""
    state = rule.init(params)
    out = []
    for g in grads_seq:
        u, state = rule.update(g, state, params)
        out.append(u)
    return out, state


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chain_momentum_then_lr_matches_hand_sequence(xp, dtype):
    params = tree(xp, [0.0, 0.0], dtype=dtype)
    grads = [tree(xp, [1.0, 2.0], dtype=dtype), tree(xp, [3.0, -1.0], dtype=dtype), tree(xp, [0.0, 1.0], dtype=dtype)]
    rule = chain(momentum(0.5), scale_by_lr(0.1))
    out, state = run(rule, grads, params)
    # m1 = g1; m2 = g2 + 0.5 m1 = (3.5, 0); m3 = g3 + 0.5 m2 = (1.75, 1); updates -0.1 m
    for u, expected in zip(out, [(-0.1, -0.2), (-0.35, 0.0), (-0.175, -0.1)]):
        assert_close(u[0], np.array(expected), like=params[0], rtol=1e-6)
    assert isinstance(state[0], tx.MomentumState) and isinstance(state[1], EmptyState)
    assert_close(state[0].trace[0], np.array([1.75, 1.0]), like=params[0], rtol=1e-6)


def test_nesterov_momentum(numpy_xp):
    params = tree(numpy_xp, [0.0])
    out, _ = run(momentum(0.5, nesterov=True), [tree(numpy_xp, [1.0])] * 2, params)
    # m1 = 1, out1 = 1 + 0.5 * 1; m2 = 1 + 0.5 = 1.5, out2 = 1 + 0.75
    assert [float(u[0][0]) for u in out] == [1.5, 1.75]


def test_scale_by_lr_schedule_counts_steps(xp):
    params = tree(xp, [0.0])
    rule = scale_by_lr(lambda k: 1.0 / (k + 1))
    out, state = run(rule, [tree(xp, [2.0])] * 3, params)
    assert [float(backend.to_numpy(u[0])[0]) for u in out] == pytest.approx([-2.0, -1.0, -2.0 / 3.0], rel=1e-15)
    assert state == tx.ScheduleCountState(3) and not is_stateless(rule)
    up, _ = run(scale_by_lr(0.25, flip_sign=False), [tree(xp, [2.0])], params)
    assert float(backend.to_numpy(up[0][0])[0]) == 0.5
    assert is_stateless(scale_by_lr(0.1))


def test_ema_with_and_without_debias(numpy_xp):
    params = tree(numpy_xp, [0.0])
    grads = [tree(numpy_xp, [2.0]), tree(numpy_xp, [4.0])]
    out, state = run(ema(0.5), grads, params)
    # e1 = 1, debiased 1 / 0.5 = 2; e2 = 0.5 + 2 = 2.5, debiased 2.5 / 0.75
    assert [float(u[0][0]) for u in out] == pytest.approx([2.0, 2.5 / 0.75], rel=1e-15)
    assert isinstance(state, tx.EmaState) and state.count == 2
    raw, _ = run(ema(0.5, debias=False), grads, params)
    assert [float(u[0][0]) for u in raw] == [1.0, 2.5]


def test_clip_by_norm_over_all_tensors(xp):
    params = tree(xp, [0.0], [0.0])
    (u,), _ = run(clip_by_norm(1.0), [tree(xp, [3.0], [4.0])], params)
    assert_close(u, (np.array([0.6]), np.array([0.8])), like=params[0], rtol=1e-12)
    (u,), _ = run(clip_by_norm(1.0), [tree(xp, [0.3], [0.4])], params)
    assert_close(u, (np.array([0.3]), np.array([0.4])), like=params[0], rtol=0.0)


def test_scale_by_adam_hand_values(numpy_xp):
    params = tree(numpy_xp, [0.0])
    out, state = run(scale_by_adam(0.5, 0.5, 0.0), [tree(numpy_xp, [2.0]), tree(numpy_xp, [0.0])], params)
    # t=1: m=1, v=2, mhat=2, vhat=4 -> 1; t=2: m=.5, v=1, mhat=v hat*... = (2/3)/sqrt(4/3) = 1/sqrt(3)
    assert [float(u[0][0]) for u in out] == pytest.approx([1.0, 1.0 / math.sqrt(3.0)], rel=1e-14)
    assert isinstance(state, tx.AdamState) and state.count == 2


def test_partition_applies_a_transform_per_group(xp):
    params = tree(xp, [0.0], [0.0], [0.0])
    grads = tree(xp, [1.0], [2.0], [3.0])
    rule = partition({"a": scale_by_lr(0.1), "b": chain(momentum(0.5), scale_by_lr(1.0))}, ("a", "b", "a"))
    out, state = run(rule, [grads, grads], params)
    # group a: -0.1 g; group b: momentum 2 then 2 + 0.5 * 2 = 3
    assert_close(out[0], (np.array([-0.1]), np.array([-2.0]), np.array([-0.3])), like=params[0], rtol=1e-12)
    assert_close(out[1], (np.array([-0.1]), np.array([-3.0]), np.array([-0.3])), like=params[0], rtol=1e-12)
    assert isinstance(state, tx.PartitionState) and set(state.inner_states) == {"a", "b"}
    # labels from a callable or an object with a ``labels`` tuple; a group without tensors is skipped
    class Groups:
        labels = ("a", "a", "a")

    for labels in (lambda p: ("a",) * len(p), Groups()):
        rule = partition({"a": scale_by_lr(1.0), "b": momentum(0.5)}, labels)
        (u,), _ = run(rule, [grads], params)
        assert_close(u, tuple(-np.array([v]) for v in (1.0, 2.0, 3.0)), like=params[0], rtol=0.0)


def test_partition_errors(numpy_xp):
    params = tree(numpy_xp, [0.0], [0.0])
    with pytest.raises(ValueError, match=r"labels: expected one label per parameter tensor \(2\)"):
        partition({"a": scale_by_lr(1.0)}, ("a",)).init(params)
    with pytest.raises(ValueError, match=r"labels: expected labels among \('a',\), got 'c'"):
        partition({"a": scale_by_lr(1.0)}, ("a", "c")).init(params)
    with pytest.raises(TypeError, match=r"transforms\['a'\]: expected an UpdateRule"):
        partition({"a": 3}, ("a", "a"))


def test_precondition_flips_the_direction_and_checks_the_loss(numpy_xp):
    params = tree(numpy_xp, [1.0, 1.0])
    seen = []

    def direction_fn(model, params, batch, *, loss):
        seen.append(loss)
        return tree(numpy_xp, [-1.0, -2.0])  # a descent direction d = -P g

    rule = chain(precondition(direction_fn), scale_by_lr(0.5))
    assert is_stateless(rule)
    u, state = rule.update(params, rule.init(params), params, model=None, batch=None, loss=ac.SoftmaxCrossEntropy())
    assert [float(v) for v in u[0]] == [-0.5, -1.0] and is_empty_state(state)
    assert seen == [ac.SoftmaxCrossEntropy()]
    fixed = precondition(direction_fn, loss=ac.MSE())
    with pytest.raises(ValueError, match=r"loss: expected the loss this rule was built with"):
        fixed.update(params, EmptyState(), params, model=None, batch=None, loss=ac.SoftmaxCrossEntropy())
    with pytest.raises(TypeError, match=r"direction_fn: expected a callable"):
        precondition(3)


def test_ngd_is_a_chain_of_precondition_and_lr(numpy_xp):
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 4)
    value, g = ac.value_and_grad(model, params, batch)
    composed = chain(precondition(lambda m, p, b, *, loss: ac.qngd_direction(m, p, b, 1.0, loss=loss)),
                     scale_by_lr(0.3))
    extra = dict(model=model, batch=batch, loss=ac.MSE(), value=value)
    a, _ = composed.update(g, composed.init(params), params, **extra)
    b, _ = ac.ngd(0.3).update(g, ac.ngd(0.3).init(params), params, **extra)
    assert_close(a, b, like=params[0], rtol=0.0)
    # and sgd is scale_by_lr on the gradient
    s, _ = ac.sgd(0.3).update(g, ac.sgd(0.3).init(params), params, **extra)
    expected = [-0.3 * gi for gi in np_grad_tree(np_of(params), *np_of(batch))]
    assert_close(s, expected, like=params[0], rtol=1e-12)


def test_transforms_leave_inputs_untouched(numpy_xp):
    params = tree(numpy_xp, [1.0, 2.0])
    grads = tree(numpy_xp, [3.0, 4.0])
    before = [np.array(g) for g in grads]
    for rule in (momentum(0.9), ema(0.9), clip_by_norm(1.0), scale_by_adam(), scale_by_lr(lambda k: 0.1)):
        run(rule, [grads, grads], params)
    np.testing.assert_array_equal(grads[0], before[0])


def test_transform_argument_errors(numpy_xp):
    with pytest.raises(ValueError, match=r"beta: expected a number in \[0, 1\)"):
        momentum(1.0)
    with pytest.raises(ValueError, match=r"decay: expected a number in \[0, 1\)"):
        ema(-0.1)
    with pytest.raises(ValueError, match=r"lr: expected a finite real number > 0"):
        scale_by_lr(0.0)
    with pytest.raises(ValueError, match=r"max_norm: expected a finite real number > 0"):
        clip_by_norm(-1.0)
    for bad_eps in (-1.0, math.nan):
        with pytest.raises(ValueError, match=r"^eps: expected a finite number >= 0"):
            scale_by_adam(eps=bad_eps)
    params = tree(numpy_xp, [1.0])
    with pytest.raises(ValueError, match=r"lr\(0\): expected a finite real number > 0"):
        run(scale_by_lr(lambda k: -1.0), [params], params)
    with pytest.raises(TypeError, match=r"rules\[1\]: expected an UpdateRule"):
        chain(scale_by_lr(1.0), "sgd")
    with pytest.raises(TypeError, match=r"state: expected a MomentumState"):
        momentum(0.5).update(params, None, params)
    with pytest.raises(TypeError, match=r"state: expected the state of rule.init\(params\), a tuple of 2 states"):
        chain(momentum(0.5), scale_by_lr(1.0)).update(params, None, params)
