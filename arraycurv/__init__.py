"""arraycurv: exact, array-agnostic curvature and curvature-corrected learning dynamics.

Pass arrays of any array-API namespace (NumPy, CuPy, array-api-strict, PyTorch, ...) and
get results back in the same namespace, dtype and device. See README.md and docs/.
"""

from . import backend, losses, params, validation  # noqa: F401
from .backend import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .deep_linear import *  # noqa: F401,F403
from .fisher import *  # noqa: F401,F403
from .fractional import *  # noqa: F401,F403
from .integrate import *  # noqa: F401,F403
from .interface import *  # noqa: F401,F403
from .kfac import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .networks import *  # noqa: F401,F403
from .operators import *  # noqa: F401,F403
from .params import *  # noqa: F401,F403
from .rules import *  # noqa: F401,F403
from .theory import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403

__version__ = "0.1.0"
