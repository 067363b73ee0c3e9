"""sweep.analysis: the statistics of a sweep folder are computed once and shared by the
report and MLflow; a change to what they are computed from computes them again."""
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results_data import grid_cells, synthetic, write_sweep_dir
from sweep import analysis, cli, report
from sweep.outdir import SweepDir
from sweep.store import Store

REGISTRY = Path(__file__).resolve().parent.parent / "configs" / "claims.yaml"


@pytest.fixture
def computed(monkeypatch):
    """Counts the calls of analysis.compute (the expensive step)."""
    calls = []
    real = analysis.compute

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "compute", counting)
    return calls


def _sweep(tmp_path):
    return write_sweep_dir(tmp_path / "sweep", synthetic(reps=4, cells=grid_cells(limits=(32 << 20,))))


def _analyses(sweep_dir: SweepDir) -> list:
    """The cached analyses of the folder (not the per-cell cache beside them)."""
    return [p for p in sweep_dir.analysis_dir.iterdir() if p.name != analysis.CELLS]


def test_report_then_log_compute_the_statistics_once(tmp_path, computed, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep_dir = _sweep(tmp_path)
    assert cli.main(["report", str(sweep_dir)]) == cli.OK
    assert len(computed) == 1
    report_md = (sweep_dir / "report" / "report.md").stat().st_mtime_ns
    assert cli.main(["log", str(sweep_dir)]) == cli.OK         # the report is current: logged as it is
    assert len(computed) == 1                                  # the cached analysis, read
    assert (sweep_dir / "report" / "report.md").stat().st_mtime_ns == report_md
    assert len(_analyses(SweepDir(sweep_dir))) == 1


def test_a_changed_store_or_setting_computes_again(tmp_path, computed):
    sweep_dir = SweepDir(_sweep(tmp_path))
    before = analysis.load(sweep_dir)
    assert analysis.load(sweep_dir).table.equals(before.table) and len(computed) == 1
    with Store(sweep_dir.results) as store:                    # one workload's result changes
        row = store.dataframe().iloc[0].to_dict()
        store.put([{**row, "overshoot_high_peak_pages": row["overshoot_high_peak_pages"] + 1000.0}])
    after = analysis.load(sweep_dir)
    assert len(computed) == 2
    assert not after.aggregates.equals(before.aggregates)
    analysis.load(sweep_dir, {"stats": {"alpha": 0.01}})      # report DIR stats.alpha=0.01
    assert len(computed) == 3 and [c[1] for c in computed] == [0.05, 0.05, 0.01]
    assert len(_analyses(sweep_dir)) == 1                      # stale analyses are removed


def test_the_cached_analysis_equals_a_fresh_one(tmp_path):
    sweep_dir = SweepDir(_sweep(tmp_path))
    shutil.copyfile(REGISTRY, sweep_dir.claims)                # as the run copies it
    cached = analysis.load(sweep_dir)
    fresh = analysis.compute(cached.df, 0.05, "holm", sweep_dir.claims)
    for name in analysis.TABLES:
        assert getattr(cached, name).equals(getattr(fresh, name)), name
    assert cached.verdicts == fresh.verdicts and len(cached.verdicts) > 1
    assert cached.summary() == fresh.summary()
    assert report.Facts.of(cached, {}, {}).labels == report.Facts.of(fresh, {}, {}).labels


def test_a_killed_writers_half_written_cache_is_removed(tmp_path):
    """A driver killed between writing the cache and renaming it into place leaves
    ``.<key>.<pid>``; the next write removes it, but never a live writer's."""
    sweep_dir = SweepDir(_sweep(tmp_path))
    sweep_dir.analysis_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                 # a pid that has just ended
    killed = sweep_dir.analysis_dir / f".0123abcd.{dead.pid}"
    writing = sweep_dir.analysis_dir / f".4567cdef.{os.getppid()}"   # a live process's
    for folder in (killed, writing):
        folder.mkdir()
    analysis.load(sweep_dir)
    assert not killed.exists() and writing.exists()
    assert len([p for p in _analyses(sweep_dir) if not p.name.startswith(".")]) == 1


# ---------------------------------------------------------------- the verdict (issue 21.1)

FOUR_CELLS = grid_cells(limits=(32 << 20,))


def _verdict_of(shift, designs=("v4.3", "way1", "way2", "v6.18"), zero=()):
    df = synthetic(designs=designs, reps=16, cells=FOUR_CELLS, shift=shift)
    for metric in zero:
        df[metric] = 0.0
    return analysis.verdict_sentences(analysis.compute(df, 0.05, "holm"))


def test_the_verdict_names_a_clear_winner_what_it_pays_and_where_v618_stands():
    def shift(cell, design):
        return {"way2": {"overshoot_high_peak_pages": -60.0, "syscall_latency_p99_ns": 60.0},
                "v6.18": {"overshoot_high_peak_pages": -120.0, "reclaim_rounds_locked": 60.0}}.get(design, {})

    sentences = _verdict_of(shift, zero=("slab_wrong_node_objects",))
    text = " ".join(sentences)
    assert 3 <= len(sentences) <= 5
    assert sentences[0].startswith("**way2 (Davydov) beats way1 (Heo)**")
    assert "lower peak overshoot over memory.high (lower in 4 of 4 cells, higher in 0)" in sentences[0]
    assert sentences[1].startswith("What way2 pays: more syscall p99 latency (higher in 4 of 4 cells")
    assert "16 seeds per cell, paired" in text and "4 of 4 cells differ significantly between way1 and way2" in text
    assert "Holm" in text and "simulated (the kmemcg-sweep simulator, model" in text
    modern = next(s for s in sentences if s.startswith("Today's kernel"))
    assert "beats both way1 and way2 on peak overshoot over memory.high" in modern
    assert "higher on reclaim under locks (than way1 and way2)" in modern
    assert "no evidence on wrong-node slab objects: zero in every workload" in sentences[-1]


def test_the_verdict_says_when_nothing_differs():
    sentences = _verdict_of(None, designs=("v4.3", "way1", "way2"))
    assert sentences[0].startswith("**No significant difference between way1 (Heo) and way2 (Davydov)**")
    assert sentences[1].startswith("Neither pays a significant cost")
    assert not any(s.startswith("Today's kernel") for s in sentences)       # v6.18 not run
    assert re.search(r"\d of 4 cells differ significantly between way1 and way2", sentences[2])
    assert "too few seeds" not in sentences[2]                           # 16 seeds are enough
    few = analysis.verdict_sentences(analysis.compute(
        synthetic(reps=3, cells=FOUR_CELLS), 0.05, "holm"))
    assert "too few seeds for a cell to be significant on its own" in few[2]


def test_a_split_verdict_says_who_is_better_on_what():
    def shift(cell, design):
        return {"way2": {"overshoot_high_peak_pages": -60.0},
                "way1": {"overshoot_max_peak_pages": -60.0}}.get(design, {})

    sentences = _verdict_of(shift, designs=("v4.3", "way1", "way2"))
    assert sentences[0].startswith("**Split verdict between the 2015 designs**")
    assert "way2 (Davydov) is lower on peak overshoot over memory.high" in sentences[0]
    assert "; way1 (Heo) on overshoot over memory.max" in sentences[0]


def test_one_outlier_cell_does_not_make_a_winner():
    """way2 far lower in one of four cells, a little higher in the other three: the pooled
    mean favours way2, the cells do not - the verdict names no winner on that harm."""
    def shift(cell, design):
        if design != "way2":
            return {}
        return {"overshoot_high_peak_pages": -400.0 if cell["nodes"] == 1 and cell["mix"] == "kernel" else 3.0}

    sentences = _verdict_of(shift, designs=("v4.3", "way1", "way2"))
    assert not sentences[0].startswith("**way2 (Davydov) beats")
    assert "way2 (Davydov) is lower on peak overshoot" not in sentences[0]


def test_the_analysis_and_figures_on_worker_processes_equal_the_serial_ones(tmp_path):
    """Issue 24: the statistics run as jobs on a process pool (split by metric) and are
    combined in a fixed order; the figures are drawn by the pool's workers.  Both must give
    what one process gives: every table bit for bit, the verdicts, and the same figures."""
    import numpy as np
    from PIL import Image

    from sweep import plots

    df = synthetic(reps=10, cells=grid_cells(limits=(32 << 20,)),
                   shift=lambda cell, design: {"overshoot_high_peak_pages": -40.0}
                   if design == "way2" and cell["mix"] == "nowait-burst" else {})
    sweep_dir = SweepDir(write_sweep_dir(tmp_path / "sweep", df))
    shutil.copyfile(REGISTRY, sweep_dir.claims)
    serial = analysis.compute(df, 0.05, "holm", sweep_dir.claims, workers=0)
    parallel = analysis.compute(df, 0.05, "holm", sweep_dir.claims, workers=2)
    for name in analysis.TABLES:
        a, b = getattr(serial, name), getattr(parallel, name)
        assert list(a.columns) == list(b.columns) and a.equals(b), name
    assert serial.verdicts == parallel.verdicts and serial.summary() == parallel.summary()
    assert (serial.table["verdict"] == "better").any()            # the planted effect is found

    drawn = {}
    for workers in (0, 2):
        out = tmp_path / f"figures{workers}"
        out.mkdir()
        drawn[workers] = (plots.draw_plots(df, serial.table, serial.pooled, serial.verdicts, out, 0.05,
                                           workers=workers), out)
    (one, out_one), (two, out_two) = drawn[0], drawn[2]
    assert one == two and "overshoot_high_peak_pages" in one.heatmaps
    names = sorted(p.name for p in out_one.glob("*.png"))
    assert names == sorted(p.name for p in out_two.glob("*.png")) and len(names) >= 3
    for name in names:                                             # same style in a worker as here
        with Image.open(out_one / name) as a, Image.open(out_two / name) as b:
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))), name


def test_report_and_log_together_log_the_runs_while_the_report_is_drawn(tmp_path, monkeypatch):
    """The runs are logged in a thread while the report is drawn; the parent run still gets
    the finished report (report.html at its root) and ends FINISHED."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    sweep_dir = SweepDir(_sweep(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli._report_and_log(sweep_dir, {"tracking": {"uri": uri}}) == cli.OK
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("kmemcg.role") == "parent")
    children = [r for r in runs if r.data.tags.get("kmemcg.role") == "child"]
    assert parent.info.status == "FINISHED" and "kmemcg.upload_incomplete" not in parent.data.tags
    assert len(children) == len(analysis.load(sweep_dir).aggregates)
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_verdict_counts_the_claims_it_rests_on_and_names_only_the_refuted():
    """19 claim ids in one sentence buried the one that mattered: the sentence counts the
    held claims and names the refuted ones (the claims table lists every claim)."""
    from types import SimpleNamespace

    found = analysis.compute(synthetic(designs=("v4.3", "way1", "way2"), reps=4, cells=FOUR_CELLS),
                             0.05, "holm")
    verdicts = [SimpleNamespace(verdict=v, claim=SimpleNamespace(id=f"claim-{i}"))
                for i, v in enumerate(["holds"] * 5 + ["refuted", "inconclusive", "untestable"])]
    text = analysis._rests_on(dataclasses.replace(found, verdicts=verdicts), [])
    assert text == ("It rests on 6 of the thread's 8 claims: 5 hold, 1 refuted (claim-5); "
                    "the other 2 are inconclusive or untestable.")


# ---------------------------------------------------------------- a cell's share, while the sweep runs (issue 24)

def test_cells_analysed_one_by_one_while_the_sweep_runs_give_the_same_analysis(tmp_path, monkeypatch):
    """``analysis.cache_cell`` on each cell read alone from the store (as sweep.cellwise does
    when a cell's last workload is stored) + the final ``load``: the same tables, bit for bit,
    as one analysis of the whole store - and the cached cells are not compared again."""
    import pandas as pd

    from sweep import stats

    alone = SweepDir(_sweep(tmp_path / "alone"))
    whole = SweepDir(_sweep(tmp_path / "whole"))
    expected = analysis.load(whole)
    with Store(alone.results) as store:
        cells = sorted(store.dataframe()["cell_id"].unique())
        for cell in cells:
            frame = store.dataframe(cells=[cell])
            assert set(frame["cell_id"]) == {cell}
            analysis.cache_cell(alone, frame, 0.05, ["v4.3", "way1", "way2"])
    assert len(list((alone.analysis_dir / analysis.CELLS).glob("*.json"))) == len(cells)
    compared = []
    real = stats.compare_cell
    monkeypatch.setattr(stats, "compare_cell", lambda *a, **k: compared.append(1) or real(*a, **k))
    found = analysis.load(alone)
    assert compared == []                                      # every cell came from the cache
    for name in analysis.TABLES:
        pd.testing.assert_frame_equal(getattr(found, name), getattr(expected, name), check_exact=True)
    assert found.verdicts == expected.verdicts


def test_a_cached_cell_whose_rows_changed_is_compared_again(tmp_path, monkeypatch):
    from sweep import stats

    sweep_dir = SweepDir(_sweep(tmp_path))
    analysis.load(sweep_dir)
    with Store(sweep_dir.results) as store:                    # one workload's result changes
        row = store.dataframe().iloc[0].to_dict()
        store.put([{**row, "overshoot_high_peak_pages": row["overshoot_high_peak_pages"] + 1000.0}])
    compared = []
    real = stats.compare_cell
    monkeypatch.setattr(stats, "compare_cell", lambda values, *a, **k: compared.append(
        set(values["cell_id"])) or real(values, *a, **k))
    after = analysis.load(sweep_dir)
    assert compared == [{row["cell_id"]}]                      # that cell only, the rest cached
    changed = after.table[(after.table["cell_id"] == row["cell_id"]) & (after.table["candidate"] == row["design"])
                          & (after.table["metric"] == "overshoot_high_peak_pages")]
    fresh = analysis.compute(after.df, 0.05, "holm")
    assert changed["cand_mean"].tolist() == fresh.table.loc[changed.index, "cand_mean"].tolist()
    assert len(list((sweep_dir.analysis_dir / analysis.CELLS).glob("*.json"))) == after.n_cells   # stale one pruned
