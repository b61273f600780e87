"""Huh (2020) S.I.3 (Fig S.I.2) on scikit-learn's digits: a 5-layer ReLU network trained
from orthogonal initial weights with gains from 1 down to 1e-6, under SGD, NGD-d and
sqrt-NGD-d (Kronecker-factored, :func:`arraycurv.kfac.kfac_qngd_direction`).

Scaling from the paper: MNIST (784 inputs) and layer sizes [784, 300, 100, 30, 10]
become digits (8 x 8 = 64 inputs, 1797 images) and [64, 64, 48, 32, 10] (four dense
layers, ReLU between them, softmax cross-entropy), minibatch 128 as in the paper.

The dense layers have no biases here, so the network is positively homogeneous: with
gain g every layer's activations and output cotangents scale exactly as g^(i-1) and
g^(L-i), and the Kronecker factors of every layer keep their relative spectrum. (With
biases K-FAC appends a constant 1 to each layer input, mixing eigenvalues of order 1
and g^(2(i-1)) ~ 1e-36 in one factor, which float64 cannot resolve at g = 1e-6.)

As S.I.3 says, SGD and NGD-d need their settings scaled with the gain while sqrt-NGD-d
trains at every gain with one learning rate and no damping: here SGD keeps one rate
(its gradient vanishes as g^(L-1)), NGD-d gets the Levenberg-Marquardt damping of Fig
S.I.2 (1e-3, 1e-3, 1e-6, 1e-7 for gains 1, 1e-2, 1e-4, 1e-6; log-interpolated for other
gains), and sqrt-NGD-d none.

As data (:mod:`arraycurv.experiments.registry`): :class:`DigitsConfig` (``Config``), the
pure :func:`run_one` (one :func:`run_pair` per rule and gain) and :func:`report`,
registered as ``"relu-digits"``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

from .. import backend
from ..directions.kfac import kfac_qngd_direction
from ..dynamics.training import print_progress, train
from ..losses import SoftmaxCrossEntropy
from ..models.base import forward, init_params
from ..models.sequential import mlp
from ..rules import UpdateRule, chain, precondition, scale_by_lr
from ..rules import registry as rule_registry
from . import registry as reg
from .registry import UsageError, config_field, positive_int

__all__ = [
    "EXPERIMENT",
    "PAPER_NGD_D_DAMPING",
    "RULES",
    "Config",
    "DigitsConfig",
    "format_runs",
    "kfac_rule",
    "ngd_d_damping",
    "report",
    "run",
    "run_one",
    "run_pair",
]


#: Levenberg-Marquardt damping of NGD-d per gain, Huh (2020) Fig S.I.2 caption.
PAPER_NGD_D_DAMPING = {1.0: 1e-3, 1e-2: 1e-3, 1e-4: 1e-6, 1e-6: 1e-7}


RULES = ("sgd", "ngd_d", "sqrt_ngd_d")


@dataclass(frozen=True)
class DigitsConfig(reg.ExperimentConfig):
    """Settings of the ReLU-digits experiment (Huh S.I.3, scaled to digits); validated
    when built (:class:`UsageError`).

    Attributes
    ----------
    rules : tuple of str
        Among ``sgd``, ``ngd_d``, ``sqrt_ngd_d``.
    gains : tuple of float
        Gains of the orthogonal initial weights (the map then starts at gain^L).
    sizes : tuple of int
        Layer sizes (64 inputs, 10 classes).
    steps, batch_size : int
        Iterations per (rule, gain) and minibatch size (128 as in the paper).
    lr : tuple of (str, float)
        Fixed learning rate per rule (the same for every gain).
    record_every : int
        Interval of the recorded full-train and test losses and test accuracy.
    test_fraction : float
        Held-out fraction of the 1797 digits.
    seed : int
        Seed of the split, the initial weights and the minibatch order.
    """

    rules: tuple = config_field(RULES, "comma-separated rules among sgd, ngd_d, sqrt_ngd_d", parse=reg.name_list,
                                metavar="LIST")
    gains: tuple = config_field((1.0, 1e-2, 1e-4, 1e-6),
                                "gains of the orthogonal initial weights (Huh S.I.3: 1 down to 1e-6)",
                                parse=reg.float_list, metavar="G[,G...]")
    sizes: tuple = config_field((64, 64, 48, 32, 10), "layer sizes, input 64 and output 10 for digits",
                                parse=reg.int_list, metavar="N0,...,NL")
    steps: int = config_field(200, "training iterations per (rule, gain)", parse=positive_int)
    batch_size: int = config_field(128, "minibatch size", parse=positive_int)
    lr: tuple = config_field((("sgd", 0.2), ("ngd_d", 0.05), ("sqrt_ngd_d", 0.05)),
                             "override the learning rate of one rule (repeatable)", option="--lr-rule",
                             parse=reg.rule_rate, metavar="RULE=LR", repeat=True)
    record_every: int = config_field(5, "record the loss every this many iterations", parse=positive_int)
    test_fraction: float = config_field(0.25, "held-out fraction of the 1797 digits", parse=reg.positive_float)

    def check(self) -> None:
        """Known rules with a learning rate each, sizes 64 ... 10, positive gains."""
        super().check()
        for name in self.rules:
            _rule_q(name)
        if len(self.sizes) < 2 or self.sizes[0] != 64 or self.sizes[-1] != 10:
            raise UsageError(f"sizes: expected layer sizes starting with 64 and ending with 10, got {self.sizes}")
        if any(not (g > 0 and math.isfinite(g)) for g in self.gains):
            raise UsageError(f"gains: expected positive gains, got {self.gains}")
        if not 0 < self.test_fraction < 1:
            raise UsageError(f"test-fraction: expected a number in (0, 1), got {self.test_fraction}")
        lrs = dict(self.lr)
        for name in self.rules:
            if name not in lrs:
                raise UsageError(f"lr: expected a learning rate for rule {name!r}, got {lrs}")


#: The config of this experiment (the registry's ``config_type``).
Config = DigitsConfig


def ngd_d_damping(gain: float) -> float:
    """NGD-d damping for an init gain: the values of Huh Fig S.I.2 (1e-3, 1e-3, 1e-6, 1e-7 for
    gains 1, 1e-2, 1e-4, 1e-6), interpolated linearly in log(gain)-log(damping) in between
    and held constant outside."""
    pts = sorted((math.log10(g), math.log10(d)) for g, d in PAPER_NGD_D_DAMPING.items())
    x = math.log10(gain)
    if x <= pts[0][0]:
        return 10 ** pts[0][1]
    if x >= pts[-1][0]:
        return 10 ** pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return 10 ** (y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    raise AssertionError("unreachable")  # pragma: no cover


def kfac_rule(name: str, lr: float, q: float, *, damping: float = 0.0) -> UpdateRule:
    """Block-diagonal q-NGD with Kronecker-factored blocks as an :class:`arraycurv.UpdateRule`:
    ``chain(precondition(kfac_qngd_direction), scale_by_lr(lr))`` with softmax
    cross-entropy, i.e. ``updates_i = -lr (G_i (x) A_i + damping)^{-1/q} g_i / d^{1/q}``
    per layer (Huh eqs 19-21)."""

    def direction(model, params, batch, *, loss):
        return kfac_qngd_direction(model, params, batch, q, loss=loss, damping=damping, normalize=True)

    return chain(precondition(direction, loss=SoftmaxCrossEntropy()), scale_by_lr(lr), name=name)


def _rule_q(name: str) -> float:
    """Order q of a rule this experiment runs: SGD (q = inf) or a block-diagonal rule of
    the rule registry of fixed q (NGD-d, sqrt-NGD-d, ``qngd_d_q<q>``); :class:`UsageError`
    otherwise."""
    try:
        spec = rule_registry.rule_spec(name)
    except ValueError:
        spec = None
    if spec is None or spec.q is None or not (name == "sgd" or spec.block_diagonal):
        raise UsageError(f"rules: expected names among {RULES} (or qngd_d_q<q>), got {name!r}")
    return spec.q


def _make_rule(name: str, lr: float, gain: float) -> tuple[UpdateRule, dict]:
    """SGD from the rule registry, the block-diagonal rules with K-FAC blocks
    (:func:`kfac_rule`); rules with q < 2 (NGD-d) get the damping of Fig S.I.2."""
    q = _rule_q(name)
    if math.isinf(q):
        return rule_registry.make_rule(name, lr, loss=SoftmaxCrossEntropy()), {"lr": lr, "damping": 0.0}
    damping = ngd_d_damping(gain) if q < 2 else 0.0
    return kfac_rule(name, lr, q, damping=damping), {"lr": lr, "damping": damping}


def run_pair(name: str, gain: float, config: DigitsConfig, data, xp, *, progress=None):
    """Train one (rule, gain) pair; returns its history (NumPy) and timing."""
    np = backend.host_namespace()

    model = mlp(config.sizes, activation="relu", bias=False)
    params0 = init_params(model, config.seed + 1, xp, dtype=config.dtype, method="orthogonal", gain=gain)
    lr = dict(config.lr)[name]
    rule, settings = _make_rule(name, lr, gain)
    n = data.x_train.shape[0]
    g = backend.rng(config.seed + 2)
    order = []
    while len(order) < config.steps * config.batch_size:
        order.extend(g.permutation(n).tolist())
    dev = backend.device_of(data.x_train)

    def batch(step):
        idx = xp.asarray(order[step * config.batch_size:(step + 1) * config.batch_size], device=dev)
        return xp.take(data.x_train, idx, axis=0), xp.take(data.y_train, idx, axis=0)

    def accuracy(params):
        pred = xp.argmax(forward(model, params, data.x_test), axis=1)
        return xp.mean(xp.astype(pred == data.y_test, data.x_test.dtype))

    t0 = time.perf_counter()
    res = train(model, params0, batch, rule, config.steps, record_every=config.record_every,
                eval_batches={"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
                record={"test_accuracy": accuracy}, progress=progress, loss=SoftmaxCrossEntropy())
    wall = time.perf_counter() - t0
    hist = {
        "steps": res.steps,
        "batch_loss": res.losses,
        "train_loss": res.eval_losses["train"],
        "test_loss": res.eval_losses["test"],
        "test_accuracy": res.records["test_accuracy"],
        "lr": np.asarray(settings["lr"]),
        "damping": np.asarray(settings["damping"]),
    }
    return hist, {"time_per_step_s": float(res.time_per_step), "wall_s": wall}


def _key(name, gain):
    return f"{name}@{gain:g}"


NAME = "relu-digits"


PAPER = "Huh (2020) S.I.3, Fig S.I.2 (digits instead of MNIST)"


def run_one(config: DigitsConfig, *, xp=None, progress: bool = False, checkpoint=None) -> dict:
    """Train every rule at every gain (:func:`run_pair`); write nothing.

    A pair whose loss becomes NaN/Inf (possible for NGD-d at small gains) is recorded as
    diverged (``"diverged": true``, accuracy ``None``) and the next one starts;
    ``checkpoint(record)`` is called after every pair.

    Returns
    -------
    dict
        The record: ``experiment``, ``paper``, ``backend``, ``config``, ``ngd_d_damping``
        (per gain), ``runs`` (per ``"<rule>@<gain>"``: final test accuracy and losses),
        ``histories`` (NumPy arrays per pair) and ``timing`` (not reproducible).
    """
    from ..data import load_digits

    config, xp = reg.bind_namespace(config, xp)
    data = load_digits(test_fraction=config.test_fraction, seed=config.seed, xp=xp, dtype=config.dtype)
    record = {"experiment": NAME, "paper": PAPER, "backend": backend.namespace_name(xp),
              "config": reg.config_dict(config), "ngd_d_damping": {f"{g:g}": ngd_d_damping(g) for g in config.gains},
              "runs": {}, "histories": {}, "timing": {}}
    pairs = [(r, g) for g in config.gains for r in config.rules]
    for i, (name, gain) in enumerate(pairs):
        key = _key(name, gain)
        if progress:
            print(f"[relu-digits] {i + 1}/{len(pairs)}: {name}, gain {gain:g}", file=sys.stderr, flush=True)
        try:
            hist, timing = run_pair(name, gain, config, data, xp, progress=print_progress if progress else None)
        except ValueError as exc:
            if not reg.diverged(exc):
                raise
            record["runs"][key] = {"rule": name, "gain": gain, "diverged": True, "final_test_accuracy": None,
                                   "message": str(exc)}
            continue
        record["histories"][key] = hist
        record["runs"][key] = _pair_metrics(name, gain, hist)
        record["timing"][key] = timing
        if checkpoint is not None:
            checkpoint(record)
    return record


def _pair_metrics(name: str, gain: float, hist: dict) -> dict:
    return {
        "rule": name, "gain": gain, "diverged": False, "lr": float(hist["lr"]), "damping": float(hist["damping"]),
        "final_test_accuracy": float(hist["test_accuracy"][-1]),
        "best_test_accuracy": float(max(hist["test_accuracy"])),
        "final_train_loss": float(hist["train_loss"][-1]), "final_test_loss": float(hist["test_loss"][-1]),
        "initial_train_loss": float(hist["train_loss"][0]),
    }


def report(records, out_dir: str | os.PathLike | None = None, *, progress: bool = True, plots: bool = True) -> dict:
    """Write ``digits_loss.png``, ``summary.json`` and ``history.npz`` of the records of
    :func:`run_one` into ``out_dir`` (atomically; nothing for None); with ``progress``
    print the table. Returns the summary (the record without ``histories``, plus
    ``files``)."""
    return reg.report_each(_report_one, records, out_dir, progress=progress, plots=plots)


def _report_one(record: dict, out_dir, *, progress: bool, plots: bool) -> dict:
    from ..results import write_npz

    summary = {k: v for k, v in record.items() if k != "histories"}
    hists = record["histories"]
    if out_dir is not None:
        reg.check_out_dir(out_dir)
        write_npz(os.path.join(out_dir, "history.npz"),
                  {f"{key}/{k}": v for key, hist in hists.items() for k, v in hist.items()})
        files = ["summary.json", "history.npz"]
        if plots:
            from .plotting import plot_digits_loss

            cfg = record["config"]
            runs = {"gains": list(cfg["gains"]), "rules": list(cfg["rules"])}
            runs.update(hists)
            runs["title"] = (f"Huh (2020) Fig S.I.2 on digits: ReLU net {list(cfg['sizes'])}, orthogonal init, "
                             f"minibatch {cfg['batch_size']}")
            plot_digits_loss(runs, os.path.join(out_dir, "digits_loss.png"))
            files.insert(0, "digits_loss.png")
        reg.write_summary(summary, out_dir, files)
    return reg.show_report(summary, out_dir, format_runs, progress=progress)


def format_runs(summary: dict) -> str:
    """The summary's runs as an aligned text table (one row per rule and gain)."""
    from ..results import format_table
    from .plotting import rule_label

    rows = []
    for key, m in summary["runs"].items():
        rows.append({"rule": rule_label(m["rule"]), "gain": m["gain"], "lr": m.get("lr"),
                     "damping": m.get("damping"),
                     "test acc": m["final_test_accuracy"], "train loss": m.get("final_train_loss"),
                     "ms/step": 1e3 * summary["timing"].get(key, {}).get("time_per_step_s", math.nan)})
    return format_table(rows, ["rule", "gain", "lr", "damping", "test acc", "train loss", "ms/step"])


#: This experiment in the registry (:func:`arraycurv.experiments.get_experiment`).
EXPERIMENT = reg.register_experiment(reg.Experiment(
    name=NAME, config_type=DigitsConfig, run_one=run_one, report=report,
    help="Huh S.I.3: 5-layer ReLU net from tiny orthogonal init on digits", paper=PAPER))

run = reg.make_run(EXPERIMENT, "results/relu-digits", """Run Huh S.I.3 on digits (:func:`run_one` then
    :func:`report`): every rule at every gain; writes ``digits_loss.png``, ``summary.json``
    (final test accuracy and losses per rule and gain) and ``history.npz`` (rewritten
    atomically after every finished pair). Returns the summary.
    """)
