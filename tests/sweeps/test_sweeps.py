"""The sweep engine: cells, seeds, records, resume, locking, executors, aggregation."""

from __future__ import annotations

import json
import math
import os
import statistics

import pytest

from arraycurv import sweeps
from arraycurv.sweeps import Sweep, run_sweep
from tests.sweeps.toy import ToyConfig, run_one


def _strip(entries):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


def test_cells_are_the_product_with_replicate_seeds():
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0, 3.0), "n": (4, 5)}, replicates=3, seed=7)
    cells = sw.cells()
    assert len(cells) == 3 * 2 * 3
    assert len({c.key for c in cells}) == len(cells)
    seeds = sweeps.spawn_seeds(7, 3)
    assert [c.seed for c in cells[:3]] == list(seeds)
    # the seed depends on the replicate only: every grid point sees the same seeds
    by_point = {}
    for c in cells:
        by_point.setdefault(c.values, []).append(c.seed)
    assert all(v == list(seeds) for v in by_point.values())
    assert cells[4].config == ToyConfig(seed=seeds[1], scale=1.0, n=5)


def test_extending_replicates_keeps_earlier_cells():
    a = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0)}, replicates=range(3)).cells()
    b = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0)}, replicates=range(6)).cells()
    assert {c.key for c in a} <= {c.key for c in b}
    assert sweeps.spawn_seeds(0, 3) == sweeps.spawn_seeds(0, 6)[:3]
    assert len(set(sweeps.spawn_seeds(0, 50))) == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid": {"nope": (1,)}}, "grid: expected fields of ToyConfig"),
        ({"grid": {"seed": (1, 2)}}, "seed field"),
        ({"grid": {"scale": ()}}, "at least one value"),
        ({"replicates": 0}, "replicates: expected"),
        ({"replicates": (1, 1)}, "distinct"),
        ({"seed_field": "x"}, "seed_field"),
    ],
)
def test_bad_sweeps_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sweep(ToyConfig(), **kwargs)
    with pytest.raises(TypeError, match="base: expected a dataclass instance"):
        Sweep(ToyConfig)


def test_parse_grid_and_seeds():
    grid = sweeps.parse_grid(["scale=0.5,2", "n=3"], ToyConfig())
    assert grid == (("scale", (0.5, 2.0)), ("n", (3,)))
    assert sweeps.parse_seeds("4") == (0, 1, 2, 3)
    assert sweeps.parse_seeds("2:5") == (2, 3, 4)
    with pytest.raises(ValueError, match="seeds: expected"):
        sweeps.parse_seeds("a:b")
    with pytest.raises(ValueError, match="grid: expected items field=v1"):
        sweeps.parse_grid(["scale"])


def test_serial_records_equal_direct_runs_and_are_never_rewritten(tmp_path):
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, -2.0)}, replicates=2)
    res = run_sweep(run_one, sw, tmp_path, progress=False)
    assert res.computed == 4 and res.skipped == 0 and not res.failed
    for e, c in zip(res.entries, sw.cells()):
        assert e["key"] == c.key and e["ok"]
        assert e["record"] == run_one(c.config)
    files = sorted(os.listdir(tmp_path / "cells"))
    mtimes = {f: os.stat(tmp_path / "cells" / f).st_mtime_ns for f in files}
    again = run_sweep(run_one, sw, tmp_path, progress=False)
    assert again.computed == 0 and again.skipped == 4
    assert {f: os.stat(tmp_path / "cells" / f).st_mtime_ns for f in files} == mtimes
    assert not [f for f in os.listdir(tmp_path / "cells") if f.endswith(".tmp")]
    assert not os.path.exists(tmp_path / ".lock")


def test_failures_are_reported_per_cell_and_retried(tmp_path, capsys):
    sw = Sweep(ToyConfig(fail_above=1.5), grid={"scale": (1.0, 2.0)}, replicates=2)
    res = run_sweep(run_one, sw, tmp_path, progress=False)
    assert res.computed == 4 and len(res.entries) == 2 and len(res.failed) == 2
    assert all("too large" in f["error"] for f in res.failed)
    assert "failed" in capsys.readouterr().err
    assert len([f for f in os.listdir(tmp_path / "cells") if f.endswith(".error.json")]) == 2
    again = run_sweep(run_one, sw, tmp_path, progress=False)  # failed cells are retried, finished ones skipped
    assert again.computed == 2 and again.skipped == 2


def test_killed_sweep_resumes_with_identical_records(tmp_path):
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0, 3.0)}, replicates=2)
    calls = []

    def dies_after_three(config):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(config)
        return run_one(config)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(dies_after_three, sw, tmp_path / "a", progress=False)
    assert not os.path.exists(tmp_path / "a" / ".lock")
    assert len(os.listdir(tmp_path / "a" / "cells")) == 3
    half = tmp_path / "a" / "cells" / ".0123.json.x1y2.tmp"  # as a SIGKILL during a write leaves it
    half.write_text("{")
    resumed = run_sweep(run_one, sw, tmp_path / "a", progress=False)
    assert not half.exists()
    assert resumed.computed == 3 and resumed.skipped == 3
    clean = run_sweep(run_one, sw, tmp_path / "b", progress=False)
    assert _strip(resumed.entries) == _strip(clean.entries)


def test_second_sweep_into_one_directory_refuses(tmp_path):
    sw = Sweep(ToyConfig(), grid={"scale": (1.0,)})
    (tmp_path / ".lock").write_text(str(os.getpid()))  # a live sweep holds it
    with pytest.raises(sweeps.SweepLockedError, match="locked by running process"):
        run_sweep(run_one, sw, tmp_path, progress=False)
    (tmp_path / ".lock").write_text("999999999")  # stale lock of a killed sweep: taken over
    assert run_sweep(run_one, sw, tmp_path, progress=False).computed == 1
    other = Sweep(ToyConfig(n=3), grid={"scale": (1.0,)})
    with pytest.raises(ValueError, match="another sweep"):
        run_sweep(run_one, other, tmp_path, progress=False)
    spec = json.loads((tmp_path / "sweep.json").read_text())
    assert spec["grid"] == [["scale", [1.0]]]


def test_dask_local_cluster_equals_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0)}, replicates=3)
    serial = run_sweep(run_one, sw, tmp_path / "s", progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        par = run_sweep(run_one, sw, tmp_path / "d", executor=client, progress=False)
    assert par.computed == 6
    assert _strip(par.entries) == _strip(serial.entries)


@pytest.mark.slow
def test_dask_worker_processes_and_process_pool_equal_serial(tmp_path):
    pytest.importorskip("distributed")
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0)}, replicates=2)
    serial = run_sweep(run_one, sw, tmp_path / "s", progress=False)
    dask = run_sweep(run_one, sw, tmp_path / "d", executor="dask", workers=2, progress=False)
    pool = run_sweep(run_one, sw, tmp_path / "p", executor="processes", workers=2, progress=False)
    assert _strip(dask.entries) == _strip(serial.entries) == _strip(pool.entries)


def test_bad_executor_and_run_one(tmp_path):
    sw = Sweep(ToyConfig())
    with pytest.raises(ValueError, match="executor: expected"):
        run_sweep(run_one, sw, tmp_path, executor="gpu", progress=False)
    with pytest.raises(TypeError, match="run_one: expected a callable"):
        run_sweep(None, sw, tmp_path, progress=False)
    with pytest.raises(TypeError, match="sweep: expected"):
        run_sweep(run_one, ToyConfig(), tmp_path, progress=False)


def test_aggregate_against_statistics_and_student_t(tmp_path):
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 3.0)}, replicates=5)
    res = run_sweep(run_one, sw, tmp_path, progress=False)
    rows = sweeps.aggregate(res.entries, level=0.9)
    assert [r["values"] for r in rows] == [{"scale": 1.0}, {"scale": 3.0}]
    for r in rows:
        totals = [e["record"]["total"] for e in res.entries if e["values"] == [["scale", r["values"]["scale"]]]]
        s = r["total"]
        assert s["n"] == 5
        assert math.isclose(s["mean"], statistics.fmean(totals), rel_tol=1e-12)
        assert math.isclose(s["sd"], statistics.stdev(totals), rel_tol=1e-12)
        half = 2.131846786326649 * statistics.stdev(totals) / math.sqrt(5)  # t_{0.95, 4}
        assert math.isclose(s["hi"] - s["mean"], half, rel_tol=1e-9)
    # scale equivariance of the toy: every statistic of scale 3 is 3x that of scale 1
    assert math.isclose(rows[1]["total"]["sd"], 3 * rows[0]["total"]["sd"], rel_tol=1e-12)
    curve = sweeps.aggregate(res.entries, ["curve"])[0]["curve"]
    assert len(curve) == 6 and math.isclose(curve[0]["mean"], rows[0]["first"]["mean"], rel_tol=1e-12)
    table = sweeps.format_aggregate(rows, ["total"])
    assert "scale" in table and "±" in table and "(5)" in table
    with pytest.raises(ValueError, match="level: expected"):
        sweeps.aggregate(res.entries, level=1.5)


def test_plot_bands_writes_a_figure(tmp_path):
    pytest.importorskip("matplotlib")
    sw = Sweep(ToyConfig(), grid={"scale": (1.0, 2.0)}, replicates=3)
    res = run_sweep(run_one, sw, tmp_path / "r", progress=False)
    rows = sweeps.aggregate(res.entries, ["curve"])
    path = sweeps.plot_bands(rows, "curve", tmp_path / "bands.png", yscale="linear")
    assert os.path.getsize(path) > 1000
