"""Faults: Ctrl-C at every stage of a run (before Ray is up, while workloads run, during the
report, during the MLflow logging, twice in a row; on Ray and on the local executor), a
SIGKILLed driver, a killed Ray worker and a killed Ray agent.  Every exit is the documented
code with one line and no traceback; a rerun runs only what is missing and its results equal
direct ``core.run_workload`` calls.

No test depends on wall-clock timing: the driver pauses at a named point (``SWEEP_TEST_PAUSE``,
sweep/interrupt.py) and says so in a file before the test acts, and a Ray worker to be killed
is one that blocks on purpose (``SWEEP_TEST_HANG_FILE``, sweep/worker.py).  Runs whose own Ray
is not under test join one shared local Ray (``RAY_ADDRESS``) to keep the module quick.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sweep.progress import plural
from sweep.rayhead import LocalHead, group_members, start_time
from sweep.store import Store
from sweep_helpers import (alive, cli_env, descendants, metric_table, planned_workloads, reference_table, start_cli,
                           stored_rows, wait_until, write_config)

# ~50 ms per workload, 144 workloads, at most 2 chunks in flight: a run that is certainly
# still busy at the pause points below (two partial runs of >= 40 rows each leave work over)
FAULT = {"name": "faults", "replications": 2, "workload": {"length": {"kernel_entries": 15000}},
         "ray": {"chunk_seconds": 0.3, "max_in_flight": 2}, "output": {"report": False}}
PAUSE_AT_ROWS = 40      # calibration stores <= 21 rows, so this is inside the Ray phase
NO_TRACEBACK = ("Traceback", "Check failed", "discovered a bug in Ray")


@pytest.fixture(scope="module")
def fault_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("faults"), FAULT)


@pytest.fixture(scope="module")
def reference(fault_config):
    return reference_table(planned_workloads(fault_config))


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """One local Ray for the runs whose own Ray is not what is tested; its workers carry the
    hang hook, disarmed while the hang file exists."""
    folder = tmp_path_factory.mktemp("shared-ray")
    hang = folder / "hang"
    hang.write_text("disarmed")
    os.environ["SWEEP_TEST_HANG_FILE"] = str(hang)
    try:
        head = LocalHead(2, folder / "ray-head.log")
    finally:
        del os.environ["SWEEP_TEST_HANG_FILE"]
    try:
        assert head.wait_ready(lambda: False)
        yield {"address": head.address, "hang": hang}
    finally:
        head.close()


class Driver:
    """``python -m sweep`` in its own process group, pausing at ``pause`` points."""

    def __init__(self, args, cwd, pause: str = "", **env):
        self.pause_file = cwd / f"pause-{time.monotonic_ns()}"
        self.proc = start_cli(args, cwd=cwd, SWEEP_TEST_PAUSE=pause, SWEEP_TEST_PAUSE_FILE=str(self.pause_file),
                              **env)

    def wait_paused(self, point: str, timeout: float = 300) -> None:
        def paused():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {point}: {self.proc.communicate()}")
            return self.pause_file.exists() and self.pause_file.read_text() == point
        wait_until(paused, timeout=timeout, what=f"the driver to pause at {point}")

    def resume(self) -> None:
        self.pause_file.unlink()

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)     # a terminal's Ctrl-C: the whole process group

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        _, stderr = self.proc.communicate(timeout=timeout)
        assert not any(bad in stderr for bad in NO_TRACEBACK), stderr
        return self.proc.returncode, stderr


def run(args, cwd, pause="", **env) -> tuple[int, str]:
    return Driver(args, cwd, pause, **env).finish()


def meta(out) -> dict:
    return json.loads((out / "sweep.json").read_text())


def frame(out) -> pd.DataFrame:
    with Store(out / "results.sqlite") as store:
        return store.dataframe()


def assert_complete_and_equal(out, reference):
    df = frame(out)
    assert len(df) == len(reference) and df["key"].is_unique
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "error"].tolist()
    pd.testing.assert_frame_equal(metric_table(df), reference)


def ray_processes(out) -> set[int]:
    """The local Ray of a running sweep: its head's process group and the workers below it."""
    head = meta(out)["ray_head"]["pid"]
    return {head} | descendants(head)


def assert_gone_within(pids, seconds: float) -> None:
    wait_until(lambda: not alive(pids), timeout=seconds, what=f"{sorted(alive(pids))} to exit")


def test_ctrl_c_while_running_then_in_the_report_then_in_the_logging(fault_config, reference, shared_ray,
                                                                      tmp_path):
    out = tmp_path / "out"
    args = [fault_config, f"output.dir={out}"]
    driver = Driver(args, tmp_path, pause=f"stored:{PAUSE_AT_ROWS}")
    driver.wait_paused("stored")
    ray = ray_processes(out)
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130, stderr
    stored = stored_rows(out)
    assert PAUSE_AT_ROWS <= stored < len(reference)
    assert f"interrupted: {stored} workloads of this run" in stderr and "rerun the same command" in stderr
    assert meta(out)["status"] == "interrupted" and meta(out)["counts"]["ran"] == stored
    assert_gone_within(ray, 10)

    # the rerun (on the shared Ray) runs only what is missing; Ctrl-C in its report keeps it all
    code, stderr = _interrupted_at(args + ["output.report=true", f"ray.address={shared_ray['address']}"],
                                   tmp_path, "report")
    assert code == 130 and "interrupted during the report" in stderr, stderr
    assert f"python -m sweep report {out}" in stderr
    assert (meta(out)["counts"]["skipped"], meta(out)["counts"]["ran"]) == (stored, len(reference) - stored)
    assert meta(out)["status"] == "completed"
    assert_complete_and_equal(out, reference)

    # `log DIR key=value`: another tracking URI; Ctrl-C in the logging
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, stderr = _interrupted_at(["log", out, f"tracking.uri={uri}"], tmp_path, "log")
    assert code == 130 and "interrupted during the MLflow logging" in stderr, stderr
    assert f"python -m sweep log {out}" in stderr
    code, stderr = run(["report", out], tmp_path)
    assert code == 0 and (out / "report" / "report.md").exists(), stderr


def _interrupted_at(args, cwd, point) -> tuple[int, str]:
    driver = Driver(args, cwd, pause=point)
    driver.wait_paused(point)
    driver.ctrl_c()
    return driver.finish()


def test_ctrl_c_before_ray_is_up_connects_nothing_and_leaves_no_ray(fault_config, tmp_path):
    """The local Ray's head boots while the campaign calibrates (``RayExecutor.prepare``); a
    Ctrl-C before the driver connects to it ends the run with no Ray line and no Ray process
    left behind, and keeps the calibration's results."""
    out = tmp_path / "out"
    driver = Driver([fault_config, f"output.dir={out}"], tmp_path, pause="ray-start")
    driver.wait_paused("ray-start")
    heads = [p for p in descendants(driver.proc.pid) if "sweep.rayhead" in _command(p)]
    assert len(heads) == 1, "the head was not spawned before the calibration"
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130, stderr
    assert "started a local Ray" not in stderr
    wait_until(lambda: not group_members(heads[0]), timeout=10, what="the Ray head's process group to exit")
    assert meta(out)["status"] == "interrupted" and meta(out)["counts"]["ran"] == stored_rows(out) > 0


def test_ctrl_c_twice_while_the_local_ray_starts_leaves_no_ray(fault_config, tmp_path):
    out = tmp_path / "out"
    driver = Driver([fault_config, f"output.dir={out}"], tmp_path, pause="ray-starting")
    driver.wait_paused("ray-starting")
    head = next(p for p in descendants(driver.proc.pid) if "sweep.rayhead" in _command(p))
    driver.ctrl_c()
    driver.ctrl_c()     # the second lands while the first is handled, or after the exit: 130 either way
    code, stderr = driver.finish()
    assert code == 130, stderr
    assert meta(out)["status"] == "interrupted"
    wait_until(lambda: not group_members(head), timeout=10, what="the Ray head's process group to exit")


def test_ctrl_c_twice_stops_at_once_and_sweep_json_tells_the_truth(fault_config, tmp_path):
    out = tmp_path / "out"
    driver = Driver([fault_config, f"output.dir={out}"], tmp_path, pause=f"stored:{PAUSE_AT_ROWS},stopping")
    driver.wait_paused("stored")
    ray = ray_processes(out)
    driver.ctrl_c()
    driver.wait_paused("stopping")        # the first Ctrl-C is being handled
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130 and "interrupted again: stopped at once" in stderr, stderr
    assert meta(out)["status"] == "interrupted"
    assert meta(out)["counts"]["ran"] == stored_rows(out) >= PAUSE_AT_ROWS
    assert_gone_within(ray, 10)


def test_ctrl_c_on_the_local_executor_stops_between_chunks_and_twice_at_once(fault_config, reference, tmp_path):
    """--local runs the chunks in the driver: the same interrupt path, no Ray anywhere."""
    out = tmp_path / "out"
    args = [fault_config, f"output.dir={out}", "--local"]
    driver = Driver(args, tmp_path, pause=f"stored:{PAUSE_AT_ROWS}")
    driver.wait_paused("stored")
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130, stderr
    first = stored_rows(out)
    assert PAUSE_AT_ROWS <= first < len(reference)
    assert stderr.strip().splitlines()[-1] == (f"interrupted: {first} workloads of this run (+0 from before) are "
                                               f"stored in {out / 'results.sqlite'}; rerun the same command to resume")
    assert (meta(out)["status"], meta(out)["executor"], meta(out)["counts"]["ran"]) == ("interrupted", "local", first)
    assert "Ray" not in stderr and not (out / "ray-head.log").exists()

    driver = Driver(args, tmp_path, pause=f"stored:{PAUSE_AT_ROWS},stopping")
    driver.wait_paused("stored")
    driver.ctrl_c()
    driver.wait_paused("stopping")        # the first Ctrl-C is being handled
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted again: stopped at once", stderr
    assert meta(out)["status"] == "interrupted"
    assert meta(out)["counts"]["ran"] == stored_rows(out) - first >= PAUSE_AT_ROWS

    df = frame(out)                       # (the rerun that completes it: tests/test_campaign.py)
    assert (df["status"] == "ok").all() and df["key"].is_unique
    pd.testing.assert_frame_equal(metric_table(df), reference.loc[sorted(df["key"])])


def test_sigkilled_driver_leaves_no_ray_and_the_rerun_survives_a_killed_worker(fault_config, reference,
                                                                               shared_ray, tmp_path):
    out = tmp_path / "out"
    driver = Driver([fault_config, f"output.dir={out}"], tmp_path, pause=f"stored:{PAUSE_AT_ROWS}")
    driver.wait_paused("stored")
    ray = ray_processes(out)
    driver.proc.kill()                    # kill -9 of the driver alone
    driver.proc.wait()
    assert_gone_within(ray, 10)           # GCS, raylet, agents and workers
    stored = stored_rows(out)

    # a leftover of the same sweep is stopped before the rerun starts (here: a stand-in)
    leftover = subprocess.Popen(["sleep", "600"])
    record = meta(out)
    record["ray_head"]["pids"].append([leftover.pid, start_time(leftover.pid)])
    (out / "sweep.json").write_text(json.dumps(record))

    shared_ray["hang"].unlink()           # arm: the rerun's first chunk blocks until killed
    rerun = Driver([fault_config, f"output.dir={out}", f"ray.address={shared_ray['address']}"], tmp_path)
    worker = int(wait_until(lambda: shared_ray["hang"].exists() and shared_ray["hang"].read_text(), timeout=300,
                            what="a worker blocked in a chunk"))
    os.kill(worker, signal.SIGKILL)
    code, stderr = rerun.finish()
    assert leftover.wait(timeout=5) == -signal.SIGKILL
    assert code == 0, stderr
    assert "stopped 1 processes of a local Ray left by the previous run" in stderr
    counts = meta(out)["counts"]
    assert counts["retried"] > 0 and (counts["skipped"], counts["ran"]) == (stored, len(reference) - stored)
    assert_complete_and_equal(out, reference)


def test_a_chunk_lost_beyond_its_retries_is_stored_as_errors_and_rerun(fault_config, reference, shared_ray,
                                                                      tmp_path):
    out = tmp_path / "out"
    args = [fault_config, f"output.dir={out}", f"ray.address={shared_ray['address']}"]
    shared_ray["hang"].unlink()
    driver = Driver(args + ["ray.max_retries=0"], tmp_path)
    worker = int(wait_until(lambda: shared_ray["hang"].exists() and shared_ray["hang"].read_text(), timeout=300,
                            what="a worker blocked in a chunk"))
    os.kill(worker, signal.SIGKILL)
    code, stderr = driver.finish()
    assert code == 1, stderr
    lost = frame(out).query("status == 'error'")
    assert len(lost) > 0 and lost["error"].str.startswith("worker lost").all()
    assert f"lost: {plural(len(lost), 'workload')} whose worker died 1 time (ray.max_retries=0; last: " in stderr, \
        stderr
    assert meta(out)["counts"]["lost"] == len(lost)
    code, stderr = run(args, tmp_path)
    assert code == 0, stderr
    assert meta(out)["counts"]["ran"] == len(lost)       # only the lost workloads ran again
    assert_complete_and_equal(out, reference)


def test_a_dead_local_ray_stops_the_sweep_at_once_without_a_report(fault_config, tmp_path):
    out = tmp_path / "out"
    driver = Driver([fault_config, f"output.dir={out}", "output.report=true"], tmp_path,
                    pause=f"stored:{PAUSE_AT_ROWS}")
    driver.wait_paused("stored")
    ray = ray_processes(out)
    head = meta(out)["ray_head"]["pid"]
    agent = next(p for p in ray if _command(p) == "ray::RuntimeEnvAgent" and os.getpgid(p) == head)
    os.kill(agent, signal.SIGKILL)
    killed = time.monotonic()
    driver.resume()
    code, stderr = driver.finish()
    assert code == 5 and time.monotonic() - killed < 15, stderr
    assert "stopped: the local Ray stopped" in stderr and "rerun the same command" in stderr
    assert not (out / "report").exists()
    record = meta(out)
    assert record["status"] == "failed" and "Ray" in record["reason"]
    assert record["counts"]["ran"] == stored_rows(out) and record["counts"]["lost"] == 0
    assert_gone_within(ray, 10)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_huge_workload_costs_the_calibration_budget_and_ctrl_c_ends_it(fault_config, tmp_path):
    huge = [fault_config, f"output.dir={tmp_path / 'out'}", "workload.length.kernel_entries=2000000000",
            "--dry-run"]
    code, stdout = _dry_run(huge, tmp_path)
    assert code == 0 and "calibration: no workload finished in" in stdout and "estimated time: at least" in stdout
    driver = Driver(huge, tmp_path, pause="calibrating")
    driver.wait_paused("calibrating")
    child = {p for p in descendants(driver.proc.pid) if "calibration_main" in _command(p)}
    assert len(child) == 1
    driver.ctrl_c()
    code, stderr = driver.finish()
    assert code == 130 and "interrupted: nothing was started" in stderr, stderr
    assert_gone_within(child, 5)


def _dry_run(args, cwd) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "sweep", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert not any(bad in done.stderr for bad in NO_TRACEBACK), done.stderr
    return done.returncode, done.stdout
