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
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweep import claims as claims_mod
from sweep import config, fmt, interrupt, regime, stats
from sweep.config import significance_settings
from sweep.outdir import SweepDir
from sweep.store import DiskFault, Store, disk_fault

SIGN_CONVENTION = ("Differences are candidate - baseline (in 'way2 vs v4.3' way2 is the candidate), "
                   "in the metric's unit; every compared metric is lower-is-better, so a negative "
                   "difference means the candidate is better. Relative changes (%) have the same sign.")
TABLES = ("table", "aggregates", "regimes", "pooled")     # Analysis fields cached as Parquet
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
    alpha: float
    correction: str
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

    def metric_counts(self, metric: str) -> pd.DataFrame:
        return self.counts[self.counts["metric"] == metric] if len(self.counts) else self.counts

    def pooled_of(self, metric: str) -> pd.DataFrame:
        return self.pooled[self.pooled["metric"] == metric].set_index("design")

    def all_zero(self, metric: str) -> bool:
        part = self.pooled_of(metric)
        return bool(len(part)) and bool(part["all_zero"].all())

    def differs(self, metric: str) -> bool:
        part = self.metric_counts(metric)
        return bool(len(part)) and bool((part["better"] + part["worse"]).sum() > 0)

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
        return {"answer": answer_sentences(self), "sign_convention": SIGN_CONVENTION,
                "designs": self.designs, "cells": self.n_cells, "headline": list(stats.HEADLINE),
                "pooled": pooled, "net_cells": net,
                "claims": [{"id": v.claim.id, "who": v.claim.who, "claim": v.claim.claim, "verdict": v.verdict,
                            "reason": v.reason} for v in self.verdicts]}


# ---------------------------------------------------------------- computed once, cached

def load(sweep_dir: SweepDir | str | Path, cfg=None) -> Analysis:
    """The analysis of the folder's stored results under ``cfg``'s stats settings (None:
    config.yaml's) - from the cache when it matches, else computed and cached."""
    sweep_dir = SweepDir.of(sweep_dir)
    df, (alpha, correction), folder = _locate(sweep_dir, cfg)
    if df.empty:
        raise ValueError(f"{sweep_dir.path}: no results to report")
    if not folder.exists():
        _write(folder, compute(df, alpha, correction, sweep_dir.claims))
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


def compute(df: pd.DataFrame, alpha: float, correction: str, claims_path: Path | None = None) -> Analysis:
    """Every statistic of a results table (the expensive step: bootstrap CIs per cell)."""
    regimes = regime.classify(df)
    return Analysis(df=df, table=stats.compare_cells(df, alpha=alpha, correction=correction),
                    aggregates=stats.aggregate(df, alpha), regimes=regimes,
                    verdicts=evaluate_claims(claims_path, df, regimes, alpha),
                    pooled=stats.pooled_means(df, alpha), alpha=alpha, correction=correction)


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


def _code_version() -> list[str]:
    import importlib

    from core import metrics

    files = [m.__file__ for m in (stats, regime, claims_mod, config, metrics)] + [__file__]
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
        if stale.name != folder.name and (not stale.name.startswith(".") or _orphan(stale.name)):
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
