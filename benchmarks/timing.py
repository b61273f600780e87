"""Timing helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import os
import platform
import time

import arraycurv as ac

#: The environment variables that set the BLAS thread count.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


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


def best_of_interleaved(fns, repeats, sync=sync):
    """Best wall time (s) of each of ``fns`` (a dict of callables), timed round-robin.

    Each round calls every function once, so a burst of load from other processes hits
    all of them alike and the ratios between them stay meaningful on a shared machine.
    """
    for fn in fns.values():
        sync(fn())
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            sync(fn())
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def machine_info(*, threads_key: str | None = "threads", load_average: bool = True) -> dict:
    """The machine a benchmark ran on: Python, platform, CPU count; with ``threads_key``
    the BLAS thread variables under that key; with ``load_average`` the load average."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    if threads_key is not None:
        info[threads_key] = {k: os.environ.get(k) for k in BLAS_THREAD_VARIABLES}
    if load_average:
        info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


def write_result(path, result: dict, **machine) -> dict:
    """Add ``machine`` (:func:`machine_info` with the keywords ``machine``) and ``time`` to
    ``result``, write it as JSON to ``path``, say so, and return it."""
    from arraycurv import results

    result["machine"] = machine_info(**machine)
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    results.write_json(path, result)
    print("wrote", path)
    return result
