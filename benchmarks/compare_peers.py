"""Benchmark: arraycurv against its peers (JAX jit, PyTorch ``torch.func``, curvlinops), side
by side in one process per thread count, as times and as fractions of the GEMM rate.

Problems (benchmarks/peer_impls.py): the MLPs 784-300-100-10 (B = 128) and 64-64-64-10
(B = 256), tanh; the deep linear network 16 x 20 (``DeepLinear((20,) * 17)``, B = 1000);
LeNet-5 on 32x32x3 (``arraycurv.lenet5((3, 32, 32))``, tanh, average pooling, B = 128);
MSE; float64 and float32. Routines: gradient of the mean loss, GGN-vector product,
Hessian-vector product, each with

* arraycurv on NumPy: the public verbs (``value_and_grad``, ``ggn_vp``, ``hvp``: one
  forward pass each, validation included) and the cached forms (``linearize`` once, then
  the linearization's products; for the deep linear network the batch moments);
* JAX (when installed): ``jax.jit`` of ``grad``, of jvp -> loss Hessian -> vjp and of
  ``jvp(grad)``; the LeNet uses ``lax.conv_general_dilated`` / ``lax.reduce_window``;
* PyTorch (when installed): eager autograd / ``torch.func``;
* curvlinops (when installed): ``GGNLinearOperator`` and ``HessianLinearOperator``, and
  beside them arraycurv's own linear operators (``ggn_operator`` / ``hessian_operator``
  built once on the batch, as curvlinops' are, applied to the flat direction: column
  "arraycurv operator", ratio "curvlinops / operator"; curvlinops reruns the forward pass
  in every product by design, arraycurv's operators keep the linearization).

Then the explicit GGN (``ggn_matrix``) of the 64-64-64-10 MLP (P = 8970, softmax
cross-entropy) and of the deep linear network (P = 6400, MSE), against JAX's ``vmap`` of
its GGN product over identity columns (MLP only, one timed call: about 20 s on 2 cores;
``--no-ggn-jax`` skips it, ``--quick`` too unless ``--ggn-jax``).

Before timing, every peer's result is checked against arraycurv's public verb: relative
max-norm difference at most 1e-10 in float64 and 1e-4 in float32 (single precision sums of
up to 10^5 terms; observed <= 4e-6). Routines are timed in interleaved rounds (each round
calls every routine, repeated to at least ~4 ms, so bursts of load hit all alike); the
median over rounds is reported. Rates: analytic flop counts (``peer_impls.flop_counts``:
gradient 6BW - 2BW1, GGN product 10BW - 4BW1, HVP 18BW - 10BW1 with W the forward
multiply-adds per sample and W1 those of the first layer; cached forms 2BW less; explicit
GGN B P^2), the same count for every implementation, over the time, as a fraction of the
NumPy float64/float32 GEMM rate (1024 x 1024 matmul, median of 5) of the same process.

Threads: each thread count runs in its own process (XLA reads its flags once): NumPy's
BLAS (OPENBLAS/OMP/MKL_NUM_THREADS, ``arraycurv.backend.blas_threads``), PyTorch
(``torch.set_num_threads``) and XLA (1 thread: ``--xla_cpu_multi_thread_eigen=false``).
For n < cores the process is also pinned to n cores, n = 1 included: XLA has no
thread-count flag, and its dot products use every core even with that flag (measured:
a 1000^3 float64 JAX matmul ran at 130 GFLOP/s, twice the one-core rate, until pinned).

Each routine's timed block in a round starts after one untimed call: the previous
routine's thread pool (PyTorch's OpenMP threads spin after a call) otherwise slows the
next library's first calls (measured: arraycurv's 2-thread gradient of the 784-300-100-10
MLP took 6.9-12 ms right after PyTorch's routines, 3.1 ms without PyTorch in the process).

``--competing [blas|blas1|spin]`` starts a competing CPU-bound process (``blas``, the
default: NumPy 512 x 512 matmuls in a loop with 2 BLAS threads; ``blas1``: the same with 1
thread, as in docs/backend.md; ``spin``: a pure-Python busy loop per core), paused with
SIGSTOP and resumed with SIGCONT so that every round is timed once alone and once
competing, and reports each routine's slowdown competing / alone next to the GEMM's own
slowdown (a fair share of the cores: a routine far above it collapses, e.g. spin-waiting
BLAS threads).

Usage::

    python benchmarks/compare_peers.py [--quick] [--threads 1,2] [--dtypes float64,float32]
        [--problems mlp784,mlp64,dl16x20,lenet5] [--rounds 11] [--competing [blas|blas1|spin]]
        [--no-jax] [--no-torch] [--no-curvlinops] [--skip-ggn] [--[no-]ggn-jax] [--out PATH]

``--quick``: 3 rounds, one explicit-GGN round, explicit GGN in float64 only, no JAX GGN.

Prints markdown tables and writes benchmarks/results/compare_peers.json atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import peer_impls as P  # noqa: E402

RESULTS = HERE / "results" / "compare_peers.json"
TOL = {"float64": 1e-10, "float32": 1e-4}
IMPLS = ("arraycurv", "arraycurv cached", "arraycurv operator", "jax", "torch", "curvlinops")
LABELS = {"arraycurv": "arraycurv", "arraycurv cached": "arraycurv, cached", "arraycurv operator": "arraycurv operator",
          "jax": "JAX jit", "torch": "torch.func", "curvlinops": "curvlinops"}
GGN_PROBLEMS = {"mlp64": "softmax_ce", "dl16x20": "mse"}
#: (column, numerator, denominator) of the ratio columns of the product tables.
RATIOS = (("arraycurv / JAX", "arraycurv", "jax"), ("JAX / cached", "jax", "arraycurv cached"),
          ("curvlinops / arraycurv", "curvlinops", "arraycurv"),
          ("curvlinops / operator", "curvlinops", "arraycurv operator"))

COMPETITOR = r"""
import ctypes, os, signal, sys
if hasattr(os, "sched_setaffinity"):  # another process on the machine: not confined to the worker's cores
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
try:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the benchmark
except Exception:
    pass
if sys.argv[1].startswith("blas"):
    import numpy as np
    a = np.random.default_rng(0).standard_normal((512, 512))
    while True:
        a @ a
else:
    while True:
        pass
"""


# ------------------------------------------------------------------------- timing
class Competitor:
    """Competing CPU-bound process(es), started paused; :meth:`run` switches them on/off."""

    def __init__(self, kind: str):
        n = (os.cpu_count() or 1) if kind == "spin" else 1
        t = "1" if kind == "blas1" else "2"
        env = dict(os.environ, OPENBLAS_NUM_THREADS=t, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t)
        self.kind = kind
        self.procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR, kind], env=env) for _ in range(n)]
        time.sleep(1.0)  # let NumPy import
        self.running = True
        self.run(False)

    def run(self, on: bool):
        if on != self.running:
            for p in self.procs:
                os.kill(p.pid, signal.SIGCONT if on else signal.SIGSTOP)
            self.running = on
            time.sleep(0.02 if on else 0.005)  # let the signal land (and the BLAS threads wake)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


def time_rounds(fns, rounds, competitor=None, target=0.004):
    """Median seconds per call of each of ``fns`` over ``rounds`` interleaved rounds, alone
    and (with ``competitor``) competing: ``{"alone": {key: s}, "competing": {...}}``.

    Each function is warmed up and repeated within a round to at least ``target`` seconds;
    ``target=None``: one call per round and no warm-up (long calls the caller warmed up).
    """
    inner = dict.fromkeys(fns, 1)
    for key, fn in fns.items() if target is not None else ():
        fn()
        t0 = time.perf_counter()
        fn()
        inner[key] = max(1, min(100, int(target / max(time.perf_counter() - t0, 1e-7))))
    modes = ("alone", "competing") if competitor else ("alone",)
    samples = {m: {k: [] for k in fns} for m in modes}
    for _ in range(rounds):
        for m in modes:
            if competitor:
                competitor.run(m == "competing")
            for key, fn in fns.items():
                n = inner[key]
                if target is not None:
                    fn()  # untimed: lets the previous routine's thread pool (OpenMP, XLA) wind down
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[m][key].append((time.perf_counter() - t0) / n)
    if competitor:
        competitor.run(False)
    return {m: {k: statistics.median(v) for k, v in s.items()} for m, s in samples.items()}


def gemm_gflops(dtype, competitor=None, n=1024, repeats=5):
    """GFLOP/s of an n x n NumPy matmul (median of ``repeats``), alone and competing."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    t = time_rounds({"gemm": lambda: a @ a}, repeats, competitor, target=0.0)  # median of repeats
    return {m: 2.0 * n**3 / s["gemm"] / 1e9 for m, s in t.items()}


# ------------------------------------------------------------------- a problem
def _rel(a, b):
    import numpy as np

    a = np.concatenate([np.ravel(np.asarray(t, dtype=np.float64)) for t in a])
    b = np.concatenate([np.ravel(np.asarray(t, dtype=np.float64)) for t in b])
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def peer_fns(ac, model, data, use, notes):
    """``{(impl, routine): fn}`` of every available implementation, and the curvlinops
    result scale."""
    fns = {("arraycurv", k): f for k, f in P.arraycurv_fns(ac, model, data, False).items()}
    fns.update({("arraycurv cached", k): f for k, f in P.arraycurv_fns(ac, model, data, True).items()})
    if use["curvlinops"]:
        fns.update({("arraycurv operator", k): f for k, f in P.arraycurv_operator_fns(ac, model, data).items()})
    scale = 1.0
    for impl, build in (("jax", P.jax_fns), ("torch", P.torch_fns), ("curvlinops", P.curvlinops_fns)):
        if not use[impl]:
            continue
        try:
            out = build(ac, model, data)
        except Exception as exc:  # a peer that cannot run this problem is reported, not fatal
            notes.append(f"{impl}: {type(exc).__name__}: {exc}")
            continue
        if impl == "curvlinops":
            out, scale = out
        fns.update({(impl, k): f for k, f in out.items()})
    return fns, scale


def check_agreement(fns, dtype, scale):
    """Relative difference of every routine to arraycurv's public verb; exits on a failure."""
    ref = {k: fns[("arraycurv", k)]() for k in P.ROUTINES}
    errs = {}
    for (impl, k), fn in fns.items():
        out = fn()
        if impl == "curvlinops":
            out = [t * scale for t in out]
        errs[f"{impl}: {k}"] = e = _rel(out, ref[k])
        if not e <= TOL[dtype]:
            raise SystemExit(f"{impl} {k} ({dtype}): relative difference {e:.3g} to arraycurv exceeds {TOL[dtype]}")
    return errs


def run_problem(ac, name, dtype, rounds, use, competitor):
    model, b = P.build_model(ac, name)
    data = P.make_data(ac, model, b, dtype)
    notes = []
    fns, scale = peer_fns(ac, model, data, use, notes)
    errs = check_agreement(fns, dtype, scale)
    t = time_rounds({f"{i}: {k}": f for (i, k), f in fns.items()}, rounds, competitor)
    print(f"  {name} {dtype}: " + ", ".join(f"{k} {s * 1e3:.3g} ms" for k, s in t["alone"].items()), flush=True)
    return {"times": t, "agreement": errs, "tolerance": TOL[dtype], "flops": P.flop_counts(ac, model, b),
            "macs_per_sample": P.macs_per_sample(ac, model), "batch": b, "notes": notes}


def run_ggn_matrix(ac, name, dtype, rounds, use_jax, competitor):
    """Explicit GGN: arraycurv (and JAX on the MLP: one timed round, its call takes tens of
    seconds), checked against each other, timed alone/competing after one warm-up call."""
    model, b = P.build_model(ac, name)
    data = P.make_data(ac, model, b, dtype, loss=GGN_PROBLEMS[name])
    fn = P.arraycurv_ggn_matrix(ac, model, data)
    ref, errs = fn(), {}
    t = time_rounds({"arraycurv": fn}, rounds, competitor, target=None)
    if use_jax and name == "mlp64":
        jfn = P.jax_ggn_matrix(ac, model, data)
        errs["jax"] = _rel([jfn()], [ref])
        if not errs["jax"] <= TOL[dtype]:
            raise SystemExit(f"jax ggn_matrix {name} ({dtype}): relative difference {errs['jax']:.3g} exceeds")
        tj = time_rounds({"jax": jfn}, 1, competitor, target=None)
        for m in t:
            t[m].update(tj[m])
    p = ac.params.num_params(ac.param_shapes(model))
    print(f"  ggn_matrix {name} {dtype}: " + ", ".join(f"{k} {s:.3g} s" for k, s in t["alone"].items()), flush=True)
    return {"times": t, "agreement": errs, "num_params": p, "loss": GGN_PROBLEMS[name],
            "flops": P.flop_counts(ac, model, b)["ggn_matrix"]}


# -------------------------------------------------------------------- the worker
def _available(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _import_peers(args):
    """Import the peers before arraycurv limits the pools; returns (use, notes)."""
    use = {"jax": not args.no_jax and _available("jax"), "torch": not args.no_torch and _available("torch")}
    use["curvlinops"] = use["torch"] and not args.no_curvlinops and _available("curvlinops")
    notes = []
    if not use["curvlinops"] and not args.no_curvlinops:
        notes.append("curvlinops not installed (pip install curvlinops-for-pytorch): column skipped")
    if use["jax"]:
        import jax

        jax.config.update("jax_enable_x64", True)
    if use["torch"]:
        import torch

        torch.set_num_threads(args.worker_threads)
    return use, notes


def worker(args):
    n = args.worker_threads
    use, notes = _import_peers(args)
    import arraycurv as ac

    out = {"threads": n, "use": use, "notes": notes, "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "competing": args.competing,
           "problems": {}, "ggn_matrix": {}, "gemm_gflops": {}}
    for note in notes:
        print("note:", note, flush=True)
    with ac.backend.blas_threads(n):
        competitor = Competitor(args.competing) if args.competing else None
        try:
            for dtype in args.dtypes:
                out["gemm_gflops"][dtype] = gemm_gflops(dtype, competitor)
            for dtype in args.dtypes:
                for name in args.problems:
                    out["problems"][f"{name} {dtype}"] = run_problem(ac, name, dtype, args.rounds, use, competitor)
            for dtype in ([] if args.skip_ggn else args.ggn_dtypes):
                for name in GGN_PROBLEMS:
                    out["ggn_matrix"][f"{name} {dtype}"] = run_ggn_matrix(ac, name, dtype, args.ggn_rounds,
                                                                          use["jax"] and args.ggn_jax, competitor)
        finally:
            if competitor:
                competitor.close()
    pathlib.Path(args.worker_out).write_text(json.dumps(out))
    return out


# ---------------------------------------------------------------- orchestration
def worker_env(n):
    """Environment of the worker for ``n`` threads (BLAS variables, XLA flags)."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ARRAYCURV_BLAS_THREADS"):
        env[var] = str(n)
    if n == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def run_worker(argv, n):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "worker.json")
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), *argv,
               "--worker-threads", str(n), "--worker-out", path]
        cores = os.cpu_count() or 1
        pinned = n < cores and hasattr(os, "sched_setaffinity")
        pin = (lambda: os.sched_setaffinity(0, range(n))) if pinned else None
        print(f"\n== threads = {n}", flush=True)
        rc = subprocess.run(cmd, env=worker_env(n), preexec_fn=pin).returncode
        if rc:
            raise SystemExit(f"compare_peers: the worker for {n} thread(s) failed (exit status {rc})")
        return json.loads(pathlib.Path(path).read_text())


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, 1 explicit-GGN round, float64 explicit GGN")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default float64,float32; --quick float64)")
    ap.add_argument("--problems", default=",".join(P.PROBLEMS))
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 11; --quick 3)")
    ap.add_argument("--ggn-rounds", "--ggn-repeats", type=int, default=None, help="explicit GGN rounds (3; quick 1)")
    ap.add_argument("--competing", nargs="?", const="blas", choices=("blas", "blas1", "spin"), default=None,
                    help="time each routine also with a competing CPU-bound process")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-curvlinops", action="store_true")
    ap.add_argument("--skip-ggn", action="store_true", help="skip the explicit GGN")
    ap.add_argument("--ggn-jax", action=argparse.BooleanOptionalAction, default=None,
                    help="time JAX's explicit GGN too (about 20 s a call on 2 cores; default: on unless --quick)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.dtypes = (args.dtypes or ("float64" if args.quick else "float64,float32")).split(",")
    args.problems = args.problems.split(",")
    for p in args.problems:
        if p not in P.PROBLEMS:
            ap.error(f"--problems: expected names from {sorted(P.PROBLEMS)}, got {p!r}")
    args.rounds = args.rounds or (3 if args.quick else 11)
    args.ggn_rounds = args.ggn_rounds or (1 if args.quick else 3)
    args.ggn_dtypes = args.dtypes[:1] if args.quick else args.dtypes
    args.ggn_jax = (not args.quick) if args.ggn_jax is None else args.ggn_jax
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker_threads is not None:
        return worker(args)
    t0 = time.perf_counter()
    runs = {f"threads={n}": run_worker(argv, n) for n in args.threads}
    text = render(runs)
    print("\n" + text)
    result = {"benchmark": "compare_peers", "config": {k: v for k, v in vars(args).items() if "worker" not in k},
              "command": "python benchmarks/compare_peers.py " + " ".join(argv), "runs": runs,
              "markdown": text, "wall_s": time.perf_counter() - t0}
    from timing import write_result

    return write_result(args.out, result)


# ------------------------------------------------------------------------- tables
def _cell(s, flops, gemm):
    if s is None:
        return ""
    t = f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"
    return f"{t} ({flops / s / 1e9 / gemm:.0%})"


def _ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else ""


def product_table(run, dtype, mode="alone"):
    """Markdown table of the products of one run and dtype: time (fraction of GEMM rate)."""
    gemm = run["gemm_gflops"][dtype]["alone"]
    impls = [i for i in IMPLS if any(k.startswith(i + ":") for r in run["problems"].values()
                                     for k in r["times"]["alone"])]
    ratios = [(n, a, b) for n, a, b in RATIOS if a in impls and b in impls]
    head = ["problem", "routine", *[LABELS[i] for i in impls], *[n for n, _, _ in ratios]]
    lines = [f"threads = {run['threads']}, {dtype}, GEMM {gemm:.1f} GFLOP/s; median time (fraction of the "
             f"GEMM rate)", "", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for key, r in run["problems"].items():
        name, dt = key.rsplit(" ", 1)
        if dt != dtype:
            continue
        t = r["times"][mode]
        routines = [k for k in P.ROUTINES if any(key.endswith(": " + k) for key in t)]
        for j, k in enumerate(routines):
            cells = []
            for i in impls:
                fl = r["flops"][k + (" (cached)" if i in ("arraycurv cached", "arraycurv operator") else "")]
                cells.append(_cell(t.get(f"{i}: {k}"), fl, gemm))
            rs = [_ratio(t.get(f"{a}: {k}"), t.get(f"{b}: {k}")) for _, a, b in ratios]
            row = [P.TITLES[name] if j == 0 else "", k, *cells, *rs]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ggn_table(run, dtype):
    gemm = run["gemm_gflops"][dtype]["alone"]
    lines = ["| problem | P | loss | arraycurv | JAX jit (vmap of GGN products) |", "|---|---:|---|---:|---:|"]
    for key, r in run["ggn_matrix"].items():
        name, dt = key.rsplit(" ", 1)
        if dt == dtype:
            t = r["times"]["alone"]
            cells = [_cell(t.get(i), r["flops"], gemm) for i in ("arraycurv", "jax")]
            lines.append(f"| {P.TITLES[name]} | {r['num_params']} | {r['loss']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def slowdown_table(run, dtype):
    """Competing / alone per routine and implementation (``**`` above 1.5x)."""
    rows = [(P.TITLES[key.rsplit(" ", 1)[0]], P.ROUTINES, r["times"]) for key, r in run["problems"].items()
            if key.endswith(dtype)]
    rows += [(P.TITLES[key.rsplit(" ", 1)[0]], ("ggn_matrix",), r["times"]) for key, r in run["ggn_matrix"].items()
             if key.endswith(dtype)]
    keys = sorted({k.split(": ")[0] for _, _, t in rows for k in t["alone"] if ": " in k},
                  key=lambda i: IMPLS.index(i))
    head = ["problem", "routine", *[LABELS[i] for i in keys]]
    g = run["gemm_gflops"][dtype]
    lines = [f"threads = {run['threads']}, {dtype}: slowdown competing ({run.get('competing')}) / alone; the GEMM "
             f"itself {g['alone'] / g['competing']:.2f}x ({g['alone']:.1f} -> {g['competing']:.1f} GFLOP/s)", "",
             "| " + " | ".join(head) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for title, routines, t in rows:
        routines = [k for k in routines if k == "ggn_matrix" or any(key.endswith(": " + k) for key in t["alone"])]
        for j, k in enumerate(routines):
            cells = []
            for i in keys:
                key = i if k == "ggn_matrix" else f"{i}: {k}"
                a, c = t["alone"].get(key), t["competing"].get(key)
                cells.append("" if a is None else (f"**{c / a:.2f}x**" if c / a > 1.5 else f"{c / a:.2f}x"))
            lines.append(f"| {title if j == 0 else ''} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(runs):
    parts = ["arraycurv's default thread policy (``import arraycurv``: ARRAYCURV_BLAS_THREADS, default 1) is the "
             "threads = 1 table; cells: median time (its flops / time as a fraction of the GEMM rate of that run)."]
    for run in runs.values():
        for note in run["notes"]:
            parts.append(f"note: {note}")
        for dtype in run["gemm_gflops"]:
            parts.append(product_table(run, dtype))
            g = ggn_table(run, dtype)
            if g:
                parts.append(f"explicit GGN, threads = {run['threads']}, {dtype}:\n\n" + g)
            if "competing" in run["gemm_gflops"][dtype]:
                parts.append(slowdown_table(run, dtype))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
