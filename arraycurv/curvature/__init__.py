"""Curvature of the mean loss: gradient, Jacobian, GGN, Hessian, Fisher, Kronecker factors.

* :mod:`.generic`: the curvature verbs and their defaults built from the model passes;
* :mod:`.deep_linear`, :mod:`.sequential`: exact fast forms per model family;
* :mod:`.fisher`: exact, Monte-Carlo and empirical Fisher;
* :mod:`.kron`: Kronecker factors (K-FAC, Bernacchia et al. 2018 eq 22);
* :mod:`.operators`: SciPy ``LinearOperator`` views (SciPy is imported on first use).
"""

from .._lazy import lazy_getattr
from . import deep_linear, fisher, generic, kron, reduce, sequential
from .deep_linear import fisher_kron_factors, map_jacobian, null_space_basis, null_space_direction
from .fisher import (
    fisher_empirical_matrix,
    fisher_empirical_vp,
    fisher_exact_matrix,
    fisher_exact_vp,
    fisher_mc_matrix,
    fisher_mc_vp,
    gradient_gram,
    per_sample_grads,
    per_sample_rows,
)
from .generic import (
    ggn_block_diag,
    ggn_blocks,
    ggn_matmat,
    ggn_matrix,
    ggn_vp,
    hessian_matrix,
    hvp_matmat,
    jacobian,
    jacobian_matmat,
    value_and_grad,
)
from .kron import FISHER_KINDS, KFactors, kfac_block, kron_factors

_LAZY = {"operators", "FISHER_VARIANTS", "fisher_operator", "ggn_operator", "hessian_operator"}
#: The class-subspace tools (Tuddenham et al. 2020) and the summary Hessian (Wolinski 2023) are
#: imported on first use; they register fast forms only on their own private generics.
_LAZY_MODULES = ("subspace", "summary")
_LAZY_SUBSPACE = {"ClassSubspace", "class_gradients", "class_subspace", "subspace_basis", "subspace_curvature"}

__all__ = [
    "FISHER_KINDS",
    "FISHER_VARIANTS",
    "KFactors",
    "deep_linear",
    "fisher",
    "fisher_empirical_matrix",
    "fisher_empirical_vp",
    "fisher_exact_matrix",
    "fisher_exact_vp",
    "fisher_kron_factors",
    "fisher_mc_matrix",
    "fisher_mc_vp",
    "fisher_operator",
    "generic",
    "ggn_block_diag",
    "ggn_blocks",
    "ggn_matmat",
    "ggn_matrix",
    "ggn_operator",
    "ggn_vp",
    "hessian_matrix",
    "hessian_operator",
    "hvp_matmat",
    "jacobian",
    "jacobian_matmat",
    "kfac_block",
    "kron_factors",
    "kron",
    "map_jacobian",
    "null_space_basis",
    "null_space_direction",
    "operators",
    "reduce",
    "gradient_gram",
    "per_sample_grads",
    "per_sample_rows",
    "sequential",
    "value_and_grad",
]

__all__ += ["ClassSubspace", "class_gradients", "class_subspace", "subspace", "subspace_basis", "subspace_curvature"]

# SciPy is imported only when a LinearOperator is asked for.
__getattr__ = lazy_getattr(__name__, ("operators", *_LAZY_MODULES),
                           {**dict.fromkeys(_LAZY - {"operators"}, "operators"),
                            **dict.fromkeys(_LAZY_SUBSPACE, "subspace")})
