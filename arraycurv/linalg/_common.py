"""Private argument checks and spectral helpers shared by the :mod:`arraycurv.linalg` modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import backend
from ..validation import check_finite, check_real, check_symmetric


# ----------------------------------------------------------------------------- helpers
def _rcond(rcond: Any, size: int, dtype, xp) -> float:
    """The cut-off: ``rcond`` checked, or the default ``size * eps(dtype)``."""
    if rcond is None:
        return max(size, 1) * float(xp.finfo(dtype).eps)
    return check_real(rcond, "rcond", lo=0)


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


#: Negative eigenvalues down to ``-NEGATIVE_TOL * n * eps(dtype) * max |eigenvalue|`` count as
#: rounding (a Gram matrix J^T J formed in floating point has them) and are treated as zero;
#: below that a "PSD" input is indefinite and the PSD routines raise unless ``clip_negative``.
NEGATIVE_TOL = 100.0


def _check_psd(w, name: str, xp, n: int, clip_negative: bool, *, axes=(-1,)) -> None:
    """Raise unless the eigenvalues ``w`` are >= minus the rounding tolerance (per matrix)."""
    if clip_negative or math.prod(w.shape) == 0:
        return
    tol = NEGATIVE_TOL * max(n, 1) * float(xp.finfo(w.dtype).eps)
    wabs = xp.max(xp.abs(w), axis=axes, keepdims=True)
    bad = w < -tol * wabs
    if bool(xp.any(bad)):
        wmin = float(xp.min(w / xp.where(wabs > 0, wabs, xp.ones_like(wabs))))
        raise ValueError(
            f"{name}: expected a positive semi-definite matrix (eigenvalues >= -{tol:.3g} max |eigenvalue|), "
            f"got an eigenvalue of {wmin:.3g} max |eigenvalue|; pass clip_negative=True to drop negative "
            f"eigenvalues"
        )


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
