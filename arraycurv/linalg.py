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

from . import backend
from .validation import check_finite, check_matrix, check_square, check_symmetric

__all__ = [
    "kron",
    "kron_matvec",
    "kron_psd_power_apply",
    "kron_solve",
    "pinv_power",
    "psd_power",
    "solve_generalized_sylvester",
    "solve_sylvester",
]


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


# --------------------------------------------------------------------- matrix powers
def psd_power(a, p, *, rcond=None, damping=0.0, check=True):
    """Spectral power of a symmetric PSD matrix: ``(A + damping I)^p`` on its range.

    With the eigendecomposition ``A + damping I = U diag(lam) U^T`` (``xp.linalg.eigh``),
    returns ``U diag(f(lam)) U^T`` where ``f(lam) = lam**p`` for ``lam > rcond * max(lam)``
    (per matrix of a batch) and ``f(lam) = 0`` for the others, including the tiny
    negative eigenvalues rounding produces. Hence ``p = -1`` is the Moore-Penrose
    pseudo-inverse ``A^+`` (Huh (2020) eq (9): NGD via the pseudo-inverse of Hessian+),
    ``p < 0`` is ``(A^+)^|p|``, written ``A^{+p}`` (the fractional q-NGD of Huh (2020)
    Sec. 3, eq (12), uses ``p = -1/q``), ``p = 1/2`` the PSD square root, and ``p = 0`` the
    orthogonal projector onto the retained eigenspace.

    Parameters
    ----------
    a : array, shape (..., n, n)
        Symmetric positive semi-definite matrix or batch of them (float32/float64).
        Only its symmetric part is used.
    p : float
        The power (any finite real number).
    rcond : float, optional
        Relative cut-off, ``>= 0``. Default ``n * eps(dtype)`` (``n`` the matrix size).
    damping : float, optional
        Levenberg-Marquardt damping ``>= 0`` added to every eigenvalue, i.e. the power of
        ``A + damping I`` (Huh (2020) Sec. 6 uses ``1e-5`` for NGD). The cut-off applies
        to the damped eigenvalues.
    check : bool, optional
        If False, skip the finite and symmetry checks (they need the data on the host);
        shapes and scalars are always checked.

    Returns
    -------
    array, shape (..., n, n)
        In the namespace, dtype and device of ``a``.

    Raises
    ------
    ValueError
        ``a`` not square, not symmetric or not finite; ``damping`` or ``rcond`` negative.
    """
    xp = backend.namespace_of(a=a)
    backend.check_float(a, "a", xp)
    check_square(a, "a")
    p = _real(p, "p")
    damping = _real(damping, "damping", nonneg=True)
    n = a.shape[-1]
    rc = _rcond(rcond, n, a.dtype, xp)
    if check:
        check_finite(a, "a", xp)
        _check_symmetric(a, "a", xp)
    if n == 0:
        return xp.zeros(a.shape, dtype=a.dtype, device=backend.device_of(a))
    s = _sym(a, xp)
    if damping != 0.0:
        s = s + damping * xp.eye(n, dtype=a.dtype, device=backend.device_of(a))
    w, u = xp.linalg.eigh(s)
    f = _power_of_kept(w, _keep_above(w, rc, xp), p, xp)
    return xp.matmul(_scale_columns(u, f, xp), xp.matrix_transpose(u))


def pinv_power(a, p, *, rcond=None, damping=0.0):
    """Power of the pseudo-inverse of a general matrix: ``V diag(s**(-p)) U^T``.

    With the thin SVD ``A = U diag(s) V^T`` (``xp.linalg.svd(full_matrices=False)``),
    singular values ``s <= rcond * max(s)`` (per matrix of a batch) are dropped and the
    others map to ``(s + damping)**(-p)``. So ``p = 1`` is ``pinv(A)`` (Bernacchia et al.
    (2018) eq (10) with Moore-Penrose pseudo-inverses, Supplementary eq (45)), ``p = 1/2``
    a square root of it, ``p = 0`` the partial isometry ``V U^T`` of the range; for
    symmetric PSD ``A``, ``pinv_power(A, p) == psd_power(A, -p)``.

    Parameters
    ----------
    a : array, shape (..., m, n)
        Any real matrix or batch of them.
    p : float
        The power of the pseudo-inverse.
    rcond : float, optional
        Relative cut-off on the (undamped) singular values, ``>= 0``. Default
        ``max(m, n) * eps(dtype)``.
    damping : float, optional
        Added, ``>= 0``, to each *retained* singular value before the power. Unlike in
        :func:`psd_power` (where the null space of ``A + damping I`` gets ``damping**p``),
        dropped singular values stay dropped: the singular vectors of a zero singular value
        of a general matrix are not unique, so giving them weight would make the result
        depend on the SVD routine. For symmetric PSD ``A`` of full rank,
        ``pinv_power(A, p, damping=d) == psd_power(A, -p, damping=d)``.

    Returns
    -------
    array, shape (..., n, m)
        In the namespace, dtype and device of ``a``.
    """
    xp = backend.namespace_of(a=a)
    backend.check_float(a, "a", xp)
    check_matrix(a, "a")
    p = _real(p, "p")
    damping = _real(damping, "damping", nonneg=True)
    m, n = a.shape[-2], a.shape[-1]
    rc = _rcond(rcond, max(m, n), a.dtype, xp)
    check_finite(a, "a", xp)
    if m == 0 or n == 0:
        return xp.zeros(tuple(a.shape[:-2]) + (n, m), dtype=a.dtype, device=backend.device_of(a))
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    keep = _keep_above(s, rc, xp)
    f = _power_of_kept(s + damping, keep, -p, xp)
    return xp.matmul(_scale_columns(xp.matrix_transpose(vh), f, xp), xp.matrix_transpose(u))


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
    batch = _batch_shape([("a", a), ("b", b)])
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


def kron_psd_power_apply(a, b, x, p, *, rcond=None, damping=0.0):
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

    Returns
    -------
    array, shape (..., m, n)
    """
    xp, m, n = _check_kron_operands(a, b, x, "x")
    p = _real(p, "p")
    damping = _real(damping, "damping", nonneg=True)
    rc, batch = _check_symmetric_kron_operands(xp, a, b, x, "x", rcond)
    if m == 0 or n == 0:
        return xp.zeros(batch + (m, n), dtype=x.dtype, device=backend.device_of(x))
    wa, ua = xp.linalg.eigh(_sym(a, xp))
    wb, ub = xp.linalg.eigh(_sym(b, xp))
    lam = xp.expand_dims(wa, axis=-1) * xp.expand_dims(wb, axis=-2) + damping  # (..., m, n)
    f = _power_of_kept(lam, _keep_above(lam, rc, xp, axes=(-2, -1)), p, xp)
    xt = xp.matmul(xp.matmul(xp.matrix_transpose(ua), x), ub)
    return xp.matmul(xp.matmul(ua, xt * f), xp.matrix_transpose(ub))


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


# ----------------------------------------------------------------------------- Sylvester
def _sylvester_eigh(a, b, c, rc: float, xp):
    """Min-norm least-squares X of ``A X + X B = C`` for symmetric A, B (two eighs).

    Returns ``(X, any_cut)`` with ``any_cut`` True when some ``a_i + b_j`` were cut.
    """
    wa, ua = xp.linalg.eigh(_sym(a, xp))
    wb, ub = xp.linalg.eigh(_sym(b, xp))
    den = xp.expand_dims(wa, axis=-1) + xp.expand_dims(wb, axis=-2)  # (..., m, n)
    absden = xp.abs(den)
    keep = absden > rc * xp.max(absden, axis=(-2, -1), keepdims=True)
    safe = xp.where(keep, den, xp.ones_like(den))
    inv = xp.where(keep, 1.0 / safe, xp.zeros_like(den))
    ct = xp.matmul(xp.matmul(xp.matrix_transpose(ua), c), ub)
    x = xp.matmul(xp.matmul(ua, ct * inv), xp.matrix_transpose(ub))
    return x, not bool(xp.all(keep))


def solve_sylvester(a, b, c, *, rcond=None):
    """Solve ``A X + X B = C`` for symmetric ``A``, ``B`` with two eigendecompositions.

    With ``A = U_A diag(a_i) U_A^T``, ``B = U_B diag(b_j) U_B^T``,

        X = U_A [ (U_A^T C U_B) / (a_i + b_j) ] U_B^T,

    where entries with ``|a_i + b_j| <= rcond * max_ij |a_i + b_j|`` (per matrix of a
    batch) are set to 0. The ``a_i + b_j`` are the eigenvalues of the (symmetric)
    Kronecker-sum matrix ``K = kron(A, I) + kron(I, B)``, so this is ``pinv(K) vec_r(C)``,
    the minimum-norm least-squares solution when the equation is singular. This is the
    equation ``S(Lambda) = (w2 w2^T) Lambda + Lambda (w1^T w1) - Delta = 0`` of the
    Moore-Penrose NGD update of a two-layer linear network (Huh (2020) S.I.1,
    eqs (S.I.9)-(S.I.10)); with a bottleneck the least-squares solution satisfies
    ``w2^T S(Lambda) = S(Lambda) w1^T = 0`` (eq (S.I.9)).

    Parameters
    ----------
    a : array, shape (..., m, m)
        Symmetric (not necessarily definite).
    b : array, shape (..., n, n)
        Symmetric.
    c : array, shape (..., m, n)
    rcond : float, optional
        Relative cut-off ``>= 0``; default ``m * n * eps(dtype)`` (the size of ``K``).

    Returns
    -------
    array, shape (..., m, n)
    """
    xp, m, n = _check_kron_operands(a, b, c, "c")
    rc, batch = _check_symmetric_kron_operands(xp, a, b, c, "c", rcond)
    if m == 0 or n == 0:
        return xp.zeros(batch + (m, n), dtype=c.dtype, device=backend.device_of(c))
    return _sylvester_eigh(a, b, c, rc, xp)[0]


_METHODS = ("auto", "sylvester", "cholesky", "kronecker")


def _scalar_identity(m, xp):
    """``s`` of shape (..., 1, 1) if ``m == s * I`` exactly (every batch entry), else None."""
    if m.shape[-1] != m.shape[-2] or m.shape[-1] == 0:
        return None
    s = xp.expand_dims(xp.linalg.diagonal(m)[..., 0:1], axis=-1)
    eye = xp.eye(m.shape[-1], dtype=m.dtype, device=backend.device_of(m))
    return s if bool(xp.all(m == s * eye)) else None


def _is_symmetric(m, xp) -> bool:
    if m.shape[-1] != m.shape[-2]:
        return False
    try:
        _check_symmetric(m, "m", xp)
    except ValueError:
        return False
    return True


def _is_spd(m, xp) -> bool:
    """Symmetric with eigenvalues in (sqrt(eps) * max, max]: safe to reduce by Cholesky."""
    if not _is_symmetric(m, xp) or m.shape[-1] == 0:
        return False
    w = xp.linalg.eigvalsh(_sym(m, xp))
    wmax = xp.max(w, axis=-1)
    tol = math.sqrt(float(xp.finfo(m.dtype).eps))
    return bool(xp.all(wmax > 0)) and bool(xp.all(xp.min(w, axis=-1) > tol * wmax))


def _find_sylvester(terms, xp):
    """((A, beta), (alpha, B)) for terms ``A X (beta I) + (alpha I) X B``, else None."""
    for i, j in ((0, 1), (1, 0)):
        (a1, b1), (a2, b2) = terms[i], terms[j]
        beta, alpha = _scalar_identity(b1, xp), _scalar_identity(a2, xp)
        if beta is not None and alpha is not None and _is_symmetric(a1, xp) and _is_symmetric(b2, xp):
            return a1 * beta, alpha * b2
    return None


def _find_cholesky(terms, xp):
    """(A1, B1, A2, B2) with all symmetric and B1, A2 positive definite, else None."""
    for i, j in ((0, 1), (1, 0)):
        (a1, b1), (a2, b2) = terms[i], terms[j]
        if _is_symmetric(a1, xp) and _is_symmetric(b2, xp) and _is_spd(b1, xp) and _is_spd(a2, xp):
            return a1, b1, a2, b2
    return None


def _solve_cholesky(a1, b1, a2, b2, c, rc, xp):
    """``A1 X B1 + A2 X B2 = C`` with ``B1 = L_B L_B^T``, ``A2 = L_A L_A^T``.

    With ``Y = L_A^T X L_B``: ``(L_A^{-1} A1 L_A^{-T}) Y + Y (L_B^{-1} B2 L_B^{-T})
    = L_A^{-1} C L_B^{-T}``, a symmetric Sylvester equation.
    """
    mt = xp.matrix_transpose
    la = xp.linalg.cholesky(_sym(a2, xp))
    lb = xp.linalg.cholesky(_sym(b1, xp))
    at = xp.linalg.solve(la, mt(xp.linalg.solve(la, _sym(a1, xp))))  # L_A^{-1} A1 L_A^{-T}
    bt = xp.linalg.solve(lb, mt(xp.linalg.solve(lb, _sym(b2, xp))))  # L_B^{-1} B2 L_B^{-T}
    ct = mt(xp.linalg.solve(lb, mt(xp.linalg.solve(la, c))))  # L_A^{-1} C L_B^{-T}
    y, any_cut = _sylvester_eigh(at, bt, ct, rc, xp)
    x = mt(xp.linalg.solve(mt(lb), mt(xp.linalg.solve(mt(la), y))))  # L_A^{-T} Y L_B^{-1}
    return x, any_cut


def _solve_kronecker(terms, c, rc, xp, batch, shape_x):
    """Min-norm least squares of ``(sum_i kron(A_i, B_i^T)) vec_r(X) = vec_r(C)`` by SVD."""
    k = None
    for a_i, b_i in terms:
        t = kron(a_i, xp.matrix_transpose(b_i))
        k = t if k is None else k + t
    kp = pinv_power(k, 1.0, rcond=rc)
    x = xp.matmul(kp, xp.expand_dims(_vec_r(c, xp), axis=-1))
    return xp.reshape(x, batch + shape_x)


def solve_generalized_sylvester(terms, c, *, rcond=None, method="auto"):
    """Solve ``sum_i A_i X B_i = C`` (generalized Sylvester equation, spec 1.3).

    Returns the minimum-norm least-squares solution (exact when the system is
    nonsingular), choosing the cheapest safe path (``method="auto"``):

    1. ``"sylvester"``: two terms of the form ``A X (beta I) + (alpha I) X B`` (either
       order, identities exactly scalar multiples of ``I``) with symmetric ``A``, ``B``:
       :func:`solve_sylvester` with ``beta A`` and ``alpha B`` (two eighs) - Huh (2020)
       eq (S.I.10) is this form.
    2. ``"cholesky"``: two terms ``A1 X B1 + A2 X B2`` with all four symmetric and
       ``B1``, ``A2`` positive definite (eigenvalues above ``sqrt(eps)`` times the largest,
       so that the reduction is well conditioned): with the Cholesky factors
       ``B1 = L_B L_B^T``, ``A2 = L_A L_A^T`` and ``Y = L_A^T X L_B`` it becomes the
       symmetric Sylvester equation ``(L_A^{-1} A1 L_A^{-T}) Y + Y (L_B^{-1} B2 L_B^{-T})
       = L_A^{-1} C L_B^{-T}`` (two eighs). If that reduced equation is singular (some
       eigenvalue sums cut) the minimum-norm ``Y`` is not the minimum-norm ``X``, so
       ``"auto"`` then falls back to path 3 (a forced ``"cholesky"`` returns the
       ``Y``-minimum-norm solution).
    3. ``"kronecker"``: anything else, including non-square ``A_i`` (m, p) and ``B_i``
       (q, n) and any number of terms: the Kronecker-sum matrix
       ``K = sum_i kron(A_i, B_i^T)`` of shape (m n, p q) (``vec_r(sum_i A_i X B_i) =
       K vec_r(X)``) is formed and ``X = pinv_power(K, 1) vec_r(C)`` (an SVD,
       O((m n)^3): for small problems).

    Parameters
    ----------
    terms : sequence of pairs (A_i, B_i)
        ``A_i`` of shape (..., m, p), ``B_i`` of shape (..., q, n), the same m, p, q, n
        for every term; leading axes broadcast.
    c : array, shape (..., m, n)
    rcond : float, optional
        Relative cut-off ``>= 0`` on the eigen/singular values of the (reduced) system;
        default ``max(m n, p q) * eps(dtype)`` (the size of ``K``).
    method : {"auto", "sylvester", "cholesky", "kronecker"}
        Force a path (a structure that does not fit raises ``ValueError``).

    Returns
    -------
    array, shape (..., p, q)
    """
    if not isinstance(terms, (tuple, list)) or len(terms) == 0:
        raise ValueError(f"terms: expected a non-empty sequence of pairs (A_i, B_i), got {terms!r:.80}")
    for i, t in enumerate(terms):
        if not isinstance(t, (tuple, list)) or len(t) != 2:
            raise TypeError(f"terms[{i}]: expected a pair (A_i, B_i), got {type(t).__name__} {t!r:.80}")
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    xp = backend.namespace_of(terms=terms, c=c)
    named = []
    for i, (a_i, b_i) in enumerate(terms):
        check_matrix(a_i, f"terms[{i}][0]")
        check_matrix(b_i, f"terms[{i}][1]")
        named += [(f"terms[{i}][0]", a_i), (f"terms[{i}][1]", b_i)]
    check_matrix(c, "c")
    m, p = terms[0][0].shape[-2:]
    q, n = terms[0][1].shape[-2:]
    for i, (a_i, b_i) in enumerate(terms):
        if a_i.shape[-2:] != (m, p):
            raise ValueError(
                f"terms[{i}][0]: expected shape (..., {m}, {p}) (like terms[0][0]), got {tuple(a_i.shape)}"
            )
        if b_i.shape[-2:] != (q, n):
            raise ValueError(
                f"terms[{i}][1]: expected shape (..., {q}, {n}) (like terms[0][1]), got {tuple(b_i.shape)}"
            )
    if c.shape[-2:] != (m, n):
        raise ValueError(f"c: expected shape (..., {m}, {n}) (rows of terms[0][0], columns of terms[0][1]), "
                         f"got {tuple(c.shape)}")
    named.append(("c", c))
    _check_inputs(xp, "terms[0][0]", named)
    rc = _rcond(rcond, max(m * n, p * q), c.dtype, xp)
    batch = _batch_shape(named)
    if min(m, n, p, q) == 0:
        return xp.zeros(batch + (p, q), dtype=c.dtype, device=backend.device_of(c))

    if method in ("auto", "sylvester"):
        found = _find_sylvester(terms, xp) if len(terms) == 2 else None
        if found is not None:
            return _sylvester_eigh(found[0], found[1], c, rc, xp)[0]
        if method == "sylvester":
            raise ValueError(
                "method: expected two terms A X (beta I) + (alpha I) X B with symmetric A, B for 'sylvester', "
                "got terms of another structure"
            )
    if method in ("auto", "cholesky"):
        found = _find_cholesky(terms, xp) if len(terms) == 2 else None
        if found is not None:
            x, any_cut = _solve_cholesky(*found, c, rc, xp)
            if method == "cholesky" or not any_cut:
                return x
        elif method == "cholesky":
            raise ValueError(
                "method: expected two terms A1 X B1 + A2 X B2 with symmetric A1, B2 and symmetric positive "
                "definite B1, A2 for 'cholesky', got terms of another structure"
            )
    return _solve_kronecker(terms, c, rc, xp, batch, (p, q))
