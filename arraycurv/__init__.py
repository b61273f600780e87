"""arraycurv: exact, array-agnostic curvature and curvature-corrected learning dynamics.

Pass arrays of any array-API namespace (NumPy, CuPy, array-api-strict, PyTorch, ...) and
get results back in the same namespace, dtype and device. The headline names live here;
everything else is reached through its subpackage (``ac.linalg.psd_power``,
``ac.dynamics.theory.p_exponent``, ``ac.models.layers.Dense``, ...). See README.md and
docs/design.md.
"""

from . import (
    backend,
    curvature,
    data,
    directions,
    dynamics,
    experiments,
    linalg,
    losses,
    models,
    params,
    results,
    rules,
    sweeps,
    validation,
)
from .curvature import ggn_block_diag, ggn_blocks, ggn_matrix, ggn_vp, hessian_matrix, jacobian, value_and_grad
from .directions import kfac_qngd_direction, qngd_blockdiag_direction, qngd_direction, regularized_ngd_direction
from .dynamics import integrate_rule, train
from .losses import MSE, SoftmaxCrossEntropy
from .models import (
    DeepLinear,
    LinearMoments,
    Sequential,
    forward,
    hvp,
    init_params,
    jvp,
    lenet5,
    linearize,
    mlp,
    param_shapes,
    vjp,
)
from .params import flatten, unflatten
from .rules import (
    UpdateRule,
    adam,
    apply_direction,
    ngd,
    ngd_d,
    qngd,
    qngd_blockdiag,
    regularized_ngd,
    sgd,
    sqrt_ngd,
    sqrt_ngd_d,
)

__version__ = "0.1.0"

__all__ = [
    "MSE",
    "DeepLinear",
    "LinearMoments",
    "Sequential",
    "SoftmaxCrossEntropy",
    "UpdateRule",
    "adam",
    "apply_direction",
    "backend",
    "curvature",
    "data",
    "directions",
    "dynamics",
    "experiments",
    "flatten",
    "forward",
    "ggn_block_diag",
    "ggn_blocks",
    "ggn_matrix",
    "ggn_vp",
    "hessian_matrix",
    "hvp",
    "init_params",
    "integrate_rule",
    "jacobian",
    "jvp",
    "kfac_qngd_direction",
    "lenet5",
    "linalg",
    "linearize",
    "losses",
    "mlp",
    "models",
    "ngd",
    "ngd_d",
    "param_shapes",
    "params",
    "qngd",
    "qngd_blockdiag",
    "qngd_blockdiag_direction",
    "qngd_direction",
    "regularized_ngd",
    "regularized_ngd_direction",
    "results",
    "rules",
    "sgd",
    "sqrt_ngd",
    "sqrt_ngd_d",
    "sweeps",
    "train",
    "unflatten",
    "validation",
    "value_and_grad",
    "vjp",
]
