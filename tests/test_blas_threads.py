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
@pytest.mark.parametrize("fn, match", [("blas_threads", "n: expected a positive integer, got"),
                                       ("set_num_threads", "n: expected a positive integer or None, got")])
def test_thread_counts_are_checked(bad, fn, match):
    with pytest.raises(ValueError, match=match):
        getattr(backend, fn)(bad)


def test_blas_threads_rejects_a_bad_environment(monkeypatch):
    monkeypatch.setenv("ARRAYCURV_BLAS_THREADS", "many")
    with pytest.raises(ValueError, match="ARRAYCURV_BLAS_THREADS: expected a positive integer or 'keep', got 'many'"):
        backend.blas_threads()


def test_blas_threads_limits_torch_when_imported():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with backend.blas_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_set_num_threads_sets_and_restores():
    code = ("import arraycurv, threadpoolctl\n"
            "info = threadpoolctl.threadpool_info\n"
            "t = lambda: sorted({i['num_threads'] for i in info() if i['user_api'] == 'blas'})\n"
            "a = t(); p1 = arraycurv.backend.set_num_threads(1); b = t()\n"
            "p2 = arraycurv.backend.set_num_threads(None); c = t()\n"
            "print(a, p1, b, p2, c)")
    # OpenBLAS starts with 2 threads; the policy at import sets 1; None restores 2
    assert _run_with_openblas(code, None, 2)[0] == "[1] 1 [1] 1 [2]"


def test_blas_threads_keep_changes_nothing(monkeypatch):
    monkeypatch.setenv("ARRAYCURV_BLAS_THREADS", "keep")
    before = _blas_threads()
    with backend.blas_threads() as n:
        assert n is None
        assert _blas_threads() == before


def _threads_after_import(env_value, process_default):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import arraycurv, threadpoolctl\n"
            "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'}))")
    return _run_with_openblas(code, env_value, process_default)


def _run_with_openblas(code, env_value, process_default):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = str(process_default)  # what the policy overrides
    if env_value is None:
        env.pop("ARRAYCURV_BLAS_THREADS", None)
    else:
        env["ARRAYCURV_BLAS_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip(), out.stderr


@pytest.mark.slow
def test_import_applies_the_thread_policy():
    assert _threads_after_import(None, 2)[0] == "[1]"  # the documented default: one thread
    assert _threads_after_import("2", 1)[0] == "[2]"
    assert _threads_after_import("keep", 2)[0] == "[2]"  # left as the process had it
    out, err = _threads_after_import("lots", 2)
    assert out == "[2]" and "ARRAYCURV_BLAS_THREADS: expected a positive integer or 'keep', got 'lots'" in err
