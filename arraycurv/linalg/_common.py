"""Linear algebra the curvature code needs (spec 1.3), written against the array API.

* Spectral powers of symmetric positive semi-definite (PSD) matrices with an explicit
  cut-off and damping: the Moore-Penrose pseudo-inverse of Hessian+ behind NGD
  (Huh (2020) eq (9)) and its fractional powers behind q-NGD (the ``q``-th root of H+,
  Huh (2020) Sec. 3, eq (12)), :func:`psd_power`; the general (non-square) pseudo-inverse power
  by SVD (Bernacchia et al. (2018) eq (10) with pseudo-inverses, Supplementary eq (45)),
  :func:`pinv_power`.
* Kronecker algebra in the row-major (C-order) ``vec`` convention of the flat parameter
  vector: :func:`kron`, :func:`kron_matvec`, :func:`kron_psd_power_apply`
  ((A kron B)^p = A^p kron B^p, Bernacchia et al. (2018) eq (10)), :func:`kron_solve`.
* Sylvester equations: A X + X B = C with two eigendecompositions, minimum-norm
  least squares for singular systems (Huh (2020) S.I.1, eqs (S.I.9)-(S.I.10)),
  :func:`solve_sylvester`; and sum_i A_i X B_i = C, :func:`solve_generalized_sylvester`.

Conventions
-----------
``vec_r(X)`` is ``reshape(X, (-1,))`` (rows one after another, as in ``params.flatten``).
Then ``kron(A, B) @ vec_r(X) == vec_r(A @ X @ B.T)`` and
``vec_r(sum_i A_i X B_i) == (sum_i kron(A_i, B_i.T)) @ vec_r(X)``.

Cut-offs: eigen/singular values ``<= rcond * (largest one)`` (per matrix of a batch) are
treated as zero. ``rcond=None`` means ``N * eps(dtype)``, with ``N`` the larger side of
the matrix the routine is equivalent to (``n`` for an (n, n) matrix, ``m * n`` for a
Kronecker product or Kronecker sum acting on (m, n) matrices); this is the rank rule of
``numpy.linalg.matrix_rank``. For matrices that are singular only up to rounding
(e.g. ``L @ L.T`` with a thin ``L``) pass a larger ``rcond`` such as ``sqrt(eps)``.

All routines take arrays of any array-API namespace, return results in the caller's
namespace, dtype and device, and work over leading (batch) axes, which broadcast
against each other as in ``matmul``. See ``docs/linalg.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from .. import backend
from ..validation import check_finite, check_symmetric


# ----------------------------------------------------------------------------- helpers
def _real(value: Any, name: str, *, nonneg: bool = False) -> float:
    """A finite real scalar (Python number or 0-d array) as ``float``; errors name it."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if not isinstance(value, numbers.Real):
        if not (backend.is_array(value) and getattr(value, "ndim", None) == 0):
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {v}")
    return v


def _rcond(rcond: Any, size: int, dtype, xp) -> float:
    """The cut-off: ``rcond`` checked, or the default ``size * eps(dtype)``."""
    if rcond is None:
        return max(size, 1) * float(xp.finfo(dtype).eps)
    return _real(rcond, "rcond", nonneg=True)


def _check_inputs(xp, first_name: str, named: Sequence[tuple[str, Any]]) -> None:
    """Float dtype, one common dtype (that of ``first_name``), finite values."""
    dtype = None
    for name, x in named:
        backend.check_float(x, name, xp)
        if dtype is None:
            dtype = x.dtype
        elif x.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} (like {first_name}), got {x.dtype}")
    for name, x in named:
        check_finite(x, name, xp)


def _batch_shape(named: Sequence[tuple[str, Any]]) -> tuple[int, ...]:
    """Broadcast the leading (batch) axes of matrices; raise naming the first misfit."""
    out: tuple[int, ...] = ()
    first = None
    for name, x in named:
        lead = tuple(x.shape[:-2])
        n = max(len(out), len(lead))
        a = (1,) * (n - len(out)) + out
        b = (1,) * (n - len(lead)) + lead
        if any(i != j and i != 1 and j != 1 for i, j in zip(a, b)):
            raise ValueError(
                f"{name}: expected leading (batch) axes broadcastable with {out} (from {first}), "
                f"got shape {tuple(x.shape)}"
            )
        out = tuple(max(i, j) for i, j in zip(a, b))
        first = first or name
    return out


def _check_symmetric(a, name: str, xp) -> None:
    """``validation.check_symmetric``, skipping empty arrays (nothing to compare)."""
    if math.prod(a.shape) != 0:
        check_symmetric(a, name, xp)


def _sym(a, xp):
    return 0.5 * (a + xp.matrix_transpose(a))


def _scale_columns(u, f, xp):
    """``u @ diag(f)`` over a batch: f has shape (..., k), u (..., n, k)."""
    return u * xp.expand_dims(f, axis=-2)


def _power_of_kept(w, keep, p: float, xp):
    """``w**p`` where ``keep`` (w > 0 there), 0 elsewhere, without 0**negative or NaN."""
    safe = xp.where(keep, w, xp.ones_like(w))
    return xp.where(keep, safe**p, xp.zeros_like(w))


def _keep_above(w, rc: float, xp, *, axes=(-1,)):
    """Mask of values ``w > rc * max(w)`` (max per matrix over ``axes``) and ``w > 0``."""
    wmax = xp.max(w, axis=axes, keepdims=True)
    return (w > rc * wmax) & (w > 0)


def _vec_r(x, xp):
    """Row-major vec of the last two axes: (..., m, n) -> (..., m * n)."""
    return xp.reshape(x, tuple(x.shape[:-2]) + (x.shape[-2] * x.shape[-1],))


_METHODS = ("auto", "sylvester", "cholesky", "kronecker")
