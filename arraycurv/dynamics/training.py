"""Training loops: discrete steps and continuous-time integration of an update rule
(spec 4.3).

* :func:`train` runs ``params <- params + direction`` with an
  :class:`arraycurv.UpdateRule` and records losses (train and any number of evaluation
  batches), parameters, Huh's conserved quantities c_i (Theorem 1, eq 15) and any
  user-given function of the parameters, as NumPy arrays ready for saving and plotting.
* :func:`integrate_rule` follows the continuous-time flow ``d params / dt = direction``
  of a stateless rule with the adaptive integrator :func:`arraycurv.solve_ode`, so that
  conservation laws can be checked far below step-size error (Huh Sec. 3.1, Fig. 5C);
  :func:`rule_velocity` is the right-hand side.

See ``docs/rules.md``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import backend
from ..curvature.generic import value_and_grad
from ..losses import MSE, loss_value
from ..models.base import forward
from ..rules import UpdateRule, apply_direction
from .integrate import OdeSolution, solve_ode
from .theory import conserved_quantities

__all__ = ['TrainResult', 'integrate_rule', 'print_progress', 'rule_velocity', 'train']


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` recorded.

    Attributes
    ----------
    steps : numpy.ndarray of int
        Step numbers at which values were recorded (0 = before the first step).
    losses : numpy.ndarray
        Training loss (mean over the batch) at those steps.
    eval_losses : dict of str -> numpy.ndarray
        Loss on each evaluation batch at those steps.
    records : dict of str -> numpy.ndarray
        Recorded arrays, stacked over the recorded steps (leading axis): ``"params[i]"``
        with ``record_params``, ``"c[i]"`` (c_{i+1} of Huh eq 15, 0-based i) with
        ``record_conserved``, and one entry per name of ``record``.
    params : tuple of arrays
        Final parameters (in the namespace of the input).
    state : object
        Final state of the rule.
    time_per_step : float
        Mean wall-clock seconds of one update step (direction and step), recording excluded.
    """

    steps: Any
    losses: Any
    eval_losses: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    params: tuple = ()
    state: Any = None
    time_per_step: float = math.nan


def print_progress(step: int, num_steps: int, loss: float, *, stream=None) -> None:
    """A ``progress`` callback for :func:`train`: one compact line on stderr at step 0,
    whenever another 5% of the steps is done, and at the end."""
    if num_steps <= 0:
        return
    now, before = (20 * step) // num_steps, (20 * (step - 1)) // num_steps
    if step == 0 or step == num_steps or now > before:
        pct = 100.0 * step / num_steps
        print(f"step {step:>{len(str(num_steps))}d}/{num_steps} ({pct:5.1f}%)  loss {loss:.6g}",
              file=stream or sys.stderr, flush=True)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_rule(rule):
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"rule: expected an UpdateRule (arraycurv.sgd, arraycurv.qngd, ...), got {type(rule).__name__}")


def _loss(model, params, batch, loss):
    """Mean loss as a float: forward pass for a batch (x, y), else (moments) value_and_grad."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return float(loss_value(loss, forward(model, params, x), y))
    value, _ = value_and_grad(model, params, batch, loss)
    return float(value)


def train(
    model,
    params,
    batch,
    rule: UpdateRule,
    num_steps: int,
    *,
    record_every: int = 1,
    eval_batches: Mapping[str, Any] | None = None,
    record_params: bool = False,
    record_conserved: bool = False,
    record: Mapping[str, Callable[[Any], Any]] | None = None,
    progress: Callable[[int, int, float], Any] | None = None,
    callback: Callable[[int, Any, Any], Any] | None = None,
    loss=MSE(),
) -> TrainResult:
    """Run ``num_steps`` discrete steps ``params <- params + direction`` of ``rule``.

    Values are recorded before the first step (step 0), after every ``record_every``
    steps and after the last step.

    Parameters
    ----------
    model, params
        A model of arraycurv and its initial parameters (not modified).
    batch
        The training batch ``(x, y)`` (deep linear networks: or LinearMoments), or a
        callable ``batch(step) -> batch`` for minibatches (step counts from 0; the
        recorded training loss is then that of the batch of the recorded step).
    rule : UpdateRule
        The optimizer (:mod:`arraycurv.rules`).
    num_steps : int
        Number of steps (>= 0).
    record_every : int
        Recording interval (>= 1).
    eval_batches : dict of str -> batch, optional
        Losses on these batches are recorded too (e.g. ``{"test": (x_test, y_test)}``).
    record_params : bool
        Record the parameters (``records["params[i]"]``).
    record_conserved : bool
        Record Huh's c_i = W_i W_i^T - W_{i+1}^T W_{i+1} (Theorem 1, eq 15) of a deep
        linear network (``records["c[i]"]``, :func:`arraycurv.conserved_quantities`).
    record : dict of str -> callable, optional
        ``fn(params) -> array`` recorded under its name (e.g. singular-mode strengths).
    progress : callable, optional
        ``progress(step, num_steps, loss)`` after every step with the most recently
        recorded training loss (:func:`print_progress` prints every ~5%).
    callback : callable, optional
        ``callback(step, params, state)`` after every step; returning True stops training
        (early stopping). The step is then recorded.
    loss
        The loss of the recorded values (the rule carries its own), MSE by default.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        If the training loss becomes NaN/Inf (the message gives the step), or for bad
        arguments (naming them).
    """
    _check_rule(rule)
    num_steps = _check_int(num_steps, "num_steps", 0)
    record_every = _check_int(record_every, "record_every", 1)
    eval_batches = dict(eval_batches or {})
    record = dict(record or {})
    for name, fn in record.items():
        if not callable(fn):
            raise TypeError(f"record[{name!r}]: expected a callable fn(params) -> array, got {type(fn).__name__}")
    params = tuple(params)
    backend.namespace_of(params=params)
    get_batch = batch if callable(batch) else (lambda step: batch)

    steps, losses = [], []
    evals = {name: [] for name in eval_batches}
    recs: dict[str, list] = {}

    def do_record(step, params, current_batch):
        value = _loss(model, params, current_batch, loss)
        if not math.isfinite(value):
            raise ValueError(
                f"params: expected finite parameters and loss, got training loss {value} at step {step} "
                f"(rule {rule.name!r}: lower the learning rate, add damping or clipping)"
            )
        steps.append(step)
        losses.append(value)
        for name, b in eval_batches.items():
            evals[name].append(_loss(model, params, b, loss))
        items = []
        if record_params:
            items += [(f"params[{i}]", p) for i, p in enumerate(params)]
        if record_conserved:
            items += [(f"c[{i}]", c) for i, c in enumerate(conserved_quantities(params))]
        items += [(name, fn(params)) for name, fn in record.items()]
        for name, arr in items:
            recs.setdefault(name, []).append(backend.to_numpy(arr).copy())
        return value

    state = rule.init(params)
    last_loss = do_record(0, params, get_batch(0))
    if progress is not None:
        progress(0, num_steps, last_loss)
    elapsed = 0.0
    done = 0
    for step in range(1, num_steps + 1):
        current = get_batch(step - 1)
        t0 = time.perf_counter()
        direction, state = rule.update(model, params, current, state)
        params = apply_direction(params, direction)
        elapsed += time.perf_counter() - t0
        done = step
        stop = bool(callback(step, params, state)) if callback is not None else False
        if step % record_every == 0 or step == num_steps or stop:
            last_loss = do_record(step, params, current if callable(batch) else batch)
        if progress is not None:
            progress(step, num_steps, last_loss)
        if stop:
            break

    npx = backend.namespace_by_name("numpy")  # results are NumPy arrays, for saving and plotting
    return TrainResult(
        steps=npx.asarray(steps, dtype=npx.int64),
        losses=npx.asarray(losses, dtype=npx.float64),
        eval_losses={k: npx.asarray(v, dtype=npx.float64) for k, v in evals.items()},
        records={k: npx.stack(v) for k, v in recs.items()},
        params=params,
        state=state,
        time_per_step=elapsed / done if done else math.nan,
    )


def rule_velocity(model, rule: UpdateRule, batch) -> Callable[[float, Any], Any]:
    """Right-hand side ``fun(t, params) = direction`` of the continuous-time flow of a
    stateless rule (Huh 2020: ``w_dot = -eta (G^+)^{1/q} g`` etc., with lr as eta).

    Raises
    ------
    ValueError
        If the rule keeps a state (e.g. Adam): it has no continuous-time flow here.
    """
    _check_rule(rule)
    if not rule.stateless:
        raise ValueError(
            f"rule: expected a stateless rule (sgd, qngd, qngd_blockdiag, regularized_ngd) for continuous time, "
            f"got {rule.name!r} which keeps a state"
        )

    def fun(t, params):
        direction, _ = rule.update(model, tuple(params), batch, None)
        return tuple(direction)

    return fun


def integrate_rule(model, params, batch, rule: UpdateRule, t_span, *, rtol=1e-8, atol=1e-10, t_eval=None,
                   **kwargs) -> OdeSolution:
    """Integrate ``d params / dt = direction`` of a stateless rule (spec 4.3).

    Uses the adaptive Dormand-Prince integrator :func:`arraycurv.solve_ode` (extra
    keyword arguments such as ``max_steps`` go to it), so that, e.g., the conserved
    quantities of Huh Theorem 1 drift only at the level of the tolerance.

    Returns
    -------
    OdeSolution
        ``t`` and ``y`` (list of parameter tuples) at ``t_eval`` (or every step).

    Raises
    ------
    ValueError
        For a stateful ``rule`` (Adam).
    IntegrationError
        When the integrator cannot meet its tolerance (propagated from solve_ode).
    """
    fun = rule_velocity(model, rule, batch)
    return solve_ode(fun, t_span, tuple(params), rtol=rtol, atol=atol, t_eval=t_eval, **kwargs)
