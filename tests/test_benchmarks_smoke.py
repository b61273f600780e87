"""The peer implementations of benchmarks/compare_peers.py (JAX, PyTorch) against arraycurv,
and its analytic flop counts against hand counts."""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
import pytest

import arraycurv as ac

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
peer_impls = pytest.importorskip("peer_impls")


def _rel(a, b):
    a = np.concatenate([np.ravel(np.asarray(t)) for t in a])
    b = np.concatenate([np.ravel(np.asarray(t)) for t in b])
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _small(name):
    model, _ = peer_impls.build_model(ac, name)
    return model, peer_impls.make_data(ac, model, 6, "float64")


def _check(fns, model, data, tol=1e-10):
    ref = peer_impls.arraycurv_fns(ac, model, data, cached=False)
    for key, fn in fns.items():
        assert _rel(fn(), ref[key]()) <= tol, key


def test_flop_counts_by_hand():
    model = ac.mlp((3, 4, 2))  # W = 3*4 + 4*2 = 20 multiply-adds per sample, W1 = 12
    c = peer_impls.flop_counts(ac, model, 5)
    assert c["gradient"] == 6 * 5 * 20 - 2 * 5 * 12
    assert c["hvp (cached)"] == 18 * 5 * 20 - 10 * 5 * 12 - 2 * 5 * 20
    assert c["ggn_matrix"] == 5 * (12 + 4 + 8 + 2) ** 2
    # LeNet-5 on 3x32x32: conv1 6*28*28*75, conv2 16*10*10*150, dense 400*120 + 120*84 + 84*10
    lenet, _ = peer_impls.build_model(ac, "lenet5")
    assert peer_impls.macs_per_sample(ac, lenet) == (352800 + 240000 + 48000 + 10080 + 840, 352800)


@pytest.mark.parametrize("name", ["mlp64", "dl16x20", "lenet5"])
def test_arraycurv_cached_agrees(name):
    model, data = _small(name)
    _check(peer_impls.arraycurv_fns(ac, model, data, cached=True), model, data)


@pytest.mark.parametrize("name", ["mlp64", "dl16x20", "lenet5"])
def test_torch_peer_agrees(name):
    pytest.importorskip("torch")
    model, data = _small(name)
    _check(peer_impls.torch_fns(ac, model, data), model, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp64", "dl16x20", "lenet5"])
def test_jax_peer_agrees(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    model, data = _small(name)
    _check(peer_impls.jax_fns(ac, model, data), model, data)


@pytest.mark.slow
def test_jax_max_pool_lenet_agrees():
    """The JAX layer definitions (conv padding, max pooling) on a padded 16x16 LeNet."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    model = ac.lenet5((2, 16, 16), pool="max")
    data = peer_impls.make_data(ac, model, 4, "float64")
    _check(peer_impls.jax_fns(ac, model, data), model, data)


@pytest.mark.slow
def test_jax_explicit_ggn_agrees():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    model = ac.mlp((5, 4, 3), "tanh")
    data = peer_impls.make_data(ac, model, 7, "float64", loss="softmax_ce")
    got = peer_impls.jax_ggn_matrix(ac, model, data, chunk=16)()
    want = peer_impls.arraycurv_ggn_matrix(ac, model, data)()
    assert _rel([got], [want]) <= 1e-10


def _fake_run(competing):
    t = {"arraycurv: gradient": 1e-3, "jax: gradient": 2e-3, "arraycurv cached: gradient": 5e-4}
    times = {"alone": t, **({"competing": {k: 3 * s for k, s in t.items()}} if competing else {})}
    gemm = {"alone": 10.0, **({"competing": 5.0} if competing else {})}
    prob = {"times": times, "flops": {"gradient": 1e7, "gradient (cached)": 5e6}}
    ggn = {"times": {m: {"arraycurv": 1.0} for m in times}, "num_params": 10, "loss": "mse", "flops": 5e9}
    return {"threads": 1, "notes": ["x"], "gemm_gflops": {"float64": gemm},
            "problems": {"mlp64 float64": prob}, "ggn_matrix": {"mlp64 float64": ggn}}


def test_render_tables():
    compare_peers = pytest.importorskip("compare_peers")
    text = compare_peers.render({"threads=1": _fake_run(True)})
    # 1 ms for 1e7 flops = 10 GFLOP/s = 100% of the GEMM rate; the cached form 5e6 in 0.5 ms
    assert "| 1 ms (100%) | 0.5 ms (100%) | 2 ms (50%) |" in text
    assert "| 0.50 | 4.00 |" in text  # arraycurv / JAX, JAX / cached
    assert "**3.00x**" in text and "5.0 GFLOP/s" in text and "| 1 s (50%) |" in text


@pytest.mark.slow
def test_competitor_pauses_and_resumes():
    compare_peers = pytest.importorskip("compare_peers")
    state = pathlib.Path("/proc/self/stat")
    if not state.exists():
        pytest.skip("needs /proc")

    def states(c, want):
        for _ in range(100):  # signals land asynchronously
            got = {pathlib.Path(f"/proc/{p.pid}/stat").read_text().split()[2] for p in c.procs}
            if want(got):
                return True
            time.sleep(0.01)
        return False

    c = compare_peers.Competitor("spin")
    try:
        assert states(c, lambda got: got == {"T"})
        c.run(True)
        assert states(c, lambda got: "T" not in got)
    finally:
        c.close()
    assert all(p.poll() is not None for p in c.procs)


@pytest.mark.parametrize("sizes, b", [((5, 4, 3), 6), ((3, 6, 5, 2), 4)])
def test_numpy_floor_agrees(sizes, b):
    """The hand-written NumPy tanh-MLP routines of benchmarks/numpy_floor.py (gradient,
    GGN product, Pearlmutter HVP written out) against arraycurv's verbs, and the HVP
    against central differences of the gradient."""
    numpy_floor = pytest.importorskip("numpy_floor")
    model = ac.mlp(sizes, "tanh")
    data = peer_impls.make_data(ac, model, b, "float64")
    args = data["params"], data["x"], data["y"], data["v"]
    fns = numpy_floor.floor_fns(np, *args)
    _check(fns, model, data, tol=1e-12)
    eps = 1e-5
    shifted = [numpy_floor.floor_fns(np, tuple(p + s * eps * t for p, t in zip(args[0], args[3])), *args[1:])
               for s in (1.0, -1.0)]
    fd = [(a - c) / (2 * eps) for a, c in zip(shifted[0]["gradient"](), shifted[1]["gradient"]())]
    assert _rel(fns["hvp"](), fd) <= 1e-7
