"""The sweep report: ``<sweep_dir>/report/`` with report.md, report.html, PNG plots and the
tables behind them (results.parquet, comparisons.parquet, aggregates.parquet); the plots
are drawn by ``sweep.plots``.

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

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sweep import stats
from sweep.plots import draw_plots

REPORT_DIR = "report"
COMPARISONS = "comparisons.parquet"
AGGREGATES = "aggregates.parquet"
RESULTS = "results.parquet"
RATE_COLUMNS = {"enomem_workloads": "ENOMEM workloads", "oom_kill_workloads": "OOM-killed workloads",
                "slub_order_fallback": "ORDER_FALLBACK / new slab",
                "nowait_fallback": "NOWAIT fallbacks / NOWAIT requests",
                "alloc_kernel_failure": "GFP_KERNEL failures / requests"}


# ---------------------------------------------------------------- entry point

def build_report(sweep_dir: Path, results: pd.DataFrame | None = None, cfg=None) -> Path:
    """Write ``<sweep_dir>/report/`` from the results store (or ``results``); returns it.
    ``cfg``: the config to report with (``report DIR key=value``); None reads config.yaml."""
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    df = results if results is not None else load_results(sweep_dir)
    if df.empty:
        raise ValueError(f"{sweep_dir}: no results to report")
    cfg = read_config(sweep_dir) if cfg is None else OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    meta = read_meta(sweep_dir)
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
    warning: bool = False


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
        blocks.append(Para(f"Warning: {warning}", warning=True))
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
            "metric": part["metric"].map(stats.metric_label),
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
            blocks += [Heading(4, f"{stats.metric_label(metric)} (lower is better)"),
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
p.warning { background: #fff4ce; border-left: 4px solid #e0a800; padding: 0.5em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def to_html(blocks: list, title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p class='{'warning' if block.warning else ''}'>{html.escape(block.text)}</p>")
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
