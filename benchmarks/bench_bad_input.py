"""Tally of the fuzz harness of issue 9 (tests/test_bad_input*.py).

Runs every malformed call of the tables (``CASES`` of each ``tests/test_bad_input*.py``)
and every valid-but-extreme call (``FINITE``), and prints::

    N malformed calls, M clear errors naming the argument (share), K silent non-finite

A *clear* error is a ``TypeError``/``ValueError`` whose message starts with
``"<argument>: expected"``; *silent non-finite* counts calls that returned NaN/Inf
without raising (malformed calls that returned at all, plus extreme-but-valid calls
with a non-finite result); *unclear* the other exceptions and *no error* finite results
from malformed calls. ``--list`` prints each call that is not clear.

Usage: ``python benchmarks/bench_bad_input.py [--list]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import pathlib
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _leaves(out):
    if isinstance(out, (tuple, list)):
        for o in out:
            yield from _leaves(o)
    elif hasattr(out, "shape") and hasattr(out, "dtype"):
        yield out


def _nonfinite(out) -> bool:
    from arraycurv import backend

    np = importlib.import_module("numpy")
    for leaf in _leaves(out):
        a = backend.to_numpy(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            return True
    return False


def run(verbose: bool = False) -> dict:
    sys.path.insert(0, str(ROOT))
    warnings.simplefilter("ignore")
    mods = [importlib.import_module(f"tests.{p.stem}") for p in sorted((ROOT / "tests").glob("test_bad_input*.py"))]
    counts = collections.Counter()
    lines = []
    t0 = time.perf_counter()
    for mod in mods:
        for cid, arg, fn in mod.CASES:
            try:
                out = fn()
            except Exception as exc:  # noqa: BLE001 - what the tally measures
                msg = str(exc)
                ok = isinstance(exc, (TypeError, ValueError)) and mod.__name__ and _clear(arg, msg)
                kind = "clear" if ok else "unclear"
                detail = f"{type(exc).__name__}: {msg}"
            else:
                kind = "silent non-finite" if _nonfinite(out) else "no error"
                detail = f"returned {type(out).__name__}"
            counts[kind] += 1
            if kind != "clear":
                lines.append(f"{mod.__name__.split('.')[-1]}::{cid} [{arg}] {kind}: {detail[:200]}")
        for cid, (fn, _check) in getattr(mod, "FINITE", {}).items():
            counts["extreme"] += 1
            if _nonfinite(fn()):
                counts["extreme non-finite"] += 1
                lines.append(f"{cid}: non-finite result from a valid call")
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    if verbose:
        print("\n".join(lines))
    return counts


def _clear(arg, msg) -> bool:
    import re

    return re.match(rf"^(?:{arg}): expected ", msg) is not None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print every call without a clear error")
    args = ap.parse_args(argv)
    c = run(args.list)
    n = sum(c[k] for k in ("clear", "unclear", "no error", "silent non-finite"))
    k = c["silent non-finite"] + c["extreme non-finite"]
    print(f"{n} malformed calls, {c['clear']} clear errors naming the argument ({100 * c['clear'] / n:.1f}%), "
          f"{k} silent non-finite")
    print(f"  unclear errors: {c['unclear']}, finite results without error: {c['no error']}, "
          f"silent non-finite (malformed / extreme valid of {c['extreme']}): {c['silent non-finite']} / "
          f"{c['extreme non-finite']}; {c['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
