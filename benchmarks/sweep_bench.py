"""Sweep benchmarks: Ray start-up and scheduling overhead, parallel efficiency of the sweep
against one process doing the same workloads, and (with --grid) the default grid's wall time.

    .venv/bin/python benchmarks/sweep_bench.py            # overhead + efficiency (~2 min)
    .venv/bin/python benchmarks/sweep_bench.py --grid     # + python -m sweep configs/grid.yaml

Efficiency = (sequential single-process time / CPUs) / sweep time, measured side by side in
this run on the same workloads (a sample of the default grid's cells); the sweep time is the
whole ``campaign.run_sweep`` on the Ray executor (calibration, chunking, Ray tasks, storing)
with Ray already up.
Results are printed as Markdown for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from sweep.rayhead import descendants  # noqa: E402  (stdlib only: imports no Ray)

GRID = REPO / "configs" / "grid.yaml"


def sample_sweep(folder: Path, every: int, replications: int):
    """Every ``every``-th cell of the default grid: the same mix of cheap and costly cells."""
    import core
    from sweep import config, grid

    cfg = config.load(GRID, [f"output.dir={folder}", f"replications={replications}", "tracking.enabled=false",
                             "output.report=false"])
    cells = grid.build_cells(cfg, config.load_mixes(cfg, GRID))[::every]
    return cfg, cells, grid.workloads(cells, cfg.designs, replications, cfg.seed, core.MODEL_VERSION)


class Meter:
    """Wall time, CPU time of this process and its descendants (Ray's workers), and CPU time
    the rest of the machine used meanwhile (other users of a shared build machine)."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self._start = (time.perf_counter(), self._ours(), self._machine())
        return self

    def __exit__(self, *exc):
        wall, ours, machine = (end - start for end, start in
                               zip((time.perf_counter(), self._ours(), self._machine()), self._start))
        self.wall, self.ours, self.others = wall, ours, max(0.0, machine - ours)

    def _machine(self) -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / self.HZ      # all but idle and iowait

    def _ours(self) -> float:
        total = 0
        for pid in [os.getpid(), *descendants(os.getpid())]:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(stat[11]) + int(stat[12])
        return total / self.HZ


def sequential(workloads) -> Meter:
    from sweep import plan, worker

    with Meter() as meter:
        worker.run_chunk([plan.as_item(w) for w in workloads])
    return meter


def pool(workloads, cpus: int) -> Meter:
    """The same workloads on a plain process pool: what any parallel runner gets on this machine."""
    from concurrent.futures import ProcessPoolExecutor

    from sweep import plan, worker

    items = [plan.as_item(w) for w in plan.ordered(workloads)]
    chunks = [items[i:i + 8] for i in range(0, len(items), 8)]
    with ProcessPoolExecutor(cpus) as executor:
        list(executor.map(worker.run_chunk, chunks[:cpus]))      # start the processes first
        with Meter() as meter:
            list(executor.map(worker.run_chunk, chunks))
    return meter


def sweep(cfg, cells, folder: Path) -> Meter:
    from sweep import campaign
    from sweep.outdir import SweepDir
    from sweep.runner import RayExecutor

    with Meter() as meter:
        sweep_dir = SweepDir(folder)
        summary = campaign.run_sweep(cfg, cells, sweep_dir, RayExecutor(cfg.ray, sweep_dir), fresh=True)
    assert summary.ok == summary.ran, "benchmark workloads must not fail"
    return meter


def ray_overhead(ray, tasks: int = 2000) -> dict:
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get([noop.remote() for _ in range(20)])          # warm the worker pool
    start = time.perf_counter()
    ray.get([noop.remote() for _ in range(tasks)])
    batch = time.perf_counter() - start
    start = time.perf_counter()
    pending = []
    for _ in range(tasks // 4):                          # the runner's pattern: bounded ray.wait
        pending.append(noop.remote())
        if len(pending) >= 4:
            _, pending = ray.wait(pending, num_returns=1)
    ray.get(pending)
    waited = time.perf_counter() - start
    return {"batch_ms": 1000 * batch / tasks, "wait_ms": 1000 * waited / (tasks // 4)}


def _noop():
    return None


def default_grid_seconds() -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sweep", str(GRID), f"output.dir={folder}/grid",
                               "tracking.enabled=false", "output.report=false"], cwd=REPO, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        seconds = time.perf_counter() - start
    summary = next((line for line in done.stderr.splitlines() if line.startswith("sweep 'grid'")), done.stderr[-500:])
    return seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=6, help="take every N-th cell of the default grid")
    parser.add_argument("--replications", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="sequential/sweep pairs, best of")
    parser.add_argument("--grid", action="store_true", help="also time python -m sweep configs/grid.yaml")
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    init_s = time.perf_counter() - start
    overhead = ray_overhead(ray)
    with tempfile.TemporaryDirectory() as folder:
        cfg, cells, workloads = sample_sweep(Path(folder), args.every, args.replications)
        runs = []
        for _ in range(args.rounds):   # side by side, alternating, so machine noise hits all three
            runs.append((sequential(workloads), sweep(cfg, cells, Path(folder) / "sweep"), pool(workloads, cpus)))
    start = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - start

    pairs = [(s, p) for s, p, _ in runs]
    seq, par = max(pairs, key=lambda p: p[0].wall / p[1].wall)
    pools = [100 * s.wall / cpus / q.wall for s, _, q in runs]
    print(f"- machine: {cpus} CPUs; other processes used {par.others / par.wall:.2f} CPUs on average during the "
          f"best sweep, {seq.others / seq.wall:.2f} during its sequential twin")
    print(f"- ray.init() local, {cpus} CPUs, no dashboard: {init_s:.1f} s; ray.shutdown(): {shutdown_s:.1f} s")
    print(f"- no-op task: {overhead['batch_ms']:.2f} ms each submitted in one batch, "
          f"{overhead['wait_ms']:.2f} ms each with 4 in flight and ray.wait (the runner's loop)")
    print(f"- parallel efficiency: {len(workloads)} workloads ({len(cells)} cells of configs/grid.yaml x "
          f"{len(cfg.designs)} designs x {args.replications} replications): sequential {seq.wall:.1f} s in one "
          f"process, sweep {par.wall:.1f} s on {cpus} CPUs with Ray up -> efficiency "
          f"{100 * seq.wall / cpus / par.wall:.0f}% (best of {args.rounds}; all pairs: "
          + ", ".join(f"{100 * s.wall / cpus / p.wall:.0f}%" for s, p in pairs) + ")")
    print(f"- for scale, a plain {cpus}-process pool on the same workloads beside each sequential run: "
          + ", ".join(f"{e:.0f}%" for e in pools))
    print(f"- the sweep's own CPU: {par.ours:.1f} s (driver + workers) for {seq.ours:.1f} s of sequential work "
          f"({100 * (par.ours / seq.ours - 1):+.0f}%); it kept {par.ours / par.wall:.2f} of {cpus} CPUs busy "
          f"while others used {par.others / par.wall:.2f}")
    if args.grid:
        seconds, summary = default_grid_seconds()
        print(f"- default grid: python -m sweep configs/grid.yaml (no report/MLflow): {seconds:.0f} s wall; {summary}")


if __name__ == "__main__":
    main()
