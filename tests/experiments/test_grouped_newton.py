"""The grouped-newton experiment: config validation, a tiny run, its report files."""

import pytest

from arraycurv.experiments import UsageError, get_experiment
from arraycurv.experiments import grouped_newton as gn


def test_registered_and_validated():
    assert get_experiment("grouped-newton").config_type is gn.Config
    with pytest.raises(UsageError, match="models: expected names"):
        gn.Config(models=("resnet",))
    with pytest.raises(UsageError, match="sgd-lrs: expected learning rates > 0"):
        gn.Config(sgd_lrs=(0.0,))


@pytest.mark.slow
def test_tiny_run_and_report(tmp_path):
    cfg = gn.Config(models=("mlp",), num_seeds=1, epochs=1, sgd_lrs=(0.1,), adam_lrs=(0.003,), period=5)
    record = gn.run_one(cfg)
    assert set(record["runs"]) == {"mlp/newton_summary@0.1#0", "mlp/sgd@0.1#0", "mlp/adam@0.003#0"}
    ns = record["runs"]["mlp/newton_summary@0.1#0"]
    assert len(ns["trace"]["lrs"][0]) == 6 and ns["trace"]["hbar"]
    summary = gn.report([record], tmp_path, progress=False)
    assert {"losses.png", "hbar.png", "lrs.png", "summary.json", "table.txt"} <= set(summary["files"])
    assert summary["tuned"]["mlp/sgd"] == 0.1
