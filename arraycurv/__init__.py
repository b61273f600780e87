"""arraycurv: exact, array-agnostic curvature and curvature-corrected learning dynamics.

Pass arrays of any array-API namespace (NumPy, CuPy, array-api-strict, PyTorch, ...) and
get results back in the same namespace, dtype and device. The headline names live here;
everything else is reached through its subpackage (``ac.linalg.psd_power``,
``ac.dynamics.theory.p_exponent``, ``ac.models.layers.Dense``, ...). See README.md and
docs/design.md.
"""

# The core (models, their generic passes, the curvature verbs with every fast form registered,
# losses, flat parameters) is imported eagerly: the singledispatch registrations of the model
# families (some of which live in ``curvature``) must be in place before any verb is called.
from . import _lazy, backend, curvature, losses, models, params, validation
from .curvature import ggn_block_diag, ggn_blocks, ggn_matrix, ggn_vp, hessian_matrix, jacobian, value_and_grad
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

#: The process policies (docs/backend.md): BLAS threads (ARRAYCURV_BLAS_THREADS, default 1)
#: and glibc's malloc thresholds (ARRAYCURV_MALLOC, default on).
backend.apply_thread_policy()
backend.apply_memory_policy()

#: Subpackages imported on first use (``ac.sweeps``, ``import arraycurv.sweeps``), so that
#: ``import arraycurv`` stays light; they register no fast form on the core generics.
_LAZY_MODULES = ("data", "directions", "dynamics", "experiments", "linalg", "results", "rules", "sweeps", "testing")

#: Headline names that live in a lazily imported subpackage: name -> subpackage.
_LAZY_NAMES = {
    "bernacchia_ngd_direction": "directions",
    "kfac_qngd_direction": "directions",
    "qngd_blockdiag_direction": "directions",
    "qngd_direction": "directions",
    "regularized_ngd_direction": "directions",
    "integrate_rule": "dynamics",
    "train": "dynamics",
    **dict.fromkeys(
        ("UpdateRule", "adam", "apply_direction", "bernacchia_ngd", "chain", "class_subspace_newton",
         "newton_summary", "ngd", "ngd_d", "qngd", "qngd_blockdiag", "regularized_ngd", "sgd", "sqrt_ngd",
         "sqrt_ngd_d"),
        "rules",
    ),
}


__getattr__ = _lazy.lazy_getattr(__name__, _LAZY_MODULES, _LAZY_NAMES)


def __dir__():
    return sorted(set(globals()) | set(__all__))


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
    "bernacchia_ngd",
    "bernacchia_ngd_direction",
    "chain",
    "class_subspace_newton",
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
    "newton_summary",
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
