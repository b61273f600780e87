"""arraycurv: exact, array-agnostic curvature and curvature-corrected learning dynamics.

Pass arrays of any array-API namespace (NumPy, CuPy, array-api-strict, PyTorch, ...) and
get results back in the same namespace, dtype and device. See README.md and docs/.
"""

from . import backend, losses, params, validation  # noqa: F401
from .backend import *  # noqa: F401,F403
from .interface import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .params import *  # noqa: F401,F403

__version__ = "0.1.0"
