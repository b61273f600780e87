"""Update rules (optimizers) in the optax style: composable transforms, damping
controllers, the named rules of Huh (2020) and one registry of rule names.

* :mod:`.base`: :class:`UpdateRule` (``init``, ``update``), :class:`EmptyState`,
  :func:`chain`, :func:`apply_direction`;
* :mod:`.transforms`: ``precondition``, ``scale_by_lr``, ``momentum``, ``ema``,
  ``clip_by_norm``, ``partition``, ``scale_by_adam``;
* :mod:`.damping`: controllers whose state holds lambda (constant, schedule,
  Levenberg-Marquardt, reduce-on-plateau);
* :mod:`.alias`: the factories ``sgd``, ``adam``, ``qngd``, ``ngd``, ``sqrt_ngd``,
  ``qngd_blockdiag``, ``ngd_d``, ``sqrt_ngd_d``, ``regularized_ngd``;
* :mod:`.registry`: rule names -> factory, label, q and equation.

See ``docs/rules.md``.
"""

from . import alias, base, damping, registry, transforms
from .alias import adam, ngd, ngd_d, qngd, qngd_blockdiag, regularized_ngd, sgd, sqrt_ngd, sqrt_ngd_d
from .base import EmptyState, UpdateRule, apply_direction, chain, is_empty_state, is_stateless
from .bernacchia import bernacchia_ngd as bernacchia_ngd  # Bernacchia et al. 2018 eqs 20-21
from .class_subspace import class_subspace_newton as class_subspace_newton  # Tuddenham et al. 2020 eq 6
from .newton_summary import newton_summary as newton_summary  # Wolinski 2023, Algorithm 1 (GN-10 to GN-18)
from .registry import RULE_NAMES, RuleSpec, make_rule, register_rule, rule_label, rule_names, rule_q, rule_spec
from .transforms import (
    AdamState,
    clip_by_norm,
    ema,
    momentum,
    partition,
    precondition,
    scale_by_adam,
    scale_by_lr,
)


def rule_by_name(name, lr, **kw) -> UpdateRule:
    """Build a rule from its name (old name of :func:`arraycurv.rules.registry.make_rule`)."""
    return make_rule(name, lr, **kw)


__all__ = [
    "AdamState",
    "EmptyState",
    "RULE_NAMES",
    "RuleSpec",
    "UpdateRule",
    "adam",
    "alias",
    "apply_direction",
    "base",
    "chain",
    "clip_by_norm",
    "damping",
    "ema",
    "is_empty_state",
    "is_stateless",
    "make_rule",
    "momentum",
    "ngd",
    "ngd_d",
    "partition",
    "precondition",
    "qngd",
    "qngd_blockdiag",
    "register_rule",
    "registry",
    "regularized_ngd",
    "rule_by_name",
    "rule_label",
    "rule_names",
    "rule_q",
    "rule_spec",
    "scale_by_adam",
    "scale_by_lr",
    "sgd",
    "sqrt_ngd",
    "sqrt_ngd_d",
    "transforms",
]
