"""Sylvester equations (spec 1.3).

:func:`solve_sylvester`: A X + X B = C by two eigendecompositions, minimum-norm least
squares for singular systems (Huh (2020) S.I.1, eqs (S.I.9)-(S.I.10));
:func:`solve_generalized_sylvester`: sum_i A_i X B_i = C. Conventions in
:mod:`arraycurv.linalg`.
"""

from __future__ import annotations

import math

from .. import backend
from ..validation import check_matrix
from ._common import _METHODS, _batch_shape, _check_inputs, _check_symmetric, _rcond, _sym, _vec_r
from .kronecker import _check_kron_operands, _check_symmetric_kron_operands, kron
from .powers import pinv_power

__all__ = ['solve_generalized_sylvester', 'solve_sylvester']


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
