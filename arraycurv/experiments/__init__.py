"""Reproductions of Huh (2020) behind the command line (:mod:`arraycurv.cli`).

* :mod:`.teacher_student`: Sec. 6, Figs 4 and 5 (deep linear teacher-student);
* :mod:`.theory_figures`: Figs 1, 2, 3 and Table 1 (theory only, no training);
* :mod:`.relu_digits`: S.I.3, Fig S.I.2 on scikit-learn's digits.

Each module has a frozen config dataclass and a ``run(config, out_dir, *, xp, progress)``
that writes PNG figures, ``summary.json`` and ``.npz`` arrays (atomically, see
:mod:`arraycurv.results`) and returns the summary dict. The training logic is
array-agnostic (``xp`` may be NumPy, array-api-strict, PyTorch or CuPy); only the
recorded values are converted to NumPy for files and figures. See docs/experiments.md.
"""

from __future__ import annotations

import os

__all__ = ['UsageError', 'check_out_dir']


class UsageError(ValueError):
    """A bad setting of an experiment (reported by the command line as a usage error, exit 2)."""


def check_out_dir(path) -> None:
    """Create the output folder ``path`` (with parents); raise :class:`UsageError` if that
    is impossible (e.g. ``path`` is an existing file)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"out: expected a folder that can be created, got {os.fspath(path)!r} ({exc})") from exc
