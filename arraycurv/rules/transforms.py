"""Composable transforms of the updates (optax's ``transform.py`` and ``_combining.py``).

Every transform is an :class:`arraycurv.rules.UpdateRule` whose ``update`` maps the
incoming updates (at the start of a :func:`arraycurv.rules.chain`: the gradient) to new
ones. Between the transforms the updates are gradient-like (ascent); :func:`scale_by_lr`
turns them into the descent step ``-lr * updates`` (optax ``scale_by_learning_rate``):

    sgd  = chain(scale_by_lr(lr))                                  # Huh 2020 eq 4
    ngd  = chain(precondition(qngd_direction_fn), scale_by_lr(lr))  # Huh 2020 eq 9
    adam = chain(scale_by_adam(b1, b2, eps), scale_by_lr(lr))       # Kingma & Ba 2015

States are NamedTuples (:class:`arraycurv.rules.EmptyState` when there is none). See
``docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .. import backend
from ..directions.fractional import clip_direction
from ..losses import MSE
from ..validation import ArgumentTypeError, check_arrays, check_bool, check_lr, check_real
from .base import EmptyState, UpdateRule
from .damping import DampingController

__all__ = [
    "AdamState",
    "EmaState",
    "MomentumState",
    "PartitionState",
    "PreconditionState",
    "ScheduleCountState",
    "clip_by_norm",
    "ema",
    "momentum",
    "partition",
    "precondition",
    "predicted_change",
    "scale_by_adam",
    "scale_by_lr",
]


def _empty(params) -> EmptyState:
    return EmptyState()


def _zeros(params) -> tuple:
    xp = backend.namespace_of(params=tuple(params))
    return tuple(xp.zeros_like(p) for p in params)


def _dot(a, b) -> float:
    """Euclidean inner product over all tensors of two trees, as a host float."""
    xp = backend.namespace_of(a=tuple(a))
    return float(sum(xp.sum(x * y) for x, y in zip(a, b)))


def _unit(value, name) -> float:
    return check_real(value, name, lo=0, hi=1, hi_open=True, want="a number in [0, 1)")


def _check_state(state, cls, what):
    if not isinstance(state, cls):
        raise TypeError(f"state: expected {what} from rule.init(params), got {type(state).__name__}")


def _check_updates(updates, like, what):
    """``updates`` a tuple of arrays shaped like the state's tree ``like`` (metadata only: no host sync)."""
    if not isinstance(updates, Sequence) or len(updates) != len(like):
        got = f"{len(updates)} arrays" if isinstance(updates, Sequence) else type(updates).__name__
        raise ValueError(f"updates: expected a tuple of {len(like)} arrays like the {what}, got {got}")
    for i, (u, t) in enumerate(zip(updates, like)):
        if not backend.is_array(u) or tuple(u.shape) != tuple(t.shape):
            got = f"shape {tuple(u.shape)}" if backend.is_array(u) else type(u).__name__
            raise ValueError(f"updates[{i}]: expected an array of shape {tuple(t.shape)} like the {what}, got {got}")


# ----------------------------------------------------------------------------- learning rate
class ScheduleCountState(NamedTuple):
    """Step count of a scheduled transform (the schedule is evaluated at ``count``)."""

    count: int


def scale_by_lr(lr, *, flip_sign: bool = True) -> UpdateRule:
    """``updates <- -lr(count) * updates`` (optax ``scale_by_learning_rate``).

    Parameters
    ----------
    lr : float or callable
        A finite number > 0, or a schedule ``lr(count) -> float`` of the step count
        (0, 1, 2, ...; the state then holds the count).
    flip_sign : bool
        Multiply by ``-lr`` (default: gradient-like updates become a descent step), else
        by ``lr``.
    """
    check_bool(flip_sign, "flip_sign")
    sign = -1.0 if flip_sign else 1.0
    if not callable(lr):
        factor = sign * check_lr(lr)
        return UpdateRule(_empty, lambda updates, state, params, **extra: (
            tuple(factor * u for u in updates), state), "scale_by_lr")

    def update(updates, state, params, **extra):
        _check_state(state, ScheduleCountState, "a ScheduleCountState")
        value = lr(state.count)
        rate = check_lr(value, f"lr({state.count})")
        return tuple((sign * rate) * u for u in updates), ScheduleCountState(state.count + 1)

    return UpdateRule(lambda params: ScheduleCountState(0), update, "scale_by_schedule")


# ----------------------------------------------------------------------------- momentum, EMA, clipping
class MomentumState(NamedTuple):
    """Momentum buffer ``m`` (a tuple shaped like the parameters)."""

    trace: tuple


def momentum(beta: float, *, nesterov: bool = False) -> UpdateRule:
    """Heavy-ball momentum (optax ``trace``): ``m <- u + beta m``; returns ``m``
    (Nesterov: ``u + beta m``)."""
    beta = _unit(beta, "beta")
    check_bool(nesterov, "nesterov")

    def update(updates, state, params, **extra):
        _check_state(state, MomentumState, "a MomentumState")
        _check_updates(updates, state.trace, "momentum buffer")
        m = tuple(u + beta * t for u, t in zip(updates, state.trace))
        out = tuple(u + beta * mi for u, mi in zip(updates, m)) if nesterov else m
        return out, MomentumState(m)

    return UpdateRule(lambda params: MomentumState(_zeros(params)), update, "momentum")


class EmaState(NamedTuple):
    """Exponential moving average and the number of averaged steps."""

    count: int
    ema: tuple


def ema(decay: float, *, debias: bool = True) -> UpdateRule:
    """Exponential moving average (optax ``ema``): ``e <- decay e + (1 - decay) u``;
    returns ``e / (1 - decay^t)`` (``debias``) or ``e``."""
    decay = _unit(decay, "decay")
    check_bool(debias, "debias")

    def update(updates, state, params, **extra):
        _check_state(state, EmaState, "an EmaState")
        _check_updates(updates, state.ema, "moving average")
        t = state.count + 1
        e = tuple(decay * ei + (1.0 - decay) * u for ei, u in zip(state.ema, updates))
        out = tuple(ei / (1.0 - decay**t) for ei in e) if debias else e
        return out, EmaState(t, e)

    return UpdateRule(lambda params: EmaState(0, _zeros(params)), update, "ema")


def clip_by_norm(max_norm: float) -> UpdateRule:
    """Update-speed clipping (Huh 2020 Sec. 6): rescale the updates to Euclidean norm
    ``max_norm`` (over all tensors) when they exceed it (:func:`arraycurv.directions.fractional.clip_direction`)."""
    max_norm = check_lr(max_norm, "max_norm")
    return UpdateRule(_empty, lambda updates, state, params, **extra: (
        clip_direction(updates, max_norm), state), "clip_by_norm")


# ----------------------------------------------------------------------------- Adam
class AdamState(NamedTuple):
    """Adam's state: step count and the first/second moment estimates (tuples)."""

    count: int
    mu: tuple
    nu: tuple


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> UpdateRule:
    """Adam's rescaling (Kingma & Ba 2015, Algorithm 1): ``m <- b1 m + (1 - b1) g``,
    ``v <- b2 v + (1 - b2) g^2``, returns ``mhat / (sqrt(vhat) + eps)`` with
    ``mhat = m / (1 - b1^t)``, ``vhat = v / (1 - b2^t)``. ``eps >= 0``; with ``eps = 0``
    an entry whose gradients were all zero gets the update 0 (the limit), not 0/0."""
    b1, b2 = _unit(b1, "b1"), _unit(b2, "b2")
    eps = check_real(eps, "eps", lo=0, want="a finite number >= 0")

    def init(params):
        zeros = _zeros(params)
        return AdamState(0, zeros, zeros)

    def update(updates, state, params, **extra):
        _check_state(state, AdamState, "an AdamState")
        _check_updates(updates, state.mu, "moment estimates")
        xp = backend.namespace_of(updates=tuple(updates))
        t = state.count + 1
        mu = tuple(b1 * m + (1.0 - b1) * g for m, g in zip(state.mu, updates))
        nu = tuple(b2 * v + (1.0 - b2) * g * g for v, g in zip(state.nu, updates))
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        if eps > 0:
            out = tuple((m / c1) / (xp.sqrt(v / c2) + eps) for m, v in zip(mu, nu))
        else:  # 0/0 -> 0 where no gradient was ever nonzero
            out = tuple(xp.where(v > 0, (m / c1) / xp.sqrt(xp.where(v > 0, v, 1.0) / c2), 0.0 * m)
                        for m, v in zip(mu, nu))
        return out, AdamState(t, mu, nu)

    return UpdateRule(init, update, "scale_by_adam")


# ----------------------------------------------------------------------------- preconditioning
class PreconditionState(NamedTuple):
    """State of :func:`precondition` with a damping controller: the controller's state
    and, of the previous step, the parameters, the preconditioned gradient ``P g`` and
    ``g . P g`` (to predict the change of the loss, :func:`predicted_change`)."""

    damping: Any
    params: Any = None
    direction: Any = None
    g_dot_d: float | None = None


def predicted_change(step, pg, g_dot_pg: float) -> float:
    """Change of the loss predicted for ``step`` by the quadratic model whose Newton step
    is the preconditioned direction ``-P g`` (Bernacchia et al. 2018, footnote 1 of eq 21).

    With curvature C such that ``C (P g) = g``, the step ``-t P g`` (t = -<step, P g> /
    <P g, P g>) changes the model by ``-(t - t^2 / 2) g . P g``; for t = alpha this is
    Bernacchia's ``(-alpha + alpha^2 / 2) sum_i tr(dW_i^T <e_i x_{i-1}^T>)``.
    """
    for name, tree in (("step", step), ("pg", pg)):
        if not isinstance(tree, (tuple, list)) or len(tree) == 0:
            raise ValueError(f"{name}: expected a non-empty tuple of arrays shaped like params, got {tree!r:.80}")
    if len(pg) != len(step):
        raise ValueError(f"pg: expected {len(step)} arrays like step, got {len(pg)}")
    for i, (a, b) in enumerate(zip(step, pg)):
        if backend.is_array(a) and backend.is_array(b) and tuple(b.shape) != tuple(a.shape):
            raise ValueError(f"pg[{i}]: expected shape {tuple(a.shape)} like step[{i}], got {tuple(b.shape)}")
    check_arrays([(f"step[{i}]", a) for i, a in enumerate(step)] + [(f"pg[{i}]", b) for i, b in enumerate(pg)])
    return _predicted_change(step, pg, check_real(g_dot_pg, "g_dot_pg"))


def _predicted_change(step, pg, g_dot_pg: float) -> float:
    """:func:`predicted_change` for validated trees."""
    pp = _dot(pg, pg)
    if pp == 0.0:
        return 0.0
    t = -_dot(step, pg) / pp
    return -(t - 0.5 * t * t) * g_dot_pg


def precondition(direction_fn: Callable[..., Any], *, damping=None, loss=None) -> UpdateRule:
    """Replace the gradient by a preconditioned one, ``P g = -direction_fn(...)``.

    Parameters
    ----------
    direction_fn : callable
        ``direction_fn(model, params, batch, *, loss) -> d`` returning a descent direction
        ``d = -P g`` in the convention of :mod:`arraycurv.directions` (e.g. q-NGD,
        Huh 2020 eq 12); with ``damping`` it is called with ``damping=lambda`` too.
    damping : DampingController, optional
        A controller of :mod:`arraycurv.rules.damping`; its state (which holds lambda)
        is kept in :class:`PreconditionState` and updated at every step from the loss
        ``value`` and the predicted change of the previous step. Without one the state
        is :class:`EmptyState` (the rule has a continuous-time flow).
    loss : optional
        The loss the direction uses; by default the ``loss`` the rule is called with.
    """
    if not callable(direction_fn):
        raise TypeError(f"direction_fn: expected a callable fn(model, params, batch, *, loss), got {direction_fn!r}")
    if damping is not None and not isinstance(damping, DampingController):
        raise TypeError(f"damping: expected None or a DampingController (arraycurv.rules.damping), got {damping!r}")

    def pick_loss(given):
        if loss is not None and given is not None and given != loss:
            raise ValueError(f"loss: expected the loss this rule was built with, {loss!r}, got {given!r}")
        chosen = loss if loss is not None else given
        return MSE() if chosen is None else chosen

    if damping is None:
        def update(grads, state, params, *, model, batch, loss=None, **extra):
            d = direction_fn(model, params, batch, loss=pick_loss(loss))
            return tuple(-di for di in d), state

        return UpdateRule(_empty, update, "precondition")

    def update_damped(grads, state, params, *, model, batch, loss=None, value=None, **extra):
        _check_state(state, PreconditionState, "a PreconditionState")
        pred = None
        if state.params is not None:
            step = tuple(p - q for p, q in zip(params, state.params))
            pred = _predicted_change(step, state.direction, state.g_dot_d)
        lam_state = damping.update(state.damping, value=value, predicted_change=pred)
        d = direction_fn(model, params, batch, loss=pick_loss(loss), damping=lam_state.damping)
        pg = tuple(-di for di in d)
        return pg, PreconditionState(lam_state, tuple(params), pg, _dot(grads, pg))

    return UpdateRule(lambda params: PreconditionState(damping.init()), update_damped, "precondition")


# ----------------------------------------------------------------------------- partition
class PartitionState(NamedTuple):
    """Inner state of each group of :func:`partition` (a dict label -> state)."""

    inner_states: dict


def _labels_of(labels, params) -> tuple:
    if callable(labels):
        labels = labels(params)
    labels = getattr(labels, "labels", labels)
    if not isinstance(labels, (tuple, list)) or len(labels) != len(params):
        raise ValueError(f"labels: expected one label per parameter tensor ({len(params)}), got {labels!r}")
    return tuple(labels)


def partition(transforms: Mapping[Any, UpdateRule], labels) -> UpdateRule:
    """A different transform per parameter group (optax ``partition``; GroupedNewton's
    per-group rates).

    Parameters
    ----------
    transforms : mapping label -> UpdateRule
        The transform of each group; it sees only the tensors of its group (sub-tuples
        of the updates and parameters, in their order) and the keyword extras.
    labels : tuple, callable or partition
        One label per parameter tensor, ``labels(params) -> tuple``, or an object with a
        ``labels`` tuple (a parameter partition of :mod:`arraycurv.params`).
    """
    if not isinstance(transforms, Mapping):
        raise ArgumentTypeError(f"transforms: expected a mapping label -> UpdateRule, got {type(transforms).__name__}")
    transforms = dict(transforms)
    for key, t in transforms.items():
        if not isinstance(t, UpdateRule):
            raise TypeError(f"transforms[{key!r}]: expected an UpdateRule, got {type(t).__name__}")

    def groups(params):
        lab = _labels_of(labels, params)
        missing = sorted({repr(label) for label in lab if label not in transforms})
        if missing:
            raise ValueError(f"labels: expected labels among {tuple(transforms)}, got {', '.join(missing)}")
        return {key: [i for i, label in enumerate(lab) if label == key] for key in transforms}

    def init(params):
        params = tuple(params)
        return PartitionState({key: transforms[key].init(tuple(params[i] for i in idx)) if idx else EmptyState()
                               for key, idx in groups(params).items()})

    def update(grads, state, params, **extra):
        _check_state(state, PartitionState, "a PartitionState")
        out, new = list(grads), {}
        for key, idx in groups(tuple(params)).items():
            if not idx:
                new[key] = state.inner_states[key]
                continue
            sub, new[key] = transforms[key].update(tuple(grads[i] for i in idx), state.inner_states[key],
                                                   tuple(params[i] for i in idx), **extra)
            for i, u in zip(idx, sub):
                out[i] = u
        return tuple(out), PartitionState(new)

    return UpdateRule(init, update, "partition")
