"""Benchmark: a 16-cell teacher-student sweep, serial vs 2 local Dask workers, and the
overhead per cell (issue 13), in one run.

The sweep: the teacher-student experiment (Huh Sec. 6) at a small size (width 8, depth 3,
rank 2, all five rules, ``--cell-steps`` iterations), ``eta_bar`` in {0.1, 0.2} x 8 seeds
= 16 cells. Measured in one run:

* ``serial``: :func:`arraycurv.sweeps.run_sweep` in this process (BLAS 1 thread);
* ``dask``: the same sweep on a ``distributed.LocalCluster`` of 2 single-threaded worker
  processes (started before the clock; its start-up time is reported apart), and the
  speed-up serial / dask (aim: >= 1.7x on 2 cores);
* both after a warm-up cell (first-call imports and caches, in this process and on every
  worker), alternately ``--repeats`` times (fresh folders each time), keeping the best
  wall time of each: the machine may be shared, and its load comes in bursts;
* the overhead per cell: a sweep of 16 cells whose ``run_one`` returns at once, serial and
  on the cluster (scheduling, pickling, the atomic JSON write), and the cell time the
  engine adds around ``run_one`` (wall - sum of the cells' own seconds) / cells;
* that both sweeps wrote the same records (``timing`` aside) and the same arrays.

The load average before and after is printed: on a shared machine the speed-up is only
meaningful when the load is below the number of cores.

Usage::

    python benchmarks/bench_sweeps.py [--cell-steps 1500] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from arraycurv.experiments import huh_teacher_student as ts  # noqa: E402
from arraycurv.results import write_json  # noqa: E402
from arraycurv.sweeps import Sweep, load_records, run_sweep  # noqa: E402
from arraycurv.sweeps.run import load_arrays  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Noop:
    seed: int = 0
    x: int = 0


def noop(config):
    return {"x": config.x}


def _same(a, b) -> bool:
    import numpy as np

    ra, rb = load_records(a), load_records(b)
    strip = [{k: v for k, v in e["record"].items() if k != "timing"} for e in ra]
    if strip != [{k: v for k, v in e["record"].items() if k != "timing"} for e in rb]:
        return False
    for e in ra:
        xa, xb = load_arrays(a, e["key"]), load_arrays(b, e["key"])
        if sorted(xa) != sorted(xb) or not all(np.array_equal(xa[k], xb[k]) for k in xa):
            return False
    return True


def _timed_sweep(run_one, sweep, out, **kw):
    t0 = time.perf_counter()
    res = run_sweep(run_one, sweep, out, progress=False, **kw)
    wall = time.perf_counter() - t0
    assert not res.failed and res.computed == len(sweep.cells()), res.failed
    return wall, sum(e["seconds"] for e in res.entries)


def main(argv=None):
    import distributed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell-steps", type=int, default=1500, help="iterations of SGD per cell")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternate serial and Dask this many times; best kept")
    args = ap.parse_args(argv)

    base = ts.TeacherStudentConfig(width=8, depth=3, rank=2, num_test=200, steps=args.cell_steps,
                                   rule_steps=tuple((r, 200) for r in ("ngd", "sqrt_ngd", "ngd_d", "sqrt_ngd_d")),
                                   step_check=50)
    sweep = Sweep(base, grid={"eta_bar": (0.1, 0.2)}, replicates=8, seed=0)
    noop_sweep = Sweep(Noop(), grid={"x": tuple(range(2))}, replicates=8)
    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bench_sweeps_")
    warm = dataclasses.replace(base, steps=20, rule_steps=(), step_check=5)
    ts.run_one(warm)
    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.run(lambda: ts.run_one(warm) and None)  # imports and first-call caches on every worker
        startup = time.perf_counter() - t0
        runs = {"serial": [], "dask": []}
        for i in range(args.repeats):
            runs["serial"].append(_timed_sweep(ts.run_one, sweep, os.path.join(tmp, f"serial{i}")))
            runs["dask"].append(_timed_sweep(ts.run_one, sweep, os.path.join(tmp, f"dask{i}"), executor=client))
        noop_serial, _ = _timed_sweep(noop, noop_sweep, os.path.join(tmp, "noop_serial"))
        noop_dask, _ = _timed_sweep(noop, noop_sweep, os.path.join(tmp, "noop_dask"), executor=client)
    serial, serial_cells = min(runs["serial"])
    dask, dask_cells = min(runs["dask"])
    load1 = os.getloadavg()
    n = len(sweep.cells())
    row = {
        "cells": n, "cell_steps": args.cell_steps, "workers": args.workers, "cores": os.cpu_count(),
        "serial_s": serial, "dask_s": dask, "speedup": serial / dask, "cluster_start_s": startup,
        "mean_cell_s_serial": serial_cells / n, "mean_cell_s_dask": dask_cells / n,
        "engine_overhead_per_cell_ms_serial": 1e3 * (serial - serial_cells) / n,
        "noop_overhead_per_cell_ms_serial": 1e3 * noop_serial / n,
        "noop_overhead_per_cell_ms_dask": 1e3 * noop_dask / n,
        "same_records": _same(os.path.join(tmp, "serial0"), os.path.join(tmp, "dask0")),
        "all_serial_s": [r[0] for r in runs["serial"]], "all_dask_s": [r[0] for r in runs["dask"]],
        "load_before": load0, "load_after": load1,
    }
    print(f"16-cell teacher-student sweep (width 8, depth 3, 5 rules, {args.cell_steps} SGD steps a cell; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after, {os.cpu_count()} cores)")
    print(f"{'what':<44} {'value':>10}")
    for label, key, fmt in [
        ("serial sweep (s)", "serial_s", ".2f"), (f"Dask, {args.workers} local workers (s)", "dask_s", ".2f"),
        ("speed-up serial / Dask (aim >= 1.7)", "speedup", ".2f"), ("cluster start-up (s, not counted)",
                                                                     "cluster_start_s", ".2f"),
        ("mean cell, serial (s)", "mean_cell_s_serial", ".3f"), ("mean cell, on a worker (s)", "mean_cell_s_dask",
                                                                 ".3f"),
        ("engine time around run_one, serial (ms/cell)", "engine_overhead_per_cell_ms_serial", ".1f"),
        ("no-op cell, serial (ms/cell)", "noop_overhead_per_cell_ms_serial", ".1f"),
        ("no-op cell, Dask (ms/cell)", "noop_overhead_per_cell_ms_dask", ".1f"),
    ]:
        print(f"{label:<44} {format(row[key], fmt):>10}")
    print(f"{'same records serial and Dask':<44} {str(row['same_records']):>10}")
    print("every repeat, serial: " + ", ".join(f"{t:.2f}" for t in row["all_serial_s"])
          + " s; Dask: " + ", ".join(f"{t:.2f}" for t in row["all_dask_s"]) + " s")
    out = pathlib.Path(__file__).resolve().parent / "results" / "bench_sweeps.json"
    write_json(out, row)
    return row


if __name__ == "__main__":
    main()
