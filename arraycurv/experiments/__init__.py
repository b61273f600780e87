"""Reproductions of papers, as data: each experiment is a frozen config, a pure
``run_one(config) -> record`` and a ``report(records, out_dir)``, registered by name
(:mod:`.registry`); the command line (:mod:`arraycurv.cli`) is generated from the registry.

Built-in experiments (Huh 2020):

* ``teacher-student`` (:mod:`.huh_teacher_student`): Sec. 6, Figs 4 and 5;
* ``theory`` (:mod:`.huh_theory`): Figs 1, 2, 3 and Table 1 (theory only, no training);
* ``relu-digits`` (:mod:`.huh_relu_digits`): S.I.3, Fig S.I.2 on scikit-learn's digits.

Each module also has ``run(config, out_dir, *, xp, progress, plots)`` (``run_one`` then
``report``, saving partial results as they come) that returns the summary dict. The
training logic is array-agnostic (``xp`` may be NumPy, array-api-strict, PyTorch or
CuPy); only the recorded values are converted to NumPy for files and figures. The
experiment modules (and :mod:`.plotting`) are imported when the registry is first read
or when they are first named (``arraycurv.experiments.huh_theory``). See
docs/experiments.md.
"""

from __future__ import annotations

from .._lazy import lazy_getattr
from .registry import (
    EXPERIMENTS,
    Experiment,
    ExperimentConfig,
    UsageError,
    check_out_dir,
    config_dict,
    config_field,
    config_from_dict,
    get_experiment,
    register_experiment,
    run_experiment,
    unregister_experiment,
)

#: Submodules imported on first use (module ``__getattr__``), so ``import arraycurv`` stays light.
_LAZY = ("huh_relu_digits", "huh_teacher_student", "huh_theory", "plotting")

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentConfig",
    "UsageError",
    "check_out_dir",
    "config_dict",
    "config_field",
    "config_from_dict",
    "get_experiment",
    "huh_relu_digits",
    "huh_teacher_student",
    "huh_theory",
    "plotting",
    "register_experiment",
    "registry",
    "run_experiment",
    "unregister_experiment",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
