"""Model vs a real kernel (sweep/calibration.py, issue 23): the paired comparison of a
real-kernel row with its model twin, its tolerance verdicts, the report section and the
verdict sentence - on synthetic results with a planted truth (no boot)."""
import numpy as np
import pytest

from results_data import grid_cells, synthetic, write_sweep_dir
from sweep import analysis, calibration, report

CELLS = grid_cells(limits=(32 << 20,), nodes=(1,), mixes=("kernel", "nowait-burst"))


def _kernel_beside_model(shift, reps=8):
    """linux-6.1 and v6.1 on the same seeds; the model's values moved by ``shift(cell)``
    (a dict metric -> added amount); what Linux does not expose is NULL on its row."""
    df = synthetic(designs=("linux-6.1", "v6.1"), reps=reps, cells=CELLS,
                   shift=lambda cell, design: shift(cell) if design == "v6.1" else {})
    df.loc[df["design"] == "linux-6.1", "slub_order_fallbacks"] = np.nan
    return df


def test_a_planted_excess_beyond_tolerance_disagrees_and_the_rest_agree():
    """The model's events_high 10x Linux's in the kernel cell only: that metric-cell
    disagrees (its CI lies above the tolerance), every other agrees."""
    excess = lambda cell: {"events_high": 900.0} if cell["mix"] == "kernel" else {}   # noqa: E731
    table = calibration.compare(_kernel_beside_model(excess))
    assert set(table["metric"]) == set(calibration.TOLERANCES)
    assert len(table) == len(CELLS) * len(calibration.TOLERANCES)
    bad = table[table["verdict"] == "disagree"]
    assert list(zip(bad["metric"], bad["mix"])) == [("events_high", "kernel")]
    row = bad.iloc[0]
    assert row["diff_ci_lo"] > row["tolerance"] and row["model_mean"] > row["kernel_mean"]   # model - kernel
    assert calibration.agreement(table) == (len(table) - 1, len(table))


def test_tolerance_is_relative_with_a_floor():
    t = calibration.TOLERANCES["overshoot_high_peak_pages"]
    assert calibration.tolerance("overshoot_high_peak_pages", 0.0) == t.floor
    assert calibration.tolerance("overshoot_high_peak_pages", 10_000.0) == pytest.approx(t.relative * 10_000)
    assert calibration.verdict(np.nan, np.nan, 1.0, 0) == "untestable"
    assert calibration.verdict(-5.0, 0.5, 1.0, 3) == "agree" and calibration.verdict(1.5, 9.0, 1.0, 3) == "disagree"


def test_no_kernel_row_no_section_no_sentence(tmp_path):
    df = synthetic(designs=("v4.3", "v6.1"), reps=3, cells=CELLS)
    assert calibration.compare(df).empty
    found = analysis.load(write_sweep_dir(tmp_path / "s", df))
    assert not [s for s in analysis.verdict_sentences(found) if "real kernel" in s]
    assert report.model_vs_kernel_section(report.Facts.of(found, {}, {})) == []


def test_report_section_and_verdict_sentence_with_a_kernel_row(tmp_path):
    """The verdict says how many metric-cells agree and links the section, which lists the
    disagreement first; the table is cached with the rest of the analysis."""
    excess = lambda cell: {"reclaim_reclaimed_pages": 5000.0} if cell["mix"] == "kernel" else {}   # noqa: E731
    folder = write_sweep_dir(tmp_path / "s", _kernel_beside_model(excess))
    found = analysis.load(folder)
    tested = len(CELLS) * len(calibration.TOLERANCES)
    assert (f"The v6.1 row agrees with Linux 6.1 on {tested - 1} of {tested} metric-cells within tolerance "
            f"([Model vs a real kernel](#model-vs-kernel)).") in analysis.verdict_sentences(found)
    assert analysis.load(folder).calibration.equals(found.calibration)          # read back from the cache
    out = report.build_report(folder)
    text = (out / "report.md").read_text()
    section = text[text.index('<a id="model-vs-kernel"></a>'):]
    assert "## Model vs a real kernel: v6.1 vs Linux 6.1" in section
    lines = section.splitlines()
    header = next(i for i, line in enumerate(lines) if "model - kernel [CI]" in line)
    first_row = lines[header + 2]             # below the header's separator line
    assert "reclaim_reclaimed_pages" in first_row and "| disagree |" in first_row
