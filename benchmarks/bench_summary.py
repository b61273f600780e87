"""Benchmark: the GroupedNewton summary tensors (gbar, Hbar, diag D3) as a multiple of one gradient.

Measured in one run, round-robin (best of N calls after a warm-up each):

1. the canonical partition (S = 6) of the MLPs 64-64-64-10 (tanh, batch 256) and
   784-300-100-10 (tanh, batch 128), softmax cross-entropy, float32 and float64:
   ``value_and_grad`` (the unit), ``summary(..., order=3)`` (gbar, Hbar, D3_sss: one
   forward, one jet of order 3 and one R-operator pass carrying the S restricted
   directions), ``summary(..., order=2)`` (gbar, Hbar), and the generic default form
   (jets batched over S and ``hvp`` with S stacked directions). Aim: order 3 <= 4x the
   gradient (the reference code needs 7-18x its own gradient: S double-backward and S
   triple-backward passes).
2. the cost as S grows on the MLP 64-64-64-10 (float64): the canonical tensors split into
   row blocks, S = 1 (trivial), 3 (by layer), 6, 12, 24, 48.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_summary.py [--repeats N] [--backend numpy]

Prints the tables and writes benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import platform
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import timing  # noqa: E402  (benchmarks/timing.py)
from timing import best_of_interleaved  # noqa: E402

import arraycurv as ac  # noqa: E402
from arraycurv import results  # noqa: E402
from arraycurv.curvature import summary as S  # noqa: E402
from arraycurv.params import partition as P  # noqa: E402
from arraycurv.testing import default_form  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "summary.json"


def _case(xp, sizes, b, dtype):
    model = ac.mlp(sizes, "tanh")
    params = ac.init_params(model, 0, xp, dtype=dtype)
    x = ac.backend.normal(1, (b, sizes[0]), xp, dtype=dtype)
    y = ac.backend.integers(2, 0, sizes[-1], (b,), xp)
    loss = ac.SoftmaxCrossEntropy()
    _, u = ac.value_and_grad(model, params, (x, y), loss)
    return model, params, (x, y), u, loss


def _sync(out):
    if isinstance(out, S.Summary):
        return timing.sync(tuple(t for t in out if t is not None))
    return timing.sync(out)


def bench_canonical(xp, sizes, b, dtype, repeats):
    model, params, batch, u, loss = _case(xp, sizes, b, dtype)
    part = P.canonical(model)
    xpn = ac.backend.namespace_of(p=params[0])
    dflt = default_form(S._summary)
    t = best_of_interleaved({
        "grad": lambda: ac.value_and_grad(model, params, batch, loss),
        "summary3": lambda: S.summary(model, params, batch, u, part, loss),
        "summary2": lambda: S.summary(model, params, batch, u, part, loss, order=2),
        "default3": lambda: dflt(model, xpn, params, batch, u, part, loss, 3),
    }, repeats, _sync)
    return {"model": "-".join(map(str, sizes)), "B": b, "dtype": dtype, "S": part.num_groups,
            "grad_ms": 1e3 * t["grad"], "summary3_x": t["summary3"] / t["grad"],
            "summary2_x": t["summary2"] / t["grad"], "default3_x": t["default3"] / t["grad"]}


def _row_blocks(model, k):
    """Each tensor split into k row blocks (k = 1: canonical): S = k * #tensors."""
    labels, start = [], 0
    for s in ac.param_shapes(model):
        rows = s[0]
        per = math.prod(s[1:])
        kk = min(k, rows)
        labels.append(tuple(start + min(r * kk // rows, kk - 1) for r in range(rows) for _ in range(per)))
        start += kk
    return P.from_labels(model, labels)


def bench_growth(xp, repeats):
    model, params, batch, u, loss = _case(xp, (64, 64, 64, 10), 256, "float64")
    parts = {"trivial": P.trivial(model), "by_layer": P.by_layer(model), "canonical": P.canonical(model)}
    for k in (2, 4, 8):
        parts[f"rows{k}"] = _row_blocks(model, k)
    fns = {"grad": lambda: ac.value_and_grad(model, params, batch, loss)}
    for name, part in parts.items():
        fns[name] = lambda part=part: S.summary(model, params, batch, u, part, loss)
    t = best_of_interleaved(fns, repeats, _sync)
    return [{"partition": name, "S": part.num_groups, "summary3_x": t[name] / t["grad"]}
            for name, part in parts.items()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--backend", default="numpy")
    args = ap.parse_args(argv)
    xp = ac.backend.namespace_by_name(args.backend)
    rows = [bench_canonical(xp, sizes, b, dt, args.repeats)
            for sizes, b in (((64, 64, 64, 10), 256), ((784, 300, 100, 10), 128)) for dt in ("float32", "float64")]
    print(results.format_table(rows, ["model", "B", "dtype", "S", "grad_ms", "summary3_x", "summary2_x",
                                      "default3_x"], float_format=".3g"))
    growth = bench_growth(xp, max(5, args.repeats // 3))
    print()
    print(results.format_table(growth, ["partition", "S", "summary3_x"], float_format=".3g"))
    results.write_json(RESULTS, {"canonical": rows, "growth": growth, "backend": args.backend,
                                 "machine": platform.platform(), "python": platform.python_version()})
    print("wrote", RESULTS)


if __name__ == "__main__":
    main()
