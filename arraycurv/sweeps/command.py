"""``arraycurv sweep EXPERIMENT``: a sweep of a registered experiment from the command line.

Everything is validated before any work starts (grid fields and values parsed as their
options would, every cell's config built and checked, the executor, the backend and the
output folder), then the cells run (:func:`arraycurv.sweeps.run_sweep`: resumable,
locked, one atomic record per cell) and the aggregate over seeds is printed and written:

* ``out/summary.json``: the sweep, per grid point the statistics of the experiment's
  table metrics (:attr:`arraycurv.experiments.Experiment.metrics`) and, where records
  carry ``claims``, the number of seeds supporting each claim;
* ``out/table.txt``: the printed table (``mean ± sd [95% CI] (n)``);
* ``out/bands_<curve>.png``: the experiment's main curves
  (:attr:`~arraycurv.experiments.Experiment.curves`), mean and 95% band per grid point.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .grid import Sweep

__all__ = ["claim_counts", "grid_from_options", "resolve_executor", "sweep_experiment"]


def _field_name(config_type: type, name: str) -> str:
    """A grid name: a field of ``config_type`` or its option without the dashes
    (``lr`` for ``eta_bar`` of the teacher-student, ``init-scale``)."""
    from ..experiments.registry import UsageError, config_options

    opts = config_options(config_type)
    for o in opts:
        if name in (o["name"], o["option"].lstrip("-"), o["option"].lstrip("-").replace("-", "_")):
            return o["name"]
    names = sorted({o["name"] for o in opts} | {o["option"].lstrip("-") for o in opts})
    raise UsageError(f"grid: expected fields of {config_type.__name__} ({', '.join(names)}), got {name!r}")


def grid_from_options(config_type: type, items: Sequence[str], base: Any = None) -> tuple[tuple[str, tuple], ...]:
    """Parse ``--grid`` items ``FIELD=V1,V2,...`` with each field's option parser
    (:func:`arraycurv.experiments.registry.parse_option`).

    A value of a list field takes its entries joined by ``+`` (``rules=sgd+ngd,sqrt_ngd``:
    two cells); a value of a repeatable ``NAME=VALUE`` field is one or more pairs joined
    by ``+`` that update the base config's pairs (``lr-rule=sgd=0.05,sgd=0.1``).
    Raises :class:`~arraycurv.experiments.UsageError`.
    """
    from ..experiments.registry import UsageError, config_options, parse_option

    specs = {o["name"]: o for o in config_options(config_type)}
    out, seen = [], set()
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not text:
            raise UsageError(f"grid: expected FIELD=V1,V2,..., got {item!r}")
        field = _field_name(config_type, name.strip())
        if field == "seed":
            raise UsageError("grid: the seed is set by --seeds (replicates), not by --grid")
        if field in seen:
            raise UsageError(f"grid: expected each field once, got {field!r} twice")
        seen.add(field)
        spec = specs[field]
        values = []
        for word in text.split(","):
            if spec["repeat"]:
                pairs = dict(getattr(base, field, spec["default"]) if base is not None else spec["default"])
                pairs.update(parse_option(config_type, field, p) for p in word.split("+"))
                values.append(tuple(pairs.items()))
            elif isinstance(spec["default"], tuple):
                values.append(parse_option(config_type, field, word.replace("+", ",")))
            else:
                values.append(parse_option(config_type, field, word))
        out.append((field, tuple(values)))
    return tuple(out)


def resolve_executor(executor: str | None, workers: int | None, scheduler: str | None) -> str:
    """The executor of ``--executor`` / ``--workers`` / ``--scheduler`` (default: Dask
    when ``--workers`` or ``--scheduler`` is given, else serial), checked and with its
    packages importable; raises :class:`~arraycurv.experiments.UsageError`."""
    from ..experiments.registry import UsageError

    if workers is not None and scheduler is not None:
        raise UsageError("workers: expected --workers N (a new local cluster) or --scheduler ADDRESS, not both")
    if executor is None:
        executor = "dask" if (workers is not None or scheduler is not None) else "serial"
    if executor not in ("serial", "processes", "dask"):
        raise UsageError(f"executor: expected serial, processes or dask, got {executor!r}")
    if scheduler is not None and executor != "dask":
        raise UsageError(f"scheduler: expected --executor dask with --scheduler, got --executor {executor}")
    if workers is not None and executor == "serial":
        raise UsageError("workers: expected --executor processes or dask with --workers, got --executor serial")
    if executor == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise UsageError("executor: dask needs dask.distributed: pip install 'arraycurv[sweeps]'") from exc
    return executor


def _check_out(out: str, sweep: Sweep, name: str) -> None:
    """Refuse (before any work) an output folder that is a file, is locked by a running
    sweep, or holds another sweep."""
    from ..experiments.registry import UsageError
    from ..results import jsonable, read_json
    from .run import _pid_alive, _spec

    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"out: expected a folder, got the file {out!r}")
    lock = os.path.join(out, ".lock")
    if os.path.exists(lock):
        try:
            pid = int(open(lock).read().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            raise UsageError(f"out: expected a folder no other sweep is using, got {out!r} (locked by running "
                             f"process {pid})")
    path = os.path.join(out, "sweep.json")
    old = read_json(path) if os.path.exists(path) else None
    if old is not None and {k: v for k, v in old.items() if k != "replicates"} != jsonable(_spec(sweep, name)):
        raise UsageError(f"out: expected an empty folder or one holding the same sweep, got {out!r} with another "
                         f"sweep (see {path}); choose a new --out")


def claim_counts(entries: Sequence[dict]) -> list[dict]:
    """Per grid point, per claim of the records' ``claims`` (booleans or None): the
    number of seeds supporting it and of seeds where it could be checked."""
    groups: dict[str, dict] = {}
    values: dict[str, dict] = {}
    for e in entries:
        key = json.dumps(e["values"], sort_keys=True, default=repr)
        values.setdefault(key, {n: v for n, v in e["values"]})
        counts = groups.setdefault(key, {})
        for claim, value in (e["record"].get("claims") or {}).items():
            c = counts.setdefault(claim, {"supported": 0, "n": 0})
            if isinstance(value, bool):
                c["supported"] += int(value)
                c["n"] += 1
    checked = {c for v in groups.values() for c, n in v.items() if n["n"]}  # claims some seed could check
    out = [{"values": values[k], "claims": {c: n for c, n in v.items() if c in checked}} for k, v in groups.items()]
    return [r for r in out if r["claims"]]


def _claims_table(counts: list[dict]) -> str:
    from ..results import format_table

    if not counts:
        return ""
    grid = list(counts[0]["values"])
    names = list(dict.fromkeys(c for row in counts for c in row["claims"]))
    rows = [dict(r["values"], **{c: f"{v['supported']}/{v['n']}" for c, v in r["claims"].items()}) for r in counts]
    return "claims (seeds supporting / seeds checked):\n" + format_table(rows, grid + names)


def _report(exp, sweep: Sweep, out: str, result, *, progress: bool, plots: bool) -> dict:
    """Aggregate the finished cells of this sweep; print and write table, summary, figures."""
    from ..results import write_json, write_text
    from .run import load_records
    from .stats import aggregate, format_aggregate, metric_table, plot_bands

    keys = {c.key for c in sweep.cells()}
    entries = [e for e in load_records(out, arrays=bool(plots and exp.curves)) if e["key"] in keys]
    metrics = list(exp.metrics)
    rows = aggregate(entries, metrics or None)
    if metrics:
        table = metric_table(rows, metrics)
    else:
        names = [k for k in (rows[0] if rows else {}) if k not in ("values", "replicates")
                 and not k.startswith("config.")]  # every scalar of the record but its config
        table = format_aggregate(rows, names)
    claims = claim_counts(entries)
    text = f"{exp.name}: {len(entries)} finished cells of {len(keys)} (mean ± sd [95% CI] (n seeds))\n{table}"
    if claims:
        text += "\n" + _claims_table(claims)
    files = ["summary.json", "table.txt"]
    for i, (curve, x) in enumerate(exp.curves if plots and entries else ()):
        crow = aggregate(entries, [curve] + ([x] if x else []))
        name = f"bands_{curve.split('.')[-1] or i}.png"
        plot_bands(crow, curve, os.path.join(out, name), x=x or None, xlabel="step" if x else "record",
                   xscale="symlog" if x else "linear")
        files.append(name)
    for f in os.listdir(out):  # figures of an earlier report that this one did not draw
        if f.startswith("bands_") and f.endswith(".png") and f not in files:
            os.unlink(os.path.join(out, f))
    summary = {"experiment": exp.name, "cells": len(keys), "finished": len(entries), "failed": len(result.failed),
               "computed": result.computed, "skipped": result.skipped, "grid": [[n, list(v)] for n, v in sweep.grid],
               "replicates": list(sweep.replicates), "rows": rows, "claims": claims, "files": files}
    write_text(os.path.join(out, "table.txt"), text + "\n")
    write_json(os.path.join(out, "summary.json"), summary)
    if progress:
        print(text)
        print(f"wrote {', '.join(files)} and cells/ to {out}")
    return summary


def sweep_experiment(name: str, base, grid_items: Sequence[str], seeds: Sequence[int], out: str, *,
                     executor: str | None = None, workers: int | None = None, scheduler: str | None = None,
                     threads: int | None = None, progress: bool = True, plots: bool = True) -> dict:
    """Sweep the registered experiment ``name``: seeds x grid over the config ``base``.

    Parameters
    ----------
    name : str
        Registered experiment.
    base : ExperimentConfig
        The config every cell starts from; ``base.seed`` is the root of the spawned
        per-replicate seeds.
    grid_items : sequence of str
        ``FIELD=V1,V2,...`` (:func:`grid_from_options`).
    seeds : sequence of int
        Replicate indices (``range(10)``; :func:`arraycurv.sweeps.parse_seeds`).
    out : path
        The sweep folder.
    executor, workers, scheduler, threads
        As in :func:`arraycurv.sweeps.run_sweep` (:func:`resolve_executor`).
    progress, plots : bool
        Progress bar and table; band figures.

    Returns
    -------
    dict
        The summary written to ``out/summary.json``; ``failed`` counts failed cells.

    Raises
    ------
    UsageError
        For anything invalid, before any cell runs.
    """
    from .. import backend
    from ..experiments.registry import UsageError, get_experiment
    from .run import SweepLockedError, run_sweep

    exp = get_experiment(name)
    out = os.fspath(out)
    grid = grid_from_options(exp.config_type, grid_items, base)
    try:
        sweep = Sweep(base, grid, replicates=tuple(seeds), seed=base.seed)
        cells = sweep.cells()  # builds (and checks) every cell's config
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    executor = resolve_executor(executor, workers, scheduler)
    for b in dict.fromkeys(c.config.backend for c in cells):
        try:
            backend.namespace_by_name(b)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    _check_out(out, sweep, exp.name)
    if progress:
        where = executor + (f", {workers} workers" if workers else "") + (f", {scheduler}" if scheduler else "")
        print(f"[sweep] {exp.name}: {len(cells)} cells ({len(cells) // len(sweep.replicates)} grid points x "
              f"{len(sweep.replicates)} seeds) on {where} into {out}", file=sys.stderr, flush=True)
    try:
        result = run_sweep(exp.run_one, sweep, out, executor=executor, workers=workers, scheduler=scheduler,
                           name=exp.name, progress=progress, threads=threads)
    except SweepLockedError as exc:  # another sweep took the folder since _check_out
        raise UsageError(str(exc)) from exc
    return _report(exp, sweep, out, result, progress=progress, plots=plots)
