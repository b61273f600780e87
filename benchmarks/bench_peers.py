"""Benchmark: arraycurv against its peers (JAX jit, PyTorch autograd), side by side in one process.

For the MLPs 784-300-100-10 (B = 128) and 64-64-64-10 (B = 256), tanh, MSE, float64, it
times the gradient of the mean loss, the GGN-vector product and the Hessian-vector
product with

* arraycurv on NumPy: the public verbs (``value_and_grad``, ``ggn_vp``, ``hvp``: one
  forward pass each, validation included) and the forms with the forward pass cached
  (``linearize`` once, then the linearization's products);
* JAX (when installed): ``jax.jit`` of ``value_and_grad``, of the GGN product
  ``jvp`` -> loss-Hessian -> ``vjp`` and of ``jvp(grad)`` (forward-over-reverse HVP);
* PyTorch (when installed): eager autograd (``torch.func`` transforms ``vjp``/``jvp``).

After checking that every peer's result agrees with arraycurv's to 1e-10 (relative), the
routines are timed in interleaved rounds (each round calls every routine once, so load
from other processes hits all alike) and the median over rounds is reported. Then the
explicit GGN of the 64-64-64-10 MLP (P = 8970, softmax cross-entropy and MSE) is timed
against its GEMM-rate estimate: the structured assembly costs about ``B P^2`` multiply-adds
(``2 B P^2`` flops for all blocks, about half of which are computed), timed here as the
(P x B)(B x P) matmul of the same size.

Usage::

    python benchmarks/bench_peers.py [--rounds 11] [--threads 1] [--no-torch] [--no-jax] [--skip-ggn]

``--threads`` limits the BLAS threads of NumPy and PyTorch (threadpoolctl /
``torch.set_num_threads``) and of XLA (its flag is set before JAX is imported). Prints a
table and writes benchmarks/results/peers.json atomically.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "peers.json"
MLPS = (((784, 300, 100, 10), 128), ((64, 64, 64, 10), 256))


def median_interleaved(fns, rounds):
    """Median wall time (s) of each callable of ``fns`` over ``rounds`` round-robin rounds."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _rel(a, b):
    import numpy as np

    a, b = np.concatenate([np.ravel(t) for t in a]), np.concatenate([np.ravel(t) for t in b])
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ----------------------------------------------------------------------- arraycurv
def arraycurv_fns(ac, sizes, b):
    from arraycurv.models import sequential as seq

    xp = ac.backend.namespace_by_name("numpy")
    model = ac.mlp(sizes, "tanh")
    params = ac.init_params(model, 0, xp)
    x = ac.backend.normal(1, (b, sizes[0]), xp)
    y = ac.backend.normal(2, (b, sizes[-1]), xp)
    v = ac.init_params(model, 3, xp, gain=0.5)
    batch, loss = (x, y), ac.MSE()
    lin = ac.linearize(model, params, x)

    def ggn_cached():
        jv = lin.jvp(v)
        return lin.vjp(ac.losses.loss_hessian_vp(loss, lin.outputs, jv) / b)

    def grad_cached():
        return lin.vjp(ac.losses.loss_grad(loss, lin.outputs, y) / b)

    fns = {
        "gradient": lambda: ac.value_and_grad(model, params, batch)[1],
        "ggn_vp": lambda: ac.ggn_vp(model, params, batch, v),
        "hvp": lambda: ac.hvp(model, params, batch, v),
        "gradient (cached fwd)": grad_cached,
        "ggn_vp (cached fwd)": ggn_cached,
        "hvp (cached fwd)": lambda: seq.hvp_linearized(lin, y, v, loss),
    }
    data = {"params": params, "x": x, "y": y, "v": v}
    return fns, data


# ----------------------------------------------------------------------------- JAX
def jax_fns(data):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    params = tuple(jnp.asarray(p) for p in data["params"])
    v = tuple(jnp.asarray(t) for t in data["v"])
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    b = x.shape[0]

    def f(p, x):
        a = x
        n = len(p) // 2
        for i in range(n):
            a = a @ p[2 * i].T + p[2 * i + 1]
            if i < n - 1:
                a = jnp.tanh(a)
        return a

    def loss(p):
        r = f(p, x) - y
        return 0.5 * jnp.sum(r * r) / b

    grad = jax.jit(jax.grad(loss))

    @jax.jit
    def ggn(p, v):
        out, jv = jax.jvp(lambda q: f(q, x), (p,), (v,))
        _, pull = jax.vjp(lambda q: f(q, x), p)
        return pull(jv / b)[0]

    @jax.jit
    def hvp(p, v):
        return jax.jvp(jax.grad(loss), (p,), (v,))[1]

    def ready(out):
        return jax.block_until_ready(out)

    fns = {
        "gradient": lambda: ready(grad(params)),
        "ggn_vp": lambda: ready(ggn(params, v)),
        "hvp": lambda: ready(hvp(params, v)),
    }
    return fns


# ------------------------------------------------------------------------- PyTorch
def torch_fns(data):
    import torch
    from torch.func import grad, jvp, vjp

    params = tuple(torch.from_numpy(p.copy()) for p in data["params"])
    v = tuple(torch.from_numpy(t.copy()) for t in data["v"])
    x, y = torch.from_numpy(data["x"].copy()), torch.from_numpy(data["y"].copy())
    b = x.shape[0]

    def f(p):
        a = x
        n = len(p) // 2
        for i in range(n):
            a = torch.addmm(p[2 * i + 1], a, p[2 * i].T)
            if i < n - 1:
                a = torch.tanh(a)
        return a

    def loss(p):
        r = f(p) - y
        return 0.5 * torch.sum(r * r) / b

    def gradient():
        ps = tuple(t.detach().requires_grad_() for t in params)
        return torch.autograd.grad(loss(ps), ps)

    def ggn():
        out, jv = jvp(f, (params,), (v,))
        _, pull = vjp(f, params)
        return pull(jv / b)[0]

    def hvp():
        return jvp(grad(loss), (params,), (v,))[1]

    return {"gradient": gradient, "ggn_vp": ggn, "hvp": hvp}


def _check(name, peer, ref, tol=1e-10):
    import numpy as np

    for key, fn in peer.items():
        out = tuple(np.asarray(t) for t in fn())
        err = _rel(out, ref[key])
        if not err <= tol:
            raise SystemExit(f"{name} {key}: relative difference {err:.3g} to arraycurv exceeds {tol}")


# --------------------------------------------------------------------- explicit GGN
def explicit_ggn(ac, repeats):
    xp = ac.backend.namespace_by_name("numpy")
    model = ac.mlp((64, 64, 64, 10), "tanh")
    params = ac.init_params(model, 0, xp)
    b = 256
    x = ac.backend.normal(1, (b, 64), xp)
    out = {"num_params": ac.params.num_params(ac.param_shapes(model))}
    p = out["num_params"]
    for name, loss, y in (("softmax_ce", ac.SoftmaxCrossEntropy(), ac.backend.integers(2, 0, 10, (b,), xp)),
                          ("mse", ac.MSE(), ac.backend.normal(2, (b, 10), xp))):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ac.ggn_matrix(model, params, (x, y), loss)
            ts.append(time.perf_counter() - t0)
        out[f"ggn_matrix_{name}_s"] = min(ts)
    a = ac.backend.normal(4, (b, p), xp)
    ts = []
    for _ in range(max(2, repeats)):
        t0 = time.perf_counter()
        xp.matmul(xp.matrix_transpose(a), a)
        ts.append(time.perf_counter() - t0)
    out["gemm_BxP_s"] = min(ts)
    out["gemm_gflops"] = 2.0 * b * p * p / out["gemm_BxP_s"] / 1e9
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11, help="interleaved rounds (the median is reported)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / XLA threads (default 1)")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--skip-ggn", action="store_true", help="skip the explicit GGN")
    ap.add_argument("--ggn-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                          f"intra_op_parallelism_threads={args.threads}")
    import arraycurv as ac

    use_jax = not args.no_jax and _have("jax")
    use_torch = not args.no_torch and _have("torch")
    if use_torch:
        import torch

        torch.set_num_threads(args.threads)
    result = {"benchmark": "peers", "config": vars(args), "mlps": {}}
    with _blas_threads(ac, args.threads):
        for sizes, b in MLPS:
            key = "-".join(map(str, sizes)) + f", B={b}"
            fns, data = arraycurv_fns(ac, sizes, b)
            ref = {k: tuple(ac.backend.to_numpy(t) for t in fns[k]()) for k in ("gradient", "ggn_vp", "hvp")}
            allf = {("arraycurv", k): f for k, f in fns.items()}
            if use_jax:
                jf = jax_fns(data)
                _check("jax", jf, ref)
                allf.update({("jax jit", k): f for k, f in jf.items()})
            if use_torch:
                tf = torch_fns(data)
                _check("torch", tf, ref)
                allf.update({("torch", k): f for k, f in tf.items()})
            t = median_interleaved(allf, args.rounds)
            result["mlps"][key] = {f"{who}: {what}": s for (who, what), s in t.items()}
            _print_table(key, t, use_jax, use_torch)
        if not args.skip_ggn:
            g = explicit_ggn(ac, args.ggn_repeats)
            result["explicit_ggn"] = g
            est = g["gemm_BxP_s"] / 2  # about half of the blocks of the (P x B)(B x P) product are computed
            print(f"\nexplicit GGN, MLP 64-64-64-10, B = 256, P = {g['num_params']}, float64 "
                  f"(GEMM {g['gemm_gflops']:.1f} GFLOP/s; GEMM-rate estimate {est:.3f} s):")
            for name in ("softmax_ce", "mse"):
                s = g[f"ggn_matrix_{name}_s"]
                print(f"  ggn_matrix {name:<11}{s:8.3f} s  = {est / s:5.2f} of the GEMM rate")
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "cpu_count": os.cpu_count(),
                         "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    from arraycurv import results

    results.write_json(args.out, result)
    print("wrote", args.out)
    return result


def _blas_threads(ac, n):
    if hasattr(ac.backend, "blas_threads"):
        return ac.backend.blas_threads(n)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n)


def _have(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _print_table(key, t, use_jax, use_torch):
    cols = ["arraycurv", "arraycurv (cached fwd)"] + (["jax jit"] if use_jax else []) + (["torch"] if use_torch else [])
    print(f"\nMLP {key}, tanh, MSE, float64 (median ms)")
    print(f"{'routine':<10}" + "".join(f"{c:>24}" for c in cols) + (f"{'arraycurv / jax':>17}" if use_jax else ""))
    for what in ("gradient", "ggn_vp", "hvp"):
        row = [t[("arraycurv", what)], t[("arraycurv", what + " (cached fwd)")]]
        row += [t[("jax jit", what)]] if use_jax else []
        row += [t[("torch", what)]] if use_torch else []
        ratio = f"{t[('arraycurv', what)] / t[('jax jit', what)]:>17.2f}" if use_jax else ""
        print(f"{what:<10}" + "".join(f"{s * 1e3:>24.3f}" for s in row) + ratio)


if __name__ == "__main__":
    main()
