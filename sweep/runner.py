"""Run a sweep: the only module that talks to Ray.

Per round: plan the workloads, skip those already stored, time a few (in a child process,
within a budget) to size the chunks, ship the rest to Ray core tasks in chunks of about
``ray.chunk_seconds`` with at most ``ray.max_in_flight`` tasks pending (``ray.wait``), and
store each chunk as it returns.  A chunk whose worker died is submitted again, at most
``ray.max_retries`` times (workloads are deterministic: a re-run gives the same rows); the
summary counts the re-runs.  When ``stats.max_replications > replications`` another round
adds replications to the cells ``sweep.stats.cells_needing_more`` names.

Stopping (sweep.interrupt): Ctrl-C / SIGTERM only raise a flag here.  The runner stops
submitting, stores the chunks that finish within a short grace, abandons the rest (no
``ray.cancel``: it can crash Ray 2.60's core worker), and shuts Ray down.  A local Ray is
started by ``sweep.rayhead`` so that it dies with the driver, even a SIGKILLed one; if it
stops during the run (a killed raylet or agent), the run stops at once with the results
kept.  ``sweep.json`` always ends as completed, interrupted or failed with the real counts.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

from omegaconf import DictConfig

import core
from sweep import grid, interrupt, plan, worker
from sweep.config import is_adaptive
from sweep.grid import Cell, Workload
from sweep.outdir import SweepDir, now, run_record
from sweep.progress import Progress
from sweep.rayhead import WATCH_S, LocalHead, RayLost, stop_leftovers
from sweep.store import Store

LOST = "worker lost"   # error-message prefix of workloads whose task could not finish
POLL_S = 0.2           # how often the Ray loop looks at the stop flag and Ray's health


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C, SIGTERM); raised at a safe point."""


@dataclass
class Summary:
    cells: int = 0
    planned: int = 0          # workloads of the sweep (all rounds)
    skipped: int = 0          # already stored before this run
    ran: int = 0
    errors: int = 0           # workloads that raised
    lost: int = 0             # workloads whose task failed beyond max_retries
    retried: int = 0          # workloads run again because their worker died
    rounds: int = 0
    interrupted: bool = False
    failure: str | None = None   # why the run stopped early (e.g. the local Ray died)
    ray_cpus: int | None = None
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


def run_sweep(cfg: DictConfig, cells: list[Cell], sweep_dir: SweepDir, fresh: bool = False,
              shard=None, out=None) -> Summary:
    """Run every missing workload of ``cells``; results land in ``sweep_dir``'s store."""
    out = out or sys.stderr
    summary = Summary(cells=len(cells))
    started = time.monotonic()
    with interrupt.polling(), sweep_dir.lock():
        if fresh:
            Store.remove(sweep_dir.results)
        _stop_leftover_ray(sweep_dir, out)
        sweep_dir.write_config(cfg)
        sweep_dir.update_meta(name=cfg.name, model_version=core.MODEL_VERSION, started=now(), finished=None,
                              status="running", reason=None, ray_head=None, counts=None, seconds=None,
                              ray_cpus=None,
                              shard=shard.label if shard else None, **run_record())
        session = _RaySession(cfg.ray, out, sweep_dir)

        def record(status: str) -> None:
            summary.seconds = time.monotonic() - started
            sweep_dir.update_meta(finished=now(), status=status, reason=summary.failure, ray_cpus=session.cpus,
                                  counts=summary.counts(), seconds=round(summary.seconds, 1))

        def last_words() -> None:       # a second Ctrl-C: no time for a clean close
            if session.head is not None:
                session.head.kill()
            record("interrupted")

        with interrupt.last_words(last_words):
            try:
                with Store(sweep_dir.results) as store:
                    _rounds(cfg, cells, store, session, summary, core.MODEL_VERSION, out)
            except Interrupted:
                summary.interrupted = True
            except RayLost as err:
                summary.failure = str(err)
            except BaseException as err:
                summary.failure = f"{type(err).__name__}: {err}"
                raise
            finally:
                session.close()
                summary.ray_cpus = session.cpus
                record(summary.status)
    return summary


def _stop_leftover_ray(sweep_dir: SweepDir, out) -> None:
    """A previous driver of this folder is gone (we hold the lock); its local Ray must be too."""
    head = sweep_dir.read_meta().get("ray_head") or {}
    stopped = stop_leftovers(head.get("pids") or [])
    if stopped:
        print(f"stopped {stopped} processes of a local Ray left by the previous run in {sweep_dir.path}",
              file=out)


def _check_stop() -> None:
    if interrupt.stop_requested():
        raise Interrupted


def _rounds(cfg, cells, store, session, summary, model_version, out) -> None:
    targets = {cell.cell_id: cfg.replications for cell in cells}
    stored_at_start = store.keys("ok")
    seconds_per_workload = None
    while True:
        _check_stop()
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
        _check_stop()
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
    store_chunk = lambda ws, rs: _store_results(store, ws, rs, summary, progress)   # noqa: E731
    try:
        if seconds_per_workload is None:
            calibration = plan.calibrate(missing, stop=interrupt.stop_requested)
            store_chunk(calibration.workloads, calibration.results)
            seconds_per_workload = calibration.seconds_per_workload
            ran = {w.key for w in calibration.workloads}
            missing = [w for w in missing if w.key not in ran]
        _check_stop()
        if missing:
            chunks = plan.chunks(missing, seconds_per_workload, cfg.ray.chunk_seconds)
            interrupt.checkpoint("ray-start")
            session.start()
            progress.restart_clock()
            in_flight = cfg.ray.max_in_flight or 2 * session.cpus
            grace = max(2.0, 4 * cfg.ray.chunk_seconds)
            _execute(session, chunks, in_flight, cfg.ray.max_retries, store_chunk, summary, grace)
    finally:
        progress.close()
    return seconds_per_workload


def _execute(session, chunks: list[list[Workload]], max_in_flight: int, max_retries: int, on_chunk, summary,
             grace_s: float) -> None:
    """Submit chunks with at most ``max_in_flight`` pending; hand each result to ``on_chunk``.
    On a stop request: no more submissions, ``grace_s`` for the pending chunks to come
    back (they are stored), the rest abandoned, then :class:`Interrupted`."""
    # SPREAD: chunks go to every node from the start, instead of piling onto the driver's
    # node while the other nodes' worker processes are still starting (no effect on one node).
    # Ray retries nothing itself (max_retries=0): the loop below does, and counts it.
    ray, task = session.ray, session.run_chunk.options(max_retries=0, scheduling_strategy="SPREAD",
                                                       name="run_chunk")
    queue = iter(chunks)
    pending: dict = {}      # ref -> (chunk, attempts so far)
    stop_by = None
    while True:
        if stop_by is None and interrupt.stop_requested():
            stop_by = time.monotonic() + grace_s
            interrupt.checkpoint("stopping")
        while stop_by is None and len(pending) < max_in_flight and (chunk := next(queue, None)) is not None:
            pending[task.remote([plan.as_item(w) for w in chunk])] = (chunk, 0)
        if not pending or (stop_by is not None and time.monotonic() > stop_by):
            break
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S, fetch_local=False)
        for ref in ready:
            chunk, attempts = pending.pop(ref)
            results, failure = _chunk_results(ray, ref, chunk)
            if failure is not None:
                session.check(settle=True)   # a dead Ray is not a dead worker: stop, record nothing
                if stop_by is not None:
                    continue                 # stopping: a rerun runs it
                if attempts != max_retries:
                    summary.retried += len(chunk)
                    pending[task.remote([plan.as_item(w) for w in chunk])] = (chunk, attempts + 1)
                    continue
            on_chunk(chunk, results)
            interrupt.checkpoint("stored", summary.ran)
        session.check()
    if stop_by is not None:
        raise Interrupted


def _chunk_results(ray, ref, chunk: list[Workload]) -> tuple[list[dict], str | None]:
    """The chunk's results, or error rows and the reason when its task failed."""
    try:
        return ray.get(ref), None
    except ray.exceptions.RayTaskError:
        raise                       # run_chunk catches every workload's exception: a bug
    except ray.exceptions.RayError as err:   # worker died, node gone, ...: retry or record
        reason = f"{LOST}: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return [{"key": w.key, "status": "error", "error": reason, "metrics": {}, "elapsed_s": None,
                 "worker": None} for w in chunk], reason


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
    """Starts a private local Ray (``sweep.rayhead``) or joins a cluster on first use, and
    connects the driver; at the end disconnects and stops the local Ray.

    Ray is imported here, not at module level: a local Ray must listen on loopback only,
    and Ray reads that choice (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) when first imported
    (PLATFORM.md).  A driver joining a cluster keeps its routable address."""

    def __init__(self, ray_cfg: DictConfig, out, sweep_dir: SweepDir):
        self.cfg, self.out, self.sweep_dir = ray_cfg, out, sweep_dir
        self.cpus: int | None = None
        self.ray = self.run_chunk = None
        self.head: LocalHead | None = None
        self._connected = False

    def start(self) -> None:
        if self.ray is not None:
            return
        address = self.cfg.address or os.environ.get("RAY_ADDRESS")
        ray = _import_ray(local=address is None)
        _check_stop()
        if not ray.is_initialized():      # (in-process tests bring their own Ray)
            started = time.monotonic()
            if address is None:
                address = self._start_head()
            _connect(ray, address)
            interrupt.install()           # ray.init installs its own SIGTERM handler
            self._connected = True
            where = "started a local Ray" if self.head else f"joined Ray at {address}"
            print(f"{where} in {time.monotonic() - started:.1f}s", file=self.out)
        self.ray = ray
        self.run_chunk = ray.remote(num_cpus=1)(worker.run_chunk_in_ray_worker)
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        _check_stop()

    def _start_head(self) -> str:
        self.head = LocalHead(self.cfg.num_cpus, self.sweep_dir.path / "ray-head.log")
        interrupt.checkpoint("ray-starting")
        if not self.head.wait_ready(interrupt.stop_requested):
            raise Interrupted
        self.sweep_dir.update_meta(ray_head={"pid": self.head.proc.pid, "pids": self.head.pids})
        return self.head.address

    def check(self, settle: bool = False) -> None:
        """Raise ``RayLost`` when the local Ray stopped (a joined cluster is Ray's to heal).
        ``settle``: a task just failed; give the head's watchdog time to notice a dead Ray."""
        if self.head is not None:
            if settle:
                time.sleep(3 * WATCH_S)
            self.head.check()

    def close(self) -> None:
        if self._connected:
            self._connected = False
            if self.head is None or self.head.proc.poll() is None:
                self.ray.shutdown()     # disconnect (after a lost Ray there is nothing to leave)
        if self.head is not None:
            self.head.close()
            self.sweep_dir.update_meta(ray_head=None)
            self.head = None


def _connect(ray, address: str, tries: int = 3) -> None:
    """``ray.init`` to ``address``; a busy GCS can time out a first connection, so try again."""
    for attempt in range(tries):
        try:
            # log_to_driver=False: run_chunk reports every failure itself; Ray's forwarded
            # worker and raylet chatter would bury the one-line messages
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        except ConnectionError as err:
            if attempt == tries - 1:
                raise RayLost(f"cannot connect to Ray at {address}: {err}") from None
            time.sleep(2.0)
            _check_stop()


def _import_ray(local: bool):
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # loopback only
        os.environ.setdefault("RAY_AUTH_MODE", "token")   # Ray's default, minus its warning
    import ray

    return ray
