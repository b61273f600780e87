"""Sweeps: seeds x parameters over an experiment's frozen config, run on serial, process or
Dask executors, one atomic record file per cell, resumable, aggregated over seeds.

* :mod:`.grid`: :class:`Sweep` (plain data) and its :class:`Cell` expansion, spawned seeds;
* :mod:`.run`: :func:`run_sweep` (lock, resume, executors, progress, per-cell failures);
* :mod:`.stats`: mean, sd and confidence intervals over seeds; tables and band figures.
"""

from . import grid, run, stats
from .grid import Cell, Sweep, config_key, parse_grid, parse_seeds, spawn_seeds
from .run import SweepLockedError, SweepResult, load_records, run_sweep
from .stats import aggregate, format_aggregate, plot_bands

__all__ = [
    "Cell",
    "Sweep",
    "SweepLockedError",
    "SweepResult",
    "aggregate",
    "config_key",
    "format_aggregate",
    "grid",
    "load_records",
    "parse_grid",
    "parse_seeds",
    "plot_bands",
    "run",
    "run_sweep",
    "spawn_seeds",
    "stats",
]
