"""Layer checks run once at the public boundary (docs/design.md "Validation at the boundary"):
the passes of a Sequential run their layers trusted, a direct layer call still checks, and
the trusted state never leaks out of a pass (not even one that raised)."""

from __future__ import annotations

import numpy as np
import pytest

import arraycurv as ac
from arraycurv.models import layers as L
from arraycurv.models import sequential as S


def _net():
    model = ac.mlp((3, 4, 2), "tanh")
    params = ac.init_params(model, 0)
    x = ac.backend.normal(1, (5, 3))
    return model, params, x


def test_passes_skip_the_layer_checks(monkeypatch):
    model, params, x = _net()
    calls = []
    real = L.check_params
    monkeypatch.setattr(L, "check_params", lambda *a, **k: calls.append(a) or real(*a, **k))
    lin = ac.linearize(model, params, x)
    ac.value_and_grad(model, params, (x, ac.backend.normal(2, (5, 2))))
    assert calls == []
    L.layer_forward(model.layers[0], params[:2], x)  # a direct call checks
    assert len(calls) == 1
    assert lin.xp is not None


def test_direct_layer_calls_check_after_a_pass():
    model, params, x = _net()
    ac.hvp(model, params, (x, ac.backend.normal(2, (5, 2))), params)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 3\) for the input of Dense"):
        L.layer_forward(model.layers[0], params[:2], x[:, :2])


def test_the_trusted_state_is_reset_after_an_error():
    model, params, x = _net()
    lin = ac.linearize(model, params, x)
    bad = (params[0][:, :2],) + params[1:]  # a wrong shape the trusted pass does not check
    with pytest.raises(ValueError):
        S._forward_tangents(lin, bad)
    assert L._TRUSTED_XP.get() is None
    with pytest.raises(ValueError, match="params"):
        L.layer_forward(model.layers[0], params[:1], x)


def test_cached_tanh_second_derivative_matches_the_closed_form():
    x = np.linspace(-3.0, 3.0, 13).reshape(1, -1)
    for name in ("tanh", "sigmoid", "gelu", "softplus", "elu"):
        _, cache = L.layer_forward(L.Activation(name), (), x)
        d2 = L._act_second(name, np, cache)
        np.testing.assert_allclose(d2, L.activation_derivatives(name, x)[2], rtol=1e-12, atol=1e-15)
