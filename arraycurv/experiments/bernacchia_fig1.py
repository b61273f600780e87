"""Bernacchia, Lengyel & Hennequin (2018) Fig. 1: SGD against the online natural gradient.

Panels A-C: deep linear students learn a random teacher of their own class
(:func:`arraycurv.data.bernacchia_teacher_student`: 10^4 training and 10^3 test
examples, inputs N(0, Sigma) with random orthogonal eigenvectors and eigenvalues
exp(-5 i / n0), output noise 1e-6 I), for the three architectures of
:data:`arraycurv.data.BERNACCHIA_FIG1_WIDTHS` (A: 16 layers of width 20; B: 16 layers
20, 30, ..., 100, ..., 30, 20; C: the 12-layer bottleneck 200, ..., 2, ..., 200).
Panel D: a tanh autoencoder (linear last layer) on scikit-learn's 8 x 8 digits, the
paper's 784-400-200-100-50-100-200-400-784 MNIST network scaled to
64-48-32-16-8-16-32-48-64.

Both optimizers start from the same initial weights. SGD uses minibatches of M = 20 and
the learning rate that gives the lowest final *training* loss in a grid search the
experiment runs (on the first seed; the other seeds reuse it) and reports; NGD is
:func:`arraycurv.rules.bernacchia.bernacchia_ngd` (eq 20 with the adaptive damping of
eq 21, alpha = 1, M = 1000, K = 1 model sample per input; lambda bounded below by 1e-8,
which the paper does not specify). The test loss (the library's MSE, 1/2 ||f - y||^2) is
recorded against the number of training examples seen and against wall-clock time (time
per update step times steps, recording excluded), the paper's two axes, with the minimum
achievable loss (the teacher's loss on the same test set; dashed) for several seeds.

As data (:mod:`arraycurv.experiments.registry`): :class:`Fig1Config`, the pure
:func:`run_one` and :func:`report`, registered as ``"bernacchia"``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

from .. import backend
from ..data import BERNACCHIA_FIG1_WIDTHS, bernacchia_teacher_student
from ..directions.bernacchia import check_map_path, has_bottleneck
from ..dynamics.training import train
from ..losses import MSE, loss_value
from ..models.base import forward, init_params
from ..models.deep_linear import DeepLinear
from ..models.sequential import mlp
from ..rules.alias import sgd
from ..rules.bernacchia import bernacchia_ngd
from ..rules.damping import levenberg_marquardt
from . import registry as reg
from .registry import UsageError, config_field, float_list, positive_float, positive_int

__all__ = ["AUTOENCODER_WIDTHS", "EXPERIMENT", "Fig1Config", "format_summary", "report", "run", "run_one",
           "run_panel"]

NAME = "bernacchia"
PAPER = "Bernacchia, Lengyel & Hennequin (2018) Fig. 1 (D on scikit-learn digits)"

#: Panel D: the MNIST autoencoder 784-400-200-100-50-... scaled to the 64 pixels of digits.
AUTOENCODER_WIDTHS = (64, 48, 32, 16, 8, 16, 32, 48, 64)

_PANELS = ("A", "B", "C", "D")
#: Training examples the recorded training loss is evaluated on (the first ones).
_TRAIN_EVAL = 2000


@dataclass(frozen=True)
class Fig1Config(reg.ExperimentConfig):
    """Settings of the Fig. 1 reproduction (validated when built, :class:`UsageError`).

    Attributes
    ----------
    panels : tuple of str
        Among A, B, C (deep linear) and D (digits autoencoder).
    num_seeds : int
        Seeds ``seed, seed + 1, ...`` (data, initial weights, minibatch order) run inside
        one record, the SGD grid searched on the first and its pick reused; the command
        line's ``--seeds`` (default 3) instead runs one record per seed, each with its own
        grid search.
    examples, examples_d : int
        Training examples seen by each optimizer (A-C and D).
    full : bool
        The paper's budget: 10x the examples.
    sgd_batch, ngd_batch, ngd_batch_d : int
        Minibatch sizes (paper: 20 and 1000; D uses 500 of the 1347 training digits).
    sgd_lrs, sgd_lrs_c, sgd_lrs_d : tuple of float
        The SGD learning-rate grid (paper's picks: 0.08 for A, B; 0.02 for C; 0.04 for D),
        searched on the first seed (lowest final training loss) and reused for the others.
    alpha, damping, min_damping, num_samples : float, float, float, int
        NGD rate alpha, initial lambda of eq (21) and its lower bound, samples K per input.
    num_train, num_test, noise_var : int, int, float
        Teacher-student data of A-C.
    record_points : int
        About this many recorded points per curve.
    """

    panels: tuple = config_field(_PANELS, "comma-separated panels among A, B, C, D", parse=reg.name_list,
                                 metavar="LIST")
    num_seeds: int = config_field(1, "seeds seed, seed+1, ... inside one record, the first seed's SGD pick "
                                  "reused (the common --seeds runs independent records, each with its own "
                                  "grid search)", parse=positive_int)
    examples: int = config_field(100_000, "training examples seen per optimizer, panels A-C", parse=positive_int)
    examples_d: int = config_field(50_000, "training examples seen per optimizer, panel D", parse=positive_int)
    full: bool = config_field(False, "paper budget: 10x the examples (add --seeds 5 for more seeds)")
    sgd_batch: int = config_field(20, "SGD minibatch size (paper: 20)", parse=positive_int)
    ngd_batch: int = config_field(1000, "NGD minibatch size, A-C (paper: 1000)", parse=positive_int)
    ngd_batch_d: int = config_field(500, "NGD minibatch size, D", parse=positive_int)
    sgd_lrs: tuple = config_field((0.02, 0.04, 0.08, 0.16), "SGD learning-rate grid, A-C (searched on the first "
                                  "seed, reused for the others)", parse=float_list, metavar="LR[,LR...]")
    sgd_lrs_c: tuple = config_field((0.0025, 0.005, 0.01, 0.02), "SGD learning-rate grid, C (the bottleneck "
                                    "diverges from 0.02 on)", parse=float_list, metavar="LR[,LR...]")
    sgd_lrs_d: tuple = config_field((0.02, 0.04, 0.08, 0.16), "SGD learning-rate grid, D", parse=float_list,
                                    metavar="LR[,LR...]")
    alpha: float = config_field(1.0, "NGD rate alpha (paper: 1)", parse=positive_float)
    damping: float = config_field(1e-3, "initial damping lambda of eq (21)", parse=positive_float)
    min_damping: float = config_field(1e-8, "lower bound of lambda (not in the paper; 0 lets minibatch noise "
                                      "through once lambda has decayed)", parse=reg.nonneg_float)
    num_samples: int = config_field(1, "model samples K per input for the error covariance (paper: 1)",
                                    parse=positive_int)
    num_train: int = config_field(10_000, "training examples of A-C (paper: 10^4)", parse=positive_int)
    num_test: int = config_field(1_000, "test examples of A-C (paper: 10^3)", parse=positive_int)
    noise_var: float = config_field(1e-6, "output noise variance of A-C (paper: 1e-6)", parse=positive_float)
    record_points: int = config_field(50, "about this many recorded points per curve", parse=positive_int)

    def check(self) -> None:
        """Known panels, non-empty learning-rate grids, batches that fit the data."""
        super().check()
        bad = [p for p in self.panels if p not in _PANELS]
        if bad or not self.panels:
            raise UsageError(f"panels: expected some of {_PANELS}, got {self.panels}")
        for name in ("sgd_lrs", "sgd_lrs_c", "sgd_lrs_d"):
            lrs = getattr(self, name)
            if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
                raise UsageError(f"{name.replace('_', '-')}: expected positive learning rates, got {lrs}")
        if max(self.sgd_batch, self.ngd_batch) > self.num_train:
            raise UsageError(f"ngd-batch: expected minibatches of at most num-train = {self.num_train} examples, "
                             f"got {max(self.sgd_batch, self.ngd_batch)}")


def _budget(config):
    scale = 10 if config.full else 1
    return config.examples * scale, config.examples_d * scale, config.num_seeds


# ----------------------------------------------------------------------------- data and models
def _panel_setup(panel, config, seed, xp):
    """(model, params0, train (x, y), test (x, y), floor, info) of one panel and seed."""
    if panel == "D":
        from ..data import load_digits

        data = load_digits(test_fraction=0.25, seed=seed, xp=xp, dtype=config.dtype)
        model = mlp(AUTOENCODER_WIDTHS, "tanh")
        params = init_params(model, seed + 1000, xp, dtype=config.dtype)
        train_set = (data.x_train, data.x_train)
        test_set = (data.x_test, data.x_test)
        return model, params, train_set, test_set, 0.0, {"widths": AUTOENCODER_WIDTHS, "data": "sklearn digits"}
    widths = BERNACCHIA_FIG1_WIDTHS[panel]
    data = bernacchia_teacher_student(widths, num_train=config.num_train, num_test=config.num_test,
                                      noise_var=config.noise_var, seed=seed, xp=xp, dtype=config.dtype)
    model = DeepLinear(widths)
    params = init_params(model, seed + 1000, xp, dtype=config.dtype)  # a random network of the same class
    teacher = data.info["teacher_params"]
    floor = float(loss_value(MSE(), forward(model, teacher, data.x_test), data.y_test))
    info = {"widths": widths, "bottleneck": has_bottleneck(model),
            "population_floor": config.noise_var * widths[-1] / 2.0}
    if len(set(widths)) == 1:  # square layers: does the exact NGD map path cross a singular matrix?
        path = check_map_path(model, params, (data.x_train, data.y_train), warn=False)
        info["map_path_crosses_singular"] = bool(path.crosses)
        info["singular_times"] = list(path.times)
    return model, params, (data.x_train, data.y_train), (data.x_test, data.y_test), floor, info


def _minibatches(train_set, size, seed, xp):
    """``batch(step)``: consecutive slices of a seeded permutation, reshuffled every epoch."""
    x, y = train_set
    n = x.shape[0]
    per_epoch = max(n // size, 1)
    g = backend.rng(seed)
    perms = {}

    def batch(step):
        epoch, k = divmod(step, per_epoch)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = xp.asarray(backend.to_numpy(g.permutation(n))[: per_epoch * size])
        idx = perms[epoch][k * size:(k + 1) * size]
        return xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)

    return batch


def _curve(model, params, train_set, test_set, rule, batch_size, examples, config, seed, xp):
    steps = max(examples // batch_size, 1)
    every = max(steps // config.record_points, 1)
    t0 = time.perf_counter()
    x, y = train_set
    sub = (x[:_TRAIN_EVAL, ...], y[:_TRAIN_EVAL, ...])  # training loss on a fixed subset (cheaper records)
    res = train(model, params, _minibatches(train_set, batch_size, seed, xp), rule, steps, record_every=every,
                eval_batches={"test": test_set, "train": sub})
    total = time.perf_counter() - t0
    h = backend.host_namespace()
    return {"examples": res.steps * batch_size, "test_loss": res.eval_losses["test"],
            "train_loss": res.eval_losses["train"], "wall_clock_s": res.steps * res.time_per_step,
            "time_per_step_s": res.time_per_step, "total_s": total, "steps": steps,
            "final_test_loss": float(res.eval_losses["test"][-1]),
            "final_train_loss": float(res.eval_losses["train"][-1]), "finite": bool(h.isfinite(res.losses).all())}


def _grid(panel, config):
    return {"C": config.sgd_lrs_c, "D": config.sgd_lrs_d}.get(panel, config.sgd_lrs)


def run_panel(panel, config, seed, xp, *, lrs=None, progress=False):
    """One panel and seed: SGD for each learning rate of ``lrs`` (default the config's
    grid) keeping the one with the lowest final training loss, and NGD."""
    examples, examples_d, _ = _budget(config)
    budget = examples_d if panel == "D" else examples
    model, params, train_set, test_set, floor, info = _panel_setup(panel, config, seed, xp)
    grid = {}
    for lr in (lrs or _grid(panel, config)):
        try:
            grid[lr] = _curve(model, params, train_set, test_set, sgd(lr), config.sgd_batch, budget, config,
                              seed, xp)
        except ValueError as exc:  # diverged (DivergenceError is a ValueError)
            grid[lr] = {"diverged": True, "message": str(exc)[:200], "final_train_loss": math.inf,
                        "final_test_loss": math.inf}
        if progress:
            print(f"[bernacchia] {panel} seed {seed}: SGD lr {lr:g}: final train loss "
                  f"{grid[lr]['final_train_loss']:.3g}", file=sys.stderr, flush=True)
    best_lr = min(grid, key=lambda lr: grid[lr]["final_train_loss"])
    if grid[best_lr].get("diverged") and lrs is not None:  # the first seed's pick diverged here: search again
        return run_panel(panel, config, seed, xp, progress=progress)
    if grid[best_lr].get("diverged"):
        raise UsageError(f"sgd-lrs: expected a grid with a learning rate that does not diverge, got {tuple(grid)}")
    damping = levenberg_marquardt(config.damping, min_damping=min(config.min_damping, config.damping))
    rule = bernacchia_ngd(config.alpha, damping=damping, num_samples=config.num_samples, seed=seed)
    ngd_batch = config.ngd_batch_d if panel == "D" else config.ngd_batch
    ngd = _curve(model, params, train_set, test_set, rule, ngd_batch, budget, config, seed, xp)
    if progress:
        print(f"[bernacchia] {panel} seed {seed}: NGD final test loss {ngd['final_test_loss']:.3g}, "
              f"SGD (lr {best_lr:g}) {grid[best_lr]['final_test_loss']:.3g}", file=sys.stderr, flush=True)
    excess_sgd = grid[best_lr]["final_test_loss"] - floor
    excess_ngd = ngd["final_test_loss"] - floor
    return {"panel": panel, "seed": seed, "floor": floor, "info": info, "best_sgd_lr": best_lr,
            "sgd_grid": {f"{lr:g}": {k: v for k, v in c.items() if not hasattr(v, "shape")}
                         for lr, c in grid.items()},
            "sgd": grid[best_lr], "ngd": ngd, "excess_sgd": excess_sgd, "excess_ngd": excess_ngd,
            "excess_ratio": excess_sgd / max(excess_ngd, 1e-300)}


def run_one(config: Fig1Config, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Every panel for every seed (:func:`run_panel`); writes nothing.

    Returns
    -------
    dict
        ``experiment``, ``paper``, ``backend``, ``config``, ``runs`` (per ``"<panel>/<seed>"``)
        and ``timing``.
    """
    config, xp = reg.bind_namespace(config, xp)
    _, _, num_seeds = _budget(config)
    record = {"experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp),
              "config": reg.config_dict(config), "runs": {}, "timing": {}}
    for panel in config.panels:
        best = None
        for seed in range(config.seed, config.seed + num_seeds):
            t0 = time.perf_counter()
            run = run_panel(panel, config, seed, xp, lrs=None if best is None else (best,), progress=progress)
            best = run["best_sgd_lr"]  # the grid is searched on the first seed
            record["runs"][f"{panel}/{seed}"] = run
            record["timing"][f"{panel}/{seed}"] = time.perf_counter() - t0
            if checkpoint is not None:
                checkpoint(record)
    return record


# ----------------------------------------------------------------------------- report
def _summary_rows(record):
    rows = []
    for r in record["runs"].values():
        rows.append({"panel": r["panel"], "seed": r["seed"], "best SGD lr": r["best_sgd_lr"],
                     "floor": r["floor"], "SGD test": r["sgd"]["final_test_loss"],
                     "NGD test": r["ngd"]["final_test_loss"], "SGD excess": r["excess_sgd"],
                     "NGD excess": r["excess_ngd"], "ratio": r["excess_ratio"],
                     "SGD ms/step": 1e3 * r["sgd"]["time_per_step_s"],
                     "NGD ms/step": 1e3 * r["ngd"]["time_per_step_s"]})
    return rows


def format_summary(summary: dict) -> str:
    """The per-panel, per-seed table (final test losses, excess over the floor, ratio)."""
    from ..results import format_table

    cols = ["panel", "seed", "best SGD lr", "floor", "SGD test", "NGD test", "SGD excess", "NGD excess", "ratio",
            "SGD ms/step", "NGD ms/step"]
    return format_table(summary["table"], cols, float_format=".3g")


def _plot(record, path):
    from .plotting import new_figure, save_figure

    panels = list(dict.fromkeys(r["panel"] for r in record["runs"].values()))
    fig = new_figure((3.4 * len(panels), 6.2))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, panel in enumerate(panels):
        runs = [r for r in record["runs"].values() if r["panel"] == panel]
        for row, xkey, xlabel in ((0, "examples", "training examples seen"), (1, "wall_clock_s", "wall-clock (s)")):
            ax = axes[row][j]
            for r in runs:
                for name, color in (("sgd", "black"), ("ngd", "tab:red")):
                    c = r[name]
                    ax.plot(backend.to_numpy(c[xkey]) + (1 if row == 0 else 1e-4), backend.to_numpy(c["test_loss"]),
                            color=color, lw=1.0, alpha=0.8,
                            label=(_sgd_label(runs) if name == "sgd" else "NGD") if r is runs[0] else None)
                if r["floor"] > 0:
                    ax.axhline(r["floor"], color="gray", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel("test loss")
            if row == 0:
                ax.set_title(f"{panel}: {_panel_title(runs[0])}", fontsize=8)
                ax.legend(fontsize=7)
    return save_figure(fig, path)


def _sgd_label(runs):
    lrs = sorted({r["best_sgd_lr"] for r in runs})
    return f"SGD (lr {', '.join(f'{lr:g}' for lr in lrs)})" if len(lrs) > 1 else f"SGD (lr {lrs[0]:g})"


def _panel_title(run):
    w = tuple(run["info"]["widths"])
    if len(set(w)) == 1:
        text = f"{len(w) - 1} layers of {w[0]}"
    elif len(w) > 9:
        narrow = min(w)
        text = f"{w[0]}-{w[1]}-...-{narrow}-...-{w[-2]}-{w[-1]}" if narrow < w[0] else "-".join(map(str, w[:3])) + \
            f"-...-{max(w)}-...-" + "-".join(map(str, w[-2:]))
    else:
        text = "-".join(map(str, w))
    return ("tanh autoencoder " if run["panel"] == "D" else "linear ") + text


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write ``fig1.png``, ``summary.json`` and ``curves.npz`` of the records (one per
    seed, or one holding several seeds) into ``out_dir``, all seeds in one figure and one
    table (atomically; nothing for None); with ``progress`` print the table. Returns the
    summary (the merged record without the curves, plus ``table``, ``min_excess_ratio``
    and ``files``)."""
    records = list(records)
    if not records:
        raise ValueError("records: expected at least one record, got none")
    merged = {**records[0], "runs": {}, "timing": {}}  # one figure and table over all seeds
    for r in records:
        merged["runs"].update(r["runs"])
        merged["timing"].update(r.get("timing", {}))
    return _report_one(merged, out_dir, progress=progress, plots=plots)


def _strip(curve):
    return {k: v for k, v in curve.items() if not hasattr(v, "shape")}


def _report_one(record, out_dir, *, progress, plots):
    from ..results import write_npz

    runs = {k: {**r, "sgd": _strip(r["sgd"]), "ngd": _strip(r["ngd"])} for k, r in record["runs"].items()}
    summary = {k: v for k, v in record.items() if k != "runs"}
    summary["runs"] = runs
    summary["table"] = _summary_rows(record)
    ratios = {}
    for r in record["runs"].values():
        ratios.setdefault(r["panel"], []).append(r["excess_ratio"])
    summary["min_excess_ratio"] = {p: min(v) for p, v in ratios.items()}
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        arrays = {f"{key}/{name}/{k}": v for key, r in record["runs"].items() for name in ("sgd", "ngd")
                  for k, v in r[name].items() if hasattr(v, "shape")}
        write_npz(os.path.join(out_dir, "curves.npz"), arrays)
        files = ["summary.json", "curves.npz"]
        if plots:
            _plot(record, os.path.join(out_dir, "fig1.png"))
            files.insert(0, "fig1.png")
        reg.write_summary(summary, out_dir, files)
    return reg.show_report(summary, out_dir, format_summary, progress=progress)


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=Fig1Config, run_one=run_one, report=report,
    help="Bernacchia et al. 2018 Fig. 1: SGD vs exact natural gradient (deep linear A-C, digits autoencoder D)",
    paper=PAPER, default_seeds=3,
    metrics=("runs.*.excess_ratio", "runs.*.excess_ngd", "runs.*.excess_sgd", "runs.*.best_sgd_lr")))

run = reg.make_run(EXPERIMENT, "results/bernacchia",
                   """Run the Fig. 1 reproduction (:func:`run_one` then :func:`report`); returns the summary.""")
