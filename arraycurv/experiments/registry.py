"""Experiments as data: a frozen config, a pure ``run_one(config) -> record`` and a
``report(records, out_dir)``, registered by name.

An experiment is an :class:`Experiment`:

* ``config_type``: a frozen dataclass derived from :class:`ExperimentConfig` (``seed``,
  ``dtype``, ``backend`` plus the experiment's own settings). Its fields carry their
  command-line help in their metadata (:func:`config_field`), from which
  :mod:`arraycurv.cli` generates the experiment's subcommand; a config is validated
  when it is built (``__post_init__``), so a grid of configs fails before any work.
* ``run_one(config, *, xp=None, progress=False, checkpoint=None) -> record``: pure, it
  writes no files. The record is a dict of plain data and NumPy arrays (JSON-able after
  :func:`arraycurv.results.jsonable`); the same config gives the same record (its
  ``timing`` entry aside). ``checkpoint(partial_record)``, when given, is called after
  every finished unit of work (e.g. a rule) so that a caller can save partial results.
* ``report(records, out_dir, *, progress=True, plots=True) -> summary``: writes the
  figures, ``summary.json``, ``.npz`` arrays and text files atomically
  (:mod:`arraycurv.results`; nothing with ``out_dir=None``), prints the table with
  ``progress``, and returns the summary.

:func:`run_experiment` (and each module's ``run``) is ``run_one`` followed by ``report``,
with a checkpoint that rewrites ``summary.json`` and the arrays after every finished
unit. This is the unit a sweep fans out (seeds x parameters, one ``run_one`` per cell).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import backend

__all__ = [
    # configs and their command-line options
    "COMMON_FIELDS", "ExperimentConfig", "UsageError", "config_dict", "config_field", "config_from_dict",
    "config_options", "parse_option",
    # option parsers
    "float_list", "int_list", "name_list", "nonneg_float", "positive_float", "positive_int", "rule_count",
    "rule_rate",
    # the registry
    "EXPERIMENTS", "Experiment", "get_experiment", "register_experiment", "unregister_experiment",
    # running and reporting
    "bind_namespace", "blas_threads", "check_out_dir", "diverged", "make_run", "report_each", "run_experiment",
    "run_seeds", "show_report", "write_summary",
]


class UsageError(ValueError):
    """A bad setting of an experiment (reported by the command line as a usage error, exit 2)."""


def check_out_dir(path) -> None:
    """Create the output folder ``path`` (with parents); raise :class:`UsageError` if that
    is impossible (e.g. ``path`` is an existing file)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"out: expected a folder that can be created, got {os.fspath(path)!r} ({exc})") from exc


# ------------------------------------------------------------------ option parsers
# Each turns one command-line word into a field value; they raise
# argparse.ArgumentTypeError (argparse then reports "argument --x: <message>", exit 2).
def positive_int(text: str) -> int:
    """Parse an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """Parse a number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """Parse a number > 0."""
    try:
        v = nonneg_float(text)
    except argparse.ArgumentTypeError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def name_list(text: str) -> tuple[str, ...]:
    """Parse ``"a,b,c"`` into ``("a", "b", "c")``."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return names


def _number_list(text: str, kind: type, what: str) -> tuple:
    """Parse ``"a,b,c"`` with ``kind`` (``int``, ``float``) into a non-empty tuple."""
    message = f"expected a comma-separated list of {what}, got {text!r}"
    try:
        vals = tuple(kind(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not vals:
        raise argparse.ArgumentTypeError(message)
    return vals


def float_list(text: str) -> tuple[float, ...]:
    """Parse ``"1,2.5"`` into ``(1.0, 2.5)``."""
    return _number_list(text, float, "numbers")


def int_list(text: str) -> tuple[int, ...]:
    """Parse ``"64,32,10"`` into ``(64, 32, 10)``."""
    return _number_list(text, int, "integers")


def rule_count(text: str) -> tuple[str, int]:
    """Parse ``"sgd=4000"`` into ``("sgd", 4000)`` (a rule's number of iterations)."""
    name, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected RULE=N (e.g. sgd=4000), got {text!r}")
    return name.strip(), positive_int(val)


def rule_rate(text: str) -> tuple[str, float]:
    """Parse ``"sgd=0.01"`` into ``("sgd", 0.01)`` (a rule's learning rate)."""
    name, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected RULE=LR (e.g. sgd=0.01), got {text!r}")
    return name.strip(), positive_float(val)


# ------------------------------------------------------------------------ configs
def config_field(default: Any, help: str, *, option: str | None = None, parse: Callable[[str], Any] | None = None,
                 metavar: str | None = None, choices: tuple | None = None, repeat: bool = False):
    """A config field with its command-line option described in its metadata.

    Parameters
    ----------
    default : object
        Default value (immutable: numbers, strings, tuples).
    help : str
        Help text of the option (and documentation of the field).
    option : str, optional
        Option name; default ``--<field-name>`` with ``_`` -> ``-``.
    parse : callable, optional
        Parser of one command-line word (e.g. :func:`positive_int`); default from the
        default's type (``int``, ``float``, ``str``; bool fields become flags).
    metavar, choices : optional
        As in :meth:`argparse.ArgumentParser.add_argument`.
    repeat : bool
        A repeatable option whose ``(name, value)`` pairs (parsed by ``parse``) update the
        default pairs (e.g. ``--lr-rule sgd=0.1 --lr-rule ngd=0.2``).
    """
    meta = {"help": help, "option": option, "parse": parse, "metavar": metavar, "choices": choices,
            "repeat": repeat}
    return dataclasses.field(default=default, metadata=meta)


#: Fields every config has; the command line shows them among the common options.
COMMON_FIELDS = ("seed", "dtype", "backend")


def _as_tuple(value: Any) -> Any:
    """Lists (from JSON) and mappings of pairs back to the tuples a frozen config holds."""
    if isinstance(value, Mapping):
        return tuple((k, _as_tuple(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


@dataclass(frozen=True)
class ExperimentConfig:
    """Base of the experiment configs: the settings every experiment has.

    Subclasses are frozen dataclasses whose fields all have defaults (made with
    :func:`config_field`) and extend :meth:`check`, which runs when a config is built
    (also by :func:`dataclasses.replace`) and raises :class:`UsageError`.

    Attributes
    ----------
    seed : int
        Seed of data, initial weights and minibatch order.
    dtype : str
        ``"float64"`` or ``"float32"``.
    backend : str
        Name of the array namespace (:data:`arraycurv.backend.BACKENDS`); whether it is
        available is checked when the experiment runs, not here.
    """

    seed: int = config_field(0, "random seed (data and initial weights)", parse=int)
    dtype: str = config_field("float64", "floating-point precision", choices=("float64", "float32"))
    backend: str = config_field("numpy", "array namespace the computation runs in (cupy = GPU)",
                                choices=backend.BACKENDS)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, tuple) and isinstance(value, (list, tuple, Mapping)):
                object.__setattr__(self, f.name, _as_tuple(value))
        self.check()

    def check(self) -> None:
        """Raise :class:`UsageError` for settings the experiment cannot run: here the
        common fields, and every field parsed by :func:`positive_int`,
        :func:`positive_float` or :func:`nonneg_float` (also when set from Python)."""
        for f in dataclasses.fields(self):
            _check_range(f.name, getattr(self, f.name), f.metadata.get("parse"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"seed: expected an integer, got {self.seed!r}")
        if self.dtype not in ("float64", "float32"):
            raise UsageError(f"dtype: expected 'float64' or 'float32', got {self.dtype!r}")
        if self.backend not in backend.BACKENDS:
            raise UsageError(f"backend: expected one of {backend.BACKENDS}, got {self.backend!r}")


def _check_range(name: str, value: Any, parse) -> None:
    """The range checks of the option parsers, for values set from Python."""
    import math

    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if parse is positive_int and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    if parse is positive_float and not (number and 0 < value < math.inf):
        raise UsageError(f"{name}: expected a number > 0, got {value!r}")
    if parse is nonneg_float and not (number and 0 <= value < math.inf):
        raise UsageError(f"{name}: expected a number >= 0, got {value!r}")
    pairs = parse in (rule_rate, rule_count)
    if pairs and not (isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value)):
        raise UsageError(f"{name}: expected (rule, value) pairs, got {value!r}")
    for rule, v in value if pairs else ():
        if parse is rule_count and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise UsageError(f"{name}: expected a positive integer for {rule!r}, got {v!r}")
        if parse is rule_rate and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf):
            raise UsageError(f"{name}: expected a number > 0 for {rule!r}, got {v!r}")


def config_dict(config: ExperimentConfig) -> dict:
    """The config as plain JSON data: tuples become lists, tuples of ``(name, value)``
    pairs become dicts; :func:`config_from_dict` inverts it."""
    from ..results import jsonable

    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        pairs = (isinstance(value, tuple) and value
                 and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value))
        out[f.name] = jsonable(dict(value) if pairs else value)
    return out


def config_from_dict(config_type: type, data: Mapping[str, Any]) -> ExperimentConfig:
    """Build a ``config_type`` from :func:`config_dict` output (missing keys keep their
    defaults; unknown keys raise :class:`UsageError`)."""
    names = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"config: expected fields of {config_type.__name__} {sorted(names)}, got {unknown}")
    return config_type(**dict(data))


def config_options(config_type: type) -> list[dict]:
    """The command-line options of a config type, one dict per field: ``name`` (the
    field), ``option``, ``default``, ``help``, ``parse``, ``metavar``, ``choices``,
    ``repeat``, ``flag`` (bool field), ``common`` (in :data:`COMMON_FIELDS`)."""
    out = []
    for f in dataclasses.fields(config_type):
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"{config_type.__name__}.{f.name}: expected a field made by config_field (with a help)")
        parse = meta.get("parse")
        flag = isinstance(f.default, bool)
        if parse is None and not flag and meta.get("choices") is None:
            parse = type(f.default) if isinstance(f.default, (int, float, str)) else None
            if parse is None:
                raise TypeError(f"{config_type.__name__}.{f.name}: expected a parse= for a {type(f.default).__name__}")
        out.append({"name": f.name, "option": meta.get("option") or "--" + f.name.replace("_", "-"),
                    "default": f.default, "help": meta["help"], "parse": parse, "metavar": meta.get("metavar"),
                    "choices": meta.get("choices"), "repeat": bool(meta.get("repeat")), "flag": flag,
                    "common": f.name in COMMON_FIELDS})
    return out


def parse_option(config_type: type, name: str, text: str) -> Any:
    """Parse the command-line word ``text`` as the value of field ``name`` of
    ``config_type`` (the parser its option uses); raises :class:`UsageError`."""
    spec = next((o for o in config_options(config_type) if o["name"] == name), None)
    if spec is None:
        raise UsageError(f"name: expected a field of {config_type.__name__}, got {name!r}")
    try:
        if spec["flag"]:
            if text.lower() not in ("true", "false", "1", "0"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() in ("true", "1")
        value = spec["parse"](text) if spec["parse"] is not None else text
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{name}: {exc}") from None
    if spec["choices"] is not None and value not in spec["choices"]:
        raise UsageError(f"{name}: expected one of {spec['choices']}, got {text!r}")
    return value


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes
    ----------
    name : str
        Registry key and subcommand (``"teacher-student"``).
    config_type : type
        Its frozen config dataclass (an :class:`ExperimentConfig`).
    run_one : callable
        ``run_one(config, *, xp=None, progress=False, checkpoint=None) -> record`` (pure).
    report : callable
        ``report(records, out_dir, *, progress=True, plots=True) -> summary``.
    help : str
        One line for the command line's list of experiments.
    paper : str
        What it reproduces (``"Huh (2020) Sec. 6, Figs 4-5"``).
    default_seeds : int
        Seeds of its command-line run when ``--seeds`` is not given (several where the
        time budget allows: the spread over seeds is part of the result).
    metrics : tuple of str
        Dotted paths into a record of the scalars a sweep's table shows; one ``*``
        matches a path segment, whose value becomes a row label (``"rules.*.min_test_loss"``:
        one row per rule). Empty: every scalar of the record.
    curves : tuple of (str, str)
        ``(curve, x)`` dotted-path patterns of the curves a sweep draws with confidence
        bands (``("histories.*.excess_loss", "histories.*.steps")``); ``x`` may be ``""``.
    """

    name: str
    config_type: type
    run_one: Callable[..., dict]
    report: Callable[..., dict]
    help: str
    paper: str
    default_seeds: int = 1
    metrics: tuple = ()
    curves: tuple = ()

    def run(self, config: ExperimentConfig | None = None, out_dir: str | os.PathLike | None = None, *, xp=None,
            progress: bool = True, plots: bool = True, seeds=1, threads: int | None = 1) -> dict:
        """:func:`run_experiment` of this experiment."""
        return run_experiment(self, config, out_dir, xp=xp, progress=progress, plots=plots, seeds=seeds,
                              threads=threads)


_REGISTRY: dict[str, Experiment] = {}


#: Modules of the built-in experiments, in the order ``arraycurv all`` runs them.
_BUILTIN = {"theory": "huh_theory", "teacher-student": "huh_teacher_student", "relu-digits": "huh_relu_digits"}
_BUILTIN["class-subspace"] = "tuddenham"  # Tuddenham et al. 2020 Fig. 2
_BUILTIN["bernacchia"] = "bernacchia_fig1"  # Bernacchia et al. 2018 Fig. 1
_BUILTIN["grouped-newton"] = "grouped_newton"  # Wolinski 2023 (NewtonSummary)


def _load_builtins() -> tuple[str, ...]:
    """Import the built-in experiment modules (they register themselves); returns the
    registered names, the built-ins first in :data:`_BUILTIN` order, then the others in
    registration order."""
    import importlib

    for name, module in _BUILTIN.items():
        if name not in _REGISTRY:
            importlib.import_module(f"{__package__}.{module}")
    return tuple(n for n in _BUILTIN if n in _REGISTRY) + tuple(n for n in _REGISTRY if n not in _BUILTIN)


def register_experiment(experiment: Experiment) -> Experiment:
    """Add ``experiment`` under its name (replacing one of the same name); returns it.

    Its config type must be an :class:`ExperimentConfig` dataclass whose fields all come
    from :func:`config_field`, so that the command line can offer them.
    """
    if not isinstance(experiment, Experiment):
        raise TypeError(f"experiment: expected an Experiment, got {type(experiment).__name__}")
    if not isinstance(experiment.name, str) or not experiment.name or experiment.name.startswith("-"):
        raise ValueError(f"experiment.name: expected a non-empty name not starting with '-', got {experiment.name!r}")
    ct = experiment.config_type
    if not (isinstance(ct, type) and issubclass(ct, ExperimentConfig)):
        raise TypeError(f"experiment.config_type: expected an ExperimentConfig subclass, got {ct!r}")
    config_options(ct)  # every field documented and parseable
    if not (callable(experiment.run_one) and callable(experiment.report)):
        raise TypeError("experiment.run_one, experiment.report: expected callables")
    _REGISTRY[experiment.name] = experiment
    return experiment


def unregister_experiment(name: str) -> Experiment:
    """Remove and return the experiment ``name`` (e.g. one registered by a test)."""
    names = _load_builtins()
    if name not in _REGISTRY:
        raise UsageError(f"experiment: expected one of {names}, got {name!r}")
    return _REGISTRY.pop(name)


def get_experiment(name: str) -> Experiment:
    """The registered :class:`Experiment` called ``name``; :class:`UsageError` if none."""
    names = _load_builtins()
    if name not in _REGISTRY:
        raise UsageError(f"experiment: expected one of {names}, got {name!r}")
    return _REGISTRY[name]


class _Experiments(Mapping):
    """Read-only live view name -> :class:`Experiment` of the registry (built-ins first)."""

    def __getitem__(self, name: str) -> Experiment:
        _load_builtins()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_load_builtins())

    def __len__(self) -> int:
        _load_builtins()
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"EXPERIMENTS({', '.join(self)})"


#: The registry: name -> :class:`Experiment` (a live, read-only mapping).
EXPERIMENTS = _Experiments()


def blas_threads(threads: int | None):
    """Context limiting BLAS (and PyTorch's pool) to ``threads`` threads: the policy of
    :func:`run_experiment`, the command line and the sweeps, i.e.
    :func:`arraycurv.backend.blas_threads` with the error of a bad command-line value;
    ``None`` leaves the thread pools alone."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads: expected a positive integer or None, got {threads!r}")
    return backend.blas_threads(threads)


def diverged(exc: BaseException) -> bool:
    """Whether an error of a training run means the run diverged (recorded, not raised):
    a :class:`~arraycurv.dynamics.DivergenceError` (the divergence policy of ``train``) or
    a non-finite quantity met on the way (an error whose message says so)."""
    from ..dynamics.training import DivergenceError

    return isinstance(exc, DivergenceError) or "finite" in str(exc) or "diverge" in str(exc).lower()


def run_seeds(config: ExperimentConfig, seeds) -> list[ExperimentConfig]:
    """The configs of a run over several seeds: ``seeds`` = n gives ``config.seed``,
    ``config.seed + 1``, ..., ``config.seed + n - 1``; a sequence gives the offsets
    (``range(2, 5)``: seeds ``config.seed + 2``, ``+ 3``, ``+ 4``)."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, range, tuple, list)):
        raise UsageError(f"seeds: expected a positive integer or a sequence of offsets, got {seeds!r}")
    offsets = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    if not offsets or len(set(offsets)) != len(offsets) or not all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets):
        raise UsageError(f"seeds: expected at least one distinct offset >= 0, got {seeds!r}")
    if offsets == (0,):
        return [config]
    return [dataclasses.replace(config, seed=config.seed + o) for o in offsets]


def run_experiment(experiment: Experiment | str, config: ExperimentConfig | None = None,
                   out_dir: str | os.PathLike | None = None, *, xp=None, progress: bool = True,
                   plots: bool = True, seeds=1, threads: int | None = 1) -> dict:
    """``report([run_one(c) for c in run_seeds(config, seeds)], out_dir)``, saving partial
    results as they come, with BLAS limited to ``threads`` threads.

    Parameters
    ----------
    experiment : Experiment or str
        The experiment or its registered name.
    config : ExperimentConfig, optional
        Default: ``experiment.config_type()``.
    out_dir : path or None
        Output folder, created first (None: nothing is written). After every finished
        unit of work (a rule, a (rule, gain) pair) ``summary.json`` and the arrays are
        rewritten atomically, so an interrupted run keeps what it finished.
    xp : namespace, optional
        Array namespace; default the one named by ``config.backend``.
    progress : bool
        Progress lines on stderr and the table on stdout.
    plots : bool
        Draw the figures (needs matplotlib).
    seeds : int or sequence of int
        Seeds of the run (:func:`run_seeds`): 1 (default) runs ``config`` alone; n > 1
        runs ``config.seed, ..., config.seed + n - 1`` one after the other, and the report
        shows their spread (the command line's ``--seeds``).
    threads : int or None
        BLAS threads while it runs (threadpoolctl; default 1, as on the command line:
        the matrices here are small and more threads mostly add overhead, and a
        multi-threaded BLAS on a busy machine is many times slower); None leaves BLAS
        as it is.

    Returns
    -------
    dict
        The summary returned by ``experiment.report``.
    """
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    config = exp.config_type() if config is None else config
    if not isinstance(config, exp.config_type):
        raise TypeError(f"config: expected a {exp.config_type.__name__}, got {type(config).__name__}")
    configs = run_seeds(config, seeds)
    limiter = blas_threads(threads)
    if out_dir is not None:
        check_out_dir(out_dir)
    done: list = []

    def checkpoint(partial):
        exp.report(done + [partial], out_dir, progress=False, plots=False)

    with limiter:
        for i, cfg in enumerate(configs):
            if progress and len(configs) > 1:
                print(f"[{exp.name}] seed {cfg.seed} ({i + 1}/{len(configs)})", file=sys.stderr, flush=True)
            done.append(exp.run_one(cfg, xp=xp, progress=progress,
                                    checkpoint=None if out_dir is None else checkpoint))
        return exp.report(done, out_dir, progress=progress, plots=plots)


def bind_namespace(config: ExperimentConfig, xp=None):
    """``(config, xp)`` for a run: without ``xp`` the namespace named by ``config.backend``
    (:class:`UsageError` if it is not available here); with ``xp`` the config's
    ``backend`` set to its name (when it is one of :data:`arraycurv.backend.BACKENDS`)."""
    if xp is None:
        try:
            return config, backend.namespace_by_name(config.backend)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    name = backend.namespace_name(xp)
    if name in backend.BACKENDS and name != config.backend:
        config = dataclasses.replace(config, backend=name)
    return config, xp


def report_each(report_one: Callable[..., dict], records, out_dir, *, progress: bool = True,
                plots: bool = True) -> dict:
    """Report a sequence of records with ``report_one(record, out_dir, ...)``.

    One record is reported into ``out_dir`` itself. Several (e.g. one per seed) go into
    ``out_dir/0``, ``out_dir/1``, ... and ``out_dir/summary.json`` lists their summaries
    under ``"records"`` (statistics over seeds are the sweep engine's aggregate step).
    """
    from ..results import write_json

    records = list(records)
    if not records:
        raise ValueError("records: expected at least one record, got none")
    if len(records) == 1:
        return report_one(records[0], out_dir, progress=progress, plots=plots)
    subs = [report_one(r, None if out_dir is None else os.path.join(out_dir, str(i)), progress=progress,
                       plots=plots) for i, r in enumerate(records)]
    summary = {"experiment": records[0].get("experiment"), "paper": records[0].get("paper"), "records": subs}
    if out_dir is not None:
        summary["files"] = [str(i) for i in range(len(subs))] + ["summary.json"]
        write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def write_summary(summary: dict, out_dir, files) -> None:
    """The last step of a report into ``out_dir``: ``summary["files"] = files`` and
    ``out_dir/summary.json`` written atomically (:func:`arraycurv.results.write_json`)."""
    from ..results import write_json

    summary["files"] = files
    write_json(os.path.join(out_dir, "summary.json"), summary)


def show_report(summary: dict, out_dir, text=None, *, progress: bool = True, wrote: bool = True) -> dict:
    """The end of a report: with ``progress``, print ``text`` (a report's table, or a
    callable making it from ``summary``; nothing if None), then, with ``wrote`` and an
    ``out_dir``, the line naming the files written there (``summary["files"]``).
    Returns ``summary``."""
    if progress:
        if text is not None:
            print(text(summary) if callable(text) else text)
        if wrote and out_dir is not None:
            print(f"wrote {', '.join(summary['files'])} to {out_dir}")
    return summary


def make_run(experiment: Experiment, default_out_dir: str | None, doc: str) -> Callable[..., dict]:
    """A module's ``run(config=None, out_dir=default_out_dir, *, xp=None, progress=True,
    plots=True) -> summary``: :func:`run_experiment` of ``experiment``, documented by ``doc``."""

    def run(config: ExperimentConfig | None = None, out_dir: str | os.PathLike | None = default_out_dir, *,
            xp=None, progress: bool = True, plots: bool = True) -> dict:
        return run_experiment(experiment, config, out_dir, xp=xp, progress=progress, plots=plots)

    run.__doc__ = doc
    run.__module__ = experiment.run_one.__module__
    return run
