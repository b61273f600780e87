"""Damping controllers: the damping lambda of a curvature step lives in their state.

A :class:`DampingController` is a pair of pure functions::

    state = controller.init()                       # state.damping is lambda
    state = controller.update(state, value=loss, predicted_change=pred)

called once per step, before the step's direction is computed, with the loss at the
current parameters and the change of the loss that the quadratic model predicted for the
previous step (None at the first step). :func:`arraycurv.rules.transforms.precondition`
(``damping=controller``) calls it and passes ``damping=state.damping`` to the direction.

Controllers: :func:`constant`, :func:`schedule`, :func:`levenberg_marquardt` (the rho rule
of Bernacchia et al. 2018 eq 21 and kfac-jax, Martens 2014) and :func:`reduce_on_plateau`
(PyTorch's ReduceLROnPlateau logic, as GroupedNewton's ReduceDampingOnPlateau). See
``docs/rules.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import backend
from ..validation import ArgumentTypeError, check_int, check_lr, check_nonneg, check_real

__all__ = [
    "ConstantDampingState",
    "DampingController",
    "LevenbergMarquardtState",
    "PlateauState",
    "ScheduleDampingState",
    "constant",
    "levenberg_marquardt",
    "lm_damping",
    "reduce_on_plateau",
    "schedule",
]


class DampingController(NamedTuple):
    """``init() -> state`` and ``update(state, *, value=None, predicted_change=None) -> state``;
    every state has a ``damping`` field (lambda)."""

    init: Callable[[], Any]
    update: Callable[..., Any]
    name: str = "damping"


def _float(value, name) -> float:
    if value is None:
        raise ValueError(f"{name}: expected the loss at the current parameters (arraycurv.train passes it), got None")
    is_scalar = backend.is_array(value) and getattr(value, "ndim", None) == 0
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or is_scalar):
        raise ArgumentTypeError(f"{name}: expected the loss at the current parameters (a real number), got {value!r}")
    return float(value)  # NaN allowed: a diverged step counts as failed


def _check_state(state, cls):
    if not isinstance(state, cls):
        raise TypeError(f"state: expected a {cls.__name__} from controller.init(), got {type(state).__name__}")


# ----------------------------------------------------------------------------- constant, schedule
class ConstantDampingState(NamedTuple):
    """A fixed damping."""

    damping: float


def constant(damping: float) -> DampingController:
    """The fixed damping ``lambda`` (>= 0), the Levenberg-Marquardt term of Huh 2020 Sec. 6."""
    lam = check_nonneg(damping, "damping")
    return DampingController(lambda: ConstantDampingState(lam), lambda state, **kw: state, "constant")


class ScheduleDampingState(NamedTuple):
    """Damping of the current step and the number of steps taken."""

    damping: float
    count: int


def schedule(fn: Callable[[int], float]) -> DampingController:
    """``lambda_k = fn(k)`` at step k = 0, 1, 2, ... (a damping schedule)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable fn(step) -> damping, got {type(fn).__name__}")

    def value_at(k):
        return check_nonneg(fn(k), f"fn({k})")

    def update(state, **kw):
        _check_state(state, ScheduleDampingState)
        return ScheduleDampingState(value_at(state.count), state.count + 1)

    return DampingController(lambda: ScheduleDampingState(value_at(0), 0), update, "schedule")


# ----------------------------------------------------------------------------- Levenberg-Marquardt
class LevenbergMarquardtState(NamedTuple):
    """Damping, the last reduction ratio rho (NaN before the first one) and the loss at
    the parameters of the previous step (None at the start)."""

    damping: float
    rho: float = math.nan
    value: float | None = None


def _lm_params(lower, upper, increase, decrease, min_damping, max_damping) -> dict:
    """The checked hyperparameters of the rho rule (:func:`lm_damping`)."""
    lower = check_real(lower, "lower")
    upper = check_real(upper, "upper", lo=lower, want=f"a number >= lower = {lower!r}")
    increase = check_real(increase, "increase", lo=1, want="a finite number >= 1")
    decrease = check_real(decrease, "decrease", lo=0, lo_open=True, hi=1, want="a number in (0, 1]")
    lo = check_nonneg(min_damping, "min_damping")
    max_damping = check_real(max_damping, "max_damping", lo=lo, allow_inf=True,
                             want=f"a number >= min_damping = {lo!r} (math.inf allowed)")
    return dict(lower=lower, upper=upper, increase=increase, decrease=decrease, min_damping=lo,
                max_damping=max_damping)


def lm_damping(damping: float, rho: float, *, lower: float = 0.25, upper: float = 0.75, increase: float = 1.5,
               decrease: float = 2.0 / 3.0, min_damping: float = 0.0, max_damping: float = math.inf) -> float:
    """The rho rule (Bernacchia et al. 2018 eq 21; kfac-jax ``_compute_new_damping_and_rho``):
    ``lambda * increase`` if ``rho < lower``, ``lambda * decrease`` if ``rho > upper``,
    else ``lambda``; clipped to ``[min_damping, max_damping]``. A NaN ratio counts as a
    failed step (kfac-jax replaces it by -100)."""
    damping = check_nonneg(damping, "damping")
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real):
        raise ArgumentTypeError(f"rho: expected a real number (NaN for a failed step), got {rho!r}")
    rho = float(rho)
    params = _lm_params(lower, upper, increase, decrease, min_damping, max_damping)
    lower, upper, increase, decrease = (params[k] for k in ("lower", "upper", "increase", "decrease"))
    min_damping, max_damping = params["min_damping"], params["max_damping"]
    if math.isnan(rho) or rho < lower:
        damping = damping * increase
    elif rho > upper:
        damping = damping * decrease
    return min(max(damping, min_damping), max_damping)


def levenberg_marquardt(damping: float, *, lower: float = 0.25, upper: float = 0.75, increase: float = 1.5,
                        decrease: float = 2.0 / 3.0, min_damping: float = 0.0,
                        max_damping: float = math.inf) -> DampingController:
    """Levenberg-Marquardt adaptation: ``rho = actual / predicted`` change of the loss over
    the previous step, then :func:`lm_damping` (Bernacchia et al. 2018 eq 21 with the
    defaults 0.25 / 0.75 and factors 3/2, 2/3; Martens 2014, kfac-jax).

    Parameters
    ----------
    damping : float
        Initial lambda (> 0).
    lower, upper : float
        Thresholds on rho (``lower <= upper``).
    increase, decrease : float
        Factors applied below ``lower`` (>= 1) and above ``upper`` (in (0, 1]).
    min_damping, max_damping : float
        Bounds of lambda.
    """
    lam = check_lr(damping, "damping")
    params = _lm_params(lower, upper, increase, decrease, min_damping, max_damping)

    def update(state, *, value=None, predicted_change=None, **kw):
        _check_state(state, LevenbergMarquardtState)
        value = _float(value, "value")
        if state.value is None or predicted_change is None:
            return LevenbergMarquardtState(state.damping, math.nan, value)
        actual = value - state.value
        rho = actual / predicted_change if predicted_change != 0 else math.nan
        return LevenbergMarquardtState(lm_damping(state.damping, rho, **params), rho, value)

    return DampingController(lambda: LevenbergMarquardtState(lam), update, "levenberg_marquardt")


# ----------------------------------------------------------------------------- reduce on plateau
class PlateauState(NamedTuple):
    """Damping, the best loss so far and the number of steps without improvement."""

    damping: float
    best: float = math.inf
    bad_steps: int = 0


def reduce_on_plateau(damping: float, *, factor: float = 0.1, patience: int = 10, rtol: float = 1e-4,
                      min_damping: float = 0.0) -> DampingController:
    """Multiply lambda by ``factor`` when the loss stops improving (PyTorch
    ReduceLROnPlateau, mode "min", relative threshold; GroupedNewton's
    ReduceDampingOnPlateau).

    A step is bad when ``value >= best (1 - rtol)``; after more than ``patience``
    consecutive bad steps lambda becomes ``max(factor lambda, min_damping)`` and the count
    restarts. ``factor > 1`` increases lambda instead.
    """
    lam = check_nonneg(damping, "damping")
    factor = check_lr(factor, "factor")
    patience = check_int(patience, "patience", lo=0)
    rtol = check_nonneg(rtol, "rtol")
    lo = check_nonneg(min_damping, "min_damping")

    def update(state, *, value=None, **kw):
        _check_state(state, PlateauState)
        value = _float(value, "value")
        if value < state.best * (1.0 - rtol):
            return PlateauState(state.damping, value, 0)
        bad = state.bad_steps + 1
        if bad > patience:
            return PlateauState(max(state.damping * factor, lo), state.best, 0)
        return PlateauState(state.damping, state.best, bad)

    return DampingController(lambda: PlateauState(lam), update, "reduce_on_plateau")
