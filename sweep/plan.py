"""Calibrate, order and chunk workloads; estimate wall time and regimes (Ray-free).

Calibration runs a few real workloads in the driver.  Their results are real, so a run
stores them instead of throwing them away; ``--dry-run`` only times them, and also runs
replication 0 of as many cells as ~15 s allow to estimate each cell's regime.
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from sweep import worker
from sweep.grid import Workload

CALIBRATION_RUNS = 21   # 3 per mix of the default grid
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


def calibrate(workloads: list[Workload], budget_s: float = 3.0, max_runs: int = CALIBRATION_RUNS) -> Calibration:
    """Time up to ``max_runs`` workloads, stopping after ``budget_s``.

    The mix drives the cost (10x between mixes), so the sample takes turns over the mixes
    and the estimate weights each mix's mean time by its share of ``workloads``."""
    if not workloads:
        return Calibration(0.0, [], [])
    ran, results = [], []
    start = time.perf_counter()
    for w in _turns_over_mixes(workloads)[:max_runs]:
        results += worker.run_chunk([as_item(w)])
        ran.append(w)
        if time.perf_counter() - start > budget_s:
            break
    seconds = defaultdict(list)
    for w, result in zip(ran, results):
        seconds[w.cell.axes["mix"]].append(result["elapsed_s"])
    overall = sum(map(sum, seconds.values())) / len(results)
    share = Counter(w.cell.axes["mix"] for w in workloads)
    mean = sum(n * _mean(seconds.get(mix), overall) for mix, n in share.items()) / len(workloads)
    return Calibration(max(mean, 1e-4), ran, results)


def sample_regimes(workloads: list[Workload], budget_s: float = 15.0, done: list | None = None):
    """Estimate the regime of each (cell, design) from replication 0 of as many cells as
    ``budget_s`` allows (taking turns over blocks and mixes), reusing the calibration's
    results (``done``: (workload, result) pairs).  Returns (regimes frame, cells sampled)."""
    import pandas as pd

    from sweep import regime
    from sweep.runner import result_row

    ran = {w.key: (w, r) for w, r in (done or [])}
    first = [w for w in workloads if w.replication == 0]
    by_cell: dict[str, list[Workload]] = defaultdict(list)
    for w in first:
        by_cell[w.cell.cell_id].append(w)
    start = time.perf_counter()
    for cell_id in _cells_in_turns(by_cell):
        if time.perf_counter() - start > budget_s:
            break
        for w in by_cell[cell_id]:
            if w.key not in ran:
                ran[w.key] = (w, worker.run_chunk([as_item(w)])[0])
    rows = [result_row(w, r) for w, r in ran.values()]
    frame = regime.classify(pd.DataFrame(rows)) if rows else regime.classify(pd.DataFrame())
    return frame, frame["cell_id"].nunique() if len(frame) else 0


def _cells_in_turns(by_cell: dict) -> list[str]:
    """Cell ids ordered so that consecutive cells come from different blocks and mixes."""
    rank = Counter()
    keyed = []
    for cell_id, ws in sorted(by_cell.items()):
        group = (ws[0].cell.axes.get("block", ""), ws[0].cell.axes["mix"])
        keyed.append((rank[group], group, cell_id))
        rank[group] += 1
    return [cell_id for *_, cell_id in sorted(keyed)]


def _turns_over_mixes(workloads: list[Workload]) -> list[Workload]:
    """The first workload of every mix, then the second of every mix, ..."""
    rank = Counter()
    keyed = []
    for w in workloads:
        mix = w.cell.axes["mix"]
        keyed.append((rank[mix], mix, w.key, w))
        rank[mix] += 1
    return [w for *_, w in sorted(keyed, key=lambda t: t[:3])]


def _mean(values, default: float) -> float:
    return sum(values) / len(values) if values else default


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
