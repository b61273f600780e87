"""Benchmark: this checkout against another one (e.g. before a refactoring), in one run.

Each round starts one fresh process per checkout (interleaved, so that load bursts hit
both alike) that imports arraycurv from that checkout and times, best of ``--repeats``
calls after a warm-up:

* the import time of ``import arraycurv`` (in its own fresh process);
* gradient (``value_and_grad``), ``ggn_vp`` and ``hvp`` on the deep linear network 16 x 20
  (batch 1000), the MLP 64-64-64-10 (batch 256) and the MLP 784-300-100-10 (batch 128),
  float64, MSE;
* the explicit GGN (``ggn_matrix``) of the deep linear 16 x 20 and of the MLP 64-64-64-10.

Only names that both the flat pre-0.2 API and today's API export at the top level are
used, so any two checkouts compare. The median over rounds of each process's best time
is reported, with the ratio this/other.

Usage::

    git worktree add /tmp/before <commit>
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_compare.py --other /tmp/before [--rounds 5]

Prints a table and writes benchmarks/results/compare.json atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "compare.json"

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import arraycurv as ac
t_import = time.perf_counter() - t0
if sys.argv[1] == "import":
    print(json.dumps({"import": t_import})); sys.exit()
repeats = int(sys.argv[2])
normal = getattr(ac, "normal", None) or ac.backend.normal

def sync(out):
    return out

def best(fn, r=repeats):
    fn()
    b = float("inf")
    for _ in range(r):
        t = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t)
    return b

out = {}
cases = [("dl16x20", ac.DeepLinear((20,) * 17), 1000, 20, 20),
         ("mlp64", ac.mlp((64, 64, 64, 10)), 256, 64, 10),
         ("mlp784", ac.mlp((784, 300, 100, 10)), 128, 784, 10)]
for name, model, b, nin, nout in cases:
    params = ac.init_params(model, 0)
    v = ac.init_params(model, 3)
    x = normal(1, (b, nin)); y = normal(2, (b, nout))
    batch = (x, y)
    out[name + " gradient"] = best(lambda: ac.value_and_grad(model, params, batch))
    out[name + " ggn_vp"] = best(lambda: ac.ggn_vp(model, params, batch, v))
    out[name + " hvp"] = best(lambda: ac.hvp(model, params, batch, v))
    if name != "mlp784":
        out[name + " ggn_matrix"] = best(lambda: ac.ggn_matrix(model, params, batch), 2)
print(json.dumps(out))
"""


def _run(root: pathlib.Path, what: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, "-c", WORKER, what, str(repeats)], env=env, cwd=str(root),
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="path of the other checkout (e.g. a git worktree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    roots = {"this": ROOT, "other": pathlib.Path(args.other).resolve()}
    samples = {k: {} for k in roots}
    for _ in range(args.rounds):
        for key, root in roots.items():
            for what in ("import", "run"):
                for q, t in _run(root, what, args.repeats).items():
                    samples[key].setdefault(q, []).append(t)
    med = {k: {q: statistics.median(ts) for q, ts in s.items()} for k, s in samples.items()}
    print(f"median over {args.rounds} rounds of the best of {args.repeats} calls; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"{'quantity':<24}{'other (ms)':>12}{'this (ms)':>12}{'this/other':>12}")
    for q in med["other"]:
        a, b = med["other"][q], med["this"].get(q, float("nan"))
        print(f"{q:<24}{a * 1e3:>12.3f}{b * 1e3:>12.3f}{b / a:>12.2f}")
    sys.path.insert(0, str(ROOT))
    from arraycurv import results

    results.write_json(args.out, {"benchmark": "compare", "other": str(roots["other"]), "rounds": args.rounds,
                                  "repeats": args.repeats, "median_seconds": med})
    print("wrote", args.out)
    return med


if __name__ == "__main__":
    main()
