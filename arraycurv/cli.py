"""Command line of the experiments: ``arraycurv [experiment] [options]`` or
``python -m arraycurv [experiment] [options]``.

The subcommands and their options are generated from the experiment registry
(:mod:`arraycurv.experiments.registry`): one subcommand per registered experiment, one
option per field of its config (type, default and help from the field's metadata), so
adding an experiment needs no edit here. Built in (Huh 2020, see docs/experiments.md):

* ``teacher-student`` (the default): Sec. 6, Figs 4 and 5;
* ``theory``: Figs 1, 2, 3 and Table 1;
* ``relu-digits``: S.I.3 (Fig S.I.2) on scikit-learn's digits;
* ``all``: every registered experiment with its defaults, each into its own folder;
* ``sweep EXPERIMENT``: seeds x a grid of config fields (:mod:`arraycurv.sweeps`), on
  serial, process or Dask executors, resumable, with the aggregate table over seeds.

``--seeds`` runs an experiment over several seeds (default: the experiment's
``default_seeds``, 5 for the teacher-student) and reports their spread. BLAS threads are
limited with threadpoolctl (``--threads``, default 1), exactly as
:func:`arraycurv.experiments.run_experiment` does from Python.

An unavailable ``--backend`` (e.g. ``cupy`` without a GPU) prints one line and exits
with status 2, like every other usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["ALL", "DEFAULT_EXPERIMENT", "SWEEP", "add_config_options", "build_parser", "command_names",
           "config_from_args", "main"]


DEFAULT_EXPERIMENT = "teacher-student"


#: The subcommand that runs every registered experiment.
ALL = "all"


#: The subcommand that sweeps an experiment (``arraycurv sweep EXPERIMENT ...``).
SWEEP = "sweep"


#: Options of the command line itself (not config fields); a config may not use these names.
_RUN_OPTIONS = ("out", "quiet", "no_plots", "threads", "experiment", "seeds", "grid", "executor", "workers",
                "scheduler", "sweep_experiment")


def command_names() -> tuple[str, ...]:
    """The subcommands: every registered experiment, then ``all`` and ``sweep``."""
    from .experiments import EXPERIMENTS

    return (*EXPERIMENTS, ALL, SWEEP)


def _seeds(text: str) -> tuple[int, ...]:
    """``--seeds N`` (offsets 0..N-1) or ``A:B`` (offsets A..B-1)."""
    from .sweeps.grid import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except empty or boolean ones; keeps the description's line breaks."""

    def _get_help_string(self, action):
        if action.default in (None, False, (), []) or isinstance(action.default, bool):
            return action.help
        if isinstance(action.default, (tuple, list)):
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default)
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


def _run_options(group, experiment: str) -> None:
    default_out = "results" if experiment == ALL else os.path.join("results", experiment)
    group.add_argument("--out", metavar="DIR", default=default_out,
                       help="output folder for figures, summary.json and arrays"
                            + (" (one sub-folder per experiment)" if experiment == ALL else ""))


def _run_flags(group, default_seeds: int | None = None) -> None:
    from .experiments.registry import positive_int

    if default_seeds is not None:
        group.add_argument("--seeds", type=_seeds, default=tuple(range(default_seeds)), metavar="N|A:B",
                           help=f"run seeds SEED, SEED+1, ..., SEED+N-1 (or offsets A..B-1 from --seed) and report "
                                f"their spread (default: {default_seeds})")
    group.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")
    group.add_argument("--no-plots", action="store_true",
                       help="skip the PNG figures (summary.json and arrays are still written; no matplotlib needed)")
    group.add_argument("--threads", type=positive_int, default=1,
                       help="BLAS threads (via threadpoolctl when installed); the matrices here are at most a few "
                            "hundred wide, where more threads mostly add overhead")


def _add_option(group, spec: dict) -> None:
    """One argparse option from a :func:`~arraycurv.experiments.registry.config_options` entry."""
    name, default = spec["name"], spec["default"]
    if name in _RUN_OPTIONS:
        raise ValueError(f"config field {name!r}: expected a name other than the command line's {_RUN_OPTIONS}")
    kw = {"dest": name, "help": spec["help"]}
    if spec["flag"]:
        kw.update(action=argparse.BooleanOptionalAction, default=default)
    elif spec["repeat"]:
        shown = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in default)
        kw.update(action="append", default=[], type=spec["parse"],
                  help=spec["help"] + (f" (defaults: {shown})" if shown else ""))
    else:
        kw.update(default=default, type=spec["parse"])
    if spec["choices"] is not None:
        kw["choices"] = spec["choices"]
    if spec["metavar"] is not None:
        kw["metavar"] = spec["metavar"]
    group.add_argument(spec["option"], **kw)


def add_config_options(parser: argparse.ArgumentParser, config_type: type, *, common=None, title=None) -> None:
    """Add one option per field of ``config_type`` to ``parser``: the fields of
    :data:`~arraycurv.experiments.registry.COMMON_FIELDS` into the group ``common`` (if
    given), the others into a new group called ``title``."""
    from .experiments.registry import config_options

    own = parser.add_argument_group(title) if title else parser
    for spec in config_options(config_type):
        _add_option(common if (spec["common"] and common is not None) else own, spec)


def config_from_args(config_type: type, args: argparse.Namespace):
    """The ``config_type`` instance of parsed options (repeatable ``(name, value)``
    options update the field's default pairs); :class:`UsageError` if it is invalid."""
    from .experiments.registry import config_options

    values = {}
    for spec in config_options(config_type):
        value = getattr(args, spec["name"])
        if spec["repeat"]:
            merged = dict(spec["default"])
            merged.update(dict(value))
            value = tuple(merged.items())
        values[spec["name"]] = value
    return config_type(**values)


def _subparser(sub, name: str, help_text: str):
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
    common = p.add_argument_group("common options")
    _run_options(common, name)
    return p, common


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``arraycurv``: one subcommand per registered experiment
    (options from its config fields, :func:`add_config_options`) and ``all``."""
    from .experiments import EXPERIMENTS, ExperimentConfig

    parser = argparse.ArgumentParser(
        prog="arraycurv",
        formatter_class=_Formatter,
        description=(
            "Reproduce Huh (2020), 'Curvature-corrected learning dynamics in deep neural networks'.\n"
            "Each experiment writes PNG figures, summary.json and NumPy arrays into --out and prints\n"
            f"a summary table. Without an experiment name, '{DEFAULT_EXPERIMENT}' runs.\n"
            "Options go after the experiment name; 'arraycurv EXPERIMENT --help' lists them."
        ),
        epilog=(
            "examples:\n"
            "  arraycurv                                  # teacher-student (Figs 4, 5), about 2 min\n"
            "  arraycurv theory --out results/theory      # Figs 1-3, Table 1\n"
            "  arraycurv relu-digits --gains 1,1e-4       # S.I.3 on digits\n"
            "  arraycurv teacher-student --backend cupy   # on the GPU\n"
            "  arraycurv sweep teacher-student --seeds 8 --grid lr=0.1,0.2 --workers 2 --out results/sw\n"
            "  python -m arraycurv all --out results      # everything"
        ),
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"arraycurv {__version__}")
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for name, exp in EXPERIMENTS.items():
        p, common = _subparser(sub, name, exp.help)
        add_config_options(p, exp.config_type, common=common, title=f"{name} options ({exp.paper})")
        _run_flags(common, exp.default_seeds)
    p, common = _subparser(sub, ALL, f"run {', '.join(EXPERIMENTS)} with their defaults")
    add_config_options(p, ExperimentConfig, common=common)
    _run_flags(common)
    _sweep_parser(sub, EXPERIMENTS)
    return parser


def _sweep_parser(sub, experiments) -> None:
    """``arraycurv sweep EXPERIMENT [config options] --seeds --grid --executor --workers --scheduler --out``."""
    from .experiments.registry import positive_int

    sp = sub.add_parser(SWEEP, help="sweep an experiment over seeds x a grid of its config fields (Dask, resumable)",
                        description="Run EXPERIMENT over --seeds x --grid: one cell per (grid point, seed), each "
                                    "recorded atomically under --out/cells (a rerun skips finished cells; a second "
                                    "sweep into the folder refuses), then print the table over seeds "
                                    "(mean ± sd [95% CI] (n)).", formatter_class=_Formatter)
    ssub = sp.add_subparsers(dest="sweep_experiment", metavar="EXPERIMENT", required=True)
    for name, exp in experiments.items():
        p = ssub.add_parser(name, help=exp.help, formatter_class=_Formatter,
                            description=f"sweep {name} ({exp.paper}); the config options set the base of every "
                                        "cell, --grid the fields that vary")
        g = p.add_argument_group("sweep options")
        g.add_argument("--out", metavar="DIR", default=os.path.join("results", "sweeps", name),
                       help="sweep folder (sweep.json, cells/, summary.json, table.txt, bands_*.png)")
        g.add_argument("--seeds", type=_seeds, default=tuple(range(max(2, exp.default_seeds))), metavar="N|A:B",
                       help="replicates 0..N-1 or A..B-1; replicate r runs with seed SeedSequence(--seed).spawn()[r] "
                            f"(default: {max(2, exp.default_seeds)})")
        g.add_argument("--grid", nargs="+", action="extend", default=[], metavar="FIELD=V1,V2",
                       help="config fields and their values (field or option name; list entries joined by +)")
        g.add_argument("--executor", choices=("serial", "processes", "dask"), default=None,
                       help="where cells run (default: dask with --workers/--scheduler, else serial)")
        g.add_argument("--workers", type=positive_int, default=None, help="local workers (Dask LocalCluster or pool)")
        g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running Dask scheduler (dask-jobqueue, dask-kubernetes, ...)")
        g.add_argument("--threads", type=positive_int, default=None,
                       help="BLAS threads per cell (default 1 serially, cores // workers in parallel)")
        g.add_argument("--quiet", action="store_true", help="no progress bar and no table")
        g.add_argument("--no-plots", action="store_true", help="skip the band figures")
        add_config_options(p, exp.config_type, title=f"{name} options: the base config ({exp.paper})")


def _normalize_argv(argv: Sequence[str]) -> list[str]:
    """Insert the default experiment when none is named (``arraycurv --steps 10``)."""
    argv = list(argv)
    if not argv:
        return [DEFAULT_EXPERIMENT]
    if argv[0] in command_names() or argv[0] in ("-h", "--help", "--version"):
        return argv
    return [DEFAULT_EXPERIMENT] + argv


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _resolve_namespace(name: str):
    from . import backend
    from .experiments import UsageError

    try:
        return backend.namespace_by_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _sweep(args) -> int:
    from .experiments import get_experiment
    from .sweeps.command import sweep_experiment

    exp = get_experiment(args.sweep_experiment)
    base = config_from_args(exp.config_type, args)
    summary = sweep_experiment(exp.name, base, args.grid, args.seeds, args.out, executor=args.executor,
                               workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                               progress=not args.quiet, plots=not args.no_plots)
    return 1 if summary["failed"] else 0


def _run(args) -> int:
    from .experiments import get_experiment, run_experiment

    if args.experiment == SWEEP:
        return _sweep(args)

    names = tuple(n for n in command_names() if n not in (ALL, SWEEP)) if args.experiment == ALL else (
        args.experiment,)
    jobs = []
    for name in names:  # every config is built (and validated) before any work starts
        exp = get_experiment(name)
        if args.experiment == ALL:
            config = _common_config(exp.config_type, args)
            out = os.path.join(args.out, name)
        else:
            config = config_from_args(exp.config_type, args)
            out = args.out
        seeds = getattr(args, "seeds", None) or tuple(range(exp.default_seeds))
        jobs.append((exp, config, out, _resolve_namespace(config.backend), seeds))
    for exp, config, out, xp, seeds in jobs:
        run_experiment(exp, config, out, xp=xp, progress=not args.quiet, plots=not args.no_plots, seeds=seeds,
                       threads=args.threads)
    return 0


def _common_config(config_type: type, args):
    """The default config of an experiment with the common options of ``all``."""
    from .experiments.registry import COMMON_FIELDS

    return config_type(**{k: getattr(args, k) for k in COMMON_FIELDS})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``arraycurv`` / ``python -m arraycurv``; returns the exit status.

    Exit status 0 on success, 1 when cells of a sweep failed, 2 on a usage error (bad
    option or grid value, unavailable backend, missing optional package, an output folder
    another sweep holds), 130 when interrupted (results of finished rules and cells are
    kept).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(_normalize_argv(argv))
    from .experiments import UsageError

    try:
        return _run(args)
    except (UsageError, ImportError) as exc:
        print(f"arraycurv: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"arraycurv: interrupted; finished results are in {args.out}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
