"""Huh (2020) Figs 1-3 and Table 1 from the theory alone (a few seconds).

Run:  python examples/theory_figures.py
Same: arraycurv theory --out results/theory
"""

import math

import numpy as np

from arraycurv.experiments import huh_theory as theory_figures
from arraycurv.experiments.huh_theory import format_table1

# Table 1: the exponent p of the map dynamics d sigma/dt = -eta_bar (sigma - sigma*) sigma^p (eq 17)
print(format_table1(depths=(1, 2, 4, math.inf)))

# One singular mode of a depth-2 network under sqrt-NGD (eq 12 with q = 2): constant speed.
path = theory_figures.trajectory("sqrt_ngd", (0.15, 0.3), xp=np)
print("sqrt-NGD path ends at", path["end"], "; sigma_1^2 - sigma_2^2 drifted by", path["invariant_drift"])

# Figs 1, 2, 3, table1.txt, summary.json: run_one (pure, returns the record) then report (writes the files)
config = theory_figures.Config(trajectory_start=(0.15, 0.3))
theory_figures.run(config, "results/theory")
