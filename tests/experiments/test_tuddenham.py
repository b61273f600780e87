"""The class-subspace experiment (Tuddenham et al. 2020 Fig. 2 on digits) at a tiny size."""

from __future__ import annotations

import numpy as np
import pytest

import arraycurv as ac
from arraycurv.experiments import get_experiment
from arraycurv.experiments import tuddenham as T
from arraycurv.results import read_json


def test_small_cnn_has_about_400_parameters():
    assert ac.params.num_params(ac.param_shapes(T.small_cnn())) == 410


def test_crossover_step():
    steps = [0, 10, 20, 30, 40]
    assert T.crossover_step(steps, [2, 1.5, 1.2, 0.9, 0.8], [2, 1.2, 1.1, 1.0, 0.95]) == (30, True)
    assert T.crossover_step(steps, [2, 1, 0.9, 0.8, 0.7], [2, 1.2, 1.1, 1.0, 0.95]) == (10, False)
    assert T.crossover_step(steps, [2, 1.5, 1.2, 1.1, 1.0], [2, 1.2, 1.1, 1.0, 0.95]) == (None, True)


@pytest.mark.slow
def test_registered_and_runs_tiny(tmp_path):
    """Every run, the spectral measurements on the whole training set and the report's
    files (about a minute: Lanczos and SLQ on 1348 digits)."""
    cfg = T.Config(batch_sizes=(0, 64), num_seeds=2, steps=6, record_every=2, num_measure=2, slq_iters=6,
                   slq_probes=2, damping=1.0)
    rec = T.run_one(cfg)
    assert set(rec["runs"]) == {f"{r}@B{b}#{s}" for r in T.RULES for b in (0, 64) for s in (0, 1)}
    h = rec["histories"]["class_subspace_newton@B0#0"]
    assert h["overlap"].shape == (3,) and np.all((h["overlap"] >= 0) & (h["overlap"] <= 1 + 1e-12))
    check = rec["curvature_check"]
    assert len(check["lambda"]) == 10 and all(v > 0 for v in check["ggn_along_v"])
    summary = T.report([rec], tmp_path, progress=False)
    assert set(summary["analysis"]["by_batch_size"]) == {"0", "64"}
    for name in ("losses.png", "spectra.png", "summary.json", "table.txt", "history.npz"):
        assert (tmp_path / name).exists()
    assert read_json(tmp_path / "summary.json")["analysis"]["curvature_check"] == check


def test_registered():
    assert get_experiment("class-subspace") is T.EXPERIMENT


def test_config_errors():
    with pytest.raises(ac.experiments.UsageError, match="batch-sizes: expected integers >= 0"):
        T.Config(batch_sizes=(-1,))
    with pytest.raises(ac.experiments.UsageError, match="decay: expected a number in"):
        T.Config(decay=1.0)
