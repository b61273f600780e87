"""Huh (2020) Sec. 6, Figs 4 and 5: a deep linear student learns a low-rank teacher from
P = N whitened, noisy samples under SGD, NGD, sqrt-NGD, NGD-d and sqrt-NGD-d.

What is recorded (every ``record_every`` iterations, per rule): train and (sampled) test
loss; the excess population test loss ``1/2 ||W̄ - W̄_teacher||_F^2`` (the test inputs are
standard Gaussian, so the population test loss is that plus the noise floor
``1/2 N sigma^2``); the strengths ``u_k^T W̄ v_k`` of the student's map along the singular vectors of the
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

As data (:mod:`arraycurv.experiments.registry`): :class:`TeacherStudentConfig` (``Config``),
the pure :func:`run_one` and :func:`report`, registered as ``"teacher-student"``; the rule
names, their q and labels come from :mod:`arraycurv.rules.registry`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

from .. import backend
from ..dynamics.theory import mode_strengths
from ..dynamics.training import print_progress, train
from ..models.base import init_params
from ..models.deep_linear import DeepLinear, total_map
from ..rules import registry as rule_registry
from . import registry as reg
from .registry import UsageError, config_field, float_list, nonneg_float, positive_float, positive_int

__all__ = [
    "CLAIMS",
    "DEFAULT_RULES",
    "EXPERIMENT",
    "SUMMARY_COLUMNS",
    "SUMMARY_HEADERS",
    "Config",
    "TeacherStudentConfig",
    "analyze",
    "claims_over_seeds",
    "depth_calibrated_lr",
    "excess_loss",
    "format_seeds",
    "format_summary",
    "make_rule",
    "report",
    "rule_q",
    "rule_steps",
    "run",
    "run_one",
    "run_rule",
    "setup",
    "step_check",
    "summarize_rule",
]


#: The five rules of Huh Figs 4-5.
DEFAULT_RULES = ("sgd", "ngd", "sqrt_ngd", "ngd_d", "sqrt_ngd_d")


def _fixed_q_rules() -> tuple[str, ...]:
    """The registered rules of a fixed order q (:mod:`arraycurv.rules.registry`), the
    ones this experiment can run by name (plus ``qngd_q<q>`` and ``qngd_d_q<q>``)."""
    return tuple(n for n in rule_registry.rule_names() if rule_registry.rule_q(n) is not None)


@dataclass(frozen=True)
class TeacherStudentConfig(reg.ExperimentConfig):
    """Settings of the teacher-student experiment (defaults: Huh Sec. 6 at a ~2 min size).

    Validated when built (:class:`UsageError`); ``seed``, ``dtype`` and ``backend`` come
    from :class:`~arraycurv.experiments.registry.ExperimentConfig`.

    Attributes
    ----------
    rules : tuple of str
        Rule names (``sgd, ngd, sqrt_ngd, ngd_d, sqrt_ngd_d, adam``).
    q : tuple of float
        Extra fractional rules q-NGD (named ``qngd_q<q>``), full curvature, map form.
    depth, width, rank : int
        Student depth d (weight matrices), width N of every layer, teacher rank.
    teacher_sv : tuple of float
        Teacher singular values s_1, ..., s_rank; empty: s_k = 4 * 2^-k (4, 2, 1).
    num_test : int
        Test samples (the training set has P = N samples).
    steps : int
        Iterations of every rule (at most).
    rule_steps : tuple of (str, int)
        At most this many iterations for the named rules (default 500 for the
        curvature-corrected rules, which converge in a few hundred).
    eta_bar : float
        Depth-calibrated learning rate (Huh eq 17); rule q uses eta_bar / d^(1-1/q).
    lr_overrides : tuple of (str, float)
        Raw learning rates that replace the calibrated one for the named rules.
    noise : float
        Standard deviation of the output noise z (y = W̄_teacher x + z).
    init_scale : float
        Initial weights W_l ~ N(0, init_scale^2 / N) entrywise (small random init).
    damping, damping_d, clip : float
        Levenberg-Marquardt damping of NGD (``damping``) and of NGD-d (``damping_d``), and
        update-speed clipping (max update norm per iteration) of both (Huh Sec. 6); clip
        0 disables clipping. Fractional rules with q < 2 get them too; sqrt-NGD and
        sqrt-NGD-d use neither (as in the paper).
    record_every : int
        Recording interval in iterations.
    tol : float
        A rule stops early once its map W̄ changes by less than ``tol * ||W̄||_F`` in one
        iteration (converged; its curves then end there). 0 runs every rule for ``steps``.
    step_check : int
        The c_2 step-size check (:func:`step_check`): SGD, sqrt-NGD and NGD-d are run
        again at half the learning rate for 2 x ``step_check`` iterations and their c_2
        drift compared with the main run's over the same time. 0 = off.
    seed : int
        Seed of data and initial weights (every rule starts from the same weights).
    """

    rules: tuple = config_field(
        DEFAULT_RULES, f"comma-separated update rules among {', '.join(_fixed_q_rules())} (the rule registry) "
        "or qngd_q<q>, qngd_d_q<q>", parse=reg.name_list, metavar="LIST")
    q: tuple = config_field(
        (), "add fractional q-NGD rule(s) (G^+)^(1/q) for these q >= 1 (q=1 NGD, q=2 sqrt-NGD)",
        parse=float_list, metavar="Q[,Q...]")
    depth: int = config_field(4, "number of weight matrices d of the student", parse=positive_int)
    width: int = config_field(16, "width N of every layer (input, hidden, output)", parse=positive_int)
    rank: int = config_field(3, "rank of the teacher map", parse=positive_int)
    teacher_sv: tuple = config_field(
        (), "teacher singular values s_1,...,s_rank (default 4*2^-k: 4,2,1)", parse=float_list, metavar="S[,S...]")
    num_test: int = config_field(1000, "number of test samples", parse=positive_int)
    steps: int = config_field(4000, "training iterations of every rule (at most; see --steps-rule)",
                              parse=positive_int)
    rule_steps: tuple = config_field(
        (("ngd", 500), ("sqrt_ngd", 500), ("ngd_d", 500), ("sqrt_ngd_d", 500)),
        "at most N iterations for RULE (repeatable; a rule runs min(--steps, N))", option="--steps-rule",
        parse=reg.rule_count, metavar="RULE=N", repeat=True)
    eta_bar: float = config_field(
        0.2, "depth-calibrated learning rate eta_bar = eta d^(1-1/q) (Huh eq 17): rule with power 1/q "
        "uses eta = eta_bar / d^(1-1/q), so every rule's map dynamics run on one time scale",
        option="--lr", parse=positive_float, metavar="ETA_BAR")
    lr_overrides: tuple = config_field(
        (), "override the raw learning rate eta of one rule (repeatable)", option="--lr-rule", parse=reg.rule_rate,
        metavar="RULE=LR", repeat=True)
    noise: float = config_field(0.3, "standard deviation of the output noise", parse=nonneg_float)
    init_scale: float = config_field(0.1, "standard deviation of the small random initial weights",
                                     parse=positive_float)
    damping: float = config_field(1e-5, "Levenberg-Marquardt damping epsilon of NGD (Huh Sec. 6)",
                                  parse=nonneg_float)
    damping_d: float = config_field(1e-5, "Levenberg-Marquardt damping epsilon of NGD-d (Huh Sec. 6)",
                                    parse=nonneg_float)
    clip: float = config_field(
        0.1, "update-speed clipping of NGD and NGD-d: the update norm is capped at CLIP (0 = off)",
        parse=nonneg_float)
    record_every: int = config_field(1, "record losses, modes and weights every this many iterations",
                                     parse=positive_int)
    tol: float = config_field(
        1e-9, "stop a rule once its map changes by less than TOL (relative) in one iteration; 0 = never",
        parse=nonneg_float)
    step_check: int = config_field(
        150, "c_2 step-size check: rerun SGD, sqrt-NGD, NGD-d at half the rate for 2*K steps and compare "
        "their c_2 drift over the same time (0 = off)", parse=int, metavar="K")

    def rule_names(self) -> tuple[str, ...]:
        """All rule names of the run: ``rules`` then ``qngd_q<q>`` for every extra q."""
        return tuple(self.rules) + tuple(f"qngd_q{q:g}" for q in self.q)

    def check(self) -> None:
        """Depth >= 2, 1 <= rank <= width, known rule names, q >= 1, overrides of run rules."""
        super().check()
        if self.depth < 2:
            raise UsageError(f"depth: expected at least 2 weight matrices (c_i needs two layers), got {self.depth}")
        if not 1 <= self.rank <= self.width:
            raise UsageError(f"rank: expected 1 <= rank <= width = {self.width}, got {self.rank}")
        for q in self.q:
            if not q >= 1:
                raise UsageError(f"q: expected values >= 1, got {q:g}")
        for name in self.rule_names():
            rule_q(name)
        for name, _ in self.lr_overrides:
            if name not in self.rule_names():
                raise UsageError(f"lr-rule: expected a rule of this run {self.rule_names()}, got {name!r}")
        for name, _ in self.rule_steps:
            if name not in self.rule_names():
                rule_q(name)  # a known rule (the defaults name rules a run may leave out)
        if self.teacher_sv and (len(self.teacher_sv) != self.rank or not all(
                isinstance(v, (int, float)) and 0 <= v < math.inf for v in self.teacher_sv)):
            raise UsageError(f"teacher-sv: expected {self.rank} (= rank) numbers >= 0, got {self.teacher_sv}")
        if isinstance(self.step_check, bool) or not isinstance(self.step_check, int) or self.step_check < 0:
            raise UsageError(f"step-check: expected an integer >= 0, got {self.step_check!r}")


#: The config of this experiment (the registry's ``config_type``).
Config = TeacherStudentConfig


def rule_q(name: str) -> float:
    """Order q of the rule ``name`` from the rule registry (``math.inf`` for SGD and
    Adam, which the depth calibration treats alike); :class:`UsageError` for a name
    that is not a registered rule of fixed order."""
    try:
        q = rule_registry.rule_q(name)
    except ValueError as exc:
        if not str(exc).startswith("name: expected one of"):
            raise UsageError(f"rules: {exc}") from None  # e.g. qngd_q0.5
        q = None
    if q is None:
        raise UsageError(f"rules: expected names among {_fixed_q_rules()} (or qngd_q<q>, qngd_d_q<q>), got {name!r}")
    return q


def depth_calibrated_lr(eta_bar: float, depth: int, q: float) -> float:
    """Raw learning rate eta = eta_bar / d^(1 - 1/q) of a rule of power 1/q (Huh eq 17:
    eta_bar = eta d^(1-1/q)); q = inf (SGD) gives eta_bar / d."""
    return eta_bar / depth ** (1.0 - (0.0 if math.isinf(q) else 1.0 / q))


def make_rule(name: str, config: TeacherStudentConfig):
    """The :class:`arraycurv.UpdateRule` and learning rate of rule ``name`` under ``config``,
    built by the rule registry (:func:`arraycurv.rules.registry.make_rule`).

    Full-curvature rules (NGD, sqrt-NGD, q-NGD) use the exact map-space form (Huh S.I.1,
    ``form="map"``: the kernel is (N^2 x N^2) = 256 x 256 instead of the 1024 x 1024
    GGN); the block-diagonal ones (NGD-d, sqrt-NGD-d) the exact Kronecker-factored layer
    blocks of :func:`arraycurv.qngd_blockdiag_direction`. Rules with q < 2 get the
    damping and clipping of ``config`` (Huh Sec. 6); SGD and Adam (q = inf) neither.
    """
    q = rule_q(name)
    spec = rule_registry.rule_spec(name)
    overrides = dict(config.lr_overrides)
    lr = float(overrides.get(name, depth_calibrated_lr(config.eta_bar, config.depth, q)))
    kw = {}
    if not math.isinf(q):
        if not spec.block_diagonal:
            kw["form"] = "map"
        if q < 2:
            damping = config.damping_d if spec.block_diagonal else config.damping
            kw.update(damping=damping, clip=config.clip if config.clip > 0 else None)
    return rule_registry.make_rule(name, lr, **kw), lr


def rule_steps(name: str, config: TeacherStudentConfig) -> int:
    """Iterations of rule ``name``: ``min(config.steps, config.rule_steps[name])``."""
    return min(config.steps, dict(config.rule_steps).get(name, config.steps))


def excess_loss(xp, params, teacher):
    """Excess population test loss ``1/2 ||W̄ - W̄_teacher||_F^2`` of a deep linear student
    on standard Gaussian inputs: E[1/2 ||W̄ x - y||^2] = that + 1/2 N sigma^2 for
    y = W̄_teacher x + z, z ~ N(0, sigma^2 I) (the noise floor)."""
    d = total_map(params) - teacher
    return 0.5 * xp.sum(d * d)


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
                               teacher_singular_values=config.teacher_sv or None, seed=config.seed, xp=xp,
                               dtype=config.dtype)
    model = DeepLinear((config.width,) * (config.depth + 1))
    params0 = init_params(model, config.seed + 1, xp, dtype=config.dtype, scale=config.init_scale)
    target, u, s, v = _target_svd(xp, data.x_train, data.y_train)
    teacher_s = xp.linalg.svdvals(data.teacher_map)
    return data, model, params0, target, u, s, v, teacher_s


def _recorders(xp, config: TeacherStudentConfig, u, v, teacher) -> dict:
    """The quantities recorded along training (array-agnostic functions of the params)."""
    a, b = _pair(config.depth)
    pos = _entries(config.width)
    rows = [r for r, _ in pos]
    cols = [c for _, c in pos]

    def pick(w):
        return xp.stack([w[r, c] for r, c in zip(rows, cols)])

    def norms(p):
        return xp.stack([xp.sqrt(xp.sum(p[a] * p[a])), xp.sqrt(xp.sum(p[b] * p[b])),
                         xp.sqrt(sum(xp.sum(w * w) for w in p))])

    return {
        "modes": lambda p: _mode_strengths(xp, p, u, v),
        "excess": lambda p: excess_loss(xp, p, teacher),
        "c": lambda p: _c(xp, p, a),
        "w2_entries": lambda p: pick(p[a]),
        "w3_entries": lambda p: pick(p[b]),
        "norms": norms,
    }


def _converged(xp, tol: float, params0):
    """Training callback that stops once the map changes by less than ``tol`` (relative)
    in one iteration; None for ``tol = 0``."""
    if tol <= 0:
        return None
    last = {"map": total_map(params0)}

    def callback(step, params, state):
        m = total_map(params)
        change = float(xp.sqrt(xp.sum((m - last["map"]) ** 2)))
        size = float(xp.sqrt(xp.sum(m * m)))
        last["map"] = m
        return change <= tol * size

    return callback


def run_rule(name: str, config: TeacherStudentConfig, data, model, params0, u, v, *, progress=None):
    """Train one rule from ``params0`` for :func:`rule_steps` iterations (or until it
    converges, ``config.tol``) and return its history (dict of NumPy arrays) and timing.
    The recorded functions are array-agnostic (any namespace)."""
    xp = backend.namespace_of(params=tuple(params0))
    rule, lr = make_rule(name, config)
    t0 = time.perf_counter()
    res = train(model, params0, (data.x_train, data.y_train), rule, rule_steps(name, config),
                record_every=config.record_every, eval_batches={"test": (data.x_test, data.y_test)},
                record=_recorders(xp, config, u, v, data.teacher_map), progress=progress,
                callback=_converged(xp, config.tol, params0))
    wall = time.perf_counter() - t0
    return _history(res, config, lr), {"time_per_step_s": float(res.time_per_step), "wall_s": wall}


def _history(res, config: TeacherStudentConfig, lr: float) -> dict:
    """The per-rule history (NumPy arrays) from a :class:`~arraycurv.dynamics.training.TrainResult`."""
    np = backend.host_namespace()  # recorded values are NumPy arrays (train() converted them)
    c = res.records["c"]
    c2_norm = np.sqrt(np.sum(c * c, axis=(1, 2)))
    drift = np.sqrt(np.sum((c - c[:1]) ** 2, axis=(1, 2)))
    return {
        "steps": res.steps,
        "train_loss": res.losses,
        "test_loss": res.eval_losses["test"],
        "excess_loss": np.asarray(res.records["excess"], dtype=np.float64),
        "modes": res.records["modes"],
        "c2_norm": c2_norm,
        "c2_drift": drift,
        "c2_drift_init": drift / c2_norm[0] if c2_norm[0] > 0 else drift,
        "c2_entries": c[:, [i % config.width for i in (0, 1, 2, 3)], [j % config.width for j in (0, 1, 0, 2)]],
        "w2_entries": res.records["w2_entries"],
        "w3_entries": res.records["w3_entries"],
        "w2_norm": res.records["norms"][:, 0],
        "w3_norm": res.records["norms"][:, 1],
        "weight_norm": res.records["norms"][:, 2],
        "lr": np.asarray(lr),
        "stopped_at": np.asarray(int(res.steps[-1])),
    }


def summarize_rule(hist: dict, target_s, rank: int) -> dict:
    """Per-rule metrics from a history (NumPy arrays).

    * ``min_test_loss`` / ``best_step``: early stopping on the sampled test loss (Fig 4C),
      which includes the noise floor 1/2 N sigma^2 and the sampling noise of the test set;
    * ``min_excess_loss`` / ``excess_best_step``: the same on the excess population test
      loss 1/2 ||W̄ - W̄_teacher||_F^2 (exact; :func:`excess_loss`), and
      ``excess_at_test_best``: the excess loss at ``best_step`` (early stopping by the
      sampled test loss, judged on the population);
    * ``final_train_loss``, ``final_test_loss``, ``final_excess_loss``, ``final_weight_norm``;
    * ``c2_drift`` = max_t ||c_2(t) - c_2(0)||_F, ``c2_drift_init`` = c2_drift / ||c_2(0)||_F
      (1: c_2 changed by its own size) and ``c2_drift_rel`` = c2_drift /
      max_t (||W_2||_F^2 + ||W_3||_F^2), in [0, 2];
    * ``signal_half_step``: first recorded step at which the strongest mode reaches half
      its target; ``noise_fraction_at_signal_half``: the median over the noise modes k >
      rank of s_k(t) / s_*k at that step (NGD learns all modes together: about 1/2;
      SGD learns the signal first: near 0). ``None`` if the strongest mode never reaches
      half its target;
    * ``stopped_at``: the last step (earlier than the rule's steps if it converged).
    """
    np = backend.host_namespace()

    target_s = np.asarray(target_s, dtype=np.float64)
    test = np.asarray(hist["test_loss"])
    excess = np.asarray(hist["excess_loss"])
    steps = np.asarray(hist["steps"])
    i_best, i_ex = int(np.argmin(test)), int(np.argmin(excess))
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
        "min_excess_loss": float(excess[i_ex]),
        "excess_best_step": int(steps[i_ex]),
        "excess_at_test_best": float(excess[i_best]),
        "final_train_loss": float(hist["train_loss"][-1]),
        "final_test_loss": float(test[-1]),
        "final_excess_loss": float(excess[-1]),
        "final_weight_norm": float(hist["weight_norm"][-1]),
        "c2_drift": drift,
        "c2_drift_init": float(np.max(hist["c2_drift_init"])),
        "c2_drift_rel": drift / scale if scale > 0 else 0.0,
        "stopped_at": int(hist["stopped_at"]),
        "signal_half_step": half_step,
        "noise_fraction_at_signal_half": frac,
    }


#: The rules of the c_2 step-size check (:func:`step_check`).
STEP_CHECK_RULES = ("sgd", "sqrt_ngd", "ngd_d")


def step_check(record: dict, config: TeacherStudentConfig, prepared, progress: bool = False) -> dict:
    """The c_2 step-size check: is the drift of c_2 the error of finite steps?

    c_2 is conserved by the continuous-time flow of SGD, NGD and sqrt-NGD (Huh Theorem 1),
    so their discrete drift is a step-size error and shrinks with the step, while NGD-d
    breaks the conservation law and its drift does not. For SGD, sqrt-NGD and NGD-d (those
    of the run), the rule is run again from the same weights at half its learning rate
    for 2 K iterations (K = min(``config.step_check``, the rule's steps), tol 0, same
    clipping and damping) and its ``max drift / ||c_2(0)||`` compared with that of the
    main run over its first K iterations (the same time).

    Returns
    -------
    dict
        rule -> ``{"steps": K, "drift": ..., "drift_half_step": ..., "ratio": ...}``.
    """
    np = backend.host_namespace()
    data, model, params0, u, v = prepared
    out = {}
    for name in STEP_CHECK_RULES:
        hist = record["histories"].get(name)
        if hist is None or config.step_check == 0:
            continue
        k = min(config.step_check, rule_steps(name, config))
        lr = record["rules"][name]["lr"]
        half = dataclasses.replace(config, steps=2 * k, rule_steps=(), tol=0.0,
                                   lr_overrides=((name, lr / 2),) + tuple(p for p in config.lr_overrides
                                                                          if p[0] != name))
        if progress:
            print(f"[teacher-student] c_2 step check: {name} at lr {lr / 2:g} for {2 * k} steps", file=sys.stderr,
                  flush=True)
        try:
            h2, _ = run_rule(name, half, data, model, params0, u, v)
        except ValueError as exc:
            if not reg.diverged(exc):
                raise
            continue
        full = float(np.max(np.asarray(hist["c2_drift_init"])[np.asarray(hist["steps"]) <= k]))
        small = float(np.max(h2["c2_drift_init"]))
        out[name] = {"steps": k, "drift": full, "drift_half_step": small, "ratio": small / full if full > 0 else 1.0}
    return out


#: The paper's claims checked on a run (:func:`analyze`): name -> (figure, statement).
CLAIMS = {
    "ngd_learns_noise_early": ("Fig 4D", "NGD and NGD-d learn the noise modes together with the signal, "
                                         "SGD and sqrt-NGD the signal first"),
    "early_stopping_sqrt_and_sgd_beat_ngd": ("Fig 4C", "early stopping: SGD and sqrt-NGD reach a lower excess "
                                                       "test loss than NGD"),
    "c2_drift_is_step_error": ("Thm 1, Fig 5C", "c_2 drift of SGD and sqrt-NGD is step-size error: it shrinks "
                                                "at half the step"),
    "ngd_d_breaks_c2": ("Fig 5C", "NGD-d changes c_2 by more than its initial norm and 10x more than SGD, NGD, "
                                  "sqrt-NGD; not a step-size error"),
}


def analyze(summary: dict) -> dict:
    """The paper's qualitative claims (Huh Sec. 6, :data:`CLAIMS`) checked on a summary: a
    dict of booleans (``None`` where a rule or check they need is missing from the run).

    * ``ngd_learns_noise_early``: NGD's and NGD-d's ``noise_fraction_at_signal_half``
      both exceed 3x the larger of SGD's and sqrt-NGD's, and 0.2 (Fig 4D);
    * ``early_stopping_sqrt_and_sgd_beat_ngd``: the minimum *excess* (population) test
      loss of SGD and of sqrt-NGD is below NGD's (Fig 4C; the sampled test loss adds the
      noise floor and sampling noise, which can flip close rankings);
    * ``c2_drift_is_step_error``: in the step check (:func:`step_check`) the c_2 drift
      of SGD and sqrt-NGD at half the step is below 0.75x that at the full step (c_2 is
      conserved in continuous time, Theorem 1; the drift is the error of finite steps);
    * ``ngd_d_breaks_c2``: ``c2_drift_init`` of NGD-d exceeds 1 and 10x that of each of
      SGD, NGD and sqrt-NGD, and (with the step check) halving its step leaves at least
      0.8x of its drift (Fig 5C).
    """
    r = summary.get("rules", {})
    chk = summary.get("step_check", {})

    def get(name, key):
        return r.get(name, {}).get(key)

    def have(values):
        return all(v is not None for v in values)

    out = {}
    fr = {n: get(n, "noise_fraction_at_signal_half") for n in ("sgd", "sqrt_ngd", "ngd", "ngd_d")}
    out["ngd_learns_noise_early"] = (
        bool(min(fr["ngd"], fr["ngd_d"]) > max(0.2, 3 * max(fr["sgd"], fr["sqrt_ngd"]))) if have(fr.values()) else None
    )
    es = {n: get(n, "min_excess_loss") for n in ("sgd", "sqrt_ngd", "ngd")}
    out["early_stopping_sqrt_and_sgd_beat_ngd"] = (
        bool(max(es["sgd"], es["sqrt_ngd"]) < es["ngd"]) if have(es.values()) else None
    )
    ratios = [chk.get(n, {}).get("ratio") for n in ("sgd", "sqrt_ngd")]
    out["c2_drift_is_step_error"] = bool(max(ratios) < 0.75) if have(ratios) else None
    dr = [get(n, "c2_drift_init") for n in ("sgd", "ngd", "sqrt_ngd")]
    d = get("ngd_d", "c2_drift_init")
    ok = have(dr + [d]) and d > max(1.0, 10 * max(dr))
    d_ratio = chk.get("ngd_d", {}).get("ratio")
    out["ngd_d_breaks_c2"] = bool(ok and (d_ratio is None or d_ratio > 0.8)) if have(dr + [d]) else None
    return out


def claims_over_seeds(claims: list[dict]) -> dict:
    """Per claim over the seeds' :func:`analyze` results: ``supported`` (seeds where it
    holds), ``n`` (seeds where it could be checked) and ``passed`` (held on every one)."""
    out = {}
    for name in dict.fromkeys(k for c in claims for k in c):
        vals = [c.get(name) for c in claims if c.get(name) is not None]
        out[name] = {"supported": int(sum(bool(v) for v in vals)), "n": len(vals),
                     "passed": bool(vals) and all(vals)}
    return out


def _format_claims(counts: dict) -> str:
    lines = []
    for name, c in counts.items():
        fig, text = CLAIMS.get(name, ("", name))
        verdict = "PASS" if c["passed"] else ("n/a " if c["n"] == 0 else "FAIL")
        lines.append(f"  {verdict} {c['supported']}/{c['n']} seeds  {name} ({fig}): {text}")
    return "\n".join(lines)


def _hist_for_plots(histories: dict, target_s, teacher_s, config) -> dict:
    np = backend.host_namespace()

    out = {"rules": list(histories), "target_sv": np.asarray(target_s), "teacher_sv": np.asarray(teacher_s),
           "rank": config.rank}
    a, b = _pair(config.depth)
    for name, h in histories.items():
        test = np.asarray(h["test_loss"])
        out[name] = dict(h, best_step=int(np.asarray(h["steps"])[int(np.argmin(test))]))
    out["title"] = (f"Huh (2020) Fig 4: depth-{config.depth} width-{config.width} student, rank-{config.rank} teacher, "
                    f"P = N = {config.width}, noise {config.noise:g}, eta_bar {config.eta_bar:g}, seed {config.seed}")
    out["title5"] = "Huh (2020) Fig 5: parameter dynamics (a few weight entries; the conserved quantity of eq 15)"
    out["layers"] = (a + 1, b + 1)
    out["steps"] = config.steps
    return out


SUMMARY_COLUMNS = ("rule", "lr", "stopped_at", "min_excess_loss", "min_test_loss", "best_step", "final_train_loss",
                   "c2_drift_init", "noise_fraction_at_signal_half", "time_per_step_ms")


SUMMARY_HEADERS = ("rule", "lr", "steps", "min excess", "min test", "at step", "final train", "c2 drift/|c2(0)|",
                   "noise@signal½", "ms/step")


def _footer(summary: dict) -> str:
    cfg = summary.get("config", {})
    floor = summary.get("noise_floor")
    lines = []
    if floor is not None:
        lines.append(f"noise floor 1/2 N sigma^2 = {floor:.4g} (N = {cfg.get('width')}, sigma = {cfg.get('noise')}): "
                     "the sampled test loss is about the excess (population) loss plus this floor, "
                     f"plus the sampling noise of {cfg.get('num_test')} test samples")
    chk = summary.get("step_check") or {}
    if chk:
        parts = [f"{n} {c['drift']:.3g} -> {c['drift_half_step']:.3g} (x{c['ratio']:.2f})" for n, c in chk.items()]
        lines.append("c_2 drift/|c2(0)| over the first steps at the full -> half step: " + ", ".join(parts))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The summary of one seed as an aligned text table (one row per rule), the noise
    floor, the c_2 step check and the claims."""
    from ..results import format_table
    from .plotting import rule_label

    rows = []
    for name, m in summary["rules"].items():
        row = dict(m, rule=rule_label(name) + (" (diverged)" if m.get("diverged") else ""))
        t = summary.get("timing", {}).get(name, {}).get("time_per_step_s")
        row["time_per_step_ms"] = None if t is None else 1e3 * t
        rows.append(row)
    text = format_table(rows, SUMMARY_COLUMNS, headers=SUMMARY_HEADERS)
    footer = _footer(summary)
    claims = summary.get("claims")
    if claims:
        footer += ("\n" if footer else "") + "claims of Huh Sec. 6:\n" + _format_claims(claims_over_seeds([claims]))
    return text + ("\n" + footer if footer else "")


#: Columns of the table over seeds (:func:`format_seeds`): metric -> header.
SEED_COLUMNS = {"min_excess_loss": "min excess", "min_test_loss": "min test", "excess_at_test_best":
                "excess@test-best", "best_step": "at step", "c2_drift_init": "c2 drift/|c2(0)|",
                "noise_fraction_at_signal_half": "noise@signal½", "stopped_at": "steps"}


def format_seeds(summary: dict) -> str:
    """The summary of several seeds: per rule ``mean ± sd`` over the seeds of each
    metric of :data:`SEED_COLUMNS`, the noise floor and the claims with the number of
    seeds supporting each."""
    from ..results import format_table
    from .plotting import rule_label

    rows = []
    for name, stats in summary["over_seeds"].items():
        row = {"rule": rule_label(name), "lr": stats.get("lr", {}).get("mean")}
        for key in SEED_COLUMNS:
            s = stats.get(key)
            row[key] = "-" if not s or not s["n"] else (
                f"{s['mean']:.4g} ± {s['sd']:.2g}" if s["n"] > 1 else f"{s['mean']:.4g}")
        rows.append(row)
    n = len(summary["records"])
    text = f"teacher-student over {n} seeds {summary['seeds']} (mean ± sd over seeds):\n"
    text += format_table(rows, ["rule", "lr", *SEED_COLUMNS], headers=["rule", "lr", *SEED_COLUMNS.values()])
    first = dict(summary["records"][0], step_check={})
    footer = _footer(first)
    chk = [r.get("step_check") or {} for r in summary["records"]]
    if any(chk):
        parts = []
        for name in STEP_CHECK_RULES:
            ratios = [c[name]["ratio"] for c in chk if name in c]
            if ratios:
                parts.append(f"{name} x{min(ratios):.2f}..{max(ratios):.2f}")
        footer += "\nc_2 drift at half the step / at the full step (over seeds): " + ", ".join(parts)
    text += "\n" + footer + f"\nclaims of Huh Sec. 6 over {n} seeds:\n" + _format_claims(summary["claims"])
    return text


NAME = "teacher-student"


PAPER = "Huh (2020) Sec. 6, Figs 4-5"


def run_one(config: TeacherStudentConfig, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Run every rule of ``config`` from the same data and initial weights; write nothing.

    Parameters
    ----------
    config : TeacherStudentConfig
    xp : namespace, optional
        Array namespace; default the one named by ``config.backend``.
    progress : bool
        Progress lines on stderr (with early stops).
    checkpoint : callable, optional
        Called with the record so far after every finished rule.

    Returns
    -------
    dict
        The record: ``experiment``, ``paper``, ``backend``, ``config``
        (:func:`~arraycurv.experiments.registry.config_dict`), ``noise_floor``
        (1/2 N sigma^2), ``target_sv``, ``teacher_sv``, ``target_map``, ``rules``
        (per-rule metrics, :func:`summarize_rule`; ``{"diverged": True, "message": ...}``
        for a rule whose loss became NaN/Inf), ``step_check`` (:func:`step_check`),
        ``claims`` (:func:`analyze`), ``histories`` (per rule, the NumPy arrays of
        :func:`run_rule`) and ``timing`` (per rule; not reproducible).
    """
    np = backend.host_namespace()

    config, xp = reg.bind_namespace(config, xp)
    data, model, params0, target, u, s, v, teacher_s = setup(config, xp)
    record: dict = {
        "experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp), "config": reg.config_dict(config),
        "noise_floor": 0.5 * config.width * config.noise ** 2,
        "target_sv": backend.to_numpy(s).astype(np.float64).tolist(),
        "teacher_sv": backend.to_numpy(teacher_s).astype(np.float64).tolist(),
        "target_map": backend.to_numpy(target), "rules": {}, "step_check": {}, "claims": {}, "histories": {},
        "timing": {},
    }
    names = config.rule_names()
    prepared = (data, model, params0, u, v)
    for i, name in enumerate(names):
        if progress:
            print(f"[teacher-student] seed {config.seed}, rule {i + 1}/{len(names)}: {name} "
                  f"({rule_steps(name, config)} steps)", file=sys.stderr, flush=True)
        _train_into(record, name, config, prepared, progress)
        record["claims"] = analyze(record)
        if checkpoint is not None:
            checkpoint(record)
    record["step_check"] = step_check(record, config, prepared, progress)
    record["claims"] = analyze(record)
    return record


def _train_into(record: dict, name: str, config: TeacherStudentConfig, prepared, progress: bool) -> None:
    """Train rule ``name`` and put its metrics, history and timing into ``record``; a rule
    whose loss becomes NaN/Inf is recorded as diverged."""
    data, model, params0, u, v = prepared
    try:
        hist, timing = run_rule(name, config, data, model, params0, u, v,
                                progress=print_progress if progress else None)
    except ValueError as exc:  # train() raises when the loss becomes NaN/Inf
        if not reg.diverged(exc):
            raise
        if progress:
            print(f"[teacher-student] {name} diverged: {exc}", file=sys.stderr, flush=True)
        record["rules"][name] = {"diverged": True, "message": str(exc)}
        return
    record["histories"][name] = hist
    metrics = summarize_rule(hist, record["target_sv"], config.rank)
    n = rule_steps(name, config)
    record["rules"][name] = dict(metrics, steps=n, early_stop=metrics["stopped_at"] < n, diverged=False)
    record["timing"][name] = timing
    if progress and metrics["stopped_at"] < n:
        print(f"[teacher-student] {name}: early stop at step {metrics['stopped_at']}/{n} (its map changed by less "
              f"than tol = {config.tol:g} of its norm in one step)", file=sys.stderr, flush=True)


#: Files a report may write into its folder (earlier ones it does not rewrite are removed).
_FILES = ("fig4.png", "fig5.png", "seeds.png", "summary.json", "table.txt", "history.npz")


def _remove_stale(out_dir, written) -> None:
    """Remove this experiment's files left in ``out_dir`` by an earlier run that this
    report did not rewrite (e.g. figures of a run with plots, after one without)."""
    for name in _FILES:
        path = os.path.join(out_dir, name)
        if name not in written and os.path.isfile(path):
            os.unlink(path)


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write the figures, ``summary.json`` and ``history.npz`` of the records of
    :func:`run_one` into ``out_dir`` (atomically; nothing for None; files of an earlier
    run that this one does not rewrite are removed) and, with ``progress``, print the
    table.

    One record: ``fig4.png``, ``fig5.png``, ``summary.json`` (the record without its
    arrays) and ``history.npz``. Several (one per seed, :func:`run` with ``seeds``):
    ``summary.json`` with ``records`` (each seed's summary), ``over_seeds`` (per rule and
    metric: n, mean, sd, 95% Student-t interval, min, max), ``claims`` (per claim the
    number of seeds supporting it, :func:`claims_over_seeds`), ``table.txt``
    (:func:`format_seeds`), ``history.npz`` (keys ``seed<s>/<rule>/<name>``), ``fig4.png``
    and ``fig5.png`` of the first seed, and ``seeds.png`` (excess and sampled test loss
    per rule: mean and 95% band over seeds).

    Returns
    -------
    dict
        The summary written to ``summary.json`` (plus ``files`` when ``out_dir`` is given).
    """
    records = list(records)
    if not records:
        raise ValueError("records: expected at least one record, got none")
    if len(records) == 1:
        return _report_one(records[0], out_dir, progress=progress, plots=plots)
    return _report_seeds(records, out_dir, progress=progress, plots=plots)


def _summary_of(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("histories", "target_map")}


def _report_one(record: dict, out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import write_npz

    np = backend.host_namespace()
    summary = _summary_of(record)
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        arrays = {"target_sv": np.asarray(record["target_sv"]), "teacher_sv": np.asarray(record["teacher_sv"]),
                  "target_map": record["target_map"]}
        for name, hist in record["histories"].items():
            arrays.update({f"{name}/{k}": val for k, val in hist.items()})
        write_npz(os.path.join(out_dir, "history.npz"), arrays)
        summary["files"] = ["summary.json", "history.npz"]
        if plots and record["histories"]:
            _plot(record, out_dir)
            summary["files"] = ["fig4.png", "fig5.png", "summary.json", "history.npz"]
        reg.write_summary(summary, out_dir, summary["files"])
        _remove_stale(out_dir, summary["files"])
    return reg.show_report(summary, out_dir, format_summary, progress=progress)


def _over_seeds(records: list[dict]) -> dict:
    """Per rule and metric: the statistics over seeds (:func:`arraycurv.sweeps.aggregate`)."""
    from ..sweeps.stats import aggregate

    entries = [{"values": [], "record": {"rules": r["rules"]}} for r in records]
    row = aggregate(entries, ["rules.*.*"])[0]
    out: dict = {}
    for path, stats in row.items():
        if path.startswith("rules."):
            _, rule, key = path.split(".", 2)
            out.setdefault(rule, {})[key] = stats
    return out


def _report_seeds(records: list[dict], out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import write_npz, write_text

    summary = {"experiment": NAME, "paper": PAPER, "config": records[0]["config"],
               "seeds": [r["config"]["seed"] for r in records], "noise_floor": records[0]["noise_floor"],
               "records": [_summary_of(r) for r in records], "over_seeds": _over_seeds(records),
               "claims": claims_over_seeds([r["claims"] for r in records])}
    table = format_seeds(summary)
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        arrays = {}
        for r in records:
            s = r["config"]["seed"]
            arrays[f"seed{s}/target_sv"] = r["target_sv"]
            for name, hist in r["histories"].items():
                arrays.update({f"seed{s}/{name}/{k}": val for k, val in hist.items()})
        write_npz(os.path.join(out_dir, "history.npz"), arrays)
        write_text(os.path.join(out_dir, "table.txt"), table + "\n")
        summary["files"] = ["summary.json", "table.txt", "history.npz"]
        if plots and records[0]["histories"]:
            _plot(records[0], out_dir)
            _plot_seeds(records, os.path.join(out_dir, "seeds.png"))
            summary["files"] = ["fig4.png", "fig5.png", "seeds.png"] + summary["files"]
        reg.write_summary(summary, out_dir, summary["files"])
        _remove_stale(out_dir, summary["files"])
    return reg.show_report(summary, out_dir, table, progress=progress)


def _plot_seeds(records: list[dict], path) -> None:
    """Excess and sampled test loss per rule over the seeds: mean and 95% band."""
    from ..sweeps.stats import aggregate, plot_bands

    entries = [{"values": [], "record": {"histories": r["histories"]}} for r in records]
    rows = aggregate(entries, ["histories.*.excess_loss", "histories.*.steps"])
    n = len(records)
    plot_bands(rows, "histories.*.excess_loss", path, x="histories.*.steps", xlabel="step", xscale="symlog",
               title=f"excess test loss 1/2 ||W - W_teacher||^2: mean and 95% band over {n} seeds")


def _plot(record: dict, out_dir) -> None:
    from .plotting import plot_teacher_student_fig4, plot_teacher_student_fig5

    config = reg.config_from_dict(TeacherStudentConfig, record["config"])
    ph = _hist_for_plots(record["histories"], record["target_sv"], record["teacher_sv"], config)
    plot_teacher_student_fig4(ph, os.path.join(out_dir, "fig4.png"))
    plot_teacher_student_fig5(ph, os.path.join(out_dir, "fig5.png"))


def run(config: TeacherStudentConfig | None = None,
        out_dir: str | os.PathLike | None = "results/teacher-student",
        *, xp=None, progress: bool = True, plots: bool = True, seeds=1, threads: int | None = 1) -> dict:
    """Run the teacher-student experiment of Huh Sec. 6 (Figs 4, 5): :func:`run_one`
    per seed, then :func:`report`.

    Every rule starts from the same data and initial weights. After each rule,
    ``summary.json`` and ``history.npz`` in ``out_dir`` are rewritten atomically with all
    finished rules (an interrupted run keeps them); at the end the figures are drawn and,
    with ``progress``, the table is printed.

    Parameters
    ----------
    config : TeacherStudentConfig, optional
        Default ``TeacherStudentConfig()``.
    out_dir : path or None
        Output folder (None: nothing is written).
    xp : namespace, optional
        Array namespace (default: ``config.backend``, NumPy unless set).
    progress : bool
        Progress lines on stderr and the table on stdout.
    plots : bool
        Draw the figures (needs matplotlib).
    seeds : int or sequence of int
        1: ``config.seed`` only; n: seeds ``config.seed``, ..., ``+ n - 1`` with their
        spread (:func:`~arraycurv.experiments.registry.run_seeds`; the command line runs 5).
    threads : int or None
        BLAS threads (threadpoolctl; default 1, like the command line).

    Returns
    -------
    dict
        The summary (:func:`report`): for one seed ``config``, ``rules`` (per-rule
        metrics, :func:`summarize_rule`), ``timing`` (excluded from reproducibility
        comparisons), ``noise_floor``, ``target_sv``, ``teacher_sv``, ``step_check``,
        ``claims`` (:func:`analyze`), ``files``.
    """
    return reg.run_experiment(EXPERIMENT, config, out_dir, xp=xp, progress=progress, plots=plots, seeds=seeds,
                          threads=threads)


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=TeacherStudentConfig, run_one=run_one, report=report,
    help="Huh Sec. 6: deep linear teacher-student, Figs 4 and 5 (default)", paper=PAPER, default_seeds=5,
    metrics=("rules.*.min_excess_loss", "rules.*.min_test_loss", "rules.*.c2_drift_init",
             "rules.*.noise_fraction_at_signal_half"),
    curves=(("histories.*.excess_loss", "histories.*.steps"),)))
