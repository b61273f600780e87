"""Figures of the reproductions (Huh 2020 Figs 1-5, S.I.2 on digits).

matplotlib is imported lazily inside the functions (the core library does not need it;
install it with ``pip install 'arraycurv[plots]'``). Figures are drawn on the Agg
canvas directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), without pyplot, so
no global backend state is touched and no display is needed. Every file is written
atomically through :func:`arraycurv.results.atomic_write`.

All functions take NumPy arrays (the experiments convert with
:func:`arraycurv.backend.to_numpy`) and plain Python data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .. import backend
from ..results import atomic_write
from ..rules.registry import rule_label as _registry_label

__all__ = [
    "RULE_STYLE",
    "new_figure",
    "plot_digits_loss",
    "plot_map_curves",
    "plot_teacher_student_fig4",
    "plot_teacher_student_fig5",
    "plot_vector_fields",
    "rule_color",
    "rule_label",
    "rule_linestyle",
    "save_figure",
]


#: host-side NumPy for figure data (already converted by backend.to_numpy)
np = backend.host_namespace()


#: Colour and display label per update rule (kept identical across figures).
RULE_STYLE: dict[str, tuple[str, str]] = {
    "sgd": ("#000000", "SGD"),
    "ngd": ("#d62728", "NGD"),
    "sqrt_ngd": ("#1f77b4", "\u221aNGD"),
    "ngd_d": ("#ff7f0e", "NGD-d"),
    "sqrt_ngd_d": ("#2ca02c", "\u221aNGD-d"),
    "adam": ("#8c564b", "Adam"),
}


_EXTRA_COLORS = ["#9467bd", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'arraycurv[plots]' (or pip install matplotlib)"
        ) from exc
    return Figure, FigureCanvasAgg


def _no_minor_ticks(*axes) -> None:
    """Drop minor ticks (log axes make dozens per panel, which dominate drawing time)."""
    from matplotlib.ticker import NullLocator

    for ax in axes:
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())


def rule_label(name: str) -> str:
    """Display label of a rule name (``'sqrt_ngd'`` -> ``'√NGD'``, ``'qngd_q3'`` -> ``'q-NGD (q=3)'``)."""
    try:
        return _registry_label(name)  # the one registry of rule names (arraycurv.rules.registry)
    except ValueError:
        return name


def rule_color(name: str, index: int = 0) -> str:
    """Colour of a rule; rules without a fixed colour cycle through a spare palette."""
    if name in RULE_STYLE:
        return RULE_STYLE[name][0]
    return _EXTRA_COLORS[index % len(_EXTRA_COLORS)]


def rule_linestyle(name: str) -> str:
    """Dashed for block-diagonal rules (NGD-d, sqrt-NGD-d), solid otherwise, so that a
    block-diagonal rule stays visible where it traces its full counterpart."""
    return (0, (4, 2)) if name.endswith("_d") or "_d_" in name else "-"


def new_figure(figsize=(8.0, 6.0), *, dpi: int = 110):
    """A matplotlib Figure on an Agg canvas (no pyplot, no display), constrained layout."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int | None = None) -> str:
    """Save ``fig`` as PNG atomically (temporary file + ``os.replace``)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi or fig.dpi))


# ------------------------------------------------------------------ Figs 1 and 3
def plot_vector_fields(panels: Sequence[Mapping[str, Any]], path, *, title: str | None = None) -> str:
    """Singular-mode vector fields at depth 2 (Huh Figs 1 and 3).

    Each panel mapping holds ``name``, ``s1``, ``s2`` (grid coordinates, 2-D),
    ``u``, ``v`` (velocity divided by |sigma_Delta| on the grid), ``displacement``
    (sigma_1 sigma_2 - sigma_star) and ``invariant`` (the conserved quantity) on the
    finer contour grid ``f1``, ``f2``, with ``invariant_label`` and ``invariant_levels``,
    ``trajectory`` ((T, 2) integrated path) and
    optionally ``dots`` ((K, 2) positions at equal time intervals) and ``caption``.
    """
    n = len(panels)
    fig = new_figure((4.3 * n, 5.2 if n < 3 else 4.9))
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    handles = {}
    for ax, p in zip(axes, panels):
        s1, s2 = np.asarray(p["s1"]), np.asarray(p["s2"])
        f1, f2 = np.asarray(p.get("f1", s1)), np.asarray(p.get("f2", s2))
        disp = np.asarray(p["displacement"])
        levels = [lv for lv in np.arange(-4.0, 4.01, 0.5) if lv != 0.0]
        ax.contour(f1, f2, disp, levels=levels, colors="0.6", linewidths=0.6, linestyles="dotted")
        cs0 = ax.contour(f1, f2, disp, levels=[0.0], colors="k", linewidths=2.0)
        inv = np.asarray(p["invariant"])
        ilevels = p.get("invariant_levels")
        ci = ax.contour(f1, f2, inv, levels=ilevels if ilevels is not None else 9, colors="#d62728",
                        linewidths=0.9, linestyles="solid")
        ax.quiver(s1, s2, np.asarray(p["u"]), np.asarray(p["v"]), color="0.2", angles="xy", pivot="mid",
                  width=0.005)
        tr = np.asarray(p["trajectory"])
        (lt,) = ax.plot(tr[:, 0], tr[:, 1], color="#1f77b4", lw=2.2)
        ax.plot(tr[0, 0], tr[0, 1], "o", color="#1f77b4", ms=6)
        if p.get("dots") is not None and len(p["dots"]):
            dots = np.asarray(p["dots"])
            handles["dots"] = ax.plot(dots[:, 0], dots[:, 1], ".", color="#d62728", ms=7)[0]
        ax.set_xlim(float(s1.min()), float(s1.max()))
        ax.set_ylim(float(s2.min()), float(s2.max()))
        ax.set_aspect("equal")
        ax.set_xlabel(r"$\sigma_1$ (layer 1)")
        ax.set_ylabel(r"$\sigma_2$ (layer 2)")
        ax.set_title(f"{p['name']}\nconserves {p['invariant_label']}", fontsize=10)
        handles["opt"] = cs0.legend_elements()[0][0]
        handles["inv"] = ci.legend_elements()[0][0]
        handles["traj"] = lt
    labels = {
        "opt": r"optimum $\sigma_1\sigma_2=\bar\sigma_*$",
        "inv": "conserved paths",
        "traj": "integrated trajectory (o = start)",
        "dots": "equal time steps",
    }
    keys = [k for k in ("opt", "inv", "traj", "dots") if k in handles]
    from matplotlib.lines import Line2D

    extra = Line2D([], [], color="0.6", lw=0.8, ls="dotted")
    ncol = len(keys) + 1 if n >= 3 else 3
    fig.legend([handles[k] for k in keys] + [extra],
               [labels[k] for k in keys] + [r"levels of $\sigma_\Delta=\sigma_1\sigma_2-\bar\sigma_*$"],
               loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)
    if title:
        arrows = r"arrows: $[\dot\sigma_1, \dot\sigma_2]/|\sigma_\Delta|$ (lengths capped at 3x median)"
        fig.suptitle(title + "\n" + arrows,
                     fontsize=11)
    return save_figure(fig, path)


# ------------------------------------------------------------------------- Fig 2
def plot_map_curves(panels: Sequence[Mapping[str, Any]], path) -> str:
    """Map learning curves of Huh eq (17) (Fig 2): top row sigma_bar(t) with targets
    (dashed) and half-max points (circles), bottom row the loss sum_k (sigma_k - sigma*_k)^2 / 2.

    Each panel mapping holds ``p``, ``title``, ``t`` (T,), ``sigma`` (K, T),
    ``sigma_star`` (K,), ``half_time`` (K,), ``loss`` (T,).
    """
    n = len(panels)
    fig = new_figure((3.6 * n, 6.2))
    cmap_colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    for i, p in enumerate(panels):
        ax = fig.add_subplot(2, n, i + 1)
        axl = fig.add_subplot(2, n, n + i + 1, sharex=ax)
        t = np.asarray(p["t"])
        sig = np.asarray(p["sigma"])
        stars = np.asarray(p["sigma_star"])
        halves = np.asarray(p["half_time"])
        for k, s in enumerate(stars):
            c = cmap_colors[k % len(cmap_colors)]
            ax.plot(t, sig[k], color=c, lw=1.8, label=rf"$\bar\sigma_*={s:g}$")
            ax.axhline(s, color=c, ls="--", lw=0.9)
            if np.isfinite(halves[k]):
                ax.plot(halves[k], s / 2, "o", mfc="none", mec="k", ms=7)
        axl.plot(t, np.asarray(p["loss"]), color="k", lw=1.6)
        ax.set_title(p["title"], fontsize=10)
        ax.set_ylabel(r"map strength $\bar\sigma(t)$")
        axl.set_ylabel(r"loss $\sum_k(\bar\sigma_k-\bar\sigma_{*k})^2/2$")
        axl.set_xlabel(r"time $t$ ($\bar\eta = 1$)")
        ax.set_xlim(float(t[0]), float(t[-1]))
        ax.set_ylim(bottom=0)
        axl.set_ylim(bottom=0)
        if i == 0:
            handles, labels = ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="0.4", ls="--"), Line2D([], [], marker="o", mfc="none", mec="k", ls="")]
    labels += ["target (dashed)", "half-max point"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False)
    eq = r"$\dot{\bar\sigma}=-\bar\eta(\bar\sigma-\bar\sigma_*)\bar\sigma^p$"
    fig.suptitle(f"Huh (2020) Fig 2: map dynamics {eq} (eq 17)",
                 fontsize=11)
    return save_figure(fig, path)


# ------------------------------------------------------------------- Figs 4 and 5
def _rule_handles(rules, styled=True):
    from matplotlib.lines import Line2D

    hs = [Line2D([], [], color=rule_color(r, i), lw=2, ls=rule_linestyle(r) if styled else "-")
          for i, r in enumerate(rules)]
    return hs, [rule_label(r) for r in rules]


def _fig4_targets(ax, target, teacher, rank: int) -> None:
    """Panel A of Fig 4: the target singular values (signal dark, noise light) and the teacher's."""
    k = np.arange(1, target.size + 1)
    ax.bar(k[:rank], target[:rank], color="#444444", label="signal")
    ax.bar(k[rank:], target[rank:], color="#bbbbbb", label="noise")
    ax.plot(k, teacher, "x", color="#d62728", ms=6, label="teacher alone")
    ax.set_xlabel("singular mode k")
    ax.set_ylabel(r"$\bar\sigma_{*k}$ of the training target map")
    ax.set_title("A  target singular values", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)


def plot_teacher_student_fig4(hist: Mapping[str, Any], path, *, xscale: str = "log") -> str:
    """Huh Fig 4: (A) target singular values, (B) train loss, (C) test loss with
    early-stopping points, (D) singular-mode strengths of the map over time, one small
    panel per rule.

    ``hist`` holds ``rules`` (names), ``target_sv`` (N,), ``teacher_sv`` (N,), ``rank``,
    and per rule ``r``: ``hist[r]["steps"]`` (T,), ``train_loss``, ``test_loss`` (T,),
    ``modes`` (T, N) (strengths along the target map's singular vectors),
    ``best_step`` (int).
    """
    rules = list(hist["rules"])
    n = len(rules)
    target = np.asarray(hist["target_sv"])
    teacher = np.asarray(hist["teacher_sv"])
    rank = int(hist["rank"])
    ncol = max(3, n)
    fig = new_figure((3.1 * ncol, 7.4))
    gs = fig.add_gridspec(2, ncol * 2, height_ratios=[1.0, 1.0])
    third = (2 * ncol) // 3
    axA = fig.add_subplot(gs[0, :third])
    axB = fig.add_subplot(gs[0, third:2 * third])
    axC = fig.add_subplot(gs[0, 2 * third:], sharex=axB)
    _fig4_targets(axA, target, teacher, rank)
    for i, r in enumerate(rules):
        h = hist[r]
        c = rule_color(r, i)
        steps = np.asarray(h["steps"])
        x = np.maximum(steps, 1) if xscale == "log" else steps
        ls = rule_linestyle(r)
        axB.plot(x, np.asarray(h["train_loss"]), color=c, lw=1.6, ls=ls)
        axC.plot(x, np.asarray(h["test_loss"]), color=c, lw=1.6, ls=ls)
        b = int(h["best_step"])
        axC.axvline(max(b, 1) if xscale == "log" else b, color=c, ls=":", lw=1.2)
        bi = int(np.argmin(np.abs(steps - b)))
        axC.plot(x[bi], np.asarray(h["test_loss"])[bi], "o", color=c, ms=5)
    last = max(int(np.asarray(hist[r]["steps"])[-1]) for r in rules)
    axB.set_xlim(1 if xscale == "log" else 0, int(hist.get("steps", last)))
    panels = ((axB, "train loss", "B  train loss"), (axC, "test loss", "C  test loss (dotted lines: early stopping)"))
    for ax, lab, ttl in panels:
        ax.set_xscale(xscale)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(lab)
        ax.set_title(ttl, fontsize=10, loc="left")
    axD = []
    for i, r in enumerate(rules):
        ax = fig.add_subplot(gs[1, 2 * i:2 * i + 2], sharey=axD[0] if axD else None, sharex=axB)
        axD.append(ax)
        h = hist[r]
        c = rule_color(r, i)
        steps = np.asarray(h["steps"])
        x = np.maximum(steps, 1) if xscale == "log" else steps
        modes = np.asarray(h["modes"])
        for j in range(modes.shape[1] - 1, -1, -1):
            sig = j < rank
            ax.plot(x, modes[:, j], color=c if sig else "0.55", lw=1.8 if sig else 0.8, alpha=1.0 if sig else 0.8)
        for j in range(target.size):
            ax.axhline(target[j], color="k" if j < rank else "0.7", ls=":", lw=0.7)
        ax.set_xscale(xscale)
        ax.set_xlabel("iteration")
        if i == 0:
            ax.set_ylabel(r"mode strength $u_k^\top \bar w\, v_k$")
            ax.set_title("D  singular-mode strengths\n" + rule_label(r), fontsize=10, loc="left")
        else:
            ax.set_title(rule_label(r), fontsize=10, loc="left")
    from matplotlib.lines import Line2D

    _no_minor_ticks(axB, axC, *axD)
    hs, ls = _rule_handles(rules)
    hs += [Line2D([], [], color="0.3", lw=1.8), Line2D([], [], color="0.55", lw=0.8), Line2D([], [], color="k", ls=":")]
    ls += ["D: signal modes (rule colour)", "D: noise modes (grey)", r"D: targets $\bar\sigma_{*k}$"]
    fig.legend(hs, ls, loc="outside lower center", ncol=min(len(ls), 8), fontsize=9, frameon=False)
    fig.suptitle(hist.get("title", "Huh (2020) Fig 4: teacher-student, map dynamics"), fontsize=11)
    return save_figure(fig, path)


def plot_teacher_student_fig5(hist: Mapping[str, Any], path, *, xscale: str = "log") -> str:
    """Huh Fig 5: (A, B) a few entries of W_2 and W_3 over time, (C) ||c_2||_F over time,
    c_2 = W_2 W_2^T - W_3^T W_3 (eq 15).

    Per rule ``r``: ``hist[r]["steps"]``, ``w2_entries`` (T, k), ``w3_entries`` (T, k),
    ``c2_norm`` (T,).
    """
    rules = list(hist["rules"])
    fig = new_figure((14.0, 4.6))
    axes = [fig.add_subplot(1, 3, 1)]
    axes += [fig.add_subplot(1, 3, 2, sharex=axes[0]), fig.add_subplot(1, 3, 3, sharex=axes[0])]
    la, lb = hist.get("layers", (2, 3))
    for i, r in enumerate(rules):
        h = hist[r]
        c = rule_color(r, i)
        steps = np.asarray(h["steps"])
        x = np.maximum(steps, 1) if xscale == "log" else steps
        for ax, key in ((axes[0], "w2_entries"), (axes[1], "w3_entries")):
            ax.plot(x, np.asarray(h[key]), color=c, lw=1.0, alpha=0.85, ls=rule_linestyle(r))
        axes[2].plot(x, np.asarray(h["c2_norm"]), color=c, lw=1.6, ls=rule_linestyle(r))
    titles = (f"A  entries of $W_{la}$", f"B  entries of $W_{lb}$",
              rf"C  $\|c_{la}\|_F$,  $c_{la}=W_{la}W_{la}^\top-W_{lb}^\top W_{lb}$ (eq 15)")
    ylabels = ("weight value", "weight value", rf"$\|c_{la}\|_F$")
    last = max(int(np.asarray(hist[r]["steps"])[-1]) for r in rules)
    axes[0].set_xlim(1 if xscale == "log" else 0, int(hist.get("steps", last)))
    for ax, t, yl in zip(axes, titles, ylabels):
        ax.set_xscale(xscale)
        ax.set_xlabel("iteration")
        ax.set_ylabel(yl)
        ax.set_title(t, fontsize=10, loc="left")
    axes[2].set_yscale("log")
    _no_minor_ticks(*axes)
    hs, ls = _rule_handles(rules)
    fig.legend(hs, ls, loc="outside lower center", ncol=len(ls), fontsize=9, frameon=False)
    fig.suptitle(hist.get("title5", "Huh (2020) Fig 5: parameter dynamics"), fontsize=11)
    return save_figure(fig, path)


# --------------------------------------------------------------- S.I.3 on digits
def plot_digits_loss(runs: Mapping[str, Any], path) -> str:
    """Huh Fig S.I.2 on digits: cross-entropy loss over iterations, one panel per init gain.

    ``runs`` holds ``gains`` (list), ``rules`` (names) and ``runs[(rule, gain)]`` ->
    mapping with ``steps`` (T,), ``train_loss`` (T,, full training set) and optionally ``test_loss`` (T,)
    (keys are ``f"{rule}@{gain:g}"``).
    """
    gains = list(runs["gains"])
    rules = list(runs["rules"])
    n = len(gains)
    fig = new_figure((3.6 * n, 4.2))
    axes = []
    for gi, g in enumerate(gains):
        ax = fig.add_subplot(1, n, gi + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        for i, r in enumerate(rules):
            h = runs.get(f"{r}@{g:g}")
            if h is None:
                continue
            c = rule_color(r, i)
            lw = 3.2 if i == 0 else 1.6  # the first rule underneath, wider, stays visible where curves coincide
            ax.plot(np.asarray(h["steps"]), np.asarray(h["train_loss"]), color=c, lw=lw)
            if h.get("test_loss") is not None:
                ax.plot(np.asarray(h["steps"]), np.asarray(h["test_loss"]), color=c, lw=1.0, ls="--")
        ax.set_title(f"init gain {g:g}", fontsize=10)
        ax.set_xlabel("iteration")
        if gi == 0:
            ax.set_ylabel("cross-entropy loss")
    from matplotlib.lines import Line2D

    hs, ls = _rule_handles(rules, styled=False)
    hs += [Line2D([], [], color="0.3", lw=1.5), Line2D([], [], color="0.3", lw=1.0, ls="--")]
    ls += ["train (full set)", "test"]
    fig.legend(hs, ls, loc="outside lower center", ncol=len(ls), fontsize=9, frameon=False)
    fig.suptitle(runs.get("title", "Huh (2020) Fig S.I.2 on digits: ReLU net from small orthogonal init"),
                 fontsize=11)
    return save_figure(fig, path)
