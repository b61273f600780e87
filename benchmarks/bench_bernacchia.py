"""Benchmark: the exact natural gradient of Bernacchia et al. (2018), eq (10)/(20).

Part 1 (one run, same minibatch): one parameter update of a deep linear network with
L = 16 layers of width n = 20 (Fig. 1A, P = 6400) on a minibatch of M = 1000 examples,

* ``sgd``: ``params - lr * grad`` (one closed-form gradient, the SGD step);
* ``eq10``: ``params + direction`` with eq (20) damping (lambda = 1e-3, two batched
  solves) and ``eq10 pinv`` without damping (rank-capped pseudo-inverses, eq 10);
* ``eq10 mc``: the same with the error covariance from K = 1 Monte-Carlo sample;
* ``moore-penrose``: the materialized 6400 x 6400 Fisher (= GGN) and its Moore-Penrose
  pseudo-inverse applied to the gradient (``psd_power(F, -1)``, one eigendecomposition),
  timed once (it takes minutes).

Part 2 (covariance inverses of width n = 20 ... 400): after a rank-k change of an n x n
covariance (k = 20 new samples in an exponential moving average),

* ``direct``: ``xp.linalg.inv`` of the updated matrix;
* ``sherman-morrison``: :func:`arraycurv.linalg.lowrank.running_inverse` (Woodbury, O(n^2 k));

and for a PSD factor of rank r = 20 (a bottleneck factor, damped as in eq 20),

* ``direct``: ``inv(A + d I)``; ``randomized``: :func:`randomized_psd_inverse` (O(n^2 r)).

Each line reports the best of ``--repeats`` calls after one warm-up, and the ratios are
measured in the same run. Set OPENBLAS_NUM_THREADS=1 on a shared machine.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_bernacchia.py [--repeats 20] [--skip-full]

Prints a table and writes benchmarks/results/bernacchia.json (atomically).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import timing  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402
from arraycurv import results  # noqa: E402
from arraycurv.directions.bernacchia import bernacchia_ngd_direction  # noqa: E402
from arraycurv.linalg import psd_power  # noqa: E402
from arraycurv.linalg.lowrank import randomized_psd_inverse, running_inverse  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "bernacchia.json"


def step_benchmark(xp, args):
    """Part 1: one update of the 16 x 20 deep linear network on M = 1000 examples."""
    model = ac.DeepLinear((args.width,) * (args.depth + 1))
    params = ac.init_params(model, 0, xp, dtype=args.dtype)
    data = ac.data.bernacchia_teacher_student(model.widths, num_train=args.batch, num_test=1, seed=1, xp=xp,
                                              dtype=args.dtype)
    batch = (data.x_train, data.y_train)

    def sgd():
        _, g = ac.value_and_grad(model, params, batch)
        return tuple(p - 0.01 * gi for p, gi in zip(params, g))

    def eq10(**kw):
        return lambda: tuple(p + d for p, d in zip(params, bernacchia_ngd_direction(model, params, batch, **kw)))

    def moore_penrose():
        _, g = ac.value_and_grad(model, params, batch)
        fisher = ac.ggn_matrix(model, params, batch)
        d = xp.matmul(psd_power(fisher, -1.0), ac.flatten(g)[:, None])[:, 0]
        return tuple(p - di for p, di in zip(params, ac.unflatten(d, ac.param_shapes(model))))

    cases = [("sgd", sgd), ("eq10 (damped, eq 20)", eq10(damping=1e-3)), ("eq10 pinv (eq 10)", eq10()),
             ("eq10 mc K=1 (damped)", eq10(damping=1e-3, num_samples=1))]
    rows = []
    for name, fn in cases:
        seconds, _ = timing.timed(fn, args.repeats)
        rows.append({"case": name, "seconds": seconds})
        print(f"{name:<24} {seconds * 1e3:10.3f} ms", flush=True)
    if not args.skip_full:
        seconds, _ = timing.timed(moore_penrose, 1, long_warmup=1.0)
        rows.append({"case": "moore-penrose (6400^2 Fisher)", "seconds": seconds})
        print(f"{'moore-penrose':<24} {seconds * 1e3:10.1f} ms", flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["ratio_to_sgd"] = r["seconds"] / base
    damped = rows[1]["seconds"]
    for r in rows:
        r["ratio_to_eq10"] = r["seconds"] / damped
    return {"depth": args.depth, "width": args.width, "batch": args.batch, "num_params": model.num_params,
            "rows": rows}


def _inverse_row(xp, n, args):
    """One width of part 2: the running (Woodbury) and randomized inverses against inv."""
    a = ac.backend.normal(0, (2 * n, n), xp, dtype=args.dtype)
    eye = xp.eye(n, dtype=a.dtype)
    cov = xp.matmul(xp.matrix_transpose(a), a) / (2 * n) + 0.1 * eye
    inv = xp.linalg.inv(cov)
    rows_new = ac.backend.normal(1, (args.rank, n), xp, dtype=args.dtype)
    decay = 0.95
    updated = decay * cov + (1 - decay) / args.rank * xp.matmul(xp.matrix_transpose(rows_new), rows_new)
    t_direct, ref = timing.timed(lambda: xp.linalg.inv(updated), args.repeats)
    t_sm, got = timing.timed(lambda: running_inverse(inv, rows_new, decay=decay), args.repeats)
    err_sm = float(xp.max(xp.abs(got - ref)) / xp.max(xp.abs(ref)))
    b = ac.backend.normal(2, (n, args.rank), xp, dtype=args.dtype)
    low = xp.matmul(b, xp.matrix_transpose(b)) / args.rank
    d = 1e-2
    t_dir2, ref2 = timing.timed(lambda: xp.linalg.inv(low + d * eye), args.repeats)
    t_rand, got2 = timing.timed(lambda: randomized_psd_inverse(low, args.rank, damping=d, power_iters=1),
                                args.repeats)
    err_rand = float(xp.max(xp.abs(got2 - ref2)) / xp.max(xp.abs(ref2)))
    row = {"width": n, "rank": args.rank, "direct_inverse_s": t_direct, "sherman_morrison_s": t_sm,
           "sm_speedup": t_direct / t_sm, "sm_rel_error": err_sm, "direct_damped_inverse_s": t_dir2,
           "randomized_s": t_rand, "randomized_speedup": t_dir2 / t_rand, "randomized_rel_error": err_rand}
    print(f"n {n:>4}: inv {t_direct * 1e3:8.3f} ms  SM {t_sm * 1e3:8.3f} ms ({row['sm_speedup']:5.2f}x, "
          f"err {err_sm:.1e})  |  inv {t_dir2 * 1e3:8.3f} ms  randomized {t_rand * 1e3:8.3f} ms "
          f"({row['randomized_speedup']:5.2f}x, err {err_rand:.1e})", flush=True)
    return row


def inverse_benchmark(xp, args):
    """Part 2: Sherman-Morrison (Woodbury) and randomized routes against direct inversion."""
    return [_inverse_row(xp, n, args) for n in args.inverse_widths]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--width", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rank", type=int, default=20, help="rank k of the updates / of the low-rank factor")
    ap.add_argument("--inverse-widths", type=int, nargs="+", default=[20, 50, 100, 200, 400])
    ap.add_argument("--skip-full", action="store_true", help="skip the materialized 6400 x 6400 Fisher")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--backend", default="numpy", choices=list(ac.backend.BACKENDS))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    xp = ac.backend.namespace_by_name(args.backend)
    step = step_benchmark(xp, args)
    inverses = inverse_benchmark(xp, args)
    print()
    print(f"one update, deep linear {args.depth} x {args.width}, M = {args.batch}, {args.dtype}, {args.backend}")
    print(results.format_table(step["rows"], ["case", "seconds", "ratio_to_sgd", "ratio_to_eq10"]))
    print()
    print(results.format_table(inverses, ["width", "direct_inverse_s", "sherman_morrison_s", "sm_speedup",
                                          "direct_damped_inverse_s", "randomized_s", "randomized_speedup"]))
    result = {
        "benchmark": "bernacchia",
        "config": vars(args),
        "step": step,
        "inverses": inverses,
    }
    return timing.write_result(args.out, result)


if __name__ == "__main__":
    main()
