"""Faults: a Ray worker killed mid-sweep, and the driver interrupted (SIGINT) or killed
(SIGKILL) mid-sweep.  Each time the sweep completes (after a rerun for the driver cases),
runs only what was missing, stores every workload exactly once, and its results equal
direct ``core.run_workload`` calls (which the end-to-end tests show equal an undisturbed
sweep)."""
from __future__ import annotations

import json
import os
import signal
import threading

import pandas as pd
import pytest

from sweep import config, grid, plan, runner
from sweep.outdir import SweepDir
from sweep.store import Store
from sweep_helpers import (alive, command_line, descendants, kill_all, metric_table, planned_workloads,
                           reference_table, start_cli, stored_rows, wait_until, write_config)

# ~50 ms per workload, 144 workloads: a few seconds of Ray work to interrupt
FAULT = {"name": "faults", "workload": {"length": {"kernel_entries": 15000}}, "ray": {"chunk_seconds": 0.3},
         "output": {"report": False}}
CALIBRATION_RUNS = plan.CALIBRATION_RUNS   # at most this many run in the driver before Ray starts


@pytest.fixture(scope="module")
def fault_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("faults"), FAULT)


@pytest.fixture(scope="module")
def reference(fault_config):
    return reference_table(planned_workloads(fault_config))


def _is_agent(pid: int) -> bool:
    return command_line(pid).startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))


def frame(sweep_dir) -> pd.DataFrame:
    with Store(sweep_dir / "results.sqlite") as store:
        return store.dataframe()


def assert_complete_and_equal(sweep_dir, reference):
    df = frame(sweep_dir)
    assert len(df) == len(reference) and df["key"].is_unique
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "error"].tolist()
    pd.testing.assert_frame_equal(metric_table(df), reference)


def test_killing_a_ray_worker_mid_sweep_changes_nothing(fault_config, reference, ray_session, tmp_path):
    out = tmp_path / "out"
    summary, killed = sweep_killing_one_worker(fault_config, out, max_retries=3)
    assert (summary.errors, summary.lost, summary.interrupted) == (0, 0, False), killed
    assert summary.ran == len(reference)
    assert_complete_and_equal(out, reference)


def test_a_chunk_lost_beyond_its_retries_is_stored_as_errors_and_rerun(fault_config, reference, ray_session,
                                                                      tmp_path):
    out = tmp_path / "out"
    summary, _ = sweep_killing_one_worker(fault_config, out, max_retries=0)
    assert summary.lost > 0 and summary.errors == 0 and not summary.interrupted
    df = frame(out)
    lost = df[df["status"] == "error"]
    assert len(lost) == summary.lost and lost["error"].str.startswith(runner.LOST).all()
    rerun = run_fault_sweep(fault_config, out, max_retries=0)
    assert (rerun.ran, rerun.lost) == (summary.lost, 0)        # only the lost workloads ran again
    assert_complete_and_equal(out, reference)


def run_fault_sweep(config_path, out, max_retries: int):
    cfg = config.load(config_path, [f"output.dir={out}", f"ray.max_retries={max_retries}"])
    cells = grid.build_cells(cfg, config.load_mixes(cfg, config_path))
    return runner.run_sweep(cfg, cells, SweepDir(out))


def sweep_killing_one_worker(config_path, out, max_retries: int):
    """Run the sweep in-process while a thread SIGKILLs one worker that is running a chunk."""
    killed = []

    def kill_one_busy_worker():
        def busy_worker():
            return next((p for p in descendants(os.getpid()) if command_line(p).startswith("ray::run_chunk")), None)

        wait_until(lambda: stored_rows(out) > CALIBRATION_RUNS, timeout=120, what="a chunk from Ray")
        pid = wait_until(busy_worker, timeout=60, what="a worker running a chunk")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    summary = run_fault_sweep(config_path, out, max_retries)
    killer.join(timeout=5)
    assert killed, "the killer thread never found a busy worker"
    return summary, killed


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_running_only_what_is_missing(fault_config, reference, tmp_path, how):
    out = tmp_path / "out"
    args = [fault_config, f"output.dir={out}"]
    driver = start_cli(args, cwd=tmp_path)
    ray_processes: set[int] = set()
    try:
        wait_until(lambda: stored_rows(out) > CALIBRATION_RUNS or driver.poll() is not None, timeout=180,
                   what="the first chunk from Ray")
        ray_processes = descendants(driver.pid)
        assert driver.poll() is None, "the sweep finished before it could be interrupted: make it longer"
        if how == signal.SIGINT:
            os.killpg(driver.pid, how)     # Ctrl-C in a terminal: the whole process group
        else:
            driver.send_signal(how)        # kill -9 of the driver alone
        _, stderr = driver.communicate(timeout=60)
        if how == signal.SIGINT:
            assert driver.returncode == 130, stderr
            assert "interrupted: finished work is stored" in stderr and "rerun the same command" in stderr
            assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
        else:
            assert driver.returncode == -signal.SIGKILL
        wait_until(lambda: not alive(p for p in ray_processes if not _is_agent(p)), timeout=60,
                   what="the driver's GCS, raylet and workers to exit")
        stored = stored_rows(out)
        assert CALIBRATION_RUNS < stored < len(reference)
        # Rerun at once. After a SIGKILL, Ray's dashboard and runtime-env agents outlive their
        # raylet for 60-90 s (Ray checks raylet liveness slowly); the rerun must not mind.
        rerun = start_cli(args, cwd=tmp_path)
        _, stderr = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, stderr
    finally:
        kill_all([driver.pid, *ray_processes])
    counts = json.loads((out / "sweep.json").read_text())["counts"]
    assert (counts["skipped"], counts["ran"]) == (stored, len(reference) - stored)
    assert_complete_and_equal(out, reference)
