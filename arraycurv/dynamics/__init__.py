"""Learning dynamics: Huh's theory, the ODE integrator and discrete training.

* :mod:`.theory`: singular-mode and map dynamics, conserved quantities (Huh 2020);
* :mod:`.integrate`: an array-API DOPRI5 integrator and fixed-step RK4;
* :mod:`.training`: discrete training loops and gradient flows of update rules.
"""

from . import integrate, theory, training
from .integrate import IntegrationError, OdeSolution, rk4_fixed, solve_ode
from .training import DivergenceError, TrainResult, integrate_rule, print_progress, rule_velocity, train

__all__ = [
    "DivergenceError",
    "IntegrationError",
    "OdeSolution",
    "TrainResult",
    "integrate",
    "integrate_rule",
    "print_progress",
    "rk4_fixed",
    "rule_velocity",
    "solve_ode",
    "theory",
    "train",
    "training",
]
