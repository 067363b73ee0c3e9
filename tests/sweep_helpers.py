"""Helpers for the sweep tests: small configs, running the real CLI, Ray process trees,
and reference results computed by calling ``core.run_workload`` directly."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]

# A sweep with the default grid's shape (every axis, every design) sized for tests.
SMALL = {
    "name": "small",
    "seed": 7,
    "replications": 2,
    "designs": ["v4.3", "way1", "way2"],
    "grid": {"limit": ["32M", "128M"], "high": 0.75, "order": [0, 3], "nodes": [1, 2],
             "mix": ["kernel", "nowait-burst", "numa-remote"]},
    "workload": {"machine": {"mem_mib": 256, "cpus": 2}, "tasks": 2, "length": {"kernel_entries": 300}},
    "ray": {"chunk_seconds": 0.3},
    "tracking": {"enabled": False},
}


def deep_update(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def write_config(folder: Path, changes: dict | None = None, base: dict = SMALL, name: str = "sweep.yaml") -> Path:
    """A config file in ``folder`` with the repo's mixes beside it and output in folder/out."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "mixes").exists():
        shutil.copytree(REPO / "configs" / "mixes", folder / "mixes")
    data = deep_update(base, {"output": {"dir": str(folder / "out")}})
    data = deep_update(data, changes or {})
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(**extra) -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
    env.update(extra)
    return env


def start_cli(args: list[str], cwd: Path, **extra_env) -> subprocess.Popen:
    """``python -m sweep ARGS`` in its own process group, output captured."""
    return subprocess.Popen([sys.executable, "-m", "sweep", *map(str, args)], cwd=cwd, env=cli_env(**extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_cli(args: list[str], cwd: Path, timeout: float = 300, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *map(str, args)], cwd=cwd, env=cli_env(**extra_env),
                          capture_output=True, text=True, timeout=timeout)


# --- processes ------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (Ray's GCS, raylet and workers for a driver)."""
    from sweep import rayhead

    return set(rayhead.descendants(pid))


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pids) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)}


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_all(pids) -> None:
    """Clean-up of processes a test started (by pid, never by name)."""
    for pid in alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(predicate, timeout: float, step: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- results --------------------------------------------------------------------------


def stored_rows(sweep_dir: Path) -> int:
    """Rows in a store another process is writing (WAL: readers never block the writer)."""
    import sqlite3

    path = sweep_dir / "results.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:   # table not created yet
        return 0
    finally:
        db.close()


def metric_table(frame: pd.DataFrame) -> pd.DataFrame:
    """key -> metric values, for comparing two runs (drops timing and worker columns)."""
    from sweep.store import metric_names

    return frame.set_index("key")[list(metric_names())].sort_index()


_REFERENCES: dict[tuple[str, ...], pd.DataFrame] = {}


def reference_table(workloads) -> pd.DataFrame:
    """The same table from direct ``core.run_workload`` calls, no sweep machinery.  Computed
    once per test session for a set of workloads (a key hashes the spec, seed and model
    version): test_faults' and test_cluster's sweeps plan the same 144 workloads."""
    import core
    from sweep.store import metric_names

    keys = tuple(sorted(w.key for w in workloads))
    if keys not in _REFERENCES:
        names = list(metric_names())
        rows = {w.key: core.run_workload(w.spec, w.seed) for w in workloads}
        table = pd.DataFrame.from_dict({k: [float(v[n]) for n in names] for k, v in rows.items()},
                                       orient="index", columns=names)
        _REFERENCES[keys] = table.rename_axis("key").sort_index()
    return _REFERENCES[keys].copy()


def planned_workloads(config_path: Path, overrides=()):
    """The workloads the CLI would plan for a config (same code path as ``python -m sweep``)."""
    import core
    from sweep import config, grid

    cfg = config.load(config_path, list(overrides))
    cells = grid.build_cells(cfg, config.load_mixes(cfg, config_path))
    return grid.workloads(cells, cfg.designs, cfg.replications, cfg.seed, core.MODEL_VERSION)
