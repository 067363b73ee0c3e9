"""Calibrate, order and chunk workloads; estimate wall time and regimes (Ray-free).

Calibration runs a few real workloads in a child of the driver, within a time budget.  Their
results are real, so a run stores them instead of throwing them away; ``--dry-run`` only
times them, and also runs replication 0 of as many cells as ~15 s allow to estimate each
cell's regime.
"""
from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from sweep import interrupt, worker
from sweep.grid import Workload

CALIBRATION_RUNS = 21   # 3 per mix of the default grid
RAY_STARTUP_S = 10.0  # ray.init() took 8-15 s on the 2-core build machine (benchmarks/RESULTS.md)


KERNEL_STREAMS_PER_BOOT = 32   # real-kernel streams per chunk (one boot)
MAX_WORKLOADS = 1_000_000   # per driver (or shard): planning holds every workload in memory
PLAN_BYTES_PER_WORKLOAD = 2_000   # measured ~150 B planned, x ~10 for keys, sets and chunks


@dataclass
class Calibration:
    seconds_per_workload: float
    workloads: list[Workload]   # the ones that ran
    results: list[dict]         # their worker results (see sweep.worker.run_chunk)
    lower_bound: bool = False   # no workload finished within the budget: each takes longer


def ordered(workloads: list[Workload]) -> list[Workload]:
    """A cell's workloads one after the other, the cells in a fixed pseudo-random order (by
    the hash of the cell's spec): a cell is complete early, so its statistics and MLflow runs are done
    while the sweep runs (``sweep.cellwise``), and cheap and costly cells still alternate
    from the start, so the ETA holds."""
    return sorted(workloads, key=lambda w: (w.cell.key, w.key))


def check_size(cells: int, designs: int, replications: int, machine_bytes: int | None = None) -> None:
    """Refuse, before planning, a sweep whose plan would not fit one driver (time or memory)."""
    from sweep.config import ConfigError

    count = cells * designs * replications
    limit = MAX_WORKLOADS
    if machine_bytes is None:
        machine_bytes = _available_memory()
    if machine_bytes:
        limit = min(limit, machine_bytes // 2 // PLAN_BYTES_PER_WORKLOAD)
    if count > limit:
        raise ConfigError(
            f"replications: {replications} x {cells} cells x {designs} designs = {count:,} workloads; one "
            f"driver plans at most {limit:,} (this machine, ~{PLAN_BYTES_PER_WORKLOAD} bytes each); lower "
            f"replications or the grid, or split it: --shard i/N with N >= {math.ceil(count / limit)}")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def calibrate(workloads: list[Workload], budget_s: float = 3.0, max_runs: int = CALIBRATION_RUNS,
              stop=lambda: False) -> Calibration:
    """Time up to ``max_runs`` workloads, stopping after ``budget_s`` or when ``stop()``.

    They run in a child process that is killed at the end of the budget, so a workload of
    hours (kernel_entries=2000000000) costs ``budget_s``, not hours, and Ctrl-C is heard at
    once.  The mix drives the cost (10x between mixes), so the sample takes turns over the
    mixes and the estimate weights each mix's mean time by its share of ``workloads``."""
    if not workloads:
        return Calibration(0.0, [], [])
    sample = _turns_over_mixes(workloads)[:max_runs]
    results, elapsed = _run_timed(sample, budget_s, stop)
    ran = sample[:len(results)]
    if not results:     # not one finished: each takes at least the budget
        return Calibration(max(elapsed, 1e-4), [], [], lower_bound=True)
    seconds = defaultdict(list)
    for w, result in zip(ran, results):
        seconds[w.cell.axes["mix"]].append(result["elapsed_s"])
    overall = sum(map(sum, seconds.values())) / len(results)
    share = Counter(w.cell.axes["mix"] for w in workloads)
    mean = sum(n * _mean(seconds.get(mix), overall) for mix, n in share.items()) / len(workloads)
    return Calibration(max(mean, 1e-4), ran, results)


def sample_regimes(workloads: list[Workload], budget_s: float = 15.0, done: list | None = None,
                   stop=lambda: False):
    """Estimate the regime of each (cell, design) from replication 0 of as many cells as
    ``budget_s`` allows (taking turns over blocks and mixes), reusing the calibration's
    results (``done``: (workload, result) pairs).  Returns (regimes frame, cells sampled).
    The workloads run in a child process, as the calibration's do (Ctrl-C, huge workloads)."""
    import pandas as pd

    from sweep import regime

    ran = {w.key: (w, r) for w, r in (done or [])}
    by_cell: dict[str, list[Workload]] = defaultdict(list)
    for w in workloads:
        if w.replication == 0:
            by_cell[w.cell.cell_id].append(w)
    sample = [w for cell_id in _cells_in_turns(by_cell) for w in by_cell[cell_id] if w.key not in ran]
    results, _ = _run_timed(sample, budget_s, stop) if sample else ([], 0.0)
    ran.update((w.key, (w, r)) for w, r in zip(sample, results))
    complete = {c for c, ws in by_cell.items() if all(w.key in ran for w in ws)}   # every design ran
    rows = [worker.result_row(w, r) for w, r in ran.values() if w.cell.cell_id in complete]
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


def _run_timed(sample: list[Workload], budget_s: float, stop) -> tuple[list[dict], float]:
    """Results of the first workloads of ``sample`` that finish within ``budget_s`` (counted
    from the child's start-up), and the seconds spent."""
    child = subprocess.Popen([sys.executable, "-c", "from sweep.worker import calibration_main; calibration_main()",
                              str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             start_new_session=True, text=True)
    results, started, spawned = [], None, time.perf_counter()
    try:
        child.stdin.write(json.dumps([as_item(w) for w in sample]))
        child.stdin.close()
        interrupt.checkpoint("calibrating")
        while len(results) < len(sample) and not stop():
            if time.perf_counter() - (started or spawned) > (budget_s if started else 60.0):
                break
            if not select.select([child.stdout], [], [], 0.05)[0]:
                continue
            line = child.stdout.readline()
            if not line:
                raise RuntimeError(f"calibration: the child process exited ({child.wait()})")
            if started is None:
                started = time.perf_counter()     # {"ready": true}: core is imported
            else:
                results.append(json.loads(line))
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return results, time.perf_counter() - (started or time.perf_counter())


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


def kernel_chunks(workloads: list[Workload], per_boot: int = KERNEL_STREAMS_PER_BOOT,
                  boots_at_once: int = 1) -> list[list[Workload]]:
    """Real-kernel workloads in chunks of one boot each: the same guest machine, at most
    ``per_boot`` streams (a boot costs ~6-15 s under TCG, a stream some seconds - 10-30 s
    for 300 entries), and a machine's streams over at least ``boots_at_once`` boots of even
    size, so the executor's CPUs run boots side by side instead of one boot's streams in
    a row (a guest replays its streams one after the other)."""
    by_machine: dict = defaultdict(list)
    for w in workloads:
        by_machine[json.dumps(w.spec["machine"], sort_keys=True)].append(w)
    out = []
    for same in by_machine.values():
        boots = max(math.ceil(len(same) / per_boot), min(boots_at_once, len(same)))
        size = math.ceil(len(same) / boots)
        out += [same[i:i + size] for i in range(0, len(same), size)]
    return out


def estimate_seconds(count: int, seconds_per_workload: float, cpus: int, with_startup: bool) -> float:
    return count * seconds_per_workload / max(cpus, 1) + (RAY_STARTUP_S if with_startup and count else 0.0)


def as_item(w: Workload) -> dict:
    """The plain dict a worker gets for one workload."""
    return {"key": w.key, "spec": w.spec, "seed": w.seed}
