"""Command line of the reproductions: ``arraycurv [experiment] [options]`` or
``python -m arraycurv [experiment] [options]``.

Experiments (Huh 2020, see docs/experiments.md):

* ``teacher-student`` (the default): Sec. 6, Figs 4 and 5;
* ``theory``: Figs 1, 2, 3 and Table 1;
* ``relu-digits``: S.I.3 (Fig S.I.2) on scikit-learn's digits;
* ``all``: the three above, each into its own folder.

An unavailable ``--backend`` (e.g. ``cupy`` without a GPU) prints one line and exits
with status 2, like every other usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import backend

__all__ = ['DEFAULT_EXPERIMENT', 'EXPERIMENTS', 'build_parser', 'main']


EXPERIMENTS = ("teacher-student", "theory", "relu-digits", "all")


DEFAULT_EXPERIMENT = "teacher-student"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except empty or boolean ones; keeps the description's line breaks."""

    def _get_help_string(self, action):
        if action.default in (None, False, (), []) or isinstance(action.default, bool):
            return action.help
        if isinstance(action.default, (tuple, list)):
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default)
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    v = _nonneg_float(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return names


def _float_list(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}")
    return vals


def _lr_override(text: str) -> tuple[str, float]:
    name, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected RULE=LR (e.g. sgd=0.01), got {text!r}")
    return name.strip(), _positive_float(val)


def _common(parser: argparse.ArgumentParser, experiment: str) -> None:
    g = parser.add_argument_group("common options")
    default_out = "results" if experiment == "all" else os.path.join("results", experiment)
    g.add_argument("--out", metavar="DIR", default=default_out,
                   help="output folder for figures, summary.json and arrays"
                        + (" (one sub-folder per experiment)" if experiment == "all" else ""))
    g.add_argument("--seed", type=int, default=0, help="random seed (data and initial weights)")
    g.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="floating-point precision")
    g.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                   help="array namespace the computation runs in (cupy = GPU)")
    g.add_argument("--quiet", action="store_true", help="no progress lines and no summary table")
    g.add_argument("--no-plots", action="store_true",
                   help="skip the PNG figures (summary.json and arrays are still written; no matplotlib needed)")
    g.add_argument("--threads", type=_positive_int, default=1,
                   help="BLAS threads (via threadpoolctl when installed); the matrices here are at most a few "
                        "hundred wide, where more threads mostly add overhead")


def _teacher_student_options(parser: argparse.ArgumentParser) -> None:
    from .experiments.huh_teacher_student import DEFAULT_RULES, TeacherStudentConfig

    d = TeacherStudentConfig()
    g = parser.add_argument_group("teacher-student options (Huh Sec. 6)")
    g.add_argument("--rules", type=_name_list, default=DEFAULT_RULES, metavar="LIST",
                   help="comma-separated update rules among sgd, ngd, sqrt_ngd, ngd_d, sqrt_ngd_d, adam")
    g.add_argument("--q", type=_float_list, default=(), metavar="Q[,Q...]",
                   help="add fractional q-NGD rule(s) (G^+)^(1/q) for these q >= 1 (q=1 NGD, q=2 sqrt-NGD)")
    g.add_argument("--depth", type=_positive_int, default=d.depth, help="number of weight matrices d of the student")
    g.add_argument("--width", type=_positive_int, default=d.width,
                   help="width N of every layer (input, hidden, output)")
    g.add_argument("--rank", type=_positive_int, default=d.rank, help="rank of the teacher map")
    g.add_argument("--steps", type=_positive_int, default=d.steps, help="training iterations per rule")
    g.add_argument("--lr", type=_positive_float, default=d.eta_bar, metavar="ETA_BAR",
                   help="depth-calibrated learning rate eta_bar = eta d^(1-1/q) (Huh eq 17): rule with power 1/q "
                        "uses eta = eta_bar / d^(1-1/q), so every rule's map dynamics run on one time scale")
    g.add_argument("--lr-rule", type=_lr_override, action="append", default=[], metavar="RULE=LR",
                   help="override the raw learning rate eta of one rule (repeatable)")
    g.add_argument("--noise", type=_nonneg_float, default=d.noise, help="standard deviation of the output noise")
    g.add_argument("--init-scale", type=_positive_float, default=d.init_scale,
                   help="standard deviation of the small random initial weights")
    g.add_argument("--damping", type=_nonneg_float, default=d.damping,
                   help="Levenberg-Marquardt damping epsilon of NGD and NGD-d (Huh Sec. 6)")
    g.add_argument("--clip", type=_nonneg_float, default=d.clip,
                   help="update-speed clipping of NGD and NGD-d: the update norm is capped at CLIP (0 = off)")
    g.add_argument("--record-every", type=_positive_int, default=d.record_every,
                   help="record losses, modes and weights every this many iterations")
    g.add_argument("--tol", type=_nonneg_float, default=d.tol,
                   help="stop a rule once its map changes by less than TOL (relative) in one iteration; 0 = never")
    g.add_argument("--num-test", type=_positive_int, default=d.num_test, help="number of test samples")


def _relu_digits_options(parser: argparse.ArgumentParser) -> None:
    from .experiments.huh_relu_digits import DigitsConfig

    d = DigitsConfig()
    g = parser.add_argument_group("relu-digits options (Huh S.I.3 on scikit-learn digits)")
    g.add_argument("--rules", type=_name_list, default=d.rules, metavar="LIST",
                   help="comma-separated rules among sgd, ngd_d, sqrt_ngd_d")
    g.add_argument("--gains", type=_float_list, default=d.gains, metavar="G[,G...]",
                   help="gains of the orthogonal initial weights (Huh S.I.3: 1 down to 1e-6)")
    g.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")), default=d.sizes,
                   metavar="N0,...,NL", help="layer sizes, input 64 and output 10 for digits")
    g.add_argument("--steps", type=_positive_int, default=d.steps, help="training iterations per (rule, gain)")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="minibatch size")
    g.add_argument("--lr-rule", type=_lr_override, action="append", default=[], metavar="RULE=LR",
                   help="override the learning rate of one rule (repeatable)")
    g.add_argument("--record-every", type=_positive_int, default=d.record_every,
                   help="record the loss every this many iterations")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``arraycurv`` (subcommands teacher-student, theory, relu-digits, all)."""
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
            "  python -m arraycurv all --out results      # everything"
        ),
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"arraycurv {__version__}")
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    helps = {
        "teacher-student": "Huh Sec. 6: deep linear teacher-student, Figs 4 and 5 (default)",
        "theory": "Huh Figs 1-3 (singular-mode vector fields, map curves) and Table 1",
        "relu-digits": "Huh S.I.3: 5-layer ReLU net from tiny orthogonal init on digits",
        "all": "run theory, teacher-student and relu-digits with their defaults",
    }
    for name in EXPERIMENTS:
        p = sub.add_parser(name, help=helps[name], description=helps[name], formatter_class=_Formatter)
        _common(p, name)
        if name == "teacher-student":
            _teacher_student_options(p)
        elif name == "relu-digits":
            _relu_digits_options(p)
    return parser


def _normalize_argv(argv: Sequence[str]) -> list[str]:
    """Insert the default experiment when none is named (``arraycurv --steps 10``)."""
    argv = list(argv)
    if not argv:
        return [DEFAULT_EXPERIMENT]
    if argv[0] in EXPERIMENTS or argv[0] in ("-h", "--help", "--version"):
        return argv
    return [DEFAULT_EXPERIMENT] + argv


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _resolve_namespace(name: str):
    from .experiments import UsageError

    try:
        return backend.namespace_by_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _blas_threads(n: int):
    """Context limiting BLAS threads to ``n`` (threadpoolctl; a no-op without it)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _run(args) -> int:
    xp = _resolve_namespace(args.backend)
    with _blas_threads(args.threads):
        return _run_experiments(args, xp)


def _run_experiments(args, xp) -> int:
    from .experiments import huh_relu_digits as relu_digits
    from .experiments import huh_teacher_student as teacher_student
    from .experiments import huh_theory as theory_figures

    progress = not args.quiet
    plots = not args.no_plots
    todo = ("theory", "teacher-student", "relu-digits") if args.experiment == "all" else (args.experiment,)
    for name in todo:
        out = os.path.join(args.out, name) if args.experiment == "all" else args.out
        if name == "theory":
            theory_figures.run(out, xp=xp, dtype=args.dtype, seed=args.seed, progress=progress, plots=plots)
        elif name == "teacher-student":
            cfg = (teacher_student.config_from_args(args) if args.experiment != "all"
                   else teacher_student.TeacherStudentConfig(seed=args.seed, dtype=args.dtype))
            teacher_student.run(cfg, out, xp=xp, progress=progress, plots=plots)
        else:
            cfg = (relu_digits.config_from_args(args) if args.experiment != "all"
                   else relu_digits.DigitsConfig(seed=args.seed, dtype=args.dtype))
            relu_digits.run(cfg, out, xp=xp, progress=progress, plots=plots)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``arraycurv`` / ``python -m arraycurv``; returns the exit status.

    Exit status 0 on success, 2 on a usage error (bad option, unavailable backend,
    missing optional package), 130 when interrupted (results of finished rules are kept).
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
