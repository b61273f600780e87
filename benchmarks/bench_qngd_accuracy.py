"""Benchmark: accuracy and cost of the q-NGD forms full, dual and svd (issue #9).

Accuracy. The full form eigendecomposes G = A^T A, the dual form A A^T, the svd form
takes the thin SVD of the stacked Jacobian A itself (``qngd_direction_svd``). On an
exactly representable ill-conditioned case with a known SVD (one-layer linear model,
A = U diag(sigma) V^T with Hadamard-based orthogonal U, V and sigma = 2^-e spanning
cond(A) = 1e4, 1e8, 1e12; ``tests/references/ill_conditioned.py``) the direction is known
in closed form. For each route the table gives the relative error ||d - d*|| / ||d*||
in float64 and the backward-stable limit: the first-order relative change of the exact
d* when A and s get relative perturbations of size eps (largest over 20 random
directions), i.e. what any backward-stable algorithm may lose. The cut-off is set below
the spectrum (rcond = 1e-3 / cond^2), so every direction is kept in every form.

Cost. Time per call (best of ``--repeats``, interleaved) of the three forms, on the
accuracy case and on an MLP with B k < P (where ``form="auto"`` chooses svd, formerly
dual).

Usage::

    python benchmarks/bench_qngd_accuracy.py [--n 64] [--repeats 5] [--conds 1e4 1e8 1e12]

Prints the tables and writes benchmarks/results/qngd_accuracy.json.
"""

from __future__ import annotations

import argparse
import functools
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import timing  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402
from arraycurv.directions import fractional as fr  # noqa: E402
from tests.references.ill_conditioned import (  # noqa: E402
    exact_direction,
    exact_svd_case,
    model_case,
    stable_limit,
)

RESULTS = ROOT / "benchmarks" / "results" / "qngd_accuracy.json"
ROUTES = ("full", "dual", "svd")


def _route_calls(model, params, batch, q, **kwargs):
    """One zero-argument call per route."""
    return {f: functools.partial(fr.qngd_direction, model, params, batch, q, form=f, **kwargs) for f in ROUTES}


def accuracy_rows(n, conds, qs, repeats):
    xp = ac.backend.namespace_by_name("numpy")
    rows = []
    for cond in conds:
        u, sig, v, c = exact_svd_case(n, cond, 0)
        model, params, batch = model_case(xp, u, sig, v, c)
        rcond = 1e-3 * (sig.min() / sig.max()) ** 2
        for q in qs:
            expected = exact_direction(u, sig, v, c, q)
            row = {"cond": float(sig.max() / sig.min()), "q": q, "n": n,
                   "limit": stable_limit(u, sig, v, c, q), "error": {}, "seconds": {}}
            fns = _route_calls(model, params, batch, q, rcond=rcond)
            for form, fn in fns.items():
                d = np.asarray(ac.backend.to_numpy(ac.flatten(fn())))
                row["error"][form] = float(np.linalg.norm(d - expected) / np.linalg.norm(expected))
            row["seconds"] = timing.best_of_interleaved(fns, repeats)
            rows.append(row)
    return rows


def cost_rows(repeats):
    xp = ac.backend.namespace_by_name("numpy")
    rows = []
    for widths, nb in (((16, 48, 10), 32), ((32, 64, 10), 16)):
        model = ac.mlp(widths, activation="tanh")
        params = ac.init_params(model, 0, xp)
        x = ac.backend.normal(1, (nb, widths[0]), xp)
        y = ac.backend.integers(2, 0, widths[-1], (nb,), xp)
        loss = ac.SoftmaxCrossEntropy()
        fns = _route_calls(model, params, (x, y), 2.0, damping=1e-4, loss=loss)
        _, info = fr.qngd_direction(model, params, (x, y), 2.0, damping=1e-4, loss=loss, return_info=True)
        seconds = timing.best_of_interleaved(fns, repeats)
        num_params = sum(math.prod(t.shape) for t in params)
        rows.append({"widths": list(widths), "B": nb, "Bk": nb * widths[-1], "P": num_params,
                     "auto": info.form, "seconds": seconds})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, choices=[16, 64], help="size of A (n x n), a power of 4")
    ap.add_argument("--conds", type=float, nargs="+", default=[1e4, 1e8, 1e12])
    ap.add_argument("--qs", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    acc = accuracy_rows(args.n, args.conds, args.qs, args.repeats)
    print(f"q-NGD accuracy, float64, A = U diag(sigma) V^T exact, {args.n} x {args.n}, "
          "relative error ||d - d*|| / ||d*|| (ratio to the backward-stable limit)")
    print(f"{'cond(A)':>8} {'q':>3} {'limit':>9} " + " ".join(f"{f:>18}" for f in ROUTES)
          + "   time/call full / dual / svd")
    for r in acc:
        errs = " ".join(f"{r['error'][f]:>9.1e} ({r['error'][f] / r['limit']:>6.1g})" for f in ROUTES)
        times = " / ".join(f"{1e3 * r['seconds'][f]:.2f}" for f in ROUTES)
        print(f"{r['cond']:>8.0e} {r['q']:>3g} {r['limit']:>9.1e} {errs}   {times} ms")
    cost = cost_rows(args.repeats)
    print()
    print("time per call, MLP + softmax cross-entropy, q = 2, damping 1e-4, float64 (ms)")
    print(f"{'widths':>14} {'B k':>5} {'P':>5} {'auto':>5} " + " ".join(f"{f:>9}" for f in ROUTES))
    for r in cost:
        print(f"{str(tuple(r['widths'])):>14} {r['Bk']:>5} {r['P']:>5} {r['auto']:>5} "
              + " ".join(f"{1e3 * r['seconds'][f]:>9.2f}" for f in ROUTES))
    result = {"benchmark": "qngd_accuracy", "config": vars(args), "accuracy": acc, "cost": cost}
    timing.write_result(args.out, result)


if __name__ == "__main__":
    main()
