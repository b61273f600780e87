"""Benchmark: exact curvature of a deep linear network (Bernacchia 2018 Fig. 1A size).

DLN of 16 layers of width 20 (P = 6400), batch 1000. Times, best of N in one run:
one gradient (``value_and_grad`` from the raw batch (x, y) and from precomputed
``LinearMoments``), one ``ggn_vp``, one ``hvp`` (each from the raw batch and from moments),
the ratios ggn_vp / gradient and hvp / gradient (aims: <= 2 and <= 3), and the time to
build the explicit 6400 x 6400 GGN (aim: < 0.5 s in float64).

Usage::

    python benchmarks/bench_deep_linear.py [--dtype float64] [--repeats N] [--backend numpy]

Prints a table and writes benchmarks/results/deep_linear.json (atomically).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import timing  # noqa: E402
from timing import best_of  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "deep_linear.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per quantity (best is kept)")
    ap.add_argument("--matrix-repeats", type=int, default=3, help="timed builds of the explicit GGN")
    ap.add_argument("--backend", default="numpy", choices=list(ac.backend.BACKENDS))
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--width", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    xp = ac.backend.namespace_by_name(args.backend)

    sync = timing.sync

    model = ac.DeepLinear((args.width,) * (args.depth + 1))
    params = ac.init_params(model, 0, xp, dtype=args.dtype)
    x = ac.backend.normal(1, (args.batch, args.width), xp, dtype=args.dtype)
    y = ac.backend.normal(2, (args.batch, args.width), xp, dtype=args.dtype)
    v = ac.init_params(model, 3, xp, dtype=args.dtype)
    batch = (x, y)
    mom = ac.models.moments(x, y)
    r = args.repeats

    t = {}
    t["moments"] = best_of(lambda: ac.models.moments(x, y).sxx, r, sync)
    t["grad_batch"] = best_of(lambda: ac.value_and_grad(model, params, batch), r, sync)
    t["grad_moments"] = best_of(lambda: ac.value_and_grad(model, params, mom), r, sync)
    t["ggn_vp_batch"] = best_of(lambda: ac.ggn_vp(model, params, batch, v), r, sync)
    t["ggn_vp_moments"] = best_of(lambda: ac.ggn_vp(model, params, mom, v), r, sync)
    t["hvp_batch"] = best_of(lambda: ac.hvp(model, params, batch, v), r, sync)
    t["hvp_moments"] = best_of(lambda: ac.hvp(model, params, mom, v), r, sync)
    t["ggn_matrix"] = best_of(lambda: ac.ggn_matrix(model, params, mom), args.matrix_repeats, sync)

    ratios = {
        "ggn_vp/grad (batch)": t["ggn_vp_batch"] / t["grad_batch"],
        "hvp/grad (batch)": t["hvp_batch"] / t["grad_batch"],
        "ggn_vp/grad (moments)": t["ggn_vp_moments"] / t["grad_moments"],
        "hvp/grad (moments)": t["hvp_moments"] / t["grad_moments"],
    }
    aims = {
        "ggn_vp/grad (batch)": 2.0, "ggn_vp/grad (moments)": 2.0,
        "hvp/grad (batch)": 3.0, "hvp/grad (moments)": 3.0,
    }

    print(f"deep linear network: depth {args.depth}, width {args.width}, P = {model.num_params}, "
          f"batch {args.batch}, {args.dtype}, {args.backend}, best of {r}")
    print(f"{'quantity':<28}{'time':>14}")
    for k, s in t.items():
        print(f"{k:<28}{s * 1e3:>11.3f} ms")
    print(f"{'ratio':<28}{'value':>14}{'aim':>8}")
    for k, val in ratios.items():
        print(f"{k:<28}{val:>14.2f}{'<= ' + str(aims[k]):>8}")
    ok_matrix = t["ggn_matrix"] < 0.5
    print(f"explicit GGN {model.num_params} x {model.num_params}: {t['ggn_matrix']:.3f} s (aim < 0.5 s: "
          f"{'met' if ok_matrix else 'missed'})")

    result = {
        "benchmark": "deep_linear",
        "config": {"depth": args.depth, "width": args.width, "num_params": model.num_params, "batch": args.batch,
                   "dtype": args.dtype, "backend": args.backend, "repeats": r,
                   "matrix_repeats": args.matrix_repeats},
        "seconds": t,
        "ratios": ratios,
        "aims": {**aims, "ggn_matrix_seconds": 0.5},
    }
    return timing.write_result(pathlib.Path(args.out), result, threads_key=None, load_average=False)


if __name__ == "__main__":
    main()
