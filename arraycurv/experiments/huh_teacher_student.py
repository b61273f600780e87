"""Huh (2020) Sec. 6, Figs 4 and 5: a deep linear student learns a low-rank teacher from
P = N whitened, noisy samples under SGD, NGD, sqrt-NGD, NGD-d and sqrt-NGD-d.

What is recorded (every ``record_every`` iterations, per rule): train and test loss; the
strengths ``u_k^T W̄ v_k`` of the student's map along the singular vectors of the
*training* target map ``W̄_* = <y x^T> <x x^T>^{-1}`` (all N modes: the ``rank`` signal
modes and the N - rank noise modes, Fig 4D); the conserved quantity
``c_2 = W_2 W_2^T - W_3^T W_3`` of Theorem 1 (eq 15; c_1 for depth 2); a few entries of
W_2 and W_3 (Fig 5A, B) and the weight norms.

Learning rates are *depth-calibrated* (Huh eq 17): one ``eta_bar`` for all rules and
``eta = eta_bar / d^(1 - 1/q)`` for the rule of power 1/q (SGD q = inf, NGD and NGD-d
q = 1, sqrt-NGD and sqrt-NGD-d q = 2; the block-diagonal rules carry Huh's 1/d^(1/q)
factor of eqs 19-21 themselves), so that the map dynamics of every rule read
``d sigma/dt = -eta_bar (sigma - sigma_*) sigma^p`` and differ only in the exponent p.

Everything runs in the namespace ``xp`` (NumPy, array-api-strict, PyTorch, CuPy);
recorded values come back as NumPy through :func:`arraycurv.backend.to_numpy`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from .. import backend
from ..dynamics.theory import mode_strengths
from ..dynamics.training import print_progress, train
from ..models.base import init_params
from ..models.deep_linear import DeepLinear, total_map
from ..rules import adam, ngd, ngd_d, qngd, sgd, sqrt_ngd, sqrt_ngd_d
from . import UsageError, check_out_dir

__all__ = [
    "DEFAULT_RULES",
    "RULE_Q",
    "SUMMARY_COLUMNS",
    "SUMMARY_HEADERS",
    "TeacherStudentConfig",
    "analyze",
    "config_from_args",
    "depth_calibrated_lr",
    "format_summary",
    "make_rule",
    "run",
    "run_rule",
    "setup",
    "summarize_rule",
]


#: The five rules of Huh Figs 4-5.
DEFAULT_RULES = ("sgd", "ngd", "sqrt_ngd", "ngd_d", "sqrt_ngd_d")


#: Power 1/q of each named rule (SGD: q = inf; Adam is calibrated like SGD).
RULE_Q = {"sgd": math.inf, "adam": math.inf, "ngd": 1.0, "sqrt_ngd": 2.0, "ngd_d": 1.0, "sqrt_ngd_d": 2.0}


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Settings of the teacher-student experiment (defaults: Huh Sec. 6 at a ~2 min size).

    Attributes
    ----------
    rules : tuple of str
        Rule names (``sgd, ngd, sqrt_ngd, ngd_d, sqrt_ngd_d, adam``).
    q : tuple of float
        Extra fractional rules q-NGD (named ``qngd_q<q>``), full curvature, map form.
    depth, width, rank : int
        Student depth d (weight matrices), width N of every layer, teacher rank.
    num_test : int
        Test samples (the training set has P = N samples).
    steps : int
        Iterations per rule.
    eta_bar : float
        Depth-calibrated learning rate (Huh eq 17); rule q uses eta_bar / d^(1-1/q).
    lr_overrides : tuple of (str, float)
        Raw learning rates that replace the calibrated one for the named rules.
    noise : float
        Standard deviation of the output noise z (y = W̄_teacher x + z).
    init_scale : float
        Initial weights W_l ~ N(0, init_scale^2 / N) entrywise (small random init).
    damping, clip : float
        Levenberg-Marquardt damping and update-speed clipping (max update norm per
        iteration) of NGD and NGD-d (Huh Sec. 6); clip 0 disables clipping. Fractional
        rules with q < 2 get them too; sqrt-NGD and sqrt-NGD-d use neither (as in the paper).
    record_every : int
        Recording interval in iterations.
    tol : float
        A rule stops early once its map W̄ changes by less than ``tol * ||W̄||_F`` in one
        iteration (converged; its curves then end there). 0 runs every rule for ``steps``.
    seed : int
        Seed of data and initial weights (every rule starts from the same weights).
    dtype : str
        ``"float64"`` or ``"float32"``.
    """

    rules: tuple = DEFAULT_RULES
    q: tuple = ()
    depth: int = 4
    width: int = 16
    rank: int = 3
    num_test: int = 1000
    steps: int = 10000
    eta_bar: float = 0.2
    lr_overrides: tuple = ()
    noise: float = 0.3
    init_scale: float = 0.1
    damping: float = 1e-5
    clip: float = 0.1
    record_every: int = 1
    tol: float = 1e-9
    seed: int = 0
    dtype: str = "float64"

    def rule_names(self) -> tuple[str, ...]:
        """All rule names of the run: ``rules`` then ``qngd_q<q>`` for every extra q."""
        return tuple(self.rules) + tuple(f"qngd_q{q:g}" for q in self.q)


def _q_of(name: str) -> float:
    if name in RULE_Q:
        return RULE_Q[name]
    if name.startswith("qngd_q"):
        return float(name[6:])
    raise UsageError(f"rules: expected names among {sorted(RULE_Q)} (or qngd_q<q>), got {name!r}")


def depth_calibrated_lr(eta_bar: float, depth: int, q: float) -> float:
    """Raw learning rate eta = eta_bar / d^(1 - 1/q) of a rule of power 1/q (Huh eq 17:
    eta_bar = eta d^(1-1/q)); q = inf (SGD) gives eta_bar / d."""
    return eta_bar / depth ** (1.0 - (0.0 if math.isinf(q) else 1.0 / q))


def make_rule(name: str, config: TeacherStudentConfig):
    """The :class:`arraycurv.UpdateRule` and learning rate of rule ``name`` under ``config``.

    NGD and sqrt-NGD use the exact map-space form (Huh S.I.1, ``form="map"``: the kernel
    is (N^2 x N^2) = 256 x 256 instead of the 1024 x 1024 GGN); NGD-d and sqrt-NGD-d the
    exact Kronecker-factored layer blocks of :func:`arraycurv.qngd_blockdiag_direction`.
    """
    q = _q_of(name)
    overrides = dict(config.lr_overrides)
    lr = float(overrides.get(name, depth_calibrated_lr(config.eta_bar, config.depth, q)))
    clip = config.clip if config.clip > 0 else None
    if name == "sgd":
        return sgd(lr), lr
    if name == "adam":
        return adam(lr), lr
    if name == "ngd":
        return ngd(lr, form="map", damping=config.damping, clip=clip), lr
    if name == "sqrt_ngd":
        return sqrt_ngd(lr, form="map"), lr
    if name == "ngd_d":
        return ngd_d(lr, damping=config.damping, clip=clip), lr
    if name == "sqrt_ngd_d":
        return sqrt_ngd_d(lr), lr
    if q < 1:
        raise UsageError(f"q: expected values >= 1, got {q:g}")
    if q < 2:
        return qngd(lr, q, form="map", damping=config.damping, clip=clip, name=name), lr
    return qngd(lr, q, form="map", name=name), lr


def _check_config(config: TeacherStudentConfig) -> None:
    if config.depth < 2:
        raise UsageError(f"depth: expected at least 2 weight matrices (c_i needs two layers), got {config.depth}")
    if not 1 <= config.rank <= config.width:
        raise UsageError(f"rank: expected 1 <= rank <= width = {config.width}, got {config.rank}")
    for name in config.rule_names():
        _q_of(name)
    for name, _ in config.lr_overrides:
        if name not in config.rule_names():
            raise UsageError(f"lr-rule: expected a rule of this run {config.rule_names()}, got {name!r}")


def _pair(depth: int) -> tuple[int, int]:
    """0-based indices (a, a+1) of the two layers whose c is recorded: (W_2, W_3) for
    depth >= 3 (Huh Fig 5), (W_1, W_2) for depth 2."""
    a = 1 if depth >= 3 else 0
    return a, a + 1


def _target_svd(xp, x, y):
    """Training target map W̄_* = <y x^T> <x x^T>^{-1} (Huh Sec. 2) and its SVD."""
    b = x.shape[0]
    sxx = (x.T @ x) / b
    syx = (y.T @ x) / b
    target = xp.linalg.solve(sxx, syx.T).T
    u, s, vh = xp.linalg.svd(target)
    return target, u, s, vh.T


def _mode_strengths(xp, params, u, v):
    """u_k^T W̄ v_k for every k (diagonal of U^T W̄ V; :func:`arraycurv.theory.mode_strengths`)."""
    return mode_strengths(total_map(params), u, v)


def _c(xp, params, a):
    wa, wb = params[a], params[a + 1]
    return wa @ wa.T - wb.T @ wb


def _entries(n: int, k: int = 4) -> list[tuple[int, int]]:
    """k fixed (row, col) positions spread over an n x n matrix."""
    out = [((3 * i) % n, (i * 5 + 3) % n) for i in range(k)]
    return list(dict.fromkeys(out))


def setup(config: TeacherStudentConfig, xp):
    """Data, model, initial weights and target-map SVD of a run (shared by all rules)."""
    from ..data import huh_teacher_student

    data = huh_teacher_student(n=config.width, rank=config.rank, num_test=config.num_test, noise_std=config.noise,
                               seed=config.seed, xp=xp, dtype=config.dtype)
    model = DeepLinear((config.width,) * (config.depth + 1))
    params0 = init_params(model, config.seed + 1, xp, dtype=config.dtype, scale=config.init_scale)
    target, u, s, v = _target_svd(xp, data.x_train, data.y_train)
    teacher_s = xp.linalg.svdvals(data.teacher_map)
    return data, model, params0, target, u, s, v, teacher_s


def run_rule(name: str, config: TeacherStudentConfig, data, model, params0, u, v, *, progress=None):
    """Train one rule from ``params0`` and return its history (dict of NumPy arrays) and
    time per step. The recorded functions are array-agnostic (any namespace)."""
    xp = backend.namespace_of(params=tuple(params0))
    rule, lr = make_rule(name, config)
    a, b = _pair(config.depth)
    pos = _entries(config.width)
    rows = [r for r, _ in pos]
    cols = [c for _, c in pos]

    def pick(w):
        return xp.stack([w[r, c] for r, c in zip(rows, cols)])

    def norms(p):
        return xp.stack([xp.sqrt(xp.sum(p[a] * p[a])), xp.sqrt(xp.sum(p[b] * p[b])),
                         xp.sqrt(sum(xp.sum(w * w) for w in p))])

    record = {
        "modes": lambda p: _mode_strengths(xp, p, u, v),
        "c": lambda p: _c(xp, p, a),
        "w2_entries": lambda p: pick(p[a]),
        "w3_entries": lambda p: pick(p[b]),
        "norms": norms,
    }
    callback = None
    if config.tol > 0:
        last = {"map": total_map(params0)}

        def callback(step, params, state):
            m = total_map(params)
            change = float(xp.sqrt(xp.sum((m - last["map"]) ** 2)))
            size = float(xp.sqrt(xp.sum(m * m)))
            last["map"] = m
            return change <= config.tol * size

    t0 = time.perf_counter()
    res = train(model, params0, (data.x_train, data.y_train), rule, config.steps, record_every=config.record_every,
                eval_batches={"test": (data.x_test, data.y_test)}, record=record, progress=progress,
                callback=callback)
    wall = time.perf_counter() - t0
    np = backend.host_namespace()  # recorded values are NumPy arrays (train() converted them)

    c = res.records["c"]
    hist = {
        "steps": res.steps,
        "train_loss": res.losses,
        "test_loss": res.eval_losses["test"],
        "modes": res.records["modes"],
        "c2_norm": np.sqrt(np.sum(c * c, axis=(1, 2))),
        "c2_drift": np.sqrt(np.sum((c - c[:1]) ** 2, axis=(1, 2))),
        "c2_entries": c[:, [i % config.width for i in (0, 1, 2, 3)], [j % config.width for j in (0, 1, 0, 2)]],
        "w2_entries": res.records["w2_entries"],
        "w3_entries": res.records["w3_entries"],
        "w2_norm": res.records["norms"][:, 0],
        "w3_norm": res.records["norms"][:, 1],
        "weight_norm": res.records["norms"][:, 2],
        "lr": np.asarray(lr),
        "stopped_at": np.asarray(int(res.steps[-1])),
    }
    return hist, {"time_per_step_s": float(res.time_per_step), "wall_s": wall}


def summarize_rule(hist: dict, target_s, rank: int) -> dict:
    """Per-rule metrics from a history (NumPy arrays).

    * ``min_test_loss`` / ``best_step``: early stopping (Fig 4C);
    * ``final_train_loss``, ``final_test_loss``, ``final_weight_norm``;
    * ``c2_drift`` = max_t ||c_2(t) - c_2(0)||_F and ``c2_drift_rel`` = c2_drift /
      max_t (||W_2||_F^2 + ||W_3||_F^2), which is in [0, 2] since
      ||c_2|| <= ||W_2||^2 + ||W_3||^2 (0: conserved, order 1: broken);
    * ``signal_half_step``: first recorded step at which the strongest mode reaches half
      its target; ``noise_fraction_at_signal_half``: the median over the noise modes k >
      rank of s_k(t) / s_*k at that step (NGD learns all modes together: about 1/2;
      SGD learns the signal first: near 0). ``None`` if the strongest mode never reaches
      half its target.
    """
    np = backend.host_namespace()

    target_s = np.asarray(target_s, dtype=np.float64)
    test = np.asarray(hist["test_loss"])
    steps = np.asarray(hist["steps"])
    i_best = int(np.argmin(test))
    modes = np.asarray(hist["modes"])
    reached = np.nonzero(modes[:, 0] >= 0.5 * target_s[0])[0]
    if reached.size:
        ih = int(reached[0])
        frac = float(np.median(modes[ih, rank:] / target_s[rank:])) if target_s.size > rank else None
        half_step = int(steps[ih])
    else:
        frac, half_step = None, None
    scale = float(np.max(np.asarray(hist["w2_norm"]) ** 2 + np.asarray(hist["w3_norm"]) ** 2))
    drift = float(np.max(hist["c2_drift"]))
    return {
        "lr": float(hist["lr"]),
        "min_test_loss": float(test[i_best]),
        "best_step": int(steps[i_best]),
        "final_train_loss": float(hist["train_loss"][-1]),
        "final_test_loss": float(test[-1]),
        "final_weight_norm": float(hist["weight_norm"][-1]),
        "c2_drift": drift,
        "c2_drift_rel": drift / scale if scale > 0 else 0.0,
        "stopped_at": int(hist["stopped_at"]),
        "signal_half_step": half_step,
        "noise_fraction_at_signal_half": frac,
    }


def analyze(summary: dict) -> dict:
    """The paper's qualitative claims (Huh Sec. 6) checked on a summary: a dict of booleans
    (``None`` where a rule they need is missing from the run).

    * ``ngd_learns_noise_early``: NGD's and NGD-d's ``noise_fraction_at_signal_half``
      both exceed 3x the larger of SGD's and sqrt-NGD's, and 0.2 (Fig 4D);
    * ``early_stopping_sqrt_and_sgd_beat_ngd``: the minimum test loss of SGD and of
      sqrt-NGD is below NGD's (Fig 4C);
    * ``c2_conserved``: ``c2_drift_rel`` < 0.02 for SGD, NGD and sqrt-NGD, i.e. c_2 drifts
      by less than 2% of the weight scale ||W_2||^2 + ||W_3||^2 (Theorem 1, Fig 5C; in
      continuous time it is exactly conserved, the drift is the error of finite steps);
    * ``ngd_d_breaks_c2``: ``c2_drift_rel`` of NGD-d exceeds 0.05 and 10x that of each of
      SGD, NGD and sqrt-NGD (Fig 5C).
    """
    r = summary.get("rules", {})

    def get(name, key):
        return r.get(name, {}).get(key)

    def have(values):
        return all(v is not None for v in values)

    out = {}
    fr = {n: get(n, "noise_fraction_at_signal_half") for n in ("sgd", "sqrt_ngd", "ngd", "ngd_d")}
    out["ngd_learns_noise_early"] = (
        bool(min(fr["ngd"], fr["ngd_d"]) > max(0.2, 3 * max(fr["sgd"], fr["sqrt_ngd"]))) if have(fr.values()) else None
    )
    es = {n: get(n, "min_test_loss") for n in ("sgd", "sqrt_ngd", "ngd")}
    out["early_stopping_sqrt_and_sgd_beat_ngd"] = (
        bool(max(es["sgd"], es["sqrt_ngd"]) < es["ngd"]) if have(es.values()) else None
    )
    dr = [get(n, "c2_drift_rel") for n in ("sgd", "ngd", "sqrt_ngd")]
    out["c2_conserved"] = bool(max(dr) < 0.02) if have(dr) else None
    d = get("ngd_d", "c2_drift_rel")
    out["ngd_d_breaks_c2"] = bool(d > max(0.05, 10 * max(dr))) if have(dr + [d]) else None
    return out


def _config_json(config: TeacherStudentConfig) -> dict:
    d = asdict(config)
    d["lr_overrides"] = {k: v for k, v in config.lr_overrides}
    return d


def _hist_for_plots(histories: dict, target_s, teacher_s, config) -> dict:
    np = backend.host_namespace()

    out = {"rules": list(histories), "target_sv": np.asarray(target_s), "teacher_sv": np.asarray(teacher_s),
           "rank": config.rank}
    a, b = _pair(config.depth)
    for name, h in histories.items():
        test = np.asarray(h["test_loss"])
        out[name] = dict(h, best_step=int(np.asarray(h["steps"])[int(np.argmin(test))]))
    out["title"] = (f"Huh (2020) Fig 4: depth-{config.depth} width-{config.width} student, rank-{config.rank} teacher, "
                    f"P = N = {config.width}, noise {config.noise:g}, eta_bar {config.eta_bar:g}")
    out["title5"] = "Huh (2020) Fig 5: parameter dynamics (a few weight entries; the conserved quantity of eq 15)"
    out["layers"] = (a + 1, b + 1)
    out["steps"] = config.steps
    return out


SUMMARY_COLUMNS = ("rule", "lr", "min_test_loss", "best_step", "final_train_loss", "final_weight_norm",
                   "c2_drift_rel", "noise_fraction_at_signal_half", "time_per_step_ms")


SUMMARY_HEADERS = ("rule", "lr", "min test", "at step", "final train", "|w| final", "c2 drift/|w|^2",
                   "noise@signal½", "ms/step")


def format_summary(summary: dict) -> str:
    """The summary as an aligned text table (one row per rule)."""
    from ..results import format_table
    from .plotting import rule_label

    rows = []
    for name, m in summary["rules"].items():
        row = dict(m, rule=rule_label(name) + (" (diverged)" if m.get("diverged") else ""))
        t = summary.get("timing", {}).get(name, {}).get("time_per_step_s")
        row["time_per_step_ms"] = None if t is None else 1e3 * t
        rows.append(row)
    return format_table(rows, SUMMARY_COLUMNS, headers=SUMMARY_HEADERS)


def run(config: TeacherStudentConfig = TeacherStudentConfig(),
        out_dir: str | os.PathLike | None = "results/teacher-student",
        *, xp=None, progress: bool = True, plots: bool = True) -> dict:
    """Run the teacher-student experiment of Huh Sec. 6 (Figs 4, 5).

    Every rule starts from the same data and initial weights. After each rule,
    ``summary.json`` and ``history.npz`` in ``out_dir`` are rewritten atomically with all
    finished rules (an interrupted run keeps them); at the end ``fig4.png`` and
    ``fig5.png`` are drawn and, with ``progress``, the summary table is printed.

    Parameters
    ----------
    config : TeacherStudentConfig
    out_dir : path or None
        Output folder (None: nothing is written).
    xp : namespace, optional
        Array namespace (NumPy by default; e.g. ``backend.namespace_by_name("cupy")``).
    progress : bool
        Progress lines on stderr and the table on stdout.
    plots : bool
        Draw the figures (needs matplotlib).

    Returns
    -------
    dict
        The summary: ``config``, ``rules`` (per-rule metrics, :func:`summarize_rule`),
        ``timing`` (per rule, excluded from reproducibility comparisons), ``target_sv``,
        ``teacher_sv``, ``claims`` (:func:`analyze`), ``files``.
    """
    np = backend.host_namespace()

    from ..results import write_json, write_npz

    _check_config(config)
    xp = xp if xp is not None else backend.namespace_by_name("numpy")
    if out_dir is not None:
        check_out_dir(out_dir)
    data, model, params0, target, u, s, v, teacher_s = setup(config, xp)
    target_s = backend.to_numpy(s).astype(np.float64)
    teacher_np = backend.to_numpy(teacher_s).astype(np.float64)
    summary: dict[str, Any] = {
        "experiment": "teacher-student",
        "paper": "Huh (2020) Sec. 6, Figs 4-5",
        "backend": backend.namespace_name(xp),
        "config": _config_json(config),
        "target_sv": target_s.tolist(),
        "teacher_sv": teacher_np.tolist(),
        "rules": {},
        "timing": {},
    }
    histories: dict[str, dict] = {}
    arrays: dict[str, Any] = {"target_sv": target_s, "teacher_sv": teacher_np,
                              "target_map": backend.to_numpy(target)}
    names = config.rule_names()
    for i, name in enumerate(names):
        if progress:
            print(f"[teacher-student] rule {i + 1}/{len(names)}: {name}", file=sys.stderr, flush=True)
        try:
            hist, timing = run_rule(name, config, data, model, params0, u, v,
                                    progress=print_progress if progress else None)
        except ValueError as exc:  # train() raises when the loss becomes NaN/Inf
            if "finite" not in str(exc):
                raise
            if progress:
                print(f"[teacher-student] {name} diverged: {exc}", file=sys.stderr, flush=True)
            summary["rules"][name] = {"diverged": True, "message": str(exc)}
            summary["claims"] = analyze(summary)
            if out_dir is not None:
                write_json(os.path.join(out_dir, "summary.json"), summary)
            continue
        histories[name] = hist
        summary["rules"][name] = dict(summarize_rule(hist, target_s, config.rank), diverged=False)
        summary["timing"][name] = timing
        arrays.update({f"{name}/{k}": val for k, val in hist.items()})
        summary["claims"] = analyze(summary)
        if out_dir is not None:
            write_npz(os.path.join(out_dir, "history.npz"), arrays)
            write_json(os.path.join(out_dir, "summary.json"), summary)
    if out_dir is not None and plots and histories:
        from .plotting import plot_teacher_student_fig4, plot_teacher_student_fig5

        ph = _hist_for_plots(histories, target_s, teacher_np, config)
        plot_teacher_student_fig4(ph, os.path.join(out_dir, "fig4.png"))
        plot_teacher_student_fig5(ph, os.path.join(out_dir, "fig5.png"))
        summary["files"] = ["fig4.png", "fig5.png", "summary.json", "history.npz"]
        write_json(os.path.join(out_dir, "summary.json"), summary)
    if progress:
        print(format_summary(summary))
        if out_dir is not None:
            print(f"wrote {', '.join(summary.get('files', ['summary.json', 'history.npz']))} to {out_dir}")
    return summary


def config_from_args(args) -> TeacherStudentConfig:
    """A :class:`TeacherStudentConfig` from the parsed command line (:mod:`arraycurv.cli`)."""
    return replace(
        TeacherStudentConfig(),
        rules=tuple(args.rules), q=tuple(args.q), depth=args.depth, width=args.width, rank=args.rank,
        num_test=args.num_test, steps=args.steps, eta_bar=args.lr, lr_overrides=tuple(args.lr_rule),
        noise=args.noise, init_scale=args.init_scale, damping=args.damping, clip=args.clip,
        record_every=args.record_every, tol=args.tol, seed=args.seed, dtype=args.dtype,
    )
