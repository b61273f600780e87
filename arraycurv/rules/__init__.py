"""Update rules (optimizers) behind one functional interface (spec 5).

An :class:`UpdateRule` is a pair of pure functions::

    state = rule.init(params)
    direction, state = rule.update(model, params, batch, state)

``direction`` is the parameter change of one step *including* the learning rate and the
sign: a discrete step is ``params + direction`` (:func:`apply_direction`), and in
continuous time (:func:`arraycurv.integrate_rule`) the same function is the velocity
``d params / dt = direction`` with the learning rate playing Huh's eta. Stateless rules
(every rule here except Adam) have ``state = None`` and can be integrated in continuous
time.

Rules: :func:`sgd` (Huh eq 4), :func:`adam` (Kingma & Ba 2015, the usual baseline),
:func:`qngd` with :func:`ngd` (q = 1, Huh eq 9) and :func:`sqrt_ngd` (q = 2, eq 12),
the block-diagonal :func:`qngd_blockdiag` with :func:`ngd_d` (eq 19-20) and
:func:`sqrt_ngd_d` (eq 21), and :func:`regularized_ngd` (Huh S.I.15). See
``docs/rules.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..curvature.generic import value_and_grad
from ..directions.fractional import (
    _check_nonneg,
    _check_q,
    clip_direction,
    qngd_blockdiag_direction,
    qngd_direction,
    regularized_ngd_direction,
)
from ..losses import MSE
from ..validation import check_finite

__all__ = [
    "AdamState",
    "RULE_NAMES",
    "UpdateRule",
    "adam",
    "apply_direction",
    "ngd",
    "ngd_d",
    "qngd",
    "qngd_blockdiag",
    "regularized_ngd",
    "rule_by_name",
    "sgd",
    "sqrt_ngd",
    "sqrt_ngd_d",
]


@dataclass(frozen=True)
class UpdateRule:
    """An optimizer as a pair of pure functions (spec 5).

    Attributes
    ----------
    name : str
        Short name (``"sgd"``, ``"adam"``, ``"qngd"``, ...), used in records and plots.
    init : callable
        ``init(params) -> state`` (``None`` for stateless rules).
    update : callable
        ``update(model, params, batch, state) -> (direction, state)``; ``direction`` is
        the step including learning rate and sign (``params + direction``).
    stateless : bool
        True when ``update`` ignores and returns ``state`` unchanged (then the rule
        defines a continuous-time flow, see :func:`arraycurv.integrate_rule`).
    """

    name: str
    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    stateless: bool


def _check_lr(lr) -> float:
    ok = isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    if not ok:
        raise ValueError(f"lr: expected a finite real number > 0, got {lr!r}")
    return float(lr)


def _check_clip(clip):
    if clip is None:
        return None
    ok = isinstance(clip, (int, float)) and not isinstance(clip, bool) and math.isfinite(clip) and clip > 0
    if not ok:
        raise ValueError(f"clip: expected None or a finite real number > 0, got {clip!r}")
    return float(clip)


def _no_state(params):
    return None


def _finite_grad(g):
    xp = backend.namespace_of(gradient=tuple(g))
    for i, gi in enumerate(g):
        check_finite(gi, f"gradient[{i}]", xp)


def apply_direction(params, direction):
    """One discrete step: ``params + direction`` leaf-wise (new arrays, inputs untouched)."""
    if len(params) != len(direction):
        raise ValueError(f"direction: expected a tuple of {len(params)} arrays like params, got {len(direction)}")
    for i, (p, d) in enumerate(zip(params, direction)):
        if tuple(p.shape) != tuple(d.shape):
            raise ValueError(f"direction[{i}]: expected shape {tuple(p.shape)}, got {tuple(d.shape)}")
    return tuple(p + d for p, d in zip(params, direction))


# ----------------------------------------------------------------------------- SGD, Adam
def sgd(lr, *, loss=MSE()) -> UpdateRule:
    """Gradient descent: ``direction = -lr g`` (Huh 2020 eq 4)."""
    lr = _check_lr(lr)

    def update(model, params, batch, state):
        _, g = value_and_grad(model, params, batch, loss)
        _finite_grad(g)
        return tuple(-lr * gi for gi in g), state

    return UpdateRule("sgd", _no_state, update, True)


@dataclass(frozen=True)
class AdamState:
    """Adam's state: step count and the first/second moment estimates (tuples)."""

    count: int
    mu: tuple
    nu: tuple


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, *, loss=MSE()) -> UpdateRule:
    """Adam (Kingma & Ba 2015, Algorithm 1), the usual baseline.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``direction = -lr mhat / (sqrt(vhat) + eps)`` with the bias corrections
    ``mhat = m / (1 - b1^t)``, ``vhat = v / (1 - b2^t)``.
    """
    lr = _check_lr(lr)
    for name, b in (("b1", b1), ("b2", b2)):
        if not (isinstance(b, (int, float)) and 0 <= b < 1):
            raise ValueError(f"{name}: expected a number in [0, 1), got {b!r}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps: expected a number >= 0, got {eps!r}")

    def init(params):
        xp = backend.namespace_of(params=tuple(params))
        zeros = tuple(xp.zeros_like(p) for p in params)
        return AdamState(0, zeros, zeros)

    def update(model, params, batch, state):
        if not isinstance(state, AdamState):
            raise TypeError(f"state: expected an AdamState from rule.init(params), got {type(state).__name__}")
        _, g = value_and_grad(model, params, batch, loss)
        _finite_grad(g)
        xp = backend.namespace_of(params=tuple(params), gradient=tuple(g))
        t = state.count + 1
        mu = tuple(b1 * m + (1.0 - b1) * gi for m, gi in zip(state.mu, g))
        nu = tuple(b2 * v + (1.0 - b2) * gi * gi for v, gi in zip(state.nu, g))
        c1 = 1.0 - b1**t
        c2 = 1.0 - b2**t
        direction = tuple(-lr * (m / c1) / (xp.sqrt(v / c2) + eps) for m, v in zip(mu, nu))
        return direction, AdamState(t, mu, nu)

    return UpdateRule("adam", init, update, False)


# ----------------------------------------------------------------------------- q-NGD family
def _clipped(direction, clip):
    return direction if clip is None else clip_direction(direction, clip)


def _power_rule(lr, q, damping, clip, name, names, direction) -> UpdateRule:
    """The stateless rule ``-lr direction(model, params, batch, q)``, optionally clipped,
    after checking the arguments; ``names = (q = 1 name, q = 2 name, prefix)`` give the
    default name (q = inf is SGD)."""
    lr = _check_lr(lr)
    q = _check_q(q)
    _check_nonneg(damping, "damping")
    clip = _check_clip(clip)
    if name is None:
        name = {1.0: names[0], 2.0: names[1], math.inf: "sgd"}.get(q, f"{names[2]}(q={q:g})")

    def update(model, params, batch, state):
        d = direction(model, params, batch, q)
        return _clipped(tuple(lr * di for di in d), clip), state

    return UpdateRule(name, _no_state, update, True)


def qngd(lr, q, *, form="auto", damping=0.0, rcond=None, clip=None, loss=MSE(), name=None) -> UpdateRule:
    """Fractional NGD: ``direction = -lr (G + damping I)^{+1/q} g`` (Huh 2020 eq 12).

    ``form`` picks one of the exact forms of :func:`arraycurv.qngd_direction`; ``clip``
    (update-speed clipping, Huh Sec. 6) bounds the norm of the returned direction
    (learning rate included) by :func:`arraycurv.clip_direction`.
    """
    return _power_rule(lr, q, damping, clip, name, ("ngd", "sqrt_ngd", "qngd"),
                       lambda model, params, batch, q: qngd_direction(
                           model, params, batch, q, form=form, damping=damping, rcond=rcond, loss=loss))


def ngd(lr, **kw) -> UpdateRule:
    """Natural gradient descent (Moore-Penrose; Huh 2020 eq 9): :func:`qngd` with q = 1."""
    return qngd(lr, 1.0, **kw)


def sqrt_ngd(lr, **kw) -> UpdateRule:
    """sqrt-NGD (Huh 2020 eq 12-14 with q = 2): :func:`qngd` with q = 2."""
    return qngd(lr, 2.0, **kw)


def qngd_blockdiag(lr, q, *, damping=0.0, rcond=None, clip=None, loss=MSE(), name=None) -> UpdateRule:
    """Block-diagonal q-NGD (Huh 2020 eq 19-21, footnote 4): per layer
    ``direction_i = -lr (G_ii + damping I)^{+1/q} g_i / d^{1/q}``
    (:func:`arraycurv.qngd_blockdiag_direction`), optionally clipped."""
    return _power_rule(lr, q, damping, clip, name, ("ngd_d", "sqrt_ngd_d", "qngd_d"),
                       lambda model, params, batch, q: qngd_blockdiag_direction(
                           model, params, batch, q, damping=damping, rcond=rcond, loss=loss))


def ngd_d(lr, **kw) -> UpdateRule:
    """Block-diagonal NGD, NGD-d (Huh 2020 eq 19): :func:`qngd_blockdiag` with q = 1."""
    return qngd_blockdiag(lr, 1.0, **kw)


def sqrt_ngd_d(lr, **kw) -> UpdateRule:
    """Block-diagonal sqrt-NGD (Huh 2020 eq 21): :func:`qngd_blockdiag` with q = 2."""
    return qngd_blockdiag(lr, 2.0, **kw)


def regularized_ngd(lr, eps, *, form="auto", rcond=None, clip=None, loss=MSE()) -> UpdateRule:
    """Regularized NGD of Huh (2020) S.I.15: ``direction = -lr (eps + 1)(eps I + G)^{-1} g``."""
    lr = _check_lr(lr)
    _check_nonneg(eps, "eps", allow_inf=True)
    clip = _check_clip(clip)

    def update(model, params, batch, state):
        d = regularized_ngd_direction(model, params, batch, eps, form=form, rcond=rcond, loss=loss)
        return _clipped(tuple(lr * di for di in d), clip), state

    return UpdateRule(f"regularized_ngd(eps={eps:g})", _no_state, update, True)


#: Names understood by :func:`rule_by_name`.
RULE_NAMES = ("sgd", "adam", "ngd", "sqrt_ngd", "qngd", "ngd_d", "sqrt_ngd_d", "qngd_d", "regularized_ngd")


def rule_by_name(name, lr, **kw) -> UpdateRule:
    """Build a rule from its name (for command lines): one of :data:`RULE_NAMES`.

    Keyword arguments go to the constructor (``q=`` for ``"qngd"``/``"qngd_d"``,
    ``eps=`` for ``"regularized_ngd"``, ``damping=``, ``clip=``, ``form=`` ...).
    """
    makers = {
        "sgd": sgd,
        "adam": adam,
        "ngd": ngd,
        "sqrt_ngd": sqrt_ngd,
        "qngd": qngd,
        "ngd_d": ngd_d,
        "sqrt_ngd_d": sqrt_ngd_d,
        "qngd_d": qngd_blockdiag,
        "regularized_ngd": regularized_ngd,
    }
    if name not in makers:
        raise ValueError(f"name: expected one of {RULE_NAMES}, got {name!r}")
    try:
        return makers[name](lr, **kw)
    except TypeError as exc:
        raise TypeError(f"{name}: {exc}") from exc
