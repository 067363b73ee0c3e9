"""sweep.report: the answer first (report.md / report.html), figures, appendix, tables."""
import json
import os
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from results_data import grid_cells, real, synthetic, write_sweep_dir
from sweep import analysis, claims, fmt, plots, report, stats
from sweep.store import Store

REGISTRY = Path(__file__).resolve().parent.parent / "configs" / "claims.yaml"


def _planted(cell, design):
    """way2 lowers the overshoot over high, only in nowait-burst cells at 32M."""
    if design == "way2" and cell["mix"] == "nowait-burst" and cell["limit"] == 32 << 20:
        return {"overshoot_high_peak_pages": -40.0}
    return {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A sweep folder (real store, config, sweep.json) and its report, built once."""
    df = synthetic(reps=16, shift=_planted)
    failed = (df["cell_id"] == "L64M-o3-n2-kernel") & (df["replication"] < 3) & (df["design"] == "way1")
    df.loc[failed, ["status", "error"]] = ["error", "SpecError: boom"]
    df["slab_wrong_node_pages"] = 0.0                 # a metric that is zero everywhere
    sweep_dir = write_sweep_dir(tmp_path_factory.mktemp("sweep"), df, name="planted")
    return df, report.build_report(sweep_dir)


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after ``heading``."""
    return _first_table(markdown, heading)[1]


def _first_table(markdown: str, heading: str) -> tuple[list[str], list[list[str]]]:
    section = markdown.split(heading, 1)[1].split("\n\n")
    block = next(b for b in section if b.startswith("|"))
    lines = block.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return header, [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_report_files_are_written_and_no_plot_is_blank(built):
    df, out = built
    names = set(os.listdir(out))
    assert {"report.md", "report.html", report.APPENDIX, report.SUMMARY, "results.parquet",
            "comparisons.parquet", "aggregates.parquet", report.REGIMES, "summary.png"} <= names
    heatmaps = {n for n in names if n.startswith("effect_")}
    # only metrics with a significant cell get an effect map: the planted one
    assert "effect_overshoot_high_peak_pages.png" in heatmaps
    assert not any("slab_wrong_node_pages" in n for n in heatmaps)      # zero everywhere: no plot
    pngs = {n for n in names if n.endswith(".png")}
    for name in pngs:
        pixels = mpimg.imread(out / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 300, name
        assert pixels.std() > 0.05, name                               # not a blank canvas
    markdown = (out / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown))
    assert linked == pngs                                               # every figure shown, none missing


def test_heatmaps_are_drawn_at_a_legible_resolution(built):
    _, out = built
    from PIL import Image

    with Image.open(out / "effect_overshoot_high_peak_pages.png") as image:
        dpi = image.info.get("dpi", (0, 0))[0]
    assert dpi >= 120


def test_first_screen_holds_the_verdict_and_the_comparison_table_only(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# kmemcg-sweep report: planted")
    first = report.first_screen(markdown)
    assert len(first.encode()) < 30_000
    blocks = [b for b in first.strip().split("\n\n") if b]
    assert len(blocks) == 3                                             # title, verdict, table
    summary = json.loads((out / report.SUMMARY).read_text())
    assert blocks[1] == summary["verdict"] and blocks[2].startswith("| lower is better |")
    rest = markdown[len(first):]
    order = [rest.index(h) for h in ("## The answer, metric by metric", "## Summary",
                                     "## Claims from the 2015 thread", "## Caveats", "## Contents")]
    assert order == sorted(order)
    assert "![" in rest.split("## Summary")[0]                          # the summary figure
    for anchor, _ in report.SECTIONS:
        assert f'<a id="{anchor}"></a>' in rest and f"(#{anchor})" in rest


def test_the_comparison_table_puts_the_designs_in_time_order_against_the_baseline(built):
    _, out = built
    header, rows = _first_table((out / "report.md").read_text(), "# kmemcg-sweep report")
    assert header == ["lower is better", "v4.3", "way1", "way2", "way2 vs way1"]
    by_metric = {r[0]: r for r in rows}
    planted = by_metric["peak overshoot over memory.high (pages) (harm)"]
    assert re.fullmatch(r"[\d.]+", planted[1])                          # the baseline: raw
    assert re.match(r"[\d.]+ -\d+\.\d% \*<br>2 better, 0 worse of 8", planted[3])   # way2: value, change, *
    assert re.match(r"-\d+\.\d% \*<br>2 better, 0 worse of 8", planted[4])
    assert "*" not in planted[2]                                        # way1: nothing planted
    assert [r[0].rsplit(" (", 1)[1] for r in rows][-2:] == ["cost)", "cost)"]
    assert not any("slab_wrong_node_pages" in r[0] for r in rows)


def test_the_answer_states_the_effect_and_the_null_result_with_numbers(built):
    _, out = built
    answer = (out / "report.md").read_text().split("## The answer")[1].split("##")[0]
    planted = next(line for line in answer.splitlines() if "peak overshoot over memory.high" in line)
    assert "lowest under way2" in planted
    assert "way2 is better than v4.3 in 2 of 8 cells, worse in 0" in planted
    enomem = next(line for line in answer.splitlines() if "ENOMEM" in line)
    assert "no difference" in enomem and "%" in enomem                   # the null result, with its rates
    assert "Zero in every workload** under every design: slab pages placed on the wrong node" in answer


def test_summary_table_puts_the_designs_on_one_row(built):
    _, out = built
    header, rows = _first_table((out / "report.md").read_text(), "## Summary")
    assert header == ["metric", "v4.3", "way1", "way2", "way1 vs v4.3", "way2 vs v4.3", "way2 vs way1"]
    by_metric = {r[0]: r for r in rows}
    overshoot = by_metric["peak overshoot over memory.high (pages) [overshoot_high_peak_pages]"]
    assert overshoot[3].startswith("**") and not overshoot[1].startswith("**")   # way2 lowest, bold
    assert overshoot[4:] == ["0 / 0", "2 / 0", "2 / 0"]                 # better / worse cells per pair
    enomem = by_metric["workloads with a user-visible ENOMEM [enomem]"]
    assert not any(v.startswith("**") for v in enomem[1:4])            # a tie is nobody's win
    assert not any("slab_wrong_node_pages" in r[0] for r in rows)       # zero everywhere: one line
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["net_cells"]["way2_vs_v4.3"]["overshoot_high_peak_pages"] == 2
    assert summary["pooled"]["way2"]["overshoot_high_peak_pages"] < summary["pooled"]["v4.3"]["overshoot_high_peak_pages"]


def test_per_cell_tables_are_in_the_appendix_in_mmtests_layout(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    assert "(lower is better)" not in markdown and f"the file {report.APPENDIX}" in markdown
    appendix = (out / report.APPENDIX).read_text()
    header, rows = _first_table(appendix, "[overshoot_high_peak_pages]")
    assert header[:5] == ["cell", "n", "v4.3", "way1", "way2"]
    by_cell = {r[0]: r for r in rows}
    planted = by_cell["32M o3 n1 nowait-burst"]
    base, cand = float(planted[2].replace(",", "")), float(planted[4].replace(",", ""))
    change = planted[header.index("way2 vs v4.3")]
    assert change.endswith(" *") and change.startswith("-")             # candidate - baseline < 0: better
    assert float(change.rstrip(" *%")) == pytest.approx((cand - base) / base * 100, abs=0.2)
    assert not by_cell["64M o3 n1 kernel"][header.index("way2 vs v4.3")].endswith("*")
    # families without a difference anywhere collapse into one line
    assert "## Metrics without any difference" in appendix
    assert "slab_wrong_node_pages" in appendix.split("## Metrics without any difference")[1].split("##")[0]


def test_html_is_one_self_contained_file_with_collapsed_cells(built):
    _, out = built
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r"<img src='([^']+)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == len(list(out.glob("*.png")))
    assert "<details><summary>" in page                                 # per-cell tables, collapsed
    assert page.index("<details>") > page.index("id='contents'")
    assert "class='better'" in page and "<b>" in page                   # verdict colours, bold best


def test_every_link_of_report_html_is_an_anchor_inside_it(built):
    """Links to figures and to the per-cell tables work in MLflow's artifact viewer and in a
    copy of report.html alone: each is '#id' and the id exists in the page."""
    _, out = built
    page = (out / "report.html").read_text()
    links = re.findall(r"<a href='([^']+)'", page)
    assert links and all(link.startswith("#") for link in links), [x for x in links if not x.startswith("#")]
    ids = set(re.findall(r"id='([^']+)'", page)) | set(re.findall(r'id="([^"]+)"', page))
    assert {link[1:] for link in links} <= ids
    assert "#per-cell-tables" in links


def test_change_never_prints_infinity():
    metric = stats.METRICS_BY_NAME["overshoot_high_peak_pages"]
    assert fmt.change({"diff_mean": 3.0, "base_mean": 0.0}, metric) == "d+3"
    assert fmt.change({"diff_mean": -5.0, "base_mean": 10.0}, metric) == "-50.0%"
    assert fmt.change({"diff_mean": 0.0, "base_mean": 0.0}, metric) == "0"
    assert fmt.change({"diff_mean": 0.25, "base_mean": 0.5}, stats.ENOMEM) == "+25.0pp"
    rows = pd.DataFrame({"metric": ["overshoot_high_peak_pages"] * 2, "diff_mean": [4.0, -2.0],
                         "base_mean": [0.0, 8.0]})
    colour, absolute = plots.effect_values(rows)
    assert list(colour) == [100.0, -25.0] and list(absolute) == [True, False]


def test_results_parquet_is_the_store_content(built):
    df, out = built
    stored = pd.read_parquet(out / "results.parquet")
    assert len(stored) == len(df)
    assert set(df.columns) <= set(stored.columns)
    merged = stored.merge(df, on=["cell_id", "design", "seed"], suffixes=("", "_in"))
    assert len(merged) == len(df)
    assert (merged["reclaim_scanned_pages"] == merged["reclaim_scanned_pages_in"]).all()


def test_run_facts_come_from_sweep_json(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    assert "| git commit | 0123abc |" in markdown
    assert "| workloads | 384 (381 ok, 3 errors) |" in markdown       # 8 cells x 3 x 16
    assert "384 workloads (381 ok) in 8 cells" in markdown


def test_where_designs_differ_places_the_planted_cells(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    section = markdown.split("## Where the designs differ", 1)[1]
    rows = {r[0]: r for r in _table_rows(section, "[overshoot_high_peak_pages]")}
    assert rows["way2 vs v4.3"][1:5] == ["2", "0", "6", "0"]          # better, worse, same, untestable
    assert rows["way2 vs v4.3"][5] == "limit 32M x2; nodes 1 x1, 2 x1; mix nowait-burst x2; order 3 x2"
    assert "Indistinguishable in every cell for every pair:" in section


def test_comparisons_parquet_matches_a_fresh_computation(built):
    df, out = built
    saved = pd.read_parquet(out / "comparisons.parquet")
    fresh = stats.compare_cells(df, resamples=0)
    key = ["cell_id", "baseline", "candidate", "metric"]
    merged = saved.merge(fresh, on=key, suffixes=("", "_fresh"))
    assert len(merged) == len(fresh)
    assert (merged["p_holm"] - merged["p_holm_fresh"]).abs().max() < 1e-12


def test_config_chooses_the_correction(tmp_path):
    df = synthetic(reps=16, shift=_planted)
    sweep_dir = write_sweep_dir(tmp_path, df, **{"stats.correction": "bh", "stats.alpha": 0.01})
    out = report.build_report(sweep_dir)
    markdown = (out / "report.md").read_text()
    assert "verdicts use Benjamini-Hochberg at alpha = 0.01" in markdown
    table = pd.read_parquet(out / "comparisons.parquet")
    assert set(table["correction"]) == {"p_bh"}
    assert ((table["verdict"] != "indistinguishable") == (table["p_bh"] < 0.01)).all()


def test_failed_workloads_are_counted_not_compared(built):
    _, out = built
    table = pd.read_parquet(out / "comparisons.parquet").set_index(
        ["cell_id", "baseline", "candidate", "metric"])["n_pairs"]
    assert table[("L64M-o3-n2-kernel", "v4.3", "way1", "enomem")] == 13
    assert table[("L64M-o3-n2-kernel", "v4.3", "way2", "enomem")] == 16
    rates = _table_rows((out / report.APPENDIX).read_text(), "## Rates per design")
    assert ["64M o3 n2 kernel", "way1", "13 / 16"] in [r[:3] for r in rates]
    caveats = (out / "report.md").read_text().split("## Caveats")[1]
    assert "**Failed workloads**: 3 of 384" in caveats


def test_is_current_tracks_the_analysis(tmp_path):
    sweep_dir = write_sweep_dir(tmp_path, synthetic(reps=2, cells=grid_cells(limits=(32 << 20,))))
    assert not report.is_current(sweep_dir)
    analysis.load(sweep_dir)
    (sweep_dir / "report").mkdir()
    for name in (report.COMPARISONS, report.AGGREGATES, report.RESULTS, report.SUMMARY):
        (sweep_dir / "report" / name).write_bytes(b"")
    assert report.is_current(sweep_dir)
    assert not report.is_current(sweep_dir, {"stats": {"alpha": 0.01}})    # another analysis
    with Store(sweep_dir / "results.sqlite") as store:                      # a result changes
        row = store.dataframe().iloc[0].to_dict()
        store.put([{**row, "reclaim_scanned_pages": row["reclaim_scanned_pages"] + 1.0}])
    assert not report.is_current(sweep_dir)


def test_an_empty_store_is_a_clear_error(tmp_path):
    sweep_dir = write_sweep_dir(tmp_path, synthetic(reps=1).iloc[0:0])
    with pytest.raises(ValueError, match="no results"):
        report.build_report(sweep_dir)


def test_report_of_real_simulator_results(tmp_path):
    """The simulator's own numbers.  way1 punts memory.high reclaim to the return to user
    (docs/model.md), so it never reclaims under a lock; v4.3 reclaims synchronously, under the
    caller's lock when it holds one.  Wherever v4.3 did so in every paired seed, the report
    must call way1 better on reclaim_rounds_locked; where neither did, indistinguishable."""
    df = real(reps=12, cells=grid_cells(limits=(16 << 20, 32 << 20)))
    sweep_dir = write_sweep_dir(tmp_path, df, name="real")
    shutil.copyfile(REGISTRY, sweep_dir / claims.CLAIMS_FILE)          # as the run copies it
    out = report.build_report(sweep_dir)
    table = pd.read_parquet(out / "comparisons.parquet")
    defined = ~table["metric"].isin(["nowait_failure_rate", "atomic_failure_rate"])
    assert set(table.loc[defined, "n_pairs"]) == {12}    # rates: 0 pairs without requests
    locked = table[(table["baseline"] == "v4.3") & (table["candidate"] == "way1")
                   & (table["metric"] == "reclaim_rounds_locked")].set_index("cell_id")
    assert (locked["cand_mean"] == 0).all()
    v43 = df[df["design"] == "v4.3"].groupby("cell_id")["reclaim_rounds_locked"]
    always, never = v43.min() > 0, v43.max() == 0
    assert always.sum() >= 2 and never.sum() >= 2        # both kinds of cell are present
    assert (locked.loc[always[always].index, "verdict"] == "better").all()
    assert (locked.loc[never[never].index, "verdict"] == "indistinguishable").all()
    markdown = (out / "report.md").read_text()
    assert "| workloads | 288 (288 ok, 0 errors) |" in markdown
    _, rows = _first_table(markdown, "## Summary")
    locked_row = next(r for r in rows if r[0].endswith("[reclaim_rounds_locked]"))
    assert locked_row[4].split(" / ")[0] == str(int(always.sum()))      # way1 vs v4.3: better cells
    # every claim of the registry gets a row with one of the four verdicts
    claim_rows = _table_rows(markdown, "## Claims from the 2015 thread")
    registry = claims.load_claims(REGISTRY)
    assert [r[0] for r in claim_rows] == [c.id for c in registry]
    assert all(re.match(r"\*\*(holds|refuted|inconclusive|untestable)\*\*", r[3]) for r in claim_rows)


def _facts(df, table=None, verdicts=()):
    """The report's facts of a results table, without a sweep folder (no regimes)."""
    table = stats.compare_cells(df, resamples=0) if table is None else table
    return report.Facts(df, table, stats.aggregate(df), pd.DataFrame(columns=["cell_id", "design", "regime"]),
                        list(verdicts), stats.pooled_means(df, 0.05), stats.design_effects(df, resamples=99),
                        0.05, "holm")


def test_claims_table_renders_each_verdict_with_its_evidence():
    df = synthetic(reps=3)
    table = stats.compare_cells(df, resamples=0)
    claim = claims.Claim(id="c-1", who="Tejun Heo", claim="NOWAIT should mostly succeed.",
                         metric="nowait_failures", compare=("way1", "way2"), expect="a<b",
                         where={}, regimes=("high-bound",), untestable=None)
    cells = sorted(df["cell_id"].unique())
    verdicts = [claims.Verdict(claim=claim, verdict="holds", reason="2 cells for, none against",
                               cells_tested=cells, cells_holding=cells[:2], cells_against=[],
                               effect=1.5, ci=(0.5, 2.5), unit="requests")]
    facts = _facts(df, table, verdicts)
    figures = plots.Figures(claims={"c-1": plots.Figure("claim_c-1.png", "x")})
    frame, classes = report.claims_table(facts, figures)
    row = frame.iloc[0]
    assert row["who"] == "Tejun Heo" and row["verdict"] == "**holds**: 2 cells for, none against"
    assert row["where it holds"].startswith("2 of 8 cells: limit 32M x2")
    assert row["median per-cell effect [CI]"] == "way2 - way1: 1.5 [0.5, 2.5] requests"
    verdicts[0].by_regime = [{"regime": "high-bound", "cells": 5, "effect": 2.0, "ci": [1.0, 3.0]},
                             {"regime": "max-bound", "cells": 3, "effect": -1.0, "ci": [-2.0, 0.5]}]
    frame, _ = report.claims_table(facts, figures)
    assert frame.iloc[0]["median per-cell effect [CI]"].endswith(
        "requests; by regime: high-bound (5 cells) 2 [1, 3]; max-bound (3 cells) -1 [-2, 0.5]")
    assert row["evidence"] == "[evidence](#claim-c-1), [figure](#figure-claim-c-1)"      # inside the page
    assert classes == ["better"]


def test_too_few_replications_are_called_out():
    df = synthetic(reps=3)
    facts = _facts(df)
    text = " ".join(report.caveats(facts))
    assert "**Too few replications**: with Holm, no such cell can be significant" in text
    assert "at least 9 replications" in text


def test_enough_replications_give_no_warning(built):
    _, out = built
    assert "Too few replications" not in (out / "report.md").read_text()


def test_a_single_design_sweep_reports_without_comparisons(tmp_path):
    out = report.build_report(write_sweep_dir(tmp_path, synthetic(designs=("way2",), reps=3)))
    markdown = (out / "report.md").read_text()
    assert "Nothing to compare: the sweep ran a single design." in markdown
    assert "No claims were evaluated: the sweep ran a single design." in markdown
    plain = report.build_report(write_sweep_dir(tmp_path / "two", synthetic(reps=3)))
    assert "No claims were evaluated: the sweep folder has no claims registry" in (plain / "report.md").read_text()
    assert not list(out.glob("effect_*.png")) and (out / "summary.png").exists()


def test_a_design_missing_from_some_cells_is_called_out():
    # v6.18 has no SLAB (removed in Linux 6.8, docs/kernel.md §4.7): the sweep runs SLAB
    # cells without it, so its pooled means cover fewer cells than the other designs'
    df = synthetic(reps=3)
    dropped = df["cell_id"].unique()[0]
    df = df[~((df["design"] == "way2") & (df["cell_id"] == dropped))]
    facts = _facts(df)
    text = " ".join(report.caveats(facts))
    n = df["cell_id"].nunique()
    assert f"**way2 ran in {n - 1} of {n} cells**" in text
    assert "v4.3 ran in" not in text and "way1 ran in" not in text


def test_python_m_sweep_report_ends_with_the_verdict(tmp_path):
    """`python -m sweep report DIR`: the verdict is the last thing it prints (issue 21)."""
    from sweep_helpers import run_cli

    sweep_dir = write_sweep_dir(tmp_path / "sweep", synthetic(reps=4, cells=grid_cells(limits=(32 << 20,))))
    done = run_cli(["report", sweep_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    verdict = json.loads((sweep_dir / "report" / report.SUMMARY).read_text())["verdict"]
    assert done.stdout.rstrip().splitlines()[-1] == "Verdict: " + verdict.replace("**", "")
    assert "report:" in done.stderr                                     # the path, before it


def test_an_effect_map_colours_each_square_by_its_effect(tmp_path, monkeypatch):
    """Sampled where the layout puts each square (in `order`, two cells per panel column):
    green for a lower candidate, red for a higher one, grey for a pair without the cell."""
    from PIL import Image

    monkeypatch.setattr(plots, "PANEL_ROWS", 2)
    pairs = [("v4.3", "way1"), ("v4.3", "way2")]
    effects = {"lower": (-80.0, -80.0), "higher": (80.0, 5.0), "one-pair": (10.0, None)}
    rows = pd.DataFrame([
        {"cell_id": cell, "baseline": base, "candidate": cand, "metric": "overshoot_high_peak_pages",
         "base_mean": 100.0, "diff_mean": pct, "p_holm": 0.001 if abs(pct) > 50 else 0.5, "correction": "p_holm"}
        for cell, pcts in effects.items() for (base, cand), pct in zip(pairs, pcts) if pct is not None])
    order = [("higher", "64M o3 n2 kernel h0.75"), ("one-pair", "16M o0 n1 atomic"), ("lower", "16M o3 n2 nofs")]
    name = plots.plot_effect_heatmap(rows, tmp_path / "effect_x.png", 0.05, order)
    layout = plots.effect_map_layout([label for _, label in order], len(pairs))
    with Image.open(tmp_path / name) as png:
        assert png.mode == "P" and png.size[0] == layout.width
        pixels = png.convert("RGB")

    def colour(cell, pair):                       # a corner of the square, clear of its label
        left, top, _, _ = layout.square(cell, pair)
        return pixels.getpixel((left + 3, top + 3))

    def green(rgb):
        return rgb[1] > rgb[0] + 60

    def red(rgb):
        return rgb[0] > rgb[1] + 60

    assert red(colour(0, 0)) and not (red(colour(0, 1)) or green(colour(0, 1)))    # +80 %, +5 %: pale
    assert not (red(colour(1, 0)) or green(colour(1, 0)))
    assert all(abs(c - 0xf4) <= 4 for c in colour(1, 1))                        # no way2 pair: grey
    assert green(colour(2, 0)) and green(colour(2, 1))                              # second panel column
    assert layout.square(2, 0)[0] > layout.square(1, 1)[2]
