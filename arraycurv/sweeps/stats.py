"""Aggregate a sweep's records over seeds: mean, standard deviation and a confidence interval.

Records are grouped by their grid values (replicates pooled). For every scalar metric
(a number in the record, found by a dotted path such as ``"rules.sgd.min_test"``) each
group gets n, mean, the sample standard deviation (ddof = 1) and the two-sided
``level`` (default 95%) Student-t confidence interval of the mean,
``mean +- t_{n-1} sd / sqrt(n)``. Curves (lists of numbers of equal length) aggregate
pointwise, for figures with bands (:func:`plot_bands`); a curve that ends early (a run
stopped early because it converged) holds its last value up to the longest one.

Metric patterns (:func:`expand_metrics`, :func:`metric_table`) may contain one ``*``
matching one path segment: ``"rules.*.min_test_loss"`` is that metric of every rule,
and the table gets one row per rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .. import backend
from ..results import format_table

__all__ = ["aggregate", "expand_metrics", "flatten_record", "format_aggregate", "metric_table", "plot_bands",
           "t_quantile"]


def flatten_record(record: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths of a nested record: numbers and lists of numbers (curves) only."""
    out: dict[str, Any] = {}
    if isinstance(record, Mapping):
        for k, v in record.items():
            out.update(flatten_record(v, f"{prefix}{k}."))
    elif isinstance(record, bool):
        out[prefix[:-1]] = float(record)
    elif isinstance(record, (int, float)):
        out[prefix[:-1]] = float(record)
    elif isinstance(record, (list, tuple)) and record and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in record
    ):
        out[prefix[:-1]] = [float(v) for v in record]
    elif backend.is_array(record):
        a = backend.to_numpy(record)
        if a.ndim == 0:
            out[prefix[:-1]] = float(a)
        elif a.ndim == 1 and a.size and a.dtype.kind in "fiu":
            out[prefix[:-1]] = [float(v) for v in a]
    return out


def _match(pattern: str, path: str) -> str | None:
    """The segment matched by the ``*`` of ``pattern`` in ``path`` ("" without a ``*``;
    None if it does not match)."""
    p, q = pattern.split("."), path.split(".")
    if len(p) != len(q):
        return None
    star = ""
    for a, b in zip(p, q):
        if a == "*":
            star = b
        elif a != b:
            return None
    return star


def expand_metrics(patterns: Sequence[str], paths: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(pattern, label, path)`` for every path matching a pattern (patterns in order,
    paths in their order); ``label`` is the segment matched by ``*`` ("" without one)."""
    out = []
    for pat in patterns:
        for path in paths:
            label = _match(pat, path)
            if label is not None:
                out.append((pat, label, path))
    return out


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution (SciPy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def _stats(values: Sequence[float], level: float) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan, "min": math.nan,
                "max": math.nan}
    mean = math.fsum(vals) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "min": min(vals), "max": max(vals)}


def aggregate(entries: Sequence[Mapping], metrics: Sequence[str] | None = None, *, level: float = 0.95) -> list[dict]:
    """Per grid point: the grid values and, per metric, n / mean / sd / CI over replicates.

    Parameters
    ----------
    entries : sequence of dict
        Finished cell entries (:func:`arraycurv.sweeps.load_records` or
        ``SweepResult.entries``), each with ``values`` and ``record``.
    metrics : sequence of str, optional
        Dotted metric paths; default every scalar of the first record.
    level : float
        Confidence level of the interval, in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")
    groups: dict[str, list[dict]] = {}
    grid_values: dict[str, dict] = {}
    for e in entries:
        key = json.dumps(e["values"], sort_keys=True, default=repr)
        grid_values.setdefault(key, {n: v for n, v in e["values"]})
        groups.setdefault(key, []).append(flatten_record(e["record"]))
    rows = []
    for key, recs in groups.items():
        values = grid_values[key]
        paths = list(dict.fromkeys(k for r in recs for k in r))
        if metrics:
            names = list(dict.fromkeys(p for _, _, p in expand_metrics(metrics, paths)))
        else:
            names = [k for k in paths if not isinstance(recs[0].get(k), list)]
        row = {"values": values, "replicates": len(recs)}
        for m in names:
            series = [r[m] for r in recs if r.get(m) is not None]
            if series and isinstance(series[0], list):
                length = max(len(s) for s in series)
                series = [s + s[-1:] * (length - len(s)) for s in series if s]
                row[m] = [_stats([s[i] for s in series], level) for i in range(length)]
            else:
                row[m] = _stats([s for s in series if not isinstance(s, list)], level)
        rows.append(row)
    return rows


def format_aggregate(rows: Sequence[Mapping], metrics: Sequence[str], *, float_format: str = ".4g") -> str:
    """A text table: grid values, then ``mean ± sd [lo, hi] (n)`` per metric."""
    if not rows:
        return "(no finished cells)"
    grid_names = list(rows[0]["values"])
    table = []
    for r in rows:
        line = {g: r["values"][g] for g in grid_names}
        for m in metrics:
            line[m] = _cell(r.get(m), float_format, True)
        table.append(line)
    return format_table(table, grid_names + list(metrics))


def _cell(s: Any, float_format: str, ci: bool) -> str:
    if not (isinstance(s, dict) and s.get("n")):
        return "-"
    text = f"{s['mean']:{float_format}} ± {s['sd']:{float_format}}"
    if ci:
        text += f" [{s['lo']:{float_format}}, {s['hi']:{float_format}}]"
    return text + f" ({s['n']})"


def metric_table(rows: Sequence[Mapping], patterns: Sequence[str], *, float_format: str = ".4g", ci: bool = True,
                 label: str = "rule") -> str:
    """A text table of :func:`aggregate` rows for metric patterns with one ``*`` (or none).

    One line per grid point and ``*`` match (its value in the column ``label``), one
    column per pattern (headed by its last segment): ``mean ± sd [lo, hi] (n)``.
    """
    if not rows:
        return "(no finished cells)"
    grid_names = list(rows[0]["values"])
    starred = any("*" in p for p in patterns)
    heads = [p.split(".")[-1] if "*" in p or "." in p else p for p in patterns]
    if len(set(heads)) != len(heads):
        heads = list(patterns)
    table = []
    for r in rows:
        found = expand_metrics(patterns, [k for k in r if k not in ("values", "replicates")])
        labels = list(dict.fromkeys(lab for _, lab, _ in found)) or [""]
        for lab in labels:
            line = {g: r["values"][g] for g in grid_names}
            if starred:
                line[label] = lab
            for pat, head in zip(patterns, heads):
                path = next((p for q, lb, p in found if q == pat and lb == (lab if "*" in pat else "")), None)
                line[head] = _cell(r.get(path), float_format, ci)
            table.append(line)
    return format_table(table, grid_names + ([label] if starred else []) + heads)


def plot_bands(rows: Sequence[Mapping], metric: str, path, *, x: Sequence[float] | str | None = None,
               label_fields: Sequence[str] | None = None, yscale: str = "log", title: str | None = None,
               xlabel: str | None = None, xscale: str = "linear") -> str:
    """Figure of a curve metric: the mean per grid point with its confidence band.

    ``metric`` may contain one ``*`` (one line per match and grid point, e.g.
    ``"histories.*.excess_loss"``); ``x`` is a sequence of x values, or the path (same
    ``*``) of an aggregated curve whose per-index maximum over seeds gives them (e.g.
    ``"histories.*.steps"``: the recorded steps of the longest run), or None (indices).
    ``xscale`` is matplotlib's (``"symlog"``: linear up to 1, then logarithmic).
    """
    from ..experiments.plotting import new_figure, save_figure

    np = backend.host_namespace()
    fig = new_figure((7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    low = math.inf  # smallest positive mean: a log axis starts a little below it
    for r in rows:
        for _, star, path_m in expand_metrics([metric], [k for k in r if k not in ("values", "replicates")]):
            stats = r.get(path_m)
            if not isinstance(stats, list) or not stats:
                continue
            if isinstance(x, str):
                xs_stats = r.get(x.replace("*", star)) or []
                xs = [s["max"] for s in xs_stats][: len(stats)] or list(range(len(stats)))
            else:
                xs = list(x[: len(stats)]) if x is not None else list(range(len(stats)))
            n = len(xs)
            mean = np.asarray([s["mean"] for s in stats[:n]])
            lo = np.asarray([s["lo"] for s in stats[:n]])
            hi = np.asarray([s["hi"] for s in stats[:n]])
            if (mean > 0).any():
                low = min(low, float(np.min(mean[mean > 0])))
            fields = label_fields if label_fields is not None else list(r["values"])
            parts = [star] if star else []
            parts += [f"{f}={r['values'][f]}" for f in fields]
            (line,) = ax.plot(np.asarray(xs, dtype=float), mean, label=", ".join(parts) + f" (n={r['replicates']})")
            if r["replicates"] > 1:
                ax.fill_between(np.asarray(xs, dtype=float), np.where(np.isfinite(lo), lo, mean),
                                np.where(np.isfinite(hi), hi, mean), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale(yscale)
    if yscale == "log" and math.isfinite(low):
        ax.set_ylim(bottom=0.5 * low)
    ax.set_xscale(xscale)
    if xscale == "symlog":
        ax.set_xlim(left=0)
    ax.set_xlabel(xlabel or ("step" if isinstance(x, str) or x is None else "x"))
    ax.set_ylabel(metric.split(".")[-1])
    ax.set_title(title or f"{metric}: mean and 95% confidence band over seeds", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
