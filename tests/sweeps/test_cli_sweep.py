"""``arraycurv sweep`` end to end on a tiny teacher-student: serial and a real
``distributed.LocalCluster`` of 2 workers give the same cells; a sweep killed midway
(SIGKILL) and restarted recomputes only its unfinished cells and ends with the records of
an uninterrupted sweep; a second sweep into a folder in use refuses; bad options exit 2
before any work and write nothing; the aggregate table, summary and band figure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arraycurv import cli
from arraycurv.results import read_json
from arraycurv.sweeps import load_records
from arraycurv.sweeps.run import load_arrays

ROOT = Path(__file__).resolve().parents[2]

#: A tiny teacher-student (about 0.1 s a cell): three rules, width 4, 40 steps.
TINY = ["--width", "4", "--rank", "1", "--depth", "2", "--steps", "40", "--num-test", "20",
        "--rules", "sgd,ngd,sqrt_ngd", "--step-check", "10"]


def _sweep(out, *extra, grid=("lr=0.1,0.2",), seeds="2"):
    return ["sweep", "teacher-student", *TINY, "--seeds", seeds, "--grid", *grid, "--out", str(out), "--quiet",
            *extra]


def _cells(out):
    """(entry without wall times, record without timing, key) of every finished cell."""
    return [({k: v for k, v in e.items() if k not in ("seconds", "record")},
             {k: v for k, v in e["record"].items() if k != "timing"}, e["key"]) for e in load_records(out)]


def _assert_same_cells(a, b):
    cells_a, cells_b = _cells(a), _cells(b)
    assert cells_a and [c[:2] for c in cells_a] == [c[:2] for c in cells_b]
    for _, _, key in cells_a:
        arr_a, arr_b = load_arrays(a, key), load_arrays(b, key)
        assert sorted(arr_a) == sorted(arr_b) and arr_a
        for name in arr_a:
            np.testing.assert_array_equal(arr_a[name], arr_b[name], err_msg=name)


def test_cli_sweep_serial_equals_local_cluster_cell_by_cell(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    assert cli.main(_sweep(tmp_path / "serial")) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert cli.main(_sweep(tmp_path / "dask", "--scheduler", cluster.scheduler_address)) == 0
    _assert_same_cells(tmp_path / "serial", tmp_path / "dask")
    assert len(os.listdir(tmp_path / "dask" / "cells")) == 2 * 2 * 2  # json + npz per cell
    # the per-cell JSON stays small: the histories are in the cell's .npz
    for f in (tmp_path / "dask" / "cells").glob("*.json"):
        assert f.stat().st_size < 20_000
    s = read_json(tmp_path / "dask" / "summary.json")
    assert (s["cells"], s["finished"], s["failed"], s["computed"]) == (4, 4, 0, 4)
    table = (tmp_path / "dask" / "table.txt").read_text()
    assert "min_excess_loss" in table and "±" in table and "(2)" in table and "claims" in table
    assert (tmp_path / "dask" / "bands_excess_loss.png").stat().st_size > 10_000
    capsys.readouterr()


def test_cli_sweep_prints_the_table_and_counts_claims(tmp_path, capsys):
    argv = _sweep(tmp_path, "--no-plots", grid=("q=2,3",), seeds="3")
    argv.remove("--quiet")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("teacher-student: 6 finished cells of 6") and out.rstrip().endswith("to " + str(tmp_path))
    assert out.split("\nwrote ")[0].strip() == (tmp_path / "table.txt").read_text().strip()
    assert "min_excess_loss" in out and "qngd_q2" in out and "qngd_q3" in out
    s = read_json(tmp_path / "summary.json")
    assert [r["values"] for r in s["rows"]] == [{"q": [2.0]}, {"q": [3.0]}]
    entries = load_records(tmp_path)
    assert len(s["claims"]) == 2 and "early_stopping_sqrt_and_sgd_beat_ngd" in s["claims"][0]["claims"]
    for row, counts in zip(s["rows"], s["claims"]):
        mine = [e for e in entries if e["values"] == [["q", row["values"]["q"]]]]
        assert row["replicates"] == 3 and len(mine) == 3
        for claim, c in counts["claims"].items():
            values = [e["record"]["claims"][claim] for e in mine]
            assert c == {"supported": sum(v is True for v in values), "n": sum(v is not None for v in values)}
    assert not list(tmp_path.glob("bands_*.png"))


def _slow_sweep(out):
    """Nine cells of about 0.3 s each, so that the sweep can be killed midway."""
    argv = _sweep(out, "--no-plots", grid=("lr=0.05,0.1,0.2",), seeds="3")
    argv[argv.index("40")] = "400"
    return argv


def _start(out):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "arraycurv", *_slow_sweep(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_cells(out, n, proc, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = list((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []
        if len(done) >= n or proc.poll() is not None:
            return len(done)
        time.sleep(0.05)
    return -1


def test_killed_sweep_resumes_and_a_second_sweep_refuses(tmp_path, capsys):
    out = tmp_path / "killed"
    proc = _start(out)
    try:
        assert _wait_for_cells(out, 2, proc) >= 2 and proc.poll() is None
        # a second sweep into the folder while the first runs: refused, nothing touched
        before = {f.name: f.stat().st_mtime_ns for f in (out / "cells").glob("*.json")}
        assert cli.main(_slow_sweep(out)) == 2
        assert "locked by running process" in capsys.readouterr().err
        assert all((out / "cells" / f).stat().st_mtime_ns == t for f, t in before.items())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = {f.name: f.stat().st_mtime_ns for f in (out / "cells").glob("*.json")}
    assert 2 <= len(finished) < 9
    assert (out / ".lock").exists()  # left by the killed sweep (its process is gone): taken over
    assert cli.main(_slow_sweep(out)) == 0
    s = read_json(out / "summary.json")
    assert s["skipped"] == len(finished) and s["computed"] == 9 - len(finished)
    assert {f: (out / "cells" / f).stat().st_mtime_ns for f in finished} == finished  # never rewritten
    assert not (out / ".lock").exists()
    assert not [f for f in os.listdir(out / "cells") if f.endswith(".tmp")]
    assert cli.main(_slow_sweep(tmp_path / "clean")) == 0
    _assert_same_cells(out, tmp_path / "clean")
    capsys.readouterr()


def test_another_sweep_into_a_used_folder_refuses(tmp_path, capsys):
    assert cli.main(_sweep(tmp_path, "--no-plots")) == 0
    cells = sorted(os.listdir(tmp_path / "cells"))
    rc = cli.main(_sweep(tmp_path, "--no-plots", grid=("lr=0.3",)))
    assert rc == 2 and "another sweep" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "cells")) == cells
    # the same sweep again: resumes, nothing to do; more seeds: only the new cells run
    assert cli.main(_sweep(tmp_path, "--no-plots")) == 0
    assert read_json(tmp_path / "summary.json")["computed"] == 0
    assert cli.main(_sweep(tmp_path, "--no-plots", seeds="3")) == 0
    s = read_json(tmp_path / "summary.json")
    assert (s["computed"], s["skipped"]) == (2, 4)


@pytest.mark.parametrize("extra, message", [
    (["--grid", "nope=1"], "grid: expected fields of TeacherStudentConfig"),
    (["--grid", "lr=abc"], "eta_bar: expected a number > 0"),
    (["--grid", "lr=-1"], "eta_bar: expected a number > 0"),
    (["--grid", "rank=1,9"], "rank: expected 1 <= rank <= width"),
    (["--grid", "rules=sgd+newton"], "rules: expected names among"),
    (["--grid", "seed=1,2"], "the seed is set by --seeds"),
    (["--grid", "lr"], "grid: expected FIELD=V1,V2"),
    (["--executor", "serial", "--workers", "2"], "workers: expected --executor processes or dask"),
    (["--executor", "processes", "--scheduler", "tcp://x:1"], "scheduler: expected --executor dask"),
    (["--workers", "2", "--scheduler", "tcp://x:1"], "not both"),
    (["--backend", "cupy"], "backend"),
])
def test_bad_sweep_options_exit_2_before_any_work(tmp_path, capsys, extra, message):
    if extra == ["--backend", "cupy"]:
        try:
            import cupy  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("CuPy is available here")
    out = tmp_path / "sw"
    argv = ["sweep", "teacher-student", *TINY, "--out", str(out), "--quiet", *extra]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert err.startswith("arraycurv: error:") and err.count("\n") == 1
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("argv", [["--seeds", "x"], ["--workers", "0"], ["--executor", "gpu"], ["--steps", "0"]])
def test_bad_sweep_arguments_are_argparse_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", "teacher-student", "--out", str(tmp_path / "sw"), *argv])
    assert exc.value.code == 2
    assert not (tmp_path / "sw").exists()
    capsys.readouterr()


def test_sweep_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "teacher-student", "--help"])
    out = capsys.readouterr().out
    for opt in ("--seeds", "--grid", "--executor", "--workers", "--scheduler", "--out", "--lr", "--teacher-sv",
                "--steps-rule", "--damping-d"):
        assert opt in out, opt
