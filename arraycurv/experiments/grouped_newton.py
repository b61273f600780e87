"""Wolinski (GroupedNewton / NewtonSummary) on scikit-learn's digits: an MLP and a
LeNet-style CNN trained with NewtonSummary against SGD and Adam (small tuned
learning-rate grids), several seeds.

Scaling from the paper (MNIST / CIFAR-10, spec grouped_newton.md section 8): digits
(1797 images of 8 x 8, 75% training, 25% test), an MLP 64-32-32-10 (tanh) and
:func:`arraycurv.lenet5` on 1 x 8 x 8 inputs (tanh, average pooling), softmax
cross-entropy, the canonical partition (one group per tensor), and the hyperparameters of
spec 5.3 (lambda_d = 0.1 initial, lambda_int = 1, mu = tau = 0.9, rho = 0.5, T = 10,
positive part, reduce-on-plateau factor 0.5, patience 0, threshold 1e-4 per epoch) with a
separate, non-shuffled H-batch cycled through the training set.

Recorded per run: training and test loss per epoch; for NewtonSummary also the per-group
learning rates lambda_d max(eta_hat, 0) at every recomputation, the cubic regularizer's
activity (r = ||D eta||, r_0, the case of the solve, lambda_d) and the summary Hessian
Hbar at a few points (first seed). ``report`` picks, per model and baseline, the
learning rate of the grid with the lowest mean final training loss, and draws the loss
curves, the Hbar heat maps, the per-layer learning rates and the regularizer's activity.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from .. import backend
from ..dynamics.training import train
from ..losses import SoftmaxCrossEntropy
from ..models.base import forward, init_params
from ..models.sequential import lenet5, mlp
from ..params.partition import canonical
from ..rules.alias import adam, sgd
from ..rules.newton_summary import newton_summary, per_group_lrs, summary_info
from . import registry as reg
from .registry import UsageError, config_field, float_list, name_list, positive_int

__all__ = ["EXPERIMENT", "MODELS", "RULES", "Config", "build_model", "report", "run", "run_one"]

NAME = "grouped-newton"
PAPER = "Wolinski (2023) arXiv:2312.03885, NewtonSummary (digits instead of MNIST/CIFAR-10)"
MODELS = ("mlp", "cnn")
RULES = ("newton_summary", "sgd", "adam")
CE = SoftmaxCrossEntropy()


def build_model(name: str):
    """``"mlp"``: 64-32-32-10 tanh; ``"cnn"``: LeNet-5 style on 1 x 8 x 8 digits (tanh, avg pool)."""
    if name == "mlp":
        return mlp((64, 32, 32, 10), "tanh")
    if name == "cnn":
        return lenet5((1, 8, 8), 10, "tanh", "avg")
    raise UsageError(f"models: expected names among {MODELS}, got {name!r}")


@dataclass(frozen=True)
class Config(reg.ExperimentConfig):
    """Settings of the grouped-newton experiment (validated when built, :class:`UsageError`)."""

    models: tuple = config_field(MODELS, "models to train", parse=name_list, metavar="M[,M...]")
    rules: tuple = config_field(RULES, "rules to compare", parse=name_list, metavar="R[,R...]")
    num_seeds: int = config_field(2, "seeds per (model, rule, learning rate)", parse=positive_int)
    epochs: int = config_field(8, "training epochs", parse=positive_int)
    batch_size: int = config_field(64, "training minibatch size", parse=positive_int)
    h_batch_size: int = config_field(256, "minibatch size of the summary tensors (H-batch)", parse=positive_int)
    damping: float = config_field(0.1, "initial lambda_d of NewtonSummary (GN-18)", parse=reg.positive_float)
    damping_int: float = config_field(1.0, "lambda_int of the cubic regularization (GN-13)", parse=reg.nonneg_float)
    period: int = config_field(10, "T: steps between recomputations of the rates", parse=positive_int)
    sgd_lrs: tuple = config_field((0.03, 0.1, 0.3), "learning-rate grid of SGD", parse=float_list)
    adam_lrs: tuple = config_field((0.001, 0.003, 0.01), "learning-rate grid of Adam", parse=float_list)
    num_heatmaps: int = config_field(3, "Hbar heat maps along the first-seed run", parse=positive_int)

    def check(self) -> None:
        """Known model and rule names, positive learning rates."""
        super().check()
        for m in self.models:
            if m not in MODELS:
                raise UsageError(f"models: expected names among {MODELS}, got {m!r}")
        for r in self.rules:
            if r not in RULES:
                raise UsageError(f"rules: expected names among {RULES}, got {r!r}")
        for name in ("sgd_lrs", "adam_lrs"):
            vals = getattr(self, name)
            if not vals or any(not (isinstance(v, (int, float)) and v > 0) for v in vals):
                raise UsageError(f"{name.replace('_', '-')}: expected learning rates > 0, got {vals}")


class _Digits:
    def __init__(self, seed, xp, dtype):
        from ..data import load_digits

        d = load_digits(test_fraction=0.25, seed=seed, xp=xp, dtype=dtype)
        self.x_train, self.y_train, self.x_test, self.y_test = d.x_train, d.y_train, d.x_test, d.y_test

    def images(self, flat):
        if flat:
            return self.x_train, self.x_test
        xp = backend.namespace_of(x=self.x_train)
        return xp.reshape(self.x_train, (-1, 1, 8, 8)), xp.reshape(self.x_test, (-1, 1, 8, 8))


def _minibatches(x, y, batch_size, steps, seed, xp):
    n = x.shape[0]
    g = backend.rng(seed)
    order = []
    while len(order) < steps * batch_size:
        order.extend(g.permutation(n).tolist())
    dev = backend.device_of(x)

    def batch(step):
        idx = xp.asarray(order[step * batch_size:(step + 1) * batch_size], device=dev)
        return xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)

    return batch


def _h_batches(x, y, size):
    """Consecutive, non-shuffled slices of the training set, cycled (spec 5.2)."""
    n = x.shape[0]
    size = min(size, n)
    starts = list(range(0, n - size + 1, size))
    return lambda i: (x[starts[i % len(starts)]:starts[i % len(starts)] + size, ...],
                      y[starts[i % len(starts)]:starts[i % len(starts)] + size, ...])


def _grid(config):
    jobs = []
    for r in config.rules:
        lrs = (config.damping,) if r == "newton_summary" else (config.sgd_lrs if r == "sgd" else config.adam_lrs)
        jobs.extend((r, float(lr)) for lr in lrs)
    return jobs


def _make_rule(name, lr, config, x, y, steps_per_epoch):
    if name == "sgd":
        return sgd(lr)
    if name == "adam":
        return adam(lr)
    return newton_summary(lr, damping_int=config.damping_int, period=config.period,
                          h_batches=_h_batches(x, y, config.h_batch_size), epoch_steps=steps_per_epoch, loss=CE)


def _ns_callback(config, steps, trace):
    np = backend.host_namespace()
    targets = sorted(set(np.linspace(1, max(steps - config.period, 1), config.num_heatmaps).astype(int).tolist()))
    last = [0]

    def callback(step, params, state):
        info = summary_info(state)
        if info["computations"] == last[0]:
            return None
        last[0] = info["computations"]
        trace["step"].append(step)
        trace["lrs"].append(backend.to_numpy(per_group_lrs(state)).tolist())
        trace["r"].append(info["r"])
        trace["r0"].append(info["r0"])
        trace["case"].append(info["case"])
        trace["damping"].append(info["damping"])
        if targets and step >= targets[0]:  # the first recomputation at or after each target step
            while targets and step >= targets[0]:
                targets.pop(0)
            trace["hbar"].append(backend.to_numpy(info["hbar"]).tolist())
            trace["hbar_step"].append(step)
        return None

    return callback


def _run(model_name, rule, lr, seed, config, data, xp, keep_trace):
    model = build_model(model_name)
    x, xt = data.images(model_name == "mlp")
    y, yt = data.y_train, data.y_test
    spe = max(x.shape[0] // config.batch_size, 1)
    steps = spe * config.epochs
    params0 = init_params(model, seed + 100, xp, dtype=config.dtype)
    trace = {k: [] for k in ("step", "lrs", "r", "r0", "case", "damping", "hbar", "hbar_step")}
    cb = _ns_callback(config, steps, trace) if rule == "newton_summary" else None
    t0 = time.perf_counter()
    res = train(model, params0, _minibatches(x, y, config.batch_size, steps, seed + 200, xp),
                _make_rule(rule, lr, config, x, y, spe), steps, record_every=spe,
                eval_batches={"train": (x, y), "test": (xt, yt)}, callback=cb, loss=CE)
    wall = time.perf_counter() - t0
    acc = xp.mean(xp.astype(xp.argmax(forward(model, res.params, xt), axis=1) == yt, xt.dtype))
    hist = {"steps": res.steps, "train_loss": res.eval_losses["train"], "test_loss": res.eval_losses["test"],
            "final_test_accuracy": float(acc), "wall_s": wall}
    if rule == "newton_summary":
        hist["trace"] = trace if keep_trace else {k: v for k, v in trace.items() if k not in ("hbar", "hbar_step")}
        hist["groups"] = list(canonical(model).names)
    return hist


def run_one(config: Config, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Train every (model, rule, learning rate, seed); write nothing.

    Returns ``experiment``, ``paper``, ``backend``, ``config`` and ``runs``: per
    ``"<model>/<rule>@<lr>#<seed>"`` the loss curves, the final test accuracy, the wall
    time and (NewtonSummary) the trace of rates, regularizer and Hbar.
    """
    config, xp = reg.bind_namespace(config, xp)
    data = _Digits(config.seed, xp, config.dtype)
    record = {"experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp),
              "config": reg.config_dict(config), "runs": {}}
    seeds = [config.seed + i for i in range(config.num_seeds)]
    jobs = [(m, r, lr, s) for m in config.models for r, lr in _grid(config) for s in seeds]
    for i, (m, r, lr, s) in enumerate(jobs):
        key = f"{m}/{r}@{lr:g}#{s}"
        if progress:
            print(f"[{NAME}] {i + 1}/{len(jobs)}: {key}", file=sys.stderr, flush=True)
        try:
            record["runs"][key] = _run(m, r, lr, s, config, data, xp, keep_trace=s == seeds[0])
        except ValueError as exc:  # DivergenceError
            if not reg.diverged(exc):
                raise
            record["runs"][key] = {"diverged": True, "message": str(exc)}
        if checkpoint is not None:
            checkpoint(record)
    return record


# ------------------------------------------------------------------ analysis
def _parse(key):
    model, rest = key.split("/")
    rule, rest = rest.split("@")
    lr, seed = rest.split("#")
    return model, rule, float(lr), int(seed)


def _tuned(record):
    """Per (model, rule): the learning rate with the lowest mean final training loss."""
    np = backend.host_namespace()
    scores = {}
    for key, h in record["runs"].items():
        m, r, lr, _ = _parse(key)
        loss = np.inf if h.get("diverged") or not np.isfinite(h["train_loss"][-1]) else float(h["train_loss"][-1])
        scores.setdefault((m, r, lr), []).append(loss)
    best = {}
    for (m, r, lr), v in scores.items():
        mean = float(np.mean(v))
        if (m, r) not in best or mean < best[(m, r)][1]:
            best[(m, r)] = (lr, mean)
    return best, {f"{m}/{r}@{lr:g}": float(np.mean(v)) for (m, r, lr), v in scores.items()}


def _table(record, best):
    np = backend.host_namespace()
    rows = []
    for (m, r), (lr, _) in sorted(best.items()):
        hs = [h for k, h in record["runs"].items() if k.startswith(f"{m}/{r}@{lr:g}#") and not h.get("diverged")]
        if not hs:
            continue
        rows.append({"model": m, "rule": r, "lr": lr, "final train": float(np.mean([h["train_loss"][-1] for h in hs])),
                     "final test": float(np.mean([h["test_loss"][-1] for h in hs])),
                     "test acc": float(np.mean([h["final_test_accuracy"] for h in hs])),
                     "s/run": float(np.mean([h["wall_s"] for h in hs]))})
    return rows


# ------------------------------------------------------------------ figures
def _plot_losses(record, best, path):
    from .plotting import new_figure, save_figure

    np = backend.host_namespace()
    models = [m for m in MODELS if any(k.startswith(m + "/") for k in record["runs"])]
    fig = new_figure((5.0 * len(models), 3.8))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, m in zip(axes, models):
        for (mm, r), (lr, _) in sorted(best.items()):
            if mm != m:
                continue
            hs = [h for k, h in record["runs"].items() if k.startswith(f"{m}/{r}@{lr:g}#") and not h.get("diverged")]
            if not hs:
                continue
            color = {"newton_summary": "C3", "sgd": "C0", "adam": "C2"}[r]
            s = hs[0]["steps"]
            for key, ls in (("train_loss", "-"), ("test_loss", "--")):
                v = np.stack([h[key] for h in hs])
                ax.plot(s, v.mean(0), color=color, ls=ls, label=f"{r} (lr {lr:g}), {key.split('_')[0]}")
                ax.fill_between(s, v.min(0), v.max(0), color=color, alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{m} on digits (band: range over seeds)", fontsize=9)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("cross-entropy")
    return save_figure(fig, path)


def _ns_first(record, m):
    for key, h in record["runs"].items():
        if key.startswith(f"{m}/newton_summary@") and not h.get("diverged") and h.get("trace", {}).get("hbar"):
            return h
    return None


def _ns_runs(record):
    """``(model, first NewtonSummary run with a trace)`` for the models that have one."""
    runs = [(m, _ns_first(record, m)) for m in MODELS]
    return [(m, h) for m, h in runs if h is not None]


def _plot_hbar(record, path):
    from .plotting import new_figure, save_figure

    np = backend.host_namespace()
    runs = _ns_runs(record)
    if not runs:
        return None
    k = max(len(h["trace"]["hbar"]) for _, h in runs)
    fig = new_figure((3.0 * k, 2.8 * len(runs)))
    axes = fig.subplots(len(runs), k, squeeze=False)
    for row, (m, h) in zip(axes, runs):
        for ax, hb, step in zip(row, h["trace"]["hbar"], h["trace"]["hbar_step"]):
            hb = np.asarray(hb)
            dg = np.sqrt(np.maximum(np.abs(np.diag(hb)), 1e-300))
            im = ax.imshow(hb / np.outer(dg, dg), cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_title(f"{m}, step {step}", fontsize=8)
            ax.set_xticks(range(len(hb)))
            ax.set_yticks(range(len(hb)))
            ax.set_xticklabels(h["groups"], rotation=90, fontsize=5)
            ax.set_yticklabels(h["groups"], fontsize=5)
        fig.colorbar(im, ax=row[-1], fraction=0.046)
    fig.suptitle("Hbar_ij / sqrt(|Hbar_ii Hbar_jj|): interactions between tensors (GN-5)", fontsize=9)
    return save_figure(fig, path)


def _plot_lrs(record, path):
    from .plotting import new_figure, save_figure

    np = backend.host_namespace()
    runs = _ns_runs(record)
    if not runs:
        return None
    fig = new_figure((5.0 * len(runs), 6.6))
    axes = fig.subplots(2, len(runs), squeeze=False)
    for j, (m, h) in enumerate(runs):
        tr = h["trace"]
        lrs = np.asarray(tr["lrs"])
        for g in range(lrs.shape[1]):
            axes[0, j].semilogy(tr["step"], np.maximum(lrs[:, g], 1e-12), label=h["groups"][g], lw=1)
        axes[0, j].set_title(f"{m}: per-tensor learning rates lambda_d max(eta_hat, 0)", fontsize=8)
        axes[0, j].legend(fontsize=5, ncol=2)
        r = np.asarray([np.nan if v is None else v for v in tr["r"]], dtype=float)
        r0 = np.asarray([np.nan if v is None else v for v in tr["r0"]], dtype=float)
        ax = axes[1, j]
        ax.semilogy(tr["step"], r, label="r = ||D eta|| (GN-15)")
        ax.semilogy(tr["step"], np.maximum(r0, 1e-12), ls=":", label="r_0 (GN-17; 1e-12 = Hbar PD)")
        ax.semilogy(tr["step"], tr["damping"], ls="--", label="lambda_d")
        ind = [s for s, c in zip(tr["step"], tr["case"]) if c in ("indefinite", "hard")]
        ax.plot(ind, [min(np.nanmin(r), 1.0)] * len(ind), "|", color="k", label="Hbar indefinite")
        ax.set_xlabel("step")
        ax.set_title(f"{m}: cubic regularizer activity", fontsize=8)
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write ``losses.png``, ``hbar.png``, ``lrs.png``, ``summary.json`` and ``table.txt`` for
    the records of :func:`run_one` (nothing for ``out_dir=None``); with ``progress`` print the
    table of the tuned runs. Returns the summary."""
    return reg.report_each(_report_one, records, out_dir, progress=progress, plots=plots)


def _report_one(record: dict, out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import format_table, write_text

    best, grid = _tuned(record)
    rows = _table(record, best)
    table = format_table(rows, ["model", "rule", "lr", "final train", "final test", "test acc", "s/run"],
                         float_format=".4g")
    summary = {k: v for k, v in record.items() if k != "runs"}
    summary["tuned"] = {f"{m}/{r}": lr for (m, r), (lr, _) in best.items()}
    summary["grid_final_train_loss"] = grid
    summary["table"] = rows
    ns = [h for h in record["runs"].values() if "trace" in h]
    cases = [c for h in ns for c in h["trace"]["case"]]
    summary["cubic_cases"] = {c: cases.count(c) for c in sorted({str(c) for c in cases})}
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        write_text(os.path.join(out_dir, "table.txt"), table + "\n")
        files = ["summary.json", "table.txt"]
        if plots:
            _plot_losses(record, best, os.path.join(out_dir, "losses.png"))
            files.insert(0, "losses.png")
            for name, fn in (("hbar.png", _plot_hbar), ("lrs.png", _plot_lrs)):
                if fn(record, os.path.join(out_dir, name)) is not None:
                    files.insert(1, name)
        reg.write_summary(summary, out_dir, files)
    return reg.show_report(summary, out_dir, table, progress=progress, wrote=False)


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=Config, run_one=run_one, report=report,
    help="Wolinski 2023: NewtonSummary vs SGD and Adam on digits (MLP, LeNet-style CNN)", paper=PAPER))

run = reg.make_run(EXPERIMENT, "results/grouped-newton", """:func:`run_one` then :func:`report`.""")
