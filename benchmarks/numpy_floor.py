"""Benchmark: the NumPy floor of the MLP products, next to arraycurv and JAX jit.

Hand-written NumPy routines for a tanh MLP with the squared error l = 1/2 ||f - y||^2
(mean over the batch): the gradient, the GGN-vector product (1/B) J^T J v and the exact
Hessian-vector product (Pearlmutter 1994), written out for this one architecture with the
fewest NumPy calls we found (no checks, no dispatch, in-place accumulation into arrays
they made). They are what any NumPy implementation pays per call: the BLAS products plus
one NumPy call per elementwise step. They are checked against arraycurv's public verbs
(relative difference at most 1e-12 in float64) and timed interleaved with them, with
arraycurv's cached forms (``linearize`` once) and, when JAX is installed, with JAX jit
(``peer_impls.jax_fns``), in one process pinned to one core with one BLAS thread
(``--xla_cpu_multi_thread_eigen=false``; XLA's dots use every core unless pinned).

What it shows (issue #14): where arraycurv's time sits above the floor (its own overhead)
and where the floor itself is above JAX's fused, compiled code (on small MLPs NumPy's
per-call cost of the elementwise steps dominates and no NumPy code reaches JAX).

Usage::

    python benchmarks/numpy_floor.py [--problems mlp64,mlp784] [--rounds 7] [--no-jax]

Prints a markdown table and writes benchmarks/results/numpy_floor.json atomically.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "numpy_floor.json"
ROUTINES = ("gradient", "ggn_vp", "hvp")


def _pin_one_core():
    """Re-execute pinned to one core in the environment of compare_peers' 1-thread worker
    (``compare_peers.worker_env(1)``: one BLAS thread, XLA's single-thread flag)."""
    if os.environ.get("_NUMPY_FLOOR_PINNED") == "1" or not hasattr(os, "sched_setaffinity"):
        return
    sys.path.insert(0, str(HERE))
    from compare_peers import worker_env

    env = dict(worker_env(1), _NUMPY_FLOOR_PINNED="1")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def floor_fns(np, params, x, y, v):
    """The hand-written NumPy gradient, GGN product and HVP of a tanh MLP, MSE, mean loss."""
    ws, bs, vw, vb = params[0::2], params[1::2], v[0::2], v[1::2]
    n, b = len(ws), x.shape[0]

    def forward():
        acts, d1s = [x], []
        a = x
        for i in range(n):
            z = a @ ws[i].T
            z += bs[i]
            if i == n - 1:
                return z, acts, d1s
            a = np.tanh(z)
            d1 = a * a
            np.subtract(1.0, d1, out=d1)
            acts.append(a)
            d1s.append(d1)

    def tangent(acts, d1s):
        tas, ta = [None], None
        for i in range(n):
            t = acts[i] @ vw[i].T
            if ta is not None:
                t += ta @ ws[i].T
            t += vb[i]
            if i < n - 1:
                t *= d1s[i]
                tas.append(t)
            ta = t
        return ta, tas  # tz_L = J v, and the tangent of every layer's input

    def backward(g, acts, d1s):
        out = [None] * (2 * n)
        for i in range(n - 1, -1, -1):
            out[2 * i], out[2 * i + 1] = g.T @ acts[i], g.sum(axis=0)
            if i:
                g = g @ ws[i]
                g *= d1s[i - 1]
        return tuple(out)

    def gradient():
        f, acts, d1s = forward()
        g = f - y
        g *= 1.0 / b
        return backward(g, acts, d1s)

    def ggn_vp():
        _, acts, d1s = forward()
        jv, _ = tangent(acts, d1s)
        jv *= 1.0 / b
        return backward(jv, acts, d1s)

    def hvp():
        f, acts, d1s = forward()
        jv, tas = tangent(acts, d1s)
        g = f - y
        g *= 1.0 / b
        out = [None] * (2 * n)
        rg = jv
        rg *= 1.0 / b  # R{dl/df} = H J v / B with H = I
        for i in range(n - 1, -1, -1):
            rw = rg.T @ acts[i]
            if tas[i] is not None:
                rw += g.T @ tas[i]
            out[2 * i], out[2 * i + 1] = rw, rg.sum(axis=0)
            if i:
                ga = g @ ws[i]  # the gradient's backward step, and its R-derivative
                rga = rg @ ws[i]
                rga += g @ vw[i]
                rga *= d1s[i - 1]  # R{ga d1} = R{ga} d1 + ga R{d1}, R{d1} = -2 a R{a}
                rd1 = acts[i] * tas[i]
                rd1 *= -2.0
                rd1 *= ga
                rga += rd1
                ga *= d1s[i - 1]
                g, rg = ga, rga
        return tuple(out)

    return {"gradient": gradient, "ggn_vp": ggn_vp, "hvp": hvp}


def run_problem(ac, np, P, name, rounds, use_jax):
    model, b = P.build_model(ac, name)
    data = P.make_data(ac, model, b, "float64")
    args = data["params"], data["x"], data["y"], data["v"]
    impls = {"numpy floor": floor_fns(np, *args), "arraycurv": P.arraycurv_fns(ac, model, data, False),
             "arraycurv cached": P.arraycurv_fns(ac, model, data, True)}
    if use_jax:
        impls["jax"] = P.jax_fns(ac, model, data)
    from compare_peers import _rel, time_rounds

    for impl, fns in impls.items():
        for r in ROUTINES if impl != "arraycurv" else ():
            err = _rel(fns[r](), impls["arraycurv"][r]())
            if not err <= 1e-12:
                raise SystemExit(f"numpy_floor: {impl} {r} on {name} differs from arraycurv by {err:.3g}")
    fns = {f"{i} {r}": impls[i][r] for i in impls for r in ROUTINES}
    return time_rounds(fns, rounds)["alone"]  # interleaved rounds, as in compare_peers


def table(res, use_jax):
    cols = ["numpy floor", "arraycurv", "arraycurv cached"] + (["jax"] if use_jax else [])
    head = "| problem | routine | " + " | ".join(cols) + " | arraycurv / floor |" + (
        " floor / JAX |" if use_jax else "")
    lines = [head, "|---|---|" + "---:|" * (len(cols) + 1 + use_jax)]
    for name, times in res.items():
        for k, r in enumerate(ROUTINES):
            t = {c: times[f"{c} {r}"] for c in cols}
            row = [name if k == 0 else "", r] + [f"{t[c] * 1e3:.3g} ms" for c in cols]
            row.append(f"{t['arraycurv'] / t['numpy floor']:.2f}")
            if use_jax:
                row.append(f"{t['numpy floor'] / t['jax']:.2f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="mlp64,mlp784")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import importlib.util

    use_jax = not args.no_jax and importlib.util.find_spec("jax") is not None
    if use_jax:
        import jax

        jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import numpy as np
    import peer_impls as P
    from timing import write_result

    import arraycurv as ac

    res = {}
    mlps = [k for k, p in P.PROBLEMS.items() if p[0] == "mlp"]
    for name in args.problems.split(","):
        if name not in mlps:
            raise SystemExit(f"--problems: expected MLP problems among {mlps}, got {name!r}")
        res[name] = run_problem(ac, np, P, name, args.rounds, use_jax)
    print("one core, one BLAS thread, float64, MSE; median of", args.rounds, "interleaved rounds\n")
    print(table(res, use_jax))
    write_result(args.out, {"times_s": res, "rounds": args.rounds, "jax": use_jax,
                            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None})


if __name__ == "__main__":
    _pin_one_core()
    main()
