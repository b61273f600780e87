"""Low-rank linear algebra: running inverses by Sherman-Morrison / Woodbury, and the
randomized SVD pseudo-inverse (Bernacchia et al. (2018) Sec. 6-7; Halko, Martinsson &
Tropp (2011)).

Bernacchia et al. (2018) invert two covariance matrices per layer at every step of their
natural gradient (eq (10), damped in eq (20)) and name two cheaper routes for large
layers (Sec. 6 and Conclusions):

* **Sherman-Morrison running inverses** (Amari, Park & Fukumizu 2000). When a covariance
  estimate changes by a low-rank term, its inverse changes by a low-rank term too:

      (A + s u v^T)^{-1} = A^{-1} - s A^{-1} u v^T A^{-1} / (1 + s v^T A^{-1} u)     (Sherman-Morrison)
      (A + U C V^T)^{-1} = A^{-1} - A^{-1} U (C^{-1} + V^T A^{-1} U)^{-1} V^T A^{-1}  (Woodbury)

  :func:`sherman_morrison`, :func:`woodbury`, and :func:`running_inverse` for the
  exponential moving average ``A_new = decay A + (1 - decay) / m  R^T R`` of a
  covariance from ``m`` new rows ``R``: O(n^2 k + k^3) per update of rank k instead of
  the O(n^3) of a fresh inversion.
* **Randomized SVD** (Halko et al. 2011, Algorithms 4.3/4.4 and 5.1): a Gaussian test
  matrix Omega (n, r + oversample), the range basis Q = orth((A A^T)^q A Omega) with
  re-orthonormalized power iterations, the small SVD of Q^T A and U = Q U_small. Exact
  (to rounding) when rank(A) <= r; :func:`randomized_svd`, :func:`randomized_pinv`,
  and :func:`randomized_psd_inverse`, the damped inverse of a symmetric PSD matrix of
  rank <= r, ``(A + d I)^{-1} = U (S + d)^{-1} U^T + (I - U U^T) / d`` (exact for
  rank(A) <= r), the form eq (20) needs for the rank-deficient factors of a bottleneck
  network.

Every routine uses the array API standard only (``matmul``, ``linalg.qr``,
``linalg.svd``, ``linalg.solve``); the random test matrix comes from
:func:`arraycurv.backend.normal`, so a seed gives the same result on every namespace.
Inputs are never written; results are in the caller's namespace, dtype and device.
See ``docs/bernacchia.md``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .. import backend
from ..validation import check_finite, check_matrix, check_square
from ._common import _check_psd, _check_symmetric

__all__ = [
    "randomized_pinv",
    "randomized_psd_inverse",
    "randomized_range",
    "randomized_svd",
    "running_inverse",
    "sherman_morrison",
    "woodbury",
]


# ----------------------------------------------------------------------------- checks
def _real(value: Any, name: str, *, low: float | None = None, high: float | None = None, strict=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (strict and v == low)):
        raise ValueError(f"{name}: expected a number {'>' if strict else '>='} {low:g}, got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name}: expected a number <= {high:g}, got {value!r}")
    return v


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _arrays(named):
    """Namespace of the named arrays; float dtype shared with the first; finite values."""
    for name, a in named:
        if not backend.is_array(a):
            raise TypeError(f"{name}: expected an array, got {type(a).__name__}")
    xp = backend.namespace_of(**dict(named))
    first_name, first = named[0]
    backend.check_float(first, first_name, xp)
    for name, a in named:
        if a.dtype != first.dtype:
            raise TypeError(f"{name}: expected dtype {first.dtype} (like {first_name}), got {a.dtype}")
        check_finite(a, name, xp)
    return xp


def _mT(xp, a):
    return xp.matrix_transpose(a)


# ----------------------------------------------------------------------------- Sherman-Morrison
def sherman_morrison(inv, u, v=None, *, scale=1.0):
    """Inverse after a rank-one update: ``(A + scale u v^T)^{-1}`` from ``inv = A^{-1}``
    (Sherman & Morrison 1950; Bernacchia et al. (2018) Sec. 6).

    ``(A + s u v^T)^{-1} = A^{-1} - s (A^{-1} u)(v^T A^{-1}) / (1 + s v^T A^{-1} u)``.

    Parameters
    ----------
    inv : array (n, n)
        The inverse of A.
    u : array (n,)
        Update vector.
    v : array (n,), optional
        Second vector; ``None`` means ``v = u`` (a symmetric update: then a symmetric
        ``inv`` gives a symmetric result).
    scale : float
        The factor s.

    Returns
    -------
    array (n, n)

    Raises
    ------
    ValueError
        Shapes that do not fit, NaN/Inf, or ``1 + s v^T A^{-1} u`` at rounding level
        (the updated matrix is singular).
    """
    s = _real(scale, "scale")
    named = [("inv", inv), ("u", u)] + ([("v", v)] if v is not None else [])
    xp = _arrays(named)
    check_square(inv, "inv")
    if inv.ndim != 2:
        raise ValueError(f"inv: expected an (n, n) matrix, got shape {tuple(inv.shape)}")
    n = inv.shape[0]
    for name, a in named[1:]:
        if tuple(a.shape) != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {tuple(a.shape)}")
    vv = u if v is None else v
    au = xp.matmul(inv, u)
    va = xp.matmul(vv, inv)
    denom = float(1.0 + s * xp.sum(vv * au))
    ref = 1.0 + abs(s) * float(xp.sum(xp.abs(vv) * xp.abs(au)))
    if abs(denom) <= 10 * n * float(xp.finfo(inv.dtype).eps) * ref:
        raise ValueError(
            f"u: expected an update that keeps the matrix invertible, got 1 + s v^T A^-1 u = {denom:.3g}"
        )
    out = inv - (s / denom) * (au[:, None] * va[None, :])
    if v is None and _is_sym(xp, inv):
        out = 0.5 * (out + _mT(xp, out))
    return out


def _is_sym(xp, a) -> bool:
    return bool(xp.all(a == _mT(xp, a)))


def woodbury(inv, u, v=None, *, c=None):
    """Inverse after a rank-k update: ``(A + U C V^T)^{-1}`` from ``inv = A^{-1}``
    (Woodbury 1950; the rank-k Sherman-Morrison lemma of Bernacchia et al. (2018) Sec. 6).

    ``(A + U C V^T)^{-1} = A^{-1} - A^{-1} U (C^{-1} + V^T A^{-1} U)^{-1} V^T A^{-1}``,
    computed as ``A^{-1} - (A^{-1} U) X`` with ``(I + C V^T A^{-1} U) X = C V^T A^{-1}``
    (one k x k solve; C itself need not be invertible). Cost O(n^2 k + k^3).

    Parameters
    ----------
    inv : array (..., n, n)
        The inverse of A (leading axes broadcast as in ``matmul``).
    u : array (..., n, k)
        Update columns U.
    v : array (..., n, k), optional
        ``None`` means ``V = U`` (symmetric update).
    c : array (..., k, k) or float, optional
        The middle factor; ``None`` means the identity, a number s means ``s I``.

    Returns
    -------
    array (..., n, n)

    Raises
    ------
    ValueError
        Shapes that do not fit, NaN/Inf, or a singular k x k capacitance matrix.
    """
    named = [("inv", inv), ("u", u)] + ([("v", v)] if v is not None else [])
    if c is not None and not isinstance(c, numbers.Real):
        named.append(("c", c))
    xp = _arrays(named)
    check_square(inv, "inv")
    n = inv.shape[-1]
    for name, a in named[1:3]:
        if name in ("u", "v") and (a.ndim < 2 or a.shape[-2] != n):
            raise ValueError(f"{name}: expected shape (..., {n}, k), got {tuple(a.shape)}")
    k = u.shape[-1]
    if v is not None and v.shape[-1] != k:
        raise ValueError(f"v: expected shape (..., {n}, {k}) like u, got {tuple(v.shape)}")
    vv = u if v is None else v
    au = xp.matmul(inv, u)  # (..., n, k)
    va = xp.matmul(_mT(xp, vv), inv)  # (..., k, n)
    eye = xp.eye(k, dtype=inv.dtype, device=backend.device_of(inv))
    vau = xp.matmul(_mT(xp, vv), au)  # (..., k, k)
    if c is None:
        cap, rhs = eye + vau, va
    elif isinstance(c, numbers.Real):
        s = _real(c, "c")
        cap, rhs = eye + s * vau, s * va
    else:
        if c.ndim < 2 or tuple(c.shape[-2:]) != (k, k):
            raise ValueError(f"c: expected shape (..., {k}, {k}), got {tuple(c.shape)}")
        cap, rhs = eye + xp.matmul(c, vau), xp.matmul(c, va)
    try:
        x = xp.linalg.solve(cap, rhs)
    except Exception as exc:  # LinAlgError of the backend
        raise ValueError(f"u: expected an update that keeps the matrix invertible, got a singular "
                         f"capacitance matrix ({type(exc).__name__})") from None
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError("u: expected an update that keeps the matrix invertible, got a singular capacitance matrix")
    out = inv - xp.matmul(au, x)
    if v is None and _is_sym(xp, inv):
        out = 0.5 * (out + _mT(xp, out))
    return out


def running_inverse(inv, rows, *, decay):
    """Update the inverse of a running covariance by Woodbury (Bernacchia et al. (2018)
    Sec. 6: "direct estimation of those matrix inverses via the Sherman-Morrison lemma").

    With ``inv = A^{-1}`` and m new samples as the rows of ``rows`` (m, n), returns the
    inverse of the exponential moving average

        A_new = decay A + (1 - decay) / m  rows^T rows,

    as ``(1 / decay) woodbury(inv, rows^T, c = (1 - decay) / (m decay))``: O(n^2 m + m^3)
    instead of O(n^3). Pays off for m < n (online updates; m = 1 is Sherman-Morrison).
    A damping term ``d I`` put into the first A (``inv = I / d``) decays as ``decay^t d``.

    Parameters
    ----------
    inv : array (n, n)
    rows : array (m, n)
    decay : float in (0, 1]
        ``decay = 1`` adds nothing (returns a copy of ``inv``).

    Returns
    -------
    array (n, n), symmetric for a symmetric ``inv``.
    """
    beta = _real(decay, "decay", low=0.0, high=1.0, strict=True)
    xp = _arrays([("inv", inv), ("rows", rows)])
    check_square(inv, "inv")
    if inv.ndim != 2:
        raise ValueError(f"inv: expected an (n, n) matrix, got shape {tuple(inv.shape)}")
    n = inv.shape[0]
    if rows.ndim != 2 or rows.shape[1] != n or rows.shape[0] < 1:
        raise ValueError(f"rows: expected shape (m, {n}) with m >= 1, got {tuple(rows.shape)}")
    if beta == 1.0:
        return xp.asarray(inv, copy=True)
    m = rows.shape[0]
    return woodbury(inv, _mT(xp, rows), c=(1.0 - beta) / (m * beta)) / beta


# ----------------------------------------------------------------------------- randomized SVD
def _orth(xp, y):
    q, _ = xp.linalg.qr(y)
    return q


def randomized_range(a, rank, *, oversample=10, power_iters=2, seed=0):
    """Orthonormal basis Q (..., m, r + oversample) of the approximate range of ``a``
    (Halko et al. 2011, Algorithm 4.4: randomized subspace iteration).

    ``Y = A Omega`` for a Gaussian Omega of shape (n, r + p) from
    :func:`arraycurv.backend.normal`, then ``power_iters`` rounds ``Q <- orth(A orth(A^T Q))``,
    re-orthonormalizing after every product so that rounding does not wash out the small
    singular directions. The width is capped at min(m, n).
    """
    rank = _int(rank, "rank", 1)
    oversample = _int(oversample, "oversample", 0)
    power_iters = _int(power_iters, "power_iters", 0)
    xp = _arrays([("a", a)])
    check_matrix(a, "a")
    m, n = a.shape[-2], a.shape[-1]
    if math.prod(a.shape) == 0:
        raise ValueError(f"a: expected a non-empty matrix, got shape {tuple(a.shape)}")
    width = min(rank + oversample, m, n)
    omega = backend.normal(seed, (n, width), xp, dtype=a.dtype, device=backend.device_of(a))
    q = _orth(xp, xp.matmul(a, omega))
    at = _mT(xp, a)
    for _ in range(power_iters):
        q = _orth(xp, xp.matmul(at, q))
        q = _orth(xp, xp.matmul(a, q))
    return q


def randomized_svd(a, rank, *, oversample=10, power_iters=2, seed=0):
    """Truncated SVD ``a ~ U diag(S) V^T`` of rank ``rank`` by the randomized range finder
    (Halko et al. 2011, Algorithm 5.1 on the basis of :func:`randomized_range`).

    Parameters
    ----------
    a : array (..., m, n)
    rank : int
        Number of singular triplets returned (capped at min(m, n)).
    oversample, power_iters : int
        Extra test vectors p (Halko et al. recommend 5-10) and subspace iterations q.
    seed : int or numpy Generator
        Seed of the Gaussian test matrix.

    Returns
    -------
    u : array (..., m, r), s : array (..., r) (descending), vt : array (..., r, n)
        Exact to rounding when rank(a) <= rank.
    """
    q = randomized_range(a, rank, oversample=oversample, power_iters=power_iters, seed=seed)
    xp = backend.namespace_of(a=a)
    b = xp.matmul(_mT(xp, q), a)  # (..., w, n)
    ub, s, vt = xp.linalg.svd(b, full_matrices=False)
    r = min(int(rank), s.shape[-1])
    return xp.matmul(q, ub[..., :r]), s[..., :r], vt[..., :r, :]


def randomized_pinv(a, rank, *, rcond=None, oversample=10, power_iters=2, seed=0):
    """Moore-Penrose pseudo-inverse from a randomized SVD (Bernacchia et al. (2018) Sec. 7:
    "matrix pseudo-inversion in Eq. 10 could be performed using randomized SVD
    algorithms [Halko et al., 2011]").

    ``pinv(a) ~ V diag(1 / s) U^T`` over the singular values ``s > rcond * max(s)``
    (default ``rcond = max(m, n) * eps``, as :func:`arraycurv.linalg.pinv_power`). Equal to
    the exact pseudo-inverse (to rounding) when rank(a) <= rank. Cost O(m n (r + p) (q + 1)).

    Returns
    -------
    array (..., n, m)
    """
    u, s, vt = randomized_svd(a, rank, oversample=oversample, power_iters=power_iters, seed=seed)
    xp = backend.namespace_of(a=a)
    m, n = a.shape[-2], a.shape[-1]
    rc = max(m, n) * float(xp.finfo(a.dtype).eps) if rcond is None else _real(rcond, "rcond", low=0.0)
    keep = s > rc * xp.max(s, axis=-1, keepdims=True)
    inv_s = xp.where(keep, 1.0 / xp.where(keep, s, xp.ones_like(s)), xp.zeros_like(s))
    return xp.matmul(_mT(xp, vt) * inv_s[..., None, :], _mT(xp, u))


def randomized_psd_inverse(a, rank, *, damping=0.0, rcond=None, oversample=10, power_iters=2, seed=0):
    """Damped inverse of a symmetric PSD matrix of low rank by a randomized eigenbasis
    (Bernacchia et al. (2018) eq (20) with the randomized route of Sec. 7).

    With ``a ~ U diag(S) U^T`` (U from :func:`randomized_range`, S the eigenvalues of
    ``U^T a U``):

    * ``damping = d > 0``: ``(a + d I)^{-1} = U diag(1 / (S + d)) U^T + (I - U U^T) / d``,
      exact to rounding when rank(a) <= rank (the complement of the range gets 1 / d);
    * ``damping = 0``: the pseudo-inverse ``U diag(1 / S) U^T`` over ``S > rcond * max(S)``.

    Cost O(n^2 (r + p) (q + 1)) instead of the O(n^3) of an eigendecomposition.

    Returns
    -------
    array (..., n, n), symmetric.
    """
    d = _real(damping, "damping", low=0.0)
    xp = _arrays([("a", a)])
    check_square(a, "a")
    _check_symmetric(a, "a", xp)
    n = a.shape[-1]
    q = randomized_range(a, rank, oversample=oversample, power_iters=power_iters, seed=seed)
    small = xp.matmul(_mT(xp, q), xp.matmul(a, q))
    lam, w = xp.linalg.eigh(0.5 * (small + _mT(xp, small)))
    r = min(int(rank), lam.shape[-1])
    _check_psd(lam, "a", xp, n, False)
    lam, w = lam[..., -r:], w[..., :, -r:]  # the r largest
    u = xp.matmul(q, w)
    if d > 0:
        core = xp.matmul(u * (1.0 / (xp.where(lam > 0, lam, xp.zeros_like(lam)) + d))[..., None, :], _mT(xp, u))
        eye = xp.eye(n, dtype=a.dtype, device=backend.device_of(a))
        out = core + (eye - xp.matmul(u, _mT(xp, u))) / d
    else:
        rc = n * float(xp.finfo(a.dtype).eps) if rcond is None else _real(rcond, "rcond", low=0.0)
        keep = lam > rc * xp.max(lam, axis=-1, keepdims=True)
        inv = xp.where(keep, 1.0 / xp.where(keep, lam, xp.ones_like(lam)), xp.zeros_like(lam))
        out = xp.matmul(u * inv[..., None, :], _mT(xp, u))
    return 0.5 * (out + _mT(xp, out))
