"""The report's PNG figures (matplotlib, Agg backend: files only, never a display).

* ``summary.png`` (top of the report): one panel per key metric, one bar per design with
  its pooled mean and CI; metrics that are zero everywhere are left out (named in the text);
* ``claim_<id>.png`` (next to each claim): the claim's paired effect per tested cell, with
  its CI, coloured by whether the cell holds the claim, goes against it, or neither;
* ``effect_<metric>__<candidate>_vs_<baseline>.png``: the paired effect per cell as a
  heatmap over memory.max x NUMA nodes, one panel per mix and slab order - only for the
  comparisons with a significant cell, so no plot is blank;
* ``failure_rate_vs_limit.png``: share of workloads with a user-visible ENOMEM against
  memory.max, per design with Wilson bands, one panel per mix - only when some workload
  saw an ENOMEM.

Sign convention as in the report: candidate - baseline, negative (green) = the candidate
is better.  Figures are drawn at 130 dpi with 8-9 pt labels, legible at 100 % zoom.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt       # noqa: E402
import numpy as np                    # noqa: E402
import pandas as pd                   # noqa: E402

from sweep import stats               # noqa: E402

DPI = 130
FONT = 8
DESIGN_COLOURS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
CLAIM_ROWS_MAX = 48                   # a forest plot beyond that is unreadable: largest effects
# axes of the store beyond stats.AXES (config blocks may vary them); shown only where they vary
EXTRA_AXES = {"allocator": str, "cpus": lambda v: f"{int(v)}cpu", "fragment": lambda v: f"frag{v:g}"}


def all_axes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id: stats.AXES plus the extra axes (and block) the store has."""
    columns = [c for c in (*stats.AXES, *EXTRA_AXES, "block") if c in df.columns]
    return df.groupby("cell_id", sort=True)[columns].first()


def varying_extra_axes(axes: pd.DataFrame) -> list[str]:
    return [a for a in EXTRA_AXES if a in axes and axes[a].dropna().nunique() > 1]


def cell_labels(df: pd.DataFrame) -> dict[str, str]:
    """cell_id -> '64M o3 n2 kernel' (+ high, allocator, cpus, fragment where they vary;
    + the block when two cells of different blocks would still read the same)."""
    axes = all_axes(df)
    with_high = axes["high"].nunique() > 1
    extra = varying_extra_axes(axes)
    labels = {}
    for cell_id, row in axes.iterrows():
        parts = [stats.cell_label(row, with_high)]
        parts += [EXTRA_AXES[a](row[a]) for a in extra if pd.notna(row[a])]
        labels[cell_id] = " ".join(parts)
    seen = pd.Series(labels).value_counts()
    if (seen > 1).any() and "block" in axes:
        labels = {c: f"{text} [{axes.loc[c, 'block']}]" if seen[text] > 1 else text for c, text in labels.items()}
    return labels


@dataclass
class Figure:
    file: str
    caption: str


@dataclass
class Figures:
    summary: Figure | None = None
    failure_rate: Figure | None = None
    claims: dict[str, Figure] = field(default_factory=dict)
    heatmaps: dict[tuple[str, str, str], Figure] = field(default_factory=dict)

    def all(self) -> list[Figure]:
        return [f for f in (self.summary, self.failure_rate) if f] + list(self.claims.values()) \
            + list(self.heatmaps.values())


def draw_plots(df: pd.DataFrame, table: pd.DataFrame, pooled: pd.DataFrame, verdicts: list, out: Path,
               alpha: float) -> Figures:
    """Write every PNG; returns what was drawn, with captions."""
    for stale in out.glob("*.png"):
        stale.unlink()                  # plots of metrics or designs no longer in the sweep
    plt.rcParams.update({"font.size": FONT})
    figures = Figures()
    figures.summary = plot_summary(pooled, out / "summary.png", alpha)
    figures.failure_rate = plot_failure_rate(df, out / "failure_rate_vs_limit.png", alpha)
    for verdict in verdicts:
        figure = plot_claim(verdict, table, df, out, alpha)
        if figure:
            figures.claims[verdict.claim.id] = figure
    if len(table):
        extra = all_axes(df)[varying_extra_axes(all_axes(df))]
        table = table.join(extra, on="cell_id") if len(extra.columns) else table
        significant = table[table[table["correction"].iloc[0]] < alpha]
        for (baseline, candidate, metric), rows in table.groupby(["baseline", "candidate", "metric"], sort=False):
            if not ((significant["baseline"] == baseline) & (significant["candidate"] == candidate)
                    & (significant["metric"] == metric)).any():
                continue
            name = f"effect_{metric}__{candidate}_vs_{baseline}.png".replace("/", "_")
            plot_effect_heatmap(rows, out / name, alpha, baseline, candidate)
            figures.heatmaps[(baseline, candidate, metric)] = Figure(
                name, f"{_label(metric)}: {candidate} vs {baseline}, paired effect per cell "
                      f"(memory.max across, NUMA nodes down; one panel per mix and slab order)")
    return figures


def _label(metric: str) -> str:
    m = stats.METRICS_BY_NAME.get(metric)
    return m.label if m else metric


def _colours(designs) -> dict[str, str]:
    return {d: DESIGN_COLOURS[i % len(DESIGN_COLOURS)] for i, d in enumerate(designs)}


# ---------------------------------------------------------------- summary: designs x key metrics

def plot_summary(pooled: pd.DataFrame, path: Path, alpha: float) -> Figure | None:
    shown = [m for m in stats.KEY_METRICS
             if ((pooled["metric"] == m.name) & ~pooled["all_zero"]).any()]
    if not shown:
        return None
    designs = list(dict.fromkeys(pooled["design"]))
    colours = _colours(designs)
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, shown):
        part = pooled[pooled["metric"] == metric.name].set_index("design").reindex(designs)
        scale = 100.0 if metric.binary else 1.0
        means = part["mean"].to_numpy(dtype=float) * scale
        err = np.abs(np.vstack([means - part["ci_lo"].to_numpy(dtype=float) * scale,
                                part["ci_hi"].to_numpy(dtype=float) * scale - means]))
        best = int(np.nanargmin(means)) if np.sum(np.isclose(means, np.nanmin(means), rtol=5e-3)) == 1 else -1
        bars = ax.bar(range(len(designs)), means, yerr=err, capsize=3,
                      color=[colours[d] for d in designs], edgecolor=["black" if i == best else "none"
                                                                       for i in range(len(designs))])
        ax.bar_label(bars, [_short(v) for v in means], fontsize=FONT - 1, padding=2)
        ax.set_xticks(range(len(designs)), designs)
        ax.set_title("\n".join(textwrap.wrap(metric.label + (" (%)" if metric.binary else ""), 34)),
                     fontsize=FONT)
        ax.margins(y=0.18)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(f"Pooled mean per design with {1 - alpha:.0%} CI (lower is better; outlined: lowest)",
                 fontsize=FONT + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Figure(path.name, f"Every key metric per design: the mean over all workloads of the sweep with "
                             f"its {1 - alpha:.0%} CI; lower is better, the lowest is outlined")


def _short(value: float) -> str:
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


# ---------------------------------------------------------------- a claim's evidence

def plot_claim(verdict, table: pd.DataFrame, df: pd.DataFrame, out: Path, alpha: float) -> Figure | None:
    """Forest plot of the claim's metric, b - a per tested cell (as the claim reads)."""
    claim = verdict.claim
    if not verdict.cells_tested or table.empty:
        return None
    a, b = claim.compare
    rows = _oriented(table[table["metric"] == claim.metric], a, b)
    rows = rows[rows["cell_id"].isin(verdict.cells_tested)]
    if rows.empty:
        return None
    binary = stats.METRICS_BY_NAME.get(claim.metric, stats.ENOMEM).binary if claim.metric in stats.METRICS_BY_NAME \
        else False
    scale = 100.0 if binary else 1.0
    rows = rows.assign(effect=rows["diff"] * scale, lo=rows["lo"] * scale, hi=rows["hi"] * scale)
    dropped = 0
    if len(rows) > CLAIM_ROWS_MAX:
        dropped = len(rows) - CLAIM_ROWS_MAX
        rows = rows.reindex(rows["effect"].abs().sort_values(ascending=False).index[:CLAIM_ROWS_MAX])
    rows = rows.sort_values("effect")
    holding, against = set(verdict.cells_holding), set(verdict.cells_against)
    colour = ["#2ca02c" if c in holding else "#d62728" if c in against else "#7f7f7f" for c in rows["cell_id"]]
    names = cell_labels(df)
    labels = [names[c] for c in rows["cell_id"]]
    height = 1.3 + 0.2 * len(rows)
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = np.arange(len(rows))
    lo = np.where(np.isfinite(rows["lo"]), rows["lo"], rows["effect"])
    hi = np.where(np.isfinite(rows["hi"]), rows["hi"], rows["effect"])
    ax.errorbar(rows["effect"], y, xerr=[rows["effect"] - lo, hi - rows["effect"]], fmt="none",
                ecolor="#999999", elinewidth=1, capsize=2)
    ax.scatter(rows["effect"], y, c=colour, zorder=3, s=18)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=FONT - 1)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    unit = "percentage points" if binary else (verdict.unit or "metric unit")
    ax.set_xlabel(f"{b} - {a}, mean paired difference ({unit}) with {1 - alpha:.0%} CI")
    expect = f"{a} {'<' if claim.expect == 'a<b' else '>'} {b}"
    ax.set_title(f"{claim.id}: {verdict.verdict} (expected {expect})\n"
                 f"green: cell holds the claim, red: against, grey: no significant difference",
                 fontsize=FONT)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    name = f"claim_{_file_part(claim.id)}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    more = f"; the {dropped} cells with the smallest effects are left out" if dropped else ""
    return Figure(name, f"{claim.id}: {_label(claim.metric)}, {b} - {a} per tested cell{more}")


def _oriented(rows: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Comparison rows as b - a (the table stores candidate - baseline in its own order)."""
    forward = rows[(rows["baseline"] == a) & (rows["candidate"] == b)]
    if len(forward):
        return pd.DataFrame({"cell_id": forward["cell_id"], "diff": forward["diff_mean"],
                             "lo": forward.get("diff_ci_lo", np.nan), "hi": forward.get("diff_ci_hi", np.nan)})
    back = rows[(rows["baseline"] == b) & (rows["candidate"] == a)]
    return pd.DataFrame({"cell_id": back["cell_id"], "diff": -back["diff_mean"],
                         "lo": -back.get("diff_ci_hi", np.nan), "hi": -back.get("diff_ci_lo", np.nan)})


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))


# ---------------------------------------------------------------- ENOMEM against the limit

def plot_failure_rate(df: pd.DataFrame, path: Path, alpha: float) -> Figure | None:
    values = stats.workload_values(df)
    if not values["enomem"].any():
        return None                      # flat zero lines say nothing: the text says it
    mixes = sorted(values["mix"].unique())
    cols = min(4, len(mixes))
    rows = math.ceil(len(mixes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharey=True)
    designs = sorted(values["design"].unique())
    colours = _colours([stats.BASELINE] + [d for d in designs if d != stats.BASELINE])
    for ax, mix in zip(axes.flat, mixes):
        part = values[values["mix"] == mix]
        for i, (design, by_design) in enumerate(part.groupby("design", sort=True)):
            counts = by_design.groupby("limit")["enomem"].agg(["sum", "count"])
            bounds = np.array([stats.wilson(k, n, alpha) for k, n in zip(counts["sum"], counts["count"])])
            # nudge the designs apart so equal rates do not hide each other
            x = _limit_positions(counts.index) + (i - (len(designs) - 1) / 2) * 0.05
            ax.plot(x, counts["sum"] / counts["count"] * 100, marker="o", label=design, color=colours[design])
            ax.fill_between(x, bounds[:, 0] * 100, bounds[:, 1] * 100, alpha=0.2, color=colours[design])
        limits = sorted(part["limit"].unique())
        ax.set_xticks(_limit_positions(limits), [stats.format_size(v) for v in limits])
        ax.set_title(mix, fontsize=FONT + 1)
        ax.set_xlabel("memory.max")
        ax.set_ylim(-2, 102)
    for ax in axes.flat[len(mixes):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r, 0].set_ylabel("workloads with ENOMEM (%)")
    axes[0, 0].legend(fontsize=FONT)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Figure(path.name, f"Share of workloads with a user-visible ENOMEM against memory.max, per design "
                             f"(pooled over orders and node counts), with Wilson {1 - alpha:.0%} bands")


def _limit_positions(limits) -> np.ndarray:
    """log2 of the limit; 'max' (inf) one step right of the largest finite limit."""
    limits = np.asarray(list(limits), dtype=float)
    finite = limits[np.isfinite(limits)]
    top = np.log2(finite.max()) + 1 if finite.size else 0.0
    return np.where(np.isfinite(limits), np.log2(np.where(np.isfinite(limits), limits, 1)), top)


# ---------------------------------------------------------------- paired effect per cell

def effect_values(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(colour value, absolute?) per row: ENOMEM in percentage points; the rest in % of the
    baseline mean, or - where the baseline mean is 0 - the absolute difference (coloured at
    full strength by its sign, never +inf%)."""
    diff = rows["diff_mean"].to_numpy(dtype=float)
    if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary:
        return diff * 100.0, np.zeros(len(rows), dtype=bool)
    base = rows["base_mean"].to_numpy(dtype=float)
    absolute = (base == 0) & (diff != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(base != 0, diff / np.abs(base) * 100.0, 0.0)
    return np.where(absolute, np.sign(diff) * 100.0, pct), absolute


def plot_effect_heatmap(rows: pd.DataFrame, path: Path, alpha: float, baseline: str, candidate: str) -> None:
    """Panels of limit (x) x nodes (y): one panel row per mix (and high, when it varies),
    one panel column per order.  Drawn as ONE image with blank gaps between panels: a
    figure of 21 separate axes took ~4 s to render, this takes a fraction of that."""
    colour_values, absolute = effect_values(rows)
    rows = rows.assign(effect=colour_values, absolute=absolute.astype(float),
                       label_value=np.where(absolute, rows["diff_mean"], colour_values),
                       significant=(rows[rows["correction"].iloc[0]] < alpha).to_numpy(dtype=float))
    row_keys = ["mix"] + (["high"] if rows["high"].nunique() > 1 else []) \
        + [a for a in EXTRA_AXES if a in rows.columns]
    panel_rows = sorted(rows[row_keys].drop_duplicates().itertuples(index=False, name=None))
    orders, limits, nodes = (sorted(rows[c].unique()) for c in ("order", "limit", "nodes"))
    height, width = len(nodes) + 1, len(limits) + 1          # a panel plus its gap
    shape = (len(panel_rows) * height - 1, len(orders) * width - 1)
    grids = {k: np.full(shape, np.nan) for k in ("effect", "absolute", "label_value", "significant")}
    for r, key in enumerate(panel_rows):
        for c, order in enumerate(orders):
            part = rows[(rows["order"] == order) & _matches(rows, row_keys, key)]
            block = (slice(r * height, r * height + len(nodes)), slice(c * width, c * width + len(limits)))
            for name, grid in grids.items():
                grid[block] = _nodes_by_limits(part, name, nodes, limits)
    unit = "pp" if stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary else "%"
    # fixed margins in inches (labels left, colour bar right): no second "tight" layout pass
    width_in, height_in = 0.72 * shape[1], 0.36 * shape[0]
    left, right, top, bottom = 2.0, 1.6, 1.15, 0.5
    fig = plt.figure(figsize=(left + width_in + right, top + height_in + bottom))
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width_in / fig_w, height_in / fig_h))
    bar = fig.add_axes(((left + width_in + 0.25) / fig_w, bottom / fig_h, 0.18 / fig_w, height_in / fig_h))
    cmap = matplotlib.colormaps["RdYlGn_r"].with_extremes(bad="white")
    image = ax.imshow(np.clip(grids["effect"], -100, 100), cmap=cmap, vmin=-100, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(grids["label_value"]):
        if not math.isnan(value):
            text = _effect_text(value, unit, grids["absolute"][i, j] == 1)
            dark = abs(grids["effect"][i, j]) > 60          # white on the deep ends of the scale
            ax.text(j, i, text + ("*" if grids["significant"][i, j] == 1 else ""), ha="center", va="center",
                    fontsize=FONT - 0.5, color="white" if dark else "black")
    ax.set_xticks([c * width + k for c in range(len(orders)) for k in range(len(limits))],
                  [stats.format_size(v) for _ in orders for v in limits], fontsize=FONT)
    ax.set_yticks([r * height + k for r in range(len(panel_rows)) for k in range(len(nodes))],
                  [f"{_row_text(row_keys, key)}  n{n}" for key in panel_rows for n in nodes], fontsize=FONT)
    for c, order in enumerate(orders):
        ax.text(c * width + (len(limits) - 1) / 2, -0.9, f"slab order {order}", ha="center", fontsize=FONT + 1)
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    label = (f"ENOMEM share, {candidate} - {baseline} (pp)" if unit == "pp"
             else f"{candidate} - {baseline}, % of {baseline}")
    fig.colorbar(image, cax=bar, label=label)
    title = (f"{candidate} vs {baseline}: green = {candidate} lower (better), red = higher; "
             f"* significant; d = absolute difference (baseline 0)")
    wrap = max(40, int(fig_w * 13))
    ax.set_title("\n".join(textwrap.wrap(stats.metric_label(rows["metric"].iloc[0]), wrap)
                           + textwrap.wrap(title, wrap)), fontsize=FONT + 1, pad=24)
    fig.savefig(path, dpi=DPI)
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
    values = part.groupby(["nodes", "limit"])[column].first().astype(float)
    return values.reindex(wanted).to_numpy().reshape(len(nodes), len(limits))


def _effect_text(value: float, unit: str, absolute: bool = False) -> str:
    if math.isnan(value):
        return ""
    if value == 0:
        return "0"
    if absolute:
        return "d" + _short(value) if value < 0 else "d+" + _short(value)
    return f"{round(value):+d}{unit}" if round(value) else f"0{unit}"


def _panel_text(axis: str, value) -> str:
    if axis == "high":
        return f"high {stats.format_high(value)}"
    if axis in EXTRA_AXES:
        return EXTRA_AXES[axis](value) if pd.notna(value) else ""
    return str(value) if axis == "mix" else f"{axis} {value}"
