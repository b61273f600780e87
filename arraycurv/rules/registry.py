"""One registry of named update rules: factory, display label, order q and equation.

Every place that needs a rule by name (the command line, the experiments, the plots and
:data:`arraycurv.dynamics.theory.RULES`) reads this registry::

    spec = rule_spec("sqrt_ngd")      # RuleSpec(name, factory, label, q, equation, paper, ...)
    rule = make_rule("qngd_q3", 0.1)  # q-NGD with q = 3 (Huh 2020 eq 12)

Names of the form ``qngd_q<q>`` and ``qngd_d_q<q>`` are parsed to the fractional rules
of order q (full and block-diagonal). See ``docs/rules.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import alias as _lib

__all__ = ["RULE_NAMES", "RuleSpec", "make_rule", "register_rule", "rule_label", "rule_names", "rule_q", "rule_spec"]


@dataclass(frozen=True)
class RuleSpec:
    """A named update rule.

    Attributes
    ----------
    name : str
        Registry key (``"sgd"``, ``"sqrt_ngd"``, ...).
    factory : callable
        ``factory(lr, **kw) -> UpdateRule``.
    label : str
        Display label of plots and tables (``"√NGD"``).
    q : float or None
        Order of the fractional power ``(G^+)^{1/q}`` (``math.inf`` for SGD and Adam,
        which is how Huh's depth calibration treats them); None when q is an argument.
    equation : str
        The equation the update implements.
    paper : str
        Where the equation is from.
    mode_equation : str or None
        Equation of the singular-mode dynamics (Huh 2020) when
        :func:`arraycurv.dynamics.theory.singular_mode_velocity` supports the rule.
    block_diagonal : bool
        True for the block-diagonal (layer-wise) rules.
    """

    name: str
    factory: Callable[..., Any]
    label: str
    q: float | None
    equation: str
    paper: str
    mode_equation: str | None = None
    block_diagonal: bool = False


_REGISTRY: dict[str, RuleSpec] = {}


def register_rule(spec: RuleSpec) -> RuleSpec:
    """Add ``spec`` under ``spec.name`` (replacing an earlier one of that name); returns it."""
    if not isinstance(spec, RuleSpec):
        raise TypeError(f"spec: expected a RuleSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not spec.name:
        raise ValueError(f"spec.name: expected a non-empty string, got {spec.name!r}")
    if not callable(spec.factory):
        raise TypeError(f"spec.factory: expected a callable factory(lr, **kw), got {type(spec.factory).__name__}")
    _REGISTRY[spec.name] = spec
    return spec


def rule_names() -> tuple[str, ...]:
    """Names currently registered, in registration order."""
    return tuple(_REGISTRY)


_HUH = "Huh 2020"
for _spec in (
    RuleSpec("sgd", _lib.sgd, "SGD", math.inf, "eq (4)", _HUH, "eq (5)"),
    RuleSpec("adam", _lib.adam, "Adam", math.inf, "Algorithm 1", "Kingma & Ba 2015"),
    RuleSpec("ngd", _lib.ngd, "NGD", 1.0, "eq (9)", _HUH, "eq (10)"),
    RuleSpec("sqrt_ngd", _lib.sqrt_ngd, "\u221aNGD", 2.0, "eq (12)-(14), q = 2", _HUH, "eq (12) with q = 2"),
    RuleSpec("qngd", _lib.qngd, "q-NGD", None, "eq (12)", _HUH, "eq (12)"),
    RuleSpec("ngd_d", _lib.ngd_d, "NGD-d", 1.0, "eq (19)", _HUH, "eq (20)", True),
    RuleSpec("sqrt_ngd_d", _lib.sqrt_ngd_d, "\u221aNGD-d", 2.0, "eq (21)", _HUH, "eq (21)", True),
    RuleSpec("qngd_d", _lib.qngd_blockdiag, "q-NGD-d", None, "eq (19)-(21), footnote 4", _HUH, "footnote 4", True),
    RuleSpec("regularized_ngd", _lib.regularized_ngd, "regularized NGD", None, "S.I.15", _HUH),
):
    register_rule(_spec)

#: Names of the built-in rules (the registry may hold more, see :func:`rule_names`).
RULE_NAMES = rule_names()


def _q_rule(name: str, prefix: str, base: str) -> RuleSpec | None:
    """The spec of ``<prefix><q>`` (e.g. ``qngd_q3``) as the q-rule ``base`` of order q."""
    if not name.startswith(prefix) or base not in _REGISTRY:
        return None
    text = name[len(prefix):]
    try:
        q = float(text)
    except ValueError:
        return None
    if math.isnan(q) or q < 1:
        raise ValueError(f"name: expected q >= 1 in {name!r}, got q = {text}")
    spec = _REGISTRY[base]
    factory = spec.factory

    def make(lr, **kw):
        kw.setdefault("name", name)
        return factory(lr, q, **kw)

    return replace(spec, name=name, factory=make, label=f"{spec.label} (q={text})", q=q)


def rule_spec(name: str) -> RuleSpec:
    """The :class:`RuleSpec` of ``name``: a registered name, ``qngd_q<q>`` or ``qngd_d_q<q>``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered ones).
    """
    if isinstance(name, str):
        if name in _REGISTRY:
            return _REGISTRY[name]
        spec = _q_rule(name, "qngd_d_q", "qngd_d") or _q_rule(name, "qngd_q", "qngd")
        if spec is not None:
            return spec
    raise ValueError(f"name: expected one of {rule_names()} (or qngd_q<q>, qngd_d_q<q>), got {name!r}")


def rule_label(name: str) -> str:
    """Display label of a rule name (``'sqrt_ngd'`` -> ``'√NGD'``, ``'qngd_q3'`` -> ``'q-NGD (q=3)'``)."""
    return rule_spec(name).label


def rule_q(name: str) -> float | None:
    """Order q of a named rule (``math.inf`` for SGD and Adam; None when q is an argument)."""
    return rule_spec(name).q


def make_rule(name: str, lr, **kw):
    """Build the rule ``name`` with learning rate ``lr``; ``kw`` go to its factory
    (``q=`` for ``"qngd"``/``"qngd_d"``, ``eps=`` for ``"regularized_ngd"``, ``damping=``,
    ``clip=``, ``form=``, ...)."""
    spec = rule_spec(name)
    try:
        return spec.factory(lr, **kw)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from exc
