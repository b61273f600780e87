"""Reporting of the teacher-student experiment (Huh Sec. 6): the analytic excess
population test loss against a Monte-Carlo estimate from many fresh test samples, the
noise floor, the claims counted over seeds, the statistics over seeds against the
statistics module, the c_2 step-size check, early stops in the progress output, stale
files, the settings reachable from the CLI (teacher spectrum, per-rule steps, NGD-d
damping) and the BLAS thread policy shared by the Python API and the command line."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest

from arraycurv import cli, init_params
from arraycurv.experiments import (
    Experiment,
    ExperimentConfig,
    UsageError,
    register_experiment,
    run_experiment,
    unregister_experiment,
)
from arraycurv.experiments import huh_teacher_student as ts
from arraycurv.results import read_json, read_npz

TINY = ts.TeacherStudentConfig(width=4, rank=1, depth=2, steps=60, num_test=20, rules=("sgd", "ngd", "sqrt_ngd",
                                                                                      "ngd_d"), step_check=20)
SMALL = ts.TeacherStudentConfig(width=6, rank=2, depth=3, steps=600, num_test=200, tol=1e-7)


def test_excess_loss_matches_a_monte_carlo_estimate_from_fresh_test_samples():
    """E[1/2 ||W x - y||^2] - 1/2 N sigma^2 over fresh x ~ N(0, I), y = T x + z equals
    1/2 ||W - T||_F^2 (within 4 Monte-Carlo standard errors)."""
    cfg = ts.TeacherStudentConfig(width=6, rank=2, depth=3, noise=0.3)
    data, model, *_ = ts.setup(cfg, np)
    teacher = data.teacher_map
    params = init_params(model, 11, np, scale=1.0)  # a map of order one, away from the teacher
    w = params[2] @ params[1] @ params[0]
    analytic = float(ts.excess_loss(np, params, teacher))
    assert analytic == pytest.approx(0.5 * np.sum((w - teacher) ** 2), rel=1e-12)
    g = np.random.default_rng(2024)
    m = 200_000
    x = g.standard_normal((m, cfg.width))
    y = x @ teacher.T + cfg.noise * g.standard_normal((m, cfg.width))
    losses = 0.5 * np.sum((x @ w.T - y) ** 2, axis=1)
    floor = 0.5 * cfg.width * cfg.noise ** 2
    se = losses.std(ddof=1) / math.sqrt(m)
    assert abs(losses.mean() - floor - analytic) < 4 * se
    assert analytic > 20 * se  # the check is not vacuous


def test_recorded_excess_loss_and_noise_floor():
    rec = ts.run_one(dataclasses.replace(TINY, rules=("sgd",), steps=5))
    data, model, params0, *_ = ts.setup(TINY, np)
    h = rec["histories"]["sgd"]
    assert h["excess_loss"][0] == pytest.approx(float(ts.excess_loss(np, params0, data.teacher_map)), rel=1e-12)
    assert rec["noise_floor"] == pytest.approx(0.5 * 4 * 0.3 ** 2)
    m = rec["rules"]["sgd"]
    assert m["min_excess_loss"] == pytest.approx(h["excess_loss"].min(), rel=1e-12)
    assert m["excess_at_test_best"] == pytest.approx(h["excess_loss"][np.argmin(h["test_loss"])], rel=1e-12)
    text = ts.format_summary(ts.report([rec], None, progress=False))
    assert "noise floor 1/2 N sigma^2 = 0.18" in text and "min excess" in text


def test_claims_over_seeds_counts_each_claim():
    counts = ts.claims_over_seeds([{"a": True, "b": None, "c": False}, {"a": True, "b": None, "c": True},
                                   {"a": False, "b": None, "c": True}])
    assert counts == {"a": {"supported": 2, "n": 3, "passed": False}, "b": {"supported": 0, "n": 0, "passed": False},
                      "c": {"supported": 2, "n": 3, "passed": False}}
    assert ts.claims_over_seeds([{"a": True}, {"a": True}])["a"]["passed"] is True


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    return out, ts.run(TINY, out, progress=False, seeds=3)


def test_several_seeds_report_spread_and_claims_counted_over_seeds(three_seeds):
    out, s = three_seeds
    assert s["seeds"] == [0, 1, 2] and [r["config"]["seed"] for r in s["records"]] == [0, 1, 2]
    for name in ts.CLAIMS:
        values = [r["claims"][name] for r in s["records"]]
        c = s["claims"][name]
        assert c["supported"] == sum(v is True for v in values) and c["n"] == sum(v is not None for v in values)
        assert c["passed"] == (c["n"] > 0 and c["supported"] == c["n"])
    for rule in TINY.rules:
        vals = [r["rules"][rule]["min_excess_loss"] for r in s["records"]]
        st = s["over_seeds"][rule]["min_excess_loss"]
        assert st["n"] == 3
        assert st["mean"] == pytest.approx(statistics.fmean(vals), rel=1e-12)
        assert st["sd"] == pytest.approx(statistics.stdev(vals), rel=1e-12)
        half = 4.302652729911275 * statistics.stdev(vals) / math.sqrt(3)  # t_{0.975, 2}
        assert st["hi"] - st["mean"] == pytest.approx(half, rel=1e-9)
    assert read_json(out / "summary.json")["claims"] == s["claims"]
    assert set(s["files"]) == {"fig4.png", "fig5.png", "seeds.png", "summary.json", "table.txt", "history.npz"}
    table = (out / "table.txt").read_text()
    assert "over 3 seeds" in table and "±" in table and "noise floor" in table and "3 seeds" in table
    h = read_npz(out / "history.npz")
    assert {k.split("/")[0] for k in h} == {"seed0", "seed1", "seed2"}
    np.testing.assert_array_equal(h["seed1/sgd/excess_loss"],
                                  ts.run_one(dataclasses.replace(TINY, seed=1))["histories"]["sgd"]["excess_loss"])


def test_a_later_run_removes_stale_files(three_seeds, tmp_path):
    out, _ = three_seeds
    import shutil

    shutil.copytree(out, tmp_path / "r")
    s = ts.run(dataclasses.replace(TINY, steps=5), tmp_path / "r", progress=False, plots=False)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(s["files"]) == ["history.npz", "summary.json"]


def test_c2_step_check_shrinks_with_the_step_except_for_ngd_d():
    rec = ts.run_one(dataclasses.replace(SMALL, rules=("sgd", "ngd", "sqrt_ngd", "ngd_d")))
    chk = rec["step_check"]
    assert set(chk) == {"sgd", "sqrt_ngd", "ngd_d"}
    for name in ("sgd", "sqrt_ngd"):  # step-size error: at least ~linear in the step
        assert chk[name]["ratio"] < 0.6, (name, chk[name])
    assert chk["ngd_d"]["ratio"] > 0.9  # NGD-d breaks the conservation law
    for name, c in chk.items():  # the full-step drift is the main run's over the same time
        h = rec["histories"][name]
        k = c["steps"]
        assert c["drift"] == pytest.approx(np.max(h["c2_drift"][h["steps"] <= k]) / h["c2_norm"][0], rel=1e-12)
    r = rec["rules"]
    assert r["ngd_d"]["c2_drift_init"] > 10 * max(r[n]["c2_drift_init"] for n in ("sgd", "ngd", "sqrt_ngd"))
    assert rec["claims"]["c2_drift_is_step_error"] is True and rec["claims"]["ngd_d_breaks_c2"] is True
    off = ts.run_one(dataclasses.replace(SMALL, rules=("sgd",), steps=5, step_check=0))
    assert off["step_check"] == {} and off["claims"]["c2_drift_is_step_error"] is None


def test_progress_shows_early_stops(capsys):
    ts.run_one(dataclasses.replace(TINY, rules=("ngd",), steps=400, rule_steps=(), step_check=0), progress=True)
    err = capsys.readouterr().err
    assert "rule 1/1: ngd (400 steps)" in err
    assert "ngd: early stop at step" in err and "/400" in err


def test_teacher_spectrum_rule_steps_and_ngd_d_damping_are_settable(tmp_path, capsys):
    rc = cli.main(["--width", "4", "--rank", "2", "--depth", "2", "--steps", "30", "--num-test", "10", "--rules",
                   "sgd,ngd,ngd_d", "--teacher-sv", "3,1.5", "--steps-rule", "sgd=7", "--damping-d", "0.5",
                   "--step-check", "0", "--seeds", "1", "--quiet", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    s = read_json(tmp_path / "summary.json")
    assert s["teacher_sv"][:2] == pytest.approx([3.0, 1.5], rel=1e-12)
    assert s["rules"]["sgd"]["steps"] == 7 and s["rules"]["sgd"]["stopped_at"] == 7
    assert s["rules"]["ngd"]["steps"] == 30
    assert s["config"]["damping_d"] == 0.5 and s["config"]["rule_steps"]["sgd"] == 7
    base = dataclasses.replace(TINY, rules=("ngd", "ngd_d"), steps=30, step_check=0)
    a, b = ts.run_one(base), ts.run_one(dataclasses.replace(base, damping_d=0.5))
    assert a["rules"]["ngd"] == b["rules"]["ngd"]  # NGD's damping is --damping
    assert a["rules"]["ngd_d"]["min_excess_loss"] != b["rules"]["ngd_d"]["min_excess_loss"]


@pytest.mark.parametrize("kwargs, message", [
    ({"teacher_sv": (1.0, 2.0)}, r"teacher-sv: expected 3 \(= rank\) numbers"),
    ({"teacher_sv": (1.0, -2.0, 1.0)}, "teacher-sv: expected 3"),
    ({"rule_steps": (("newton", 5),)}, "rules: expected names among"),
    ({"rule_steps": (("sgd", 0),)}, "rule_steps: expected a positive integer for 'sgd'"),
    ({"step_check": -1}, "step-check: expected an integer >= 0"),
])
def test_new_settings_are_validated_when_built(kwargs, message):
    with pytest.raises(UsageError, match=message):
        ts.TeacherStudentConfig(**kwargs)


# ------------------------------------------------------------------ thread policy
@dataclasses.dataclass(frozen=True)
class _ThreadsConfig(ExperimentConfig):
    pass


def _threads_run_one(config, *, xp=None, progress=False, checkpoint=None):
    from threadpoolctl import threadpool_info

    return {"config": {"seed": config.seed},
            "blas": sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})}


def _threads_report(records, out_dir=None, *, progress=True, plots=True):
    return {"blas": [r["blas"] for r in records]}


@pytest.fixture
def threads_experiment():
    pytest.importorskip("threadpoolctl")
    exp = register_experiment(Experiment("threads-probe", _ThreadsConfig, _threads_run_one, _threads_report,
                                         "records the BLAS threads", "none", default_seeds=2))
    yield exp
    unregister_experiment("threads-probe")


def test_python_api_and_command_line_limit_blas_threads_alike(threads_experiment, monkeypatch, tmp_path):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine without limits
        outer = _threads_run_one(_ThreadsConfig())["blas"]
        assert run_experiment("threads-probe", progress=False)["blas"] == [[1]]  # default threads=1
        assert run_experiment("threads-probe", progress=False, threads=None)["blas"] == [outer]  # left alone
        seen = {}

        def report(records, out_dir=None, **kw):
            seen["blas"] = [r["blas"] for r in records]
            return {}

        from arraycurv.experiments import registry

        monkeypatch.setitem(registry._REGISTRY, "threads-probe",
                            dataclasses.replace(threads_experiment, report=report))
        assert cli.main(["threads-probe", "--out", str(tmp_path), "--quiet"]) == 0
        assert seen["blas"] == [[1], [1]]  # two default seeds, each with one BLAS thread
        assert cli.main(["threads-probe", "--threads", "2", "--seeds", "1", "--out", str(tmp_path), "--quiet"]) == 0
        assert seen["blas"] == [outer]


def test_run_seeds_offsets():
    from arraycurv.experiments.registry import run_seeds

    cfg = ts.TeacherStudentConfig(seed=5)
    assert [c.seed for c in run_seeds(cfg, 3)] == [5, 6, 7]
    assert [c.seed for c in run_seeds(cfg, range(2, 4))] == [7, 8]
    assert run_seeds(cfg, 1) == [cfg]
    for bad in (0, (1, 1), True, "3", (-1,)):
        with pytest.raises(UsageError, match="seeds: expected"):
            run_seeds(cfg, bad)
