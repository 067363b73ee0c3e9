"""Calibrate, order and chunk workloads; estimate wall time (Ray-free).

Calibration runs a few real workloads in the driver.  Their results are real, so a run
stores them instead of throwing them away; ``--dry-run`` only times them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sweep import worker
from sweep.grid import Workload

RAY_STARTUP_S = 10.0  # ray.init() took 8-15 s on the 2-core build machine (benchmarks/RESULTS.md)


@dataclass
class Calibration:
    seconds_per_workload: float
    workloads: list[Workload]   # the ones that ran
    results: list[dict]         # their worker results (see sweep.worker.run_chunk)


def ordered(workloads: list[Workload]) -> list[Workload]:
    """Sorted by key: a fixed pseudo-random order that mixes cheap and costly cells in every
    chunk, so chunks take similar time and the ETA holds from the start."""
    return sorted(workloads, key=lambda w: w.key)


def calibrate(workloads: list[Workload], budget_s: float = 2.0, max_runs: int = 12) -> Calibration:
    """Time up to ``max_runs`` workloads spread over the list, stopping after ``budget_s``."""
    if not workloads:
        return Calibration(0.0, [], [])
    step = max(1, len(workloads) // max_runs)
    ran, results = [], []
    start = time.perf_counter()
    for w in workloads[::step][:max_runs]:
        results += worker.run_chunk([as_item(w)])
        ran.append(w)
        if time.perf_counter() - start > budget_s:
            break
    mean = sum(r["elapsed_s"] for r in results) / len(results)
    return Calibration(max(mean, 1e-4), ran, results)


def chunks(workloads: list[Workload], seconds_per_workload: float, chunk_seconds: float) -> list[list[Workload]]:
    """Consecutive groups of about ``chunk_seconds`` of work each (at least one workload)."""
    size = max(1, math.ceil(chunk_seconds / max(seconds_per_workload, 1e-6)))
    return [workloads[i:i + size] for i in range(0, len(workloads), size)]


def estimate_seconds(count: int, seconds_per_workload: float, cpus: int, with_startup: bool) -> float:
    return count * seconds_per_workload / max(cpus, 1) + (RAY_STARTUP_S if with_startup and count else 0.0)


def as_item(w: Workload) -> dict:
    """The plain dict a worker gets for one workload."""
    return {"key": w.key, "spec": w.spec, "seed": w.seed}


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
