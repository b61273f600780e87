"""Benchmark: one q-NGD direction (q = 2, sqrt-NGD) in the three exact forms of spec 3.5.

Deep linear network of depth 4 and constant width n (16 and 64), whitened inputs
(``whitened_moments``; the dual form gets the equivalent batch x_b = sqrt(n) e_b,
y_b = sqrt(n) w* e_b, B = n samples, which has the same moments). The forms decompose

* ``full``: the P x P GGN, P = 4 n^2 (1024 or 16384);
* ``dual``: the (B k) x (B k) Gram matrix A A^T, B k = n^2;
* ``map``:  the (nL n0) x (nL n0) map-space kernel of Huh S.I.1, nL n0 = n^2.

Times are best of N in one run (one warm-up call first; a warm-up over 5 s is the only
measurement). The materialized form is skipped, with a printed reason and its estimate,
when its time extrapolated from the largest matrix measured before in the same form (cubic cost of the
eigendecomposition) exceeds ``--budget`` seconds (default 60): at width 64 it is a
16384 x 16384 eigendecomposition (2 GiB per matrix in float64). The map and dual forms
always run. The speed-up of the map form over the materialized one is measured where both
ran and estimated otherwise. The directions of the forms that ran are compared (max
relative difference). On a machine shared with other jobs, set OPENBLAS_NUM_THREADS=1
(oversubscribed BLAS threads can slow small eigendecompositions 100-fold); the thread
settings and the load average are saved with the results.

Usage::

    python benchmarks/bench_fractional.py [--widths 16 64] [--repeats 3] [--budget 60]
                                          [--dtype float64] [--backend numpy]

Prints a table and writes benchmarks/results/fractional.json (atomically).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import timing  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "fractional.json"
FORMS = ("map", "dual", "full")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--q", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (best is kept)")
    ap.add_argument("--budget", type=float, default=60.0, help="skip the full form when estimated above this (s)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--backend", default="numpy", choices=list(ac.backend.BACKENDS))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    xp = ac.backend.namespace_by_name(args.backend)

    rows = []
    measured: dict[tuple[str, int], tuple[float, int]] = {}  # (form, width) -> (seconds, matrix size)
    directions: dict[int, dict[str, object]] = {}
    for n in sorted(args.widths):
        model = ac.DeepLinear((n,) * (args.depth + 1))
        params = ac.init_params(model, 0, xp, dtype=args.dtype)
        target = ac.backend.normal(1, (n, n), xp, dtype=args.dtype)
        mom = ac.models.whitened_moments(target)
        root = math.sqrt(n)
        eye = xp.eye(n, dtype=params[0].dtype)
        batch = (root * eye, root * xp.matrix_transpose(target))  # same moments as ``mom``
        sizes = {"full": model.num_params, "dual": n * n, "map": n * n}
        directions[n] = {}
        for form in FORMS:
            size = sizes[form]
            row = {"width": n, "num_params": model.num_params, "form": form, "matrix_size": size,
                   "seconds": None, "estimated_seconds": None, "skipped": None}
            same = [v for (f, _), v in measured.items() if f == form]
            if measured:
                # cubic cost of the eigendecomposition, from the largest matrix measured so far
                # in this form (any form if this one has not run yet)
                s0, sz0 = max(same or measured.values(), key=lambda t: t[1])
                est = s0 * (size / sz0) ** 3 if size > sz0 else None
                row["estimated_seconds"] = est
                if form == "full" and est is not None and est > args.budget:
                    row["skipped"] = (f"estimated {est:.0f} s > budget {args.budget:.0f} s "
                                      f"(eigendecomposition of a {size} x {size} matrix, cubic cost; "
                                      f"{size * size * 8 / 2**30:.1f} GiB per matrix in float64)")
                    print(f"skip {form} at width {n}: {row['skipped']}", flush=True)
                    rows.append(row)
                    continue
            data = batch if form == "dual" else mom

            def fn(form=form, data=data, model=model, params=params):
                return ac.qngd_direction(model, params, data, args.q, form=form)

            seconds, d = timing.timed(fn, args.repeats, long_warmup=5.0)
            row["seconds"] = seconds
            measured[(form, n)] = (seconds, size)
            directions[n][form] = ac.backend.to_numpy(ac.flatten(d))
            print(f"width {n:>3}  {form:<5} {size:>6} x {size:<6} {seconds:>10.4f} s", flush=True)
            rows.append(row)

    agreement = {}
    for n, ds in directions.items():
        if "map" in ds and len(ds) > 1:
            ref = ds["map"]
            scale = float(abs(ref).max())
            agreement[str(n)] = {f: float(abs(d - ref).max()) / scale for f, d in ds.items() if f != "map"}

    speedup = {}
    for n in sorted(args.widths):
        by = {r["form"]: r for r in rows if r["width"] == n}
        full, mp = by["full"], by["map"]
        if full["seconds"] is not None and mp["seconds"] is not None:
            speedup[str(n)] = {"value": full["seconds"] / mp["seconds"], "kind": "measured"}
        elif mp["seconds"] is not None and full["estimated_seconds"] is not None:
            speedup[str(n)] = {"value": full["estimated_seconds"] / mp["seconds"],
                               "kind": "estimated (full extrapolated)"}

    print()
    print(f"q-NGD direction (q = {args.q:g}), deep linear depth {args.depth}, whitened, {args.dtype}, "
          f"{args.backend}, best of {args.repeats}")
    print(f"{'width':>5} {'P':>7} {'form':<5} {'matrix':>13} {'time':>12}  note")
    for r in rows:
        t = f"{r['seconds']:.4f} s" if r["seconds"] is not None else "-"
        note = f"skipped, est. {r['estimated_seconds']:.0f} s" if r["skipped"] else ""
        print(f"{r['width']:>5} {r['num_params']:>7} {r['form']:<5} {r['matrix_size']:>6} x {r['matrix_size']:<6}"
              f"{t:>12}  {note}")
    for n, s in speedup.items():
        print(f"speed-up map over full at width {n}: {s['value']:.1f}x ({s['kind']})")
    for n, a in agreement.items():
        print(f"max relative difference to the map form at width {n}: "
              + ", ".join(f"{f} {v:.1e}" for f, v in a.items()))

    result = {
        "benchmark": "fractional",
        "config": {"depth": args.depth, "widths": args.widths, "q": args.q, "dtype": args.dtype,
                   "backend": args.backend, "repeats": args.repeats, "budget_seconds": args.budget,
                   "inputs": "whitened (LinearMoments); dual form: equivalent batch of n samples"},
        "rows": rows,
        "speedup_map_over_full": speedup,
        "max_relative_difference_to_map": agreement,
    }
    return timing.write_result(args.out, result)


if __name__ == "__main__":
    main()
