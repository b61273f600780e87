"""Training loops: discrete steps and continuous-time integration of an update rule
(spec 4.3).

* :func:`train` runs ``params <- params + updates`` with an
  :class:`arraycurv.rules.UpdateRule` and records losses (train and any number of
  evaluation batches), parameters, Huh's conserved quantities c_i (Theorem 1, eq 15) and
  any user-given function of the parameters, as NumPy arrays ready for saving and
  plotting. Each step computes at most one gradient (one forward pass), and the recorded
  loss of a step is the value of that same ``value_and_grad``.
* :func:`integrate_rule` follows the continuous-time flow ``d params / dt = updates``
  of a rule whose state is empty with the adaptive integrator
  :func:`arraycurv.dynamics.integrate.solve_ode`, so that conservation laws can be
  checked far below step-size error (Huh Sec. 3.1, Fig. 5C); :func:`rule_velocity` is the
  right-hand side.

See ``docs/rules.md``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import backend
from ..curvature.generic import value_and_grad
from ..losses import MSE, loss_value
from ..models.base import forward
from ..rules.base import UpdateRule, apply_direction, is_stateless
from ..validation import check_call, check_int, check_real
from .integrate import OdeSolution, solve_ode
from .theory import conserved_quantities

__all__ = ["DIVERGENCE_FACTOR", "DivergenceError", "TrainResult", "integrate_rule", "print_progress", "rule_velocity",
           "train"]


class DivergenceError(ValueError):
    """Training diverged: the loss or the parameters stopped being finite, or the loss
    exceeded ``divergence`` times its initial value (:func:`train`; the message gives the
    step, the loss and the rule)."""


#: Default of ``train(divergence=...)``: a run whose training loss exceeds this multiple of
#: its initial value has diverged.
DIVERGENCE_FACTOR = 1e6


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
        Mean wall-clock seconds of one update step (gradient, update and step), recording excluded.
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


class _Recorder:
    """Collects what :func:`train` records (host-side NumPy) and detects divergence."""

    def __init__(self, model, loss, rule_name, eval_batches, record_params, record_conserved, record,
                 divergence=DIVERGENCE_FACTOR, xp=None):
        self.model, self.loss, self.rule_name, self.xp = model, loss, rule_name, xp
        self.divergence, self.initial = divergence, None
        self.eval_batches, self.record_params, self.record_conserved = eval_batches, record_params, record_conserved
        self.record = record
        self.steps, self.losses, self.recs = [], [], {}
        self.evals = {name: [] for name in eval_batches}

    def add(self, step, params, value) -> float:
        """Record step ``step`` at ``params`` with training loss ``value``."""
        value = self.check(step, value)
        self.steps.append(step)
        self.losses.append(value)
        for name, b in self.eval_batches.items():
            self.evals[name].append(_loss(self.model, params, b, self.loss))
        items = []
        if self.record_params:
            items += [(f"params[{i}]", p) for i, p in enumerate(params)]
        if self.record_conserved:
            items += [(f"c[{i}]", c) for i, c in enumerate(conserved_quantities(params))]
        items += [(name, fn(params)) for name, fn in self.record.items()]
        for name, arr in items:
            self.recs.setdefault(name, []).append(backend.to_numpy(arr).copy())
        return value

    def check(self, step, value) -> float:
        """The divergence policy: raise :class:`DivergenceError` if the training loss
        ``value`` at ``step`` is not finite or exceeds ``divergence`` times the loss at
        step 0 (a zero initial loss counts as 1)."""
        value = float(value)
        hint = f"rule {self.rule_name!r}: lower the learning rate, add damping or clipping"
        if not math.isfinite(value):
            raise DivergenceError(
                f"params: expected finite parameters and loss, got training loss {value} at step {step} ({hint})")
        if self.initial is None:
            self.initial = value
        elif self.divergence is not None and value > self.divergence * (self.initial or 1.0):
            raise DivergenceError(
                f"params: expected a training loss below {self.divergence:g} x its initial value "
                f"{self.initial:.6g}, got {value:.6g} at step {step} ({hint}; train(divergence=None) "
                f"disables the check)")
        return value

    def check_params(self, step, params) -> None:
        """Raise :class:`DivergenceError` if the parameters after ``step`` are not finite."""
        if not backend._all_finite(self.xp, list(params)):
            raise DivergenceError(
                f"params: expected finite parameters, got NaN/Inf entries after step {step} "
                f"(rule {self.rule_name!r}: lower the learning rate, add damping or clipping)")

    @property
    def last(self) -> float:
        return self.losses[-1]

    def result(self, params, state, elapsed, done) -> TrainResult:
        npx = backend.namespace_by_name("numpy")  # results are NumPy arrays, for saving and plotting
        return TrainResult(
            steps=npx.asarray(self.steps, dtype=npx.int64),
            losses=npx.asarray(self.losses, dtype=npx.float64),
            eval_losses={k: npx.asarray(v, dtype=npx.float64) for k, v in self.evals.items()},
            records={k: npx.stack(v) for k, v in self.recs.items()},
            params=params,
            state=state,
            time_per_step=elapsed / done if done else math.nan,
        )


def _check_train_args(rule, num_steps, record_every, eval_batches, record, params):
    _check_rule(rule)
    num_steps = check_int(num_steps, "num_steps", lo=0)
    record_every = check_int(record_every, "record_every", lo=1)
    record = dict(record or {})
    for name, fn in record.items():
        if not callable(fn):
            raise TypeError(f"record[{name!r}]: expected a callable fn(params) -> array, got {type(fn).__name__}")
    params = tuple(params)
    xp = backend.namespace_of(params=params)
    return num_steps, record_every, dict(eval_batches or {}), record, params, xp


class _Gradient(Sequence):
    """The gradient of the mean loss at ``params``, computed by one ``value_and_grad`` on
    first use: a rule that never reads it (a preconditioned direction computes its own)
    costs no extra pass. ``value`` is the loss of the same call."""

    def __init__(self, model, params, batch, loss):
        self._args = (model, params, batch, loss)
        self._result = None

    def _get(self):
        if self._result is None:
            self._result = value_and_grad(*self._args)
        return self._result

    @property
    def value(self):
        return self._get()[0]

    @property
    def computed(self) -> bool:
        return self._result is not None

    def __getitem__(self, i):
        return self._get()[1][i]

    def __len__(self):
        return len(self._get()[1])

    def __iter__(self):
        return iter(self._get()[1])


def _update(rule, model, params, batch, state, loss, grads, with_value):
    """One step ``params + rule.update(grads, ...)``: the new parameters and state."""
    value = grads.value if with_value or grads.computed else None
    updates, state = rule.update(grads, state, params, model=model, batch=batch, loss=loss, value=value)
    return apply_direction(params, updates), state


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
    divergence: float | None = DIVERGENCE_FACTOR,
) -> TrainResult:
    """Run ``num_steps`` discrete steps ``params <- params + updates`` of ``rule``.

    Each step calls ``rule.update(grads, state, params, model=, batch=, loss=, value=)``
    where ``grads`` (a sequence of arrays shaped like ``params``) and ``value`` come from
    one ``value_and_grad(model, params, batch, loss)``, computed when the rule reads the
    gradient, when the step's loss is recorded, or (``value``) for rules with a state;
    otherwise ``value`` is None. Values are recorded before the first step (step 0), after
    every ``record_every`` steps and after the last step; the training loss of a recorded
    step k is the ``value`` of the gradient of step k + 1 (at most one forward pass per
    step; the last step and an early stop take one more).

    Parameters
    ----------
    model, params
        A model of arraycurv and its initial parameters (not modified).
    batch
        The training batch ``(x, y)`` (deep linear networks: or LinearMoments), or a
        callable ``batch(step) -> batch`` for minibatches (step counts from 0; the
        recorded training loss of step k >= 1 is then that on the batch of step k - 1,
        which takes one more forward pass on each recorded step).
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
        linear network (``records["c[i]"]``, :func:`arraycurv.dynamics.theory.conserved_quantities`).
    record : dict of str -> callable, optional
        ``fn(params) -> array`` recorded under its name (e.g. singular-mode strengths).
    progress : callable, optional
        ``progress(step, num_steps, loss)`` once per step with the most recently
        recorded training loss (:func:`print_progress` prints every ~5%).
    callback : callable, optional
        ``callback(step, params, state)`` after every step; returning True stops training
        (early stopping). The step is then recorded.
    loss
        The loss of the gradient, of the rule and of the recorded values (MSE by default).
    divergence : float or None
        The divergence policy: a training loss above ``divergence`` times the loss at
        step 0 (default 1e6, :data:`DIVERGENCE_FACTOR`; a zero initial loss counts as 1),
        or a NaN/Inf loss or parameter, raises :class:`DivergenceError`. Checked on every
        step: the loss wherever the step computes it anyway (rules that read the
        gradient, rules with a state, recorded steps), and the finiteness of the new
        parameters after every step. None keeps only the finiteness checks.

    Returns
    -------
    TrainResult

    Raises
    ------
    DivergenceError
        If training diverges (above; a ValueError whose message gives the step, the
        loss and the rule).
    ValueError, TypeError
        For bad arguments (naming them).
    """
    num_steps, record_every, eval_batches, record, params, xp = _check_train_args(
        rule, num_steps, record_every, eval_batches, record, params)
    for name, b in eval_batches.items():  # checked once, up front, naming the entry
        check_call(model, params, batch=b, loss=loss, names={"batch": f"eval_batches[{name!r}]"})
    if divergence is not None:
        divergence = check_real(divergence, "divergence", lo=1, lo_open=True, allow_inf=True)
    rec = _Recorder(model, loss, rule.name, eval_batches, record_params, record_conserved, record, divergence, xp)
    fixed = not callable(batch)
    get_batch = (lambda step: batch) if fixed else batch
    state = rule.init(params)
    params, state, elapsed, done = _run_steps(model, params, get_batch, fixed, rule, state, num_steps,
                                              record_every, rec, progress, callback, loss)
    return rec.result(params, state, elapsed, done)


def _run_steps(model, params, get_batch, fixed, rule, state, num_steps, record_every, rec, progress, callback, loss):
    """The loop of :func:`train`; a step whose loss the next gradient gives (fixed batch,
    or step 0) is recorded when that gradient is computed."""
    pending, elapsed, done = 0, 0.0, 0
    stateful = not is_stateless(rule, params)  # a rule with a state gets the loss (e.g. for damping)
    for step in range(1, num_steps + 1):
        current = get_batch(step - 1)
        t0 = time.perf_counter()
        grads = _Gradient(model, params, current, loss)
        if pending is not None:  # pending == step - 1 and params are those of that step
            value = grads.value
            t1 = time.perf_counter()
            rec.add(pending, params, value)
            pending = None
            t0 += time.perf_counter() - t1  # recording is not part of the step time
        if progress is not None:
            t1 = time.perf_counter()
            progress(step - 1, num_steps, rec.last)
            t0 += time.perf_counter() - t1
        params, state = _update(rule, model, params, current, state, loss, grads, stateful)
        elapsed += time.perf_counter() - t0
        if grads.computed:  # the loss before this step came for free
            rec.check(step - 1, grads.value)
        rec.check_params(step, params)
        done = step
        stop = bool(callback(step, params, state)) if callback is not None else False
        if step % record_every == 0 or step == num_steps or stop:
            if fixed and not stop and step < num_steps:
                pending = step
            else:
                rec.add(step, params, _loss(model, params, current, loss))
        if stop:
            break
    if pending is not None:  # no step taken: record the initial parameters
        rec.add(pending, params, _loss(model, params, get_batch(0), loss))
    if progress is not None:
        progress(done, num_steps, rec.last)
    return params, state, elapsed, done


def rule_velocity(model, rule: UpdateRule, batch, *, params=None, loss=MSE()) -> Callable[[float, Any], Any]:
    """Right-hand side ``fun(t, params) = updates`` of the continuous-time flow of a rule
    whose state is empty (Huh 2020: ``w_dot = -eta (G^+)^{1/q} g`` etc., with lr as eta).

    ``params`` (optional) are passed to ``rule.init`` to check the state and build it
    (needed for rules such as :func:`arraycurv.rules.transforms.partition` whose ``init``
    looks at the parameters). The gradient is computed only when the rule reads it;
    ``value`` is None.

    Raises
    ------
    ValueError
        If the rule keeps a state (e.g. Adam): it has no continuous-time flow here.
    """
    _check_rule(rule)
    p0 = () if params is None else tuple(params)
    if not is_stateless(rule, p0):
        raise ValueError(
            f"rule: expected a stateless rule (sgd, qngd, qngd_blockdiag, regularized_ngd) for continuous time, "
            f"got {rule.name!r} which keeps a state"
        )
    state = rule.init(p0)

    def fun(t, params):
        params = tuple(params)
        grads = _Gradient(model, params, batch, loss)
        updates, _ = rule.update(grads, state, params, model=model, batch=batch, loss=loss,
                                 value=grads.value if grads.computed else None)
        return tuple(updates)

    return fun


def integrate_rule(model, params, batch, rule: UpdateRule, t_span, *, rtol=1e-8, atol=1e-10, t_eval=None,
                   loss=MSE(), **kwargs) -> OdeSolution:
    """Integrate ``d params / dt = updates`` of a rule whose state is empty (spec 4.3).

    Uses the adaptive Dormand-Prince integrator :func:`arraycurv.dynamics.integrate.solve_ode`
    (extra keyword arguments such as ``max_steps`` go to it), so that, e.g., the conserved
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
    _check_rule(rule)
    fun = rule_velocity(model, rule, batch, params=params, loss=loss)
    return solve_ode(fun, t_span, tuple(params), rtol=rtol, atol=atol, t_eval=t_eval, **kwargs)
