"""Model vs a real kernel (issue 23): a real-kernel design row (``sweep.config.KERNEL_ROWS``,
e.g. ``linux-6.1``) beside its model twin (``v6.1``) on the same seeds, per cell and metric.

For every metric Linux exposes (docs/realkernel.md's table) and every cell both rows ran:
the kernel's mean, the model's mean, the paired difference **model - kernel** with its
bootstrap CI (``stats.compare_pair``: the same paired statistics as every design pair), and
a verdict against the metric's tolerance (``TOLERANCES``):

* **agree**: the CI of the mean paired difference reaches into [-tolerance, +tolerance]
  (the data are consistent with the model being within tolerance of Linux);
* **disagree**: the whole CI lies outside that band;
* **untestable**: no pair has a value on both sides.

The tolerance of a metric is ``max(floor, relative x |kernel mean|)``: a relative part for
quantities Linux repeats to a few percent, and a floor in the metric's unit where the kernel's
own batching makes small values land anywhere within one batch.  The figures behind each
choice are in docs/realkernel.md ("Calibration: model vs Linux 6.1").
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from sweep import stats
from sweep.config import CELL_AXES, KERNEL_ROWS

MEMCG_CHARGE_BATCH = 64     # pages (6.1 include/linux/memcontrol.h): the per-CPU stock and punted overage


class Tolerance(NamedTuple):
    relative: float     # of the kernel's mean
    floor: float        # in the metric's unit
    why: str


_FAILURES = Tolerance(0.10, 1, "each failed request is a fact of the stream; 10 % for Linux's timing of "
                               "reclaim and OOM kills")
# metric -> tolerance: the quantities Linux shows under the model's names (realkernel/stream.py)
TOLERANCES = {
    "enomem_user_visible": _FAILURES,
    "alloc_kernel_failures": _FAILURES,
    "alloc_nofs_failures": _FAILURES,
    "nowait_failures": _FAILURES,
    "alloc_atomic_failures": _FAILURES,
    "events_max": Tolerance(0.10, 1, "one per charge that hit memory.max: atomic-fill matched to the event"),
    "events_oom": Tolerance(0.10, 1, "one per charge that found no reclaimable memory at memory.max"),
    "events_oom_kill": Tolerance(0.25, 1, "kills depend on when the victim exits, which Linux schedules"),
    "overshoot_max_peak_pages": Tolerance(0.10, 2 * MEMCG_CHARGE_BATCH,
                                          "forced charges repeat to the page; one charge batch per CPU of slack"),
    "overshoot_high_peak_pages": Tolerance(0.50, 2 * MEMCG_CHARGE_BATCH,
                                           "memory.high is enforced a batch late, at return to user: Linux's own "
                                           "peak varied 51 to 488 pages between two runs of one stream"),
    "events_high": Tolerance(1.0, 4, "one per reclaim_high call over high: Linux's count varied 2x between "
                                     "runs of one stream (6 vs 13)"),
    "reclaim_scanned_pages": Tolerance(1.0, 4 * MEMCG_CHARGE_BATCH,
                                       "LRU order and ageing differ (the model has no active/inactive lists); "
                                       "Linux varied 2x between runs"),
    "reclaim_reclaimed_pages": Tolerance(1.0, 4 * MEMCG_CHARGE_BATCH,
                                         "as reclaim_scanned_pages"),
}
VERDICTS = ("agree", "disagree", "untestable")
COLUMNS = ["cell_id", *CELL_AXES, "kernel", "model", "metric", "n_pairs", "kernel_mean", "model_mean",
           "diff_mean", "diff_ci_lo", "diff_ci_hi", "tolerance", "verdict"]


def rows_present(designs) -> list[tuple[str, str]]:
    """(kernel row, model twin) of the sweep: both ran."""
    designs = set(designs)
    return [(kernel, model) for kernel, model in KERNEL_ROWS.items() if kernel in designs and model in designs]


def tolerance(metric: str, kernel_mean: float) -> float:
    t = TOLERANCES[metric]
    return max(t.floor, t.relative * abs(kernel_mean)) if np.isfinite(kernel_mean) else float(t.floor)


def verdict(lo: float, hi: float, tol: float, n_pairs: int) -> str:
    if not n_pairs or not (np.isfinite(lo) and np.isfinite(hi)):
        return "untestable"
    return "agree" if lo <= tol and hi >= -tol else "disagree"


def compare(df: pd.DataFrame, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """One row per (cell, kernel row, metric of TOLERANCES): the columns of ``COLUMNS``.
    Empty (with those columns) when the sweep has no kernel row beside its model twin."""
    present = rows_present(df["design"].unique()) if len(df) else []
    if not present:
        return pd.DataFrame(columns=COLUMNS)
    ok = df[df["status"] == "ok"]
    axes = stats.cell_axes(df)
    rows = []
    for kernel, model in present:
        for metric in TOLERANCES:
            pairs = stats._pairs_by_cell(stats._paired_wide(ok, metric), kernel, model)
            for cell_id, (kernel_values, model_values) in sorted(pairs.items()):
                both = ~(np.isnan(kernel_values) | np.isnan(model_values))
                row = stats.compare_pair(kernel_values[both], model_values[both], stats.Metric(metric, metric),
                                         alpha)
                lo, hi = row.get("diff_ci_lo", np.nan), row.get("diff_ci_hi", np.nan)
                tol = tolerance(metric, row["base_mean"])
                rows.append({"cell_id": cell_id, **axes.loc[cell_id].to_dict(), "kernel": kernel, "model": model,
                             "metric": metric, "n_pairs": row["n_pairs"], "kernel_mean": row["base_mean"],
                             "model_mean": row["cand_mean"], "diff_mean": row["diff_mean"], "diff_ci_lo": lo,
                             "diff_ci_hi": hi, "tolerance": tol, "verdict": verdict(lo, hi, tol, row["n_pairs"])})
    return pd.DataFrame(rows, columns=COLUMNS)


def agreement(table: pd.DataFrame) -> tuple[int, int]:
    """(metric-cells that agree, metric-cells tested)."""
    tested = table[table["verdict"] != "untestable"] if len(table) else table
    return int((tested["verdict"] == "agree").sum()) if len(tested) else 0, len(tested)


def per_metric(table: pd.DataFrame) -> pd.DataFrame:
    """Per metric: cells that agree, disagree and are untestable."""
    if table.empty:
        return pd.DataFrame(columns=["metric", *VERDICTS])
    counts = table.pivot_table(index="metric", columns="verdict", values="cell_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(index=[m for m in TOLERANCES if m in counts.index], columns=list(VERDICTS), fill_value=0)
    return counts.reset_index()


ANCHOR = "model-vs-kernel"      # the report section's anchor, linked from the verdict


def kernel_name(row: str) -> str:
    """'linux-6.1' -> 'Linux 6.1'."""
    return row.replace("linux-", "Linux ", 1)


def contents(designs) -> list[tuple[str, str]]:
    """The report's table-of-contents entry of the section, when the sweep has one."""
    return [(ANCHOR, "Model vs a real kernel")] if rows_present(designs) else []
