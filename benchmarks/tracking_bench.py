"""How long the report and MLflow logging take for a sweep of the default grid's shape.

    PYTHONPATH=. .venv/bin/python benchmarks/tracking_bench.py [--reps 8]
        [--sweep-dir DIR] [--targets sqlite,server,postgres]

Builds a results table shaped like configs/grid.yaml (168 cells x 3 designs = 504 child
runs; synthetic metric values, so no simulation time is counted) and its report, or takes a
copy of a finished sweep folder (``--sweep-dir``, e.g. one of ``python -m sweep
configs/grid.yaml``; its report is reused). Then logs the sweep into each target twice: a
first log (runs created) and a re-log (runs found by tag, nothing changed). Targets:
``sqlite`` (``sqlite:///mlflow.db`` in a temporary folder, the default), ``server`` (a real
``mlflow server`` on loopback, one worker, sqlite backend, as in the tests) and ``postgres``
(k8s/mlflow.yaml's own server command on a throwaway PostgreSQL, tests/postgres_server.py).
Prints one line per measurement (wall and CPU seconds of this process)."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mlflow import MlflowClient  # noqa: E402

from mlflow_server import mlflow_server  # noqa: E402
from postgres_server import manifest_mlflow_on_postgres  # noqa: E402
from results_data import grid_cells, synthetic, write_sweep_dir  # noqa: E402
from sweep import report, tracking  # noqa: E402
from sweep.outdir import SweepDir  # noqa: E402

GRID = dict(limits=(16 << 20, 32 << 20, 64 << 20, 256 << 20), nodes=(1, 2), orders=(0, 1, 3),
            mixes=("kernel", "nofs", "nowait-burst", "atomic", "nofail", "dentry-find", "numa-remote"))


def timed(label: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    print(f"{label}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU",
          flush=True)
    return result


def count_runs(uri: str, experiment: str) -> int:
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return len(client.search_runs([experiment_id], max_results=5000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=8, help="replications of the synthetic table")
    parser.add_argument("--sweep-dir", type=Path, help="log (a copy of) this finished sweep folder instead")
    parser.add_argument("--targets", default="sqlite,server", help="comma-separated: sqlite, server, postgres")
    args = parser.parse_args()
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.sweep_dir:
            sweep_dir = Path(shutil.copytree(args.sweep_dir, tmp / "sweep"))   # copy2 keeps the report current
            print(f"{sweep_dir}: copy of {args.sweep_dir}")
        else:
            cells = grid_cells(**GRID)
            df = synthetic(reps=args.reps, cells=cells)
            print(f"{len(cells)} cells x 3 designs = {len(cells) * 3} child runs, {len(df)} workloads")
            sweep_dir = write_sweep_dir(tmp / "sweep", df, name="bench")
            timed("report (tests, tables, 31 PNGs, md+html)", lambda: report.build_report(sweep_dir))
        if not report.is_current(sweep_dir):
            timed("report (was older than the results)", lambda: report.build_report(sweep_dir))
        os.chdir(tmp)
        for target in targets:
            bench(target, sweep_dir, tmp / target)


def bench(target: str, sweep_dir: Path, workdir: Path) -> None:
    workdir.mkdir()
    if target == "sqlite":
        cfg = {**SweepDir(sweep_dir).config_dict(), "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "bench"}}
        log_twice("sqlite:///mlflow.db", sweep_dir, cfg)
        return
    servers = {"server": lambda: mlflow_server(workdir), "postgres": lambda: manifest_mlflow_on_postgres(workdir)}
    with servers[target]() as running:
        url = running if isinstance(running, str) else running.url
        cfg = {**SweepDir(sweep_dir).config_dict(), "tracking": {"uri": url, "experiment": "bench"}}
        # what the server side spent: mlflow server (+ its worker) and, on PostgreSQL, the database
        tops = [_server_pid(url)] + ([running.postgres.pid()] if target == "postgres" else [])
        before = sum(map(tree_cpu, tops))
        log_twice(f"{target} {url}", sweep_dir, cfg)
        print(f"server-side CPU for both logs ({target}): {sum(map(tree_cpu, tops)) - before:.1f} s", flush=True)


def log_twice(label: str, sweep_dir: Path, cfg: dict) -> None:
    timed(f"log to {label}, first", lambda: tracking.log_sweep(sweep_dir, cfg))
    timed(f"log to {label}, again", lambda: tracking.log_sweep(sweep_dir, cfg))
    print(f"runs in {label}: {count_runs(cfg['tracking']['uri'], 'bench')}", flush=True)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its living descendants."""
    from sweep_helpers import descendants

    total = 0.0
    for one in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own = sum(map(int, fields[11:13]))
        total += own + (sum(map(int, fields[13:15])) if one == pid else 0)
    return total / os.sysconf("SC_CLK_TCK")


def _server_pid(url: str) -> int:
    """The mlflow server process serving ``url`` (the leader of its process group)."""
    import subprocess

    port = url.rsplit(":", 1)[1]
    listing = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    for line in listing.splitlines()[1:]:
        pid, pgid, args = line.split(None, 2)
        if pid == pgid and f"--port {port}" in args:
            return int(pid)
    raise RuntimeError(f"no mlflow server process for {url}")


if __name__ == "__main__":
    main()
