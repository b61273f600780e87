"""Timing helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import time

import arraycurv as ac


def sync(out):
    """Force completion on asynchronous backends (CuPy) by moving one scalar of the last
    array leaf of ``out`` (an array or nested tuples/lists of arrays) to the host."""
    leaf = out
    while isinstance(leaf, (tuple, list)):
        leaf = leaf[-1]
    if ac.backend.is_array(leaf):
        xp = ac.backend.namespace_of(out=leaf)
        float(ac.backend.to_numpy(xp.sum(leaf)))
    return out


def timed(fn, repeats, sync=sync, *, long_warmup=float("inf")):
    """``(best wall time in s over repeats calls after one warm-up call, last result)``.

    When the warm-up alone takes longer than ``long_warmup`` seconds it counts as the
    only measurement (for calls of minutes). ``sync(result)`` waits for the result.
    """
    t0 = time.perf_counter()
    out = sync(fn())
    best = time.perf_counter() - t0
    if best > long_warmup:
        return best, out
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sync(fn())
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_of(fn, repeats, sync=sync):
    """Best wall time (s) of ``repeats`` calls of ``fn`` after one warm-up call."""
    return timed(fn, repeats, sync)[0]
