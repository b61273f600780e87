"""Huh's learning-dynamics theory of curvature-corrected deep linear networks (spec 4.1, 4.2).

Huh (2020), *Curvature-corrected learning dynamics in deep neural networks*:

* exponent and scales of map dynamics: :func:`p_exponent` (eq 17), :func:`effective_depth`
  (eq 18), :func:`depth_calibrated_rate` (eta_bar of eq 17), Table 1 (:func:`table1`,
  :func:`format_table1`);
* singular-mode dynamics of one mode of a depth-d network with per-layer strengths
  sigma_i: :func:`singular_mode_velocity` for SGD (eq 5), NGD (eq 10), q-NGD (eq 12),
  sqrt-NGD, NGD-d (eq 20), sqrt-NGD-d (eq 21) and q-NGD-d (footnote 4);
  :func:`regularized_ngd_velocity` (S.I.15-16); :func:`singular_mode_ode` for the
  integrator; :func:`mode_jacobian` (j_i);
* map dynamics (eq 17): :func:`map_velocity`, closed forms (:func:`map_strength_closed_form`
  for p = 0, 1/2, 1, generalised to any initial value), any p (:func:`map_strength`),
  time scales (:func:`half_max_time`, :func:`escape_time`);
* conserved quantities: c_i of Theorem 1 (:func:`conserved_quantities`, eq 15), the
  invariants of the block-diagonal rules (:func:`blockdiag_invariants`, footnote 4),
  :func:`balance_diagnostics`;
* singular modes of networks (footnote 1): :func:`aligned_params`, :func:`mode_strengths`,
  :func:`layer_mode_strengths`.

Scalars are Python floats; arrays (sigma, parameters, times) may come from any array-API
namespace and results come back in it. See ``docs/theory.md``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from fractions import Fraction

from .. import backend
from ..dynamics.integrate import solve_ode
from ..dynamics.theory import (
    blockdiag_invariants,
    half_max_time,
    map_strength,
    p_exponent,
    singular_mode_velocity,
    table1,
)
from . import check_out_dir

__all__ = [
    "FIG1_RULES",
    "FIG2_P",
    "FIG2_TARGETS",
    "FIG3_RULES",
    "TRAJECTORY_START",
    "format_table1",
    "map_curves",
    "run",
    "trajectory",
    "vector_field",
]


def _fmt_number(x: float) -> str:
    if math.isinf(x):
        return "inf"
    fr = Fraction(x).limit_denominator(1000)
    if abs(float(fr) - x) <= 1e-12 * max(1.0, abs(x)):
        return str(fr.numerator) if fr.denominator == 1 else f"{fr.numerator}/{fr.denominator}"
    return f"{x:.4g}"


def format_table1(depths: Sequence[float] = (1, 2, math.inf), qs: Sequence[float] = (1, 2, math.inf)) -> str:
    """Table 1 of Huh (2020) as a Markdown table (exact fractions where they are short)."""
    tab = table1(depths, qs)
    head = "| p | " + " | ".join(f"q = {_fmt_number(float(q))}" for q in qs) + " |"
    sep = "|---|" + "---|" * len(qs)
    rows = [
        f"| d = {_fmt_number(float(d))} | " + " | ".join(_fmt_number(tab[d][q]) for q in qs) + " |" for d in depths
    ]
    return "\n".join([head, sep, *rows])


FIG1_RULES = ("sgd", "sqrt_ngd", "ngd")


FIG3_RULES = ("ngd_d", "sqrt_ngd_d")


FIG2_P = (0.0, 0.5, 1.0, 2.0)


FIG2_TARGETS = (1.0, 2.0, 4.0)


#: Power q of the rule whose invariants a panel shows (inf: sigma_1^2 - sigma_2^2, eq 6).
_INVARIANT_Q = {"sgd": math.inf, "ngd": math.inf, "sqrt_ngd": math.inf, "ngd_d": 1.0, "sqrt_ngd_d": 2.0}


_INVARIANT_LABEL = {
    "sgd": r"$\sigma_1^2-\sigma_2^2$ (eq 6)",
    "ngd": r"$\sigma_1^2-\sigma_2^2$ (eq 6)",
    "sqrt_ngd": r"$\sigma_1^2-\sigma_2^2$ (eq 6)",
    "ngd_d": r"$\sigma_1/\sigma_2$ (Sec. 5)",
    "sqrt_ngd_d": r"$|\sigma_1|-|\sigma_2|$ (footnote 4)",
}


_TITLE = {"sgd": "SGD (eq 5)", "sqrt_ngd": "\u221aNGD (eq 12, q=2)", "ngd": "NGD (eq 10)",
          "ngd_d": "NGD-d (eq 20)", "sqrt_ngd_d": "\u221aNGD-d (eq 21)"}


def _grid(xp, lim, n, dt):
    axis = xp.linspace(-lim, lim, n, dtype=dt)
    s1 = xp.broadcast_to(xp.reshape(axis, (1, n)), (n, n))
    s2 = xp.broadcast_to(xp.reshape(axis, (n, 1)), (n, n))
    return s1, s2, xp.stack([xp.reshape(s1, (-1,)), xp.reshape(s2, (-1,))], axis=-1)


def vector_field(rule: str, xp, *, sigma_star: float = 1.0, lim: float = 2.0, n: int = 20, n_fine: int = 121,
                 dtype=None, cap: float = 3.0):
    """Grid, normalized velocities and fields of one panel of Figs 1/3 (NumPy outputs).

    Arrows are ``velocity / |sigma_Delta|``; arrow lengths above ``cap`` times their
    median are shortened to that length (display only; NGD's arrows diverge at the origin).
    """
    dt = backend.float_dtype(xp, dtype)
    s1, s2, sigma = _grid(xp, lim, n, dt)
    vel = singular_mode_velocity(sigma, sigma_star, 1.0, rule)
    disp = sigma[:, 0] * sigma[:, 1] - sigma_star
    absd = xp.abs(disp)
    safe = xp.where(absd > 0, absd, xp.ones_like(absd))
    arrows = xp.where(xp.reshape(absd, (-1, 1)) > 0, vel / xp.reshape(safe, (-1, 1)), xp.zeros_like(vel))
    length = xp.sqrt(xp.sum(arrows * arrows, axis=-1))
    med = float(backend.to_numpy(xp.sort(length))[length.shape[0] // 2])
    limit = cap * med if med > 0 else 1.0
    shrink = xp.where(length > limit, limit / xp.where(length > 0, length, xp.ones_like(length)), xp.ones_like(length))
    arrows = arrows * xp.reshape(shrink, (-1, 1))
    # contours on a finer grid
    f1, f2, sigma = _grid(xp, lim, n_fine, dt)
    disp = sigma[:, 0] * sigma[:, 1] - sigma_star
    q = _INVARIANT_Q[rule]
    if rule == "ngd_d":
        # sigma_1 / sigma_2 is conserved; draw its level sets through sin(2 theta) =
        # 2 s1 s2 / (s1^2 + s2^2), a function of the ratio that has no jump at sigma_2 = 0.
        r2 = sigma[:, 0] ** 2 + sigma[:, 1] ** 2
        inv = 2 * sigma[:, 0] * sigma[:, 1] / xp.where(r2 > 0, r2, xp.ones_like(r2))
        levels = [-0.95, -0.8, -0.5, -0.2, 0.2, 0.5, 0.8, 0.95]
    else:
        inv = blockdiag_invariants(sigma, q)[:, 0]
        levels = ([-3, -2, -1, -0.5, -0.1, 0.1, 0.5, 1, 2, 3] if math.isinf(q)
                  else [-1.5, -1.0, -0.5, -0.2, 0.2, 0.5, 1.0, 1.5])
    return {
        "s1": backend.to_numpy(s1), "s2": backend.to_numpy(s2),
        "u": backend.to_numpy(xp.reshape(arrows[:, 0], (n, n))),
        "v": backend.to_numpy(xp.reshape(arrows[:, 1], (n, n))),
        "f1": backend.to_numpy(f1), "f2": backend.to_numpy(f2),
        "displacement": backend.to_numpy(xp.reshape(disp, (n_fine, n_fine))),
        "invariant": backend.to_numpy(xp.reshape(inv, (n_fine, n_fine))),
        "invariant_levels": levels,
    }


def trajectory(rule: str, start, xp, *, sigma_star: float = 1.0, t_end: float = 12.0, num: int = 481,
               dot_every: float = 0.5, dtype=None, rtol: float = 1e-9):
    """A singular-mode trajectory of ``rule`` from ``start`` (eta = 1), integrated with
    :func:`arraycurv.integrate.solve_ode`; cut where |sigma_Delta| has fallen below 1e-3 of
    its start. Returns NumPy ``t``, ``path`` (T, 2), ``dots`` (positions every
    ``dot_every`` time units) and the drift of the rule's conserved quantity."""
    np = backend.host_namespace()

    dt = backend.float_dtype(xp, dtype)
    y0 = backend.from_numpy(np.asarray(start, dtype=np.float64), xp, dtype=dt)
    times = [t_end * i / (num - 1) for i in range(num)]
    sol = solve_ode(lambda t, s: singular_mode_velocity(s, sigma_star, 1.0, rule), (0.0, t_end), y0,
                    rtol=rtol, atol=rtol * 1e-3, t_eval=times, max_steps=200_000)
    path = np.stack([backend.to_numpy(y) for y in sol.y]).astype(np.float64)
    t = np.asarray(sol.t, dtype=np.float64)
    disp = np.abs(path[:, 0] * path[:, 1] - sigma_star)
    keep = np.nonzero(disp > 1e-3 * disp[0])[0]
    stop = int(keep[-1]) + 2 if keep.size else 1
    t, path = t[:stop], path[:stop]
    step = max(1, int(round(dot_every / (times[1] - times[0]))))
    q = _INVARIANT_Q[rule]
    inv = backend.to_numpy(blockdiag_invariants(backend.from_numpy(path, xp, dtype=dt), q))[:, 0]
    return {
        "t": t, "path": path, "dots": path[::step][1:],
        "invariant_start": float(inv[0]), "invariant_end": float(inv[-1]),
        "invariant_drift": float(np.max(np.abs(inv - inv[0]))),
        "end": path[-1].tolist(), "final_displacement": float(path[-1, 0] * path[-1, 1] - sigma_star),
    }


def map_curves(p: float, xp, *, targets=FIG2_TARGETS, eta_bar: float = 1.0, num: int = 400, dtype=None):
    """Fig 2 data for exponent ``p``: sigma_bar(t) per target (eq 17), half-max times and
    the total loss sum_k (sigma_k - sigma*_k)^2 / 2 (NumPy outputs).

    Initial conditions of the caption: 0 for p < 1, sigma_star / 100 for p >= 1. The time
    axis runs to 5x (p < 1) or 2x (p >= 1) the largest half-max time.
    """
    np = backend.host_namespace()

    dt = backend.float_dtype(xp, dtype)
    s0 = [0.0 if p < 1 else s / 100.0 for s in targets]
    halves = [half_max_time(p, s, eta_bar, a) for s, a in zip(targets, s0)]
    t_max = (5.0 if p < 1 else 2.0) * max(halves)
    t = xp.linspace(0.0, t_max, num, dtype=dt)
    sig = [backend.to_numpy(map_strength(t, p, s, eta_bar, a)) for s, a in zip(targets, s0)]
    sig = np.stack(sig).astype(np.float64)
    loss = 0.5 * np.sum((sig - np.asarray(targets)[:, None]) ** 2, axis=0)
    return {"p": p, "t": backend.to_numpy(t).astype(np.float64), "sigma": sig, "sigma_star": np.asarray(targets),
            "sigma0": np.asarray(s0), "half_time": np.asarray(halves), "loss": loss}


#: Start of the integrated trajectories of Figs 1 and 3 (first quadrant, unbalanced).
TRAJECTORY_START = (0.15, 0.3)


def run(out_dir: str | os.PathLike | None = "results/theory", *, xp=None, dtype="float64", seed: int = 0,
        progress: bool = True, plots: bool = True) -> dict:
    """Draw Figs 1-3 and write Table 1 (``fig1.png``, ``fig2.png``, ``fig3.png``,
    ``table1.txt``, ``summary.json``, ``arrays.npz`` in ``out_dir``).

    ``seed`` is unused (the theory is deterministic) and accepted for a uniform command
    line. Returns the summary: Table 1, the half-max times of Fig 2 and, per rule of
    Figs 1/3, the end point of the trajectory and the drift of its conserved quantity.
    """
    from ..results import write_json, write_npz, write_text

    xp = xp if xp is not None else backend.namespace_by_name("numpy")
    if out_dir is not None:
        check_out_dir(out_dir)
    log = (lambda msg: print(f"[theory] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    summary = {"experiment": "theory", "paper": "Huh (2020) Figs 1-3, Table 1", "backend": backend.namespace_name(xp),
               "config": {"dtype": dtype, "sigma_star": 1.0, "trajectory_start": list(TRAJECTORY_START),
                          "fig2_targets": list(FIG2_TARGETS), "eta_bar": 1.0}}
    arrays = {}
    depths = (1, 2, 4, math.inf)
    tab = format_table1(depths=depths)
    summary["table1"] = {f"d={d:g}": {f"q={q:g}": v for q, v in row.items()}
                         for d, row in table1(depths=depths).items()}
    if progress:
        print("Table 1 of Huh (2020): exponent p = 2(d-1)(q-1)/(dq) of eq (17) (d = 4 row added)")
        print(tab)
    if out_dir is not None:
        write_text(os.path.join(out_dir, "table1.txt"),
                   "Huh (2020) Table 1: exponent p(d, q) of the map dynamics eq (17)\n" + tab + "\n")

    fields = {}
    summary["trajectories"] = {}
    for rule in FIG1_RULES + FIG3_RULES:
        log(f"vector field and trajectory: {rule}")
        f = vector_field(rule, xp, dtype=dtype)
        tr = trajectory(rule, TRAJECTORY_START, xp, dtype=dtype)
        f.update(name=_TITLE[rule], invariant_label=_INVARIANT_LABEL[rule], trajectory=tr["path"], dots=tr["dots"])
        fields[rule] = f
        summary["trajectories"][rule] = {k: tr[k] for k in ("end", "final_displacement", "invariant_start",
                                                             "invariant_end", "invariant_drift")}
        arrays[f"{rule}/trajectory"] = tr["path"]
        arrays[f"{rule}/t"] = tr["t"]
    curves = []
    summary["fig2_half_max_times"] = {}
    for p in FIG2_P:
        log(f"map curves p = {p:g}")
        c = map_curves(p, xp, dtype=dtype)
        name = {0.0: "NGD, any depth", 0.5: "\u221aNGD, d = 2", 1.0: "SGD d = 2; \u221aNGD d \u2192 \u221e",
                2.0: "SGD, d \u2192 \u221e"}[p]
        c["title"] = f"p = {p:g}  ({name})"
        curves.append(c)
        summary["fig2_half_max_times"][f"p={p:g}"] = {f"{s:g}": float(h) for s, h in zip(c["sigma_star"],
                                                                                         c["half_time"])}
        arrays[f"fig2/p{p:g}/t"] = c["t"]
        arrays[f"fig2/p{p:g}/sigma"] = c["sigma"]
    summary["p_of_rules_at_d2"] = {r: p_exponent(2, q) for r, q in (("sgd", math.inf), ("sqrt_ngd", 2.0), ("ngd", 1.0))}
    if out_dir is not None:
        write_npz(os.path.join(out_dir, "arrays.npz"), arrays)
        files = ["table1.txt", "summary.json", "arrays.npz"]
        if plots:
            from .plotting import plot_map_curves, plot_vector_fields

            plot_vector_fields([fields[r] for r in FIG1_RULES], os.path.join(out_dir, "fig1.png"),
                               title=r"Huh (2020) Fig 1: singular-mode dynamics at depth 2, $\bar\sigma_*=1$")
            plot_vector_fields([fields[r] for r in FIG3_RULES], os.path.join(out_dir, "fig3.png"),
                               title=r"Huh (2020) Fig 3: block-diagonal rules, $\bar\sigma_*=1$")
            plot_map_curves(curves, os.path.join(out_dir, "fig2.png"))
            files = ["fig1.png", "fig2.png", "fig3.png"] + files
        summary["files"] = files
        write_json(os.path.join(out_dir, "summary.json"), summary)
        if progress:
            print(f"wrote {', '.join(files)} to {out_dir}")
    return summary
