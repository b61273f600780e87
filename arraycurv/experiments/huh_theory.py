"""Huh (2020) Figs 1, 2, 3 and Table 1 from the theory alone (no training).

* Fig 1 (SGD, sqrt-NGD, NGD) and Fig 3 (NGD-d, sqrt-NGD-d): singular-mode vector fields
  of a depth-2 mode (sigma_1, sigma_2) with target sigma_star = 1: arrows
  ``[sigma_1', sigma_2'] / |sigma_Delta|`` (eqs 5, 10, 12, 20, 21 via
  :func:`arraycurv.theory.singular_mode_velocity`), contours of
  ``sigma_Delta = sigma_1 sigma_2 - sigma_star`` (the optimum in black), the conserved paths
  (red; sigma_1^2 - sigma_2^2 for the full rules, eq 6; sigma_1 / sigma_2 for NGD-d;
  |sigma_1| - |sigma_2| for sqrt-NGD-d, footnote 4) and one trajectory integrated with
  the adaptive Dormand-Prince integrator (:func:`arraycurv.integrate.solve_ode`), with
  dots at equal time intervals.
* Fig 2: map learning curves of eq (17) for p = 0, 1/2, 1, 2 (eta_bar = 1; sigma(0) = 0
  for p < 1, sigma_star / 100 for p >= 1, as in the caption), half-max points and losses
  (:func:`arraycurv.theory.map_strength`, :func:`arraycurv.theory.half_max_time`).
* Table 1: the exponent p(d, q) (:func:`arraycurv.theory.format_table1`), with the d = 4
  row of the teacher-student experiment added.

The arrays are computed in the namespace ``xp`` and converted to NumPy only for the
figures and files. As data (:mod:`arraycurv.experiments.registry`): :class:`TheoryConfig`
(``Config``), the pure :func:`run_one` and :func:`report`, registered as ``"theory"``;
panel titles and invariants follow the rule registry (:mod:`arraycurv.rules.registry`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from ..rules import registry as rule_registry
from . import registry as reg
from .registry import UsageError, config_field, float_list, run_experiment

__all__ = [
    "EXPERIMENT",
    "FIG1_RULES",
    "FIG2_P",
    "FIG2_TARGETS",
    "FIG3_RULES",
    "TABLE1_DEPTHS",
    "TRAJECTORY_START",
    "Config",
    "TheoryConfig",
    "format_table1",
    "map_curves",
    "report",
    "run",
    "run_one",
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


def _invariant_q(rule: str) -> float:
    """Order q of the constant of motion of a rule's mode dynamics (from the rule
    registry): inf (sigma_1^2 - sigma_2^2, eq 6) for the full-curvature rules, the rule's
    own q for the block-diagonal ones (footnote 4)."""
    spec = rule_registry.rule_spec(rule)
    return spec.q if spec.block_diagonal else math.inf


#: Label of the constant of motion by its order q (:func:`_invariant_q`).
_INVARIANT_LABEL = {
    math.inf: r"$\sigma_1^2-\sigma_2^2$ (eq 6)",
    1.0: r"$\sigma_1/\sigma_2$ (Sec. 5)",
    2.0: r"$|\sigma_1|-|\sigma_2|$ (footnote 4)",
}


def _title(rule: str) -> str:
    """Panel title: the registry's label and mode equation (``"NGD (eq 10)"``)."""
    spec = rule_registry.rule_spec(rule)
    eq = (spec.mode_equation or spec.equation).replace("(", "").replace(")", "")
    return f"{spec.label} ({eq})"


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
    q = _invariant_q(rule)
    if q == 1:  # NGD-d
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
    q = _invariant_q(rule)
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


#: Depths d of the printed Table 1 (the paper's 1, 2, inf and the teacher-student's 4).
TABLE1_DEPTHS = (1, 2, 4, math.inf)


@dataclass(frozen=True)
class TheoryConfig(reg.ExperimentConfig):
    """Settings of the theory figures (Huh Figs 1-3, Table 1); validated when built.

    Attributes
    ----------
    trajectory_start : tuple of float
        Start (sigma_1, sigma_2) of the integrated trajectories of Figs 1 and 3.
    fig2_targets : tuple of float
        Targets sigma_star of the map curves of Fig 2 (positive).
    seed : int
        Unused (the theory is deterministic); kept for a uniform command line.
    """

    trajectory_start: tuple = config_field(
        TRAJECTORY_START, "start (sigma_1, sigma_2) of the integrated singular-mode trajectories of Figs 1, 3",
        parse=float_list, metavar="S1,S2")
    fig2_targets: tuple = config_field(FIG2_TARGETS, "targets sigma_star of the map curves of Fig 2",
                                       parse=float_list, metavar="S[,S...]")

    def check(self) -> None:
        """Two finite start values, positive finite targets."""
        super().check()
        if len(self.trajectory_start) != 2 or not all(math.isfinite(s) for s in self.trajectory_start):
            raise UsageError(f"trajectory-start: expected two finite numbers, got {self.trajectory_start}")
        if not self.fig2_targets or not all(0 < s < math.inf for s in self.fig2_targets):
            raise UsageError(f"fig2-targets: expected positive finite targets, got {self.fig2_targets}")


#: The config of this experiment (the registry's ``config_type``).
Config = TheoryConfig


NAME = "theory"


PAPER = "Huh (2020) Figs 1-3, Table 1"


def run_one(config: TheoryConfig, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Compute Table 1, the vector fields and trajectories of Figs 1/3 and the map curves
    of Fig 2; write nothing.

    Returns
    -------
    dict
        The record: ``experiment``, ``paper``, ``backend``, ``config``, ``table1`` (and
        its text ``table1_text``), ``trajectories`` (per rule: end point and drift of its
        conserved quantity), ``fig2_half_max_times``, ``p_of_rules_at_d2``, ``arrays``
        (for ``arrays.npz``) and ``figures`` (the data of the three figures).
    """
    config, xp = reg.bind_namespace(config, xp)
    log = (lambda msg: print(f"[theory] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    record = {"experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp),
              "config": reg.config_dict(config), "sigma_star": 1.0, "eta_bar": 1.0,
              "table1": {f"d={d:g}": {f"q={q:g}": v for q, v in row.items()}
                         for d, row in table1(depths=TABLE1_DEPTHS).items()},
              "table1_text": format_table1(depths=TABLE1_DEPTHS), "trajectories": {},
              "fig2_half_max_times": {}, "arrays": {}, "figures": {"fields": {}, "curves": []}}
    for rule in FIG1_RULES + FIG3_RULES:
        log(f"vector field and trajectory: {rule}")
        f = vector_field(rule, xp, dtype=config.dtype)
        tr = trajectory(rule, config.trajectory_start, xp, dtype=config.dtype)
        f.update(name=_title(rule), invariant_label=_INVARIANT_LABEL[_invariant_q(rule)], trajectory=tr["path"],
                 dots=tr["dots"])
        record["figures"]["fields"][rule] = f
        record["trajectories"][rule] = {k: tr[k] for k in ("end", "final_displacement", "invariant_start",
                                                           "invariant_end", "invariant_drift")}
        record["arrays"].update({f"{rule}/trajectory": tr["path"], f"{rule}/t": tr["t"]})
    for p in FIG2_P:
        log(f"map curves p = {p:g}")
        c = map_curves(p, xp, targets=config.fig2_targets, dtype=config.dtype)
        c["title"] = f"p = {p:g}  ({_FIG2_NAMES[p]})"
        record["figures"]["curves"].append(c)
        record["fig2_half_max_times"][f"p={p:g}"] = {f"{s:g}": float(h) for s, h in zip(c["sigma_star"],
                                                                                        c["half_time"])}
        record["arrays"].update({f"fig2/p{p:g}/t": c["t"], f"fig2/p{p:g}/sigma": c["sigma"]})
    record["p_of_rules_at_d2"] = {r: p_exponent(2, q) for r, q in (("sgd", math.inf), ("sqrt_ngd", 2.0),
                                                                  ("ngd", 1.0))}
    return record


_FIG2_NAMES = {0.0: "NGD, any depth", 0.5: "\u221aNGD, d = 2", 1.0: "SGD d = 2; \u221aNGD d \u2192 \u221e",
               2.0: "SGD, d \u2192 \u221e"}


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write ``fig1.png``, ``fig2.png``, ``fig3.png``, ``table1.txt``, ``summary.json`` and
    ``arrays.npz`` of the records of :func:`run_one` into ``out_dir`` (atomically; nothing
    for None); with ``progress`` print Table 1. Returns the summary (the record without
    its arrays and figure data, plus ``files``)."""
    return reg.report_each(_report_one, records, out_dir, progress=progress, plots=plots)


def _report_one(record: dict, out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import write_npz, write_text

    summary = {k: v for k, v in record.items() if k not in ("arrays", "figures", "table1_text")}
    tab = record["table1_text"]
    if progress:
        print("Table 1 of Huh (2020): exponent p = 2(d-1)(q-1)/(dq) of eq (17) (d = 4 row added)")
        print(tab)
    if out_dir is None:
        return summary
    reg.check_out_dir(out_dir)
    write_text(os.path.join(out_dir, "table1.txt"),
               "Huh (2020) Table 1: exponent p(d, q) of the map dynamics eq (17)\n" + tab + "\n")
    write_npz(os.path.join(out_dir, "arrays.npz"), record["arrays"])
    files = ["table1.txt", "summary.json", "arrays.npz"]
    if plots:
        from .plotting import plot_map_curves, plot_vector_fields

        fields = record["figures"]["fields"]
        plot_vector_fields([fields[r] for r in FIG1_RULES], os.path.join(out_dir, "fig1.png"),
                           title=r"Huh (2020) Fig 1: singular-mode dynamics at depth 2, $\bar\sigma_*=1$")
        plot_vector_fields([fields[r] for r in FIG3_RULES], os.path.join(out_dir, "fig3.png"),
                           title=r"Huh (2020) Fig 3: block-diagonal rules, $\bar\sigma_*=1$")
        plot_map_curves(record["figures"]["curves"], os.path.join(out_dir, "fig2.png"))
        files = ["fig1.png", "fig2.png", "fig3.png"] + files
    reg.write_summary(summary, out_dir, files)
    return reg.show_report(summary, out_dir, progress=progress)


def run(config: TheoryConfig | str | os.PathLike | None = None,
        out_dir: str | os.PathLike | None = "results/theory", *, xp=None, progress: bool = True,
        plots: bool = True, dtype: str | None = None, seed: int | None = None) -> dict:
    """Draw Figs 1-3 and write Table 1 (``fig1.png``, ``fig2.png``, ``fig3.png``,
    ``table1.txt``, ``summary.json``, ``arrays.npz`` in ``out_dir``): :func:`run_one`
    then :func:`report`.

    ``run(out_dir, dtype=..., seed=...)`` (a path first, the earlier form) still works.
    Returns the summary: Table 1, the half-max times of Fig 2 and, per rule of Figs 1/3,
    the end point of the trajectory and the drift of its conserved quantity.
    """
    if isinstance(config, (str, os.PathLike)):
        config, out_dir = None, config
    config = TheoryConfig() if config is None else config
    legacy = {k: v for k, v in (("dtype", dtype), ("seed", seed)) if v is not None}
    if legacy:
        config = replace(config, **legacy)
    return run_experiment(EXPERIMENT, config, out_dir, xp=xp, progress=progress, plots=plots)


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=TheoryConfig, run_one=run_one, report=report,
    help="Huh Figs 1-3 (singular-mode vector fields, map curves) and Table 1", paper=PAPER))
