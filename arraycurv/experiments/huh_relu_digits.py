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
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace

from .. import backend
from ..directions.kfac import kfac_qngd_direction
from ..dynamics.training import print_progress, train
from ..losses import SoftmaxCrossEntropy
from ..models.base import forward, init_params
from ..models.sequential import mlp
from ..rules import UpdateRule, sgd
from . import UsageError, check_out_dir

__all__ = [
    "DigitsConfig",
    "PAPER_NGD_D_DAMPING",
    "RULES",
    "config_from_args",
    "kfac_rule",
    "ngd_d_damping",
    "run",
    "run_one",
]


#: Levenberg-Marquardt damping of NGD-d per gain, Huh (2020) Fig S.I.2 caption.
PAPER_NGD_D_DAMPING = {1.0: 1e-3, 1e-2: 1e-3, 1e-4: 1e-6, 1e-6: 1e-7}


RULES = ("sgd", "ngd_d", "sqrt_ngd_d")


@dataclass(frozen=True)
class DigitsConfig:
    """Settings of the ReLU-digits experiment (Huh S.I.3, scaled to digits).

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
    dtype : str
    """

    rules: tuple = RULES
    gains: tuple = (1.0, 1e-2, 1e-4, 1e-6)
    sizes: tuple = (64, 64, 48, 32, 10)
    steps: int = 200
    batch_size: int = 128
    lr: tuple = (("sgd", 0.2), ("ngd_d", 0.05), ("sqrt_ngd_d", 0.05))
    record_every: int = 5
    test_fraction: float = 0.25
    seed: int = 0
    dtype: str = "float64"


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
    ``direction = lr * kfac_qngd_direction(model, params, batch, q, loss=CE, damping)``,
    i.e. ``-lr (G_i (x) A_i + damping)^{-1/q} g_i / d^{1/q}`` per layer (Huh eqs 19-21)."""
    loss = SoftmaxCrossEntropy()

    def update(model, params, batch, state):
        d = kfac_qngd_direction(model, params, batch, q, loss=loss, damping=damping, normalize=True)
        return tuple(lr * di for di in d), state

    return UpdateRule(name, lambda params: None, update, True)


def _make_rule(name: str, lr: float, gain: float) -> tuple[UpdateRule, dict]:
    if name == "sgd":
        return sgd(lr, loss=SoftmaxCrossEntropy()), {"lr": lr, "damping": 0.0}
    if name == "ngd_d":
        damping = ngd_d_damping(gain)
        return kfac_rule(name, lr, 1.0, damping=damping), {"lr": lr, "damping": damping}
    if name == "sqrt_ngd_d":
        return kfac_rule(name, lr, 2.0), {"lr": lr, "damping": 0.0}
    raise UsageError(f"rules: expected names among {RULES}, got {name!r}")


def _check_config(config: DigitsConfig) -> None:
    for name in config.rules:
        if name not in RULES:
            raise UsageError(f"rules: expected names among {RULES}, got {name!r}")
    if len(config.sizes) < 2 or config.sizes[0] != 64 or config.sizes[-1] != 10:
        raise UsageError(f"sizes: expected layer sizes starting with 64 and ending with 10, got {config.sizes}")
    if any(not (g > 0 and math.isfinite(g)) for g in config.gains):
        raise UsageError(f"gains: expected positive gains, got {config.gains}")
    lrs = dict(config.lr)
    for name in config.rules:
        if name not in lrs:
            raise UsageError(f"lr: expected a learning rate for rule {name!r}, got {lrs}")


def run_one(name: str, gain: float, config: DigitsConfig, data, xp, *, progress=None):
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


def run(config: DigitsConfig = DigitsConfig(), out_dir: str | os.PathLike | None = "results/relu-digits", *, xp=None,
        progress: bool = True, plots: bool = True) -> dict:
    """Run Huh S.I.3 on digits: every rule at every gain; writes ``digits_loss.png``,
    ``summary.json`` (final test accuracy and losses per rule and gain) and ``history.npz``
    (rewritten atomically after every finished pair). Returns the summary.

    A run whose loss becomes NaN/Inf (possible for NGD-d at small gains) is recorded as
    diverged (``"diverged": true``, accuracy ``None``) and the next one starts.
    """
    from ..results import format_table, write_json, write_npz

    _check_config(config)
    xp = xp if xp is not None else backend.namespace_by_name("numpy")
    if out_dir is not None:
        check_out_dir(out_dir)
    from ..data import load_digits

    data = load_digits(test_fraction=config.test_fraction, seed=config.seed, xp=xp, dtype=config.dtype)
    cfg = asdict(config)
    cfg["lr"] = dict(config.lr)
    cfg["ngd_d_damping"] = {f"{g:g}": ngd_d_damping(g) for g in config.gains}
    summary = {"experiment": "relu-digits", "paper": "Huh (2020) S.I.3, Fig S.I.2 (digits instead of MNIST)",
               "backend": backend.namespace_name(xp), "config": cfg, "runs": {}, "timing": {}}
    hists, arrays = {}, {}
    pairs = [(r, g) for g in config.gains for r in config.rules]
    for i, (name, gain) in enumerate(pairs):
        key = _key(name, gain)
        if progress:
            print(f"[relu-digits] {i + 1}/{len(pairs)}: {name}, gain {gain:g}", file=sys.stderr, flush=True)
        try:
            hist, timing = run_one(name, gain, config, data, xp, progress=print_progress if progress else None)
        except ValueError as exc:
            if "finite" not in str(exc):
                raise
            summary["runs"][key] = {"rule": name, "gain": gain, "diverged": True, "final_test_accuracy": None,
                                    "message": str(exc)}
            continue
        hists[key] = hist
        summary["runs"][key] = {
            "rule": name, "gain": gain, "diverged": False, "lr": float(hist["lr"]), "damping": float(hist["damping"]),
            "final_test_accuracy": float(hist["test_accuracy"][-1]),
            "best_test_accuracy": float(max(hist["test_accuracy"])),
            "final_train_loss": float(hist["train_loss"][-1]), "final_test_loss": float(hist["test_loss"][-1]),
            "initial_train_loss": float(hist["train_loss"][0]),
        }
        summary["timing"][key] = timing
        arrays.update({f"{key}/{k}": v for k, v in hist.items()})
        if out_dir is not None:
            write_npz(os.path.join(out_dir, "history.npz"), arrays)
            write_json(os.path.join(out_dir, "summary.json"), summary)
    if out_dir is not None:
        files = ["summary.json", "history.npz"]
        if plots:
            from .plotting import plot_digits_loss

            runs = {"gains": list(config.gains), "rules": list(config.rules)}
            runs.update(hists)
            runs["title"] = (f"Huh (2020) Fig S.I.2 on digits: ReLU net {list(config.sizes)}, orthogonal init, "
                             f"minibatch {config.batch_size}")
            plot_digits_loss(runs, os.path.join(out_dir, "digits_loss.png"))
            files.insert(0, "digits_loss.png")
        summary["files"] = files
        write_json(os.path.join(out_dir, "summary.json"), summary)
    if progress:
        from .plotting import rule_label

        rows = []
        for key, m in summary["runs"].items():
            rows.append({"rule": rule_label(m["rule"]), "gain": m["gain"], "lr": m.get("lr"),
                         "damping": m.get("damping"),
                         "test acc": m["final_test_accuracy"], "train loss": m.get("final_train_loss"),
                         "ms/step": 1e3 * summary["timing"].get(key, {}).get("time_per_step_s", math.nan)})
        print(format_table(rows, ["rule", "gain", "lr", "damping", "test acc", "train loss", "ms/step"]))
        if out_dir is not None:
            print(f"wrote {', '.join(summary['files'])} to {out_dir}")
    return summary


def config_from_args(args) -> DigitsConfig:
    """A :class:`DigitsConfig` from the parsed command line (:mod:`arraycurv.cli`)."""
    lr = dict(DigitsConfig().lr)
    lr.update(dict(args.lr_rule))
    return replace(DigitsConfig(), rules=tuple(args.rules), gains=tuple(args.gains), sizes=tuple(args.sizes),
                   steps=args.steps, batch_size=args.batch_size, lr=tuple(lr.items()),
                   record_every=args.record_every, seed=args.seed, dtype=args.dtype)
