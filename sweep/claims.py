"""The claims of the 2015 thread as testable statements (configs/claims.yaml), and their verdicts.

A claim names who made it, the metric it is about, two designs and the direction the
claimant expects ("a<b": the metric is lower under design a than under b), the cells where
it can be tested (an axis filter; a missing axis means any value) and the regimes
(``sweep.regime``) in which it is testable.  ``evaluate`` compares the two designs pair by
pair (same seed) over the claim's cells whose regime, under both designs, is one of the
claim's, with the paired tests of ``sweep.stats``:

  holds         the effect - the median over the cells of each cell's mean paired difference -
                is in the claimed direction with its stratified bootstrap interval
                (``stats.median_effect``) excluding 0, and no cell is significantly against
                it (Wilcoxon, Holm across the cells)
  refuted       the same, the other way
  inconclusive  anything else: no significant effect, or cells significantly on both sides
  untestable    the registry says why, or no cell of the sweep is in the claim's regimes

Every comparison uses the cells both designs ran (v6.18 runs no SLAB cell).  A median cannot
have the opposite sign of a strict majority of the cells, so neither can an effect or a
verdict.  ``VERDICT_RULE`` is this rule in one sentence, as the report prints it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from sweep.config import GRID_AXES, ConfigError, _did_you_mean, mix_dirs
from sweep.regime import REGIMES, matches

FIELDS = ("id", "who", "claim", "metric", "compare", "expect", "where", "regimes", "untestable", "note")
REQUIRED = ("id", "who", "claim", "metric", "compare", "expect")
EXPECT = ("a<b", "a>b")
FILTER_AXES = ("block", *GRID_AXES)
VERDICTS = ("holds", "refuted", "inconclusive", "untestable")
VERDICT_RULE = ("A claim **holds** when the median over its cells of the per-cell mean paired difference "
                "is in the claimed direction with its {confidence} interval (seeds resampled within each "
                "cell) excluding 0 and no cell is significantly against it ({correction}-adjusted Wilcoxon "
                "across the claim's cells, alpha {alpha}), is **refuted** when the same holds the other "
                "way, and is **inconclusive** otherwise; only cells where both designs ran, in the "
                "claim's regimes, count.")
CLAIMS_FILE = "claims.yaml"     # the copy of the registry a run leaves in its sweep folder


@dataclass(frozen=True)
class Claim:
    id: str
    who: str
    claim: str                      # one sentence
    metric: str                     # a core.METRICS name or a derived metric of sweep.stats
    compare: tuple[str, str]        # (design a, design b)
    expect: str                     # "a<b" or "a>b": the claimant's direction for metric(a) vs metric(b)
    where: dict = field(default_factory=dict)   # axis -> list of values; missing axis = any
    regimes: tuple[str, ...] = REGIMES[1:3]     # where it is testable
    untestable: str | None = None   # why it cannot be tested (then nothing is compared)
    note: str = ""                  # what the metric does and does not show


@dataclass
class Verdict:
    claim: Claim
    verdict: str                    # one of VERDICTS
    reason: str
    cells_tested: list[str]
    cells_holding: list[str]
    cells_against: list[str]
    effect: float | None            # median over cells of the mean paired difference b - a (metric's unit)
    ci: tuple[float, float] | None  # its stratified bootstrap interval
    unit: str
    by_regime: list = field(default_factory=list)   # [{regime, cells, effect, ci}] when it spans regimes


# ---------------------------------------------------------------- the registry file

def load_claims(path: str | Path, mixes: list[str] | None = None) -> list[Claim]:
    """The claims of a registry file; a bad entry raises ConfigError naming its id (or index)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read claims file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: must have a non-empty list `claims:`")
    known_mixes = mixes if mixes is not None else _known_mixes(path)
    claims, ids = [], set()
    for i, entry in enumerate(entries):
        claim = _claim(entry, f"{path}: claims[{i}]", known_mixes)
        if claim.id in ids:
            raise ConfigError(f"{path}: claim {claim.id!r}: id is used twice")
        ids.add(claim.id)
        claims.append(claim)
    return claims


def claims_of_sweep(sweep_dir: str | Path) -> list[Claim]:
    """The registry a run copied into its sweep folder ([] when the config named none)."""
    path = Path(sweep_dir) / CLAIMS_FILE
    return load_claims(path, mixes=None) if path.exists() else []


def metric_names() -> tuple[str, ...]:
    """Metrics a claim may name: the simulator's and those sweep.stats derives per workload."""
    from core.metrics import METRICS
    from sweep import stats

    row = {name: [1.0] for name in METRICS}
    derived = stats.workload_values(pd.DataFrame({**row, "status": ["ok"]})).columns
    return tuple(dict.fromkeys([*METRICS, *derived]))


def _known_mixes(path: Path) -> list[str]:
    dirs = [path.resolve().parent / "mixes", *mix_dirs(path)]
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def _claim(entry, where: str, mixes: list[str]) -> Claim:
    import core

    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(FIELDS)}")
    if isinstance(entry.get("id"), str) and entry["id"]:
        where = f"{where.split(': ')[0]}: claim {entry['id']!r}"
    for key in entry:
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key, FIELDS)}; allowed: {', '.join(FIELDS)}")
    for key in REQUIRED:
        if not entry.get(key):
            raise ConfigError(f"{where}: {key} is required")
    metrics = metric_names()
    if entry["metric"] not in metrics:
        raise ConfigError(f"{where}: unknown metric {entry['metric']!r}{_did_you_mean(entry['metric'], metrics)}")
    compare = entry["compare"]
    if not isinstance(compare, list) or len(compare) != 2 or compare[0] == compare[1]:
        raise ConfigError(f"{where}: compare must be two different designs [a, b], got {compare!r}")
    for design in compare:
        if design not in core.DESIGNS:
            raise ConfigError(f"{where}: unknown design {design!r}; allowed: {', '.join(core.DESIGNS)}")
    if entry["expect"] not in EXPECT:
        raise ConfigError(f"{where}: expect must be one of {', '.join(EXPECT)}, got {entry['expect']!r}")
    regimes = entry.get("regimes", list(REGIMES[1:3]))
    if not isinstance(regimes, list) or not regimes:
        raise ConfigError(f"{where}: regimes must be a non-empty list of {', '.join(REGIMES)}")
    for regime in regimes:
        if regime not in REGIMES:
            raise ConfigError(f"{where}: unknown regime {regime!r}; allowed: {', '.join(REGIMES)}")
    return Claim(id=str(entry["id"]), who=str(entry["who"]), claim=str(entry["claim"]).strip(),
                 metric=entry["metric"], compare=tuple(compare), expect=entry["expect"],
                 where=_filter(entry.get("where") or {}, where, mixes), regimes=tuple(regimes),
                 untestable=(str(entry["untestable"]).strip() if entry.get("untestable") else None),
                 note=str(entry.get("note") or "").strip())


def _filter(where_: dict, where: str, mixes: list[str]) -> dict:
    """{axis: [values]} with every axis and value checked."""
    from core.spec import ALLOCATORS
    from sweep.grid import size_bytes

    if not isinstance(where_, dict):
        raise ConfigError(f"{where}: where must map axes to value lists")
    out = {}
    for axis, values in where_.items():
        if axis not in FILTER_AXES:
            raise ConfigError(f"{where}: where.{axis}: unknown axis{_did_you_mean(axis, FILTER_AXES)}; "
                              f"allowed: {', '.join(FILTER_AXES)}")
        values = values if isinstance(values, list) else [values]
        for value in values:
            bad = None
            if axis == "mix" and value not in mixes:
                bad = f"unknown mix{_did_you_mean(value, mixes)}; allowed: {', '.join(mixes)}"
            elif axis == "allocator" and value not in ALLOCATORS:
                bad = f"allowed: {', '.join(ALLOCATORS)}"
            elif axis in ("limit", "high"):
                try:
                    size_bytes(value)
                except (ValueError, IndexError):
                    bad = 'expected a size ("32M"), a ratio or "max"'
            elif axis in ("order", "nodes", "cpus") and (isinstance(value, bool) or not isinstance(value, int)):
                bad = "expected an integer"
            elif axis == "fragment" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                bad = "expected a number"
            if bad:
                raise ConfigError(f"{where}: where.{axis}: {value!r}: {bad}")
        out[axis] = list(values)
    return out


# ---------------------------------------------------------------- verdicts

def testable_cells(claim: Claim, regimes: pd.DataFrame) -> list[str]:
    """Cells inside the claim's filter whose regime under both compared designs is one of the
    claim's regimes."""
    if regimes.empty:
        return []
    inside = regimes[matches(regimes, claim.where) & regimes["design"].isin(claim.compare)]
    ok = inside.assign(ok=inside["regime"].isin(claim.regimes)).groupby("cell_id")["ok"].agg(["all", "size"])
    return sorted(ok.index[ok["all"] & (ok["size"] == 2)])


def evaluate(claims, results: pd.DataFrame, regimes: pd.DataFrame, alpha: float = 0.05) -> list[Verdict]:
    """One verdict per claim (see the module docstring)."""
    from sweep import stats

    values = stats.workload_values(results) if not results.empty else results
    return [_verdict(claim, values, regimes, alpha) for claim in claims]


def _verdict(claim: Claim, values: pd.DataFrame, regimes: pd.DataFrame, alpha: float) -> Verdict:
    from sweep import stats
    from statsmodels.stats.multitest import multipletests

    unit = unit_of(claim.metric)
    if claim.untestable:
        return Verdict(claim, "untestable", claim.untestable, [], [], [], None, None, unit)
    cells = testable_cells(claim, regimes)
    a, b = claim.compare
    pairs = {}
    for cell_id in cells:
        wide = values[values["cell_id"] == cell_id].pivot_table(
            index="seed", columns="design", values=claim.metric, aggfunc="first")
        if a in wide and b in wide:
            both = wide[[a, b]].dropna()
            if len(both):
                pairs[cell_id] = (both[a].to_numpy(float), both[b].to_numpy(float))
    missing = [d for d in claim.compare if values.empty or d not in set(values["design"])]
    if missing:
        return Verdict(claim, "untestable", f"{' and '.join(missing)} not among this sweep's designs "
                       f"(add it to designs)", [], [], [], None, None, unit)
    if not pairs:
        where = ", ".join(claim.regimes)
        return Verdict(claim, "untestable", f"no cell of this sweep is {where} under both {a} and {b} "
                       f"inside the claim's filter", [], [], [], None, None, unit)
    sign = 1 if claim.expect == "a<b" else -1          # expected sign of b - a
    tested, p, direction = list(pairs), [], []
    metric = stats.METRICS_BY_NAME.get(claim.metric) or stats.Metric(claim.metric, claim.metric,
                                                                    binary=claim.metric in stats.INDICATORS)
    for cell_id in tested:
        row = stats.compare_pair(*pairs[cell_id], metric, alpha, resamples=0)
        p.append(row["p_value"])
        direction.append(row["direction"])
    p_holm = multipletests(p, alpha=alpha, method="holm")[1]
    holding = [c for c, q, d in zip(tested, p_holm, direction) if q < alpha and d == sign]
    against = [c for c, q, d in zip(tested, p_holm, direction) if q < alpha and d == -sign]
    diffs = {c: pairs[c][1] - pairs[c][0] for c in tested}
    effect, lo, hi = stats.median_effect(list(diffs.values()), alpha)
    found = stats.effect_direction(effect, lo, hi) * sign      # +1: as claimed, -1: the other way
    n = len(tested)
    counts = f"{len(holding)} of {n} cells significantly for, {len(against)} against"
    median = f"median per-cell {b} - {a} = {effect:.4g} {unit} [{lo:.4g}, {hi:.4g}]"
    if found > 0 and not against:
        verdict, reason = "holds", f"{median}; {counts}"
    elif found < 0 and not holding:
        verdict, reason = "refuted", f"the difference goes the other way: {median}; {counts}"
    else:
        verdict, reason = "inconclusive", f"{median}; {counts}"
    return Verdict(claim, verdict, reason, tested, holding, against, effect, (lo, hi), unit,
                   by_regime=_by_regime(diffs, regimes, claim.compare, alpha))


def _by_regime(diffs: dict, regimes: pd.DataFrame, designs, alpha: float) -> list[dict]:
    """The effect per regime of the claim's cells when they span more than one (a cell's
    regime: the heavier of its two designs' regimes, in REGIMES order)."""
    from sweep import stats

    pair = regimes[regimes["cell_id"].isin(list(diffs)) & regimes["design"].isin(designs)]
    heavier = pair.groupby("cell_id")["regime"].agg(lambda r: max(r, key=REGIMES.index))
    if heavier.nunique() < 2:
        return []
    out = []
    for name in (r for r in REGIMES if r in set(heavier)):
        cells = sorted(heavier.index[heavier == name])
        effect, lo, hi = stats.median_effect([diffs[c] for c in cells], alpha)
        out.append({"regime": name, "cells": len(cells), "effect": effect, "ci": [lo, hi]})
    return out


def unit_of(metric: str) -> str:
    for suffix, unit in (("_pages", "pages"), ("_ns", "ns"), ("_page_ms", "page*ms"), ("_rate", "ratio"),
                         ("_per_kentry", "per kernel entry"), ("_per_slab", "per new slab"),
                         ("_objects", "objects")):
        if metric.endswith(suffix):
            return unit
    from sweep.stats import INDICATORS

    return "count" if metric not in INDICATORS else "share of workloads"


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per claim, for the report and MLflow."""
    return pd.DataFrame([{
        "id": v.claim.id, "who": v.claim.who, "metric": v.claim.metric,
        "compare": f"{v.claim.compare[0]} vs {v.claim.compare[1]}", "expect": v.claim.expect,
        "regimes": ", ".join(v.claim.regimes), "verdict": v.verdict, "effect": v.effect,
        "ci_lo": v.ci[0] if v.ci else None, "ci_hi": v.ci[1] if v.ci else None, "unit": v.unit,
        "cells": len(v.cells_tested), "cells_holding": len(v.cells_holding),
        "cells_against": len(v.cells_against), "reason": v.reason,
        "by_regime": "; ".join(f"{r['regime']}: {r['effect']:.4g} over {r['cells']} cells" for r in v.by_regime)}
        for v in verdicts])
