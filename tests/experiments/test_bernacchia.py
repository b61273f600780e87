"""Smoke tests of the Bernacchia et al. (2018) Fig. 1 experiment at tiny sizes: registered,
runs every panel, writes its files, records what the report needs, validates its config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from arraycurv.experiments import UsageError, get_experiment
from arraycurv.experiments import bernacchia_fig1 as bf

TINY = dict(num_seeds=2, examples=600, examples_d=400, num_train=400, num_test=100, ngd_batch=200,
            ngd_batch_d=200, sgd_lrs=(0.02, 0.04), sgd_lrs_d=(0.04,), record_points=3)


def test_registered_with_its_config():
    exp = get_experiment("bernacchia")
    assert exp.config_type is bf.Fig1Config and exp.run_one is bf.run_one and exp.default_seeds == 3
    cfg = bf.Fig1Config()
    assert cfg.panels == ("A", "B", "C", "D") and cfg.sgd_batch == 20 and cfg.ngd_batch == 1000
    assert cfg.alpha == 1.0 and cfg.num_train == 10_000 and cfg.num_test == 1_000 and cfg.noise_var == 1e-6


@pytest.mark.parametrize("panels", [("A", "D"), ("C",)])
def test_tiny_run_writes_figures_summary_and_table(tmp_path, capsys, panels):
    cfg = bf.Fig1Config(panels=panels, **{**TINY, "sgd_lrs_c": (0.002, 0.005)})
    record = bf.run_one(cfg)
    summary = bf.report([record], tmp_path, progress=True, plots=True)
    for name in ("fig1.png", "summary.json", "curves.npz"):
        assert (tmp_path / name).exists()
    assert "NGD excess" in capsys.readouterr().out
    data = json.loads((tmp_path / "summary.json").read_text())
    assert set(data["min_excess_ratio"]) == set(panels)
    for run in data["runs"].values():
        assert run["best_sgd_lr"] in cfg.sgd_lrs + cfg.sgd_lrs_c + cfg.sgd_lrs_d
        assert math.isfinite(run["ngd"]["final_test_loss"])
    first = [r for r in data["runs"].values() if r["seed"] == 0]
    assert all(len(r["sgd_grid"]) == len(bf._grid(r["panel"], cfg)) for r in first)
    second = [r for r in data["runs"].values() if r["seed"] == 1]
    assert all(len(r["sgd_grid"]) == 1 for r in second)  # the first seed's pick is reused
    curves = np.load(tmp_path / "curves.npz")
    key = f"{panels[0]}/0/ngd/examples"
    assert curves[key][0] == 0 and curves[key][-1] == (cfg.examples_d if panels[0] == "D" else cfg.examples)
    if "A" in panels:
        assert "map_path_crosses_singular" in data["runs"]["A/0"]["info"]
    if "C" in panels:
        assert data["runs"]["C/0"]["info"]["bottleneck"] is True
    assert summary["table"]


def test_bad_configs_are_usage_errors():
    with pytest.raises(UsageError, match="panels"):
        bf.Fig1Config(panels=("E",))
    with pytest.raises(UsageError, match="sgd-lrs"):
        bf.Fig1Config(sgd_lrs=(-1.0,))
    with pytest.raises(UsageError, match="ngd-batch"):
        bf.Fig1Config(ngd_batch=20_000)
    with pytest.raises(UsageError, match="num_seeds"):
        bf.Fig1Config(num_seeds=0)


def test_records_of_several_seeds_are_reported_together(tmp_path):
    from arraycurv.experiments import run_experiment

    cfg = bf.Fig1Config(panels=("A",), **{**TINY, "num_seeds": 1, "sgd_lrs": (0.04,)})
    summary = run_experiment("bernacchia", cfg, tmp_path, progress=False, plots=False, seeds=2)
    assert set(summary["runs"]) == {"A/0", "A/1"} and len(summary["table"]) == 2
    assert (tmp_path / "summary.json").exists() and (tmp_path / "curves.npz").exists()


@pytest.mark.slow
def test_fig1a_default_size_ngd_beats_tuned_sgd_by_100x():
    """The issue's criterion on Fig. 1A at the default size (16 x 20, 10^5 examples): the
    excess test loss of NGD over the teacher's is at least 100x below that of the best SGD."""
    record = bf.run_one(bf.Fig1Config(panels=("A",), num_seeds=1))
    run = record["runs"]["A/0"]
    assert run["ngd"]["examples"][-1] == 100_000
    assert run["excess_ngd"] > 0 and run["excess_ratio"] >= 100
