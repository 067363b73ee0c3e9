"""How the report, the figures and MLflow show numbers: sizes, means with their interval,
rates, changes in %, cells and sets of cells.  Display only; the numbers come from
``sweep.stats`` (through ``sweep.analysis``)."""
from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from core.constants import format_size
from sweep.stats import METRICS_BY_NAME

# the required axes (sweep.config.REQUIRED_AXES) in the order a reader scans a set of
# cells: the limit first, then topology and mix; high last, and only when it varies
WHERE_ORDER = ("limit", "nodes", "mix", "order", "high")


def format_high(value) -> str:
    """memory.high of a cell: a ratio of the limit (<= 1) or a size."""
    return f"{value:g}" if value <= 1 else format_size(value)


def cell_label(row, with_high: bool = False) -> str:
    """Short human name of a cell: '64M o3 n2 kernel' (+ ' h0.75' when high varies)."""
    label = f"{format_size(row['limit'])} o{int(row['order'])} n{int(row['nodes'])} {row['mix']}"
    return f"{label} h{format_high(row['high'])}" if with_high else label


def where(cells: pd.DataFrame) -> str:
    """'limit 32M x3, 64M x1; nodes 2 x4; ...' — the axis values of a set of cells."""
    if cells.empty:
        return ""
    parts = []
    shown_as = {"limit": format_size, "high": format_high}
    for axis in WHERE_ORDER:
        counts = Counter(cells[axis])
        if axis == "high" and len(counts) == 1:
            continue                   # a scalar of the sweep, not an axis: nothing to say
        fmt = shown_as.get(axis, str)
        shown = ", ".join(f"{fmt(v)} x{n}" for v, n in sorted(counts.items(), key=lambda kv: kv[0]))
        parts.append(f"{axis} {shown}")
    return "; ".join(parts)


def metric_label(name: str) -> str:
    """'peak overshoot over memory.high (pages) [overshoot_high_peak_pages]'."""
    metric = METRICS_BY_NAME.get(name)
    return f"{metric.label} [{name}]" if metric else name


def num(x) -> str:
    """A number in a table: three significant digits, thousands separated, '-' for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def short(value: float) -> str:
    """A number on a figure: '1.2M', '35k', '120', '0.25'."""
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def mean(value, metric) -> str:
    """A pooled or cell mean: a share in % for a binary metric."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.1f} %" if metric.binary else num(value)


def mean_with_ci(row, metric) -> str:
    if metric.binary:
        return f"{row['mean'] * 100:.1f} % [{row['ci_lo'] * 100:.1f}, {row['ci_hi'] * 100:.1f}]"
    if row["ci_lo"] == row["ci_hi"]:
        return num(row["mean"])
    return f"{num(row['mean'])} [{num(row['ci_lo'])}, {num(row['ci_hi'])}]"


def change(row, metric) -> str:
    """candidate - baseline: percentage points for ENOMEM; % of the baseline mean, or the
    absolute difference ('d+3.2') where the baseline mean is 0 - never +inf%."""
    diff = row.get("diff_mean", math.nan)
    if diff is None or math.isnan(diff):
        return "-"
    if metric.binary:
        return f"{diff * 100:+.1f}pp" if diff else "0"
    base = row.get("base_mean", math.nan)
    if diff == 0:
        return "0"
    if not base:
        return f"d{diff:+.3g}"
    return f"{diff / abs(base) * 100:+.1f}%"


def rate(row, name: str) -> str:
    """``rate/<name>`` of an aggregates row with its Wilson interval."""
    value = row.get(f"rate/{name}", math.nan)
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f} [{row[f'rate/{name}/ci_lo']:.3f}, {row[f'rate/{name}/ci_hi']:.3f}]"


def value_range(counts: pd.Series) -> str:
    """'8', or '8-12' when the values differ."""
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"
