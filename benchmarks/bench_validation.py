"""Benchmark: the share of argument validation in a small ``ggn_vp`` (issue 8, "validate once").

Two small problems where validation used to dominate: a deep linear network 8-8-8-8 and an
MLP 8-16-16-8 (tanh), batch B = 32, float64, NumPy. For each, in one run:

* ``public``: ``arraycurv.ggn_vp(model, params, batch, v)``, validated once at the boundary
  (:func:`arraycurv.validation.check_call`);
* ``trusted``: the implementation behind it, ``ggn_vp.trusted(..., xp=xp)``, which does
  the same arithmetic and no validation;
* ``before``: the public ``ggn_vp`` of the code before the restructure, when a checkout of it
  is given with ``--before PATH`` (timed in a subprocess with ``PYTHONPATH=PATH``, same
  problem, same seeds).

The validation share is ``1 - trusted / public`` (and ``1 - trusted / before`` for the old
code: the arithmetic of the closed forms is unchanged, so today's trusted time is the
work both versions do). Aim: below 15%. Times are the best of ``--repeats`` loops of
``--number`` calls,
public and trusted loops interleaved.

Usage::

    python benchmarks/bench_validation.py [--before /tmp/before] [--repeats 7] [--number 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import timeit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

# One snippet builds the problems, for today's code and for the old flat API alike.
SETUP = """
import arraycurv as ac
import numpy as np
def problems():
    out = {}
    for name, model in (("deep_linear_8x4", ac.DeepLinear((8, 8, 8, 8))), ("mlp_8_16_16_8", ac.mlp((8, 16, 16, 8)))):
        params = ac.init_params(model, 0)
        v = ac.init_params(model, 1)
        x = np.random.default_rng(2).standard_normal((32, 8))
        y = np.random.default_rng(3).standard_normal((32, 8))
        out[name] = (model, params, (x, y), v)
    return out
"""


def best(fn, repeats, number):
    """Best time per call (s) over ``repeats`` loops of ``number`` calls, after a warm-up."""
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number


def measure_before(path, repeats, number):
    """Per-problem time of the old public ``ggn_vp`` (subprocess with PYTHONPATH=path)."""
    code = SETUP + f"""
import json, timeit
res = {{}}
for name, (model, params, batch, v) in problems().items():
    fn = lambda: ac.ggn_vp(model, params, batch, v)
    fn()
    res[name] = min(timeit.repeat(fn, number={number}, repeat={repeats})) / {number}
print(json.dumps(res))
"""
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=str(path))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(ac, problem, repeats, number):
    """(public, trusted) time per call of ggn_vp for one problem."""
    model, params, batch, v = problem
    xp = ac.backend.namespace_of(params=params)
    fns = (lambda: ac.ggn_vp(model, params, batch, v), lambda: ac.ggn_vp.trusted(model, params, batch, v, xp=xp))
    times = ([], [])
    for _ in range(repeats):  # interleaved, so that a busy machine slows both alike
        for fn, out in zip(fns, times):
            out.append(best(fn, 1, number))
    return min(times[0]), min(times[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, help="checkout of the code before the restructure")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    args = ap.parse_args(argv)

    ns: dict = {}
    exec(SETUP, ns)  # noqa: S102 - the shared problem definition above
    ac = ns["ac"]
    before = measure_before(args.before, args.repeats, args.number) if args.before else {}
    rows = []
    for name, problem in ns["problems"]().items():
        public, trusted = _measure(ac, problem, args.repeats, args.number)
        row = {"problem": name, "public_us": 1e6 * public, "trusted_us": 1e6 * trusted,
               "share_after": 1.0 - trusted / public}
        if name in before:
            row["before_us"] = 1e6 * before[name]
            row["share_before"] = 1.0 - trusted / before[name]
        rows.append(row)
    head = (f"{'problem':<18} {'before us':>10} {'public us':>10} {'trusted us':>11} "
            f"{'share before':>13} {'share now':>10}")
    print(head)
    for r in rows:
        b = f"{r['before_us']:10.1f}" if "before_us" in r else f"{'-':>10}"
        sb = f"{100 * r['share_before']:12.0f}%" if "share_before" in r else f"{'-':>13}"
        print(f"{r['problem']:<18} {b} {r['public_us']:10.1f} {r['trusted_us']:11.1f} {sb} "
              f"{100 * r['share_after']:9.0f}%")
    return rows


if __name__ == "__main__":
    main()
