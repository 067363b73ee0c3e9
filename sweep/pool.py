"""Independent jobs of the analysis and the report on a process pool: the statistics of a
sweep split by metric (``sweep.analysis.compute``) and the report's figures
(``sweep.plots.draw_plots``).

One pool per process, started on first use and reused (its workers import numpy, scipy and
matplotlib once); the workers are spawned, not forked, since the driver may be logging to
MLflow in a thread meanwhile (a fork would copy locks that thread holds).  ``run`` returns
the results in the order of the jobs, whichever worker finished first, so what is combined
from them does not depend on scheduling: a parallel analysis equals the serial one.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from sweep.worker import die_with_parent

MIN_WORKLOADS = 2_000        # below this a sweep's analysis takes seconds: no pool to start (tests)
_pool: ProcessPoolExecutor | None = None
_size = 0


def workers_for(workloads: int) -> int:
    """Worker processes for a sweep of ``workloads`` rows: one per CPU from MIN_WORKLOADS
    on, none (serial, in this process) below it; $SWEEP_WORKERS overrides (0: serial)."""
    if "SWEEP_WORKERS" in os.environ:
        return int(os.environ["SWEEP_WORKERS"])
    return (os.cpu_count() or 1) if workloads >= MIN_WORKLOADS else 0


def run(jobs: list[tuple[Callable, tuple]], workers: int) -> list:
    """``[f(*args) for f, args in jobs]``, on ``workers`` processes when more than one."""
    if workers <= 1 or len(jobs) <= 1:
        return [f(*args) for f, args in jobs]
    pool = _shared(workers)
    futures = [pool.submit(f, *args) for f, args in jobs]
    return [future.result() for future in futures]


def _shared(workers: int) -> ProcessPoolExecutor:
    global _pool, _size
    if _pool is None or _size != workers:
        shutdown()
        _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_worker_start, initargs=(os.getpid(),))
        _size = workers
    return _pool


def _worker_start(parent: int) -> None:
    """A worker ends with the driver, and leaves Ctrl-C to it (the driver stops the jobs)."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@atexit.register
def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
