"""sweep.report: report.md / report.html / PNGs / Parquet from a sweep folder."""
import os
import re

import matplotlib.image as mpimg
import pandas as pd
import pytest

from results_data import grid_cells, real, synthetic, write_sweep_dir
from sweep import report, stats


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
    sweep_dir = write_sweep_dir(tmp_path_factory.mktemp("sweep"), df, name="planted")
    return df, report.build_report(sweep_dir)


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after ``heading``."""
    section = markdown.split(heading, 1)[1]
    lines = [line for line in section.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_report_files_are_written(built):
    df, out = built
    names = set(os.listdir(out))
    assert {"report.md", "report.html", "results.parquet", "comparisons.parquet",
            "aggregates.parquet", "failure_rate_vs_limit.png"} <= names
    heatmaps = {n for n in names if n.startswith("effect_")}
    assert len(heatmaps) == 3 * len(stats.KEY_METRICS)      # 3 comparisons x key metrics
    assert "effect_overshoot_high_peak_pages__way2_vs_v4.3.png" in heatmaps
    for name in heatmaps | {"failure_rate_vs_limit.png"}:
        pixels = mpimg.imread(out / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0.05                          # not a blank canvas
    markdown = (out / "report.md").read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown))
    assert linked == heatmaps | {"failure_rate_vs_limit.png"}


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
    assert markdown.startswith("# kmemcg-sweep report: planted")
    assert "| git commit | 0123abc |" in markdown
    assert "| workloads | 384 (381 ok, 3 errors) |" in markdown       # 8 cells x 3 x 16


def test_verdict_table_counts_and_places_the_planted_cells(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    rows = {r[0]: r for r in _table_rows(markdown, "### way2 vs v4.3")}
    overshoot = rows["peak overshoot over memory.high (pages) [overshoot_high_peak_pages]"]
    assert overshoot[1:5] == ["2", "0", "6", "0"]            # better, worse, same, untestable
    assert overshoot[5] == "limit 32M x2; nodes 1 x1, 2 x1; mix nowait-burst x2; order 3 x2"
    way1 = {r[0]: r for r in _table_rows(markdown, "### way1 vs v4.3")}
    assert way1["peak overshoot over memory.high (pages) [overshoot_high_peak_pages]"][1:3] == ["0", "0"]


def test_comparison_table_is_direction_aware_and_marked(built):
    _, out = built
    markdown = (out / "report.md").read_text()
    section = markdown.split("### way2 vs v4.3", 2)[2]        # the per-cell part
    rows = _table_rows(section, "[overshoot_high_peak_pages] (lower is better)")
    by_cell = {r[0]: r for r in rows}
    planted = by_cell["32M o3 n1 nowait-burst"]
    base, cand, gain = float(planted[2]), float(planted[3].rstrip(" *")), planted[4]
    assert planted[3].endswith(" *") and planted[-1] == "better"
    assert cand < base and gain.startswith("+")              # lower is better -> positive gain
    assert float(gain.rstrip("%")) == pytest.approx((base - cand) / base * 100, rel=1e-3)
    quiet = by_cell["64M o3 n1 kernel"]
    assert not quiet[3].endswith("*") and quiet[-1] == "indistinguishable"


def test_html_colours_the_verdicts(built):
    _, out = built
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    table = pd.read_parquet(out / "comparisons.parquet")
    assert page.count("<tr class='better'>") >= (table["verdict"] == "better").sum()
    assert "<img src='effect_overshoot_high_peak_pages__way2_vs_v4.3.png'" in page


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
    rates = _table_rows((out / "report.md").read_text(), "## Rates per design")
    assert ["64M o3 n2 kernel", "way1", "13 / 16"] in [r[:3] for r in rates]


def test_is_current_tracks_the_store(tmp_path):
    sweep_dir = write_sweep_dir(tmp_path, synthetic(reps=2))
    assert not report.is_current(sweep_dir)
    (sweep_dir / "report").mkdir()
    for name in (report.COMPARISONS, report.AGGREGATES, report.RESULTS):
        (sweep_dir / "report" / name).write_bytes(b"")
    assert report.is_current(sweep_dir)
    later = (sweep_dir / "results.sqlite").stat().st_mtime + 5
    os.utime(sweep_dir / "results.sqlite", (later, later))
    assert not report.is_current(sweep_dir)


def test_an_empty_store_is_a_clear_error(tmp_path):
    sweep_dir = write_sweep_dir(tmp_path, synthetic(reps=1).iloc[0:0])
    with pytest.raises(ValueError, match="no results"):
        report.build_report(sweep_dir)


def test_report_of_real_simulator_results(tmp_path):
    """The simulator's own numbers.  way1 punts memory.high reclaim to the return to user
    (DESIGN §1), so it never reclaims under a lock; v4.3 reclaims synchronously, under the
    caller's lock when it holds one.  Wherever v4.3 did so in every paired seed, the report
    must call way1 better on reclaim_rounds_locked; where neither did, indistinguishable."""
    df = real(reps=12, cells=grid_cells(limits=(16 << 20, 32 << 20)))
    out = report.build_report(write_sweep_dir(tmp_path, df, name="real"))
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
    rows = {r[0]: r for r in _table_rows(markdown, "### way1 vs v4.3")}
    assert rows["reclaim rounds run under a lock [reclaim_rounds_locked]"][1] == str(int(always.sum()))


def test_too_few_replications_are_called_out():
    df = synthetic(reps=3)
    table = stats.compare_cells(df, resamples=0)
    blocks = report.report_blocks(df, table, stats.aggregate(df), {}, {}, 0.05, "holm", [])
    markdown = report.to_markdown(blocks)
    assert "Warning: with Holm, no such cell can be significant" in markdown
    assert "at least 9 replications" in markdown


def test_enough_replications_give_no_warning(built):
    _, out = built
    assert "Warning:" not in (out / "report.md").read_text()


def test_a_single_design_sweep_reports_without_comparisons(tmp_path):
    out = report.build_report(write_sweep_dir(tmp_path, synthetic(designs=("way2",), reps=3)))
    markdown = (out / "report.md").read_text()
    assert "Nothing to compare: the sweep ran a single design." in markdown
    assert not list(out.glob("effect_*.png")) and (out / "failure_rate_vs_limit.png").exists()
    assert "(lower is better)" not in markdown                           # no comparison table
