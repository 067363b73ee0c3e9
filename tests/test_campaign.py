"""The campaign (sweep/campaign.py) without Ray: retries and their count, chunks lost beyond
their retries, an executor that dies, a stop request between chunks, and what sweep.json
says after each.  The executor is the local one with scripted faults; the calibration is
replaced by a fixed per-workload time so that chunking is the same on every run (5 chunks of
30, 30, 30, 30 and 24 workloads).  The same faults on a real Ray are tests/test_faults.py's.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweep import campaign, config, grid, interrupt, plan, progress, worker
from sweep.local import LocalExecutor
from sweep.outdir import SweepDir
from sweep.store import Store
from sweep_helpers import cli_env, write_config

CHUNK = 30      # SMALL's ray.chunk_seconds=0.3 / the 0.01 s per workload below


class Scripted(LocalExecutor):
    """The local executor, with the ``i``-th chunk (in order of first submission) lost
    ``lose[i]`` times, an ``ExecutorLost`` instead of chunk ``dead_at``, and a Ctrl-C's flag
    raised once ``stop_after`` chunks are stored."""

    def __init__(self, lose=None, dead_at=None, stop_after=None, monkeypatch=None):
        super().__init__()
        self.lose, self.dead_at, self.stop_after, self.monkeypatch = lose or {}, dead_at, stop_after, monkeypatch
        self.order: list[str] = []      # first key of each chunk, in order of first submission
        self.ran = 0
        self.closed = False

    def finished(self, timeout):
        if not self._queue:
            return
        handle, items = self._queue.popleft()
        first = items[0]["key"]
        if first not in self.order:
            self.order.append(first)
        index = self.order.index(first)
        if self.lose.get(index, 0) > 0:
            self.lose[index] -= 1
            yield handle, None, "WorkerCrashedError: the worker died (scripted)"
            return
        if index == self.dead_at:
            raise campaign.ExecutorLost("the local Ray stopped: scripted")
        self.ran += 1
        yield handle, worker.run_chunk(items), None
        if self.ran == self.stop_after:
            self.monkeypatch.setattr(interrupt, "_signals", 1)     # what a first Ctrl-C sets

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture
def small(tmp_path, monkeypatch):
    """SMALL's config; its sweep folder."""
    monkeypatch.setattr(plan, "calibrate", lambda missing, stop: plan.Calibration(0.01, [], []))
    return write_config(tmp_path), SweepDir(tmp_path / "out")


def run(small, executor, *overrides, on_cells=None):
    """What ``python -m sweep CONFIG OVERRIDES`` runs on ``executor``, minus the report."""
    path, sweep_dir = small
    cfg = config.load(path, list(overrides))
    cells = grid.build_cells(cfg, config.load_mixes(cfg, path))
    return campaign.run_sweep(cfg, cells, sweep_dir, executor, on_cells=on_cells)


def meta(small) -> dict:
    return json.loads(small[1].meta.read_text())


def stored(small, status=None) -> int:
    with Store(small[1].results) as store:
        return store.count(status)


def test_a_lost_chunk_is_submitted_again_and_the_rerun_counted(small):
    summary = run(small, Scripted(lose={0: 2, 3: 1}))
    assert (summary.ran, summary.ok, summary.lost, summary.retried) == (144, 144, 0, 3 * CHUNK)
    assert meta(small)["status"] == "completed" and meta(small)["counts"]["retried"] == 3 * CHUNK
    assert stored(small, "ok") == 144


def test_a_chunk_lost_beyond_its_retries_is_stored_as_error_rows_and_a_rerun_runs_only_them(small):
    summary = run(small, Scripted(lose={1: 1}), "ray.max_retries=0")
    assert (summary.ran, summary.ok, summary.lost, summary.errors, summary.retried) == (144, 144 - CHUNK, CHUNK, 0, 0)
    with Store(small[1].results) as store:
        errors = store.errors(limit=1000)
    assert len(errors) == CHUNK and all(e.startswith("worker lost: WorkerCrashedError") for *_, e in errors)
    assert meta(small)["counts"]["lost"] == CHUNK
    rerun = run(small, LocalExecutor())
    assert (rerun.skipped, rerun.ran, rerun.ok) == (144 - CHUNK, CHUNK, CHUNK)
    assert stored(small, "ok") == 144


def test_a_dead_executor_stops_the_run_with_the_results_kept_and_a_true_record(small):
    executor = Scripted(dead_at=2)
    summary = run(small, executor)
    assert summary.status == "failed" and summary.failure == "the local Ray stopped: scripted"
    assert summary.ran == 2 * CHUNK == stored(small) and executor.closed
    record = meta(small)
    assert (record["status"], record["reason"], record["counts"]["ran"]) == ("failed", summary.failure, 2 * CHUNK)


def test_a_stop_request_ends_the_run_between_chunks_and_the_rerun_runs_the_rest(small, monkeypatch):
    summary = run(small, Scripted(stop_after=2, monkeypatch=monkeypatch))
    assert summary.status == "interrupted" and summary.ran == 2 * CHUNK == stored(small)
    assert meta(small)["status"] == "interrupted" and meta(small)["counts"]["ran"] == 2 * CHUNK
    monkeypatch.setattr(interrupt, "_signals", 0)
    rerun = run(small, LocalExecutor())
    assert (rerun.status, rerun.skipped, rerun.ran) == ("completed", 2 * CHUNK, 144 - 2 * CHUNK)


class Slow(LocalExecutor):
    """The local executor whose every chunk is ``looks`` looks of the campaign in coming
    back, as a real-kernel boot is minutes (nothing else finishes meanwhile)."""

    def __init__(self, looks: int):
        super().__init__()
        self.looks, self.left = looks, looks

    def finished(self, timeout):
        if self.left:
            self.left -= 1
            return
        self.left = self.looks
        yield from super().finished(timeout)


def test_the_progress_line_keeps_its_clock_while_a_long_chunk_runs(small, monkeypatch, capsys):
    """A boot replaying 17 streams kept the calibration's progress line silent for 39
    minutes: lines came only when a chunk finished.  Now a look that finds nothing prints
    the line once QUIET_S (60 s; 0 here) passed without one, still 0 done at first."""
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    summary = run(small, Slow(looks=3))
    assert summary.ok == 144
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("progress:")]
    assert len(lines) >= 3 * 5                  # 3 silent looks per chunk, 5 chunks
    assert all(ln.startswith("progress: 0/144 ") for ln in lines[:3])


def test_each_cell_is_announced_once_as_soon_as_its_last_workload_is_stored(small):
    """sweep.cellwise analyses a cell while the sweep runs: the campaign names each cell
    when its planned workloads are all stored - once, and (the workloads run cell by cell)
    most cells long before the last workload; a rerun names the cells already complete."""
    announced = []

    def on_cells(cells):
        with Store(small[1].results) as store:
            rows = store.dataframe()
        for cell in cells:
            assert (rows["cell_id"] == cell).sum() == 3 * 2       # designs x replications, all stored
        announced.append((len(rows), list(cells)))

    summary = run(small, Scripted(), on_cells=on_cells)
    cells = [cell for _, batch in announced for cell in batch]
    assert sorted(cells) == sorted(set(cells)) and len(cells) == summary.cells
    early = sum(len(batch) for stored_then, batch in announced if stored_then < summary.planned)
    assert early >= summary.cells * 3 // 4      # (in key order, ~1/3 of the cells would be done before the end)
    again = []
    run(small, Scripted(), on_cells=lambda cells: again.append(list(cells)))
    assert sorted(again[0]) == sorted(cells)                      # nothing left to run: all complete


class Recording(LocalExecutor):
    """The local executor, noting when the campaign asks it to prepare and to start."""

    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def prepare(self):
        self.calls.append("prepare")

    def start(self, out):
        self.calls.append("start")


def test_the_executor_prepares_before_the_calibration_so_a_local_ray_boots_meanwhile(small, monkeypatch):
    """A local Ray's head takes ~10 s to boot: the campaign has it spawned (``prepare``)
    before the calibration, and waits for it only after (``start``) - unless the
    calibration may run every missing workload itself (then no Ray is started at all)."""
    calls = []
    monkeypatch.setattr(plan, "calibrate", lambda missing, stop: calls.append("calibrate") or plan.Calibration(
        0.01, [], []))
    run(small, Recording(calls))
    assert calls == ["prepare", "calibrate", "start"]
    calls.clear()
    other = small[1].path.parent / "few"
    run((small[0], SweepDir(other)), Recording(calls), "grid.limit=[32M]", "grid.order=[3]", "grid.nodes=[1]",
        "replications=1", f"output.dir={other}")
    assert calls == ["calibrate", "start"]             # 3 cells x 3 designs x 1: the calibration's 21 may do


def test_the_campaign_and_the_local_executor_import_no_ray():
    code = ("import sys, sweep.campaign, sweep.local, sweep.cli; "
            "print(sorted(m for m in ('ray', 'sweep.runner') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
