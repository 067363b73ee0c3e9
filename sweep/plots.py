"""The report's PNG plots (matplotlib, Agg backend: files only, never a display).

* ``failure_rate_vs_limit.png``: share of workloads with a user-visible ENOMEM against
  memory.max, one line per design with its Wilson band, one panel per mix;
* ``effect_<metric>__<candidate>_vs_<baseline>.png``: the paired effect per cell as a
  heatmap over memory.max x NUMA nodes, one panel per mix and slab order.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt       # noqa: E402
import numpy as np                    # noqa: E402
import pandas as pd                   # noqa: E402

from sweep import stats               # noqa: E402


def draw_plots(df: pd.DataFrame, table: pd.DataFrame, out: Path, alpha: float) -> list[tuple[str, str]]:
    """Write every PNG; returns (file name, caption) in report order."""
    for stale in out.glob("*.png"):
        stale.unlink()                  # plots of metrics or designs no longer in the sweep
    images = [(plot_failure_rate(df, out / "failure_rate_vs_limit.png", alpha),
               f"Share of workloads with a user-visible ENOMEM against memory.max, per design "
               f"(pooled over orders and node counts), with Wilson {1 - alpha:.0%} bands")]
    for (baseline, candidate, metric), rows in table.groupby(["baseline", "candidate", "metric"], sort=False):
        name = f"effect_{metric}__{candidate}_vs_{baseline}.png".replace("/", "_")
        plot_effect_heatmap(rows, out / name, alpha, baseline, candidate)
        label = stats.METRICS_BY_NAME[metric].label if metric in stats.METRICS_BY_NAME else metric
        images.append((name, f"{label}: {candidate} vs {baseline}, paired effect "
                             f"over memory.max x NUMA nodes, one panel per mix and order"))
    return images


def plot_failure_rate(df: pd.DataFrame, path: Path, alpha: float) -> str:
    values = stats.workload_values(df)
    mixes = sorted(values["mix"].unique())
    cols = min(3, len(mixes))
    rows = math.ceil(len(mixes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, mix in zip(axes.flat, mixes):
        part = values[values["mix"] == mix]
        designs = sorted(part["design"].unique())
        for i, (design, by_design) in enumerate(part.groupby("design", sort=True)):
            counts = by_design.groupby("limit")["enomem"].agg(["sum", "count"])
            bounds = np.array([stats.wilson(k, n, alpha) for k, n in zip(counts["sum"], counts["count"])])
            # nudge the designs apart so equal rates do not hide each other
            x = _limit_positions(counts.index) + (i - (len(designs) - 1) / 2) * 0.05
            ax.plot(x, counts["sum"] / counts["count"], marker="o", label=design)
            ax.fill_between(x, bounds[:, 0], bounds[:, 1], alpha=0.2)
        ax.set_xticks(_limit_positions(sorted(part["limit"].unique())),
                      [stats.format_size(v) for v in sorted(part["limit"].unique())])
        ax.set_title(mix)
        ax.set_xlabel("memory.max")
        ax.set_ylim(-0.02, 1.02)
    for ax in axes.flat[len(mixes):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("workloads with ENOMEM")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _limit_positions(limits) -> np.ndarray:
    """log2 of the limit; 'max' (inf) one step right of the largest finite limit."""
    limits = np.asarray(list(limits), dtype=float)
    finite = limits[np.isfinite(limits)]
    top = np.log2(finite.max()) + 1 if finite.size else 0.0
    return np.where(np.isfinite(limits), np.log2(np.where(np.isfinite(limits), limits, 1)), top)


def effect_values(rows: pd.DataFrame) -> pd.Series:
    """What a heatmap cell shows: ENOMEM in percentage points, the rest in % of the baseline."""
    if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary:
        return rows["diff_mean"] * 100.0
    return rows["pct_change"].astype(float)


def plot_effect_heatmap(rows: pd.DataFrame, path: Path, alpha: float, baseline: str, candidate: str) -> None:
    """Panels of limit (x) x nodes (y): one panel row per mix (and high, when it varies),
    one panel column per order.  Drawn as ONE image with blank gaps between panels: a
    figure of 21 separate axes took ~4 s to render, this takes a fraction of that."""
    rows = rows.assign(effect=effect_values(rows).to_numpy(),
                       significant=(rows[rows["correction"].iloc[0]] < alpha).to_numpy(dtype=float))
    # cells of different blocks (or allocators, CPU counts, fragmentation) may share
    # limit/nodes/order/mix: such axes become panel rows when they vary
    row_keys = ["mix"] + [k for k in ("high", "block", "allocator", "cpus", "fragment")
                          if k in rows and rows[k].nunique(dropna=True) > 1]
    panel_rows = sorted(rows[row_keys].drop_duplicates().itertuples(index=False, name=None))
    orders, limits, nodes = (sorted(rows[c].unique()) for c in ("order", "limit", "nodes"))
    height, width = len(nodes) + 1, len(limits) + 1          # a panel plus its gap
    effect = np.full((len(panel_rows) * height - 1, len(orders) * width - 1), np.nan)
    significant = np.zeros_like(effect, dtype=bool)
    for r, key in enumerate(panel_rows):
        for c, order in enumerate(orders):
            part = rows[(rows["order"] == order) & _matches(rows, row_keys, key)]
            block = (slice(r * height, r * height + len(nodes)), slice(c * width, c * width + len(limits)))
            effect[block] = _nodes_by_limits(part, "effect", nodes, limits)
            significant[block] = _nodes_by_limits(part, "significant", nodes, limits) == 1
    unit = "pp" if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary else "%"
    # fixed margins in inches (labels left, colour bar right): no second "tight" layout pass
    width_in, height_in = 0.55 * effect.shape[1], 0.32 * effect.shape[0]
    left, right, top, bottom = 1.6, 1.4, 1.0, 0.4
    fig = plt.figure(figsize=(left + width_in + right, top + height_in + bottom))
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width_in / fig_w, height_in / fig_h))
    bar = fig.add_axes(((left + width_in + 0.2) / fig_w, bottom / fig_h, 0.15 / fig_w, height_in / fig_h))
    cmap = matplotlib.colormaps["RdYlGn_r"].with_extremes(bad="white")
    image = ax.imshow(np.clip(effect, -100, 100), cmap=cmap, vmin=-100, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(effect):
        if not math.isnan(value):
            text = _effect_text(value, unit) + ("*" if significant[i, j] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6)
    ax.set_xticks([c * width + k for c in range(len(orders)) for k in range(len(limits))],
                  [stats.format_size(v) for _ in orders for v in limits], fontsize=6)
    ax.set_yticks([r * height + k for r in range(len(panel_rows)) for k in range(len(nodes))],
                  [f"{_row_text(row_keys, key)} n{n}" for key in panel_rows for n in nodes], fontsize=6)
    for c, order in enumerate(orders):
        ax.text(c * width + (len(limits) - 1) / 2, -0.9, f"order {order}", ha="center", fontsize=7)
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    label = "ENOMEM share, candidate - baseline (pp)" if unit == "pp" else "mean change vs baseline (%)"
    fig.colorbar(image, cax=bar, label=label)
    ax.set_title(f"{stats.metric_label(rows['metric'].iloc[0])}\n{candidate} vs {baseline} "
                 f"(red: {candidate} worse; * significant)", fontsize=8, pad=22)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _matches(rows: pd.DataFrame, keys: list[str], values: tuple) -> pd.Series:
    mask = pd.Series(True, index=rows.index)
    for key, value in zip(keys, values):
        mask &= rows[key] == value
    return mask


def _row_text(keys: list[str], values: tuple) -> str:
    return " ".join(_panel_text(k, v) for k, v in zip(keys, values))


def _nodes_by_limits(part: pd.DataFrame, column: str, nodes, limits) -> np.ndarray:
    """A nodes x limits array of one column (NaN where a cell is missing)."""
    wanted = pd.MultiIndex.from_product([nodes, limits], names=["nodes", "limit"])
    values = part.set_index(["nodes", "limit"])[column].astype(float)
    return values.reindex(wanted).to_numpy().reshape(len(nodes), len(limits))


def _effect_text(value: float, unit: str) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return "0" if value == 0 else f"{value:+.0f}{unit}"


def _panel_text(axis: str, value) -> str:
    if axis == "high":
        return f"high {stats.format_high(value)}"
    return str(value) if axis == "mix" else f"{axis} {value}"
