"""Kronecker algebra in the row-major ``vec`` convention of the flat parameter vector.

:func:`kron`, :func:`kron_matvec` (``kron(A, B) @ vec_r(X) == vec_r(A @ X @ B.T)``),
:func:`kron_psd_power_apply` ((A kron B)^p = A^p kron B^p, Bernacchia et al. (2018)
eq (10)) and :func:`kron_solve`. Conventions in :mod:`arraycurv.linalg`.
"""

from __future__ import annotations

import array_api_compat
import array_api_extra as xpx

from .. import backend
from ..validation import check_matrix, check_real, check_square
from ._common import (
    _batch_shape,
    _check_inputs,
    _check_psd,
    _check_symmetric,
    _keep_above,
    _power_of_kept,
    _rcond,
    _sym,
)

__all__ = ['kron', 'kron_matvec', 'kron_psd_power_apply', 'kron_solve']


# ----------------------------------------------------------------------------- Kronecker
def kron(a, b):
    """Kronecker product in the row-major vec convention, batched over leading axes.

    ``kron(a, b)[..., i*p + k, j*q + l] = a[..., i, j] * b[..., k, l]``, so that
    ``kron(A, B) @ vec_r(X) == vec_r(A X B^T)`` with ``vec_r`` the C-order flattening of
    the flat parameter vector (Bernacchia et al. (2018) eq (10): Fisher blocks of deep
    linear networks are Kronecker products of covariances).

    Parameters
    ----------
    a : array, shape (..., m, n)
    b : array, shape (..., p, q)
        Leading axes broadcast against those of ``a``.

    Returns
    -------
    array, shape (..., m*p, n*q)
    """
    xp = backend.namespace_of(a=a, b=b)
    check_matrix(a, "a")
    check_matrix(b, "b")
    _check_inputs(xp, "a", [("a", a), ("b", b)])
    return _kron(xp, a, b, _batch_shape([("a", a), ("b", b)]))


def _kron(xp, a, b, batch=()):
    """Trusted :func:`kron`: array-api-extra's ``kron`` for matrices (the same products
    a_ij b_kl, so identical results), a broadcast product over leading axes otherwise.

    PyTorch takes the broadcast product too: array-api-extra hands it to ``torch.kron``
    through array-api-compat, which fails on non-contiguous views (slices, transposes)."""
    if a.ndim == 2 and b.ndim == 2 and not array_api_compat.is_torch_namespace(xp):
        return xpx.kron(a, b, xp=xp)
    m, n = a.shape[-2:]
    p, q = b.shape[-2:]
    a6 = xp.reshape(a, tuple(a.shape[:-2]) + (m, 1, n, 1))
    b6 = xp.reshape(b, tuple(b.shape[:-2]) + (1, p, 1, q))
    return xp.reshape(a6 * b6, batch + (m * p, n * q))


def kron_matvec(a, b, x):
    """``A X B^T``: the matrix form of ``kron(A, B) @ vec_r(X)``, without forming ``kron``.

    Parameters
    ----------
    a : array, shape (..., m, n)
    b : array, shape (..., p, q)
    x : array, shape (..., n, q)
        Leading axes of the three broadcast against each other.

    Returns
    -------
    array, shape (..., m, p)
        ``reshape(result, (..., m*p)) == kron(a, b) @ vec_r(x)``.
    """
    xp = backend.namespace_of(a=a, b=b, x=x)
    for name, v in (("a", a), ("b", b), ("x", x)):
        check_matrix(v, name)
    n, q = a.shape[-1], b.shape[-1]
    if x.shape[-2:] != (n, q):
        raise ValueError(f"x: expected shape (..., {n}, {q}) (columns of a, columns of b), got {tuple(x.shape)}")
    _check_inputs(xp, "a", [("a", a), ("b", b), ("x", x)])
    _batch_shape([("a", a), ("b", b), ("x", x)])
    return xp.matmul(xp.matmul(a, x), xp.matrix_transpose(b))


def _check_kron_operands(a, b, x, name):
    """Namespace and sizes (m, n) of square ``a`` (..., m, m), ``b`` (..., n, n) and the
    right-hand side ``x`` (..., m, n) called ``name``; raises naming the wrong argument."""
    xp = backend.namespace_of(a=a, b=b, **{name: x})
    check_square(a, "a")
    check_square(b, "b")
    check_matrix(x, name)
    m, n = a.shape[-1], b.shape[-1]
    if x.shape[-2:] != (m, n):
        raise ValueError(f"{name}: expected shape (..., {m}, {n}) (size of a, size of b), got {tuple(x.shape)}")
    return xp, m, n


def _check_symmetric_kron_operands(xp, a, b, x, name, rcond):
    """Checks shared by the routines that eigendecompose symmetric ``a`` and ``b``: finite
    inputs, symmetry, broadcastable batch axes. Returns ``(rcond, batch shape)`` with the
    default cut-off for the size m n of ``kron(a, b)``."""
    named = [("a", a), ("b", b), (name, x)]
    _check_inputs(xp, "a", named)
    rc = _rcond(rcond, a.shape[-1] * b.shape[-1], a.dtype, xp)
    _check_symmetric(a, "a", xp)
    _check_symmetric(b, "b", xp)
    return rc, _batch_shape(named)


def kron_psd_power_apply(a, b, x, p, *, rcond=None, damping=0.0, clip_negative=False):
    """``(A kron B + damping I)^p vec_r(X)`` in matrix form, from two eigendecompositions.

    With ``A = U_A diag(a_i) U_A^T`` and ``B = U_B diag(b_j) U_B^T`` the eigenvalues of
    ``kron(A, B)`` are the products ``a_i b_j`` with eigenvectors ``u_i kron v_j``, so

        result = U_A [ (U_A^T X U_B) * f(a_i b_j + damping) ] U_B^T,

    where ``f(lam) = lam**p`` for ``lam > rcond * max_ij(a_i b_j + damping)`` and 0 otherwise:
    the cut-off is applied to the *products*, so the result equals
    ``psd_power(kron(A, B), p, rcond=rcond, damping=damping) @ vec_r(X)`` exactly (this is
    ``(A kron B)^p = A^p kron B^p`` on the range, Bernacchia et al. (2018) eq (10)), at
    O(m^3 + n^3) instead of O(m^3 n^3).

    Parameters
    ----------
    a : array, shape (..., m, m)
        Symmetric PSD.
    b : array, shape (..., n, n)
        Symmetric PSD.
    x : array, shape (..., m, n)
    p : float
    rcond : float, optional
        Default ``m * n * eps(dtype)`` (the size of ``kron(A, B)``).
    damping : float, optional
        ``>= 0``, added to the product eigenvalues (the power of ``kron(A, B) + damping I``).
    clip_negative : bool, optional
        As in :func:`~arraycurv.linalg.psd_power`: eigenvalues of ``a`` or ``b`` below minus
        the rounding tolerance raise ``ValueError`` unless True (then they are dropped).

    The eigenvalues are divided by their largest magnitudes before the products are
    formed, so products beyond the float range (``1e200 * 1e200``) neither overflow to
    Inf nor give zeros: ``lam**p = (s_a s_b)**p (lam / (s_a s_b))**p``.

    Returns
    -------
    array, shape (..., m, n)
    """
    xp, m, n = _check_kron_operands(a, b, x, "x")
    p = check_real(p, "p")
    damping = check_real(damping, "damping", lo=0)
    rc, batch = _check_symmetric_kron_operands(xp, a, b, x, "x", rcond)
    if m == 0 or n == 0:
        return xp.zeros(batch + (m, n), dtype=x.dtype, device=backend.device_of(x))
    wa, ua = xp.linalg.eigh(_sym(a, xp))
    wb, ub = xp.linalg.eigh(_sym(b, xp))
    _check_psd(wa, "a", xp, m, bool(clip_negative))
    _check_psd(wb, "b", xp, n, bool(clip_negative))
    sa, sb = _unit_scale(wa, xp), _unit_scale(wb, xp)  # (..., 1): scale before the products
    # (..., m, n) products of unit-scaled eigenvalues; damping scaled alike
    lam = xp.expand_dims(wa / sa, axis=-1) * xp.expand_dims(wb / sb, axis=-2)
    lam = lam + (damping / xp.expand_dims(sa, axis=-1)) / xp.expand_dims(sb, axis=-2)
    f = _power_of_kept(lam, _keep_above(lam, rc, xp, axes=(-2, -1)), p, xp)
    f = f * (xp.expand_dims(sa**p, axis=-1) * xp.expand_dims(sb**p, axis=-2))
    xt = xp.matmul(xp.matmul(xp.matrix_transpose(ua), x), ub)
    return xp.matmul(xp.matmul(ua, xt * f), xp.matrix_transpose(ub))


def _unit_scale(w, xp):
    """max |w| over the last axis (keepdims), 1 where that is 0."""
    s = xp.max(xp.abs(w), axis=-1, keepdims=True)
    return xp.where(s > 0, s, xp.ones_like(s))


def kron_solve(a, b, c):
    """Solve ``kron(A, B) vec_r(X) = vec_r(C)``: ``X = A^{-1} C B^{-T}`` by two solves.

    Parameters
    ----------
    a : array, shape (..., m, m)
        Invertible.
    b : array, shape (..., n, n)
        Invertible.
    c : array, shape (..., m, n)

    Returns
    -------
    array, shape (..., m, n)

    Raises
    ------
    ValueError
        Shapes that do not fit (naming the argument), non-finite input, or a singular
        ``a`` or ``b`` (use :func:`kron_psd_power_apply` or :func:`pinv_power` then).
    """
    xp, m, n = _check_kron_operands(a, b, c, "c")
    _check_inputs(xp, "a", [("a", a), ("b", b), ("c", c)])
    _batch_shape([("a", a), ("b", b), ("c", c)])
    y = _solve(a, c, "a", xp)  # A^{-1} C
    return xp.matrix_transpose(_solve(b, xp.matrix_transpose(y), "b", xp))  # (B^{-1} Y^T)^T


def _solve(a, rhs, name, xp):
    """``xp.linalg.solve`` with a uniform error for singular matrices on every backend."""
    try:
        out = xp.linalg.solve(a, rhs)
    except Exception as exc:  # LinAlgError (NumPy), RuntimeError subclasses (PyTorch), ...
        raise ValueError(f"{name}: expected an invertible matrix, got a singular one ({exc})") from exc
    if not bool(xp.all(xp.isfinite(out))):  # backends that do not raise (e.g. CuPy)
        raise ValueError(f"{name}: expected an invertible matrix, got a singular one (non-finite solution)")
    return out
