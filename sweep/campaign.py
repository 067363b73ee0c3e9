"""A sweep campaign, Ray-free: what to run, when to stop, and what was stored.

Per round: plan the workloads, skip those already stored, time a few (in a child process,
within a budget) to size the chunks, hand the rest in chunks of about ``ray.chunk_seconds``
to an :class:`Executor` with at most its ``max_in_flight`` pending, and store each chunk as
it returns.  A chunk whose worker was lost is submitted again, at most ``ray.max_retries``
times (workloads are deterministic: a re-run gives the same rows); the summary counts the
re-runs.  When ``stats.max_replications > replications`` another round adds replications
to the cells ``sweep.stats.cells_needing_more`` names.

Who runs the chunks is the executor's business: ``sweep.runner.RayExecutor`` (Ray tasks, the
default) or ``sweep.local.LocalExecutor`` (in this process, ``--local`` and the tests).
Both call ``sweep.worker.run_chunk``, so they store the same rows.

Stopping (sweep.interrupt): Ctrl-C / SIGTERM only raise a flag, read here between chunks.
The campaign stops submitting, stores the chunks that finish within a short grace, abandons
the rest and raises :class:`Interrupted`.  An executor that can run nothing more (a dead
local Ray) raises :class:`ExecutorLost`: the run stops at once with the results kept.  So
does a full or read-only sweep folder (``DiskFault``: SQLite rolls the failed chunk back).
``sweep.json`` always ends as completed, interrupted or failed with the real counts (on a
full disk the folder's space reserve makes room for it; on a read-only one it cannot be
written, and the summary says so).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Protocol

import core
from sweep import grid, interrupt, plan, worker
from sweep.config import is_adaptive, is_kernel_row
from sweep.cellwise import CellWatch
from sweep.grid import Cell, Workload
from sweep.outdir import SweepDir, now, run_record
from sweep.progress import Progress
from sweep.rayhead import stop_leftovers
from sweep.store import DiskFault, Store, disk_fault

LOST = "worker lost"   # error-message prefix of workloads whose chunk could not finish
POLL_S = 0.2           # how often the loop looks at the stop flag (and the executor at its health)


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C, SIGTERM); raised at a safe point."""


class ExecutorLost(RuntimeError):
    """The executor can run nothing more (e.g. the local Ray died); the message says why."""


class Executor(Protocol):
    """What runs a campaign's chunks.  A chunk goes in as plain dicts (``plan.as_item``) and
    comes back as ``sweep.worker.run_chunk``'s results, in the same order."""

    name: str               # "ray", "local": recorded in sweep.json
    cpus: int | None        # CPUs the chunks run on (None until started)
    max_in_flight: int      # chunks pending at once (set by start)

    def prepare(self) -> None:
        """Begin getting ready, if that takes a while, without waiting (a local Ray's head
        boots while the campaign calibrates); never raises: ``start`` says what failed."""

    def start(self, out) -> None:
        """Be ready to run chunks (idempotent; messages go to ``out``).  May raise
        :class:`Interrupted` or :class:`ExecutorLost`."""

    def submit(self, items: list[dict]) -> Hashable:
        """Start one chunk; the handle names it in :meth:`finished`."""

    def finished(self, timeout: float) -> Iterator[tuple[Hashable, list[dict] | None, str | None]]:
        """The chunks that finished within ``timeout``: ``(handle, results, None)``, or
        ``(handle, None, reason)`` for a chunk whose worker was lost.  Raises
        :class:`ExecutorLost` when nothing more can run (results yielded before are kept)."""

    def record(self) -> dict:
        """Its fields of sweep.json."""

    def kill(self) -> None:
        """Stop at once (a second Ctrl-C's last words: no time for a clean close)."""

    def close(self) -> None:
        """Release what :meth:`start` took."""


@dataclass
class Summary:
    cells: int = 0
    planned: int = 0          # workloads of the sweep (all rounds)
    skipped: int = 0          # already stored before this run
    ran: int = 0
    errors: int = 0           # workloads that raised
    lost: int = 0             # workloads whose chunk was lost beyond max_retries
    retried: int = 0          # workloads run again because their worker was lost
    lost_reason: str | None = None   # Ray's word on the last chunk lost beyond its retries
    rounds: int = 0
    interrupted: bool = False
    failure: str | None = None   # why the run stopped early (e.g. the local Ray died)
    disk: DiskFault | None = None    # ... when it was a full or read-only filesystem
    meta_written: bool = True    # False: sweep.json could not record the end (read-only disk)
    executor: str = ""
    cpus: int | None = None      # CPUs the executor ran chunks on (None: it never started)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.ran - self.errors - self.lost

    @property
    def status(self) -> str:
        return "interrupted" if self.interrupted else "failed" if self.failure else "completed"

    def counts(self) -> dict:
        return {"cells": self.cells, "workloads": self.planned, "skipped": self.skipped, "ran": self.ran,
                "ok": self.ok, "errors": self.errors, "lost": self.lost, "retried": self.retried,
                "rounds": self.rounds}


def run_sweep(cfg, cells: list[Cell], sweep_dir: SweepDir, executor: Executor, fresh: bool = False,
              shard=None, out=None, on_cells=None) -> Summary:
    """Run every missing workload of ``cells`` on ``executor``; results land in ``sweep_dir``'s
    store.  ``on_cells(cell_ids)``: told of every cell whose planned workloads are all
    stored, as soon as they are (``sweep.cellwise``)."""
    out = out or sys.stderr
    summary = Summary(cells=len(cells), executor=executor.name)
    started = time.monotonic()
    with interrupt.polling(), sweep_dir.lock():
        if fresh:
            Store.remove(sweep_dir.results)
        _stop_leftovers(sweep_dir, out)
        sweep_dir.keep_reserve()
        sweep_dir.write_config(cfg)
        sweep_dir.update_meta(name=cfg.name, model_version=core.MODEL_VERSION, started=now(), finished=None,
                              status="running", reason=None, ray_head=None, counts=None, seconds=None,
                              shard=shard.label if shard else None, **executor.record(), **run_record())

        def record(status: str) -> None:
            summary.seconds = time.monotonic() - started
            sweep_dir.update_meta(finished=now(), status=status, reason=summary.failure, counts=summary.counts(),
                                  seconds=round(summary.seconds, 1), **executor.record())

        def last_words() -> None:       # a second Ctrl-C: no time for a clean close
            executor.kill()
            record("interrupted")

        with interrupt.last_words(last_words):
            try:
                with Store(sweep_dir.results) as store:
                    _rounds(cfg, cells, store, executor, summary, out, on_cells or (lambda cell_ids: None))
            except Interrupted:
                summary.interrupted = True
            except ExecutorLost as err:
                summary.failure = str(err)
            except BaseException as err:
                fault = disk_fault(err) if isinstance(err, Exception) else None
                if fault is None:
                    summary.failure = f"{type(err).__name__}: {err}"
                    raise
                summary.failure, summary.disk = str(fault), fault
            finally:
                try:
                    executor.close()
                finally:
                    summary.cpus = executor.cpus
                    try:
                        record(summary.status)
                    except DiskFault as err:      # read-only: sweep.json stays as it was
                        summary.meta_written = False
                        if summary.failure is None:
                            summary.failure, summary.disk = str(err), err
    return summary


def _stop_leftovers(sweep_dir: SweepDir, out) -> None:
    """A previous driver of this folder is gone (we hold the lock); the local Ray its record
    names must be too, whichever executor this run uses."""
    head = sweep_dir.read_meta().get("ray_head") or {}
    stopped = stop_leftovers(head.get("pids") or [])
    if stopped:
        print(f"stopped {stopped} processes of a local Ray left by the previous run in {sweep_dir.path}",
              file=out)


def check_stop() -> None:
    """A safe point: raise :class:`Interrupted` if a stop was asked for."""
    if interrupt.stop_requested():
        raise Interrupted


def _rounds(cfg, cells, store, executor, summary, out, on_cells) -> None:
    targets = {cell.cell_id: cfg.replications for cell in cells}
    stored_at_start = store.keys("ok")
    seconds_per_workload = None
    watch = CellWatch()
    while True:
        check_stop()
        summary.rounds += 1
        planned = grid.workloads(cells, cfg.designs, targets, cfg.seed, core.MODEL_VERSION)
        store.set_plan((w.key for w in planned), replace=summary.rounds == 1)
        done = store.keys("ok")
        on_cells(watch.plan(planned, done))
        missing = plan.ordered([w for w in planned if w.key not in done])
        summary.planned = len(planned)
        summary.skipped = sum(w.key in stored_at_start for w in planned)
        if missing:
            label = "workloads" if summary.rounds == 1 else f"round {summary.rounds}"
            seconds_per_workload = _run_missing(cfg, missing, store, executor, summary, seconds_per_workload,
                                                label, lambda keys: on_cells(watch.stored(keys)))
        check_stop()
        grow = _cells_needing_more(cfg, store, targets)
        if not grow:
            return
        print(f"round {summary.rounds + 1}: {len(grow)} cells need more replications "
              f"(stats.ci_halfwidth={cfg.stats.ci_halfwidth})", file=out)
        for cell_id in grow:
            targets[cell_id] = min(cfg.stats.max_replications, targets[cell_id] + cfg.replications)


def _cells_needing_more(cfg, store, targets) -> list[str]:
    if not is_adaptive(cfg):
        return []
    from sweep import stats  # lazily: the CLI checked it imports before anything started

    asked = stats.cells_needing_more(store.dataframe(), cfg.stats)
    return [c for c in asked if c in targets and targets[c] < cfg.stats.max_replications]


def _run_missing(cfg, missing, store, executor, summary, seconds_per_workload, label, on_stored) -> float:
    """Calibrate on the first few (first round only), then the rest on the executor; returns
    the per-workload time used for chunking.  ``on_stored(keys)`` after each store."""
    progress = Progress(len(missing), label=label)

    def store_chunk(workloads, results) -> None:
        _store_results(store, workloads, results, summary, progress)
        on_stored([w.key for w in workloads])
    on_kernel = [w for w in missing if is_kernel_row(w.design)]    # a boot per chunk: never timed
    missing = [w for w in missing if not is_kernel_row(w.design)]
    try:
        if len(missing) > plan.CALIBRATION_RUNS or on_kernel:    # (else the calibration may run them all)
            executor.prepare()          # a local Ray boots while the calibration runs
        if seconds_per_workload is None and missing:
            calibration = plan.calibrate(missing, stop=interrupt.stop_requested)
            store_chunk(calibration.workloads, calibration.results)
            seconds_per_workload = calibration.seconds_per_workload
            ran = {w.key for w in calibration.workloads}
            missing = [w for w in missing if w.key not in ran]
        check_stop()
        if missing or on_kernel:
            executor.start(progress.writer)     # its messages must not land in the bar
            chunks = plan.kernel_chunks(on_kernel, boots_at_once=executor.cpus or 1)
            if missing:
                chunks += plan.chunks(missing, seconds_per_workload, cfg.ray.chunk_seconds)
            progress.restart_clock()
            grace = max(2.0, 4 * cfg.ray.chunk_seconds)
            _execute(executor, chunks, cfg.ray.max_retries, store_chunk, summary, grace, progress.tick)
    finally:
        progress.close()
    return seconds_per_workload


def _execute(executor: Executor, chunks: list[list[Workload]], max_retries: int, on_chunk, summary,
             grace_s: float, on_wait=lambda: None) -> None:
    """Submit chunks with at most ``executor.max_in_flight`` pending; hand each result to
    ``on_chunk``, and call ``on_wait`` after a look that found none.  On a stop request: no
    more submissions, ``grace_s`` for the pending chunks to come back (they are stored), the
    rest abandoned, then :class:`Interrupted`."""
    queue = iter(chunks)
    pending: dict = {}      # handle -> (chunk, attempts so far)
    stop_by = None
    while True:
        if stop_by is None and interrupt.stop_requested():
            stop_by = time.monotonic() + grace_s
            interrupt.checkpoint("stopping")
        while stop_by is None and len(pending) < executor.max_in_flight and (chunk := next(queue, None)) is not None:
            pending[executor.submit([plan.as_item(w) for w in chunk])] = (chunk, 0)
        if not pending or (stop_by is not None and time.monotonic() > stop_by):
            break
        came_back = 0
        for handle, results, lost in executor.finished(POLL_S):
            came_back += 1
            chunk, attempts = pending.pop(handle)
            if lost is not None:
                if stop_by is not None:
                    continue                 # stopping: a rerun runs it
                if attempts != max_retries:
                    summary.retried += len(chunk)
                    pending[executor.submit([plan.as_item(w) for w in chunk])] = (chunk, attempts + 1)
                    continue
                results = lost_rows(chunk, lost)
                summary.lost_reason = lost
            on_chunk(chunk, results)
            interrupt.checkpoint("stored", summary.ran)
        if not came_back:
            on_wait()
    if stop_by is not None:
        raise Interrupted


def lost_rows(chunk: list[Workload], reason: str) -> list[dict]:
    """Error results for a chunk lost beyond its retries: a rerun runs them again."""
    return [{"key": w.key, "status": "error", "error": f"{LOST}: {reason}", "metrics": {}, "elapsed_s": None,
             "worker": None} for w in chunk]


def _store_results(store, workloads, results, summary, progress) -> None:
    rows = [worker.result_row(w, r) for w, r in zip(workloads, results, strict=True)]
    store.put(rows)
    errors = sum(r["status"] == "error" and not r["error"].startswith(LOST) for r in results)
    lost = sum(r["status"] == "error" and r["error"].startswith(LOST) for r in results)
    summary.ran += len(rows)
    summary.errors += errors
    summary.lost += lost
    progress.update(len(rows), errors, lost)
