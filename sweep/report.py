"""The sweep report: ``<sweep_dir>/report/`` - the answer first, the evidence after it.

``report.md`` and ``report.html`` open with what a reader needs without scrolling: the
answer in sentences with numbers (null results included), a summary table (metrics as
rows, the designs side by side as mmtests' compare-kernels puts kernels, pooled means with
their CI, better/worse cell counts per pair), the 2015 thread's claims with a verdict each
(``sweep.claims``), and the caveats (``sweep.regime``: idle or saturated cells; designs
and allocators not run).  Then a table of contents, the evidence per claim, where the
designs differ, regimes, method and run facts.  Per-cell tables go to ``cells.md`` (and
into collapsed ``<details>`` in the HTML).  ``report.html`` is one self-contained file -
its images are data URIs - so it renders in MLflow's sandboxed artifact viewer.

Sign convention, everywhere (report, figures, MLflow): a difference is **candidate -
baseline** ("way2 vs v4.3": way2 is the candidate) in the metric's unit; every compared
metric is lower-is-better, so a **negative difference means the candidate is better**.

The numbers come from ``sweep.analysis`` (computed once per state of the store, shared
with MLflow tracking); this module lays them out, with ``sweep.fmt`` for the numbers and
``sweep.plots`` for the figures.  ``python -m sweep report <dir>`` calls :func:`build_report`.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweep import analysis, calibration, fmt, regime, stats
from sweep import claims as claims_mod
from sweep.analysis import SIGN_CONVENTION, Analysis
from sweep.outdir import SweepDir
from sweep.progress import format_seconds
from sweep.plots import cell_labels, draw_plots
from sweep.progress import plural

COMPARISONS = "comparisons.parquet"
AGGREGATES = "aggregates.parquet"
RESULTS = "results.parquet"
SUMMARY = "summary.json"             # the answer, pooled means, net cells, claims, caveats
REGIMES = "regimes.parquet"
APPENDIX = "cells.md"
FIRST_SCREEN_END = "<!-- end of the first screen -->"


# ---------------------------------------------------------------- entry point

def build_report(sweep_dir: SweepDir | Path, cfg=None) -> Path:
    """Write ``<sweep_dir>/report/`` from the folder's analysis; returns the folder.
    ``cfg``: the config to report with (``report DIR key=value``); None reads config.yaml."""
    sweep_dir = SweepDir.of(sweep_dir)
    cfg = sweep_dir.config_dict(cfg)
    found = analysis.load(sweep_dir, cfg)
    out = sweep_dir.report_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in ((RESULTS, found.df), (COMPARISONS, found.table), (AGGREGATES, found.aggregates),
                        (REGIMES, found.regimes)):
        frame.to_parquet(out / name, index=False)     # the tables behind the report, for readers
    figures = draw_plots(found.df, found.table, found.pooled, found.verdicts, out, found.alpha)
    facts = Facts.of(found, cfg, sweep_dir.read_meta())
    doc = report_blocks(facts, figures)
    (out / "report.md").write_text(to_markdown(doc.main))
    (out / APPENDIX).write_text(to_markdown(doc.appendix))
    title = f"kmemcg-sweep: {sweep_name(cfg, facts.meta)}"
    (out / "report.html").write_text(to_html(doc.main + doc.appendix_html, title=title, images_from=out))
    (out / SUMMARY).write_text(json.dumps(summary_record(facts), indent=1, default=str) + "\n")
    return out


def sweep_name(cfg: dict, meta: dict) -> str:
    return str(cfg.get("name") or meta.get("name") or "unnamed sweep")


def is_current(sweep_dir: SweepDir | Path, cfg=None) -> bool:
    """True when the report was built from the analysis ``cfg`` would give now: that
    analysis is cached (same stored rows, settings, registry and code) and the report's
    tables are newer than it."""
    sweep_dir = SweepDir.of(sweep_dir)
    tables = [sweep_dir.report_dir / name for name in (COMPARISONS, AGGREGATES, RESULTS, SUMMARY)]
    if not all(t.exists() for t in tables):
        return False
    folder = analysis.cached(sweep_dir, cfg)
    return folder is not None and min(t.stat().st_mtime for t in tables) >= folder.stat().st_mtime


@dataclass
class Facts(Analysis):
    """The analysis with what the report adds: the config, sweep.json and cell labels."""
    cfg: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    labels: dict[str, str] = field(init=False)

    def __post_init__(self):
        super().__post_init__()
        self.labels = cell_labels(self.df)

    @functools.cached_property
    def table_by_metric(self) -> dict[str, pd.DataFrame]:
        """metric -> its comparison rows (per-cell tables: one filter of the table, not one per metric)."""
        return dict(tuple(self.table.groupby("metric", sort=False)))

    @functools.cached_property
    def decided_cells(self) -> dict[tuple[str, str, str, str], pd.DataFrame]:
        """(baseline, candidate, metric, verdict) -> those comparison rows, for the "where
        better / worse" columns (the only verdicts they name, so only those are split out)."""
        decided = self.table[self.table["verdict"].isin(["better", "worse"])]
        return dict(tuple(decided.groupby(["baseline", "candidate", "metric", "verdict"], sort=False)))

    @classmethod
    def of(cls, found: Analysis, cfg: dict, meta: dict) -> "Facts":
        given = {f.name: getattr(found, f.name) for f in dataclasses.fields(Analysis) if f.init}
        return cls(**given, cfg=cfg, meta=meta)


# ---------------------------------------------------------------- tables of the first screen

def comparison_table(facts: Facts) -> tuple[pd.DataFrame, list[list[str]], list[str]]:
    """The first screen's table, in the form of mmtests' compare-kernels: the thread's harms
    and costs as rows (``analysis.HARMS``, ``COSTS``), the designs as columns in time order;
    the baseline raw, every other design as its mean and change against the baseline over
    the cells both ran, '*' when the median per-cell difference is significant, and the cells
    where it is better / worse; then way2 against way1, the 2015 question.  Returns the
    frame, the cell classes and the footnotes the marks in it need."""
    import core

    designs = [d for d in core.DESIGNS if d in facts.designs]
    baseline = designs[0] if designs else None
    pairs = [(baseline, d) for d in designs[1:]]
    if {"way1", "way2"} <= set(designs):
        pairs.append(("way1", "way2"))
    cells_of = facts.df.groupby("design")["cell_id"].nunique()
    rows, classes, notes = [], [], set()
    for name in (*analysis.HARMS, *analysis.COSTS):
        metric = stats.METRICS_BY_NAME.get(name)
        if metric is None or not len(facts.pooled_of(name)) or facts.all_zero(name):
            continue
        kind = "harm" if name in analysis.HARMS else "cost"
        row, cls = {"lower is better": f"{metric.label} ({kind})"}, [""]
        pooled = facts.pooled_of(name)
        row[baseline] = fmt.mean(pooled.loc[baseline, "mean"], metric) if baseline in pooled.index else "-"
        cls.append("")
        for base, cand in pairs:
            label = cand if base == baseline else f"{cand} vs {base}"
            text, css, marks = _compared(facts, base, cand, metric, show_value=base == baseline,
                                         partial=min(cells_of.get(base, 0), cells_of.get(cand, 0)) < facts.n_cells)
            row[label], notes = text, notes | marks
            cls.append(css)
        rows.append(row)
        classes.append(cls)
    footnotes = [COMPARISON_NOTES[mark] for mark in ("†", "‡") if mark in notes]
    return pd.DataFrame(rows), classes, footnotes


COMPARISON_NOTES = {
    "†": ("† the pooled change and the cell counts point in opposite directions: a few cells with large "
          "values dominate the pooled mean, so the pooled figure is not the comparison - the cell counts "
          "and the median per-cell difference ('*') are."),
    "‡": ("‡ over the cells both designs ran only (a design that skips cells, such as v6.18 without SLAB, "
          "is never compared in them)."),
}


def _compared(facts: Facts, base: str, cand: str, metric, show_value: bool, partial: bool):
    """One cell of the comparison table: (text, css class, footnote marks used)."""
    e = facts.effect(base, cand, metric.name)
    if e is None:                       # never happens in a cell both ran (or one did not run)
        ran = set(facts.df.groupby("cell_id")["design"].agg(set).loc[lambda s: s.map({base, cand}.issubset)].index)
        return ("0 in every cell both ran" if ran else "-"), "", set()
    better, worse, tested = facts.cell_counts(base, cand, metric.name)
    change = fmt.change({"diff_mean": e["cand_mean"] - e["base_mean"], "base_mean": e["base_mean"]}, metric)
    decided = facts.decided(base, cand, metric.name)
    star = " *" if decided else ""
    marks = set()
    pooled_sign = (e["cand_mean"] > e["base_mean"]) - (e["cand_mean"] < e["base_mean"])
    net = (worse > better) - (better > worse)                    # +1: worse in more cells
    counts = f"{better} better, {worse} worse of {tested}"
    if pooled_sign and net and pooled_sign != net:
        counts, marks = f"**{counts}** †", marks | {"†"}
    if partial:
        counts, marks = counts + " ‡", marks | {"‡"}
    value = f"{fmt.mean(e['cand_mean'], metric)} " if show_value else ""
    css = {-1: "better", 1: "worse"}.get(decided, "")
    return f"{value}{change}{star}<br>{counts}", css, marks


def summary_table(facts: Facts) -> tuple[pd.DataFrame, list[list[str]]]:
    """Metrics x designs (pooled mean [CI], the lowest in bold) and, per pair, the cells
    where the candidate is better / worse.  Metrics zero everywhere are left to one line."""
    rows, classes = [], []
    for metric in facts.metrics_shown():
        if facts.all_zero(metric.name):
            continue
        pooled = facts.pooled_of(metric.name)
        best = _best_design(pooled, metric)
        row = {"metric": f"{metric.label} [{metric.name}]"}
        cls = [""]
        for design in facts.designs:
            text = fmt.mean_with_ci(pooled.loc[design], metric) if design in pooled.index else "-"
            is_best = design == best
            row[design] = f"**{text}**" if is_best else text
            cls.append("best" if is_best else "")
        counts = {(c.baseline, c.candidate): c for c in facts.metric_counts(metric.name).itertuples(index=False)}
        for baseline, candidate in facts.pairs:
            c = counts.get((baseline, candidate))
            if c is not None:
                row[f"{candidate} vs {baseline}"] = f"{int(c.better)} / {int(c.worse)}"
                cls.append("better" if c.better > c.worse else "worse" if c.worse > c.better else "")
            else:
                row[f"{candidate} vs {baseline}"] = "-"
                cls.append("")
        rows.append(row)
        classes.append(cls)
    return pd.DataFrame(rows), classes


def _best_design(pooled: pd.DataFrame, metric) -> str | None:
    """The design with the lowest pooled mean - None when that lowest value, as printed,
    is shared (a tie in the table must not look like a win)."""
    means = pooled["mean"].dropna()
    if means.empty:
        return None
    shown = means.map(lambda v: fmt.mean(v, metric))
    best = means.idxmin()
    return best if (shown == shown[best]).sum() == 1 else None


def claims_table(facts: Facts, figures) -> tuple[pd.DataFrame, list[str]]:
    """One row per claim: who, what, the verdict with its reason, where it holds, the
    effect with its CI, and links to the evidence section and figure."""
    axes = stats.cell_axes(facts.df)
    rows, classes = [], []
    for v in facts.verdicts:
        c = v.claim
        link = f"[evidence](#{claim_anchor(c.id)})"
        if c.id in figures.claims:
            link += f", [figure](#{figure_anchor(c.id)})"
        rows.append({"claim": c.id, "who": c.who, "says": c.claim,
                     "verdict": f"**{v.verdict}**: {v.reason}" if v.reason else f"**{v.verdict}**",
                     "where it holds": _where_cells(axes, v.cells_holding, len(v.cells_tested)),
                     "median per-cell effect [CI]": _effect_text(v, c), "evidence": link})
        classes.append({"holds": "better", "refuted": "worse"}.get(v.verdict, ""))
    return pd.DataFrame(rows), classes


def claim_anchor(claim_id: str) -> str:
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", str(claim_id).lower()).strip("-")


def figure_anchor(claim_id: str) -> str:
    return "figure-" + claim_anchor(claim_id)


def _where_cells(axes: pd.DataFrame, cells: list, tested: int) -> str:
    if not tested:
        return "-"
    known = [c for c in cells if c in axes.index]
    if not known:
        return f"none of {tested} cells"
    return f"{len(known)} of {tested} cells: {fmt.where(axes.loc[known].reset_index())}"


def _effect_text(v, claim) -> str:
    if v.effect is None or (isinstance(v.effect, float) and math.isnan(v.effect)):
        return "-"
    a, b = claim.compare
    text = f"{b} - {a}: {fmt.num(v.effect)}"
    if v.ci is not None and all(x is not None and math.isfinite(x) for x in v.ci):
        text += f" [{fmt.num(v.ci[0])}, {fmt.num(v.ci[1])}]"
    text += f" {v.unit}" if v.unit else ""
    if getattr(v, "by_regime", None):          # the claim spans regimes: its effect in each
        text += "; by regime: " + "; ".join(
            f"{r['regime']} ({r['cells']} cells) {fmt.num(r['effect'])} [{fmt.num(r['ci'][0])}, {fmt.num(r['ci'][1])}]"
            for r in v.by_regime)
    return text


def caveats(facts: Facts) -> list[str]:
    """What the answer does not cover: regimes where designs cannot differ, what was not run."""
    lines = []
    by_regime = facts.regimes.groupby("regime")["cell_id"].nunique() if len(facts.regimes) else pd.Series(dtype=int)
    for name, why in (("saturated", "most replications OOM-killed or most kernel entries failing"),
                      ("idle", "never reached memory.high, so the designs cannot differ")):
        part = facts.regimes[facts.regimes["regime"] == name] if len(facts.regimes) else facts.regimes
        if len(part):
            cells = stats.cell_axes(facts.df).loc[sorted(part["cell_id"].unique())].reset_index()
            lines.append(f"**{name}**: {int(by_regime[name])} of {facts.n_cells} cells under at least one "
                         f"design ({why}; claims are not tested there): {fmt.where(cells)}.")
    import core

    missing = [d for d in core.DESIGNS if d not in facts.designs]
    if missing:
        lines.append(f"**Designs not run**: {', '.join(missing)} (add them to `designs` to compare them).")
    cells_of = facts.df.groupby("design")["cell_id"].nunique()
    for design in facts.designs:
        if 0 < cells_of.get(design, 0) < facts.n_cells:   # e.g. v6.18 skips SLAB cells (SLAB left in 6.8)
            lines.append(f"**{design} ran in {cells_of[design]} of {facts.n_cells} cells**: its pooled means "
                         f"cover those cells only; each pair of designs is compared in the cells both ran.")
    ran = allocators_run(facts.df, facts.cfg)
    if ran:
        from core.spec import ALLOCATORS

        others = [a.upper() for a in ALLOCATORS if a not in ran]
        if others:
            lines.append(f"**Allocators not run**: {', '.join(others)} (every cell ran "
                         f"{', '.join(a.upper() for a in sorted(ran))}); claims about {' or '.join(others)} "
                         f"cannot be tested here.")
    errors = int((facts.df["status"] != "ok").sum())
    if errors:
        lines.append(f"**Failed workloads**: {errors} of {len(facts.df)} raised and are left out of the "
                     f"paired comparisons (see the run facts).")
    warning = stats.sweep_power_warning(facts.table, facts.alpha, facts.correction)
    if warning:
        lines.append(f"**Too few replications**: {warning}")
    return lines


def allocators_run(df: pd.DataFrame, cfg: dict) -> set[str]:
    """The slab allocators the sweep's cells ran: the ``allocator`` axis where a block set
    it, ``workload.machine.allocator`` (default slub) elsewhere."""
    default = ((cfg.get("workload") or {}).get("machine") or {}).get("allocator") or "slub"
    if "allocator" not in df:
        return {default}
    return {a if isinstance(a, str) and a else default for a in df["allocator"].unique()}


# ---------------------------------------------------------------- document model

@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    warning: bool = False
    css: str = ""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame
    row_class: list[str] | None = None          # per row, for colouring the HTML
    cell_class: list[list[str]] | None = None   # per cell (overrides row_class)


@dataclass
class Image:
    file: str
    alt: str
    anchor: str = ""            # links point here: an anchor inside the report, not the file


@dataclass
class Details:
    """A collapsed section in HTML; in Markdown its blocks are written as they are."""
    summary: str
    blocks: list


@dataclass
class Raw:
    markdown: str


@dataclass
class Document:
    main: list
    appendix: list
    appendix_html: list


SECTIONS = [("claims-evidence", "The claims: evidence"), ("differences", "Where the designs differ"),
            ("regimes", "Regimes"), ("method", "Method and sign convention"), ("run-facts", "Run facts"),
            ("per-cell", "Per-cell tables")]


def report_blocks(facts: Facts, figures) -> Document:
    name = sweep_name(facts.cfg, facts.meta)
    blocks = [Heading(1, f"kmemcg-sweep report: {name}"), Para(analysis.verdict_text(facts), css="verdict")]
    compared, compared_classes, footnotes = comparison_table(facts)
    if len(compared):
        blocks.append(Table(compared, cell_class=compared_classes))
    blocks += [Raw(FIRST_SCREEN_END), Para(comparison_legend(facts) + " " + " ".join(footnotes)),
               Para(one_line_facts(facts)),
               Heading(2, "The answer, metric by metric", "answer"), Bullets(analysis.answer_sentences(facts))]
    if figures.summary:
        blocks.append(Image(figures.summary.file, figures.summary.caption, anchor="fig-summary"))
    frame, classes = summary_table(facts)
    blocks += [Heading(2, "Summary", "summary"), Para(
        f"Pooled mean over every successful workload [{1 - facts.alpha:.0%} CI]; the lowest (best) in "
        f"bold. A pair column 'B vs A' counts the cells where B is significantly better / worse than "
        f"A ({_correction_name(facts.correction)}-adjusted, alpha {facts.alpha}) of {facts.n_cells} cells. "
        + SIGN_CONVENTION)]
    if len(frame):
        blocks.append(Table(frame, cell_class=classes))
    zero = [m.name for m in facts.metrics_shown() if facts.all_zero(m.name)]
    if zero:
        blocks.append(Para(f"Zero in every workload under every design: {', '.join(zero)}."))
    blocks += claims_section(facts, figures)
    blocks += [Heading(2, "Caveats", "caveats"), Bullets(caveats(facts) or ["none"])]
    blocks += [Heading(2, "Contents", "contents"),
               Bullets([f"[{title}](#{anchor})" for anchor, title in SECTIONS + calibration.contents(facts.calibration)])]
    blocks += evidence_section(facts, figures)
    blocks += differences_section(facts, figures)
    blocks += regimes_section(facts)
    blocks += model_vs_kernel_section(facts)
    blocks += [Heading(2, "Method and sign convention", "method"), Para(method_text(facts.alpha, facts.correction))]
    blocks += [Heading(2, "Run facts", "run-facts"), Table(run_facts(facts.df, facts.cfg, facts.meta))]
    appendix = per_cell_blocks(facts)
    blocks += [Heading(2, "Per-cell tables", "per-cell"), Para(
        f"Every cell, metric and design in mmtests' layout: in report.html the [collapsed sections "
        f"below](#per-cell-tables); beside report.md, the file {APPENDIX}.")]
    return Document(main=blocks, appendix=[Heading(1, f"Per-cell tables: {name}"),
                                           Para(SIGN_CONVENTION)] + appendix,
                    appendix_html=[Raw('<a id="per-cell-tables"></a>')]
                    + [Details(summary, part) for summary, part in _details(appendix)])


def claims_section(facts: Facts, figures) -> list:
    blocks = [Heading(2, "Claims from the 2015 thread", "claims")]
    if not facts.verdicts:
        reason = ("the sweep ran a single design" if len(facts.designs) < 2
                  else f"the sweep folder has no claims registry ({claims_mod.CLAIMS_FILE}; the config's "
                       f"`claims` entry names one)")
        return blocks + [Para(f"No claims were evaluated: {reason}.")]
    frame, classes = claims_table(facts, figures)
    return blocks + [Para(verdict_rule(facts)), Table(frame, classes)]


def verdict_rule(facts: Facts) -> str:
    """The verdict rule in one sentence, with the counts it gave on this sweep."""
    rule = claims_mod.VERDICT_RULE.format(confidence=f"{1 - facts.alpha:.0%} stratified bootstrap",
                                          correction=_correction_name(facts.correction), alpha=facts.alpha)
    tally = pd.Series([v.verdict for v in facts.verdicts]).value_counts()
    tested = sum(len(v.cells_tested) for v in facts.verdicts)
    return (f"{rule} On this sweep: " + ", ".join(f"{int(tally[v])} {v}" for v in claims_mod.VERDICTS if v in tally)
            + f" of {len(facts.verdicts)} claims, over {tested} claim-cells.")


def comparison_legend(facts: Facts) -> str:
    return ("The table above: each design's mean over the cells it shares with the baseline and the change "
            "against it in those cells (% of the baseline mean; pp for the ENOMEM share); '*' = decided: the "
            f"median per-cell paired difference has a {1 - facts.alpha:.0%} stratified bootstrap interval "
            "excluding 0 and more cells are significantly on its side than against it (green: lower, i.e. "
            "better; red: higher); 'b better, w worse of n' = the cells where the design is "
            f"significantly better / worse ({_correction_name(facts.correction)}-adjusted across cells, alpha "
            f"{facts.alpha}) of the n compared. Metrics zero in every workload are left out.")


def one_line_facts(facts: Facts) -> str:
    ok = int((facts.df["status"] == "ok").sum())
    reps = fmt.value_range(facts.df.groupby("cell_id")["replication"].nunique())
    seconds = facts.meta.get("seconds")
    took = f"; the sweep took {format_seconds(float(seconds))}" if seconds else ""
    cpus = facts.meta.get("ray_cpus")
    on = f" on {plural(cpus, 'CPU')}" if cpus else ""
    return (f"{len(facts.df):,} workloads ({ok:,} ok) in {plural(facts.n_cells, 'cell')}, {reps} paired "
            f"replications per cell, designs {', '.join(facts.designs)}{took}{on}; model "
            f"{facts.meta.get('model_version', '?')}, git {facts.meta.get('git_commit', '?')}.")


def evidence_section(facts: Facts, figures) -> list:
    blocks = [Heading(2, "The claims: evidence", "claims-evidence")]
    if not facts.verdicts:
        return blocks + [Para("No claims were evaluated.")]
    axes = stats.cell_axes(facts.df)
    for v in facts.verdicts:
        c = v.claim
        a, b = c.compare
        where = "; ".join(f"{k} {', '.join(map(str, vals))}" for k, vals in (c.where or {}).items()) or "every cell"
        items = [f"who: {c.who}", f"metric: `{c.metric}`, expected {a} {'<' if c.expect == 'a<b' else '>'} {b}",
                 f"testable in: {where}; regimes {', '.join(c.regimes) or '-'}",
                 f"verdict: **{v.verdict}**" + (f" ({v.reason})" if v.reason else ""),
                 f"cells tested: {len(v.cells_tested)}; holding: {_where_cells(axes, v.cells_holding, len(v.cells_tested))}; "
                 f"against: {_where_cells(axes, v.cells_against, len(v.cells_tested))}",
                 f"effect: {_effect_text(v, c)}"]
        blocks += [Heading(3, f"{c.id}: {c.claim}", claim_anchor(c.id)), Bullets(items)]
        if c.id in figures.claims:
            blocks.append(Image(figures.claims[c.id].file, figures.claims[c.id].caption, figure_anchor(c.id)))
    return blocks


def differences_section(facts: Facts, figures) -> list:
    """Per metric with a difference: where each pair differs, and its heatmaps; metrics
    without any difference collapse into one line each kind."""
    blocks = [Heading(2, "Where the designs differ", "differences"), Para(
        "Per metric and pair: the cells where the candidate is significantly better or worse, and "
        "their axis values. Effect maps: the paired effect per cell and pair (% of the baseline mean; "
        "an absolute difference, marked with a leading 'd', where the baseline mean is 0; ENOMEM in "
        "percentage points); green = the candidate is lower (better), '*' = significant.")]
    if facts.counts.empty:
        return blocks + [Para("Nothing to compare: the sweep ran a single design.")]
    quiet, zero = [], []
    for metric in facts.metrics_shown():
        if facts.all_zero(metric.name):
            zero.append(metric.name)
            continue
        if not facts.differs(metric.name):
            quiet.append(metric.name)
            continue
        part = facts.metric_counts(metric.name)
        frame = pd.DataFrame({
            "pair": [f"{r.candidate} vs {r.baseline}" for r in part.itertuples()],
            "better": part["better"].to_numpy(), "worse": part["worse"].to_numpy(),
            "indistinguishable": part["indistinguishable"].to_numpy(), "untestable": part["untestable"].to_numpy(),
            "where better": [_where(facts, r, "better") for r in part.itertuples()],
            "where worse": [_where(facts, r, "worse") for r in part.itertuples()]})
        classes = ["better" if b and not w else "worse" if w and not b else ""
                   for b, w in zip(part["better"], part["worse"])]
        blocks += [Heading(3, f"{metric.label} [{metric.name}]", f"diff-{metric.name}"), Table(frame, classes)]
        if metric.name in figures.heatmaps:
            blocks.append(Image(figures.heatmaps[metric.name].file, figures.heatmaps[metric.name].caption))
    if figures.failure_rate:
        blocks.append(Image(figures.failure_rate.file, figures.failure_rate.caption))
    if quiet:
        blocks.append(Para(f"Indistinguishable in every cell for every pair: {', '.join(quiet)}."))
    if zero:
        blocks.append(Para(f"Zero in every workload (nothing to compare): {', '.join(zero)}."))
    return blocks


def _where(facts: Facts, counts, verdict: str) -> str:
    """The axis values of the cells where a pair's verdict on a metric is ``verdict``."""
    cells = facts.decided_cells.get((counts.baseline, counts.candidate, counts.metric, verdict))
    return fmt.where(cells) if cells is not None else ""


def regimes_section(facts: Facts) -> list:
    blocks = [Heading(2, "Regimes", "regimes"), Para(
        "The regime of each (cell, design): idle (never reached memory.high), high-bound, max-bound "
        "(memory.events max > 0) or saturated (most replications OOM-killed or most kernel entries "
        "failing). A claim is tested only in the regimes it names.")]
    if facts.regimes.empty:
        return blocks
    counts = facts.regimes.pivot_table(index="regime", columns="design", values="cell_id", aggfunc="count",
                                       fill_value=0)
    counts = counts.reindex(index=[r for r in regime.REGIMES if r in counts.index],
                            columns=[d for d in facts.designs if d in counts.columns])
    frame = counts.reset_index().rename(columns={"regime": "cells in regime"})
    return blocks + [Table(frame)]


def model_vs_kernel_section(facts: Facts) -> list:
    """Model vs a real kernel (``sweep.calibration``): per kernel row and its model twin, the
    tolerance and the agreement of each metric, then every metric-cell (the disagreements
    first).  Nothing when the sweep ran no kernel row beside its twin."""
    table = facts.calibration
    blocks = []
    for kernel, model in calibration.rows_compared(table):
        part = table[(table["kernel"] == kernel) & (table["model"] == model)]
        agree, tested = calibration.agreement(part)
        blocks += [Heading(2, f"Model vs a real kernel: {model} vs {calibration.kernel_name(kernel)}",
                           calibration.ANCHOR), Para(
            f"The model's {model} row and {calibration.kernel_name(kernel)} ran every workload of a cell on the same "
            f"seed (the same request stream). Per metric Linux exposes and per cell: each side's mean, the mean "
            f"paired difference **model - kernel** with its BCa bootstrap {1 - facts.alpha:.0%} CI, and the "
            f"tolerance max(floor, relative x |kernel mean|). **agree**: the CI reaches into [-tolerance, "
            f"+tolerance]; **disagree**: it lies wholly outside. {agree} of {tested} metric-cells agree. Metrics "
            f"Linux does not expose (latencies, SLUB order fallbacks, reclaim places, ...) are not compared "
            f"(docs/realkernel.md).")]
        counts = calibration.per_metric(part).set_index("metric")
        blocks.append(Table(pd.DataFrame([
            {"metric": name, "tolerance": f"{t.relative:.0%} of Linux, at least {fmt.num(t.floor)}", "why": t.why,
             **{v: int(counts.loc[name, v]) if name in counts.index else 0 for v in calibration.VERDICTS}}
            for name, t in calibration.TOLERANCES.items()])))
        shown = part[part["verdict"] != "untestable"].sort_values(["verdict", "metric"], key=lambda c: c.map(
            {"disagree": 0, "agree": 1}) if c.name == "verdict" else c)
        blocks.append(Table(pd.DataFrame({
            "metric": shown["metric"], "cell": [facts.labels[c] for c in shown["cell_id"]],
            "n": shown["n_pairs"].astype(int), calibration.kernel_name(kernel): shown["kernel_mean"].map(fmt.num),
            model: shown["model_mean"].map(fmt.num),
            "model - kernel [CI]": [f"{fmt.num(d)} [{fmt.num(lo)}, {fmt.num(hi)}]" for d, lo, hi in
                                    zip(shown["diff_mean"], shown["diff_ci_lo"], shown["diff_ci_hi"])],
            "tolerance": shown["tolerance"].map(fmt.num), "verdict": shown["verdict"]}).reset_index(drop=True),
            row_class=["worse" if v == "disagree" else "" for v in shown["verdict"]]))
    return blocks


def method_text(alpha: float, correction: str) -> str:
    return (f"Designs are compared pairwise by seed within each cell (replication r ran the same "
            f"request stream under every design). ENOMEM: McNemar exact test on the discordant "
            f"pairs, Wilson {1 - alpha:.0%} intervals on each rate. Continuous metrics: Wilcoxon "
            f"signed-rank test, BCa bootstrap {1 - alpha:.0%} CI of the mean paired difference. "
            f"p-values are adjusted across cells, separately for each comparison and metric, by "
            f"Holm (family-wise) and Benjamini-Hochberg (false discovery rate); verdicts use "
            f"{_correction_name(correction)} at alpha = {alpha}; '*' marks a significant difference. "
            + SIGN_CONVENTION)


def _correction_name(correction: str) -> str:
    return "Holm" if stats.correction_method(correction) == "holm" else "Benjamini-Hochberg"


def run_facts(df: pd.DataFrame, cfg: dict, meta: dict) -> pd.DataFrame:
    ok = int((df["status"] == "ok").sum())
    facts = {
        "model version": meta.get("model_version", "?"),
        "git commit": meta.get("git_commit", "?"),
        "host": meta.get("host", "?"),
        "Ray CPUs": meta.get("ray_cpus", "?"),
        "started / finished": f"{meta.get('started', '?')} / {meta.get('finished', '?')}",
        "command": meta.get("command", "?"),
        "designs": ", ".join(stats.design_order(df["design"].unique())),
        "cells": df["cell_id"].nunique(),
        "workloads": f"{len(df)} ({ok} ok, {len(df) - ok} errors)",
        "replications per cell": fmt.value_range(df.groupby("cell_id")["replication"].nunique()),
        "root seed": cfg.get("seed", "?"),
    }
    return pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]})


# ---------------------------------------------------------------- per-cell tables (the appendix)

def per_cell_blocks(facts: Facts) -> list:
    """One table per metric, the designs side by side (mmtests compare-kernels): cells as
    rows, each design's mean, then each pair's change with '*' when significant.  Metrics
    with no difference anywhere collapse into one line."""
    blocks = []
    quiet = []
    for metric in facts.metrics_shown():
        rows = facts.table_by_metric.get(metric.name, facts.table.iloc[0:0])
        if facts.all_zero(metric.name) or rows.empty or not facts.differs(metric.name):
            quiet.append(metric.name)
            continue
        frame, classes = per_cell_table(rows, facts, metric)
        blocks += [Heading(2, f"{metric.label} [{metric.name}]", f"cells-{metric.name}"),
                   Table(frame, cell_class=classes)]
    if quiet:
        blocks += [Heading(2, "Metrics without any difference", "cells-quiet"),
                   Para(f"Indistinguishable (or zero) in every cell for every pair, so no table: "
                        f"{', '.join(quiet)}.")]
    blocks += rates_blocks(facts)
    return blocks


def per_cell_table(rows: pd.DataFrame, facts: Facts, metric):
    """Cells x (n, one mean per design, one change per pair)."""
    axes = stats.cell_axes(facts.df)
    significant = rows[rows["correction"].iloc[0]] < facts.alpha
    rows = rows[["baseline", "candidate", "cell_id", "n_pairs", "diff_mean", "base_mean", "verdict"]].assign(
        significant=significant.to_numpy())          # (only what the table shows: fmt.change reads the means)
    # plain dicts, not .loc: this looks up every cell x design x pair of every metric
    by_pair: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows.to_dict("records"):
        by_pair.setdefault((r["baseline"], r["candidate"]), {})[r["cell_id"]] = r
    column = "rate/enomem_workloads" if metric.binary else f"mean/{metric.name}"
    aggregates = facts.aggregates
    means = dict(zip(zip(aggregates["cell_id"], aggregates["design"]), aggregates[column])) if column in aggregates else {}
    out, classes = [], []
    for cell_id in axes.index:
        row = {"cell": facts.labels[cell_id],
               "n": int(min((p[cell_id]["n_pairs"] for p in by_pair.values() if cell_id in p), default=0))}
        cls = ["", ""]
        for design in facts.designs:
            row[design] = fmt.mean(means.get((cell_id, design), math.nan), metric)
            cls.append("")
        for pair in facts.pairs:
            r = by_pair.get(pair, {}).get(cell_id)
            label = f"{pair[1]} vs {pair[0]}"
            if r is None:
                row[label] = "-"
                cls.append("")
                continue
            row[label] = fmt.change(r, metric) + (" *" if r["significant"] else "")
            cls.append(r["verdict"] if r["verdict"] in ("better", "worse") else "")
        out.append(row)
        classes.append(cls)
    return pd.DataFrame(out), classes


def rates_blocks(facts: Facts) -> list:
    aggregates, df = facts.aggregates, facts.df
    frame = pd.DataFrame({
        "cell": [facts.labels[c] for c in aggregates["cell_id"]],
        "design": aggregates["design"], "ok / runs": [
            f"{int(ok)} / {int(n)}" for ok, n in zip(aggregates["n_ok"], aggregates["n_workloads"])]})
    records = aggregates.to_dict("records")         # once: iterrows per rate was most of this table's time
    for name, label in ((name, rate.label) for name, rate in stats.RATES.items() if rate.label):
        frame[label] = [fmt.rate(r, name) for r in records]
    return [Heading(2, "Rates per design (Wilson intervals)", "cells-rates"), Table(frame)]


def _details(blocks: list) -> list[tuple[str, list]]:
    """Group appendix blocks by their level-2 headings into (summary, blocks) sections."""
    groups: list[tuple[str, list]] = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            groups.append((block.text, []))
        elif groups:
            groups[-1][1].append(block)
    return groups


# ---------------------------------------------------------------- what tracking logs

def summary_record(facts: Facts) -> dict:
    """report/summary.json: the analysis' answer and headline numbers, and the caveats."""
    return {**facts.summary(), "caveats": caveats(facts)}


# ---------------------------------------------------------------- renderers

def to_markdown(blocks: list) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>\n' if block.anchor else ""
            parts.append(f"{anchor}{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(_markdown_table(block.frame))
        elif isinstance(block, Image):
            anchor = f'<a id="{block.anchor}"></a>\n' if block.anchor else ""
            parts.append(f"{anchor}![{block.alt}]({block.file})")
        elif isinstance(block, Details):
            parts.append(to_markdown(block.blocks).rstrip("\n"))
        elif isinstance(block, Raw):
            parts.append(block.markdown)
    return "\n\n".join(parts) + "\n"


def first_screen(markdown: str) -> str:
    """The part of report.md before the table of contents."""
    return markdown.split(FIRST_SCREEN_END, 1)[0]


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


_CSS = """
body { font-family: sans-serif; margin: 1.5em 2em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #eee; } td:first-child { text-align: left; }
td.text { text-align: left; max-width: 32em; }
tr.better td, td.better { background: #e3f5e1; } tr.worse td, td.worse { background: #fbe3e1; }
td.best { font-weight: bold; }
p.verdict { font-size: 15px; line-height: 1.4; max-width: 1350px; margin: 0.4em 0 0.6em; }
p.warning { background: #fff4ce; border-left: 4px solid #e0a800; padding: 0.5em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
figure { margin: 0.5em 0; } figcaption { font-size: 12px; color: #555; }
details { margin: 0.3em 0; } summary { cursor: pointer; font-weight: bold; }
ul { padding-left: 1.4em; } li { margin: 0.25em 0; }
"""


def to_html(blocks: list, title: str, images_from: Path | None = None) -> str:
    """One self-contained page: images are embedded as data URIs (read from ``images_from``)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    parts += [_html_block(block, images_from) for block in blocks]
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_block(block, images_from: Path | None) -> str:
    if isinstance(block, Heading):
        anchor = f" id='{html.escape(block.anchor)}'" if block.anchor else ""
        return f"<h{block.level}{anchor}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        css = " ".join(c for c in ("warning" if block.warning else "", block.css) if c)
        return f"<p class='{css}'>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        anchor = f" id='{html.escape(block.anchor)}'" if block.anchor else ""
        return (f"<figure{anchor}><img src='{_image_src(block.file, images_from)}' alt='{html.escape(block.alt)}'>"
                f"<figcaption>{html.escape(block.alt)}</figcaption></figure>")
    if isinstance(block, Details):
        inner = "\n".join(_html_block(b, images_from) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>{inner}</details>"
    if isinstance(block, Raw):
        return block.markdown if block.markdown.startswith(("<!--", "<a id=")) else f"<p>{_inline(block.markdown)}</p>"
    raise TypeError(f"unknown block {block!r}")


def _image_src(name: str, images_from: Path | None) -> str:
    if images_from is None or not (images_from / name).exists():
        return html.escape(name)
    data = base64.b64encode((images_from / name).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """The little Markdown the report's own text uses: **bold**, `code`, [links](target)."""
    out = html.escape(str(text), quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<b>\1</b>", out)
    out = out.replace("&lt;br&gt;", "<br>")           # a line break inside a table cell
    return _LINK.sub(lambda m: f"<a href='{html.escape(m.group(2))}'>{m.group(1)}</a>", out)


def _html_table(table: Table) -> str:
    frame = table.frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    row_classes = table.row_class or [""] * len(frame)
    cell_classes = table.cell_class or [[""] * len(frame.columns)] * len(frame)
    rows = []
    for row_cls, cells_cls, values in zip(row_classes, cell_classes, frame.itertuples(index=False)):
        cells = "".join(
            f"<td class='{cls}{' text' if _is_text(v) else ''}'>{_inline(v)}</td>"
            for cls, v in zip(cells_cls, values))
        rows.append(f"<tr class='{html.escape(row_cls)}'>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _is_text(value) -> bool:
    return isinstance(value, str) and len(value) > 40
