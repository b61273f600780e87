"""Spectral powers of symmetric PSD matrices and pseudo-inverse powers (spec 1.3).

:func:`psd_power`: A^p on the kept eigenvalues with an explicit cut-off and damping, the
Moore-Penrose pseudo-inverse of Hessian+ behind NGD (Huh (2020) eq (9)) and its
fractional powers behind q-NGD (Huh (2020) Sec. 3, eq (12)). :func:`pinv_power`: the
general (non-square) pseudo-inverse power by SVD (Bernacchia et al. (2018) eq (10),
Supplementary eq (45)). Conventions (cut-offs, batching) in :mod:`arraycurv.linalg`.

Both take ``return_info=True`` to also return a :class:`PowerInfo`: how many eigen/singular
values the cut-off kept. In float32 the default cut-off ``n * eps`` (about ``1e-5`` for
n = 100) silently drops every direction of an ill-conditioned matrix below it; the kept
rank makes that visible without changing the cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import backend
from ..validation import check_bool, check_finite, check_matrix, check_real, check_square
from ._common import _check_psd, _check_symmetric, _keep_above, _power_of_kept, _rcond, _scale_columns, _sym

__all__ = ['PowerInfo', 'pinv_power', 'psd_power']


@dataclass(frozen=True)
class PowerInfo:
    """What the cut-off of a pseudo-inverse power kept (``return_info=True``).

    Attributes
    ----------
    rank : int
        Number of eigen/singular values kept (above ``rcond`` times the largest); for a
        batch of matrices the smallest over the batch.
    size : int
        Number of eigen/singular values computed (``n`` for an (n, n) matrix,
        ``min(m, n)`` for the SVD of an (m, n) one, the decomposed matrix's size for the
        q-NGD forms).
    rcond : float
        The relative cut-off used (the default filled in).
    form : str
        The decomposition: ``"eigh"`` (:func:`psd_power`), ``"svd"`` (:func:`pinv_power`),
        or the q-NGD form (``"full"``, ``"dual"``, ``"svd"``, ``"map"``) of
        :func:`arraycurv.directions.qngd_direction`.
    ranks : tuple of int
        The kept rank of every matrix of a batch (row-major over the leading axes); one
        entry for a single matrix.
    """

    rank: int
    size: int
    rcond: float
    form: str
    ranks: tuple[int, ...] = ()

    @property
    def dropped(self) -> int:
        """``size - rank``: eigen/singular values treated as zero (in the worst matrix)."""
        return self.size - self.rank


def _power_info(keep, size: int, rc: float, form: str, xp) -> PowerInfo:
    """A :class:`PowerInfo` from the mask of kept values (one host synchronization)."""
    counts = xp.reshape(xp.sum(xp.astype(keep, xp.int64), axis=-1), (-1,))
    ranks = tuple(int(counts[i]) for i in range(counts.shape[0]))
    return PowerInfo(rank=min(ranks) if ranks else size, size=size, rcond=float(rc), form=form, ranks=ranks)


# --------------------------------------------------------------------- matrix powers
def psd_power(a, p, *, rcond=None, damping=0.0, check=True, clip_negative=False, return_info=False):
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
        If False, skip the finite, symmetry and definiteness checks (they need the data on
        the host); shapes and scalars are always checked.
    clip_negative : bool, optional
        Negative eigenvalues of ``A + damping I`` down to ``-100 n eps(dtype) max|lambda|``
        (:data:`arraycurv.linalg._common.NEGATIVE_TOL`) are rounding and get 0; a more
        negative eigenvalue means ``a`` is not PSD and raises ``ValueError``, unless
        ``clip_negative=True``, which drops every negative eigenvalue (the projection onto
        the PSD cone, Hessian+ of Huh (2020) eq (9)).
    return_info : bool, optional
        If True, return ``(result, info)`` with ``info`` a :class:`PowerInfo`
        (``info.rank`` eigenvalues kept out of ``info.size = n``, the cut-off
        ``info.rcond``, ``info.form = "eigh"``); this costs one host synchronization.

    Returns
    -------
    array, shape (..., n, n)
        In the namespace, dtype and device of ``a``; ``(array, PowerInfo)`` with
        ``return_info=True``.

    Raises
    ------
    ValueError
        ``a`` not square, not symmetric, not finite or indefinite (beyond rounding, see
        ``clip_negative``); ``damping`` or ``rcond`` negative.
    """
    xp = backend.namespace_of(a=a)
    backend.check_float(a, "a", xp)
    check_square(a, "a")
    p = check_real(p, "p")
    damping = check_real(damping, "damping", lo=0)
    check, clip_negative = check_bool(check, "check"), check_bool(clip_negative, "clip_negative")
    return_info = check_bool(return_info, "return_info")
    n = a.shape[-1]
    rc = _rcond(rcond, n, a.dtype, xp)
    if check:
        check_finite(a, "a", xp)
        _check_symmetric(a, "a", xp)
    if n == 0:
        out = xp.zeros(a.shape, dtype=a.dtype, device=backend.device_of(a))
        return (out, PowerInfo(0, 0, float(rc), "eigh", ())) if return_info else out
    out, keep = _psd_power_kept(a, p, rc, damping, xp, check=check, clip_negative=clip_negative)
    return (out, _power_info(keep, n, rc, "eigh", xp)) if return_info else out


def _psd_power_kept(a, p, rc, damping, xp, *, check=True, clip_negative=False):
    """Trusted :func:`psd_power` of a non-empty ``a``: ``(result, mask of kept eigenvalues)``."""
    n = a.shape[-1]
    s = _sym(a, xp)
    if damping != 0.0:
        s = s + damping * xp.eye(n, dtype=a.dtype, device=backend.device_of(a))
    w, u = xp.linalg.eigh(s)
    if check:
        _check_psd(w, "a", xp, n, clip_negative)
    keep = _keep_above(w, rc, xp)
    f = _power_of_kept(w, keep, p, xp)
    return xp.matmul(_scale_columns(u, f, xp), xp.matrix_transpose(u)), keep


def pinv_power(a, p, *, rcond=None, damping=0.0, return_info=False):
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
    return_info : bool, optional
        If True, return ``(result, info)`` with ``info`` a :class:`PowerInfo`
        (``info.rank`` singular values kept out of ``info.size = min(m, n)``, the
        cut-off ``info.rcond`` on the singular values, ``info.form = "svd"``); one host
        synchronization.

    Returns
    -------
    array, shape (..., n, m)
        In the namespace, dtype and device of ``a``; ``(array, PowerInfo)`` with
        ``return_info=True``.
    """
    xp = backend.namespace_of(a=a)
    backend.check_float(a, "a", xp)
    check_matrix(a, "a")
    p = check_real(p, "p")
    damping = check_real(damping, "damping", lo=0)
    return_info = check_bool(return_info, "return_info")
    m, n = a.shape[-2], a.shape[-1]
    rc = _rcond(rcond, max(m, n), a.dtype, xp)
    check_finite(a, "a", xp)
    if m == 0 or n == 0:
        out = xp.zeros(tuple(a.shape[:-2]) + (n, m), dtype=a.dtype, device=backend.device_of(a))
        return (out, PowerInfo(0, 0, float(rc), "svd", ())) if return_info else out
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    keep = _keep_above(s, rc, xp)
    f = _power_of_kept(s + damping, keep, -p, xp)
    out = xp.matmul(_scale_columns(xp.matrix_transpose(vh), f, xp), xp.matrix_transpose(u))
    return (out, _power_info(keep, min(m, n), rc, "svd", xp)) if return_info else out
