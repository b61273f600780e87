"""The NewtonSummary optimizer (Wolinski; spec grouped_newton.md section 5, Algorithm 1).

Composed from the rules interface (:mod:`arraycurv.rules.base`)::

    newton_summary = chain(dampened_momentum(mu, tau),          # u_k = buf
                           summary_rates(partition, ...),        # -V max(eta_hat, 0), every T steps
                           scale_by_damping(reduce_on_plateau))  # times lambda_d (GN-18)

1. :func:`dampened_momentum`: buf <- G_0, then buf <- mu buf + (1 - tau) G_k (SGD-style
   momentum with dampening, per tensor); u_k = buf has the sign of the gradient.
2. :func:`summary_rates`: every ``period`` steps, on the next H-batch (a separate,
   cycled batch, or the training batch), the summary tensors along u_k
   (:func:`arraycurv.curvature.summary.summary`) and the rates eta*
   (:mod:`arraycurv.directions.newton_summary`: the anisotropic cubic step GN-14, Newton
   GN-12 or ridge); eta* = 0 when the solver finds no minimizer. Rate momentum
   eta_hat <- rho_k eta_hat + (1 - rho_k) eta* with rho_0 = 0 ("maintain_true_lrs");
   the update is -V max(eta_hat, 0) (positive part optional), held between recomputations.
3. :func:`scale_by_damping`: the multiplicative damping lambda_d (GN-18) from a damping
   controller (:mod:`arraycurv.rules.damping`; default :func:`reduce_on_plateau` with
   factor 0.5, patience 0, relative threshold 1e-4), stepped once per ``epoch_steps``
   steps with the mean training loss of that window (the reference steps its scheduler
   once per epoch). A change of lambda_d applies to the current rates at once.

:func:`per_group_lrs` reads the per-group learning rates lambda_d max(eta_hat, 0) from the
state (recorded for plots), :func:`summary_info` the last summary and solve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .. import backend
from ..curvature.summary import summary
from ..directions.newton_summary import cubic_step, newton_step, ridge_step
from ..losses import MSE
from ..params.partition import Partition, canonical, scale_groups
from ..validation import check_int, check_nonneg, check_real
from .base import UpdateRule, chain
from .damping import DampingController, reduce_on_plateau
from .registry import RuleSpec, register_rule

__all__ = [
    "DampedMomentumState",
    "DampingScaleState",
    "SummaryRatesState",
    "dampened_momentum",
    "newton_summary",
    "per_group_lrs",
    "scale_by_damping",
    "summary_info",
    "summary_rates",
]


def _unit(value, name):
    return check_real(value, name, lo=0.0, hi=1.0, want="a number in [0, 1]")


# ----------------------------------------------------------------- momentum
class DampedMomentumState(NamedTuple):
    """The momentum buffer (None before the first step)."""

    buf: Any = None


def dampened_momentum(mu: float = 0.9, tau: float = 0.9) -> UpdateRule:
    """SGD momentum with dampening (PyTorch ``SGD(momentum=mu, dampening=tau)``): buf <- G at
    the first step, then buf <- mu buf + (1 - tau) G; returns buf (Algorithm 1, spec 5.2)."""
    mu, tau = _unit(mu, "mu"), _unit(tau, "tau")

    def update(updates, state, params, **extra):
        if not isinstance(state, DampedMomentumState):
            raise TypeError(f"state: expected a DampedMomentumState, got {type(state).__name__}")
        if state.buf is None:
            buf = tuple(updates)
        else:
            buf = tuple(mu * b + (1.0 - tau) * g for b, g in zip(state.buf, updates))
        return buf, DampedMomentumState(buf)

    return UpdateRule(lambda params: DampedMomentumState(), update, "dampened_momentum")


# ----------------------------------------------------------------- rates
class SummaryRatesState(NamedTuple):
    """State of :func:`summary_rates`.

    Attributes
    ----------
    count : int
        Steps taken.
    computations : int
        Number of recomputations (index of the next H-batch).
    eta_hat : array (S,) or None
        The moving average of eta* (rate momentum).
    summary : Summary or None
        The last summary tensors (gbar, Hbar, d).
    solve : CubicStep or None
        The last cubic solve (None for the Newton and ridge methods).
    found : bool
        Whether the last solve found a minimizer.
    """

    count: int = 0
    computations: int = 0
    eta_hat: Any = None
    summary: Any = None
    solve: Any = None
    found: bool = True


def _h_batch(h_batches, index, batch):
    if h_batches is None:
        return batch
    if callable(h_batches):
        return h_batches(index)
    if isinstance(h_batches, tuple) and len(h_batches) == 2 and backend.is_array(h_batches[0]):
        return h_batches
    return h_batches[index % len(h_batches)]


def _rates(method, summ, damping_int, ridge):
    """eta* and the solve record; eta* = 0 when no minimizer is found (spec 5.2)."""
    xp = backend.namespace_of(gbar=summ.gbar)
    if method == "cubic":
        solve = cubic_step(summ.gbar, summ.hbar, summ.d, damping_int)
        return solve.eta, solve, solve.found
    try:
        eta = newton_step(summ.gbar, summ.hbar) if method == "newton" else ridge_step(summ.gbar, summ.hbar, ridge)
        return eta, None, True
    except ValueError:
        return xp.zeros_like(summ.gbar), None, False


def summary_rates(partition: Partition | Callable | None = None, *, period: int = 10, h_batches=None,
                  method: str = "cubic", damping_int: float = 1.0, ridge: float = 0.0, rho: float = 0.5,
                  positive: bool = True, loss=None) -> UpdateRule:
    """Per-group rates from the summary tensors along the incoming direction u (GN-10 to GN-17).

    Parameters
    ----------
    partition : Partition, callable or None
        The groups; ``partition(params) -> Partition`` or None for the canonical one.
    period : int
        T, steps between recomputations.
    h_batches : None, batch, sequence of batches or callable
        The H-batches (cycled, one per recomputation; ``h_batches(i)`` for a callable);
        None uses the training batch of the step.
    method : str
        ``"cubic"`` (GN-14, with ``damping_int`` = lambda_int), ``"newton"`` (GN-12) or
        ``"ridge"`` ((Hbar + ridge I)^{-1} gbar).
    rho : float
        Rate momentum (0 for the first computation).
    positive : bool
        Use max(eta_hat, 0) (the reference's ``remove_negative``).
    loss : optional
        The loss of the summary tensors (default: the one the rule is called with).

    Returns
    -------
    UpdateRule
        ``update(u, ...) = -V max(eta_hat, 0)`` (a descent step before the damping).
    """
    period = check_int(period, "period", lo=1)
    damping_int = check_nonneg(damping_int, "damping_int")
    ridge = check_nonneg(ridge, "ridge")
    rho = _unit(rho, "rho")
    if method not in ("cubic", "newton", "ridge"):
        raise ValueError(f"method: expected 'cubic', 'newton' or 'ridge', got {method!r}")

    def part_of(params):
        if partition is None:
            return canonical(tuple(params))
        return partition(params) if callable(partition) else partition

    def update(u, state, params, *, model, batch, loss=loss, **extra):
        if not isinstance(state, SummaryRatesState):
            raise TypeError(f"state: expected a SummaryRatesState, got {type(state).__name__}")
        part = part_of(params)
        chosen = MSE() if loss is None else loss
        if state.count % period == 0:
            hb = _h_batch(h_batches, state.computations, batch)
            summ = summary(model, tuple(params), hb, tuple(u), part, chosen, order=3 if method == "cubic" else 2)
            eta, solve, found = _rates(method, summ, damping_int, ridge)
            r = rho if state.eta_hat is not None else 0.0
            eta_hat = eta if state.eta_hat is None else r * state.eta_hat + (1.0 - r) * eta
            state = SummaryRatesState(state.count, state.computations + 1, eta_hat, summ, solve, found)
        xp = backend.namespace_of(eta=state.eta_hat)
        rates = xp.maximum(state.eta_hat, xp.zeros_like(state.eta_hat)) if positive else state.eta_hat
        step = scale_groups(tuple(u), -rates, part)
        return step, state._replace(count=state.count + 1)

    return UpdateRule(lambda params: SummaryRatesState(), update, "summary_rates")


# ----------------------------------------------------------------- damping
class DampingScaleState(NamedTuple):
    """The controller state (holds lambda_d), and the running loss sum of the window."""

    controller: Any
    window_sum: float = 0.0
    window_steps: int = 0


def scale_by_damping(controller: DampingController, *, epoch_steps: int = 50) -> UpdateRule:
    """updates <- lambda_d updates (GN-18), lambda_d from ``controller``, updated every
    ``epoch_steps`` steps with the mean of the losses (``value``) of the window."""
    if not isinstance(controller, DampingController):
        raise TypeError(f"controller: expected a DampingController, got {type(controller).__name__}")
    epoch_steps = check_int(epoch_steps, "epoch_steps", lo=1)

    def update(updates, state, params, *, value=None, **extra):
        if not isinstance(state, DampingScaleState):
            raise TypeError(f"state: expected a DampingScaleState, got {type(state).__name__}")
        total, n, ctrl = state.window_sum, state.window_steps, state.controller
        if value is not None:
            total, n = total + float(value), n + 1
        if n >= epoch_steps:
            ctrl = controller.update(ctrl, value=total / n)
            total, n = 0.0, 0
        lam = ctrl.damping
        return tuple(lam * t for t in updates), DampingScaleState(ctrl, total, n)

    return UpdateRule(lambda params: DampingScaleState(controller.init()), update, "scale_by_damping")


# ----------------------------------------------------------------- the rule
def newton_summary(lr: float = 0.1, *, partition=None, damping_int: float = 1.0, momentum: float = 0.9,
                   dampening: float = 0.9, lr_momentum: float = 0.5, period: int = 10, h_batches=None,
                   positive: bool = True, method: str = "cubic", ridge: float = 0.0,
                   plateau_factor: float = 0.5, plateau_patience: int = 0, plateau_rtol: float = 1e-4,
                   epoch_steps: int = 50, controller: DampingController | None = None, loss=None,
                   name: str = "newton_summary") -> UpdateRule:
    """NewtonSummary (Wolinski; Algorithm 1 as reconstructed in spec 5.2, defaults of spec 5.3).

    ``lr`` is the initial damping lambda_d (0.1 for the MLP runs of the paper); the step is
    theta <- theta - lambda_d V max(eta_hat, 0) (GN-18) with V = Diag(u) I_{P:S} and u the
    dampened momentum of the gradients. ``controller`` replaces the default
    reduce-on-plateau controller (factor ``plateau_factor``, patience ``plateau_patience``,
    relative threshold ``plateau_rtol``). See :func:`summary_rates` for the other
    arguments.
    """
    lam = check_nonneg(lr, "lr")
    if controller is None:
        controller = reduce_on_plateau(lam, factor=plateau_factor, patience=plateau_patience, rtol=plateau_rtol)
    return chain(
        dampened_momentum(momentum, dampening),
        summary_rates(partition, period=period, h_batches=h_batches, method=method, damping_int=damping_int,
                      ridge=ridge, rho=lr_momentum, positive=positive, loss=loss),
        scale_by_damping(controller, epoch_steps=epoch_steps),
        name=name,
    )


def _parts(state):
    if type(state) is not tuple or len(state) != 3 or not isinstance(state[1], SummaryRatesState):
        raise TypeError(f"state: expected the state of newton_summary(...).init(params), got {type(state).__name__}")
    return state[1], state[2]


def per_group_lrs(state):
    """The per-group learning rates lambda_d max(eta_hat, 0) of a :func:`newton_summary`
    state (None before the first step)."""
    rates, damp = _parts(state)
    if rates.eta_hat is None:
        return None
    xp = backend.namespace_of(eta=rates.eta_hat)
    return damp.controller.damping * xp.maximum(rates.eta_hat, xp.zeros_like(rates.eta_hat))


def summary_info(state) -> dict:
    """The last summary and solve of a :func:`newton_summary` state: ``{"hbar", "gbar",
    "d", "r", "r0", "case", "found", "damping", "computations"}`` (arrays or None)."""
    rates, damp = _parts(state)
    summ, solve = rates.summary, rates.solve
    return {
        "hbar": None if summ is None else summ.hbar,
        "gbar": None if summ is None else summ.gbar,
        "d": None if summ is None else summ.d,
        "r": None if solve is None else solve.r,
        "r0": None if solve is None else solve.r0,
        "case": None if solve is None else solve.case,
        "found": rates.found,
        "damping": damp.controller.damping,
        "computations": rates.computations,
    }


register_rule(RuleSpec("newton_summary", newton_summary, "NewtonSummary", None,
                       "GN-10 to GN-18, Algorithm 1 (spec grouped_newton.md 5.2)", "Wolinski 2023 (arXiv:2312.03885)"))
