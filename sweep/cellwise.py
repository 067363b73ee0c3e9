"""A cell's share of the work after the sweep, done as soon as its last workload is stored.

The workloads run cell by cell (``plan.ordered``), so cells finish all through a sweep.  For
each finished cell a thread of the driver reads the cell's rows from the store, computes
its paired comparisons (``analysis.cache_cell``: the final analysis then only combines
them and corrects across cells) and, when the run logs to MLflow, logs its child runs
(``tracking.LiveRuns``: all but the verdicts that wait for that correction).  What follows
the last workload is then the part that needs every cell.

The thread only reads the store and writes caches and MLflow runs: if it fails, the step
after the sweep does what it did not (the cache is looked up by content, the MLflow runs by
tag), so a failure here costs time, never a result.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterable

import pandas as pd

from sweep.outdir import SweepDir

STOP_WAIT_S = 2.0        # an interrupted sweep waits this long for the cell in hand (the rest: redone later)


class CellWatch:
    """Which cells have every planned workload stored (ok or error)."""

    def __init__(self):
        self._cell_of: dict[str, str] = {}
        self._left: dict[str, int] = {}

    def plan(self, workloads: Iterable, stored: set[str]) -> list[str]:
        """(Re)plan a round: returns the cells whose workloads are all stored already."""
        self._cell_of, self._left = {}, {}
        for w in workloads:
            self._left.setdefault(w.cell.cell_id, 0)
            if w.key not in stored:
                self._cell_of[w.key] = w.cell.cell_id
                self._left[w.cell.cell_id] += 1
        return [cell for cell, left in self._left.items() if not left]

    def stored(self, keys: Iterable[str]) -> list[str]:
        """Mark workloads stored; returns the cells this completed."""
        done = []
        for key in keys:
            cell = self._cell_of.pop(key, None)
            if cell is not None:
                self._left[cell] -= 1
                if not self._left[cell]:
                    done.append(cell)
        return done


class Cellwise:
    """The thread that takes finished cells (``finished``) and does their share.
    ``close()`` waits for the cells handed so far and returns the MLflow runs it logged
    (``tracking.LiveRuns``), None when it logged none."""

    def __init__(self, sweep_dir: SweepDir, cfg, cells: list, log: bool, out=None):
        """``cells``: the sweep's (``grid.Cell``), whose labels name the MLflow runs."""
        self.sweep_dir, self.cfg, self.log = sweep_dir, cfg, log
        self.axes = pd.DataFrame([{"cell_id": cell.cell_id, **cell.axes} for cell in cells])
        self.out = out or sys.stderr
        self.live = None
        self._failed = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cellwise", daemon=True)
        self._thread.start()

    def finished(self, cells: list[str]) -> None:
        for cell in cells:
            self._queue.put(cell)

    def close(self, wait: bool = True, stop=lambda: False):
        """Wait for the cells handed so far (``wait`` False: STOP_WAIT_S at most; ``stop()``
        True: no longer).  Returns the MLflow runs logged, None if the thread is not done
        with them (the end then looks them up)."""
        self._queue.put(None)
        deadline = None if wait else time.monotonic() + STOP_WAIT_S
        while self._thread.is_alive() and not stop() and (deadline is None or time.monotonic() < deadline):
            self._thread.join(0.2)
        return None if self._thread.is_alive() else self.live

    def _run(self) -> None:
        from sweep import analysis
        from sweep.config import significance_settings
        from sweep.store import Store

        alpha, _ = significance_settings(self.cfg.stats)
        designs = list(self.cfg.designs)
        cell = self._queue.get()       # the store is opened once the sweep has (re)made it
        if cell is None:
            return
        try:
            store = Store(self.sweep_dir.results)
        except Exception as err:       # e.g. the disk turned read-only: the sweep says so itself
            self._say(f"statistics and MLflow runs left to the end of the sweep: {type(err).__name__}: {err}")
            while self._queue.get() is not None:
                pass
            return
        with store:
            while cell is not None:
                try:
                    frame = store.dataframe(cells=[cell])
                    rows = analysis.cache_cell(self.sweep_dir, frame, alpha, designs)
                except Exception as err:     # the final analysis computes it: only time is lost
                    if not self._failed:
                        self._say(f"statistics of cell {cell} (and any other that fails) left to the end of the "
                                  f"sweep: {type(err).__name__}: {err}")
                    self._failed = True
                else:
                    if self.log:
                        self._log(frame, rows, alpha)
                cell = self._queue.get()

    def _log(self, frame: pd.DataFrame, rows: list[dict], alpha: float) -> None:
        """The cell's child runs; on the first failure (no server, no mlflow) logging stops
        here and the step after the sweep logs everything, saying what failed."""
        try:
            if self.live is None:
                from sweep.tracking import LiveRuns

                self.live = LiveRuns(self.sweep_dir, self.cfg, self.axes)
            self.live.log_cell(frame, rows, alpha)
        except Exception as err:
            self.log, self.live = False, None
            self._say(f"MLflow runs left to the end of the sweep: {type(err).__name__}: {str(err)[:200]}")

    def _say(self, text: str) -> None:
        print(text, file=self.out)
