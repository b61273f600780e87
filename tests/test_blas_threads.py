"""The BLAS thread policy (docs/backend.md, "BLAS threads"): ``backend.blas_threads``."""

from __future__ import annotations

import pytest

from arraycurv import backend

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_blas_threads_limits_and_restores():
    before = _blas_threads()
    with backend.blas_threads(1) as n:
        assert n == 1
        assert all(t == 1 for t in _blas_threads())
    assert _blas_threads() == before


def test_blas_threads_default_reads_the_environment(monkeypatch):
    monkeypatch.setenv("ARRAYCURV_BLAS_THREADS", "1")
    with backend.blas_threads() as n:
        assert n == 1
    monkeypatch.delenv("ARRAYCURV_BLAS_THREADS")
    with backend.blas_threads() as n:
        assert n == 1  # the documented default


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_blas_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        backend.blas_threads(bad)


def test_blas_threads_rejects_a_bad_environment(monkeypatch):
    monkeypatch.setenv("ARRAYCURV_BLAS_THREADS", "many")
    with pytest.raises(ValueError, match="ARRAYCURV_BLAS_THREADS: expected a positive integer, got 'many'"):
        backend.blas_threads()


def test_blas_threads_limits_torch_when_imported():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with backend.blas_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
