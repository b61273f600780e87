"""Adaptive Runge-Kutta integration written against the array API (spec 4.3).

:func:`solve_ode` integrates ``dy/dt = fun(t, y)`` with the Dormand-Prince 5(4) pair
(Dormand & Prince 1980; Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. II.4-5) with
error control, so that continuous-time learning dynamics (gradient flow, natural-gradient
flow, singular-mode ODEs of Huh 2020) can be followed far below step-size error: a
conserved quantity (Huh Theorem 1) then drifts only at the level of the tolerance.

The state ``y`` is an array of any array-API namespace, or a *tuple of arrays* (a
parameter tuple); ``fun`` returns the same structure. Time is a Python float; the state
keeps its namespace, dtype and device. The algorithm is the one of
``scipy.integrate.solve_ivp(method='RK45')`` (same tableau, same initial step selection,
same step-size controller), so on NumPy the two take the same steps.

The pieces, as in scipy's ``rk.py``: a stage step (:func:`_rk_step`), the error norm,
a step-size controller (:func:`_control`, in the loop of :class:`_Stepper`) and dense
output (:func:`_dense`, collected by :class:`_Output`).

Each step uses the 7-stage Dormand-Prince pair with the first-same-as-last property
(the last stage is f(t_new, y_new), reused as the first stage of the next step). The
local error estimate ``err = h sum_j e_j k_j`` is measured with the norm of Hairer,
Norsett & Wanner (1993) Sec. II.4,

    ||err|| = sqrt(mean((err / (atol + rtol * max(|y|, |y_new|)))^2)),

the mean taken over all entries of all arrays of the state. A step is accepted when
``||err|| < 1``; the next step size is ``h * min(10, 0.9 ||err||^(-1/5))`` after an
accepted step (no increase right after a rejection) and
``h * max(0.2, 0.9 ||err||^(-1/5))`` after a rejected one. This is the controller of
scipy's RK45.

Output at ``t_eval`` uses the Dormand-Prince continuous extension (Shampine 1986,
fourth order, the interpolant of scipy's RK45) inside the accepted step that contains
each time; the step sequence does not depend on ``t_eval``. A time equal to the end
of a step (in particular ``t1``) returns that step's state exactly, ``t0`` returns
``y0``.

:func:`rk4_fixed` is the classical fixed-step fourth-order Runge-Kutta method, for
reference and convergence tests.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat

from .. import backend
from ..validation import check_real

__all__ = ['IntegrationError', 'OdeSolution', 'rk4_fixed', 'solve_ode']


# --------------------------------------------------------------------- Dormand-Prince 5(4)
# Butcher tableau (Dormand & Prince 1980), identical to scipy's RK45.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)


_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)


#: Fifth-order weights (the step is taken with these: local extrapolation).
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)


#: Error weights b - b_hat over the 7 stages (the 7th is f(t + h, y_new), FSAL).
_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)


#: Continuous extension (Shampine 1986, the c_6-optimal quartic of scipy's RK45):
#: y(t_old + x h) = y_old + h sum_j K_j sum_m P[j][m] x^(m+1).
_P = (
    (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
    (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
    (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
    (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
    (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
)


_SAFETY = 0.9


_MIN_FACTOR = 0.2


_MAX_FACTOR = 10.0


_ERROR_EXPONENT = -1.0 / 5.0  # -1 / (error estimator order + 1)


_EPS64 = 2.220446049250313e-16


class IntegrationError(RuntimeError):
    """The integration could not be completed: the step size fell below ``10 eps |t|``
    (the tolerance cannot be met, e.g. a stiff or singular problem), ``max_steps`` was
    exceeded, or the state / derivative became NaN or Inf. The message says which and when.
    """


@dataclass(frozen=True)
class OdeSolution:
    """Result of :func:`solve_ode` / :func:`rk4_fixed`.

    Attributes
    ----------
    t : list of float
        Output times: ``t_eval`` if given, else ``t0`` and every accepted step.
    y : list
        States at those times, each with the structure of ``y0`` (an array or a tuple of
        arrays) in the namespace, dtype and device of ``y0``.
    nfev : int
        Number of evaluations of ``fun``.
    nsteps : int
        Number of accepted steps.
    nrejected : int
        Number of rejected steps.
    """

    t: list
    y: list
    nfev: int
    nsteps: int
    nrejected: int


# --------------------------------------------------------------------- state helpers
def _leaves(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _rebuild(leaves, is_tuple):
    return tuple(leaves) if is_tuple else leaves[0]


def _combine(base, h, coeffs, ks):
    """Leaf-wise base + h * sum_j coeffs[j] * ks[j] (zero coefficients skipped).

    ``base=None`` gives h * sum_j coeffs[j] * ks[j].
    """
    out = []
    for leaf_idx in range(len(ks[0])):
        acc = None
        for c, k in zip(coeffs, ks):
            if c == 0.0:
                continue
            term = (h * c) * k[leaf_idx]
            acc = term if acc is None else acc + term
        v = acc if base is None else (base[leaf_idx] if acc is None else base[leaf_idx] + acc)
        if v.ndim == 0 and not backend.is_array(v):  # NumPy turns 0-d arithmetic into scalars
            v = array_api_compat.array_namespace(ks[0][leaf_idx]).asarray(v)
        out.append(v)
    return tuple(out)


def _size(a) -> int:
    return math.prod(a.shape)


def _rms(xp, arrays, total):
    """sqrt(mean(a^2)) over all entries of a tuple of arrays, as a Python float."""
    if total == 0:
        return 0.0
    s = 0.0
    for a in arrays:
        if _size(a) != 0:
            s = s + xp.sum(a * a)
    return math.sqrt(float(s) / total)


def _all_finite(xp, arrays) -> bool:
    return all(bool(xp.all(xp.isfinite(a))) for a in arrays if _size(a) != 0)


def _prepare(fun, t_span, y0):
    """Validate t_span and y0, return (xp, t0, t1, leaves, is_tuple, wrapped fun)."""
    if not callable(fun):
        raise TypeError(f"fun: expected a callable fun(t, y), got {type(fun).__name__}")
    if isinstance(t_span, (str, bytes)) or not isinstance(t_span, Sequence) or len(t_span) != 2:
        raise ValueError(f"t_span: expected a pair (t0, t1) of finite numbers, got {t_span!r}")
    t0 = check_real(t_span[0], "t_span")
    t1 = check_real(t_span[1], "t_span")
    is_tuple = isinstance(y0, (tuple, list))
    leaves = _leaves(y0)
    if is_tuple and len(leaves) == 0:
        raise ValueError("y0: expected an array or a non-empty tuple of arrays, got an empty tuple")
    for i, leaf in enumerate(leaves):
        if not backend.is_array(leaf):
            name = f"y0[{i}]" if is_tuple else "y0"
            raise TypeError(f"{name}: expected an array, got {type(leaf).__name__}")
    xp = backend.namespace_of(y0=leaves)
    dtype = leaves[0].dtype
    for i, leaf in enumerate(leaves):
        name = f"y0[{i}]" if is_tuple else "y0"
        backend.check_float(leaf, name, xp)
        if leaf.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} like y0[0], got {leaf.dtype}")
        if _size(leaf) != 0 and not bool(xp.all(xp.isfinite(leaf))):
            raise ValueError(f"{name}: expected finite values, got NaN/Inf")
    shapes = [tuple(leaf.shape) for leaf in leaves]

    def f(t, state_leaves):
        out = fun(t, _rebuild(state_leaves, is_tuple))
        out_leaves = _leaves(out) if is_tuple else (out,)
        if is_tuple and not isinstance(out, (tuple, list)):
            raise ValueError(f"fun: expected a tuple of {len(shapes)} arrays like y0, got {type(out).__name__}")
        if len(out_leaves) != len(shapes):
            raise ValueError(f"fun: expected a tuple of {len(shapes)} arrays like y0, got {len(out_leaves)}")
        out_leaves = tuple(
            xp.asarray(k) if (not backend.is_array(k) and getattr(k, "shape", None) == ()) else k for k in out_leaves
        )  # NumPy scalars from 0-d arithmetic
        for i, (k, s) in enumerate(zip(out_leaves, shapes)):
            what = f"fun(t, y)[{i}]" if is_tuple else "fun(t, y)"
            if not backend.is_array(k):
                raise TypeError(f"{what}: expected an array of shape {s}, got {type(k).__name__}")
            if tuple(k.shape) != s:
                raise ValueError(f"{what}: expected shape {s} like y0, got {tuple(k.shape)}")
            if k.dtype != dtype:
                raise TypeError(f"{what}: expected dtype {dtype} like y0, got {k.dtype}")
        return tuple(out_leaves)

    return xp, t0, t1, leaves, is_tuple, f


def _parse_t_eval(t_eval, t0, t1):
    if t_eval is None:
        return None
    if backend.is_array(t_eval):
        if t_eval.ndim != 1:
            raise ValueError(f"t_eval: expected a 1-D sequence of times, got shape {tuple(t_eval.shape)}")
        values = [float(v) for v in backend.to_numpy(t_eval).tolist()]
    else:
        try:
            values = [float(v) for v in t_eval]
        except (TypeError, ValueError):
            raise ValueError(f"t_eval: expected a 1-D sequence of times, got {t_eval!r}") from None
    direction = 1.0 if t1 >= t0 else -1.0
    lo, hi = min(t0, t1), max(t0, t1)
    for v in values:
        if not (lo <= v <= hi):
            raise ValueError(f"t_eval: expected times within t_span [{t0}, {t1}], got {v}")
    for a, b in zip(values, values[1:]):
        if direction * (b - a) < 0:
            order = "increasing" if direction > 0 else "decreasing"
            raise ValueError(f"t_eval: expected {order} times (the direction of t_span), got {a} then {b}")
    return values


def _initial_step(xp, f, t0, y, f0, t_bound, max_step, direction, rtol, atol, total):
    """Hairer, Norsett & Wanner (1993) Sec. II.4 starting step (as in scipy)."""
    interval = abs(t_bound - t0)
    if total == 0:
        return interval
    scale = tuple(atol + xp.abs(a) * rtol for a in y)
    d0 = _rms(xp, _scaled(xp, y, scale, atol), total)
    d1 = _rms(xp, _scaled(xp, f0, scale, atol), total)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5 or not math.isfinite(d0 / d1)) else 0.01 * d0 / d1
    h0 = min(h0, interval)
    y1 = _combine(y, h0 * direction, (1.0,), (f0,))
    f1 = f(t0 + h0 * direction, y1)
    d2 = _rms(xp, _scaled(xp, tuple(b - a for a, b in zip(f0, f1)), scale, atol), total) / h0
    if not (math.isfinite(d1) and math.isfinite(d2)):
        h1 = h0
    elif d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    return min(100 * h0, h1, interval, max_step)


def _scaled(xp, values, scale, atol):
    """values / scale leaf-wise; with atol = 0 a zero scale gives 0 for 0 and Inf otherwise."""
    if atol > 0:
        return tuple(v / s for v, s in zip(values, scale))
    out = []
    for v, s in zip(values, scale):
        pos = s > 0
        ratio = v / xp.where(pos, s, xp.ones_like(s))
        out.append(xp.where(pos, ratio, xp.where(v == 0, xp.zeros_like(v), xp.full_like(v, math.inf))))
    return tuple(out)


def _dense(y_old, h, ks, x):
    """Dormand-Prince continuous extension at t_old + x h (fourth order)."""
    powers = (x, x * x, x**3, x**4)
    coeffs = tuple(sum(p * w for p, w in zip(row, powers)) for row in _P)
    return _combine(y_old, h, coeffs, ks)


def _rk_step(f, t, y, f_cur, h, t_new):
    """One Dormand-Prince step from (t, y) to t_new = t + h (scipy ``rk_step``): the
    fifth-order state and the 7 stages, the last being f(t_new, y_new) (FSAL)."""
    ks = [f_cur]
    for s in range(1, 6):
        ks.append(f(t + _C[s] * h, _combine(y, h, _A[s], ks)))
    y_new = _combine(y, h, _B, ks)
    ks.append(f(t_new, y_new))
    return y_new, ks


def _error_norm(xp, y, y_new, h, ks, rtol, atol, total):
    """Hairer-Norsett-Wanner RMS norm of the local error estimate h sum_j e_j k_j."""
    err = _combine(None, h, _E, ks)
    scale = tuple(atol + rtol * xp.maximum(xp.abs(a), xp.abs(b)) for a, b in zip(y, y_new))
    return _rms(xp, _scaled(xp, err, scale, atol), total)


def _control(error_norm, step_rejected):
    """Step-size controller of scipy's RK45: the factor for the next step size, and
    whether the step is accepted (``error_norm < 1``)."""
    if error_norm < 1.0:
        factor = _MAX_FACTOR if error_norm == 0 else min(_MAX_FACTOR, _SAFETY * error_norm**_ERROR_EXPONENT)
        return (min(1.0, factor) if step_rejected else factor), True
    return max(_MIN_FACTOR, _SAFETY * error_norm**_ERROR_EXPONENT), False


@dataclass
class _Stepper:
    """The adaptive loop of :func:`solve_ode`: attempts steps until one is accepted."""

    xp: Any
    f: Callable
    t1: float
    direction: float
    rtol: float
    atol: float
    total: int
    max_step: float
    max_steps: int
    nfev: int = 0
    nsteps: int = 0
    nrejected: int = 0
    attempts: int = 0

    def _fail(self, t, h_abs, min_step, nonfinite):
        if nonfinite:
            raise IntegrationError(
                f"solve_ode: the state or derivative became NaN/Inf at t={t:.17g}: every trial step "
                f"produced NaN/Inf until the step size {h_abs:.3g} fell below 10*eps*|t| = {min_step:.3g}"
            )
        raise IntegrationError(
            f"solve_ode: step size {h_abs:.3g} fell below 10*eps*|t| = {min_step:.3g} at t={t:.17g}; "
            f"cannot meet rtol={self.rtol:g}, atol={self.atol:g} (the problem may be stiff or singular there)"
        )

    def step(self, t, y, f_cur, h_abs):
        """One accepted step from (t, y): ``(t_new, y_new, f_new, h, ks, h_next)``."""
        xp, direction = self.xp, self.direction
        min_step = 10.0 * max(_EPS64 * abs(t), math.ulp(t))
        h_abs = min(h_abs, self.max_step)
        step_rejected = nonfinite = False
        while True:
            if h_abs < min_step:
                self._fail(t, h_abs, min_step, nonfinite)
            if self.attempts >= self.max_steps:
                raise IntegrationError(
                    f"solve_ode: max_steps={self.max_steps} steps taken (accepted {self.nsteps}, rejected "
                    f"{self.nrejected}) and only reached t={t:.17g} of t_end={self.t1:g}; the problem may be stiff, "
                    f"or raise max_steps"
                )
            self.attempts += 1
            t_new = t + direction * h_abs
            if direction * (t_new - self.t1) > 0:
                t_new = self.t1
            h = t_new - t
            h_abs = abs(h)
            y_new, ks = _rk_step(self.f, t, y, f_cur, h, t_new)
            f_new = ks[-1]
            self.nfev += 6
            error_norm = _error_norm(xp, y, y_new, h, ks, self.rtol, self.atol, self.total)
            if math.isnan(error_norm) or not _all_finite(xp, y_new) or not _all_finite(xp, f_new):
                nonfinite = step_rejected = True
                self.nrejected += 1
                h_abs *= _MIN_FACTOR
                continue
            factor, accepted = _control(error_norm, step_rejected)
            if accepted:
                self.nsteps += 1
                return t_new, y_new, f_new, h, ks, h_abs * factor
            nonfinite = False
            step_rejected = True
            self.nrejected += 1
            h_abs *= factor


class _Output:
    """Collects the output times and states: every accepted step, or the times of
    ``t_eval`` by dense output (the continuous extension, :func:`_dense`)."""

    def __init__(self, t_eval, direction, is_tuple):
        self.pending = list(t_eval) if t_eval is not None else None
        self.direction, self.is_tuple = direction, is_tuple
        self.ts: list[float] = []
        self.ys: list[Any] = []

    def _emit(self, t, y):
        self.ts.append(t)
        self.ys.append(_rebuild(y, self.is_tuple))

    def initial(self, t0, y):
        if self.pending is None:
            self._emit(t0, y)
        while self.pending and self.pending[0] == t0:
            self._emit(self.pending.pop(0), y)

    def step(self, t_old, t_new, y_old, y_new, h, ks):
        if self.pending is None:
            self._emit(t_new, y_new)
            return
        while self.pending and self.direction * (self.pending[0] - t_new) <= 0:
            tq = self.pending.pop(0)
            self._emit(tq, y_new if tq == t_new else _dense(y_old, h, ks, (tq - t_old) / h))


def _check_options(rtol, atol, max_step, max_steps, progress):
    """Validated ``(rtol, atol, max_step)`` (and max_steps, progress)."""
    rtol = check_real(rtol, "rtol", lo=0, lo_open=True)
    atol = check_real(atol, "atol", lo=0)
    max_step = check_real(max_step, "max_step", lo=0, lo_open=True, allow_inf=True)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: expected an integer >= 1, got {max_steps!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable progress(t, t_end) or None, got {type(progress).__name__}")
    return rtol, atol, max_step


def _check_rtol_and_first_step(xp, y, rtol, first_step, interval):
    """rtol raised to 100 eps of the state dtype (with a warning, as scipy), first_step checked."""
    eps_state = float(xp.finfo(y[0].dtype).eps)
    if rtol < 100 * eps_state:
        warnings.warn(
            f"rtol: {rtol:g} is below 100 * eps of {y[0].dtype} and cannot be met; using {100 * eps_state:g}",
            RuntimeWarning,
            stacklevel=3,
        )
        rtol = 100 * eps_state
    if first_step is not None:
        first_step = check_real(first_step, "first_step", lo=0, lo_open=True)
        if first_step > interval and interval > 0:
            raise ValueError(f"first_step: expected at most |t1 - t0| = {interval:g}, got {first_step!r}")
    return rtol, first_step


def _start(stepper: _Stepper, t0, y, first_step):
    """f(t0, y0) (checked finite) and the first step size (given, or Hairer-Norsett-Wanner's)."""
    xp, f = stepper.xp, stepper.f
    f_cur = f(t0, y)
    stepper.nfev += 1
    if not _all_finite(xp, f_cur):
        raise IntegrationError(f"solve_ode: the derivative fun(t, y0) is NaN/Inf at t={t0:g} (the initial point)")
    if first_step is not None:
        return f_cur, first_step
    stepper.nfev += 1
    return f_cur, _initial_step(xp, f, t0, y, f_cur, stepper.t1, stepper.max_step, stepper.direction, stepper.rtol,
                                stepper.atol, stepper.total)


def solve_ode(
    fun: Callable[[float, Any], Any],
    t_span: Sequence[float],
    y0: Any,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    t_eval: Sequence[float] | Any | None = None,
    first_step: float | None = None,
    max_step: float = math.inf,
    max_steps: int = 100_000,
    progress: Callable[[float, float], Any] | None = None,
) -> OdeSolution:
    """Integrate ``dy/dt = fun(t, y)`` with the adaptive Dormand-Prince 5(4) method.

    The step, its error norm, the step-size controller and the dense output are those of
    ``scipy.integrate.solve_ivp(method='RK45')``; they are described in the module
    docstring (stage step :func:`_rk_step`, controller :func:`_control`, continuous
    extension :func:`_dense`).

    Parameters
    ----------
    fun : callable
        ``fun(t, y)`` with ``t`` a Python float and ``y`` of the structure of ``y0``;
        returns the derivative with the same structure, shapes and dtype.
    t_span : (float, float)
        Start and end time; ``t1 < t0`` integrates backwards.
    y0 : array or tuple of arrays
        Initial state (float32 or float64, finite), e.g. a parameter tuple.
    rtol, atol : float
        Relative (> 0) and absolute (>= 0) tolerances of the local error. ``rtol`` below
        ``100 eps`` of the state dtype cannot be met and is raised to that value with a
        warning (as scipy does).
    t_eval : sequence of float, optional
        Output times, inside ``t_span`` and ordered in its direction. Default: ``t0`` and
        the end of every accepted step.
    first_step : float, optional
        Initial step size (> 0); chosen automatically by default.
    max_step : float
        Largest step size allowed (> 0).
    max_steps : int
        Largest number of attempted steps (accepted + rejected).
    progress : callable, optional
        ``progress(t, t_end)`` called after every accepted step.

    Returns
    -------
    OdeSolution
        ``t``, ``y`` (list of states), ``nfev``, ``nsteps``, ``nrejected``.

    Raises
    ------
    IntegrationError
        If the step size falls below ``10 eps |t|`` (tolerance cannot be met), more than
        ``max_steps`` steps are needed, or the state or derivative becomes NaN/Inf (such
        trial steps are rejected and shrunk first; at once when ``fun(t0, y0)`` is not).
    ValueError
        For bad arguments (the message names the argument).
    """
    xp, t0, t1, y, is_tuple, f = _prepare(fun, t_span, y0)
    rtol, atol, max_step = _check_options(rtol, atol, max_step, max_steps, progress)
    t_out_req = _parse_t_eval(t_eval, t0, t1)
    interval = abs(t1 - t0)
    rtol, first_step = _check_rtol_and_first_step(xp, y, rtol, first_step, interval)
    direction = 1.0 if t1 >= t0 else -1.0
    total = sum(_size(a) for a in y)
    out = _Output(t_out_req, direction, is_tuple)
    out.initial(t0, y)
    if interval == 0.0:
        return OdeSolution(t=out.ts, y=out.ys, nfev=0, nsteps=0, nrejected=0)
    stepper = _Stepper(xp, f, t1, direction, rtol, atol, total, max_step, max_steps)
    f_cur, h_abs = _start(stepper, t0, y, first_step)
    t = t0
    while direction * (t1 - t) > 0:
        t_new, y_new, f_new, h, ks, h_abs = stepper.step(t, y, f_cur, h_abs)
        out.step(t, t_new, y, y_new, h, ks)
        t, y, f_cur = t_new, y_new, f_new
        if progress is not None:
            progress(t, t1)
    return OdeSolution(t=out.ts, y=out.ys, nfev=stepper.nfev, nsteps=stepper.nsteps, nrejected=stepper.nrejected)


def rk4_fixed(fun: Callable[[float, Any], Any], t_span: Sequence[float], y0: Any, num_steps: int) -> OdeSolution:
    """Classical fourth-order Runge-Kutta with ``num_steps`` equal steps (reference method).

    Parameters
    ----------
    fun, t_span, y0
        As in :func:`solve_ode` (array or tuple-of-arrays state).
    num_steps : int
        Number of steps (>= 1); the step is ``(t1 - t0) / num_steps``.

    Returns
    -------
    OdeSolution
        States at the ``num_steps + 1`` grid times ``t0 + k h``; ``nfev = 4 num_steps``.
    """
    xp, t0, t1, y, is_tuple, f = _prepare(fun, t_span, y0)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an integer >= 1, got {num_steps!r}")
    h = (t1 - t0) / num_steps
    ts, ys = [t0], [_rebuild(y, is_tuple)]
    for n in range(num_steps):
        t = t0 + n * h
        k1 = f(t, y)
        k2 = f(t + h / 2, _combine(y, h / 2, (1.0,), (k1,)))
        k3 = f(t + h / 2, _combine(y, h / 2, (1.0,), (k2,)))
        k4 = f(t + h, _combine(y, h, (1.0,), (k3,)))
        y = _combine(y, h / 6, (1.0, 2.0, 2.0, 1.0), (k1, k2, k3, k4))
        ts.append(t0 + (n + 1) * h if n + 1 < num_steps else t1)
        ys.append(_rebuild(y, is_tuple))
    return OdeSolution(t=ts, y=ys, nfev=4 * num_steps, nsteps=num_steps, nrejected=0)
