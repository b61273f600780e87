"""The named update rules, built by composing transforms (optax's ``alias.py``).

Rules: :func:`sgd` (Huh 2020 eq 4), :func:`adam` (Kingma & Ba 2015), :func:`qngd` with
:func:`ngd` (q = 1, Huh eq 9) and :func:`sqrt_ngd` (q = 2, eq 12), the block-diagonal
:func:`qngd_blockdiag` with :func:`ngd_d` (eq 19-20) and :func:`sqrt_ngd_d` (eq 21), and
:func:`regularized_ngd` (Huh S.I.15). Each returns an :class:`arraycurv.rules.UpdateRule`
whose ``update`` gives the step including learning rate and sign. Every rule except Adam
keeps an :class:`arraycurv.rules.EmptyState` and so has a continuous-time flow.

``loss=`` (optional) fixes the loss a rule is meant for: calling it with another loss
raises. By default a rule uses the loss it is called with (that of :func:`arraycurv.train`).
See ``docs/rules.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import backend
from ..directions.fractional import FORMS, qngd_blockdiag_direction, qngd_direction, regularized_ngd_direction
from ..validation import check_clip, check_finite, check_lr, check_nonneg, check_q, check_rcond
from .base import EmptyState, UpdateRule, chain
from .transforms import AdamState, clip_by_norm, precondition, scale_by_adam, scale_by_lr

__all__ = [
    "AdamState",
    "adam",
    "ngd",
    "ngd_d",
    "qngd",
    "qngd_blockdiag",
    "regularized_ngd",
    "sgd",
    "sqrt_ngd",
    "sqrt_ngd_d",
]


def _loss_guard(loss) -> UpdateRule:
    """Check the finiteness of the gradient (and, when ``loss`` is given, the loss the rule
    is called with); updates pass through."""

    def update(grads, state, params, *, loss=None, **extra):
        if expected is not None and loss is not None and loss != expected:
            raise ValueError(f"loss: expected the loss this rule was built with, {expected!r}, got {loss!r}")
        if not isinstance(grads, Sequence) or len(grads) != len(params):
            got = len(grads) if isinstance(grads, Sequence) else type(grads).__name__
            raise ValueError(f"grads: expected a tuple of {len(params)} arrays shaped like params, got {got}")
        xp = backend.namespace_of(grads=tuple(grads))
        for i, (g, p) in enumerate(zip(grads, params)):
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"grads[{i}]: expected shape {tuple(p.shape)} like params[{i}], got {tuple(g.shape)}")
            check_finite(g, f"grads[{i}]", xp)
        return grads, state

    expected = loss
    return UpdateRule(lambda params: EmptyState(), update, "check_gradient")


# ----------------------------------------------------------------------------- SGD, Adam
def sgd(lr, *, loss=None) -> UpdateRule:
    """Gradient descent: ``updates = -lr g`` (Huh 2020 eq 4)."""
    return chain(_loss_guard(loss), scale_by_lr(check_lr(lr)), name="sgd")


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, *, loss=None) -> UpdateRule:
    """Adam (Kingma & Ba 2015, Algorithm 1), the usual baseline:
    ``chain(scale_by_adam(b1, b2, eps), scale_by_lr(lr))``, i.e.
    ``updates = -lr mhat / (sqrt(vhat) + eps)``."""
    lr = check_lr(lr)
    return chain(_loss_guard(loss), scale_by_adam(b1, b2, eps), scale_by_lr(lr), name="adam")


# ----------------------------------------------------------------------------- q-NGD family
def _power_rule(lr, q, damping, clip, name, names, rcond, direction_fn, loss) -> UpdateRule:
    """``chain(precondition(direction_fn), scale_by_lr(lr), clip_by_norm(clip))`` after
    checking the arguments; ``names = (q = 1 name, q = 2 name, prefix)`` give the default
    name (q = inf is SGD)."""
    lr = check_lr(lr)
    q = check_q(q)
    check_nonneg(damping, "damping")
    check_rcond(rcond)
    clip = check_clip(clip)
    if name is None:
        name = {1.0: names[0], 2.0: names[1], math.inf: "sgd"}.get(q, f"{names[2]}(q={q:g})")
    parts = [precondition(lambda model, params, batch, loss: direction_fn(model, params, batch, q, loss), loss=loss),
             scale_by_lr(lr)]
    if clip is not None:
        parts.append(clip_by_norm(clip))
    return chain(*parts, name=name)


def qngd(lr, q, *, form="auto", damping=0.0, rcond=None, clip=None, loss=None, name=None) -> UpdateRule:
    """Fractional NGD: ``updates = -lr (G + damping I)^{+1/q} g`` (Huh 2020 eq 12).

    ``form`` picks one of the exact forms of :func:`arraycurv.qngd_direction`; ``clip``
    (update-speed clipping, Huh Sec. 6) bounds the norm of the returned step (learning
    rate included) by :func:`arraycurv.rules.transforms.clip_by_norm`.
    """
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    return _power_rule(lr, q, damping, clip, name, ("ngd", "sqrt_ngd", "qngd"), rcond,
                       lambda model, params, batch, q, loss: qngd_direction(
                           model, params, batch, q, form=form, damping=damping, rcond=rcond, loss=loss), loss)


def ngd(lr, **kw) -> UpdateRule:
    """Natural gradient descent (Moore-Penrose; Huh 2020 eq 9): :func:`qngd` with q = 1."""
    return qngd(lr, 1.0, **kw)


def sqrt_ngd(lr, **kw) -> UpdateRule:
    """sqrt-NGD (Huh 2020 eq 12-14 with q = 2): :func:`qngd` with q = 2."""
    return qngd(lr, 2.0, **kw)


def qngd_blockdiag(lr, q, *, damping=0.0, rcond=None, clip=None, loss=None, name=None) -> UpdateRule:
    """Block-diagonal q-NGD (Huh 2020 eq 19-21, footnote 4): per layer
    ``updates_i = -lr (G_ii + damping I)^{+1/q} g_i / d^{1/q}``
    (:func:`arraycurv.qngd_blockdiag_direction`), optionally clipped."""
    return _power_rule(lr, q, damping, clip, name, ("ngd_d", "sqrt_ngd_d", "qngd_d"), rcond,
                       lambda model, params, batch, q, loss: qngd_blockdiag_direction(
                           model, params, batch, q, damping=damping, rcond=rcond, loss=loss), loss)


def ngd_d(lr, **kw) -> UpdateRule:
    """Block-diagonal NGD, NGD-d (Huh 2020 eq 19): :func:`qngd_blockdiag` with q = 1."""
    return qngd_blockdiag(lr, 1.0, **kw)


def sqrt_ngd_d(lr, **kw) -> UpdateRule:
    """Block-diagonal sqrt-NGD (Huh 2020 eq 21): :func:`qngd_blockdiag` with q = 2."""
    return qngd_blockdiag(lr, 2.0, **kw)


def regularized_ngd(lr, eps, *, form="auto", rcond=None, clip=None, loss=None) -> UpdateRule:
    """Regularized NGD of Huh (2020) S.I.15: ``updates = -lr (eps + 1)(eps I + G)^{-1} g``."""
    lr = check_lr(lr)
    check_nonneg(eps, "eps", allow_inf=True)
    check_rcond(rcond)
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    clip = check_clip(clip)
    parts = [precondition(lambda model, params, batch, loss: regularized_ngd_direction(
        model, params, batch, eps, form=form, rcond=rcond, loss=loss), loss=loss), scale_by_lr(lr)]
    if clip is not None:
        parts.append(clip_by_norm(clip))
    return chain(*parts, name=f"regularized_ngd(eps={eps:g})")
