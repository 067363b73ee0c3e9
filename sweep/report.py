"""The sweep report: ``<sweep_dir>/report/`` with report.md, report.html, PNG plots and the
tables behind them (results.parquet, comparisons.parquet, aggregates.parquet).

Shape borrowed from mmtests' compare-kernels: baseline and candidate side by side, a
direction-aware "gain" (positive = the candidate is better, whichever way the metric
points), a significance mark, and a verdict roll-up per metric.  The numbers come from
``sweep.stats``; this module only lays them out.  ``python -m sweep report <dir>`` calls
:func:`build_report`, which rebuilds everything from the store without rerunning anything.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                 # files only; never a display
import matplotlib.pyplot as plt       # noqa: E402
import numpy as np                    # noqa: E402
import pandas as pd                   # noqa: E402
from omegaconf import OmegaConf       # noqa: E402

from sweep import stats               # noqa: E402

REPORT_DIR = "report"
COMPARISONS = "comparisons.parquet"
AGGREGATES = "aggregates.parquet"
RESULTS = "results.parquet"
RATE_COLUMNS = {"enomem_workloads": "ENOMEM workloads", "oom_kill_workloads": "OOM-killed workloads",
                "slub_order_fallback": "ORDER_FALLBACK / high-order try",
                "nowait_fallback": "NOWAIT fallbacks / NOWAIT requests",
                "alloc_kernel_failure": "GFP_KERNEL failures / requests"}


# ---------------------------------------------------------------- entry point

def build_report(sweep_dir: Path, results: pd.DataFrame | None = None) -> Path:
    """Write ``<sweep_dir>/report/`` from the results store (or ``results``); returns it."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    df = results if results is not None else load_results(sweep_dir)
    if df.empty:
        raise ValueError(f"{sweep_dir}: no results to report")
    cfg, meta = read_config(sweep_dir), read_meta(sweep_dir)
    alpha, correction = stats.significance_settings(cfg.get("stats"))
    table = stats.compare_cells(df, alpha=alpha, correction=correction)
    aggregates = stats.aggregate(df, alpha)
    df.to_parquet(out / RESULTS, index=False)
    table.to_parquet(out / COMPARISONS, index=False)
    aggregates.to_parquet(out / AGGREGATES, index=False)
    images = draw_plots(df, table, out, alpha)
    blocks = report_blocks(df, table, aggregates, cfg, meta, alpha, correction, images)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, title=f"kmemcg-sweep: {sweep_name(cfg, meta)}"))
    return out


def load_results(sweep_dir: Path) -> pd.DataFrame:
    from sweep.store import Store

    with Store(Path(sweep_dir) / "results.sqlite") as store:
        return store.dataframe()


def read_config(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.exists() else {}


def read_meta(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    return json.loads(path.read_text()) if path.exists() else {}


def sweep_name(cfg: dict, meta: dict) -> str:
    return str(cfg.get("name") or meta.get("name") or "unnamed sweep")


def is_current(sweep_dir: Path) -> bool:
    """True when the report's tables are newer than every file of the results store."""
    sweep_dir = Path(sweep_dir)
    tables = [sweep_dir / REPORT_DIR / name for name in (COMPARISONS, AGGREGATES, RESULTS)]
    if not all(t.exists() for t in tables):
        return False
    store = [p for p in sweep_dir.glob("results.sqlite*")]
    newest_result = max((p.stat().st_mtime for p in store), default=0.0)
    return min(t.stat().st_mtime for t in tables) >= newest_result


# ---------------------------------------------------------------- document model

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    row_class: list[str] | None = None     # per row, for colouring the HTML


@dataclass
class Image:
    file: str
    alt: str


def report_blocks(df, table, aggregates, cfg, meta, alpha, correction, images) -> list:
    blocks = [Heading(1, f"kmemcg-sweep report: {sweep_name(cfg, meta)}"),
              Table(run_facts(df, cfg, meta)),
              Para(method_text(alpha, correction))]
    warning = stats.sweep_power_warning(table, alpha, correction)
    if warning:
        blocks.append(Para(f"Warning: {warning}"))
    blocks += verdict_section(table)
    blocks += comparison_section(table, alpha)
    blocks += rates_section(aggregates, df)
    blocks += [Heading(2, "Plots")] + [Image(file, alt) for file, alt in images]
    return blocks


def run_facts(df: pd.DataFrame, cfg: dict, meta: dict) -> pd.DataFrame:
    ok = int((df["status"] == "ok").sum())
    facts = {
        "model version": meta.get("model_version", "?"),
        "git commit": meta.get("git_commit", "?"),
        "host": meta.get("host", "?"),
        "Ray CPUs": meta.get("ray_cpus", "?"),
        "started / finished": f"{meta.get('started', '?')} / {meta.get('finished', '?')}",
        "designs": ", ".join(sorted(df["design"].unique())),
        "cells": df["cell_id"].nunique(),
        "workloads": f"{len(df)} ({ok} ok, {len(df) - ok} errors)",
        "replications per cell": _range_text(df.groupby("cell_id")["replication"].nunique()),
        "root seed": cfg.get("seed", "?"),
    }
    return pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]})


def method_text(alpha: float, correction: str) -> str:
    chosen = "Holm" if stats.correction_method(correction) == "holm" else "Benjamini-Hochberg"
    return (f"Designs are compared pairwise by seed within each cell (replication r ran the same "
            f"request stream under every design). ENOMEM: McNemar exact test on the discordant "
            f"pairs, Wilson {1 - alpha:.0%} intervals on each rate. Continuous metrics: Wilcoxon "
            f"signed-rank test, BCa bootstrap {1 - alpha:.0%} CI of the mean paired difference. "
            f"p-values are adjusted across cells, separately for each comparison and metric, by "
            f"Holm (family-wise) and Benjamini-Hochberg (false discovery rate); verdicts use "
            f"{chosen} at alpha = {alpha}. Every metric is lower-is-better; 'gain' is the "
            f"candidate's improvement over the baseline in % of the baseline mean (positive = "
            f"better, mmtests convention), '*' marks a significant difference.")


def verdict_section(table: pd.DataFrame) -> list:
    blocks = [Heading(2, "Verdicts"),
              Para("Cells where the candidate is significantly better / worse than the baseline, "
                   "and where they are.")]
    summary = stats.summarize_verdicts(table)
    if summary.empty:
        return blocks + [Para("Nothing to compare: the sweep ran a single design.")]
    for (baseline, candidate), part in summary.groupby(["baseline", "candidate"], sort=False):
        frame = pd.DataFrame({
            "metric": part["metric"].map(_metric_label),
            "better": part["better"], "worse": part["worse"],
            "indistinguishable": part["indistinguishable"], "untestable": part["untestable"],
            "where better": part["where_better"], "where worse": part["where_worse"]})
        classes = ["better" if b and not w else "worse" if w and not b else ""
                   for b, w in zip(part["better"], part["worse"])]
        blocks += [Heading(3, f"{candidate} vs {baseline}"), Table(frame, classes)]
    return blocks


def comparison_section(table: pd.DataFrame, alpha: float) -> list:
    blocks = [Heading(2, "Baseline vs candidate, per cell")]
    with_high = table["high"].nunique() > 1
    for (baseline, candidate), part in table.groupby(["baseline", "candidate"], sort=False):
        blocks.append(Heading(3, f"{candidate} vs {baseline}"))
        for metric, rows in part.groupby("metric", sort=False):
            blocks += [Heading(4, f"{_metric_label(metric)} (lower is better)"),
                       Table(comparison_table(rows, baseline, candidate, alpha, with_high),
                             list(rows["verdict"]))]
    return blocks


def comparison_table(rows: pd.DataFrame, baseline: str, candidate: str, alpha: float,
                     with_high: bool = False) -> pd.DataFrame:
    binary = stats.METRICS_BY_NAME.get(rows["metric"].iloc[0], stats.ENOMEM).binary
    marks = np.where(rows[rows["correction"].iloc[0]] < alpha, " *", "")
    frame = pd.DataFrame({
        "cell": [stats.cell_label(r, with_high) for _, r in rows.iterrows()],
        "n": rows["n_pairs"].astype(int),
        baseline: [_value(r, "base", binary) for _, r in rows.iterrows()],
        candidate: [_value(r, "cand", binary) + m for (_, r), m in zip(rows.iterrows(), marks)],
        "gain": [_gain(r) for _, r in rows.iterrows()],
        f"diff ({1 - alpha:.0%} CI)": [_diff(r) for _, r in rows.iterrows()],
        "p": rows["p_value"].map(_p), "p Holm": rows["p_holm"].map(_p), "p BH": rows["p_bh"].map(_p),
        "verdict": rows["verdict"]})
    return frame


def rates_section(aggregates: pd.DataFrame, df: pd.DataFrame) -> list:
    with_high = df["high"].nunique() > 1
    axes = stats.cell_axes(df)
    frame = pd.DataFrame({
        "cell": [stats.cell_label(axes.loc[c], with_high) for c in aggregates["cell_id"]],
        "design": aggregates["design"], "ok / runs": [
            f"{int(ok)} / {int(n)}" for ok, n in zip(aggregates["n_ok"], aggregates["n_workloads"])]})
    for name, label in RATE_COLUMNS.items():
        frame[label] = [_rate(r, name) for _, r in aggregates.iterrows()]
    return [Heading(2, "Rates per design (Wilson intervals)"), Table(frame)]


# ---------------------------------------------------------------- cell formatting

def _metric_label(name: str) -> str:
    metric = stats.METRICS_BY_NAME.get(name)
    return f"{metric.label} [{name}]" if metric else name


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}"


def _value(row, side: str, binary: bool) -> str:
    """Mean of one side; a rate with its Wilson interval for the binary metric."""
    mean = row[f"{side}_mean"]
    if binary and not math.isnan(row.get(f"{side}_ci_lo", math.nan)):
        return f"{mean:.3f} [{row[f'{side}_ci_lo']:.3f}, {row[f'{side}_ci_hi']:.3f}]"
    return _num(mean)


def _gain(row) -> str:
    change = row.get("pct_change", math.nan)
    if change is None or math.isnan(change):
        return "-"
    lower_better = stats.METRICS_BY_NAME.get(row["metric"], stats.ENOMEM).lower_is_better
    gain = (-change if lower_better else change) + 0.0      # + 0.0: no "-0.00%"
    return f"{gain:+.2f}%" if math.isfinite(gain) else ("+inf%" if gain > 0 else "-inf%")


def _diff(row) -> str:
    lo, hi = row.get("diff_ci_lo", math.nan), row.get("diff_ci_hi", math.nan)
    return f"{_num(row['diff_mean'])} [{_num(lo)}, {_num(hi)}]"


def _p(p) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.3g}"


def _rate(row, name: str) -> str:
    rate = row.get(f"rate/{name}", math.nan)
    if math.isnan(rate):
        return "-"
    return f"{rate:.3f} [{row[f'rate/{name}/ci_lo']:.3f}, {row[f'rate/{name}/ci_hi']:.3f}]"


def _range_text(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


# ---------------------------------------------------------------- renderers

def to_markdown(blocks: list) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(_markdown_table(block.frame))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.file})")
    return "\n\n".join(parts) + "\n"


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td:first-child { text-align: left; }
tr.better td { background: #e3f5e1; } tr.worse td { background: #fbe3e1; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def to_html(blocks: list, title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_html_table(block.frame, block.row_class))
        elif isinstance(block, Image):
            parts.append(f"<figure><img src='{html.escape(block.file)}' alt='{html.escape(block.alt)}'>"
                         f"<figcaption>{html.escape(block.alt)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_table(frame: pd.DataFrame, row_class: list[str] | None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    classes = row_class or [""] * len(frame)
    rows = []
    for cls, values in zip(classes, frame.itertuples(index=False)):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in values)
        rows.append(f"<tr class='{html.escape(cls)}'>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ---------------------------------------------------------------- plots

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
    row_keys = ["mix"] + (["high"] if rows["high"].nunique() > 1 else [])
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
    ax.set_title(f"{_metric_label(rows['metric'].iloc[0])}\n{candidate} vs {baseline} "
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
