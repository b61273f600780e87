"""Per-group learning rates from the summary tensors (Wolinski, NewtonSummary / GroupedNewton).

Given the summary gradient gbar (S,), the summary Hessian Hbar (S, S) and the scales
d_s = |D3_sss|^(1/3) (:mod:`arraycurv.curvature.summary`), the learning rates eta (S,) of
the step theta - V eta = theta - sum_s eta_s u^(s) (GN-10) are

* :func:`newton_step`: eta* = Hbar^{-1} gbar, the minimizer of the order-2 model
  -gbar^T eta + 1/2 eta^T Hbar eta (GN-11, GN-12): Newton's method in span(V);
* :func:`ridge_step`: (Hbar + rho I)^{-1} gbar (spec 5.1, the code's ``ridge``);
* :func:`cubic_step`: the global minimizer of the anisotropic Nesterov-Polyak model
  T(eta) = -gbar^T eta + 1/2 eta^T Hbar eta + lambda_int / 6 ||D eta||^3 (GN-13), i.e. the
  solution of eta = (Hbar + lambda_int / 2 ||D eta|| D^2)^{-1} gbar (GN-14) with the
  largest r = ||D eta||: the root of phi(r) = r (GN-15) on the branch where
  Hbar + c r D^2 is positive semidefinite (c = lambda_int / 2), from the spectral form
  (GN-16) of K = D^{-1} Hbar D^{-1}. Both cases of spec 4.2 (Hbar positive definite: the
  root in (0, min(phi(0), sqrt(2 ||D^{-1} gbar|| / lambda_int))]; Hbar indefinite: the
  root in (r_0, (r_0 + sqrt(r_0^2 + 8 ||D^{-1} gbar|| / lambda_int)) / 2] with
  r_0 = (2 / lambda_int) |lambda_min(K)| (GN-17)), the hard case (D^{-1} gbar orthogonal
  to the lowest eigenspace and phi(r_0) <= r_0: r* = r_0 and a null-space component,
  which the reference code reports as "not found"), and a singular D (some d_s = 0: the
  unregularized coordinates are eliminated by a Schur complement, which needs Hbar
  positive definite on them) are solved.
* :func:`cubic_model` evaluates T (GN-13), :func:`newton_summary_direction` composes the
  summary and one of the steps for a model and a batch.

The S x S work runs in float64 in the caller's namespace; the scalar root finding is a
bracketed Newton iteration (phi is convex and decreasing on the branch) on host floats.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import backend
from ..losses import MSE
from ..validation import ArgumentTypeError, check_finite, check_real, check_shape, check_symmetric

__all__ = [
    "CubicStep",
    "NewtonSummaryDirection",
    "cubic_model",
    "cubic_step",
    "newton_step",
    "newton_summary_direction",
    "ridge_step",
]

_EPS = 2.220446049250313e-16
#: relative size of the lowest-eigenspace part of D^{-1} gbar below which the hard case applies
_HARD = 1e-12


class CubicStep(NamedTuple):
    """Result of :func:`cubic_step`.

    Attributes
    ----------
    eta : array (S,)
        The learning rates (zeros when ``found`` is False).
    r : float
        ||D eta||, the root of phi(r) = r (GN-15).
    r0 : float
        The left end of the admissible branch: 0 if Hbar + c r D^2 is positive definite at
        r = 0, else the r_0 of GN-17 (of the Schur complement when D is singular).
    case : str
        ``"pd"`` (Hbar positive definite on the regularized coordinates), ``"indefinite"``,
        ``"hard"`` (hard case, r* = r_0), ``"newton"`` (no regularized coordinate: lambda_int
        = 0 or D = 0), ``"unbounded"`` (T has no minimizer).
    found : bool
        False only in the unbounded case.
    """

    eta: Any
    r: float
    r0: float
    case: str
    found: bool


def _prepare(gbar, hbar, d=None):
    named = (("gbar", gbar), ("hbar", hbar)) + ((("d", d),) if d is not None else ())
    for name, a in named:
        if not backend.is_array(a) or not hasattr(a, "shape"):
            raise ArgumentTypeError(f"{name}: expected an array, got {type(a).__name__}")
    xp = backend.namespace_of_pairs(list(named))
    backend.check_float(gbar, "gbar", xp)
    if gbar.ndim != 1:
        raise ValueError(f"gbar: expected shape (S,), got {tuple(gbar.shape)}")
    s = gbar.shape[0]
    if s < 1:
        raise ValueError(f"gbar: expected at least one group, got shape {tuple(gbar.shape)}")
    check_shape(hbar, (s, s), "hbar")
    for name, a in (("gbar", gbar), ("hbar", hbar)) + ((("d", d),) if d is not None else ()):
        if a.dtype != gbar.dtype:
            raise TypeError(f"{name}: expected dtype {gbar.dtype} like gbar, got {a.dtype}")
        check_finite(a, name, xp)
    check_symmetric(hbar, "hbar", xp, rtol=max(1e-6, 1e3 * float(xp.finfo(hbar.dtype).eps)))
    if d is not None:
        check_shape(d, (s,), "d")
        if bool(xp.any(d < 0)):
            raise ValueError(f"d: expected non-negative scales |D3_sss|^(1/3), got min {float(xp.min(d)):.3g}")
    f64 = xp.float64
    h = xp.astype(hbar, f64)
    return xp, xp.astype(gbar, f64), 0.5 * (h + xp.matrix_transpose(h)), (None if d is None else xp.astype(d, f64))


def _out(xp, eta64, like):
    return xp.astype(eta64, like.dtype)


def newton_step(gbar, hbar):
    """eta* = Hbar^{-1} gbar (Wolinski GN-12): the stationary point of the order-2 model
    -gbar^T eta + 1/2 eta^T Hbar eta (GN-11); its minimizer when Hbar is positive definite.

    Raises ``ValueError`` when ``hbar`` is singular (to rounding).
    """
    xp, g, h, _ = _prepare(gbar, hbar)
    return _out(xp, _solve(xp, h, g, "hbar"), gbar)


def ridge_step(gbar, hbar, ridge: float):
    """(Hbar + ridge I)^{-1} gbar, the ridge variant of the reference code (spec 5.1)."""
    ridge = check_real(ridge, "ridge", lo=0.0)
    xp, g, h, _ = _prepare(gbar, hbar)
    eye = xp.eye(h.shape[0], dtype=h.dtype, device=backend.device_of(h))
    return _out(xp, _solve(xp, h + ridge * eye, g, "hbar + ridge I"), gbar)


def _solve(xp, a, b, name):
    w = xp.linalg.eigvalsh(a)
    top = float(xp.max(xp.abs(w)))
    if float(xp.min(xp.abs(w))) <= a.shape[0] * _EPS * max(top, 1e-300):
        raise ValueError(f"{name}: expected a nonsingular matrix, got eigenvalues of magnitude down to "
                         f"{float(xp.min(xp.abs(w))):.3g} (largest {top:.3g})")
    return xp.linalg.solve(a, b[:, None])[:, 0]


def cubic_model(eta, gbar, hbar, d, damping_int: float = 1.0):
    """T(eta) = -gbar^T eta + 1/2 eta^T Hbar eta + lambda_int / 6 ||D eta||^3 (Wolinski GN-13).

    ``eta`` may carry leading axes (..., S); returns an array of the leading shape.
    """
    lam = check_real(damping_int, "damping_int", lo=0.0)
    xp = _prepare(gbar, hbar, d)[0]
    s = gbar.shape[0]
    if not backend.is_array(eta) or not hasattr(eta, "shape"):
        raise ArgumentTypeError(f"eta: expected an array of shape (..., {s}), got {type(eta).__name__}")
    if eta.ndim < 1 or eta.shape[-1] != s:
        raise ValueError(f"eta: expected shape (..., {s}) for {s} groups, got {tuple(eta.shape)}")
    backend.namespace_of_pairs([("gbar", gbar), ("eta", eta)])
    if eta.dtype != gbar.dtype:
        raise TypeError(f"eta: expected dtype {gbar.dtype} like gbar, got {eta.dtype}")
    check_finite(eta, "eta", xp)
    quad = xp.sum(eta * xp.matmul(eta, hbar), axis=-1)
    de = eta * d
    nrm = xp.sqrt(xp.sum(de * de, axis=-1))
    return -xp.sum(eta * gbar, axis=-1) + 0.5 * quad + (lam / 6.0) * nrm * nrm * nrm


def _host(xp, a):
    return [float(v) for v in backend.to_numpy(a).reshape(-1).tolist()]


def _phi(kap, bet, c, r, skip=()):
    return math.sqrt(sum(b * b / (k + c * r) ** 2 for j, (k, b) in enumerate(zip(kap, bet)) if j not in skip))


def _root(kap, bet, c, lo, hi, skip=()):
    """Root of phi(r) = r on (lo, hi] through the secular form psi(r) = 1/phi(r) - 1/r
    (increasing, nearly linear near the pole; More & Sorensen 1983): Newton steps with
    bisection as safeguard."""
    def psi_and_dpsi(r):
        terms = [(k + c * r, b) for j, (k, b) in enumerate(zip(kap, bet)) if j not in skip]
        phi2 = sum(b * b / (a * a) for a, b in terms)
        if phi2 == 0.0:
            return math.inf, 0.0
        phi = math.sqrt(phi2)
        dphi = -c * sum(b * b / (a * a * a) for a, b in terms) / phi
        return 1.0 / phi - 1.0 / r, -dphi / phi2 + 1.0 / (r * r)

    while psi_and_dpsi(hi)[0] < 0.0:  # the bound of spec 4.2 holds in exact arithmetic; guard rounding
        lo, hi = hi, 2.0 * hi + 1e-300
    r = hi
    for _ in range(200):
        v, dv = psi_and_dpsi(r)
        if v < 0.0:
            lo = r
        else:
            hi = r
        if v == 0.0 or hi - lo <= 2.0 * _EPS * hi:
            return r
        step = r - v / dv if dv > 0.0 and math.isfinite(v) else None
        r = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
    return r


def _isotropic(xp, kmat, b, c):
    """Global minimizer of -b^T y + 1/2 y^T K y + (c / 3) ||y||^3 (Nesterov & Polyak 2006):
    y = (K + c r I)^+ b (+ null-space part in the hard case), r = ||y||, K + c r I >= 0."""
    kap_a, q = xp.linalg.eigh(kmat)
    bet_a = xp.matmul(xp.matrix_transpose(q), b)
    kap, bet = _host(xp, kap_a), _host(xp, bet_a)
    s = len(kap)
    scale = max(max(abs(k) for k in kap), 1e-300)
    tol = 10.0 * s * _EPS * scale
    bnorm = math.sqrt(sum(v * v for v in bet))
    k1 = kap[0]
    r0s = -k1 / c
    r_hi = 0.5 * (r0s + math.sqrt(r0s * r0s + 4.0 * bnorm / c))
    if k1 > tol:  # case 1: K positive definite
        r_hi = min(r_hi, _phi(kap, bet, c, 0.0))
        r = _root(kap, bet, c, 0.0, r_hi) if bnorm > 0.0 else 0.0
        return _assemble(xp, q, kap, bet, c, r, ()), r, 0.0, "pd"
    r0 = max(r0s, 0.0)
    low = tuple(j for j in range(s) if kap[j] <= k1 + tol)
    b1 = math.sqrt(sum(bet[j] ** 2 for j in low))
    rest = _phi(kap, bet, c, r0, skip=low)
    if b1 <= _HARD * bnorm and rest <= r0:
        # hard case (spec 4.2): r* = r0, y = (K + c r0 I)^+ b + tau z with z a unit vector of
        # the lowest eigenspace (along the tiny b-component there, if any) and ||y|| = r0
        y = _assemble(xp, q, kap, bet, c, r0, low)
        tau = math.sqrt(max(r0 * r0 - rest * rest, 0.0))
        if b1 > 0.0:
            wz = xp.asarray([bet[j] / b1 if j in low else 0.0 for j in range(s)], dtype=q.dtype,
                            device=backend.device_of(q))
            z = xp.matmul(q, wz)
        else:
            z = q[:, low[0]]
        return y + tau * z, r0, r0, "hard"
    r = _root(kap, bet, c, r0, max(r_hi, r0 + 1e-300), skip=low if b1 == 0.0 else ())
    return _assemble(xp, q, kap, bet, c, r, low if b1 == 0.0 else ()), r, r0, "indefinite"


def _assemble(xp, q, kap, bet, c, r, skip):
    w = [0.0 if j in skip else b / (k + c * r) for j, (k, b) in enumerate(zip(kap, bet))]
    wa = xp.asarray(w, dtype=q.dtype, device=backend.device_of(q))
    return xp.matmul(q, wa)


def cubic_step(gbar, hbar, d, damping_int: float = 1.0) -> CubicStep:
    """The anisotropic Nesterov cubic-regularized learning rates (Wolinski GN-13 to GN-17).

    Parameters
    ----------
    gbar : array (S,)
    hbar : array (S, S), symmetric
    d : array (S,)
        Non-negative scales d_s = |D3_sss|^(1/3) (GN-6); D = Diag(d).
    damping_int : float
        lambda_int >= 0 (c = lambda_int / 2).

    Returns
    -------
    CubicStep
        eta in the namespace, dtype and device of ``gbar``: the global minimizer of T
        (GN-13), the solution of GN-14 with the largest ||D eta||.
    """
    lam = check_real(damping_int, "damping_int", lo=0.0)
    xp, g, h, dd = _prepare(gbar, hbar, d)
    c = 0.5 * lam
    dh = _host(xp, dd)
    nz = [i for i, v in enumerate(dh) if v > 0.0 and c > 0.0]
    zs = [i for i in range(len(dh)) if i not in nz]
    zero = xp.zeros_like(g)
    if not nz:  # no regularized coordinate: Newton (needs Hbar > 0)
        if not _is_pd(xp, h):
            return CubicStep(_out(xp, zero, gbar), 0.0, 0.0, "unbounded", False)
        return CubicStep(_out(xp, _solve(xp, h, g, "hbar"), gbar), 0.0, 0.0, "newton", True)
    dev = backend.device_of(g)
    idx_n = xp.asarray(nz, dtype=xp.int64, device=dev)
    h_nn, g_n = _take2(xp, h, idx_n, idx_n), xp.take(g, idx_n)
    if zs:
        idx_z = xp.asarray(zs, dtype=xp.int64, device=dev)
        h_zz, h_zn, g_z = _take2(xp, h, idx_z, idx_z), _take2(xp, h, idx_z, idx_n), xp.take(g, idx_z)
        if not _is_pd(xp, h_zz):
            return CubicStep(_out(xp, zero, gbar), 0.0, 0.0, "unbounded", False)
        sol = xp.linalg.solve(h_zz, xp.concat([h_zn, g_z[:, None]], axis=1))  # H_ZZ^{-1} [H_ZN, g_Z]
        h_nn = h_nn - xp.matmul(xp.matrix_transpose(h_zn), sol[:, :-1])
        h_nn = 0.5 * (h_nn + xp.matrix_transpose(h_nn))
        g_n = g_n - xp.matmul(xp.matrix_transpose(h_zn), sol[:, -1])
    dn = xp.take(dd, idx_n)
    kmat = h_nn / (dn[:, None] * dn[None, :])
    y, r, r0, case = _isotropic(xp, kmat, g_n / dn, c)
    eta_n = y / dn
    parts = {i: eta_n[k] for k, i in enumerate(nz)}
    if zs:
        eta_z = sol[:, -1] - xp.matmul(sol[:, :-1], eta_n)
        parts.update({i: eta_z[k] for k, i in enumerate(zs)})
    eta = xp.stack([parts[i] for i in range(len(dh))])
    return CubicStep(_out(xp, eta, gbar), r, r0, case, True)


def _take2(xp, a, rows, cols):
    return xp.take(xp.take(a, rows, axis=0), cols, axis=1)


def _is_pd(xp, a):
    w = xp.linalg.eigvalsh(a)
    return float(xp.min(w)) > a.shape[0] * _EPS * max(float(xp.max(xp.abs(w))), 1e-300)


# ---------------------------------------------------------------- for a model
class NewtonSummaryDirection(NamedTuple):
    """Result of :func:`newton_summary_direction`: ``eta`` (S,), the step V eta (a tuple
    like the parameters, to be subtracted), the :class:`~arraycurv.curvature.summary.Summary`
    and the :class:`CubicStep` (None for the Newton and ridge methods)."""

    eta: Any
    step: tuple
    summary: Any
    solve: Any = None


def newton_summary_direction(model, params, batch, direction, partition, loss=MSE(), *, method: str = "cubic",
                             damping_int: float = 1.0, ridge: float = 0.0) -> NewtonSummaryDirection:
    """Summary tensors along ``direction`` (GN-4 to GN-6) and the per-group rates eta
    (``method``: ``"cubic"`` GN-14, ``"newton"`` GN-12, ``"ridge"``); the step is
    V eta = sum_s eta_s u^(s) (GN-10; the update is theta - lambda_d V eta, GN-18)."""
    from ..curvature.summary import summary
    from ..params.partition import scale_groups

    if not isinstance(method, str) or method not in ("cubic", "newton", "ridge"):
        raise ValueError(f"method: expected 'cubic', 'newton' or 'ridge', got {method!r}")
    check_real(damping_int, "damping_int", lo=0.0)
    check_real(ridge, "ridge", lo=0.0)
    summ = summary(model, params, batch, direction, partition, loss, order=3 if method == "cubic" else 2)
    solve = None
    if method == "cubic":
        solve = cubic_step(summ.gbar, summ.hbar, summ.d, damping_int)
        eta = solve.eta
    elif method == "newton":
        eta = newton_step(summ.gbar, summ.hbar)
    else:
        eta = ridge_step(summ.gbar, summ.hbar, ridge)
    return NewtonSummaryDirection(eta, scale_groups(direction, eta, partition), summ, solve)
