"""Linear algebra written against the array API (spec 1.3).

* :mod:`.powers`: spectral powers of PSD matrices and pseudo-inverse powers;
* :mod:`.kronecker`: Kronecker products, products with vectors, powers and solves;
* :mod:`.sylvester`: Sylvester and generalized Sylvester equations.
"""

from . import kronecker, powers, sylvester
from .kronecker import kron, kron_matvec, kron_psd_power_apply, kron_solve
from .powers import pinv_power, psd_power
from .sylvester import solve_generalized_sylvester, solve_sylvester

__all__ = [
    "kron",
    "kron_matvec",
    "kron_psd_power_apply",
    "kron_solve",
    "kronecker",
    "pinv_power",
    "powers",
    "psd_power",
    "solve_generalized_sylvester",
    "solve_sylvester",
    "sylvester",
]
