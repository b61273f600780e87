"""Benchmark: the explicit GGN of an MLP against the machine's dense GEMM rate, and the
batched products (``ggn_matmat``, ``hvp_matmat``) against k single products.

1. ``ggn_matrix`` of the MLP 64-64-64-10 (tanh), batch 256, P = 8970, float64, softmax
   cross-entropy and MSE (the Kronecker-structured assembly of
   :mod:`arraycurv.curvature.sequential`). In the same process, round-robin with it, the
   GEMM rate is measured on an (n x n) @ (n x n) float64 matmul (n = 2048, about the size
   of the largest blocks). Reported: the time, the reference FLOP count B P^2 (the
   structured assembly: 2 B n_l n_m n~_l n~_m per pair of layers l < m, and half of that
   on the diagonal blocks), the time that count takes at the GEMM rate, and the fraction
   of the GEMM rate reached (ideal time / measured time). Aim: >= 0.5.
2. k = 16 GGN and Hessian products on the MLPs 64-64-64-10 (B = 256) and
   784-300-100-10 (B = 128): one ``*_matmat`` call against 16 calls of ``ggn_vp`` / ``hvp``.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_explicit_ggn.py [--repeats N] [--skip-matmat]

Best of N calls after a warm-up each (timed round-robin where several routines are
compared), so that load from other processes hits all of them alike. Set the BLAS thread
count before the run (``OPENBLAS_NUM_THREADS=1`` on a shared machine).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import arraycurv as ac  # noqa: E402
from arraycurv.curvature import ggn_matmat, hvp_matmat  # noqa: E402
from arraycurv.models.layers import Dense  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from timing import best_of_interleaved, machine_info  # noqa: E402  (benchmarks/timing.py)


def assembly_flops(model, b):
    """FLOPs of the structured assembly: per pair of Dense layers l <= m one
    (n_l n_m) x B x (n~_l n~_m) product (half of it on the diagonal): about B P^2."""
    dims = [(layer.n_out, layer.n_in + layer.bias) for layer in model.layers if isinstance(layer, Dense)]
    total = 0.0
    for i, (nl, tl) in enumerate(dims):
        for j in range(i, len(dims)):
            nm, tm = dims[j]
            half = (nl + 1) / (2 * nl) if j == i else 1.0  # rows i, columns j >= i
            total += 2.0 * b * nl * nm * tl * tm * half
    return total


def bench_explicit(repeats):
    model = ac.mlp((64, 64, 64, 10), "tanh")
    b = 256
    params = ac.init_params(model, 0)
    g = np.random.default_rng(1)
    x = g.standard_normal((b, 64))
    p = ac.params.num_params(ac.param_shapes(model))
    ref_flops = float(b) * p * p
    rows = []
    n = 2048
    a, c = g.standard_normal((n, n)), g.standard_normal((n, n))
    for loss, y in ((ac.SoftmaxCrossEntropy(), g.integers(0, 10, b)), (ac.MSE(), g.standard_normal((b, 10)))):
        best = best_of_interleaved({"gemm": lambda: a @ c,  # round-robin: the same load on both
                                    "ggn": lambda loss=loss, y=y: ac.ggn_matrix(model, params, (x, y), loss)},
                                   repeats)
        rate, t = 2.0 * n**3 / best["gemm"] / 1e9, best["ggn"]
        ideal = ref_flops / (rate * 1e9)
        rows.append({"loss": type(loss).__name__, "P": p, "B": b, "time_s": t, "gemm_gflops": rate,
                     "ref_gflop": ref_flops / 1e9, "executed_gflop": assembly_flops(model, b) / 1e9,
                     "ideal_s": ideal, "fraction_of_gemm_rate": ideal / t})
        print(f"ggn_matrix MLP 64-64-64-10 B={b} P={p} {type(loss).__name__:>19}: {t:.3f} s | GEMM "
              f"{rate:.1f} GFLOP/s, B P^2 = {ref_flops / 1e9:.1f} GFLOP -> {ideal:.3f} s at the GEMM rate, "
              f"fraction {ideal / t:.2f}")
    return rows


def _matmat_fns(model, params, batch, loss, vs):
    one = [tuple(t[j] for t in vs) for j in range(vs[0].shape[0])]
    return {
        "ggn_matmat": lambda: ggn_matmat(model, params, batch, vs, loss),
        "ggn_vp x k": lambda: [ac.ggn_vp(model, params, batch, v, loss) for v in one],
        "hvp_matmat": lambda: hvp_matmat(model, params, batch, vs, loss),
        "hvp x k": lambda: [ac.hvp(model, params, batch, v, loss) for v in one],
    }


def bench_matmat(repeats, k=16):
    rows = []
    for sizes, b in (((64, 64, 64, 10), 256), ((784, 300, 100, 10), 128)):
        model = ac.mlp(sizes, "tanh")
        params = ac.init_params(model, 0)
        g = np.random.default_rng(2)
        batch = (g.standard_normal((b, sizes[0])), g.integers(0, sizes[-1], b))
        vs = tuple(g.standard_normal((k, *s)) for s in ac.param_shapes(model))
        best = best_of_interleaved(_matmat_fns(model, params, batch, ac.SoftmaxCrossEntropy(), vs), repeats)
        name = "-".join(map(str, sizes))
        print(f"MLP {name} B={b}, k={k}: " + ", ".join(f"{key} {1e3 * t:.1f} ms" for key, t in best.items())
              + f" | speed-up GGN {best['ggn_vp x k'] / best['ggn_matmat']:.1f}x, "
              f"Hessian {best['hvp x k'] / best['hvp_matmat']:.1f}x")
        rows.append({"mlp": name, "B": b, "k": k, **best})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-matmat", action="store_true")
    args = ap.parse_args(argv)
    info = machine_info()
    print("threads:", info["threads"], "load average:", info["load_average"])
    out = {"explicit_ggn": bench_explicit(args.repeats)}
    if not args.skip_matmat:
        out["matmat"] = bench_matmat(max(args.repeats, 5))
    return out


if __name__ == "__main__":
    main()
