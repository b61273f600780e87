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

from .._lazy import lazy_getattr
from . import kronecker, powers, sylvester
from .kronecker import kron, kron_matvec, kron_psd_power_apply, kron_solve
from .powers import PowerInfo, pinv_power, psd_power
from .sylvester import solve_generalized_sylvester, solve_sylvester

__all__ = [
    "PowerInfo",
    "kron",
    "kron_matvec",
    "kron_psd_power_apply",
    "kron_solve",
    "kronecker",
    "lowrank",
    "pinv_power",
    "powers",
    "psd_power",
    "solve_generalized_sylvester",
    "solve_sylvester",
    "sylvester",
]
__all__ += ["block_lanczos", "complement_project", "fraction_in_span", "hutchinson_trace", "hutchpp_trace", "lanczos",
            "orthonormal_basis", "principal_angles", "project", "slq", "slq_trace", "spectral", "spectral_density",
            "stack_directions", "subspace_overlap", "subspaces"]

#: Modules imported on first use (``arraycurv.linalg.spectral``, ``from arraycurv.linalg import lanczos``),
#: so that ``import arraycurv`` does not load the paper tools (Lanczos, SLQ, low-rank, subspaces).
_LAZY_MODULES = ("lowrank", "spectral", "subspaces")
_LAZY_NAMES = {
    **dict.fromkeys(("block_lanczos", "hutchinson_trace", "hutchpp_trace", "lanczos", "slq", "slq_trace",
                     "spectral_density"), "spectral"),
    **dict.fromkeys(("complement_project", "fraction_in_span", "orthonormal_basis", "principal_angles", "project",
                     "stack_directions", "subspace_overlap"), "subspaces"),
}


__getattr__ = lazy_getattr(__name__, _LAZY_MODULES, _LAZY_NAMES)


def __dir__():
    return sorted(set(globals()) | set(__all__))
