"""Run a sweep: one record file per cell, resumable, locked, on a choice of executors.

Layout of a sweep directory ``out``::

    out/sweep.json            the sweep (base config, grid, replicates, seed), written once
    out/.lock                 held while a sweep runs here (a second sweep refuses)
    out/cells/<key>.json      one finished cell: its config, grid values, seed and record
    out/cells/<key>.npz       the record's arrays (histories), when it has any
    out/cells/<key>.error.json  a failed cell (retried on the next run)

Every file is written atomically (:func:`arraycurv.results.atomic_write`); the ``.npz``
before the ``.json``, whose presence marks the cell finished. A finished cell's files are
never rewritten: a rerun skips it (resume), so a sweep killed midway and restarted
computes only what was missing and ends with the same records (temporary files of a
killed sweep's unfinished writes are removed when the next one takes the lock). The JSON stays small:
every array of more than one element in a record is stored in the cell's ``.npz`` and
replaced in the JSON by ``{"npz": "<path/of/the/array>"}`` (:func:`load_records` with
``arrays=True`` puts them back).

Executors: ``"serial"`` (in this process), ``"processes"`` (a local process pool), a
``dask.distributed`` ``Client`` (any cluster: ``LocalCluster``, dask-jobqueue, ...), or
``"dask"`` with ``workers=N`` (a ``LocalCluster`` of N single-threaded worker processes,
started and closed here) or ``scheduler=ADDRESS``. Every cell runs with BLAS limited
(threadpoolctl) to ``threads`` threads: by default 1 serially (the policy of
:func:`arraycurv.experiments.run_experiment` and the command line) and
``max(1, cores // workers)`` on N local workers, which avoids oversubscription.
Dask, tqdm and threadpoolctl are optional: ``pip install 'arraycurv[sweeps]'``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..results import atomic_write, jsonable, read_json
from .grid import Cell, Sweep

__all__ = ["SweepLockedError", "SweepResult", "cell_path", "load_arrays", "load_records", "run_cell", "run_sweep"]


class SweepLockedError(RuntimeError):
    """Another sweep holds the directory (its ``.lock`` file names the process)."""


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Outcome of :func:`run_sweep`: every finished cell's entry, and the failures."""

    out: str
    entries: tuple[dict, ...]
    failed: tuple[dict, ...]
    computed: int
    skipped: int


def cell_path(out: str, key: str, *, error: bool = False, arrays: bool = False) -> str:
    """Path of a cell's record (``.json``), error (``.error.json``) or arrays (``.npz``)
    file in sweep directory ``out``."""
    return os.path.join(out, "cells", key + (".error.json" if error else ".npz" if arrays else ".json"))


def _split_arrays(obj: Any, path: str, arrays: dict) -> Any:
    """``obj`` with every array of more than one element moved into ``arrays`` (by its
    dotted path) and replaced by ``{"npz": path}``; the rest through :func:`jsonable`."""
    from .. import backend

    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{path}{k}/", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{path}{i}/", arrays) for i, v in enumerate(obj)]
    if backend.is_array(obj) and not isinstance(obj, (int, float, bool)):
        a = backend.to_numpy(obj)
        if a.size > 1:
            arrays[path[:-1]] = a
            return {"npz": path[:-1]}
    return jsonable(obj)


def _join_arrays(obj: Any, arrays: dict) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"npz"} and obj["npz"] in arrays:
            return arrays[obj["npz"]]
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj


# ----------------------------------------------------------------------------- locking
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(out: str) -> str:
    os.makedirs(out, exist_ok=True)
    lock = os.path.join(out, ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(open(lock).read().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                raise SweepLockedError(
                    f"out: expected a sweep directory no other sweep is using, got {out!r} "
                    f"(locked by running process {pid}; its lock file is {lock})"
                ) from None
            os.unlink(lock)  # stale lock of a killed sweep
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise SweepLockedError(f"out: could not lock {out!r}")


def _spec(sweep: Sweep, name: str) -> dict:
    """What ``sweep.json`` records of a sweep (its replicates aside, which may grow)."""
    return {"experiment": name, "config_type": f"{type(sweep.base).__module__}.{type(sweep.base).__qualname__}",
            "base": dataclasses.asdict(sweep.base), "grid": [[n, list(v)] for n, v in sweep.grid],
            "seed": sweep.seed, "seed_field": sweep.seed_field}


def _write_spec(out: str, sweep: Sweep, name: str) -> None:
    spec = _spec(sweep, name)
    path = os.path.join(out, "sweep.json")
    if os.path.exists(path):
        old = read_json(path)
        same = {k: v for k, v in old.items() if k != "replicates"} == jsonable(spec)
        if not same:
            raise ValueError(
                f"out: expected an empty directory or one holding the same sweep, got {out!r} with another "
                f"sweep (see {path}); choose a new --out"
            )
    atomic_write(path, lambda f: f.write(json.dumps(jsonable(spec), indent=1, sort_keys=True)), mode="w")


# ----------------------------------------------------------------------------- a cell
def run_cell(run_one: Callable[[Any], Any], cell: Cell, blas_threads: int | None = None) -> dict:
    """Run one cell and return its entry (``ok``, record or error, seconds); never raises.

    The record's arrays of more than one element travel in ``entry["arrays"]`` (by
    dotted path; :func:`run_sweep` stores them in the cell's ``.npz``)."""
    from ..experiments.registry import blas_threads as limit

    t0 = time.perf_counter()
    try:
        with limit(blas_threads):
            record = run_one(cell.config)
        arrays: dict = {}
        entry = {"ok": True, "record": _split_arrays(record, "", arrays), "arrays": arrays}
    except Exception as exc:  # a failing cell must not kill the sweep
        entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    entry.update(key=cell.key, index=cell.index, values=[list(v) for v in cell.values], replicate=cell.replicate,
                 seed=cell.seed, config=jsonable(dataclasses.asdict(cell.config)),
                 seconds=time.perf_counter() - t0)
    return entry


# ----------------------------------------------------------------------------- executors
class _Serial:
    def submit(self, fn, *args):
        return (fn, args)

    def as_completed(self, futures):
        for fn, args in futures:
            yield fn(*args)

    def close(self):
        pass


class _Pool:
    def __init__(self, workers: int):
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def as_completed(self, futures):
        for fut in concurrent.futures.as_completed(futures):
            yield fut.result()

    def close(self):
        self.pool.shutdown(cancel_futures=True)


class _Dask:
    def __init__(self, client=None, workers: int | None = None, scheduler: str | None = None):
        try:
            import distributed
        except ImportError as exc:
            raise ImportError("executor: Dask needs dask.distributed: pip install 'arraycurv[sweeps]'") from exc
        self._distributed = distributed
        self.owned = []
        if client is None:
            if scheduler:
                client = distributed.Client(scheduler)
            else:
                cluster = distributed.LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                                   dashboard_address=None)
                self.owned.append(cluster)
                client = distributed.Client(cluster)
            self.owned.insert(0, client)
        self.client = client

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def as_completed(self, futures):
        for fut in self._distributed.as_completed(futures):
            yield fut.result()

    def close(self):
        for obj in self.owned:
            obj.close()


def _executor(executor, workers, scheduler):
    if executor == "serial":
        return _Serial(), 1
    if executor == "processes":
        n = workers or os.cpu_count() or 1
        return _Pool(n), n
    if executor == "dask":
        ex = _Dask(workers=workers, scheduler=scheduler)
        return ex, workers or len(ex.client.scheduler_info().get("workers", {})) or 1
    if hasattr(executor, "submit") and hasattr(executor, "scheduler_info"):  # a dask Client
        return _Dask(client=executor), max(1, len(executor.scheduler_info().get("workers", {})))
    raise ValueError(f"executor: expected 'serial', 'processes', 'dask' or a dask.distributed.Client, got {executor!r}")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="sweep", unit="cell", file=sys.stderr)


# ----------------------------------------------------------------------------- driver
def load_arrays(out: str, key: str) -> dict:
    """The arrays of cell ``key`` of sweep directory ``out`` (path -> NumPy array; empty
    if the record had none)."""
    from ..results import read_npz

    path = cell_path(os.fspath(out), key, arrays=True)
    return read_npz(path) if os.path.exists(path) else {}


def load_records(out: str, *, arrays: bool = False) -> list[dict]:
    """All finished cell entries of sweep directory ``out``, in cell order; with
    ``arrays`` the records get their arrays back from the cells' ``.npz`` files."""
    out = os.fspath(out)
    folder = os.path.join(out, "cells")
    if not os.path.isdir(folder):
        return []
    entries = [read_json(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.endswith(".json") and not f.endswith(".error.json")]
    if arrays:
        for e in entries:
            e["record"] = _join_arrays(e["record"], load_arrays(out, e["key"]))
    return sorted(entries, key=lambda e: (e["index"], e["key"]))


def run_sweep(run_one: Callable[[Any], Any], sweep: Sweep, out: str | os.PathLike, *, executor: Any = "serial",
              workers: int | None = None, scheduler: str | None = None, name: str = "",
              progress: bool = True, threads: int | None = None) -> SweepResult:
    """Run every unfinished cell of ``sweep`` with ``run_one(config) -> record`` into ``out``.

    Parameters
    ----------
    run_one : callable
        A pure, picklable (module-level) function of one configuration returning a
        JSON-able record (e.g. an experiment's ``run_one``).
    sweep : Sweep
        The cells to run.
    out : path
        The sweep directory (created; locked while running; see the module docstring).
    executor : {'serial', 'processes', 'dask'} or dask.distributed.Client
        Where the cells run. ``workers`` sets the pool / LocalCluster size, ``scheduler``
        the address of an existing Dask scheduler (with ``executor='dask'``).
    name : str
        Experiment name recorded in ``sweep.json``.
    progress : bool
        A tqdm progress bar on stderr (when tqdm is installed).
    threads : int, optional
        BLAS threads per cell (threadpoolctl); default 1 serially and
        ``max(1, cores // workers)`` with several workers.

    Returns
    -------
    SweepResult
        Entries of all finished cells (new and earlier ones), the failures of this run,
        and how many cells were computed and skipped.
    """
    if not callable(run_one):
        raise TypeError(f"run_one: expected a callable, got {type(run_one).__name__}")
    if not isinstance(sweep, Sweep):
        raise TypeError(f"sweep: expected an arraycurv.sweeps.Sweep, got {type(sweep).__name__}")
    out = os.fspath(out)
    cells = sweep.cells()
    lock = _acquire(out)
    try:
        _write_spec(out, sweep, name)
        _remove_temporaries(out)
        todo = [c for c in cells if not os.path.exists(cell_path(out, c.key))]
        ex, n = _executor(executor, workers, scheduler) if todo else (_Serial(), 1)
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // n) if n > 1 else 1
        bar = _progress(len(todo), progress and bool(todo))
        failed = []
        try:
            futures = [ex.submit(run_cell, run_one, c, threads) for c in todo]
            for entry in ex.as_completed(futures):
                _store(out, entry, failed)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=len(failed))
        finally:
            ex.close()
            if bar is not None:
                bar.close()
    finally:
        os.unlink(lock)
    return SweepResult(out, tuple(load_records(out)), tuple(failed), len(todo), len(cells) - len(todo))


def _remove_temporaries(out: str) -> None:
    """Remove the temporary files a killed sweep may have left in ``out/cells`` (half
    written records: :func:`~arraycurv.results.atomic_write` names them ``.<name>.*.tmp``);
    safe because this sweep holds the lock."""
    folder = os.path.join(out, "cells")
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith(".") and f.endswith(".tmp"):
                os.unlink(os.path.join(folder, f))


def _store(out: str, entry: dict, failed: list) -> None:
    from ..results import write_npz

    arrays = entry.pop("arrays", None)
    text = json.dumps(entry, indent=1)  # keys in record order (rules in run order in the tables)
    if entry["ok"]:
        if arrays:
            write_npz(cell_path(out, entry["key"], arrays=True), arrays)
        atomic_write(cell_path(out, entry["key"]), lambda f: f.write(text), mode="w")
        err = cell_path(out, entry["key"], error=True)
        if os.path.exists(err):
            os.unlink(err)
    else:
        atomic_write(cell_path(out, entry["key"], error=True), lambda f: f.write(text), mode="w")
        failed.append(entry)
        print(f"sweep: cell {entry['index']} ({entry['values']}, seed {entry['seed']}) failed: {entry['error']}",
              file=sys.stderr)

