"""Benchmark: the class-subspace quasi-Newton step (Tuddenham et al. 2020 eq 6) against an
SGD step, and Lanczos eigenpairs of a GGN, measured in one run.

1. One training step (``value_and_grad`` + ``rule.update`` + the parameter update, as
   :func:`arraycurv.train` does it) of ``class_subspace_newton`` (EMA variant, the paper's)
   against one SGD step on the same batch, for the small digits CNN of the
   ``class-subspace`` experiment (full batch of 1797 and B = 128) and the MLP
   784-300-100-10 with B = 128 (random inputs, 10 classes), with both ways of computing
   the class gradients: ``masked`` (one reverse pass with a (C, B, C) cotangent, C times
   the arithmetic of a gradient's reverse pass), ``per_sample`` (one reverse pass of a
   (B, C) cotangent keeping the batch axis, then per-class sums; B P numbers of memory)
   and ``by_class`` (one reverse pass per class over its own samples: one pass of work
   in total). Aim: <= 2x.
2. Top-10 eigenpairs of the GGN of the MLP 784-300-100-10 (tanh, softmax cross-entropy,
   B = 128, P = 266,610) by Lanczos with full reorthogonalization (one ``ggn_vp`` per
   product) and by block Lanczos (blocks of 10 products through one cached linearization
   with stacked tangents), to the default tolerance (residual <= sqrt(eps) max|theta|)
   or at most 150 (single) / 200 (block) products: number of GGN products, seconds, and
   the largest relative residual.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_class_subspace.py [--repeats N]

Prints a table and writes benchmarks/results/class_subspace.json.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from timing import best_of  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402
from arraycurv import backend, results  # noqa: E402
from arraycurv.linalg import spectral  # noqa: E402
from arraycurv.losses import loss_hessian_vp  # noqa: E402
from arraycurv.rules import class_subspace as rcs  # noqa: E402
from arraycurv.rules.alias import sgd  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "class_subspace.json"
CE = ac.SoftmaxCrossEntropy()


def digits_cnn():
    from arraycurv.experiments.tuddenham import small_cnn

    return small_cnn()


def _step_fn(model, params, batch, rule):
    state = rule.init(params)
    value, g = ac.value_and_grad(model, params, batch, CE)
    _, state = rule.update(g, state, params, model=model, batch=batch, loss=CE, value=value)  # warm EMA state

    def step():
        value, g = ac.value_and_grad(model, params, batch, CE)
        updates, _ = rule.update(g, state, params, model=model, batch=batch, loss=CE, value=value)
        return ac.rules.apply_direction(params, updates)

    return step


def _interleaved(fns, repeats):
    """Best wall time (s) of each callable, timed round-robin (a burst of load from other
    processes then hits all of them alike)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_steps(repeats):
    import numpy as np

    cnn = digits_cnn()
    xd = backend.normal(0, (1797, 1, 8, 8), np)
    yd = np.random.default_rng(0).integers(0, 10, size=1797)
    mlp = ac.mlp((784, 300, 100, 10), "tanh")
    xm = backend.normal(1, (128, 784), np)
    ym = np.random.default_rng(1).integers(0, 10, size=128)
    cases = [("digits CNN, B=1797", cnn, (xd, yd)), ("digits CNN, B=128", cnn, (xd[:128], yd[:128])),
             ("MLP 784-300-100-10, B=128", mlp, (xm, ym))]
    rows = []
    for label, model, batch in cases:
        params = ac.init_params(model, 0)
        fns = {"sgd": _step_fn(model, params, batch, sgd(0.1))}
        for method in ("masked", "per_sample", "by_class"):
            fns[method] = _step_fn(model, params, batch, rcs.class_subspace_newton(0.1, decay=0.9, method=method))
        best = _interleaved(fns, repeats)
        for method in ("masked", "per_sample", "by_class"):
            rows.append({"case": label, "P": ac.params.num_params(ac.param_shapes(model)), "method": method,
                         "sgd_step_s": best["sgd"], "qn_step_s": best[method], "ratio": best[method] / best["sgd"]})
    return rows


def _ggn_block(model, params, x):
    lin = ac.models.base.linearize(model, params, x)
    out = lin.outputs
    b, k = out.shape
    xp = backend.namespace_of(out=out)

    def mv(v):
        jv = lin.jvp(v)  # (m, B, k)
        m = jv.shape[0]
        o = xp.reshape(xp.broadcast_to(out, (m, b, k)), (m * b, k))
        hv = xp.reshape(loss_hessian_vp(CE, o, xp.reshape(jv, (m * b, k))), (m, b, k)) / b
        return lin.vjp(hv)

    return mv


def bench_lanczos():
    import numpy as np

    model = ac.mlp((784, 300, 100, 10), "tanh")
    params = ac.init_params(model, 0)
    x = backend.normal(1, (128, 784), np)
    y = np.random.default_rng(1).integers(0, 10, size=128)
    rows = []
    t0 = time.perf_counter()
    res = spectral.lanczos(lambda v: ac.ggn_vp(model, params, (x, y), v, CE), params, 10, num_iters=150)
    t1 = time.perf_counter()
    rows.append(("lanczos (ggn_vp, one product at a time)", res, t1 - t0))
    t0 = time.perf_counter()
    res_b = spectral.block_lanczos(_ggn_block(model, params, x), params, 10, block_size=10, num_iters=200,
                                   batched=True)
    t1 = time.perf_counter()
    rows.append(("block_lanczos (b=10, cached linearization, stacked)", res_b, t1 - t0))
    t_grad = best_of(lambda: ac.value_and_grad(model, params, (x, y), CE), 5)
    out = []
    for label, r, secs in rows:
        ev = backend.to_numpy(r.eigenvalues)
        rel = float(np.max(backend.to_numpy(r.residuals)) / np.max(np.abs(ev)))
        out.append({"method": label, "ggn_products": r.num_matvecs, "seconds": secs, "max_rel_residual": rel,
                    "top_eigenvalue": float(ev[0]), "tenth_eigenvalue": float(ev[-1]), "gradient_s": t_grad})
    diff = float(np.max(np.abs(backend.to_numpy(rows[0][1].eigenvalues) - backend.to_numpy(rows[1][1].eigenvalues))))
    return out, diff


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    steps = bench_steps(args.repeats)
    print(f"{'case':30s} {'P':>7s} {'class grads':>11s} {'SGD step':>10s} {'QN step':>10s} {'ratio':>6s}")
    for r in steps:
        print(f"{r['case']:30s} {r['P']:7d} {r['method']:>11s} {r['sgd_step_s'] * 1e3:8.2f}ms "
              f"{r['qn_step_s'] * 1e3:8.2f}ms {r['ratio']:6.2f}")
    lz, diff = bench_lanczos()
    print(f"\nTop-10 GGN eigenpairs, MLP 784-300-100-10, B=128 (gradient {lz[0]['gradient_s'] * 1e3:.1f} ms)")
    for r in lz:
        print(f"{r['method']:55s} {r['ggn_products']:4d} products {r['seconds']:7.2f} s  "
              f"max residual/|theta_1| {r['max_rel_residual']:.1e}  theta_1 {r['top_eigenvalue']:.4g}")
    print(f"max |difference| of the two eigenvalue lists: {diff:.2e}")
    results.write_json(RESULTS, {"steps": steps, "lanczos": lz, "eigenvalue_difference": diff})
    print("wrote", RESULTS)


if __name__ == "__main__":
    main()
