"""The validation front end (arraycurv.validation): scalar checks, check_call's error
categories naming the caller's argument, and "validate once" (nested calls do not re-run it)."""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend, validation
from arraycurv.testing import assert_close
from arraycurv.validation import (
    ArgumentTypeError,
    check_bool,
    check_call,
    check_clip,
    check_int,
    check_lr,
    check_nonneg,
    check_positive_int,
    check_q,
    check_rcond,
    check_real,
)

MSE, CE = ac.MSE(), ac.SoftmaxCrossEntropy()


# ----------------------------------------------------------------------------- scalars
def test_check_real_accepts_numbers_and_0d_arrays():
    assert check_real(2, "a") == 2.0 and isinstance(check_real(2, "a"), float)
    assert check_real(np.float32(0.5), "a") == 0.5
    assert check_real(np.asarray(1.5), "a") == 1.5
    assert check_real(math.inf, "q", lo=1, allow_inf=True) == math.inf
    assert check_real(None, "r", allow_none=True) is None
    assert check_real(0.0, "a", lo=0) == 0.0 and check_real(1.0, "a", lo=0, hi=1) == 1.0


@pytest.mark.parametrize(
    "value, kwargs, exc, match",
    [
        ("1.0", {}, ArgumentTypeError, r"^a: expected a real number, got '1.0'"),
        (True, {}, ArgumentTypeError, r"^a: expected a real number, got True"),
        (None, {}, ArgumentTypeError, r"^a: expected a real number, got None"),
        (np.ones(2), {}, ArgumentTypeError, r"^a: expected a real number"),
        (math.nan, {}, ValueError, r"^a: expected a finite real number, got nan"),
        (math.nan, {"allow_inf": True}, ValueError, r"^a: expected a real number or math.inf"),
        (-math.inf, {"allow_inf": True}, ValueError, r"^a: expected a real number or math.inf"),
        (math.inf, {}, ValueError, r"^a: expected a finite real number"),
        (0.0, {"lo": 0, "lo_open": True}, ValueError, r"^a: expected a number > 0, got 0.0"),
        (2.0, {"lo": 0, "hi": 1, "hi_open": True}, ValueError, r"^a: expected a number in \[0, 1\), got 2.0"),
        (-1.0, {"want": "a damping >= 0"}, None, None),
    ],
)
def test_check_real_errors_name_the_argument(value, kwargs, exc, match):
    if exc is None:  # ``want`` replaces every message, bounds included
        with pytest.raises(ValueError, match=r"^a: expected a damping >= 0, got -1.0"):
            check_real(value, "a", lo=0, **kwargs)
        return
    with pytest.raises(exc, match=match):
        check_real(value, "a", **kwargs)


@pytest.mark.parametrize("bad, got", [(0, "0"), (1, "1"), ("yes", "'yes'"), (None, "None"),
                                      (np.bool_(True), "np.True_"), (np.ones(3, bool), "shape (3,)")])
def test_check_bool_takes_only_true_or_false(bad, got):
    assert check_bool(True, "flag") is True and check_bool(False, "flag") is False
    with pytest.raises(ArgumentTypeError, match=rf"^flag: expected True or False, got {re.escape(got)}$"):
        check_bool(bad, "flag")


def test_argument_type_error_is_both_type_and_value_error():
    for cls in (TypeError, ValueError):
        with pytest.raises(cls):
            check_real("x", "a")


def test_integer_and_named_scalar_checks():
    assert check_int(np.int64(3), "n", lo=1) == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_positive_int(2, "num_samples") == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"^num_samples: expected a positive integer"):
            check_positive_int(bad, "num_samples")
    for bad in (1.0, True, "2", None):
        with pytest.raises(ValueError, match=r"^n: expected an integer >= 1"):
            check_int(bad, "n", lo=1)
    with pytest.raises(ValueError, match=r"^i: expected an integer in \[1, 3\], got 4"):
        check_int(4, "i", lo=1, hi=3)
    assert check_q(2) == 2.0 and check_q(math.inf) == math.inf
    for bad in (0.5, math.nan, "2", True):
        with pytest.raises(ValueError, match=r"^q: expected a real number >= 1 \(math.inf for SGD\)"):
            check_q(bad)
    assert check_nonneg(0, "damping") == 0.0 and check_nonneg(math.inf, "eps", allow_inf=True) == math.inf
    for bad in (-1e-3, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^damping: expected a real number >= 0 \(finite\)"):
            check_nonneg(bad, "damping")
    assert check_rcond(None) is None and check_rcond(1e-8) == 1e-8
    with pytest.raises(ValueError, match=r"^rcond: expected None or a finite real number >= 0"):
        check_rcond(-1.0)
    assert check_lr(0.1) == 0.1
    for bad in (0.0, -1.0, math.nan, math.inf, "0.1"):
        with pytest.raises(ValueError, match=r"^lr: expected a finite real number > 0"):
            check_lr(bad)
    assert check_clip(None) is None and check_clip(2) == 2.0
    with pytest.raises(ValueError, match=r"^clip: expected None or a finite real number > 0"):
        check_clip(0.0)


# ----------------------------------------------------------------------------- check_call
def _cases(xp):
    """(model, params, x, y, loss) for a deep linear network and an MLP."""
    out = []
    for model, loss in ((ac.DeepLinear((3, 4, 2)), MSE), (ac.mlp((3, 4, 2)), MSE), (ac.mlp((3, 4, 2)), CE)):
        params = ac.init_params(model, 0, xp)
        x = backend.normal(1, (5, 3), xp)
        y = backend.normal(2, (5, 2), xp) if loss is MSE else backend.integers(2, 0, 2, (5,), xp)
        out.append((model, params, x, y, loss))
    return out


def _calls(model, params, x, y, loss, v):
    """Public verbs with the argument of each call given by name."""
    return {
        "forward": lambda params=params, x=x: ac.forward(model, params, x),
        "jvp": lambda params=params, x=x, v=v: ac.jvp(model, params, x, v),
        "jacobian": lambda params=params, x=x: ac.jacobian(model, params, x),
        "value_and_grad": lambda params=params, x=x, y=y: ac.value_and_grad(model, params, (x, y), loss),
        "ggn_vp": lambda params=params, x=x, y=y, v=v: ac.ggn_vp(model, params, (x, y), v, loss),
        "ggn_matrix": lambda params=params, x=x, y=y: ac.ggn_matrix(model, params, (x, y), loss),
        "hvp": lambda params=params, x=x, y=y, v=v: ac.hvp(model, params, (x, y), v, loss),
    }


def _x_name(verb):
    return "x" if verb in ("forward", "jvp", "jacobian") else "batch x"


def test_error_categories_name_the_argument(xp):
    """List instead of array, NaN/Inf, empty batch, wrong width, mixed namespaces: each is a
    ValueError/TypeError whose message starts with the caller's argument."""
    other = backend.namespace_by_name("array_api_strict" if backend.namespace_name(xp) == "numpy" else "numpy")
    for model, params, x, y, loss in _cases(xp):
        v = ac.init_params(model, 3, xp)
        for verb, call in _calls(model, params, x, y, loss, v).items():
            xn = _x_name(verb)
            bad = {
                "list": (dict(x=backend.to_numpy(x).tolist()), rf"^{xn}: expected an array"),
                "list params": (dict(params=[backend.to_numpy(p).tolist() for p in params]),
                                r"^params\[0\]: expected an array"),
                "nan": (dict(x=x * float("nan")), rf"^{xn}: expected finite values"),
                "inf params": (dict(params=(params[0] * float("inf"),) + tuple(params[1:])),
                               r"^params\[0\]: expected finite values"),
                "empty": (dict(x=x[:0, :]), rf"^{xn}: expected a batch of at least one sample"),
                "width": (dict(x=backend.normal(1, (5, 4), xp)), rf"^{xn}: expected shape \(\*, 3\)"),
                "namespace": (dict(x=backend.from_numpy(backend.to_numpy(x), other)),
                              rf"^{xn}: expected an array of namespace"),
            }
            if verb in ("jvp", "ggn_vp", "hvp"):
                bad["nan v"] = (dict(v=(v[0] * float("nan"),) + tuple(v[1:])), r"^v\[0\]: expected finite values"
                                if verb != "jvp" else r"^tangent\[0\]: expected finite values")
            if "batch" in xn:
                bad["empty batch"] = (dict(x=x[:0, :], y=y[:0, ...]), r"^batch x: expected a batch of at least one")
                wrong_y = backend.normal(2, (5, 3), xp) if loss is MSE else backend.integers(2, 0, 3, (5,), xp) + 2
                bad["target"] = (dict(y=wrong_y), r"^batch y: expected")
                bad["list y"] = (dict(y=backend.to_numpy(y).tolist()), r"^batch y: expected")
            for _what, (kwargs, match) in bad.items():
                with pytest.raises((ValueError, TypeError), match=match):
                    call(**kwargs)


def test_check_call_returns_the_namespace_and_checks_dtypes(xp):
    model, params, x, y, loss = _cases(xp)[0]
    assert check_call(model, params, batch=(x, y), loss=loss) is backend.namespace_of(x=x)
    with pytest.raises(TypeError, match=r"^batch x: expected dtype \S*float64 \(like params\), got \S*float32"):
        check_call(model, params, batch=(xp.astype(x, xp.float32), y), loss=loss)
    with pytest.raises(TypeError, match=r"^x: expected dtype float32 or float64 .*got \S*int64"):
        check_call(model, params, x=xp.astype(x, xp.int64))
    with pytest.raises(TypeError, match=r"^params\[0\]: expected dtype float32 or float64"):
        check_call(model, tuple(xp.astype(p, xp.int64) for p in params))
    with pytest.raises(ValueError, match=r"^cotangent: expected shape \(5, 2\)"):
        check_call(model, params, x=x, cotangent=y[:, :1])
    with pytest.raises(ValueError, match=r"^m: expected shape \(4, 4\)"):
        check_call(model, params, arrays=(("m", xp.eye(3, dtype=xp.float64), (4, 4)),))
    with pytest.raises(TypeError, match=r"^model: expected a model of arraycurv .*got 'net' \(param_shapes is not"):
        check_call("net", params)


def test_cached_structure_still_checks_values(xp):
    """Repeating a valid call's shapes with bad values still raises, naming the argument:
    NaN/Inf anywhere and the range of class labels are checked on every call (guards
    against any reuse of an earlier call's verdict)."""
    for model, params, x, y, loss in _cases(xp):
        v = ac.init_params(model, 3, xp)
        call = _calls(model, params, x, y, loss, v)
        for verb in ("ggn_vp", "value_and_grad", "jvp"):
            call[verb]()  # warm the cache with a valid call
            call[verb]()
            xn = _x_name(verb)
            with pytest.raises(ValueError, match=rf"^{xn}: expected finite values"):
                call[verb](x=x * float("nan"))
            with pytest.raises(ValueError, match=r"^params\[1\]: expected finite values"):
                call[verb](params=(params[0], params[1] + float("inf")) + tuple(params[2:]))
            if verb != "value_and_grad":
                with pytest.raises(ValueError, match=r"^(v|tangent)\[0\]: expected finite values"):
                    call[verb](v=(v[0] * float("nan"),) + tuple(v[1:]))
            if verb != "jvp" and loss is CE:
                with pytest.raises(ValueError, match=r"^batch y: expected labels in \[0, 2\)"):
                    call[verb](y=y + 2)
            if verb != "jvp" and loss is MSE:
                with pytest.raises(ValueError, match=r"^batch y: expected finite values"):
                    call[verb](y=y * float("inf"))
        # a finite call whose entries sum to an overflow still passes (per-array fallback)
        big = (params[0] * 0 + 1e308,) + tuple(params[1:])
        for _ in range(2):
            assert check_call(model, big, x=x) is check_call(model, params, x=x)


def test_cached_structure_sees_arrays_changed_in_place():
    """The same array objects, mutated in place after a valid (cached) call, are checked
    again: the cache holds the structure of a call, never a verdict on values."""
    model = ac.mlp((3, 4, 2))
    params = tuple(np.array(p) for p in ac.init_params(model, 0))
    x, y = np.ones((5, 3)), np.zeros((5, 2))
    v = tuple(np.array(p) for p in ac.init_params(model, 1))
    for _ in range(2):
        ac.ggn_vp(model, params, (x, y), v)
    for arr, name in ((params[2], r"params\[2\]"), (v[3], r"v\[3\]"), (x, "batch x"), (y, "batch y")):
        arr.flat[0] = np.nan
        with pytest.raises(ValueError, match=rf"^{name}: expected finite values"):
            ac.ggn_vp(model, params, (x, y), v)
        arr.flat[0] = 0.0
        ac.ggn_vp(model, params, (x, y), v)  # valid again


# ----------------------------------------------------------------------------- validate once
@pytest.fixture
def count_check_call(monkeypatch):
    """Replace check_call in every arraycurv module that holds it; returns the call log."""
    import arraycurv.directions  # noqa: F401  (import lazily loaded modules before patching:
    import arraycurv.dynamics  # noqa: F401   a module imported under the patch would keep it)

    calls = []
    original = validation.check_call

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    for name, mod in list(sys.modules.items()):
        if name.startswith("arraycurv") and getattr(mod, "check_call", None) is original:
            monkeypatch.setattr(mod, "check_call", counting)
    return calls


@pytest.mark.parametrize("loss", [MSE, CE], ids=["mse", "ce"])
def test_nested_calls_validate_once(xp, count_check_call, loss):
    """A public call runs check_call once; the verbs it builds on (ggn_vp inside ggn_matrix,
    jvp/vjp inside the default ggn_vp, the gradient and GGN inside q-NGD) are trusted."""
    model = ac.DeepLinear((3, 4, 2))
    params = ac.init_params(model, 0, xp)
    x = backend.normal(1, (5, 3), xp)
    y = backend.normal(2, (5, 2), xp) if loss is MSE else backend.integers(2, 0, 2, (5,), xp)
    v = ac.init_params(model, 3, xp)
    calls = [
        lambda: ac.ggn_vp(model, params, (x, y), v, loss),
        lambda: ac.ggn_matrix(model, params, (x, y), loss),
        lambda: ac.ggn_block_diag(model, params, (x, y), loss),
        lambda: ac.hessian_matrix(model, params, (x, y), loss),
        lambda: ac.value_and_grad(model, params, (x, y), loss),
        lambda: ac.qngd_direction(model, params, (x, y), 2.0, loss=loss),
        lambda: ac.qngd_direction(model, params, (x, y), 1.0, form="full", loss=loss),
        lambda: ac.qngd_direction(model, params, (x, y), 1.0, form="dual", loss=loss),
        lambda: ac.qngd_blockdiag_direction(model, params, (x, y), 1.0, loss=loss),
    ]
    for call in calls:
        count_check_call.clear()
        call()
        assert len(count_check_call) == 1, call


def test_dispatch_object_is_the_validated_default(xp):
    model, params, x, y, loss = _cases(xp)[0]
    v = ac.init_params(model, 3, xp)
    default = ac.ggn_vp.dispatch(object)
    got = default(model, params, (x, y), v, loss)
    for a, b in zip(got, ac.ggn_vp(model, params, (x, y), v, loss)):
        assert_close(a, b, like=x)
    with pytest.raises(ValueError, match=r"^v\[0\]: expected finite values"):
        default(model, params, (x, y), (v[0] * float("nan"), v[1]), loss)
