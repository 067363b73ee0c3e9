"""Paired statistics of a sweep: which design is better where, and how sure we are.

Input is the results table of the store (one row per workload: ``cell_id, design, seed,
status``, the grid axes and one column per ``core.METRICS`` name).  Replication r of a cell
ran with the same seed under every design (common random numbers), so designs are compared
**pairwise by seed** within a cell:

* binary outcome "the workload saw a user-visible ENOMEM": McNemar's exact test on the
  discordant pairs (statsmodels), Wilson intervals on each design's rate; the per-workload
  rates (ENOMEM per kernel entry, NOWAIT/ATOMIC failures per request) are compared as
  continuous metrics, since the binary outcome is often all-or-nothing within a cell;
* continuous metrics: Wilcoxon signed-rank test of the paired differences (scipy) and a BCa
  bootstrap CI of the mean paired difference (``scipy.stats.bootstrap``, paired, fixed rng);
* across cells, per (comparison, metric) family: Holm and Benjamini-Hochberg adjusted
  p-values (statsmodels ``multipletests`` with the method named explicitly).

Every metric here is "lower is better".  Nothing in this module knows Ray or MLflow.
"""
from __future__ import annotations

import gc
import math
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from core.metrics import GFP_CLASSES, METRICS
from sweep.config import CELL_AXES as AXES
from sweep.config import CORRECTIONS, StatsSchema, setting

BASELINE = "v4.3"                      # the kernel as shipped: compared against every design
ALPHA = StatsSchema.alpha
BOOTSTRAP_RESAMPLES = 1999             # BCa CI of a mean; more moves the bounds < 1 %
BOOTSTRAP_SEED = 20150915              # fixed rng: the report is reproducible
VERDICTS = ("better", "worse", "indistinguishable", "untestable")
EMPTY_TABLE_COLUMNS = ["cell_id", *AXES, "baseline", "candidate", "metric", "n_pairs", "base_mean",
                       "cand_mean", "diff_mean", "pct_change", "test", "p_value", "direction",
                       "p_holm", "p_bh", "correction", "verdict"]


@dataclass(frozen=True)
class Metric:
    name: str          # column of the workload table (a core metric or a derived one)
    label: str         # what a reader of the report sees
    binary: bool = False
    lower_is_better: bool = True
    headline: bool = False   # one of the few the MLflow parent run carries (pooled, net cells)


ENOMEM = Metric("enomem", "workloads with a user-visible ENOMEM", binary=True, headline=True)
# Each design's costs next to its benefits (docs/model.md "What each design costs"): every
# cost a design moves elsewhere (way1's punted reclaim, v4.3's uncharged NOFAIL kmem,
# way2's forced __GFP_HIGH charges) lands in a metric compared here.
KEY_METRICS = (
    ENOMEM,
    Metric("enomem_per_kentry", "user-visible ENOMEM per kernel entry"),
    Metric("nowait_failure_rate", "failed GFP_NOWAIT requests per NOWAIT request"),
    Metric("atomic_failure_rate", "failed GFP_ATOMIC requests per ATOMIC request"),
    Metric("alloc_atomic_failures", "failed GFP_ATOMIC requests"),
    Metric("nowait_failures", "failed GFP_NOWAIT requests"),
    Metric("overshoot_high_peak_pages", "peak overshoot over memory.high (pages)", headline=True),
    Metric("overshoot_high_integral_page_ms", "overshoot over memory.high (page*ms)"),
    Metric("overshoot_max_peak_pages", "peak overshoot over memory.max (pages)"),
    Metric("charge_forced_pages", "pages force-charged past memory.max"),
    Metric("kmem_uncharged_pages", "kmem left uncharged at the end (pages)"),
    Metric("reclaim_scanned_pages", "pages scanned by reclaim"),
    Metric("reclaim_rounds_locked", "reclaim rounds run under a lock"),
    Metric("syscall_latency_p99_ns", "syscall latency p99, incl. return-to-user work (ns)", headline=True),
    Metric("latency_kernel_p99_ns", "per-request GFP_KERNEL latency p99, excl. return-to-user work (ns)"),
    Metric("slub_order_fallback_rate", "SLUB ORDER_FALLBACK per new slab"),
    Metric("slab_wrong_node_objects", "slab objects placed on the wrong node"),
    Metric("slab_wrong_node_pages", "slab pages placed on the wrong node"),
)
METRICS_BY_NAME = {m.name: m for m in KEY_METRICS}
INDICATORS = ("enomem", "oom_killed")  # 0/1 per workload, derived by workload_values
HEADLINE = tuple(m.name for m in KEY_METRICS if m.headline)
# per-workload rates of the core (0 without a denominator) -> their denominator
RATE_DENOMINATORS = {"enomem_per_kentry": "kernel_entries",
                     "nowait_failure_rate": "alloc_nowait_attempts",
                     "atomic_failure_rate": "alloc_atomic_attempts"}



class Rate(NamedTuple):
    numerator: str
    denominator: str
    label: str = ""        # the report's per-cell rates table shows the rates with a label


# Rates with Wilson intervals.  Workload-level rates count workloads (indicator columns
# added by ``workload_values``); request-level rates pool the counters of all workloads of
# a (cell, design).
RATES = {
    "enomem_workloads": Rate("enomem", "one", "ENOMEM workloads"),
    "oom_kill_workloads": Rate("oom_killed", "one", "OOM-killed workloads"),
    "slub_order_fallback": Rate("slub_order_fallbacks", "slub_new_slab_attempts", "ORDER_FALLBACK / new slab"),
    "nowait_fallback": Rate("nowait_fallbacks", "alloc_nowait_attempts", "NOWAIT fallbacks / NOWAIT requests"),
    **{f"alloc_{c}_failure": Rate(f"alloc_{c}_failures", f"alloc_{c}_attempts",
                                  "GFP_KERNEL failures / requests" if c == "kernel" else "")
       for c in GFP_CLASSES},
}


# ---------------------------------------------------------------- small helpers

def wilson(count, nobs, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of count/nobs (NaN when nobs is 0)."""
    if nobs <= 0:
        return (np.nan, np.nan)
    lo, hi = proportion_confint(count, nobs, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def correction_method(name: str) -> str:
    try:
        return CORRECTIONS[str(name).lower()]
    except KeyError:
        raise ValueError(f"stats.correction: must be one of {sorted(CORRECTIONS)}, got {name!r}")


def comparisons(designs: Iterable[str]) -> list[tuple[str, str]]:
    """(baseline, candidate) pairs: v4.3 against each design, then the designs pairwise,
    the earlier row of the policy table as baseline - so the 6.x row is the candidate
    against every 2015 design ("where does today's kernel win or lose, against which")."""
    import core

    designs = list(dict.fromkeys(designs))
    order = {d: i for i, d in enumerate(core.DESIGNS)}
    others = sorted((d for d in designs if d != BASELINE), key=lambda d: (order.get(d, len(order)), d))
    pairs = [(BASELINE, d) for d in others] if BASELINE in designs else []
    pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
    return pairs


def design_order(designs) -> list[str]:
    """v4.3 (the baseline) first, the others sorted: the column order of every table."""
    designs = list(dict.fromkeys(designs))
    return ([BASELINE] if BASELINE in designs else []) + sorted(d for d in designs if d != BASELINE)


# ---------------------------------------------------------------- per-workload values

def workload_values(df: pd.DataFrame) -> pd.DataFrame:
    """The successful workloads, with the derived columns the statistics use."""
    ok = df[df["status"] == "ok"].copy()
    ok["enomem"] = (ok["enomem_user_visible"] > 0).astype(float)
    ok["oom_killed"] = ((ok["oom_kills_memcg"] + ok["oom_kills_global"]) > 0).astype(float)
    ok["one"] = 1.0
    ok["slub_order_fallback_rate"] = _per(ok["slub_order_fallbacks"], ok["slub_new_slab_attempts"])
    # charge-time reclaim rounds per allocate_slab call: way2's second, minimum-order charge
    # of a slab page the buddy allocator refused after a reclaiming high-order charge
    ok["slab_charge_reclaim_per_slab"] = _per(ok["slab_charge_reclaim_rounds"], ok["slub_new_slab_attempts"])
    # the core reports a rate without a denominator as 0; here it is undefined (NaN), so
    # a mix without NOWAIT requests is "untestable", not "indistinguishable"
    for rate, denominator in RATE_DENOMINATORS.items():
        ok[rate] = ok[rate].where(ok[denominator] > 0)
    return ok


def _per(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator per workload; NaN (no rate) where the denominator is 0."""
    return numerator.where(denominator > 0) / denominator.where(denominator > 0)


def cell_axes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id with its grid-axis values."""
    return df.groupby("cell_id", sort=True)[[a for a in AXES if a in df.columns]].first()


def _paired_wide(values: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(cell_id, seed) x design table of one metric; pairing is by seed, not row order."""
    return values.pivot_table(index=["cell_id", "seed"], columns="design", values=metric,
                              aggfunc="first", dropna=False)


def _pairs_by_cell(paired: pd.DataFrame, baseline: str, candidate: str) -> dict[str, tuple]:
    """cell_id -> (baseline values, candidate values), aligned by seed."""
    if paired.empty:
        return {}
    return {cell_id: (cell[baseline].to_numpy(), cell[candidate].to_numpy())
            for cell_id, cell in paired.groupby(level="cell_id")}


def _pairs(wide: pd.DataFrame, baseline: str, candidate: str) -> pd.DataFrame:
    if baseline not in wide or candidate not in wide:
        return wide.iloc[0:0, 0:0]
    return wide[[baseline, candidate]].dropna()


# ---------------------------------------------------------------- tests of one cell

def _mcnemar(base: np.ndarray, cand: np.ndarray) -> dict:
    b = int(np.sum((base > 0) & (cand == 0)))     # only the baseline failed
    c = int(np.sum((base == 0) & (cand > 0)))     # only the candidate failed
    both = int(np.sum((base > 0) & (cand > 0)))
    table = [[both, b], [c, len(base) - both - b - c]]
    p = float(mcnemar(table, exact=True).pvalue) if b + c else 1.0
    return {"test": "mcnemar-exact", "p_value": p, "direction": int(np.sign(c - b)),
            "discordant_base": b, "discordant_cand": c}


def _wilcoxon(base: np.ndarray, cand: np.ndarray) -> dict:
    d = cand - base
    nonzero = d[d != 0]
    if nonzero.size == 0:                          # identical: no evidence of a difference
        return {"test": "wilcoxon", "p_value": 1.0, "direction": 0}
    p = float(sps.wilcoxon(nonzero, method=wilcoxon_method(nonzero)).pvalue)
    # direction of the signed-rank statistic (R+ vs R-), the quantity the test is about
    ranks = sps.rankdata(np.abs(nonzero))
    direction = int(np.sign(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()))
    return {"test": "wilcoxon", "p_value": p, "direction": direction}


def wilcoxon_method(nonzero: np.ndarray) -> str:
    """Exact null distribution without ties (n <= 50), else the normal approximation with
    tie correction - R's wilcox.test rule.  (scipy's "auto" would run a 2**n permutation
    test for n <= 13 with ties: seconds per cell, for a p-value we only need to ~1e-3.)"""
    has_ties = np.unique(np.abs(nonzero)).size < nonzero.size
    return "exact" if nonzero.size <= 50 and not has_ties else "asymptotic"


def _mean_diff(base, cand, axis=-1):
    return np.mean(cand - base, axis=axis)


def bootstrap_ci(base: np.ndarray, cand: np.ndarray, alpha: float = ALPHA,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """BCa bootstrap CI of the mean paired difference cand - base (resampling pairs)."""
    d = cand - base
    if d.size < 2 or np.ptp(d) == 0:               # degenerate: every resample is the same
        value = float(np.mean(d)) if d.size else np.nan
        return (value, value) if d.size else (np.nan, np.nan)
    res = sps.bootstrap((base, cand), _mean_diff, paired=True, vectorized=True, method="BCa",
                        n_resamples=resamples, confidence_level=1 - alpha,
                        rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (e.g. one outlier pair)
        res = sps.bootstrap((base, cand), _mean_diff, paired=True, vectorized=True,
                            method="percentile", n_resamples=resamples,
                            confidence_level=1 - alpha, rng=np.random.default_rng(seed))
        lo, hi = res.confidence_interval
    return float(lo), float(hi)


def pct_change(base_mean: float, cand_mean: float) -> float:
    """(candidate - baseline) / |baseline| in %; 0 when both are 0, +-inf from a zero baseline."""
    if base_mean == 0:
        return 0.0 if cand_mean == 0 else float(np.copysign(np.inf, cand_mean))
    return float((cand_mean - base_mean) / abs(base_mean) * 100.0)


def compare_pair(base: np.ndarray, cand: np.ndarray, metric: Metric, alpha: float = ALPHA,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Paired comparison of one metric in one cell (arrays aligned by seed)."""
    base = np.asarray(base, dtype=float)
    cand = np.asarray(cand, dtype=float)
    row = {"n_pairs": len(base), "base_mean": float(np.mean(base)) if len(base) else np.nan,
           "cand_mean": float(np.mean(cand)) if len(cand) else np.nan}
    row["diff_mean"] = row["cand_mean"] - row["base_mean"]
    if not len(base):
        return {**row, "test": "none", "p_value": np.nan, "direction": 0}
    row["pct_change"] = pct_change(row["base_mean"], row["cand_mean"])
    row.update(_mcnemar(base, cand) if metric.binary else _wilcoxon(base, cand))
    if metric.binary:
        n = len(base)
        row["base_ci_lo"], row["base_ci_hi"] = wilson(int((base > 0).sum()), n, alpha)
        row["cand_ci_lo"], row["cand_ci_hi"] = wilson(int((cand > 0).sum()), n, alpha)
    if resamples:
        row["diff_ci_lo"], row["diff_ci_hi"] = bootstrap_ci(base, cand, alpha, resamples)
    return row


def paired_differences(values: pd.DataFrame, metric: str, a: str, b: str, cells, alpha: float = ALPHA) -> pd.DataFrame:
    """Per cell (index) of ``cells``: the mean of b - a over the seeds where both ran, with a
    paired t (1 - alpha) interval (a claim's evidence; ``values``: ``workload_values``)."""
    if metric not in values:
        return pd.DataFrame(columns=["diff", "lo", "hi"])
    part = values[values["cell_id"].isin(list(cells)) & values["design"].isin([a, b])]
    wide = part.pivot_table(index=["cell_id", "seed"], columns="design", values=metric, aggfunc="first")
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=["diff", "lo", "hi"])
    d = (wide[b] - wide[a]).dropna().groupby(level="cell_id")
    mean, n, sd = d.mean(), d.count(), d.std(ddof=1).fillna(0.0)
    half = (sps.t.ppf(1 - alpha / 2, (n - 1).clip(lower=1)) * sd / np.sqrt(n)).where(n > 1, 0.0)
    return pd.DataFrame({"diff": mean, "lo": mean - half, "hi": mean + half})


# ---------------------------------------------------------------- across cells: a per-cell summary

EFFECT_RESAMPLES = 999                 # stratified bootstrap of the median per-cell difference


def median_effect(diffs: list[np.ndarray], alpha: float = ALPHA, resamples: int = EFFECT_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(median, lo, hi): the median over cells of each cell's mean paired difference, and its
    (1 - alpha) percentile interval from a stratified bootstrap (seeds resampled within each
    cell; the cells are the grid's design points, so they are kept, not resampled).

    Why the median of per-cell means and not the mean over all pairs: cells are not alike (one
    cell can hold most of a pooled sum), and a median cannot have the opposite sign of a strict
    majority of the cells - one outlier cell cannot flip it."""
    diffs = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    if not diffs:
        return (math.nan, math.nan, math.nan)
    median = float(np.median([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    boot = np.empty((resamples, len(diffs)))
    by_size: dict[int, list[int]] = {}
    for j, d in enumerate(diffs):
        by_size.setdefault(d.size, []).append(j)
    for size, columns in by_size.items():          # cells of one size: resampled in one draw
        block = np.stack([diffs[j] for j in columns])[None]           # (1, cells, seeds)
        picks = rng.integers(0, size, (resamples, len(columns), size))
        boot[:, columns] = np.take_along_axis(block, picks, axis=2).mean(axis=2)
    lo, hi = np.quantile(np.median(boot, axis=1), [alpha / 2, 1 - alpha / 2])
    return median, float(lo), float(hi)


def effect_direction(median: float, lo: float, hi: float) -> int:
    """+1 / -1 when the median per-cell difference and its whole interval are above / below
    0 (the sign of the median itself decides: it is what a reader repeats), else 0."""
    if median > 0 and lo > 0:
        return 1
    if median < 0 and hi < 0:
        return -1
    return 0


def design_effects(df: pd.DataFrame, alpha: float = ALPHA, metrics: Iterable[Metric] = KEY_METRICS,
                   pairs: Iterable[tuple[str, str]] | None = None,
                   resamples: int = EFFECT_RESAMPLES) -> pd.DataFrame:
    """One row per (baseline, candidate, metric), over the cells BOTH designs ran (seeds
    paired) where the metric is not zero in every workload of both (a cell where a harm never
    happens says nothing about which design has less of it; counting it would pull every
    median to 0 for a harm that a few blocks of the grid are built to provoke): the number of
    those cells and the median per-cell mean difference with its stratified bootstrap
    interval and direction (``median_effect``, ``effect_direction``); and each design's mean
    and the pooled change (%) over ALL the cells both ran (zero-harm cells included), so a
    design's mean is on the same footing as the baseline's raw mean beside it in the
    comparison table (the mean over only the cells where a harm happens would look many
    times the baseline's)."""
    values = workload_values(df)
    pairs = list(pairs) if pairs is not None else comparisons(values["design"].unique())
    rows = []
    for metric in metrics:
        if metric.name not in values:
            continue
        wide = _paired_wide(values, metric.name)
        for baseline, candidate in pairs:
            paired = shared = _pairs(wide, baseline, candidate)
            if len(paired):
                occurs = (paired != 0).any(axis=1).groupby(level="cell_id").transform("any")
                paired = paired[occurs]
            row = {"baseline": baseline, "candidate": candidate, "metric": metric.name,
                   "n_cells": 0, "base_mean": math.nan, "cand_mean": math.nan, "pooled_pct": math.nan,
                   "median_diff": math.nan, "median_lo": math.nan, "median_hi": math.nan, "direction": 0}
            if len(paired):
                cells = paired.index.get_level_values("cell_id")       # sorted: each cell's rows together
                starts = np.flatnonzero(cells[1:] != cells[:-1]) + 1
                diffs = np.split((paired[candidate] - paired[baseline]).to_numpy(), starts)
                median, lo, hi = median_effect(diffs, alpha, resamples)
                base, cand = float(shared[baseline].mean()), float(shared[candidate].mean())
                row.update(n_cells=len(diffs), base_mean=base, cand_mean=cand,
                           pooled_pct=pct_change(base, cand), median_diff=median, median_lo=lo,
                           median_hi=hi, direction=effect_direction(median, lo, hi))
            rows.append(row)
    return pd.DataFrame(rows, columns=["baseline", "candidate", "metric", "n_cells", "base_mean", "cand_mean",
                                       "pooled_pct", "median_diff", "median_lo", "median_hi", "direction"])


# ---------------------------------------------------------------- the whole sweep

def compare_cells(df: pd.DataFrame, alpha: float = ALPHA, metrics: Iterable[Metric] = KEY_METRICS,
                  pairs: Iterable[tuple[str, str]] | None = None,
                  resamples: int = BOOTSTRAP_RESAMPLES, correction: str = "holm") -> pd.DataFrame:
    """One row per (cell, baseline, candidate, metric) with tests, adjusted p and verdict."""
    return comparison_table(compare_rows(df, alpha, metrics, pairs, resamples), alpha, correction)


def compare_rows(df: pd.DataFrame, alpha: float = ALPHA, metrics: Iterable[Metric] = KEY_METRICS,
                 pairs: Iterable[tuple[str, str]] | None = None, resamples: int = BOOTSTRAP_RESAMPLES) -> list[dict]:
    """``compare_pair`` of every cell, pair and metric, in (metric, pair, cell) order, before
    the correction across cells."""
    values = workload_values(df)
    pairs = list(pairs) if pairs is not None else comparisons(values["design"].unique())
    cells = list(cell_axes(df).index)
    return assemble_rows(df, cell_comparisons(values, cells, alpha, list(metrics), pairs, resamples))


def cell_comparisons(values: pd.DataFrame, cells: Iterable[str], alpha: float, metrics: list[Metric],
                     pairs: list[tuple[str, str]], resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, list[dict]]:
    """cell_id -> ``compare_cell`` of its rows of ``values`` (``workload_values``): a cell's
    comparisons depend on its own workloads only, so they can be computed anywhere, any time
    after its last workload is stored, and combined by ``assemble_rows``."""
    by_cell = dict(iter(values.groupby("cell_id", sort=False)))
    empty = values.iloc[0:0]
    return {cell_id: compare_cell(by_cell.get(cell_id, empty), alpha, metrics, pairs, resamples)
            for cell_id in cells}


def compare_cell(values: pd.DataFrame, alpha: float, metrics: list[Metric], pairs: list[tuple[str, str]],
                 resamples: int = BOOTSTRAP_RESAMPLES) -> list[dict]:
    """One cell's ``compare_pair`` rows, in (metric, pair) order (``values``: its rows of
    ``workload_values``, paired by seed)."""
    by_design = {design: part.sort_values("seed") for design, part in values.groupby("design", sort=False)}
    rows = []
    for metric in metrics:
        for baseline, candidate in pairs:
            base, cand = _paired_arrays(by_design, metric.name, baseline, candidate)
            rows.append({"baseline": baseline, "candidate": candidate, "metric": metric.name,
                         **compare_pair(base, cand, metric, alpha, resamples)})
    return rows


def _paired_arrays(by_design: dict, metric: str, baseline: str, candidate: str) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, candidate) values of one cell at the seeds where both have one, in seed
    order (a pivot by seed and ``dropna``, as ``_paired_wide`` gives, without its cost)."""
    if baseline not in by_design or candidate not in by_design:
        return np.empty(0), np.empty(0)
    b, c = by_design[baseline], by_design[candidate]
    _, at_b, at_c = np.intersect1d(b["seed"].to_numpy(), c["seed"].to_numpy(), return_indices=True)
    x = b[metric].to_numpy(dtype=float)[at_b]
    y = c[metric].to_numpy(dtype=float)[at_c]
    both = ~(np.isnan(x) | np.isnan(y))
    return x[both], y[both]


def assemble_rows(df: pd.DataFrame, per_cell: dict[str, list[dict]]) -> list[dict]:
    """The rows of every cell of ``df`` (``cell_comparisons``, each in (metric, pair) order)
    with the cell's axes, in (metric, pair, cell) order: the table's order, whichever
    process computed which cell."""
    axes = cell_axes(df)
    axis_values = dict(zip(axes.index, axes.to_dict("records")))
    width = len(next(iter(per_cell.values()), []))
    return [{"cell_id": cell_id, **axis_values[cell_id], **per_cell[cell_id][i]}
            for i in range(width) for cell_id in axes.index]


def settled_verdict(p_value: float, alpha: float = ALPHA) -> str | None:
    """The verdict of one comparison as far as it is known before the correction across
    cells (``add_verdicts``): "untestable" without a p-value, "indistinguishable" when the
    raw p is not below alpha (Holm's and BH's adjusted p are never below the raw one);
    None while only the correction can tell."""
    if p_value is None or math.isnan(p_value):
        return "untestable"
    return "indistinguishable" if p_value >= alpha else None


def comparison_table(rows: list[dict], alpha: float = ALPHA, correction: str = "holm") -> pd.DataFrame:
    """``compare_rows``' rows with the Holm and BH adjusted p-values and the verdicts."""
    if not rows:                                   # one design: nothing to compare
        return pd.DataFrame(columns=EMPTY_TABLE_COLUMNS)
    return add_verdicts(adjust(pd.DataFrame(rows), alpha), alpha, correction)


def adjust(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg across cells, separately per (comparison, metric)."""
    table = table.copy()
    table["p_holm"] = np.nan
    table["p_bh"] = np.nan
    with _gc_frozen():
        for _, family in table.groupby(["baseline", "candidate", "metric"], sort=False):
            tested = family["p_value"].notna()
            if not tested.any():
                continue
            index = family.index[tested]
            p = family.loc[tested, "p_value"].to_numpy()
            table.loc[index, "p_holm"] = multipletests(p, alpha=alpha, method="holm")[1]
            table.loc[index, "p_bh"] = multipletests(p, alpha=alpha, method="fdr_bh")[1]
    return table


@contextmanager
def _gc_frozen():
    """statsmodels' Holm branch calls gc.collect(): ~50 ms per family in a process that has
    imported pandas and MLflow.  Freezing the existing objects makes that collection cheap."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def add_verdicts(table: pd.DataFrame, alpha: float = ALPHA, correction: str = "holm") -> pd.DataFrame:
    """verdict of the candidate against the baseline, under the configured correction."""
    column = "p_holm" if correction_method(correction) == "holm" else "p_bh"
    table = table.copy()
    table["correction"] = column
    lower_better = table["metric"].map(lambda m: METRICS_BY_NAME.get(m, Metric(m, m)).lower_is_better)
    improves = np.where(lower_better, table["direction"] < 0, table["direction"] > 0)
    significant = table[column] < alpha
    verdict = np.where(significant & improves, "better",
                       np.where(significant, "worse", "indistinguishable"))
    table["verdict"] = np.where(table[column].isna(), "untestable", verdict)
    return table


def summarize_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per (baseline, candidate, metric): how many cells are better/worse/..."""
    rows = []
    for (baseline, candidate, metric), family in table.groupby(["baseline", "candidate", "metric"], sort=False):
        counts = family["verdict"].value_counts()
        rows.append({"baseline": baseline, "candidate": candidate, "metric": metric,
                     **{v: int(counts.get(v, 0)) for v in VERDICTS}})
    return pd.DataFrame(rows)


def smallest_p(n_pairs: int) -> float:
    """The smallest two-sided p-value n pairs can give (every difference the same way):
    2 / 2**n for Wilcoxon's exact test and for McNemar's on n discordant pairs."""
    return min(1.0, 2.0 / 2.0 ** n_pairs)


def pairs_needed(n_cells: int, alpha: float = ALPHA) -> int:
    """Pairs a cell needs before it can be significant on its own after correction
    (Holm's first step, and BH's when it is the only effect, both compare with alpha/m)."""
    n = 1
    while smallest_p(n) >= alpha / max(n_cells, 1):
        n += 1
    return n


def sweep_power_warning(table: pd.DataFrame, alpha: float = ALPHA, correction: str = "holm") -> str:
    """power_warning for a comparison table: its least-replicated tested cell."""
    tested = table[table["n_pairs"] > 0]
    if tested.empty:
        return ""
    return power_warning(int(tested["n_pairs"].min()), table["cell_id"].nunique(), alpha, correction)


def power_warning(n_pairs: int, n_cells: int, alpha: float = ALPHA, correction: str = "holm") -> str:
    """A sentence for the report when too few replications make significance impossible."""
    needed = pairs_needed(n_cells, alpha)
    if n_pairs >= needed:
        return ""
    p_min = smallest_p(n_pairs)
    text = (f"some cells have only {n_pairs} paired replications; their smallest attainable "
            f"p-value is {p_min:.3g}, but a cell needs p < alpha/{n_cells} = {alpha / n_cells:.3g} "
            f"to be significant on its own across {n_cells} cells, i.e. at least {needed} "
            f"replications (raise `replications`, or let `stats.max_replications` add them).")
    if correction_method(correction) == "holm":
        return "with Holm, no such cell can be significant: " + text
    at_least = math.ceil(p_min * n_cells / alpha)
    return (f"with Benjamini-Hochberg, such cells can only be significant when at least "
            f"{at_least} cells show the same effect: " + text)


# ---------------------------------------------------------------- per (cell, design) aggregates

def aggregate(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (cell_id, design): counts, means, p50/p99 and Wilson-bounded rates.

    Column names are the MLflow metric keys (``mean/<metric>``, ``rate/<name>``,
    ``rate/<name>/ci_lo`` ...) so the report and the tracking server say the same thing.
    """
    values = workload_values(df)
    counts = df.groupby(["cell_id", "design"]).agg(
        n_workloads=("status", "size"), n_errors=("status", lambda s: int((s != "ok").sum())))
    groups = values.groupby(["cell_id", "design"])
    present = [m for m in METRICS if m in values]
    means = groups[present].mean().add_prefix("mean/")
    key = [m.name for m in KEY_METRICS if not m.binary]
    p50 = groups[key].quantile(0.5).add_prefix("p50/")
    p99 = groups[key].quantile(0.99).add_prefix("p99/")
    out = counts.join([means, p50, p99, _rates(groups, alpha)])
    out["n_ok"] = out["n_workloads"] - out["n_errors"]
    return out.reset_index().join(cell_axes(df), on="cell_id")


def _rates(groups, alpha: float) -> pd.DataFrame:
    columns = sorted({c for rate in RATES.values() for c in (rate.numerator, rate.denominator)})
    sums = groups[columns].sum()
    out = pd.DataFrame(index=sums.index)
    for name, (num, den, _) in RATES.items():
        k, n = sums[num].to_numpy(), sums[den].to_numpy()
        out[f"rate/{name}"] = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
        bounds = [wilson(ki, ni, alpha) for ki, ni in zip(k, n)]
        out[f"rate/{name}/ci_lo"] = [b[0] for b in bounds]
        out[f"rate/{name}/ci_hi"] = [b[1] for b in bounds]
        out[f"count/{name}"] = k
    return out


# ---------------------------------------------------------------- pooled over the sweep

def pooled_means(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per (metric, design): the mean over every successful workload of the sweep with its
    (1 - alpha) interval - Wilson for the ENOMEM share, Student's t over workloads for the
    rest (cells are balanced, so this is also the mean of the cell means) - and whether the
    metric was zero in every workload."""
    values = workload_values(df)
    rows = []
    for metric in KEY_METRICS:
        if metric.name not in values:
            continue
        for design, part in values.groupby("design", sort=False):
            x = part[metric.name].dropna().to_numpy(dtype=float)
            rows.append({"metric": metric.name, "design": design, "n": len(x), **_mean_ci(x, metric, alpha)})
    frame = pd.DataFrame(rows, columns=["metric", "design", "n", "mean", "ci_lo", "ci_hi", "all_zero"])
    order = {d: i for i, d in enumerate(design_order(values["design"].unique()))}
    return frame.sort_values("design", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def _mean_ci(x: np.ndarray, metric: Metric, alpha: float) -> dict:
    if not len(x):
        return {"mean": math.nan, "ci_lo": math.nan, "ci_hi": math.nan, "all_zero": True}
    mean = float(x.mean())
    if metric.binary:
        lo, hi = wilson(int((x > 0).sum()), len(x), alpha)
    elif len(x) > 1 and np.ptp(x) > 0:
        half = float(sps.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
        lo, hi = mean - half, mean + half
    else:
        lo = hi = mean
    return {"mean": mean, "ci_lo": lo, "ci_hi": hi, "all_zero": bool(not np.any(x))}


# ---------------------------------------------------------------- precision-based stopping

def cells_needing_more(df: pd.DataFrame, stats_cfg=None) -> list[str]:
    """cell_ids that should get more replications.

    A cell needs more while it has fewer than ``max_replications`` replications and either
    fewer than ``min_replications`` or a paired-difference CI of a key metric wider than
    ``ci_halfwidth`` (for the ENOMEM rate in absolute proportion units; for continuous
    metrics relative to the larger of the two design means).  The rule looks at precision
    only, never at p-values, so stopping does not bias the tests (no "peeking").  It uses
    the paired t interval (cheap, run after every round); the report uses the bootstrap.
    """
    alpha = float(setting(stats_cfg, "alpha", ALPHA))
    min_reps = int(setting(stats_cfg, "min_replications", 2))
    max_reps = int(setting(stats_cfg, "max_replications", 0))
    target = float(setting(stats_cfg, "ci_halfwidth", np.inf))
    replications = df.groupby("cell_id")["replication"].nunique()
    values = workload_values(df)
    pairs = comparisons(df["design"].unique())
    widest = _widest_halfwidth(values, pairs, alpha)
    needing = []
    for cell_id, n in replications.items():
        if n >= max_reps:
            continue
        if n < min_reps or widest.get(cell_id, np.inf) > target:
            needing.append(cell_id)
    return needing


def _widest_halfwidth(values: pd.DataFrame, pairs, alpha: float) -> dict[str, float]:
    widest = pd.Series(dtype=float)
    for metric in KEY_METRICS:
        wide = _paired_wide(values, metric.name)
        for baseline, candidate in pairs:
            paired = _pairs(wide, baseline, candidate)
            if len(paired):
                hw = relative_halfwidths(paired[baseline], paired[candidate], metric, alpha)
                widest = hw.combine(widest, max, fill_value=0.0)
    return widest.to_dict()


def relative_halfwidths(base: pd.Series, cand: pd.Series, metric: Metric, alpha: float = ALPHA) -> pd.Series:
    """``relative_halfwidth`` of every cell at once (base/cand indexed by cell_id, seed):
    the same paired t interval, t quantile from scipy, in one pass instead of one
    ``ttest_rel`` per cell and comparison (5,000 calls per round on the default grid)."""
    d = (cand - base).groupby(level="cell_id")
    n, sd = d.count(), d.std(ddof=1)
    halfwidth = sps.t.ppf(1 - alpha / 2, (n - 1).clip(lower=1)) * sd / np.sqrt(n)
    halfwidth = halfwidth.where(n >= 2, np.inf).where(~((n >= 2) & (sd == 0)), 0.0)
    if metric.binary:
        return halfwidth
    scale = np.maximum(base.groupby(level="cell_id").mean().abs(), cand.groupby(level="cell_id").mean().abs())
    return (halfwidth / scale.where(scale > 0)).where(scale > 0, 0.0)


def relative_halfwidth(base: np.ndarray, cand: np.ndarray, metric: Metric, alpha: float = ALPHA) -> float:
    """Half-width of the paired t CI of mean(cand - base), scaled as ``ci_halfwidth`` is."""
    d = cand - base
    if len(d) < 2:
        return np.inf
    if np.ptp(d) == 0:
        return 0.0
    lo, hi = sps.ttest_rel(cand, base).confidence_interval(1 - alpha)
    halfwidth = (hi - lo) / 2
    if metric.binary:
        return float(halfwidth)
    scale = max(abs(np.mean(base)), abs(np.mean(cand)))
    return float(halfwidth / scale) if scale > 0 else 0.0
