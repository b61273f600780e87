"""arraycurv.testing and tests/cases.py: the comparison helpers themselves, and every
fast curvature form of every case in ``CASES`` against the generic default and against
the materialized matrix-free products (``materialize``), with the inputs left untouched."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend, testing
from arraycurv.testing import assert_close, assert_tree_close, default_form, materialize
from tests.cases import CASE_IDS, CASES
from tests.references.curvature import npf


# ---------------------------------------------------------------- the helpers
def test_assert_close_checks_values_namespace_dtype_and_device(xp):
    a = xp.asarray([1.0, 2.0], dtype=xp.float64)
    assert_close(a, np.array([1.0, 2.0 + 1e-12]), like=a)
    assert_close((a, a), (np.array([1.0, 2.0]), np.array([1.0, 2.0])), like=a)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_close(a, np.array([1.0, 2.1]))
    with pytest.raises(AssertionError, match="dtype"):
        assert_close(xp.astype(a, xp.float32), np.array([1.0, 2.0]), like=a)
    with pytest.raises(AssertionError, match="namespace"):
        assert_close(a, np.array([1.0, 2.0]), like=backend.from_numpy([1.0, 2.0], _other(xp)))
    with pytest.raises(AssertionError, match="shape"):
        assert_close(a, np.array([1.0, 2.0, 3.0]))
    # float32 gets the looser default tolerance, float64 the tight one
    assert_close(xp.astype(a, xp.float32), np.array([1.0, 2.0 + 1e-4]))
    with pytest.raises(AssertionError):
        assert_close(a, np.array([1.0, 2.0 + 1e-4]))


def _other(xp):
    """A namespace other than ``xp``'s."""
    import array_api_strict

    return array_api_strict if backend.namespace_name(xp) != "array_api_strict" else backend.host_namespace()


def test_assert_tree_close_uses_one_scale_for_the_tuple():
    big, small = np.array([100.0]), np.array([1e-3])
    assert_tree_close((big, small + 1e-8), (big, small))
    with pytest.raises(AssertionError):
        assert_close((big, small + 1e-8), (big, small))


def test_materialize_recovers_a_known_matrix(xp):
    a = np.arange(12.0).reshape(4, 3) - 5.0
    a_xp = backend.from_numpy(a, xp)

    def op(v):
        # parameter shapes ((2,), (1, 2)) -> flat vector of length 3 -> A v (4,)
        flat = xp.concat([v[0], xp.reshape(v[1], (-1,))])
        return xp.matmul(a_xp[:, :3], flat)

    m = materialize(op, ((2,), (1, 1)), like=a_xp)
    assert_close(m, a, like=a_xp)
    m2 = materialize(lambda v: tuple(2.0 * t for t in v), ((2,), (3,)), like=a_xp)
    assert_close(m2, 2.0 * np.eye(5), like=a_xp)
    assert_close(materialize(lambda v: (3.0 * v[0],), ((2,),)), 3.0 * np.eye(2))


def test_default_form_is_the_object_implementation():
    unwrap = inspect.unwrap
    assert unwrap(default_form(ac.ggn_vp)) is unwrap(ac.ggn_vp.dispatch(object))
    assert unwrap(default_form(ac.ggn_vp)) is not unwrap(ac.ggn_vp.dispatch(ac.DeepLinear))
    with pytest.raises(TypeError, match="fn: expected a functools.singledispatch generic"):
        default_form(len)


def test_strategies_build_valid_models():
    from hypothesis import given, settings

    @settings(max_examples=5)
    @given(m=testing.mlp_models(max_depth=2), c=testing.cnn_models(max_hw=6), w=testing.widths(max_depth=2))
    def check(m, c, w):
        assert ac.params.num_params(ac.param_shapes(m)) > 0 and ac.params.num_params(ac.param_shapes(c)) > 0
        assert 2 <= len(w) <= 3

    check()


# ------------------------------------------------- every case: fast form = default form
def _snapshot(params, batch):
    return [backend.to_numpy(a).copy() for a in (*params, *batch)]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fast_forms_equal_the_default_and_materialized_products(xp, case):
    model, params, batch = case.build(xp)
    x, _ = batch
    before = _snapshot(params, batch)
    shapes = ac.param_shapes(model)
    rtol = 10 * testing.RTOL[case.dtype]

    ggn = ac.ggn_matrix(model, params, batch, case.loss)
    ref = materialize(lambda v: default_form(ac.ggn_vp)(model, params, batch, v, case.loss), shapes, like=x)
    assert_close(ggn, ref, like=x, rtol=rtol)
    assert_close(materialize(lambda v: ac.ggn_vp(model, params, batch, v, case.loss), shapes, like=x), ref,
                 like=x, rtol=rtol)
    assert_close(default_form(ac.ggn_matrix)(model, params, batch, case.loss), ref, like=x, rtol=rtol)

    hess = ac.hessian_matrix(model, params, batch, case.loss)
    assert_close(materialize(lambda v: ac.hvp(model, params, batch, v, case.loss), shapes, like=x), hess,
                 like=x, rtol=rtol)

    jac = ac.jacobian(model, params, x)
    jv = materialize(lambda v: ac.jvp(model, params, x, v)[1], shapes, like=x)
    assert_close(jac, npf(jv).reshape(jac.shape), like=x, rtol=rtol)
    assert_close(default_form(ac.jacobian)(model, params, x), npf(jac).reshape(jac.shape), like=x, rtol=rtol)

    loss, grad = ac.value_and_grad(model, params, batch, case.loss)
    loss_d, grad_d = default_form(ac.value_and_grad)(model, params, batch, case.loss)
    assert_close(loss, npf(loss_d), like=x, rtol=rtol)
    assert_tree_close(grad, grad_d, like=x, rtol=rtol)

    for got, want in zip(_snapshot(params, batch), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skip_xp_backends("numpy", "strict", "torch", "cupy", reason="a check of the read-only backend")
def test_the_read_only_backend_makes_inputs_read_only(xp):
    """The ``numpy_readonly`` backend of the xp fixture: every array built through it
    (directly or by the seeded backend draws) has the writeable flag off."""
    arrays = [xp.asarray([1.0, 2.0]), xp.ones((2, 2)), backend.normal(0, (3,), xp),
              backend.normal(0, (3,), xp, dtype="float32"), backend.integers(0, 0, 3, (2,), xp),
              *xp.linalg.eigh(xp.eye(2))]
    for a in arrays:
        assert not a.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            a[0, ...] = 0.0
    model, params, batch = CASES[0].build(xp)
    assert all(not a.flags.writeable for a in (*params, *batch))
