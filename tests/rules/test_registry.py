"""The one registry of rule names: factories, labels, q and equations, read by the
theory module and the plots."""

from __future__ import annotations

import math

import pytest

import arraycurv as ac
from arraycurv.dynamics import theory
from arraycurv.experiments.plotting import rule_label as plot_label
from arraycurv.rules import registry
from arraycurv.rules.registry import RULE_NAMES, RuleSpec, make_rule, register_rule, rule_label, rule_q, rule_spec
from tests.helpers import assert_close
from tests.references.deep_linear import make_case


def test_every_builtin_rule_is_registered_with_label_q_and_equation():
    assert RULE_NAMES == ("sgd", "adam", "ngd", "sqrt_ngd", "qngd", "ngd_d", "sqrt_ngd_d", "qngd_d", "regularized_ngd")
    labels = {"sgd": "SGD", "adam": "Adam", "ngd": "NGD", "sqrt_ngd": "\u221aNGD", "ngd_d": "NGD-d",
              "sqrt_ngd_d": "\u221aNGD-d", "qngd": "q-NGD", "qngd_d": "q-NGD-d"}
    qs = {"sgd": math.inf, "adam": math.inf, "ngd": 1.0, "sqrt_ngd": 2.0, "ngd_d": 1.0, "sqrt_ngd_d": 2.0,
          "qngd": None, "qngd_d": None}
    for name in RULE_NAMES:
        spec = rule_spec(name)
        assert spec.name == name and spec.equation and spec.paper and callable(spec.factory)
        if name in labels:
            assert rule_label(name) == labels[name] and rule_q(name) == qs[name]
        assert spec.block_diagonal == name.endswith("_d")
    assert rule_spec("adam").paper == "Kingma & Ba 2015" and rule_spec("sgd").equation == "eq (4)"


def test_q_rule_names_are_parsed():
    assert rule_label("qngd_q3") == "q-NGD (q=3)" and rule_q("qngd_q3") == 3.0
    assert rule_label("qngd_d_q1.5") == "q-NGD-d (q=1.5)" and rule_q("qngd_d_q1.5") == 1.5
    assert rule_spec("qngd_d_q2").block_diagonal and not rule_spec("qngd_q2").block_diagonal
    with pytest.raises(ValueError, match=r"name: expected q >= 1 in 'qngd_q0.5'"):
        rule_spec("qngd_q0.5")
    with pytest.raises(ValueError, match=r"name: expected one of .*got 'lbfgs'"):
        rule_spec("lbfgs")
    with pytest.raises(ValueError, match=r"name: expected one of"):
        rule_spec("qngd_qx")


def test_make_rule_builds_the_registered_factories(numpy_xp):
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 2)
    value, g = ac.value_and_grad(model, params, batch)
    extra = dict(model=model, batch=batch, loss=ac.MSE(), value=value)

    def step(rule):
        return rule.update(g, rule.init(params), params, **extra)[0]

    rule = make_rule("qngd_q3", 0.2)
    assert rule.name == "qngd_q3"
    assert_close(step(rule), step(ac.qngd(0.2, 3.0)), like=params[0], rtol=0.0)
    rule = make_rule("qngd_d_q3", 0.2, damping=0.1)
    assert_close(step(rule), step(ac.qngd_blockdiag(0.2, 3.0, damping=0.1)), like=params[0], rtol=0.0)
    assert make_rule("sqrt_ngd_d", 0.1).name == "sqrt_ngd_d"
    with pytest.raises(TypeError, match=r"sgd: .*unexpected"):
        make_rule("sgd", 0.1, bogus=1)


def test_register_rule_and_the_readers(monkeypatch):
    spec = RuleSpec("my_rule", lambda lr, **kw: ac.sgd(lr), "Mine", math.inf, "eq (4)", "Huh 2020", "eq (5)")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert register_rule(spec) is spec and "my_rule" in registry.rule_names()
    assert rule_label("my_rule") == "Mine" and make_rule("my_rule", 0.1).name == "sgd"
    with pytest.raises(TypeError, match=r"spec: expected a RuleSpec"):
        register_rule("my_rule")
    # the theory module and the plots read the registry
    assert theory.RULES == {n: rule_spec(n).mode_equation for n in RULE_NAMES if rule_spec(n).mode_equation}
    assert theory.RULES["sgd"] == "eq (5)" and theory.RULES["qngd_d"] == "footnote 4"
    for name in ("sgd", "sqrt_ngd", "qngd_q3", "qngd_d_q2", "adam"):
        assert plot_label(name) == rule_label(name)
    assert plot_label("unknown") == "unknown"
