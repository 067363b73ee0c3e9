"""Run a sweep: the only module that talks to Ray.

Per round: plan the workloads, skip those already stored, run a few in the driver to
calibrate the chunk size, ship the rest to Ray core tasks in chunks of about
``ray.chunk_seconds`` with at most ``ray.max_in_flight`` tasks pending (``ray.wait``), and
store each chunk as it returns.  A dead worker makes Ray re-run its chunk (``max_retries``;
workloads are deterministic, so a re-run gives the same results and overwrites nothing
different).  Ctrl-C / SIGTERM cancel what is in flight and keep what is stored.  When
``stats.max_replications > replications`` another round adds replications to the cells
``sweep.stats.cells_needing_more`` names, until none or the maximum.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from omegaconf import DictConfig

import core
from sweep import grid, plan, worker
from sweep.config import is_adaptive
from sweep.grid import Cell, Workload
from sweep.outdir import SweepDir, now, run_record
from sweep.progress import Progress
from sweep.store import Store

LOST = "worker lost"   # error-message prefix of workloads whose task could not finish


@dataclass
class Summary:
    cells: int = 0
    planned: int = 0          # workloads of the sweep (all rounds)
    skipped: int = 0          # already stored before this run
    ran: int = 0
    errors: int = 0           # workloads that raised
    lost: int = 0             # workloads whose task failed beyond max_retries
    rounds: int = 0
    interrupted: bool = False
    ray_cpus: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.ran - self.errors - self.lost

    def counts(self) -> dict:
        return {"cells": self.cells, "workloads": self.planned, "skipped": self.skipped, "ran": self.ran,
                "ok": self.ok, "errors": self.errors, "lost": self.lost, "rounds": self.rounds}


def run_sweep(cfg: DictConfig, cells: list[Cell], sweep_dir: SweepDir, fresh: bool = False,
              shard=None, out=None) -> Summary:
    """Run every missing workload of ``cells``; results land in ``sweep_dir``'s store."""
    out = out or sys.stderr
    summary = Summary(cells=len(cells))
    started = time.monotonic()
    with sweep_dir.lock():
        if fresh:
            Store.remove(sweep_dir.results)
        sweep_dir.write_config(cfg)
        sweep_dir.update_meta(name=cfg.name, model_version=core.MODEL_VERSION, started=now(), finished=None,
                              status="running", shard=shard.label if shard else None, **run_record())
        session = _RaySession(cfg.ray, out)
        try:
            with _sigterm_as_interrupt(), Store(sweep_dir.results) as store:
                _rounds(cfg, cells, store, session, summary, core.MODEL_VERSION, out)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            session.close()
            summary.ray_cpus = session.cpus
            summary.seconds = time.monotonic() - started
            status = "interrupted" if summary.interrupted else "completed"
            sweep_dir.update_meta(finished=now(), status=status, ray_cpus=session.cpus,
                                  counts=summary.counts(), seconds=round(summary.seconds, 1))
    return summary


def _rounds(cfg, cells, store, session, summary, model_version, out) -> None:
    targets = {cell.cell_id: cfg.replications for cell in cells}
    stored_at_start = store.keys("ok")
    seconds_per_workload = None
    while True:
        summary.rounds += 1
        planned = grid.workloads(cells, cfg.designs, targets, cfg.seed, model_version)
        store.set_plan((w.key for w in planned), replace=summary.rounds == 1)
        done = store.keys("ok")
        missing = plan.ordered([w for w in planned if w.key not in done])
        summary.planned = len(planned)
        summary.skipped = sum(w.key in stored_at_start for w in planned)
        if missing:
            label = "workloads" if summary.rounds == 1 else f"round {summary.rounds}"
            seconds_per_workload = _run_missing(cfg, missing, store, session, summary, seconds_per_workload,
                                                label)
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


def _run_missing(cfg, missing, store, session, summary, seconds_per_workload, label) -> float:
    """Calibrate on the first few (first round only), then the rest on Ray; returns the
    per-workload time used for chunking."""
    progress = Progress(len(missing), label=label)
    try:
        if seconds_per_workload is None:
            calibration = plan.calibrate(missing)
            _store_results(store, calibration.workloads, calibration.results, summary, progress)
            seconds_per_workload = calibration.seconds_per_workload
            ran = {w.key for w in calibration.workloads}
            missing = [w for w in missing if w.key not in ran]
        if missing:
            chunks = plan.chunks(missing, seconds_per_workload, cfg.ray.chunk_seconds)
            session.out = progress.writer      # "started a local Ray" must not land in the bar
            session.start()
            progress.restart_clock()
            in_flight = cfg.ray.max_in_flight or 2 * session.cpus
            _execute(session, chunks, in_flight, cfg.ray.max_retries,
                     lambda ws, rs: _store_results(store, ws, rs, summary, progress))
    finally:
        progress.close()
    return seconds_per_workload


def _execute(session, chunks: list[list[Workload]], max_in_flight: int, max_retries: int, on_chunk) -> None:
    """Submit chunks with at most ``max_in_flight`` pending; hand each result to ``on_chunk``.
    (SIGTERM is re-routed here because ``ray.init`` installs its own handler.)"""
    # SPREAD: chunks go to every node from the start, instead of piling onto the driver's
    # node while the other nodes' worker processes are still starting (no effect on one node)
    ray, task = session.ray, session.run_chunk.options(max_retries=max_retries, scheduling_strategy="SPREAD",
                                                               name="run_chunk")
    queue = iter(chunks)
    pending: dict = {}
    with _sigterm_as_interrupt():
        try:
            while True:
                while len(pending) < max_in_flight and (chunk := next(queue, None)) is not None:
                    pending[task.remote([plan.as_item(w) for w in chunk])] = chunk
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    chunk = pending.pop(ref)
                    on_chunk(chunk, _chunk_results(ray, ref, chunk))
        except KeyboardInterrupt:
            # a gentle cancel: force=True kills workers whose replies may already be in
            # flight, which trips a Ray 2.60 core-worker check ("Tried to complete task that
            # was not pending") and turns a clean Ctrl-C into a crash
            for ref in pending:
                try:
                    ray.cancel(ref, force=False)
                except Exception:   # noqa: BLE001 - best effort; the results are stored
                    pass
            raise


def _chunk_results(ray, ref, chunk: list[Workload]) -> list[dict]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:   # retries used up, node gone, ...: record, go on
        reason = f"{LOST}: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return [{"key": w.key, "status": "error", "error": reason, "metrics": {}, "elapsed_s": None,
                 "worker": None} for w in chunk]


def _store_results(store, workloads, results, summary, progress) -> None:
    rows = [result_row(w, r) for w, r in zip(workloads, results, strict=True)]
    store.put(rows)
    errors = sum(r["status"] == "error" and not r["error"].startswith(LOST) for r in results)
    lost = sum(r["status"] == "error" and r["error"].startswith(LOST) for r in results)
    summary.ran += len(rows)
    summary.errors += errors
    summary.lost += lost
    progress.update(len(rows), errors, lost)


def result_row(w: Workload, result: dict) -> dict:
    """The store row of one workload's result."""
    if result["key"] != w.key:
        raise RuntimeError(f"result for {result['key']} where {w.key} was expected: chunk order broken")
    return {"key": w.key, "cell_id": w.cell.cell_id, "design": w.design, "replication": w.replication,
            "seed": w.seed, "status": result["status"], "error": result["error"], **w.cell.axes,
            **result["metrics"], "elapsed_s": result["elapsed_s"], "worker": result["worker"],
            "model_version": core.MODEL_VERSION, "finished_at": time.time()}


class _RaySession:
    """Starts (or joins) Ray on first use; shuts down only a Ray it started itself.

    Ray is imported here, not at module level: a local Ray must listen on loopback only,
    and Ray reads that choice (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) when first imported
    (PLATFORM.md).  A driver joining a cluster keeps its routable address."""

    def __init__(self, ray_cfg: DictConfig, out):
        self.cfg, self.out = ray_cfg, out
        self.cpus: int | None = None
        self.ray = self.run_chunk = None
        self._owned = False

    def start(self) -> None:
        if self.ray is not None:
            return
        address = self.cfg.address or os.environ.get("RAY_ADDRESS")
        ray = _import_ray(local=address is None)
        if not ray.is_initialized():
            kwargs = {"address": address, "logging_level": logging.WARNING}
            if address is None:   # a local Ray: no dashboard, our CPU count
                kwargs.update(num_cpus=self.cfg.num_cpus, include_dashboard=False)
            started = time.monotonic()
            ray.init(**kwargs)
            self._owned = True
            where = f"joined Ray at {address}" if address else "started a local Ray"
            print(f"{where} in {time.monotonic() - started:.1f}s", file=self.out)
        self.ray = ray
        self.run_chunk = ray.remote(num_cpus=1)(worker.run_chunk_in_ray_worker)
        self.cpus = int(ray.cluster_resources().get("CPU", 1))

    def close(self) -> None:
        if self._owned:
            self.ray.shutdown()
            self._owned = False


def _import_ray(local: bool):
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # loopback only
        os.environ.setdefault("RAY_AUTH_MODE", "token")   # Ray's default, minus its warning
    import ray

    return ray


class _sigterm_as_interrupt:
    """SIGTERM (pod eviction, ``kill``) stops the sweep like Ctrl-C: cleanly, keeping results."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt
