"""What a sweep found: its statistics, computed once from the store and cached in the folder.

``load(SweepDir)`` reads the planned rows of ``results.sqlite`` and returns the
:class:`Analysis` both the report (``sweep.report``) and MLflow (``sweep.tracking``) show:
the paired comparisons per cell (``stats.compare_cells``), the aggregates per (cell,
design), the regimes (``sweep.regime``), the claims' verdicts (``sweep.claims``) and the
pooled means - and, from them, the answer in sentences.  Neither reader builds the other.

The tables are cached in ``<sweep_dir>/analysis/<key>/``, where the key hashes what they
are computed from: the stored rows, the ``stats`` settings (alpha, correction), the claims
registry and the code that computes them (the statistics modules, sweep.config's lists,
core.metrics and the versions of the libraries they call).  So ``python -m sweep report``
and ``log``, in any order, compute the statistics once; a changed store, setting or module
recomputes them.
The cache is written to a temporary folder (``.<key>.<pid>``) and renamed into place: a
reader never sees half of it, and the next write removes the folder of a writer killed first.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweep import claims as claims_mod
from sweep import calibration as calibration_mod
from sweep import config, fmt, interrupt, pool, regime, stats
from sweep.config import significance_settings
from sweep.outdir import SweepDir
from sweep.store import DiskFault, Store, disk_fault

SIGN_CONVENTION = ("Differences are candidate - baseline (in 'way2 vs v4.3' way2 is the candidate), "
                   "in the metric's unit; every compared metric is lower-is-better, so a negative "
                   "difference means the candidate is better. Relative changes (%) have the same sign.")
CELLS = "cells"                  # analysis/cells/<key>.json: one cell's comparisons (cache_cell)
TABLES = ("table", "aggregates", "regimes", "pooled", "effects", "calibration")   # Analysis fields cached as Parquet
VERDICTS_FILE = "verdicts.json"
PACKAGE_MIXES = Path(__file__).resolve().parent.parent / "configs" / "mixes"
LIBRARIES = ("numpy", "pandas", "scipy", "statsmodels")


@dataclass
class Analysis:
    df: pd.DataFrame                # the planned rows of the store, failed workloads included
    table: pd.DataFrame             # stats.compare_cells: one row per (cell, pair, metric)
    aggregates: pd.DataFrame        # stats.aggregate: one row per (cell, design)
    regimes: pd.DataFrame           # regime.classify
    verdicts: list                  # claims.Verdict per claim of the folder's registry
    pooled: pd.DataFrame            # stats.pooled_means
    effects: pd.DataFrame           # stats.design_effects: per pair and metric, over the cells both ran
    alpha: float
    correction: str
    calibration: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=calibration_mod.COLUMNS))
    counts: pd.DataFrame = field(init=False)    # stats.summarize_verdicts(table)
    designs: list[str] = field(init=False)
    pairs: list[tuple[str, str]] = field(init=False)

    def __post_init__(self):
        self.counts = stats.summarize_verdicts(self.table)
        self.designs = stats.design_order(self.df["design"].unique())
        self.pairs = stats.comparisons(self.designs)

    @property
    def n_cells(self) -> int:
        return int(self.df["cell_id"].nunique())

    # The report and the verdict ask for one metric or one pair hundreds of times; a
    # boolean filter of the whole frame per question cost seconds on a default sweep, so
    # each table is split (or indexed) once, on first use.  The tables are not changed
    # after construction; callers must not modify the frames these return.

    @functools.cached_property
    def _counts_by_metric(self) -> dict[str, pd.DataFrame]:
        return dict(tuple(self.counts.groupby("metric", sort=False))) if len(self.counts) else {}

    @functools.cached_property
    def _pooled_by_metric(self) -> dict[str, pd.DataFrame]:
        return {metric: part.set_index("design") for metric, part in self.pooled.groupby("metric", sort=False)}

    @functools.cached_property
    def _effect_rows(self) -> dict[tuple[str, str, str], dict]:
        return _first_rows(self.effects)

    @functools.cached_property
    def _count_rows(self) -> dict[tuple[str, str, str], dict]:
        return _first_rows(self.counts)

    def metric_counts(self, metric: str) -> pd.DataFrame:
        if not len(self.counts):
            return self.counts
        return self._counts_by_metric.get(metric, self.counts.iloc[0:0])

    def pooled_of(self, metric: str) -> pd.DataFrame:
        part = self._pooled_by_metric.get(metric)
        return part if part is not None else self.pooled.iloc[0:0].set_index("design")

    def all_zero(self, metric: str) -> bool:
        part = self.pooled_of(metric)
        return bool(len(part)) and bool(part["all_zero"].all())

    def differs(self, metric: str) -> bool:
        part = self.metric_counts(metric)
        return bool(len(part)) and bool((part["better"] + part["worse"]).sum() > 0)

    def effect(self, baseline: str, candidate: str, metric: str):
        """The ``effects`` row of a pair and metric (either order of the pair is accepted:
        then the signs are flipped so the row reads "candidate - baseline"), None if absent."""
        for base, cand, flip in ((baseline, candidate, 1), (candidate, baseline, -1)):
            found = self._effect_rows.get((base, cand, metric))
            if found is not None and found["n_cells"] > 0:
                row = dict(found)           # a copy: the flip below must not reach the index
                if flip < 0:
                    lo, hi = -row["median_hi"], -row["median_lo"]
                    row.update(baseline=baseline, candidate=candidate, base_mean=row["cand_mean"],
                               cand_mean=row["base_mean"], median_diff=-row["median_diff"], median_lo=lo,
                               median_hi=hi, direction=-row["direction"],
                               pooled_pct=stats.pct_change(row["cand_mean"], row["base_mean"]))
                return row
        return None

    def cell_counts(self, baseline: str, candidate: str, metric: str) -> tuple[int, int, int]:
        """(cells where candidate is significantly better, worse, cells compared) of a pair,
        either order."""
        for base, cand, flip in ((baseline, candidate, False), (candidate, baseline, True)):
            r = self._count_rows.get((base, cand, metric))
            if r is not None:
                tested = int(r["better"] + r["worse"] + r["indistinguishable"])
                better, worse = int(r["better"]), int(r["worse"])
                return (worse, better, tested) if flip else (better, worse, tested)
        return 0, 0, 0

    def decided(self, baseline: str, candidate: str, metric: str) -> int:
        """-1 / +1 when the candidate is decidedly lower / higher than the baseline: the median
        per-cell difference's interval excludes 0 (``stats.effect_direction``) AND more cells
        are significantly on that side than on the other (so a direction the report states
        is never one the cell counts contradict); else 0."""
        row = self.effect(baseline, candidate, metric)
        if row is None or not row["direction"]:
            return 0
        better, worse, _ = self.cell_counts(baseline, candidate, metric)
        side = (worse > better) - (better > worse)
        return int(row["direction"]) if side == row["direction"] else 0

    def model_version(self) -> str:
        """The simulator's version(s) the model rows ran (a kernel row's column holds the
        kernel's release instead: `kernel_versions`)."""
        versions = self._versions(~self.df["design"].isin(list(config.KERNEL_ROWS)))
        if versions:
            return ", ".join(versions)
        import core
        return str(core.MODEL_VERSION)

    def kernel_versions(self) -> str:
        return ", ".join(self._versions(self.df["design"].isin(list(config.KERNEL_ROWS))))

    def _versions(self, rows) -> list[str]:
        if "model_version" not in self.df:
            return []
        return sorted(set(self.df.loc[rows, "model_version"].dropna().astype(str)))

    def metrics_shown(self) -> list:
        return [m for m in stats.KEY_METRICS if len(self.pooled_of(m.name))]

    def summary(self) -> dict:
        """The answer and the headline numbers (the MLflow parent run; report/summary.json)."""
        pooled = {d: {} for d in self.designs}
        for row in self.pooled.itertuples(index=False):
            pooled[row.design][row.metric] = row.mean
        net = {}
        for row in self.counts.itertuples(index=False):
            net.setdefault(f"{row.candidate}_vs_{row.baseline}", {})[row.metric] = int(row.better - row.worse)
        return {"verdict": verdict_text(self), "answer": answer_sentences(self), "sign_convention": SIGN_CONVENTION,
                "designs": self.designs, "cells": self.n_cells, "headline": list(stats.HEADLINE),
                "pooled": pooled, "net_cells": net,
                "claims": [{"id": v.claim.id, "who": v.claim.who, "claim": v.claim.claim, "verdict": v.verdict,
                            "reason": v.reason} for v in self.verdicts]}


def _first_rows(frame: pd.DataFrame) -> dict[tuple[str, str, str], dict]:
    """(baseline, candidate, metric) -> the first row of ``frame`` with that key, as a dict."""
    index = {}
    for row in frame.to_dict("records"):
        index.setdefault((row["baseline"], row["candidate"], row["metric"]), row)
    return index


# ---------------------------------------------------------------- computed once, cached

def load(sweep_dir: SweepDir | str | Path, cfg=None) -> Analysis:
    """The analysis of the folder's stored results under ``cfg``'s stats settings (None:
    config.yaml's) - from the cache when it matches, else computed and cached."""
    sweep_dir = SweepDir.of(sweep_dir)
    df, (alpha, correction), folder = _locate(sweep_dir, cfg)
    if df.empty:
        raise ValueError(f"{sweep_dir.path}: no results to report")
    if not folder.exists():
        _write(folder, compute(df, alpha, correction, sweep_dir.claims, cells_dir=sweep_dir.analysis_dir / CELLS))
    return _read(folder, df)


def cached(sweep_dir: SweepDir | str | Path, cfg=None) -> Path | None:
    """The cache folder of the analysis ``load`` would return, None while it is not cached."""
    _, _, folder = _locate(SweepDir.of(sweep_dir), cfg)
    return folder if folder.exists() else None


def _locate(sweep_dir: SweepDir, cfg) -> tuple[pd.DataFrame, tuple[float, str], Path]:
    """The stored rows, the (alpha, correction) in force and the cache folder they key."""
    with Store(sweep_dir.results) as store:
        df = store.dataframe()
    settings = significance_settings(sweep_dir.config_dict(cfg).get("stats"))
    registry = sweep_dir.claims.read_bytes() if sweep_dir.claims.exists() else b""
    return df, settings, sweep_dir.analysis_dir / cache_key(df, *settings, registry)


def compute(df: pd.DataFrame, alpha: float, correction: str, claims_path: Path | None = None,
            workers: int | None = None, cells_dir: Path | None = None) -> Analysis:
    """Every statistic of a results table (the expensive step: bootstrap CIs per cell).

    A cell's paired comparisons come from ``cells_dir`` when they were cached there (by
    ``cache_cell`` while the sweep ran, or by an earlier analysis of the same rows); the
    rest, and the other statistics - the aggregates, the pooled means, the design effects,
    the calibration against a real kernel, the regimes with the claims - are independent
    jobs run on ``workers`` processes (``sweep.pool``; None: by the sweep's size) and
    combined here in a fixed order, so the result is the same, bit for bit, with any number
    of workers and any share of cached cells."""
    workers = pool.workers_for(len(df)) if workers is None else workers
    values = stats.workload_values(df)
    pairs = stats.comparisons(values["design"].unique())
    by_cell = dict(iter(values.groupby("cell_id", sort=False)))
    keys = {c: cell_key(by_cell.get(c, values.iloc[0:0]), alpha, pairs) for c in stats.cell_axes(df).index}
    per_cell = _cached_cells(cells_dir, keys)
    missing = [c for c in keys if c not in per_cell]
    parts = [missing[i::max(1, 2 * workers)] for i in range(max(1, 2 * workers))]
    metrics = list(stats.KEY_METRICS)
    jobs = [(stats.cell_comparisons, (values[values["cell_id"].isin(part)], part, alpha, metrics, pairs))
            for part in parts if part]
    jobs += [(stats.aggregate, (df, alpha)), (stats.pooled_means, (df, alpha)),
             (stats.design_effects, (df, alpha)), (calibration_mod.compare, (df, alpha)),
             (_regimes_and_verdicts, (df, claims_path, alpha))]
    *computed, aggregates, pooled, effects, calibration, (regimes, verdicts) = pool.run(jobs, workers)
    for part in computed:
        per_cell.update(part)
        for cell_id, rows in part.items():
            _write_cell(cells_dir, keys[cell_id], rows)
    _prune_cells(cells_dir, set(keys.values()))
    rows = stats.assemble_rows(df, per_cell)
    return Analysis(df=df, table=stats.comparison_table(rows, alpha, correction), aggregates=aggregates,
                    regimes=regimes, verdicts=verdicts, pooled=pooled, effects=effects, calibration=calibration,
                    alpha=alpha, correction=correction)


# ---------------------------------------------------------------- one cell, while the sweep runs

def cache_cell(sweep_dir: SweepDir, cell_df: pd.DataFrame, alpha: float, designs) -> list[dict]:
    """The paired comparisons of one finished cell (``cell_df``: its stored rows), cached
    for ``compute``; returns them (``stats.compare_cell``'s rows).  Called while the sweep
    runs (``sweep.cellwise``): the final analysis then only combines and corrects."""
    values = stats.workload_values(cell_df)
    pairs = stats.comparisons(designs)
    key = cell_key(values, alpha, pairs)
    cached = _cached_cells(sweep_dir.analysis_dir / CELLS, {"cell": key})
    if cached:
        return cached["cell"]
    rows = stats.compare_cell(values, alpha, list(stats.KEY_METRICS), pairs)
    _write_cell(sweep_dir.analysis_dir / CELLS, key, rows)
    return rows


def cell_key(values: pd.DataFrame, alpha: float, pairs: list[tuple[str, str]]) -> str:
    """What a cell's comparisons depend on: its workloads' values (``workload_values``,
    as floats: the same whether the cell was read alone or with the whole sweep), the pairs,
    alpha and the code."""
    names = [m.name for m in stats.KEY_METRICS]
    part = values.sort_values(["design", "seed"])
    digest = hashlib.sha256(json.dumps([alpha, pairs, names, stats.BOOTSTRAP_RESAMPLES, _code_version(),
                                        part["design"].astype(str).tolist(),
                                        part["seed"].astype("int64").tolist()]).encode())
    digest.update(part[names].to_numpy(dtype=float).tobytes())
    return digest.hexdigest()[:24]


def _cached_cells(folder: Path | None, keys: dict[str, str]) -> dict[str, list[dict]]:
    """name -> the cached rows of the cells of ``keys`` (name -> key) found in ``folder``."""
    found = {}
    if folder is None:
        return found
    for name, key in keys.items():
        try:
            found[name] = json.loads((folder / f"{key}.json").read_text())
        except (OSError, ValueError):            # not cached, or cut short: computed again
            pass
    return found


def _write_cell(folder: Path | None, key: str, rows: list[dict]) -> None:
    """Cache a cell's rows (JSON: floats round-trip exactly); a cache that cannot be written
    only costs the time to compute it again."""
    if folder is None:
        return
    tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(rows, default=_plain))
        tmp.rename(folder / f"{key}.json")
    except OSError:
        tmp.unlink(missing_ok=True)


def _prune_cells(folder: Path | None, keep: set[str]) -> None:
    """Remove the cached cells this analysis did not use (rows since re-run or grown)."""
    if folder is None or not folder.exists():
        return
    for path in folder.glob("*.json"):
        if path.stem not in keep:
            path.unlink(missing_ok=True)


def _plain(value):
    """numpy scalars as Python numbers for JSON."""
    return value.item()


def _regimes_and_verdicts(df: pd.DataFrame, claims_path: Path | None, alpha: float) -> tuple[pd.DataFrame, list]:
    regimes = regime.classify(df)
    return regimes, evaluate_claims(claims_path, df, regimes, alpha)


def evaluate_claims(path: Path | None, df: pd.DataFrame, regimes: pd.DataFrame, alpha: float) -> list:
    """Verdicts on the claims registry the run copied into the sweep folder (none: [])."""
    if path is None or not path.exists() or df["design"].nunique() < 2:
        return []
    # the mixes a claim may name: this sweep's and the package's (``claims_of_sweep`` would
    # look them up relative to the current folder, so a report built elsewhere would fail)
    mixes = sorted(set(df["mix"].dropna()) | {p.stem for p in PACKAGE_MIXES.glob("*.yaml")})
    return claims_mod.evaluate(claims_mod.load_claims(path, mixes=mixes), df, regimes, alpha)


def cache_key(df: pd.DataFrame, alpha: float, correction: str, registry: bytes) -> str:
    """What the cached statistics depend on: the rows, the settings, the registry, the code."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(map(str, df.columns)), alpha, correction, _code_version()]).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    digest.update(registry)
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _code_version() -> list[str]:
    import importlib

    from core import metrics

    files = [m.__file__ for m in (stats, regime, claims_mod, config, metrics, calibration_mod)] + [__file__]
    sources = hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()
    return [sources, *(importlib.import_module(lib).__version__ for lib in LIBRARIES)]


def _write(folder: Path, analysis: Analysis) -> None:
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    interrupt.checkpoint("cache")       # (tests/test_resource_faults.py fills the disk here)
    try:
        tmp.mkdir(parents=True)
        for name in TABLES:
            getattr(analysis, name).to_parquet(tmp / f"{name}.parquet", index=False)
        meta = {"alpha": analysis.alpha, "correction": analysis.correction,
                "verdicts": [dataclasses.asdict(v) for v in analysis.verdicts]}
        (tmp / VERDICTS_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    except Exception as err:        # e.g. a full disk: no half-written cache stays behind
        fault = disk_fault(err, tmp)    # (looked at before the clean-up frees the space)
        shutil.rmtree(tmp, ignore_errors=True)
        if fault is not None:
            raise DiskFault(folder.parent, fault.problem) from err
        raise
    try:
        tmp.rename(folder)
    except OSError:                 # another process cached the same key first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in folder.parent.iterdir():
        if stale.name not in (folder.name, CELLS) and (not stale.name.startswith(".") or _orphan(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)


def _orphan(name: str) -> bool:
    """A ``.<key>.<pid>`` folder whose writer is gone (killed before its rename); a live
    writer's is left to it."""
    pid = name.rsplit(".", 1)[-1]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):    # no such process (or no such pid at all)
        return True
    except PermissionError:                        # alive, another user's
        return False
    return False


def _read(folder: Path, df: pd.DataFrame) -> Analysis:
    meta = json.loads((folder / VERDICTS_FILE).read_text())
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLES}
    return Analysis(df=df, verdicts=[_verdict(v) for v in meta["verdicts"]], alpha=meta["alpha"],
                    correction=meta["correction"], **tables)


def _verdict(record: dict) -> claims_mod.Verdict:
    claim = record["claim"]
    claim = claims_mod.Claim(**{**claim, "compare": tuple(claim["compare"]), "regimes": tuple(claim["regimes"])})
    ci = tuple(record["ci"]) if record["ci"] is not None else None
    return claims_mod.Verdict(**{**record, "claim": claim, "ci": ci})


# ---------------------------------------------------------------- the answer, in sentences

def answer_sentences(analysis: Analysis) -> list[str]:
    """The first thing a reader sees: what differs, by how much, and what does not - the
    user-visible ENOMEM line first, whatever it says."""
    lines = []
    null, zero = [], []
    for metric in analysis.metrics_shown():
        if metric.binary:                    # the headline, null or not
            lines.insert(0, _enomem_sentence(analysis, metric))
        elif analysis.all_zero(metric.name):
            zero.append(metric)
        elif analysis.differs(metric.name):
            lines.append(_metric_sentence(analysis, metric))
        else:
            null.append(metric)
    if null:
        lines.append("**No significant difference in any cell** for any pair of designs: "
                     + "; ".join(f"{m.label} ({pooled_inline(analysis, m)})" for m in null) + ".")
    if zero:
        lines.append("**Zero in every workload** under every design: "
                     + ", ".join(m.label for m in zero) + ".")
    if analysis.verdicts:
        tally = pd.Series([v.verdict for v in analysis.verdicts]).value_counts()
        lines.append(f"**The 2015 thread's claims** ({len(analysis.verdicts)}): "
                     + ", ".join(f"{int(tally[v])} {v}" for v in claims_mod.VERDICTS if v in tally)
                     + " (table below).")
    return lines


def _enomem_sentence(analysis: Analysis, metric) -> str:
    if analysis.all_zero(metric.name):
        ok = int((analysis.df["status"] == "ok").sum())
        return (f"**{metric.label}: none.** Not one of {ok:,} workloads saw a user-visible ENOMEM, "
                f"under any design, in any of the {analysis.n_cells} cells.")
    if analysis.differs(metric.name):
        return _metric_sentence(analysis, metric)
    return (f"**{metric.label}: no difference.** No cell differs significantly in any pair of designs "
            f"({pooled_inline(analysis, metric)}, {analysis.n_cells} cells).")


def _metric_sentence(analysis: Analysis, metric) -> str:
    pooled = analysis.pooled_of(metric.name)
    best = pooled["mean"].idxmin()
    shown = pooled["mean"].map(lambda v: fmt.mean(v, metric))
    tied = [d for d in pooled.index if shown[d] == shown[best]]
    lowest = f"lowest under {best}" if len(tied) == 1 else f"lowest under {' and '.join(tied)} (tied)"
    pairs = []
    for row in analysis.metric_counts(metric.name).itertuples(index=False):
        if row.better or row.worse:
            tested = row.better + row.worse + row.indistinguishable
            pairs.append(f"{row.candidate} is better than {row.baseline} in {row.better} of {tested} cells, "
                         f"worse in {row.worse}")
    return (f"**{metric.label}**: {lowest} (pooled means {pooled_inline(analysis, metric)}); "
            + "; ".join(pairs) + ".")


def pooled_inline(analysis: Analysis, metric) -> str:
    pooled = analysis.pooled_of(metric.name)
    return ", ".join(f"{d} {fmt.mean(pooled.loc[d, 'mean'], metric)}" for d in pooled.index)


# ---------------------------------------------------------------- the verdict: three to five sentences

# the harms the 2015 thread argued about and the costs of avoiding them: the rows of the
# report's comparison table and what the verdict weighs (each a stats.KEY_METRICS name)
HARMS = {"enomem": "user-visible ENOMEM",
         "overshoot_high_peak_pages": "peak overshoot over memory.high",
         "overshoot_high_integral_page_ms": "overshoot over memory.high over time",
         "overshoot_max_peak_pages": "overshoot over memory.max",
         "reclaim_rounds_locked": "reclaim under locks",
         "slub_order_fallback_rate": "SLUB order fallbacks",
         "slab_wrong_node_objects": "wrong-node slab objects",
         "nowait_failure_rate": "GFP_NOWAIT failures",
         "atomic_failure_rate": "GFP_ATOMIC failures"}
COSTS = {"syscall_latency_p99_ns": "syscall p99 latency",
         "charge_forced_pages": "pages force-charged past memory.max"}
WHO = {"way1": "way1 (Heo)", "way2": "way2 (Davydov)", "v4.3": "v4.3 (as shipped)",
       "way2+": "way2+", "v6.18": "v6.18"}


def verdict_text(analysis: Analysis) -> str:
    """The verdict as one paragraph (``verdict_sentences`` joined)."""
    return " ".join(verdict_sentences(analysis))


def verdict_sentences(analysis: Analysis) -> list[str]:
    """Three to five sentences written from the comparison (``effects``: the median per-cell
    difference of each pair over the cells both ran) and the claims: who wins way1 vs way2 on
    the thread's harms, what the winner pays, how sure, where v6.18 stands, and what it rests
    on - with the simulator and model version named, and harms without evidence said so."""
    shown = [m for m in (*HARMS, *COSTS) if len(analysis.pooled_of(m))]
    harms = [m for m in HARMS if m in shown and not analysis.all_zero(m)]
    costs = [m for m in COSTS if m in shown]
    sentences = []
    if {"way1", "way2"} <= set(analysis.designs):
        sentences += _way1_vs_way2(analysis, harms, costs)
    else:
        sentences.append(f"This sweep ran {', '.join(analysis.designs)}, not both way1 and way2, so it cannot "
                         f"say which 2015 design wins.")
    sentences.append(_how_sure(analysis))
    if "v6.18" in analysis.designs:
        sentences.append(_modern(analysis, harms + costs))
    sentences.append(_rests_on(analysis, [m for m in HARMS if m in shown and m not in harms]))
    return sentences + _calibrated(analysis)


def _calibrated(analysis: Analysis) -> list[str]:
    """How well the model row is calibrated against the real kernel the sweep ran beside it
    (``sweep.calibration``); nothing without a kernel row."""
    table = analysis.calibration
    sentences = []
    for kernel, model in calibration_mod.rows_compared(table):
        agree, tested = calibration_mod.agreement(table[(table["kernel"] == kernel) & (table["model"] == model)])
        sentences.append(f"The {model} row agrees with {calibration_mod.kernel_name(kernel)} on {agree} of {tested} "
                         f"metric-cells within tolerance ([Model vs a real kernel](#{calibration_mod.ANCHOR})).")
    return sentences


def _way1_vs_way2(analysis: Analysis, harms: list[str], costs: list[str]) -> list[str]:
    lower = {d: [m for m in harms if _lower(analysis, d, _other(d), m)] for d in ("way1", "way2")}
    if lower["way1"] and lower["way2"]:
        first = (f"**Split verdict between the 2015 designs**: way2 (Davydov) is lower on "
                 f"{_list(analysis, 'way2', 'way1', lower['way2'])}; way1 (Heo) on "
                 f"{_list(analysis, 'way1', 'way2', lower['way1'])}.")
        return [first, _costs_sentence(analysis, None, costs)]
    if not lower["way1"] and not lower["way2"]:
        first = ("**No significant difference between way1 (Heo) and way2 (Davydov)** on any harm the 2015 thread argued "
                 f"about: on {_names(harms) or 'none of them'} the median per-cell difference is not significant.")
        return [first, _costs_sentence(analysis, None, costs)]
    winner = "way2" if lower["way2"] else "way1"
    loser = _other(winner)
    same = [m for m in harms if m not in lower[winner]]
    first = (f"**{WHO[winner]} beats {WHO[loser]}** on the harms of the 2015 thread: lower "
             f"{_list(analysis, winner, loser, lower[winner])}"
             + (f"; no significant difference in {_names(same)}" if same else "") + ".")
    return [first, _costs_sentence(analysis, winner, costs)]


def _costs_sentence(analysis: Analysis, winner: str | None, costs: list[str]) -> str:
    if winner is None:
        paid = {d: [m for m in costs if _lower(analysis, _other(d), d, m)] for d in ("way1", "way2")}
        if not paid["way1"] and not paid["way2"]:
            return f"Neither pays a significant cost in {_names(costs) or 'the costs measured'}."
        return " ".join(f"{WHO[d]} pays in {_list(analysis, _other(d), d, paid[d], worse=True)}."
                        for d in ("way1", "way2") if paid[d])
    loser = _other(winner)
    paid = [m for m in costs if _lower(analysis, loser, winner, m)]
    if not paid:
        return (f"It pays nothing measurable for it: {_names(costs) or 'no cost metric'} show no significant "
                f"per-cell difference against {loser}.")
    return f"What {winner} pays: more {_list(analysis, loser, winner, paid, worse=True)}."


def _how_sure(analysis: Analysis) -> str:
    reps = fmt.value_range(analysis.df.groupby("cell_id")["replication"].nunique())
    pair = ("way1", "way2") if {"way1", "way2"} <= set(analysis.designs) else (analysis.pairs[0] if analysis.pairs else None)
    decided = ""
    if pair is not None:
        t = analysis.table
        rows = t[(t["baseline"] == pair[0]) & (t["candidate"] == pair[1]) & t["metric"].isin(list(HARMS))]
        tested = rows[rows["verdict"] != "untestable"]["cell_id"].nunique()
        differing = rows[rows["verdict"].isin(["better", "worse"])]["cell_id"].nunique()
        decided = (f"; {differing} of {tested} cells differ significantly between {pair[0]} and {pair[1]} "
                   f"on at least one harm")
    correction = "Holm" if stats.correction_method(analysis.correction) == "holm" else "Benjamini-Hochberg"
    if stats.sweep_power_warning(analysis.table, analysis.alpha, analysis.correction):
        decided += " (too few seeds for a cell to be significant on its own: raise `replications`)"
    return (f"How sure: {reps} seeds per cell, paired across the designs, in {analysis.n_cells} cells{decided} "
            f"({correction}-adjusted, alpha {analysis.alpha}); a direction counts only where the median "
            f"per-cell difference's {1 - analysis.alpha:.0%} interval excludes 0 and more cells are "
            f"significant for it than against; {_simulated(analysis)}.")


def _simulated(analysis: Analysis) -> str:
    kernels = [k for k, _ in calibration_mod.rows_present(analysis.designs)]
    who = (f"every figure but the {' and '.join(kernels)} row's ({analysis.kernel_versions()})"
           if kernels else "every figure")
    return (f"{who} is simulated (the kmemcg-sweep simulator, model {analysis.model_version()}), "
            f"not measured on a kernel")


def _modern(analysis: Analysis, metrics: list[str]) -> str:
    olds = [d for d in ("way1", "way2") if d in analysis.designs] or [d for d in analysis.designs if d != "v6.18"]
    beats = [m for m in metrics if all(_lower(analysis, "v6.18", d, m) for d in olds)]
    loses = {m: [d for d in olds if _lower(analysis, d, "v6.18", m)] for m in metrics}
    loses = {m: ds for m, ds in loses.items() if ds}
    vs = " and ".join(olds)
    both = "both " if len(olds) > 1 else ""
    text = (f"Today's kernel, v6.18, beats {both}{vs} on {_names(beats)}" if beats
            else f"Today's kernel, v6.18, beats {both}{vs} on none of these harms and costs")
    if loses:
        text += "; it is higher on " + ", ".join(f"{_label(m)} (than {' and '.join(ds)})" for m, ds in loses.items())
    else:
        text += "; it is higher than neither on any of them"
    cells = analysis.df.groupby("design")["cell_id"].nunique()
    if cells.get("v6.18", 0) < analysis.n_cells:
        text += f" (compared in the {int(cells.get('v6.18', 0))} of {analysis.n_cells} cells it ran: no SLAB in 6.x)"
    return text + "."


def _rests_on(analysis: Analysis, no_evidence: list[str]) -> str:
    """How many of the thread's claims are decided, naming only the refuted ones: a list of
    every id would bury the exceptions (the claims table lists each)."""
    if analysis.verdicts:
        held = [v.claim.id for v in analysis.verdicts if v.verdict == "holds"]
        refuted = [v.claim.id for v in analysis.verdicts if v.verdict == "refuted"]
        rest = len(analysis.verdicts) - len(held) - len(refuted)
        text = (f"It rests on {len(held) + len(refuted)} of the thread's {len(analysis.verdicts)} claims: "
                f"{len(held)} hold, {len(refuted)} refuted" + (f" ({', '.join(refuted)})" if refuted else "")
                + (f"; the other {rest} are inconclusive or untestable" if rest else "")
                if held or refuted else f"None of the thread's {len(analysis.verdicts)} claims is decided")
    else:
        text = "No claims registry was evaluated"
    if no_evidence:
        text += (f"; the sweep holds no evidence on {_names(no_evidence)}: zero in every workload under every "
                 f"design")
    return text + "."


def _lower(analysis: Analysis, better: str, than: str, metric: str) -> bool:
    """Is ``better`` decidedly lower than ``than`` (``Analysis.decided``)?"""
    return analysis.decided(than, better, metric) < 0


def _list(analysis: Analysis, better: str, than: str, metrics: list[str], worse: bool = False) -> str:
    """'overshoot over memory.max (lower in 9 of 20 cells, higher in 0), ...': names and cell
    counts only, so the sentence can be repeated; the values are in the comparison table
    right below the verdict."""
    parts = []
    for m in metrics:
        b, w, n = analysis.cell_counts(than, better, m)
        counts = (f"higher in {b} of {n} cells, lower in {w}" if worse
                  else f"lower in {b} of {n} cells, higher in {w}")
        parts.append(f"{_label(m)} ({counts})")
    return ", ".join(parts)


def _label(metric: str) -> str:
    return HARMS.get(metric) or COSTS.get(metric) or metric


def _names(metrics: list[str]) -> str:
    names = [_label(m) for m in metrics]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else ""


def _other(design: str) -> str:
    return "way1" if design == "way2" else "way2"
