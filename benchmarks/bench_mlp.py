"""Benchmark: curvature products of MLPs and a LeNet-5 CNN, as ratios to the gradient time.

Measured in one run (best of N calls after a warm-up each):

1. MLP 784-300-100-10 (tanh), batch 128, float32 and float64:
   gradient (``value_and_grad``); GGN-vector product and Hessian-vector product with the
   forward pass cached (``linearize`` once, then ``jvp_linearized`` + ``vjp_linearized``
   for the GGN, and the cached Pearlmutter R-operator ``hvp_linearized`` for the HVP) and
   uncached (``ggn_vp``, ``hvp``). Aims: cached <= 1.5x and 2x,
   uncached <= 2x and 2.5x the gradient.
2. Explicit GGN (= exact Fisher) of an MLP 64-64-64-10 (tanh), batch 256, P = 8970, float64,
   with ``fisher_exact_matrix`` (Kronecker-structured assembly for MLPs, about B P^2 flops).
   Aim: < 1.5 s. For scale, the time of the stacked-Jacobian route J^T J / B
   (2 B k P^2 flops) and the machine's matmul rate are reported too.
3. LeNet-5 style CNN on 32x32x3 inputs, batch 128: gradient time, and the throughput
   (GFLOP/s) of the convolution layers' forward against float32/float64 matmuls of the
   same shape as their im2col product ((out, C kh kw) @ (C kh kw, B Ho Wo)) and a square
   2048 matmul.

Usage::

    python benchmarks/bench_mlp.py [--repeats N] [--backend numpy] [--skip-jtj]

Prints a table and writes benchmarks/results/mlp.json atomically (temp file + os.replace).
On a machine shared with other jobs, ``OPENBLAS_NUM_THREADS=1`` (set before the run) avoids
the spin-waiting of multi-threaded BLAS that otherwise makes single timings swing by 5x;
the products are timed round-robin so that bursts of load hit all of them alike.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import timing  # noqa: E402
from timing import best_of, best_of_interleaved  # noqa: E402  (benchmarks/timing.py)

import arraycurv as ac  # noqa: E402
from arraycurv.models import sequential as networks  # noqa: E402
from arraycurv.models.layers import Conv2d, layer_forward  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "mlp.json"


def bench_mlp_products(xp, dtype, repeats, sync):
    model = ac.mlp((784, 300, 100, 10), "tanh")
    params = ac.init_params(model, 0, xp, dtype=dtype)
    x = ac.backend.normal(1, (128, 784), xp, dtype=dtype)
    y = ac.backend.normal(2, (128, 10), xp, dtype=dtype)
    v = ac.init_params(model, 3, xp, dtype=dtype)
    batch = (x, y)
    loss = ac.MSE()
    lin = ac.linearize(model, params, x)

    def ggn_cached():
        jv = ac.models.sequential.jvp_linearized(lin, v)
        return ac.models.sequential.vjp_linearized(lin, ac.losses.loss_hessian_vp(loss, lin.outputs, jv) / 128)

    t = best_of_interleaved({
        "grad": lambda: ac.value_and_grad(model, params, batch),
        "ggn_vp_cached": ggn_cached,
        "hvp_cached": lambda: ac.models.sequential.hvp_linearized(lin, y, v, loss),
        "ggn_vp_uncached": lambda: ac.ggn_vp(model, params, batch, v),
        "hvp_uncached": lambda: ac.hvp(model, params, batch, v),
        "linearize": lambda: ac.linearize(model, params, x).outputs,
    }, repeats, sync)
    ratios = {k: t[k] / t["grad"] for k in ("ggn_vp_cached", "hvp_cached", "ggn_vp_uncached", "hvp_uncached")}
    return t, ratios


def bench_explicit_ggn(xp, repeats, sync, skip_jtj):
    model = ac.mlp((64, 64, 64, 10), "tanh")
    params = ac.init_params(model, 0, xp)
    x = ac.backend.normal(1, (256, 64), xp)
    p = ac.params.num_params(ac.param_shapes(model))
    b, k = 256, 10
    out = {"num_params": p}
    out["fisher_exact_matrix_s"] = best_of(lambda: ac.curvature.fisher_exact_matrix(model, params, x), repeats, sync)
    out["jacobian_s"] = best_of(lambda: ac.jacobian(model, params, x), repeats, sync)
    # the matmul rate on a product with the same flop count as the structured assembly
    a = ac.backend.normal(4, (b, p), xp)
    t_mm = best_of(lambda: xp.matmul(xp.matrix_transpose(a), a), 1, sync)
    out["matmul_BxP_gram_s"] = t_mm
    out["matmul_rate_gflops"] = 2.0 * b * p * p / t_mm / 1e9
    out["structured_flops_G"] = 2.0 * b * p * p / 1e9
    if not skip_jtj:
        def jtj():
            j = xp.reshape(ac.jacobian(model, params, x), (b * k, p))
            return xp.matmul(xp.matrix_transpose(j), j) / b

        out["jacobian_jtj_s"] = best_of(jtj, 1, sync)
        out["jtj_flops_G"] = 2.0 * b * k * p * p / 1e9
    return out


def conv_flops(layer, in_shape, b):
    c, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return 2.0 * b * layer.out_channels * c * kh * kw * ho * wo, (layer.out_channels, c * kh * kw, b * ho * wo)


def bench_lenet_dtype(xp, model, dtype, repeats, sync):
    params = ac.init_params(model, 0, xp, dtype=dtype)
    x = ac.backend.normal(1, (128, 3, 32, 32), xp, dtype=dtype)
    y = ac.backend.integers(2, 0, 10, (128,), xp)
    loss = ac.SoftmaxCrossEntropy()
    res = {"grad_s": best_of(lambda: ac.value_and_grad(model, params, (x, y), loss), repeats, sync)}
    lin = ac.linearize(model, params, x)
    ins, _ = networks._shapes(model)
    flops = t_conv = mm_t = 0.0
    for i, (layer, (p0, p1)) in enumerate(zip(model.layers, networks.layer_param_indices(model))):
        if not isinstance(layer, Conv2d):
            continue
        a = lin.inputs[i]
        pl = tuple(params[p0:p1])
        t_conv += best_of(lambda layer=layer, pl=pl, a=a: layer_forward(layer, pl, a)[0], repeats, sync)
        f, (m, kk, n) = conv_flops(layer, ins[i], 128)
        flops += f
        lhs = ac.backend.normal(5, (m, kk), xp, dtype=dtype)
        rhs = ac.backend.normal(6, (kk, n), xp, dtype=dtype)
        mm_t += best_of(lambda lhs=lhs, rhs=rhs: xp.matmul(lhs, rhs), repeats, sync)
    sq = ac.backend.normal(7, (2048, 2048), xp, dtype=dtype)
    t_sq = best_of(lambda: xp.matmul(sq, sq), max(1, repeats // 4), sync)
    res.update({
        "conv_forward_s": t_conv,
        "conv_gflops": flops / t_conv / 1e9,
        "same_shape_matmul_gflops": flops / mm_t / 1e9,
        "square_2048_matmul_gflops": 2.0 * 2048**3 / t_sq / 1e9,
    })
    res["conv_vs_same_shape_matmul"] = res["conv_gflops"] / res["same_shape_matmul_gflops"]
    res["conv_vs_square_matmul"] = res["conv_gflops"] / res["square_2048_matmul_gflops"]
    return res


def bench_lenet(xp, repeats, sync):
    model = ac.lenet5((3, 32, 32), 10)
    return {dtype: bench_lenet_dtype(xp, model, dtype, repeats, sync) for dtype in ("float32", "float64")}


AIMS = {"ggn_vp_cached": 1.5, "hvp_cached": 2.0, "ggn_vp_uncached": 2.0, "hvp_uncached": 2.5}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per quantity (best is kept)")
    ap.add_argument("--matrix-repeats", type=int, default=2, help="timed builds of the explicit GGN")
    ap.add_argument("--backend", default="numpy", choices=list(ac.backend.BACKENDS))
    ap.add_argument("--skip-jtj", action="store_true", help="skip the (slow) J^T J reference for the explicit GGN")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.matrix_repeats < 1:
        ap.error("--repeats and --matrix-repeats: expected positive integers")

    xp = ac.backend.namespace_by_name(args.backend)
    sync = timing.sync
    result = {"benchmark": "mlp", "config": vars(args) | {"out": None}, "aims": dict(AIMS)}

    print(f"MLP 784-300-100-10 (tanh), batch 128, {args.backend}, best of {args.repeats}")
    print(f"{'dtype':<9}{'quantity':<18}{'time (ms)':>11}{'/ grad':>9}{'aim':>8}  status")
    result["mlp_products"] = {}
    for dtype in ("float32", "float64"):
        t, ratios = bench_mlp_products(xp, dtype, args.repeats, sync)
        result["mlp_products"][dtype] = {"seconds": t, "ratios": ratios}
        print(f"{dtype:<9}{'grad':<18}{t['grad'] * 1e3:>11.3f}{1.0:>9.2f}")
        for key, aim in AIMS.items():
            status = "met" if ratios[key] <= aim else "MISSED"
            print(f"{'':<9}{key:<18}{t[key] * 1e3:>11.3f}{ratios[key]:>9.2f}{'<= ' + str(aim):>8}  {status}")

    g = bench_explicit_ggn(xp, args.matrix_repeats, sync, args.skip_jtj)
    result["explicit_ggn"] = g
    result["aims"]["explicit_ggn_s"] = 1.5
    status = "met" if g["fisher_exact_matrix_s"] < 1.5 else "MISSED"
    print(f"\nexplicit GGN, MLP 64-64-64-10, batch 256, P = {g['num_params']}, float64:")
    print(f"  fisher_exact_matrix  {g['fisher_exact_matrix_s']:8.3f} s   (aim < 1.5 s: {status}; "
          f"<= {g['structured_flops_G']:.0f} GFLOP of products)")
    print(f"  jacobian (B, k, P)   {g['jacobian_s']:8.3f} s")
    print(f"  matmul (P x B)(B x P){g['matmul_BxP_gram_s']:8.3f} s   = {g['matmul_rate_gflops']:.1f} GFLOP/s "
          f"(the same flops as all blocks of the structured assembly, which computes about half of them)")
    if "jacobian_jtj_s" in g:
        print(f"  J^T J / B route      {g['jacobian_jtj_s']:8.3f} s   ({g['jtj_flops_G']:.0f} GFLOP)")

    lenet = bench_lenet(xp, max(3, args.repeats // 4), sync)
    result["lenet5"] = lenet
    print("\nLeNet-5 (tanh, avg pool), 32x32x3 inputs, batch 128, softmax CE:")
    print(f"{'dtype':<9}{'grad (ms)':>11}{'conv fwd (ms)':>15}{'conv GF/s':>11}{'same-shape mm':>15}"
          f"{'2048^2 mm':>11}{'conv/mm':>9}")
    for dtype, r in lenet.items():
        print(f"{dtype:<9}{r['grad_s'] * 1e3:>11.2f}{r['conv_forward_s'] * 1e3:>15.2f}{r['conv_gflops']:>11.2f}"
              f"{r['same_shape_matmul_gflops']:>15.2f}{r['square_2048_matmul_gflops']:>11.2f}"
              f"{r['conv_vs_same_shape_matmul']:>9.2f}")

    result["config"]["out"] = str(args.out)
    return timing.write_result(args.out, result, threads_key="blas_threads_env")


if __name__ == "__main__":
    main()
