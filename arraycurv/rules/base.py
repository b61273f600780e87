"""The update-rule interface in the optax style: a rule is a pair of pure functions.

::

    state = rule.init(params)
    updates, state = rule.update(grads, state, params, model=model, batch=batch, loss=loss, value=value)
    params = apply_direction(params, updates)

``grads`` is the gradient of the mean loss at ``params``, a sequence of arrays shaped
like ``params`` (a tuple, or the lazily computed gradient of :func:`arraycurv.train`,
evaluated on first use), ``value`` that loss or None; ``model``, ``batch`` and ``loss`` are
keyword extras for rules that need curvature (optax's ``GradientTransformationExtraArgs``).
``updates`` is the parameter change *including* the learning rate and the sign, so a
discrete step is ``params + updates`` and, for rules whose state is :class:`EmptyState`,
the same function is the velocity of a continuous-time flow (Huh 2020, with the learning
rate as eta; :func:`arraycurv.integrate_rule`).

:func:`chain` composes transforms (the state is the tuple of their states). See
``docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .. import backend

__all__ = ["EmptyState", "UpdateRule", "apply_direction", "chain", "is_empty_state", "is_stateless"]


class EmptyState(NamedTuple):
    """The state of a transform that keeps none (optax ``EmptyState``)."""


class UpdateRule(NamedTuple):
    """An optimizer, or one transform of it, as a pair of pure functions (optax
    ``GradientTransformationExtraArgs``).

    Attributes
    ----------
    init : callable
        ``init(params) -> state``, a NamedTuple (:class:`EmptyState` when there is none).
    update : callable
        ``update(grads, state, params, *, model, batch, loss, value=None, **extra) ->
        (updates, new_state)``; ``updates`` is shaped like ``params``.
    name : str
        Short name used in records, plots and error messages.
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]
    name: str = "rule"

    @property
    def stateless(self) -> bool:
        """True when the state is :class:`EmptyState` (see :func:`is_stateless`)."""
        return is_stateless(self)


def is_empty_state(state) -> bool:
    """True for an :class:`EmptyState`, a (chain) tuple made only of empty states, or a
    partition state whose groups all keep empty states."""
    if isinstance(state, EmptyState):
        return True
    if isinstance(state, tuple) and getattr(state, "_fields", None) == ("inner_states",):
        return all(is_empty_state(s) for s in state.inner_states.values())
    return type(state) is tuple and all(is_empty_state(s) for s in state)


def is_stateless(rule: UpdateRule, params=()) -> bool:
    """True when ``rule.init(params)`` is empty (:func:`is_empty_state`): the update then
    depends on the parameters only and defines a continuous-time flow.

    Without ``params`` the rule is initialized on no parameters; a rule whose ``init``
    needs them (Adam's moments, :func:`arraycurv.rules.transforms.partition`) is then
    reported as keeping a state.
    """
    try:
        return is_empty_state(rule.init(tuple(params)))
    except (TypeError, ValueError, IndexError, KeyError):
        return False


def _check_state_tuple(state, n, names):
    if type(state) is not tuple or len(state) != n:
        raise TypeError(
            f"state: expected the state of rule.init(params), a tuple of {n} states ({', '.join(names)}), "
            f"got {type(state).__name__}"
        )


def chain(*rules: UpdateRule, name: str | None = None) -> UpdateRule:
    """Apply ``rules`` one after the other; the state is the tuple of their states
    (optax ``chain``).

    Each transform receives the updates of the one before and the same ``params`` and
    keyword extras (``model``, ``batch``, ``loss``, ``value``).
    """
    for i, r in enumerate(rules):
        if not isinstance(r, UpdateRule):
            raise TypeError(f"rules[{i}]: expected an UpdateRule, got {type(r).__name__}")
    names = tuple(r.name for r in rules)

    def init(params):
        return tuple(r.init(params) for r in rules)

    def update(grads, state, params, **extra):
        _check_state_tuple(state, len(rules), names)
        updates, new_state = grads, []
        for r, s in zip(rules, state):
            updates, s = r.update(updates, s, params, **extra)
            new_state.append(s)
        return updates, tuple(new_state)

    return UpdateRule(init, update, name or "chain(" + ", ".join(names) + ")")


def apply_direction(params, direction):
    """One discrete step: ``params + direction`` leaf-wise (new arrays, inputs untouched).

    Raises ``ValueError`` naming ``direction[i]`` for a wrong shape or a NaN/Inf entry."""
    if not isinstance(direction, (tuple, list)):
        raise backend.ArgumentTypeError(f"direction: expected a tuple of arrays like params, got "
                                        f"{type(direction).__name__}")
    if len(params) != len(direction):
        raise ValueError(f"direction: expected a tuple of {len(params)} arrays like params, got {len(direction)}")
    for i, (p, d) in enumerate(zip(params, direction)):
        if not backend.is_array(d):
            raise backend.ArgumentTypeError(f"direction[{i}]: expected an array, got {type(d).__name__}")
        if tuple(p.shape) != tuple(d.shape):
            raise ValueError(f"direction[{i}]: expected shape {tuple(p.shape)}, got {tuple(d.shape)}")
        if d.dtype != p.dtype:
            raise TypeError(f"direction[{i}]: expected dtype {p.dtype} like params[{i}], got {d.dtype}")
    pairs = [(f"direction[{i}]", d) for i, d in enumerate(direction)]
    if pairs:
        xp = backend.namespace_of_pairs(pairs)
        backend.check_all_finite(xp, pairs)
    return tuple(p + d for p, d in zip(params, direction))
