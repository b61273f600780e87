"""Tuddenham, Pruegel-Bennett & Hare (2020), Figure 2 on scikit-learn's digits: SGD
against quasi-Newton in the class-gradient subspace (eq 6) for a small CNN, full batch
and minibatches, several seeds; and the spectral measurements behind the method.

Scaling from the paper: MNIST becomes digits (1797 images of 8 x 8, 10 classes; 75% for
training, 25% held out as the validation set) and the ~400-parameter CNN becomes
conv 3x3 (4 channels) -> tanh -> average pool 2 -> dense 36 -> 10 (410 parameters,
:func:`small_cnn`), trained with softmax cross-entropy.

For every batch size (0 = full batch), rule and seed the run records the training and
validation losses; for the first seed it also records, at ``num_measure`` points along
training, the overlap (:func:`arraycurv.linalg.subspace_overlap`) of the top-10 Hessian
eigenspace of the training loss (block Lanczos on exact Hessian-vector products) with the
span of the 10 class gradients (eq 1), and the fraction of the gradient inside each; and
at the start and the end, the spectral density of the Hessian (stochastic Lanczos
quadrature) with its top eigenvalues (outliers against the bulk). ``report`` finds the
crossover: the first recorded step from which SGD's mean (and, separately, median)
validation loss over the seeds stays below the quasi-Newton one, and whether
quasi-Newton had led before; and counts the unstable runs (final validation loss above
the initial one).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from .. import backend
from ..curvature.generic import value_and_grad
from ..curvature.subspace import class_gradients
from ..dynamics.training import train
from ..linalg import spectral
from ..linalg.subspaces import fraction_in_span, stack_directions, subspace_overlap
from ..losses import SoftmaxCrossEntropy
from ..models.base import forward, hvp, init_params
from ..models.layers import Activation, AvgPool2d, Conv2d, Dense, Flatten
from ..models.sequential import Sequential
from ..params import flatten
from ..rules.alias import sgd
from ..rules.class_subspace import class_subspace_newton
from . import registry as reg
from .registry import UsageError, config_field, nonneg_float, positive_int

__all__ = ["EXPERIMENT", "RULES", "Config", "crossover_step", "curvature_check", "format_runs", "report", "run",
           "run_one", "small_cnn", "spectral_snapshot"]

NAME = "class-subspace"
PAPER = "Tuddenham, Pruegel-Bennett & Hare (2020) Fig. 2 (digits instead of MNIST)"
#: The two rules compared.
RULES = ("sgd", "class_subspace_newton")
CE = SoftmaxCrossEntropy()


def small_cnn(channels: int = 4, num_classes: int = 10) -> Sequential:
    """conv 3x3 (``channels``) -> tanh -> avgpool 2 -> flatten -> dense (``9 channels`` ->
    ``num_classes``) on 1 x 8 x 8 digits: 410 parameters for 4 channels (the paper's "small
    CNN (400 parameters)")."""
    layers = (Conv2d(1, channels, 3), Activation("tanh"), AvgPool2d(2), Flatten(), Dense(9 * channels, num_classes))
    return Sequential(layers, (1, 8, 8))


@dataclass(frozen=True)
class Config(reg.ExperimentConfig):
    """Settings of the class-subspace experiment; validated when built (:class:`UsageError`).

    Attributes
    ----------
    batch_sizes : tuple of int
        Minibatch sizes; 0 is the full training set (1348 digits).
    num_seeds : int
        Seeds ``seed, seed + 1, ...`` per (batch size, rule).
    steps : int
        Iterations per run.
    lr : float
        Learning rate of SGD and of the complement of the quasi-Newton rule (eta in eq 6).
    decay : float
        EMA factor of v_k and lambda_k (the paper's stabilization).
    damping : float
        Added to lambda_k in 1/lambda_k. The paper has none; undamped, eq (6) diverges on
        this network within a few steps because lambda_k of eq (4) is 5-20 times
        smaller than the GGN curvature along v_k (recorded as ``curvature_check``), so
        the default is 0.3 (about a fifth of the top Hessian eigenvalue at the start).
    record_every : int
        Interval of the recorded losses.
    num_measure : int
        Spectral measurements (overlaps) along each run of the first seed (0: none).
    slq_iters, slq_probes : int
        Lanczos steps and probes of the SLQ density at the start and the end.
    """

    batch_sizes: tuple = config_field((0, 128, 32), "minibatch sizes, 0 = full batch", parse=reg.int_list,
                                      metavar="B[,B...]")
    num_seeds: int = config_field(3, "seeds per batch size and rule", parse=positive_int)
    steps: int = config_field(300, "iterations per run", parse=positive_int)
    lr: float = config_field(0.2, "learning rate of SGD and of the complement (eta of eq 6)", parse=reg.positive_float)
    decay: float = config_field(0.9, "EMA factor of v_k and lambda_k", parse=nonneg_float)
    damping: float = config_field(0.3, "damping added to lambda_k (0 in the paper, which diverges here)",
                                  parse=nonneg_float)
    record_every: int = config_field(10, "record the losses every this many iterations", parse=positive_int)
    num_measure: int = config_field(5, "overlap measurements along each first-seed run (0: none)",
                                    parse=int)
    slq_iters: int = config_field(30, "Lanczos steps of the SLQ density", parse=positive_int)
    slq_probes: int = config_field(4, "probes of the SLQ density", parse=positive_int)

    def check(self) -> None:
        """Non-negative batch sizes, decay in [0, 1), num_measure >= 0."""
        super().check()
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 0
                                       for b in self.batch_sizes):
            raise UsageError(f"batch-sizes: expected integers >= 0 (0 = full batch), got {self.batch_sizes}")
        if not 0 <= self.decay < 1:
            raise UsageError(f"decay: expected a number in [0, 1), got {self.decay}")
        if isinstance(self.num_measure, bool) or not isinstance(self.num_measure, int) or self.num_measure < 0:
            raise UsageError(f"num-measure: expected an integer >= 0, got {self.num_measure}")


# ------------------------------------------------------------------ measurements
def spectral_snapshot(model, params, batch, *, top: int = 10, seed: int = 0, tol: float = 1e-3) -> dict:
    """Top-``top`` Hessian eigenpairs of the mean loss on ``batch`` (block Lanczos with
    stacked Hessian-vector products), the class gradients, and their overlaps: the
    overlap of the top eigenspace with span{c_k} (Papyan 2019; Tuddenham et al. 2020),
    and the fractions of the gradient in span{c_k} and in the top eigenspace (Gur-Ari et
    al. 2018). ``tol`` is the Lanczos tolerance (relative residual; at most ``6 top``
    products). Values are host floats / NumPy arrays."""
    res = spectral.block_lanczos(lambda v: hvp(model, params, batch, v, CE), params, top, block_size=top,
                                 which="largest", seed=seed, batched=True, tol=tol, num_iters=6 * top)
    eig = stack_directions(res.eigenvectors)
    cls = stack_directions(class_gradients(model, params, batch, method="by_class"))
    _, g = value_and_grad(model, params, batch, CE)
    gf = flatten(g)
    return {"eigenvalues": backend.to_numpy(res.eigenvalues), "hvps": res.num_matvecs,
            "overlap": float(subspace_overlap(eig, cls)), "grad_in_class_span": float(fraction_in_span(cls, gf)),
            "grad_in_top_space": float(fraction_in_span(eig, gf))}


def curvature_check(model, params, batch) -> dict:
    """lambda_k of eq (4) against the curvature of the loss along the same unit vectors
    v_k: ``v_k^T G v_k`` (GGN) and ``v_k^T H v_k`` (Hessian). Eq (6) takes Newton steps
    ``(v_k . g) / lambda_k``; where lambda_k is much smaller than the true curvature
    these overshoot. Host lists."""
    from ..curvature.generic import ggn_vp
    from ..curvature.subspace import class_subspace
    from ..params import tree_vdot

    sub = class_subspace(model, params, batch, method="by_class")
    vs = [tuple(t[k, ...] for t in sub.vectors) for k in range(sub.eigenvalues.shape[0])]
    return {"lambda": backend.to_numpy(sub.eigenvalues).tolist(),
            "ggn_along_v": [float(tree_vdot(v, ggn_vp(model, params, batch, v, CE))) for v in vs],
            "hessian_along_v": [float(tree_vdot(v, hvp(model, params, batch, v, CE))) for v in vs]}


def _density(model, params, batch, config, seed):
    """SLQ density of the Hessian on ``batch`` and its top-12 eigenvalues (host arrays)."""
    quad = spectral.slq(lambda v: hvp(model, params, batch, v, CE), params, config.slq_iters, config.slq_probes,
                        seed=seed, batched=True)
    grid, dens = spectral.spectral_density(quad, num_points=400)
    top = spectral.block_lanczos(lambda v: hvp(model, params, batch, v, CE), params, 12, block_size=12,
                                 seed=seed, batched=True, tol=1e-4, num_iters=72)
    return {"grid": backend.to_numpy(grid), "density": backend.to_numpy(dens),
            "top_eigenvalues": backend.to_numpy(top.eigenvalues)}


# ------------------------------------------------------------------ training
def _batches(data, batch_size, steps, seed, xp):
    n = data.x_train.shape[0]
    if batch_size == 0 or batch_size >= n:
        return (data.x_train, data.y_train)
    g = backend.rng(seed)
    order = []
    while len(order) < steps * batch_size:
        order.extend(g.permutation(n).tolist())
    dev = backend.device_of(data.x_train)

    def batch(step):
        idx = xp.asarray(order[step * batch_size:(step + 1) * batch_size], device=dev)
        return xp.take(data.x_train, idx, axis=0), xp.take(data.y_train, idx, axis=0)

    return batch


def _rule(name, config):
    if name == "sgd":
        return sgd(config.lr)
    return class_subspace_newton(config.lr, decay=config.decay, damping=config.damping, method="by_class")


def _run(name, batch_size, seed, config, data, xp, measure):
    """One training run; returns its history (host arrays) and the wall time."""
    np = backend.host_namespace()
    model = small_cnn()
    params0 = init_params(model, seed + 100, xp, dtype=config.dtype)
    train_set = (data.x_train, data.y_train)
    record, points = {}, []
    if measure:
        every = max(config.steps // max(config.num_measure, 1), 1)
        points = sorted({0, *range(every, config.steps + 1, every), config.steps})
    snaps = {}

    def callback(step, params, state):
        if step in points:
            snaps[step] = spectral_snapshot(model, params, train_set, seed=seed)

    if measure:
        snaps[0] = spectral_snapshot(model, params0, train_set, seed=seed)
    t0 = time.perf_counter()
    res = train(model, params0, _batches(data, batch_size, config.steps, seed + 200, xp), _rule(name, config),
                config.steps, record_every=config.record_every, eval_batches={"train": train_set,
                                                                              "val": (data.x_val, data.y_val)},
                record=record, callback=callback if measure else None, loss=CE)
    wall = time.perf_counter() - t0
    acc = xp.mean(xp.astype(xp.argmax(forward(model, res.params, data.x_val), axis=1) == data.y_val,
                            data.x_val.dtype))
    hist = {"steps": res.steps, "train_loss": res.eval_losses["train"], "val_loss": res.eval_losses["val"],
            "final_val_accuracy": float(acc)}
    if measure:
        keys = sorted(snaps)
        hist.update({"measure_steps": np.asarray(keys),
                     "overlap": np.asarray([snaps[k]["overlap"] for k in keys]),
                     "grad_in_class_span": np.asarray([snaps[k]["grad_in_class_span"] for k in keys]),
                     "grad_in_top_space": np.asarray([snaps[k]["grad_in_top_space"] for k in keys]),
                     "top_eigenvalues": np.stack([snaps[k]["eigenvalues"] for k in keys])})
    return hist, res.params, wall


class _Digits:
    """Digits as 1 x 8 x 8 images: train and validation sets."""

    def __init__(self, seed, xp, dtype):
        from ..data import load_digits

        d = load_digits(test_fraction=0.25, seed=seed, xp=xp, dtype=dtype)
        self.x_train = xp.reshape(d.x_train, (-1, 1, 8, 8))
        self.y_train = d.y_train
        self.x_val = xp.reshape(d.x_test, (-1, 1, 8, 8))
        self.y_val = d.y_test


def run_one(config: Config, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Train SGD and the quasi-Newton rule for every batch size and seed; write nothing.

    Returns
    -------
    dict
        ``experiment``, ``paper``, ``backend``, ``config``, ``runs`` (per
        ``"<rule>@B<batch>#<seed>"``: final losses and accuracy), ``histories`` (host
        arrays), ``spectra`` (SLQ densities of the full-batch runs of the first seed at
        the start and the end) and ``timing``.
    """
    config, xp = reg.bind_namespace(config, xp)
    data = _Digits(config.seed, xp, config.dtype)
    record = {"experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp),
              "config": reg.config_dict(config), "runs": {}, "histories": {}, "spectra": {}, "timing": {}}
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record["curvature_check"] = curvature_check(small_cnn(), init_params(small_cnn(), seeds[0] + 100, xp,
                                                                         dtype=config.dtype),
                                                (data.x_train, data.y_train))
    jobs = [(b, r, s) for b in config.batch_sizes for r in RULES for s in seeds]
    for i, (b, name, s) in enumerate(jobs):
        key = f"{name}@B{b}#{s}"
        if progress:
            print(f"[{NAME}] {i + 1}/{len(jobs)}: {name}, batch {b or 'full'}, seed {s}", file=sys.stderr, flush=True)
        measure = s == seeds[0] and config.num_measure > 0
        try:
            hist, params, wall = _run(name, b, s, config, data, xp, measure)
        except ValueError as exc:  # DivergenceError: the loss became NaN/Inf
            if not reg.diverged(exc):
                raise
            record["runs"][key] = {"rule": name, "batch_size": b, "seed": s, "diverged": True, "message": str(exc)}
            continue
        record["histories"][key] = hist
        record["runs"][key] = {"rule": name, "batch_size": b, "seed": s,
                               "final_train_loss": float(hist["train_loss"][-1]),
                               "final_val_loss": float(hist["val_loss"][-1]),
                               "final_val_accuracy": hist["final_val_accuracy"]}
        record["timing"][key] = {"wall_s": wall}
        if b == config.batch_sizes[0] and s == seeds[0]:
            model = small_cnn()
            start = init_params(model, s + 100, xp, dtype=config.dtype)
            train_set = (data.x_train, data.y_train)
            record["spectra"][name] = {"start": _density(model, start, train_set, config, s),
                                       "end": _density(model, params, train_set, config, s)}
        if checkpoint is not None:
            checkpoint(record)
    return record


# ------------------------------------------------------------------ analysis
def crossover_step(steps, sgd_loss, qn_loss):
    """The first step from which ``sgd_loss < qn_loss`` at every later recorded step,
    provided quasi-Newton was ahead (lower) at some earlier recorded step after step 0;
    None if SGD never stays ahead. Returns ``(step, qn_led_first)``."""
    np = backend.host_namespace()
    steps, a, b = np.asarray(steps), np.asarray(sgd_loss), np.asarray(qn_loss)
    ahead = a < b
    idx = None
    for i in range(len(steps) - 1, -1, -1):
        if not ahead[i]:
            break
        idx = i
    led = bool(np.any(~ahead[1:idx] if idx is not None else ~ahead[1:]))
    return (None if idx is None else int(steps[idx])), led


def _mean_curves(record, rule, b, key, stat="mean"):
    """Steps and the mean (or median) over the (non-diverged) seeds of a recorded curve;
    (None, None) when every seed diverged."""
    np = backend.host_namespace()
    hs = [h for k, h in record["histories"].items() if k.startswith(f"{rule}@B{b}#")]
    if not hs:
        return None, None
    return hs[0]["steps"], getattr(np, stat)(np.stack([h[key] for h in hs]), axis=0)


def _unstable(record, rule, b) -> int:
    """Runs whose final validation loss is above the initial one."""
    return sum(1 for k, h in record["histories"].items()
               if k.startswith(f"{rule}@B{b}#") and h["val_loss"][-1] > h["val_loss"][0])


def _summarize(record) -> dict:
    np = backend.host_namespace()
    cfg = record["config"]
    out = {}
    for b in cfg["batch_sizes"]:
        steps, sgd_val = _mean_curves(record, "sgd", b, "val_loss")
        _, qn_val = _mean_curves(record, "class_subspace_newton", b, "val_loss")
        step, led = (None, False) if sgd_val is None or qn_val is None else crossover_step(steps, sgd_val, qn_val)
        _, sgd_med = _mean_curves(record, "sgd", b, "val_loss", "median")
        _, qn_med = _mean_curves(record, "class_subspace_newton", b, "val_loss", "median")
        med = (None, False) if sgd_med is None or qn_med is None else crossover_step(steps, sgd_med, qn_med)
        row = {"batch_size": b, "crossover_step": step, "qn_led_first": led, "crossover_step_median": med[0],
               "qn_led_first_median": med[1], "qn_unstable": _unstable(record, "class_subspace_newton", b),
               "sgd_unstable": _unstable(record, "sgd", b)}
        for rule in RULES:
            runs = [m for m in record["runs"].values() if m["rule"] == rule and m["batch_size"] == b]
            ok = [m for m in runs if not m.get("diverged")]
            row[f"{rule}_diverged"] = len(runs) - len(ok)
            row[f"{rule}_val_loss"] = float(np.mean([m["final_val_loss"] for m in ok])) if ok else None
            row[f"{rule}_val_acc"] = float(np.mean([m["final_val_accuracy"] for m in ok])) if ok else None
        out[str(b)] = row
    overlaps = {k: {"steps": h["measure_steps"].tolist(), "overlap": h["overlap"].tolist(),
                    "grad_in_class_span": h["grad_in_class_span"].tolist()}
                for k, h in record["histories"].items() if "overlap" in h}
    spectra = {r: {w: s[w]["top_eigenvalues"].tolist() for w in ("start", "end")}
               for r, s in record["spectra"].items()}
    return {"by_batch_size": out, "overlaps": overlaps, "top_hessian_eigenvalues": spectra,
            "curvature_check": record.get("curvature_check")}


def format_runs(summary: dict) -> str:
    """The per-batch-size comparison as an aligned text table."""
    from ..results import format_table

    rows = []
    for row in summary["analysis"]["by_batch_size"].values():
        rows.append({"batch": row["batch_size"] or "full", "SGD val loss": row["sgd_val_loss"],
                     "QN val loss": row["class_subspace_newton_val_loss"], "SGD val acc": row["sgd_val_acc"],
                     "QN val acc": row["class_subspace_newton_val_acc"],
                     "crossover (mean)": row["crossover_step"], "QN led first": str(row["qn_led_first"]),
                     "crossover (median)": row["crossover_step_median"],
                     "QN led (median)": str(row["qn_led_first_median"]),
                     "QN unstable": row["qn_unstable"] + row["class_subspace_newton_diverged"]})
    return format_table(rows, ["batch", "SGD val loss", "QN val loss", "SGD val acc", "QN val acc",
                               "crossover (mean)", "QN led first", "crossover (median)", "QN led (median)",
                               "QN unstable"])


# ------------------------------------------------------------------ figures
def _plot_losses(record, path):
    from .plotting import new_figure, save_figure

    np = backend.host_namespace()
    cfg = record["config"]
    bs = list(cfg["batch_sizes"])
    fig = new_figure((4.2 * len(bs), 3.6))
    axes = fig.subplots(1, len(bs), squeeze=False)[0]
    for ax, b in zip(axes, bs):
        for rule, color in zip(RULES, ("C0", "C3")):
            hs = [h for k, h in record["histories"].items() if k.startswith(f"{rule}@B{b}#")]
            if not hs:
                continue
            val = np.stack([h["val_loss"] for h in hs])
            tr = np.stack([h["train_loss"] for h in hs])
            s = hs[0]["steps"]
            label = "SGD" if rule == "sgd" else "quasi-Newton (eq 6)"
            ax.plot(s, val.mean(0), color=color, label=f"{label}, validation")
            ax.fill_between(s, val.min(0), val.max(0), color=color, alpha=0.2, lw=0)
            ax.plot(s, tr.mean(0), color=color, ls="--", lw=1, label=f"{label}, train")
        ax.set_title(f"batch {b or 'full'}")
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
    axes[0].set_ylabel("cross-entropy (mean over seeds, band = range)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Tuddenham et al. (2020) Fig. 2 on digits: small CNN (410 parameters)")
    return save_figure(fig, path)


def _plot_spectra(record, path):
    from .plotting import new_figure, save_figure

    np = backend.host_namespace()
    fig = new_figure((12.0, 3.8))
    ax0, ax1, ax2 = fig.subplots(1, 3)
    for k, h in record["histories"].items():
        if "overlap" not in h:
            continue
        rule, b = k.split("@")[0], k.split("@")[1].split("#")[0]
        style = "-" if rule == "sgd" else "--"
        ax0.plot(h["measure_steps"], h["overlap"], ls=style, marker="o", ms=3, label=f"{rule} {b}")
        ax1.plot(h["measure_steps"], h["grad_in_class_span"], ls=style, marker="o", ms=3, label=f"{rule} {b}")
    ax0.set_title("overlap(top-10 eigenspace, class span)", fontsize=9)
    ax1.set_title("fraction of the gradient in the class span", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 1.02)
    ax0.legend(fontsize=6)
    for rule, spec in record["spectra"].items():
        for when, ls in (("start", ":"), ("end", "-")):
            s = spec[when]
            ax2.semilogy(s["grid"], np.maximum(s["density"], 1e-8), ls=ls, label=f"{rule}, {when}")
            ax2.plot(s["top_eigenvalues"][:10], np.full(10, 2e-8), "|", ms=8)
    ax2.set_title("Hessian density (SLQ); ticks: top 10", fontsize=9)
    ax2.set_xlabel("eigenvalue")
    ax2.legend(fontsize=6)
    return save_figure(fig, path)


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write ``losses.png``, ``spectra.png``, ``summary.json``, ``table.txt`` and
    ``history.npz`` for the records of :func:`run_one` (nothing for ``out_dir=None``);
    with ``progress`` print the table. Returns the summary (with ``analysis``)."""
    return reg.report_each(_report_one, records, out_dir, progress=progress, plots=plots)


def _report_one(record: dict, out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import write_npz, write_text

    summary = {k: v for k, v in record.items() if k not in ("histories", "spectra")}
    summary["analysis"] = _summarize(record)
    table = format_runs(summary)
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        arrays = {f"{key}/{k}": v for key, h in record["histories"].items() for k, v in h.items()
                  if not isinstance(v, float)}
        arrays.update({f"spectra/{r}/{w}/{k}": v for r, s in record["spectra"].items() for w, d in s.items()
                       for k, v in d.items()})
        write_npz(os.path.join(out_dir, "history.npz"), arrays)
        write_text(os.path.join(out_dir, "table.txt"), table + "\n")
        files = ["summary.json", "table.txt", "history.npz"]
        if plots:
            _plot_losses(record, os.path.join(out_dir, "losses.png"))
            files.insert(0, "losses.png")
            if record["spectra"] or any("overlap" in h for h in record["histories"].values()):
                _plot_spectra(record, os.path.join(out_dir, "spectra.png"))
                files.insert(1, "spectra.png")
        reg.write_summary(summary, out_dir, files)
    return reg.show_report(summary, out_dir, table, progress=progress, wrote=False)


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=Config, run_one=run_one, report=report,
    help="Tuddenham et al. 2020 Fig. 2: SGD vs class-subspace quasi-Newton on digits", paper=PAPER))

run = reg.make_run(EXPERIMENT, "results/class-subspace",
                   """:func:`run_one` then :func:`report` (Tuddenham et al. 2020 Fig. 2 on digits).""")
