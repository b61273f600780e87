"""Huh's learning-dynamics theory of curvature-corrected deep linear networks (spec 4.1, 4.2).

Huh (2020), *Curvature-corrected learning dynamics in deep neural networks*:

* exponent and scales of map dynamics: :func:`p_exponent` (eq 17), :func:`effective_depth`
  (eq 18), :func:`depth_calibrated_rate` (eta_bar of eq 17), Table 1 (:func:`table1`,
  :func:`format_table1`);
* singular-mode dynamics of one mode of a depth-d network with per-layer strengths
  sigma_i: :func:`singular_mode_velocity` for SGD (eq 5), NGD (eq 10), q-NGD (eq 12),
  sqrt-NGD, NGD-d (eq 20), sqrt-NGD-d (eq 21) and q-NGD-d (footnote 4);
  :func:`regularized_ngd_velocity` (S.I.15-16); :func:`singular_mode_ode` for the
  integrator; :func:`mode_jacobian` (j_i);
* map dynamics (eq 17): :func:`map_velocity`, closed forms (:func:`map_strength_closed_form`
  for p = 0, 1/2, 1, generalised to any initial value), any p (:func:`map_strength`),
  time scales (:func:`half_max_time`, :func:`escape_time`);
* conserved quantities: c_i of Theorem 1 (:func:`conserved_quantities`, eq 15), the
  invariants of the block-diagonal rules (:func:`blockdiag_invariants`, footnote 4),
  :func:`balance_diagnostics`;
* singular modes of networks (footnote 1): :func:`aligned_params`, :func:`mode_strengths`,
  :func:`layer_mode_strengths`.

Scalars are Python floats; arrays (sigma, parameters, times) may come from any array-API
namespace and results come back in it. See ``docs/theory.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import backend
from ..rules import registry as _rule_registry
from ..validation import check_ndim, check_real, check_shape
from .integrate import solve_ode

__all__ = [
    "RULES",
    "balance_diagnostics",
    "blockdiag_invariants",
    "conserved_quantities",
    "depth_calibrated_rate",
    "effective_depth",
    "escape_time",
    "half_max_time",
    "layer_mode_strengths",
    "map_strength",
    "map_strength_closed_form",
    "map_velocity",
    "mode_jacobian",
    "mode_strengths",
    "p_exponent",
    "regularized_ngd_velocity",
    "singular_mode_ode",
    "singular_mode_velocity",
    "table1",
]


#: Update rules understood by :func:`singular_mode_velocity`, with the equation of Huh (2020).
#: Read from the rule registry (:mod:`arraycurv.rules.registry`, ``RuleSpec.mode_equation``).
RULES = {_n: _s.mode_equation for _n in _rule_registry.RULE_NAMES
         if (_s := _rule_registry.rule_spec(_n)).mode_equation is not None}


_Q_RULES = ("qngd", "qngd_d")


# ----------------------------------------------------------------------------- checks
def _depth(d, name="d", allow_inf=True):
    return check_real(d, name, lo=1, allow_inf=allow_inf)


def _q(q, name="q"):
    return check_real(q, name, lo=1, allow_inf=True)


# ----------------------------------------------------------------- exponent, Table 1
def p_exponent(d: float, q: float) -> float:
    """Exponent p of the map dynamics, Huh (2020) eq (17): p = 2 (d - 1)(q - 1) / (d q).

    Parameters
    ----------
    d : float
        Depth (>= 1; non-integer values, e.g. an effective depth, are accepted; ``math.inf``
        gives the limit 2 (q - 1) / q).
    q : float
        Fractional order of the curvature correction (>= 1; ``math.inf`` = SGD, giving
        2 (d - 1) / d).

    Returns
    -------
    float
        p in [0, 2]: 0 for NGD (q = 1) or shallow networks (d = 1), 1/2 for sqrt-NGD at
        d = 2, 1 for SGD at d = 2, 2 for SGD at infinite depth (Table 1).
    """
    d = _depth(d)
    q = _q(q)
    if math.isinf(d) and math.isinf(q):
        return 2.0
    if math.isinf(d):
        return 2.0 * (q - 1.0) / q
    if math.isinf(q):
        return 2.0 * (d - 1.0) / d
    return 2.0 * (d - 1.0) * (q - 1.0) / (d * q)


def effective_depth(d: float, q: float) -> float:
    """Effective depth d_eff = d q / (d + q - 1), Huh (2020) eq (18).

    The depth that gives, under SGD, the nonlinearity p of depth ``d`` under q-NGD:
    ``p_exponent(effective_depth(d, q), inf) == p_exponent(d, q)``. Limits: d for
    q = inf (SGD), q for d = inf, 1 for q = 1 (NGD); always <= min(d, q).
    """
    d = _depth(d)
    q = _q(q)
    if math.isinf(d) and math.isinf(q):
        return math.inf
    if math.isinf(d):
        return q
    if math.isinf(q):
        return d
    # = d q / (d + q - 1), written so that it never rounds below 1 (d, q >= 1)
    return 1.0 + (d - 1.0) * (q - 1.0) / (d + q - 1.0)


def depth_calibrated_rate(eta: float, d: float, q: float) -> float:
    """Depth-calibrated learning rate eta_bar = eta d^(1 - 1/q), Huh (2020) eq (17).

    With balanced layers sigma_i = sigma_bar^(1/d), ``eta * ||j||^(2(1 - 1/q))`` of eq (16)
    equals ``eta_bar * sigma_bar^p``. ``q = math.inf`` (SGD) gives eta d; ``d`` must be
    finite.
    """
    eta = check_real(eta, "eta")
    d = _depth(d, allow_inf=False)
    q = _q(q)
    return eta * d if math.isinf(q) else eta * d ** (1.0 - 1.0 / q)


def table1(depths: Sequence[float] = (1, 2, math.inf), qs: Sequence[float] = (1, 2, math.inf)) -> dict:
    """Huh (2020) Table 1: the exponent p for each depth d and curvature correction q.

    Returns
    -------
    dict
        ``{d: {q: p_exponent(d, q)}}``; ``d = math.inf`` is the limit 2 (q - 1) / q. The
        defaults give the paper's table: d = 1 row 0, 0, 0; d = 2 row 0, 1/2, 1;
        d = inf row 0, 1, 2.
    """
    return {d: {q: p_exponent(d, q) for q in qs} for d in depths}


# -------------------------------------------------------------- singular-mode dynamics
def _check_sigma(sigma):
    if not backend.is_array(sigma):
        raise TypeError(f"sigma: expected an array of shape (..., d), got {type(sigma).__name__}")
    xp = backend.namespace_of(sigma=sigma)
    backend.check_float(sigma, "sigma", xp)
    if sigma.ndim < 1:
        raise ValueError(f"sigma: expected an array of shape (..., d), got shape {tuple(sigma.shape)}")
    return xp


def _sigma_and_star(sigma, sigma_star):
    xp = _check_sigma(sigma)
    backend.check_float(sigma, "sigma", xp)
    if sigma.ndim < 1 or sigma.shape[-1] < 1:
        raise ValueError(f"sigma: expected an array of shape (..., d) with d >= 1, got shape {tuple(sigma.shape)}")
    if backend.is_array(sigma_star) and (sigma_star.ndim != 0 or sigma.ndim == 1):
        xp = backend.namespace_of(sigma=sigma, sigma_star=sigma_star)
        check_shape(sigma_star, tuple(sigma.shape[:-1]), "sigma_star")
        star = xp.expand_dims(xp.astype(sigma_star, sigma.dtype), axis=-1)
    else:
        star = check_real(sigma_star, "sigma_star")
    return xp, star


def mode_jacobian(sigma):
    """Singular values of the Jacobian of one mode, j_i = prod_{k != i} sigma_k (Huh eq 5).

    Computed as products over k != i (not sigma_bar / sigma_i), so a zero strength is fine.

    Parameters
    ----------
    sigma : array (..., d)
        Per-layer strengths of a mode (any leading batch axes).

    Returns
    -------
    array (..., d)
    """
    xp = _check_sigma(sigma)
    d = sigma.shape[-1]
    cols = [xp.prod(xp.concat([sigma[..., :i], sigma[..., i + 1 :]], axis=-1), axis=-1) for i in range(d)]
    return xp.stack(cols, axis=-1)


def singular_mode_velocity(sigma, sigma_star, eta: float, rule: str, q: float | None = None):
    """Velocity d sigma_i / dt of a singular mode under a curvature-corrected rule (Huh 2020).

    With sigma_Delta = prod_i sigma_i - sigma_star and j_i = prod_{k != i} sigma_k:

    ============== ==================================================================== ==========
    rule           d sigma_i / dt                                                       Huh (2020)
    ============== ==================================================================== ==========
    ``sgd``        -eta sigma_Delta j_i                                                 eq (5)
    ``ngd``        -eta sigma_Delta j_i / ||j||^2                                       eq (10)
    ``qngd``       -eta sigma_Delta j_i / ||j||^(2/q)                                   eq (12)
    ``sqrt_ngd``   -eta sigma_Delta j_i / ||j||                                         eq (12), q=2
    ``ngd_d``      -eta sigma_Delta / (d j_i)                                           eq (20)
    ``sqrt_ngd_d`` -eta sigma_Delta sign(j_i) / sqrt(d)                                 eq (21)
    ``qngd_d``     -eta sigma_Delta sign(j_i) |j_i|^(1 - 2/q) / d^(1/q)                 footnote 4
    ============== ==================================================================== ==========

    These are -eta (H+^+)^(1/q) g for the mode's Hessian+ j j^T and gradient j sigma_Delta
    (full rules), and -eta (1/d)^(1/q) ((j_i^2)^+)^(1/q) j_i sigma_Delta per layer
    (block-diagonal rules, footnote 4; q = 1, 2 give eqs 20, 21). Pseudo-inverses follow
    Moore-Penrose: where ||j|| = 0 (full rules) or j_i = 0 (block-diagonal rules with
    q < 2) the velocity is 0, not Inf. ``q = math.inf`` gives SGD for both q-rules.

    Parameters
    ----------
    sigma : array (..., d)
        Per-layer strengths of the mode (leading axes: independent modes).
    sigma_star : float or array (...)
        Target strength(s) sigma_bar_* (an array must have shape ``sigma.shape[:-1]``).
    eta : float
        Learning rate.
    rule : str
        One of :data:`RULES`.
    q : float, optional
        Order (>= 1, may be ``math.inf``) for ``qngd`` and ``qngd_d`` only.

    Returns
    -------
    array (..., d)
        In the namespace, dtype and device of ``sigma``.
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {tuple(RULES)}, got {rule!r}")
    if rule in _Q_RULES:
        if q is None:
            raise ValueError(f"q: expected a number >= 1 (or math.inf) for rule {rule!r}, got None")
        q = _q(q)
    elif q is not None:
        raise ValueError(f"q: expected None for rule {rule!r} (q is used by {_Q_RULES} only), got {q!r}")
    eta = check_real(eta, "eta")
    xp, star = _sigma_and_star(sigma, sigma_star)
    d = sigma.shape[-1]
    j = mode_jacobian(sigma)
    sd = xp.expand_dims(xp.prod(sigma, axis=-1), axis=-1) - star  # sigma_Delta, (..., 1)
    zeros = xp.zeros_like(j)
    if rule == "sqrt_ngd":
        rule, q = "qngd", 2.0
    if rule == "sgd" or (rule in _Q_RULES and math.isinf(q)):
        return -eta * sd * j
    if rule in ("ngd", "qngd"):
        power = 1.0 if rule == "ngd" else 1.0 / q
        n2 = xp.sum(j * j, axis=-1, keepdims=True)
        safe = xp.where(n2 > 0, n2, xp.ones_like(n2))
        # j = 0 wherever n2 = 0, so the safe denominator gives the pseudo-inverse value 0.
        return -eta * sd * j / safe**power
    if rule == "sqrt_ngd_d":
        return -eta * sd * xp.sign(j) / math.sqrt(d)
    safe_j = xp.where(j == 0, xp.ones_like(j), j)
    if rule == "ngd_d":
        return xp.where(j == 0, zeros, -eta * sd / (d * safe_j))
    # qngd_d, footnote 4
    factor = xp.sign(j) * xp.abs(safe_j) ** (1.0 - 2.0 / q) / d ** (1.0 / q)
    return xp.where(j == 0, zeros, -eta * sd * factor)


def singular_mode_ode(sigma_star, eta: float, rule: str, q: float | None = None):
    """The right-hand side ``fun(t, sigma)`` of a singular-mode ODE, for :func:`solve_ode`.

    Returns ``lambda t, sigma: singular_mode_velocity(sigma, sigma_star, eta, rule, q)``
    after checking the arguments once.
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {tuple(RULES)}, got {rule!r}")
    if rule in _Q_RULES and q is None:
        raise ValueError(f"q: expected a number >= 1 (or math.inf) for rule {rule!r}, got None")
    check_real(eta, "eta")

    def fun(t, sigma):
        return singular_mode_velocity(sigma, sigma_star, eta, rule, q)

    return fun


def regularized_ngd_velocity(sigma, sigma_star, eta: float, eps: float):
    """Singular-mode velocity of regularized NGD, Huh (2020) S.I.15-16.

    The rule w' = -eta (eps + 1) (eps I + H+)^(-1) g restricted to one mode gives

        d sigma_i / dt = -eta sigma_Delta (j_i / ||j||) (a ||j|| + 1) / (a + ||j||),  a = eps / ||j||
                       = -eta (eps + 1) sigma_Delta j_i / (eps + ||j||^2),

    which interpolates between NGD (eps -> 0, eq 10) and SGD (eps -> inf, eq 5). At
    eps = 0 and ||j|| = 0 the pseudo-inverse value 0 is returned.

    Parameters
    ----------
    sigma : array (..., d)
    sigma_star : float or array (...)
    eta : float
    eps : float
        Regularization (>= 0).
    """
    eta = check_real(eta, "eta")
    eps = check_real(eps, "eps", lo=0.0)
    xp, star = _sigma_and_star(sigma, sigma_star)
    j = mode_jacobian(sigma)
    sd = xp.expand_dims(xp.prod(sigma, axis=-1), axis=-1) - star
    den = eps + xp.sum(j * j, axis=-1, keepdims=True)
    safe = xp.where(den > 0, den, xp.ones_like(den))
    return -eta * (eps + 1.0) * sd * j / safe


# ----------------------------------------------------------------------- map dynamics
def map_velocity(sigma_bar, sigma_star, eta_bar: float, p: float):
    """Map dynamics of a balanced mode, Huh (2020) eq (17): -eta_bar (sigma_bar - sigma_star) |sigma_bar|^p.

    ``|sigma_bar|^p`` is ``||j||^(2(1-1/q)) / d^(1-1/q)`` of eq (16) at balance, which is
    non-negative for any sign of sigma_bar (equal to sigma_bar^p for sigma_bar >= 0).
    ``sigma_bar`` may be a float or an array (result of the same kind).
    """
    eta_bar = check_real(eta_bar, "eta_bar")
    p = check_real(p, "p", lo=0.0)
    if backend.is_array(sigma_bar):
        xp = backend.namespace_of(sigma_bar=sigma_bar)
        backend.check_float(sigma_bar, "sigma_bar", xp)
        star = sigma_star if backend.is_array(sigma_star) else check_real(sigma_star, "sigma_star")
        if backend.is_array(star):
            xp = backend.namespace_of(sigma_bar=sigma_bar, sigma_star=star)
            check_shape(star, tuple(sigma_bar.shape), "sigma_star")
        return -eta_bar * (sigma_bar - star) * xp.abs(sigma_bar) ** p
    s = check_real(sigma_bar, "sigma_bar")
    star = check_real(sigma_star, "sigma_star")
    return -eta_bar * (s - star) * abs(s) ** p


def _times(t):
    """(is_array, xp or None, flat list of floats) for a float or an array of times."""
    if backend.is_array(t):
        xp = backend.namespace_of(t=t)
        backend.check_float(t, "t", xp)
        flat = xp.reshape(t, (-1,))
        values = [float(v) for v in backend.to_numpy(flat).tolist()]
        is_arr = True
    else:
        xp = None
        values = [check_real(t, "t")]
        is_arr = False
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"t: expected finite times >= 0, got {v!r}")
    return is_arr, xp, values


def _check_map_args(p, sigma_star, eta_bar, sigma0):
    p = check_real(p, "p", lo=0.0)
    eta_bar = check_real(eta_bar, "eta_bar", lo=0.0, lo_open=True)
    sigma_star = check_real(sigma_star, "sigma_star")
    sigma0 = check_real(sigma0, "sigma0")
    if p > 0 and not sigma_star > 0:
        raise ValueError(f"sigma_star: expected a target strength > 0 for p > 0, got {sigma_star!r}")
    if p >= 1 and not sigma0 > 0:
        raise ValueError(
            f"sigma0: expected sigma0 > 0 for p = {p:g} >= 1 (sigma_bar = 0 is a fixed point that is never left), "
            f"got {sigma0!r}"
        )
    if 0 < p < 1 and sigma0 < 0:
        raise ValueError(f"sigma0: expected sigma0 >= 0 for p = {p:g} > 0, got {sigma0!r}")
    return p, sigma_star, eta_bar, sigma0


def map_strength_closed_form(t, p: float, sigma_star: float, eta_bar: float, sigma0: float = 0.0):
    """Closed-form solutions of the map dynamics eq (17) of Huh (2020) for p = 0, 1/2, 1.

    * p = 0 (NGD, shallow nets): sigma(t) = s* + (s0 - s*) e^(-eta t)
      (the paper's s* (1 - e^(-eta t)) at s0 = 0);
    * p = 1/2 (sqrt-NGD at d = 2): with u = sqrt(sigma), u' = -(eta/2)(u^2 - s*), so with
      a = sqrt(s*): u(t) = a tanh(a eta t / 2 + artanh(u0 / a)) for u0 < a,
      u(t) = a coth(a eta t / 2 + arcoth(u0 / a)) for u0 > a, u = a for u0 = a
      (the paper's s* tanh^2(eta sqrt(s*) t / 2) at s0 = 0); needs s0 >= 0;
    * p = 1 (SGD at d = 2): sigma(t) = s* / (1 + (s* / s0 - 1) e^(-eta s* t)); needs s0 > 0.

    Parameters
    ----------
    t : float or array
        Times (>= 0). An array gives an array of its namespace, dtype and shape.
    p : float
        0, 0.5 or 1 (use :func:`map_strength` for any p).
    sigma_star : float
        Target strength (> 0 for p > 0).
    eta_bar : float
        Depth-calibrated rate (> 0), see :func:`depth_calibrated_rate`.
    sigma0 : float
        Initial strength sigma_bar(0).
    """
    p, s_star, eta, s0 = _check_map_args(p, sigma_star, eta_bar, sigma0)
    if p not in (0.0, 0.5, 1.0):
        raise ValueError(f"p: expected 0, 1/2 or 1 for a closed form (map_strength handles any p), got {p!r}")
    is_arr, xp, _ = _times(t)
    if is_arr:
        exp, tanh = xp.exp, xp.tanh
    else:
        t = float(t)
        exp, tanh = math.exp, math.tanh
    if p == 0.0:
        return s_star + (s0 - s_star) * exp(-eta * t)
    if p == 1.0:
        return s_star / (1.0 + (s_star / s0 - 1.0) * exp(-eta * s_star * t))
    a = math.sqrt(s_star)
    u0 = math.sqrt(s0)
    if u0 == a:
        return s_star + 0.0 * t
    if u0 < a:
        u = a * tanh(a * eta * t / 2.0 + math.atanh(u0 / a))
    else:
        u = a / tanh(a * eta * t / 2.0 + math.atanh(a / u0))
    return u * u


def _map_numeric(values, p, s_star, eta, s0, rtol):
    """sigma_bar at the given times by integrating eq (17) in a regular variable (host, float64)."""
    nxp = backend.namespace_by_name("numpy")
    times = sorted(set(values))
    t_end = times[-1]
    if p < 1:
        k = 1.0 - p
        inv = 1.0 / k
        z0 = s0**k

        def fun(t, z):  # z = sigma^(1-p): z' = -(1-p) eta (z^(1/(1-p)) - s*), Lipschitz at z = 0
            return -k * eta * (nxp.maximum(z, 0.0) ** inv - s_star)

        back = lambda z: max(z, 0.0) ** inv  # noqa: E731
    else:

        def fun(t, z):  # z = log sigma: z' = -eta (e^z - s*) e^((p-1) z)
            return -eta * (nxp.exp(z) - s_star) * nxp.exp((p - 1.0) * z)

        z0 = math.log(s0)
        back = math.exp
    if t_end == 0.0:
        return {0.0: s0}
    sol = solve_ode(
        fun, (0.0, t_end), nxp.asarray([z0], dtype=nxp.float64), rtol=rtol, atol=rtol * 1e-2, t_eval=times,
        max_steps=1_000_000,
    )
    return {tt: back(float(z[0])) for tt, z in zip(sol.t, sol.y)}


def map_strength(t, p: float, sigma_star: float, eta_bar: float, sigma0: float = 0.0, *, rtol: float = 1e-10):
    """Map strength sigma_bar(t) solving Huh (2020) eq (17) for any exponent p >= 0.

    Uses :func:`map_strength_closed_form` for p in {0, 1/2, 1}; otherwise integrates eq (17)
    with :func:`arraycurv.integrate.solve_ode` (tolerance ``rtol``) in a variable in which
    the ODE is regular: z = sigma^(1 - p) for p < 1, z' = -(1 - p) eta (z^(1/(1-p)) - s*),
    which leaves sigma = 0 in finite time as the closed forms do (the non-trivial solution
    of the paper, Fig 2); z = log sigma for p >= 1.

    Parameters
    ----------
    t : float or array
        Times (>= 0); an array gives an array of its namespace, dtype and shape.
    p : float
        Exponent (>= 0), see :func:`p_exponent`.
    sigma_star, eta_bar, sigma0 : float
        Target (> 0 for p > 0), depth-calibrated rate (> 0), initial strength (>= 0 for
        p > 0; > 0 for p >= 1, where 0 is a fixed point).
    """
    p, s_star, eta, s0 = _check_map_args(p, sigma_star, eta_bar, sigma0)
    if p in (0.0, 0.5, 1.0):
        return map_strength_closed_form(t, p, s_star, eta, s0)
    is_arr, xp, values = _times(t)
    table = _map_numeric(values, p, s_star, eta, s0, rtol)
    out = [table[v] for v in values]
    if not is_arr:
        return out[0]
    arr = backend.from_numpy(out, xp, dtype=t.dtype, device=backend.device_of(t))
    return xp.reshape(arr, tuple(t.shape))


def escape_time(
    p: float, sigma_star: float, eta_bar: float, sigma0: float = 0.0, fraction: float = 0.5, *, rtol: float = 1e-10
) -> float:
    """Time for eq (17) of Huh (2020) to take sigma_bar from ``sigma0`` to ``fraction * sigma_star``.

    t = (1 / (eta_bar s*^p)) int_{x0}^{f} dx / ((1 - x) x^p), x = sigma_bar / s*, so the
    time scales as 1 / (eta_bar s*^p) at fixed x0 = sigma0 / s* (Fig 2). Closed forms for
    p = 0: ln((s* - s0) / ((1 - f) s*)) / eta; p = 1/2:
    (2 / (eta sqrt(s*))) (artanh(sqrt(f)) - artanh(sqrt(s0 / s*))); p = 1:
    ln((s*/s0 - 1) / (1/f - 1)) / (eta s*). Other p: the integral by :func:`solve_ode` in
    z = x^(1-p) (p < 1) or z = ln x (p > 1).

    Asymptotics from small initial strength (Huh Sec. 4.2): finite as sigma0 -> 0 for
    p < 1 (escape in finite time, polynomial growth sigma ~ t^(1/(1-p))); O(-log sigma0)
    for p = 1, t ~ -ln(sigma0) / (eta s*); O(sigma0^-(p-1)) for p > 1,
    t ~ sigma0^(1-p) / ((p - 1) eta s*).

    Returns 0.0 when ``sigma0 >= fraction * sigma_star`` and ``math.inf`` when
    ``sigma0 = 0`` and p >= 1 (a fixed point).
    """
    p = check_real(p, "p", lo=0.0)
    eta = check_real(eta_bar, "eta_bar", lo=0.0, lo_open=True)
    s_star = check_real(sigma_star, "sigma_star", lo=0.0, lo_open=True)
    s0 = check_real(sigma0, "sigma0")
    f = check_real(fraction, "fraction", lo=0.0, lo_open=True)
    if not f < 1:
        raise ValueError(f"fraction: expected a number in (0, 1), got {fraction!r}")
    if p > 0 and s0 < 0:
        raise ValueError(f"sigma0: expected sigma0 >= 0 for p = {p:g} > 0, got {sigma0!r}")
    if s0 >= f * s_star:
        return 0.0
    if p >= 1 and s0 == 0:
        return math.inf
    if p == 0.0:
        return math.log((s_star - s0) / ((1.0 - f) * s_star)) / eta
    if p == 0.5:
        a = math.sqrt(s_star)
        return 2.0 / (a * eta) * (math.atanh(math.sqrt(f)) - math.atanh(math.sqrt(s0) / a))
    if p == 1.0:
        return math.log((s_star / s0 - 1.0) / (1.0 / f - 1.0)) / (eta * s_star)
    nxp = backend.namespace_by_name("numpy")
    x0 = s0 / s_star
    if p < 1:
        k = 1.0 - p
        z_span = (x0**k, f**k)

        def integrand(z, y):  # dt/dz for z = x^(1-p)
            return nxp.ones_like(y) / (k * (1.0 - max(z, 0.0) ** (1.0 / k)))
    else:
        z_span = (math.log(x0), math.log(f))

        def integrand(z, y):  # dt/dz for z = ln x
            return nxp.ones_like(y) * (math.exp((1.0 - p) * z) / (1.0 - math.exp(z)))

    sol = solve_ode(integrand, z_span, nxp.zeros((1,), dtype=nxp.float64), rtol=rtol, atol=1e-14, max_steps=1_000_000)
    return float(sol.y[-1][0]) / (eta * s_star**p)


def half_max_time(p: float, sigma_star: float, eta_bar: float, sigma0: float = 0.0) -> float:
    """Time at which eq (17) reaches sigma_star / 2 (half-max points of Huh Fig 2).

    ``escape_time(p, sigma_star, eta_bar, sigma0, fraction=0.5)``; scales as
    sigma_star^-p at fixed sigma0 / sigma_star.
    """
    return escape_time(p, sigma_star, eta_bar, sigma0, fraction=0.5)


# ------------------------------------------------------------------ conserved quantities
def _check_chain(params, name="params"):
    if not isinstance(params, (tuple, list)) or len(params) == 0:
        raise TypeError(f"{name}: expected a non-empty tuple of weight matrices W_1..W_L, got {type(params).__name__}")
    params = tuple(params)
    for i, w in enumerate(params):
        if not backend.is_array(w):
            raise TypeError(f"{name}[{i}]: expected an array, got {type(w).__name__}")
    xp = backend.namespace_of(**{name: params})
    for i, w in enumerate(params):
        check_ndim(w, 2, f"{name}[{i}]")
        backend.check_float(w, f"{name}[{i}]", xp)
        if i > 0:
            check_shape(w, (None, params[i - 1].shape[0]), f"{name}[{i}]")
    return xp, params


def _chain_product(xp, params):
    m = params[0]
    for w in params[1:]:
        m = xp.matmul(w, m)
    return m


def conserved_quantities(params):
    """The conserved quantities c_i = W_i W_i^T - W_{i+1}^T W_{i+1} of Huh (2020) Theorem 1, eq (15).

    Conserved by SGD, NGD and every q-NGD in continuous time (not by the block-diagonal
    rules). For W_l of shape (n_l, n_{l-1}), c_i has shape (n_i, n_i).

    Parameters
    ----------
    params : tuple of arrays
        Weight matrices W_1..W_L (the map is W_L ... W_1).

    Returns
    -------
    tuple of arrays
        (c_1, ..., c_{L-1}); empty for L = 1.
    """
    xp, params = _check_chain(params)
    return tuple(
        xp.matmul(w, xp.matrix_transpose(w)) - xp.matmul(xp.matrix_transpose(w_next), w_next)
        for w, w_next in zip(params[:-1], params[1:])
    )


def blockdiag_invariants(sigma, q: float):
    """Constants of motion of the block-diagonal rules for one mode, Huh (2020) Sec. 5 and footnote 4.

    * q = 1 (NGD-d, eq 20): the ratios sigma_i / sigma_{i+1};
    * q > 1 (q-NGD-d): |sigma_i|^(2(1-1/q)) - |sigma_{i+1}|^(2(1-1/q)); q = 2 (sqrt-NGD-d,
      eq 21) gives |sigma_i| - |sigma_{i+1}|, q = inf gives sigma_i^2 - sigma_{i+1}^2, the
      hyperbolic paths of eq (6) kept by SGD, NGD and q-NGD.

    Parameters
    ----------
    sigma : array (..., d)
    q : float
        >= 1, or ``math.inf``.

    Returns
    -------
    array (..., d - 1)
    """
    q = _q(q)
    xp = _check_sigma(sigma)
    if q == 1.0:
        return sigma[..., :-1] / sigma[..., 1:]
    a = 2.0 if math.isinf(q) else 2.0 * (1.0 - 1.0 / q)
    s = xp.abs(sigma) ** a
    return s[..., :-1] - s[..., 1:]


def balance_diagnostics(params) -> dict:
    """How balanced the layers of a deep linear network are (Huh 2020 eq 15, Fig 5C).

    Returns
    -------
    dict
        ``"c_norm"``: array (L-1,) of ||c_i||_F; ``"relative_imbalance"``: array (L-1,) of
        ||c_i||_F / (||W_i W_i^T||_F + ||W_{i+1}^T W_{i+1}||_F) (0 where both vanish; 0 means
        balanced, 1 means one side is zero); ``"layer_norm"``: array (L,) of ||W_i||_F.
        Arrays in the namespace, dtype and device of ``params``.
    """
    xp, params = _check_chain(params)
    dtype, dev = params[0].dtype, backend.device_of(params[0])

    def fro(a):
        return xp.sqrt(xp.sum(a * a))

    layer_norm = xp.stack([fro(w) for w in params])
    if len(params) == 1:
        empty = xp.zeros((0,), dtype=dtype, device=dev)
        return {"c_norm": empty, "relative_imbalance": empty, "layer_norm": layer_norm}
    c_norm, rel = [], []
    for w, w_next in zip(params[:-1], params[1:]):
        a = xp.matmul(w, xp.matrix_transpose(w))
        b = xp.matmul(xp.matrix_transpose(w_next), w_next)
        cn = fro(a - b)
        den = fro(a) + fro(b)
        c_norm.append(cn)
        rel.append(xp.where(den > 0, cn / xp.where(den > 0, den, xp.ones_like(den)), xp.zeros_like(den)))
    return {"c_norm": xp.stack(c_norm), "relative_imbalance": xp.stack(rel), "layer_norm": layer_norm}


def _check_widths(widths):
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2:
        raise ValueError(f"widths: expected a sequence (n_0, ..., n_L) of at least 2 positive ints, got {widths!r}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"widths: expected positive ints, got {widths!r}")
    return tuple(widths)


def mode_strengths(map_or_params, u, v):
    """Strengths of a network's map along given singular vectors: diag(U^T w_bar V) (Huh Sec. 3, Fig 4D).

    Parameters
    ----------
    map_or_params : array (n_out, n_in) or tuple of weight matrices
        The map w_bar, or W_1..W_L (then w_bar = W_L ... W_1).
    u : array (n_out, r), v : array (n_in, r)
        Left and right singular vectors of the target (columns).

    Returns
    -------
    array (r,)
        sigma_bar_k = u_k^T w_bar v_k; for :func:`aligned_params` networks, prod_i sigmas[i, k].
    """
    if isinstance(map_or_params, (tuple, list)):
        xp, params = _check_chain(map_or_params, "map_or_params")
        m = _chain_product(xp, params)
    else:
        xp = backend.namespace_of(map_or_params=map_or_params)
        check_ndim(map_or_params, 2, "map_or_params")
        m = map_or_params
    xp = backend.namespace_of(map_or_params=m, u=u, v=v)
    check_ndim(u, 2, "u")
    check_shape(u, (m.shape[0], None), "u")
    check_shape(v, (m.shape[1], u.shape[1]), "v")
    return xp.sum(u * xp.matmul(m, v), axis=0)


def layer_mode_strengths(params, u_out, v_in):
    """Per-layer strengths sigma_{i,k} of the modes of an aligned network (Huh footnote 1).

    Propagates the input basis through the layers: V_1 = v_in; for i < L,
    a = W_i V_i, sigma_i = column norms of a, V_{i+1} = U_i = a / sigma_i; the last
    layer gives sigma_L = diag(u_out^T W_L V_L). For a network built by
    :func:`aligned_params` with non-negative hidden strengths this recovers ``sigmas``
    exactly. The signs of hidden-layer strengths are a gauge freedom (U_i -> -U_i) and are
    reported in the last layer; a mode whose strength vanishes in layer i < L has no
    defined basis after it and reports 0 in the later hidden layers.

    Returns
    -------
    array (L, r)
    """
    xp, params = _check_chain(params)
    xp = backend.namespace_of(params=params, u_out=u_out, v_in=v_in)
    check_ndim(v_in, 2, "v_in")
    check_shape(v_in, (params[0].shape[1], None), "v_in")
    check_shape(u_out, (params[-1].shape[0], v_in.shape[1]), "u_out")
    basis = v_in
    rows = []
    for w in params[:-1]:
        a = xp.matmul(w, basis)
        nrm = xp.sqrt(xp.sum(a * a, axis=0))
        rows.append(nrm)
        basis = a / xp.where(nrm > 0, nrm, xp.ones_like(nrm))
    rows.append(xp.sum(u_out * xp.matmul(params[-1], basis), axis=0))
    return xp.stack(rows, axis=0)
