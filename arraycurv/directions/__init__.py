"""Preconditioned descent directions (pure functions of model, params and batch).

* :mod:`.fractional`: fractional q-NGD of Huh (2020) eq (12) in full, dual, svd (SVD of
  the stacked Jacobian) and map forms, its block-diagonal variant and the regularized NGD
  of S.I.15-16;
* :mod:`.kfac`: q-NGD with Kronecker-factored curvature blocks.
"""

from . import fractional, kfac
from .bernacchia import bernacchia_ngd_direction
from .class_subspace import class_subspace_direction, class_subspace_newton_direction, subspace_newton_direction
from .fractional import (
    FORMS,
    clip_direction,
    qngd_blockdiag_direction,
    qngd_direction,
    qngd_direction_dual,
    qngd_direction_full,
    qngd_direction_map,
    qngd_direction_svd,
    regularized_ngd_direction,
)
from .kfac import kfac_qngd_direction

__all__ = [
    "FORMS",
    "bernacchia",
    "bernacchia_ngd_direction",
    "clip_direction",
    "fractional",
    "kfac",
    "kfac_qngd_direction",
    "qngd_blockdiag_direction",
    "qngd_direction",
    "qngd_direction_dual",
    "qngd_direction_full",
    "qngd_direction_map",
    "qngd_direction_svd",
    "regularized_ngd_direction",
]
__all__ += ["class_subspace", "class_subspace_direction", "class_subspace_newton_direction",
            "subspace_newton_direction"]
