"""How long the report and MLflow logging take for a sweep of the default grid's shape.

    PYTHONPATH=. .venv/bin/python benchmarks/tracking_bench.py [--reps 8]

Builds a results table shaped like configs/grid.yaml (168 cells x 3 designs = 504 child
runs; synthetic metric values, so no simulation time is counted), builds the report, then
logs the sweep (1) into ``sqlite:///mlflow.db`` in a temporary folder (the default) and
(2) into a real ``mlflow server`` on loopback (one worker, as in the tests), each twice:
a first log (runs created) and a re-log (runs found by tag, nothing changed).
Prints one line per measurement (wall and CPU seconds)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mlflow import MlflowClient  # noqa: E402

from mlflow_server import mlflow_server  # noqa: E402
from results_data import grid_cells, synthetic, write_sweep_dir  # noqa: E402
from sweep import report, tracking  # noqa: E402

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
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    cells = grid_cells(**GRID)
    df = synthetic(reps=args.reps, cells=cells)
    print(f"{len(cells)} cells x 3 designs = {len(cells) * 3} child runs, {len(df)} workloads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweep_dir = write_sweep_dir(tmp / "sweep", df, name="bench")
        timed("report (tests, tables, 31 PNGs, md+html)", lambda: report.build_report(sweep_dir))
        os.chdir(tmp)
        timed("log to sqlite:///mlflow.db, first", lambda: tracking.log_sweep(sweep_dir))
        timed("log to sqlite:///mlflow.db, again", lambda: tracking.log_sweep(sweep_dir))
        print(f"runs in sqlite: {count_runs('sqlite:///mlflow.db', 'kmemcg-sweep')}")
        server_dir = tmp / "server"
        server_dir.mkdir()
        with mlflow_server(server_dir) as url:
            cfg = {**report.read_config(sweep_dir), "tracking": {"uri": url, "experiment": "bench"}}
            timed(f"log to mlflow server {url}, first", lambda: tracking.log_sweep(sweep_dir, cfg))
            timed(f"log to mlflow server {url}, again", lambda: tracking.log_sweep(sweep_dir, cfg))
            print(f"runs on the server: {count_runs(url, 'bench')}")


if __name__ == "__main__":
    main()
