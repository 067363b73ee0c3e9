"""Resources running out (issue 25): a full or read-only sweep folder, a full Ray temp folder,
a full MLflow artifact store.  Each on a real small filesystem the test mounts itself (a
tmpfs of a few hundred KB; mounting needs root, as CI has): the documented exit code (6),
one line naming the cause and the path, a true ``sweep.json`` (or, where it cannot be
written, an untouched one and a line saying so), no half-written file, and a rerun whose
results equal direct ``core.run_workload`` calls.

Deterministic: the disk is filled while the driver waits at a named point
(``SWEEP_TEST_PAUSE``, sweep/interrupt.py), never on a timer.
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sweep.progress import plural
from sweep_helpers import alive, planned_workloads, reference_table, stored_rows, wait_until, write_config
from test_faults import (NO_TRACEBACK, Driver, assert_complete_and_equal, assert_gone_within, frame, meta,
                         ray_processes)

# 144 small workloads in chunks of a few: --local stores them chunk by chunk
DISK = {"name": "disk", "ray": {"chunk_seconds": 0.02}, "output": {"report": False}}
PAUSE_AT_ROWS = 40          # after the calibration (<= 21 rows): inside the chunk loop


@pytest.fixture(scope="module")
def disk_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("disk"), DISK)


@pytest.fixture(scope="module")
def reference(disk_config):
    return reference_table(planned_workloads(disk_config))


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB tmpfs of the test's own, filled by the test: room for the store's write-ahead
    log until then, however small the chunks (a loaded machine calibrates to chunks of one
    workload, a commit each: 600 KB filled up at 37 rows, before the test's pause at 40)."""
    with tmpfs(tmp_path / "fs", "4m") as folder:
        yield folder


@pytest.fixture
def roomy_fs(tmp_path):
    """3 MB: room for the whole store, so that the disk fills after the sweep."""
    with tmpfs(tmp_path / "fs", "3m") as folder:
        yield folder


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root); run it as root")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def ext4(image: Path, folder: Path, checked: bool = False):
    """A 4 MB ext4 (no journal) in ``image``, loop-mounted on ``folder`` with errors=remount-ro;
    ``checked``: e2fsck it first (as after a real error) - it exits 1 when it fixed something."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a loop device and needs root (CI runs as root); run it as root")
    if not image.exists():
        subprocess.run(["truncate", "-s", "4M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], check=True)
    if checked:
        assert subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True).returncode in (0, 1)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)   # the loop device goes with it (autoclear)


def fs_error(folder: Path) -> None:
    """ext4's test hook for a filesystem error (fs/ext4/sysfs.c trigger_fs_error): with
    errors=remount-ro the filesystem turns read-only at once, files open for writing included."""
    device = Path(subprocess.run(["findmnt", "-no", "SOURCE", str(folder)], capture_output=True, text=True,
                                 check=True).stdout.strip()).name
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("sweep test")
    assert "emergency_ro" in subprocess.run(["findmnt", "-no", "OPTIONS", str(folder)], capture_output=True,
                                            text=True).stdout or not os.access(folder, os.W_OK)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem has not one byte left; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    handle.write(bytes(size))
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def finish(driver: Driver) -> tuple[int, str]:
    code, stderr = driver.finish()
    assert not any(bad in stderr for bad in NO_TRACEBACK), stderr
    return code, stderr


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind (sweep.json's, config.yaml's, the analysis cache's)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name not in (".lock", ".space-reserve"))


def test_a_full_sweep_folder_stops_the_run_with_one_line_and_the_rerun_completes(disk_config, reference,
                                                                                 small_fs):
    out = small_fs / "out"
    args = [disk_config, f"output.dir={out}", "--local"]
    driver = Driver(args, small_fs.parent, pause=f"stored:{PAUSE_AT_ROWS}")
    driver.wait_paused("stored")
    filler = fill(small_fs)                 # the disk fills up while workloads run
    driver.resume()
    code, stderr = finish(driver)
    assert code == 6, stderr
    stored = stored_rows(out)
    assert PAUSE_AT_ROWS <= stored < len(reference)
    assert last_line(stderr) == (
        f"disk error: {out / 'results.sqlite'}: no space left on device (ENOSPC); {stored} workloads of this "
        f"run (+0 from before) are stored in {out / 'results.sqlite'}; no report or MLflow run was made from "
        f"part of the data; make room (or make it writable) and rerun the same command to resume")
    record = meta(out)      # written in the room the folder's reserve kept for it
    assert record["status"] == "failed" and "no space left on device" in record["reason"]
    assert record["counts"]["ran"] == stored and record["ray_head"] is None
    assert leftovers(out) == []

    filler.unlink()
    code, stderr = finish(Driver(args, small_fs.parent))
    assert code == 0, stderr
    assert (meta(out)["counts"]["skipped"], meta(out)["counts"]["ran"]) == (stored, len(reference) - stored)
    assert meta(out)["status"] == "completed"
    assert_complete_and_equal(out, reference)


def test_a_sweep_folder_turning_read_only_mid_run_stops_with_one_line_and_the_rerun_completes(disk_config, reference,
                                                                                             tmp_path):
    """The way a disk turns read-only under a running program: ext4's errors=remount-ro after
    an error (here ext4's own test trigger).  ``mount -o remount,ro`` cannot do it: the kernel
    refuses while a file is open for writing (EBUSY), as the store is."""
    image = tmp_path / "ext4.img"
    with ext4(image, tmp_path / "fs") as folder:
        out = folder / "out"
        args = [disk_config, f"output.dir={out}", "--local"]
        driver = Driver(args, tmp_path, pause=f"stored:{PAUSE_AT_ROWS}")
        driver.wait_paused("stored")
        running = meta(out)
        # what the kernel had not yet written back is lost with the error, as in a power cut
        # (SQLite's WAL with synchronous=NORMAL: never corrupt, durable at checkpoints); the
        # kernel writes dirty pages back within 30 s, here at once
        os.sync()
        fs_error(folder)                    # "EXT4-fs (loopN): Remounting filesystem read-only"
        driver.resume()
        code, stderr = finish(driver)
    assert code == 6, stderr
    with ext4(image, tmp_path / "fs", checked=True) as folder:      # e2fsck, mounted again
        stored = stored_rows(out)
        assert PAUSE_AT_ROWS <= stored < len(reference)
        assert last_line(stderr) == (
            f"disk error: {out / 'results.sqlite'}: read-only file system (EROFS); {stored} workloads of this run "
            f"(+0 from before) are stored in {out / 'results.sqlite'}; {out / 'sweep.json'} could not be updated; "
            f"no report or MLflow run was made from part of the data; make room (or make it writable) and rerun "
            f"the same command to resume")
        assert meta(out) == running and running["status"] == "running"     # untouched: it could not be written
        assert leftovers(out) == []

        code, stderr = finish(Driver(args, tmp_path))
        assert code == 0, stderr
        assert (meta(out)["counts"]["skipped"], meta(out)["counts"]["ran"]) == (stored, len(reference) - stored)
        assert meta(out)["status"] == "completed"
        assert_complete_and_equal(out, reference)


def test_a_full_disk_before_the_run_starts_nothing(disk_config, small_fs):
    out = small_fs / "out"
    fill(small_fs)
    code, stderr = finish(Driver([disk_config, f"output.dir={out}", "--local"], small_fs.parent))
    assert code == 6, stderr
    assert last_line(stderr).startswith(f"disk error: {out / 'config.yaml'}: no space left on device (ENOSPC); "
                                        f"nothing was started"), stderr
    assert not (out / "sweep.json").exists() and leftovers(out) == []


def test_a_full_then_read_only_disk_in_the_report_leaves_no_half_written_report_or_cache(disk_config, roomy_fs):
    small_fs = roomy_fs
    out = small_fs / "out"
    driver = Driver([disk_config, f"output.dir={out}", "--local", "output.report=true"], small_fs.parent,
                    pause="cache")
    driver.wait_paused("cache")         # the statistics are computed; their cache is to be written
    filler = fill(small_fs)
    driver.resume()
    code, stderr = finish(driver)
    assert code == 6, stderr
    assert last_line(stderr) == (
        f"report failed: disk error: {out / 'analysis'}: no space left on device (ENOSPC); the results are intact "
        f"in {out / 'results.sqlite'}; make room (or make it writable), then: python -m sweep report {out}")
    assert meta(out)["status"] == "completed"       # the sweep itself finished
    assert leftovers(out) == [] and not (out / "report").exists()

    filler.unlink()        # room again, but the folder turns read-only while the report is built
    driver = Driver(["report", out], small_fs.parent, pause="report")
    driver.wait_paused("report")
    remount(small_fs, "ro")
    driver.resume()
    code, stderr = finish(driver)
    assert code == 6 and "report failed: disk error: " in last_line(stderr), stderr
    assert "read-only file system (EROFS)" in last_line(stderr)

    remount(small_fs, "rw")
    code, stderr = finish(Driver(["report", out], small_fs.parent))
    assert code == 0 and (out / "report" / "report.html").exists(), stderr
    assert leftovers(out) == []


def test_a_full_ray_temp_folder_is_named_before_ray_starts_and_one_filling_while_ray_runs_does_no_harm(
        disk_config, reference, tmp_path):
    """Ray's temp folder (its session: logs, sockets) full before the run: exit 6 naming it,
    no Ray started.  Then it fills up while the rerun's local Ray runs on it: Ray keeps
    running (its log writes fail: the driver's core log prints one ``LOG ERROR ... No space
    left on device`` line), the chunks' results travel through the object store in /dev/shm,
    not the temp folder, and the sweep finishes, equal.  (A Ray that died of it would stop
    the sweep with exit 6 naming the folder: runner._check.)"""
    out = tmp_path / "out"
    args = [disk_config, f"output.dir={out}"]
    with tmpfs(Path(tempfile.mkdtemp(prefix="rf", dir="/tmp")), "64m") as temp:    # short: Ray's sockets
        filler = fill(temp)
        code, stderr = finish(Driver(args, tmp_path, RAY_TMPDIR=str(temp)))
        assert code == 6, stderr
        stored = stored_rows(out)                   # the calibration's, before Ray was needed
        assert last_line(stderr).startswith(
            f"disk error: {temp / 'ray'} (Ray's temp folder; RAY_TMPDIR moves it): no space left on device "
            f"(ENOSPC); {stored} workloads of this run"), stderr
        assert "started a local Ray" not in stderr and not (out / "ray-head.log").exists()
        assert meta(out)["status"] == "failed" and meta(out)["counts"]["ran"] == stored

        filler.unlink()
        driver = Driver(args, tmp_path, pause=f"stored:{PAUSE_AT_ROWS}", RAY_TMPDIR=str(temp))
        driver.wait_paused("stored")
        ray = ray_processes(out)
        fill(temp)
        driver.resume()
        code, stderr = finish(driver)
        assert not os.statvfs(temp).f_bavail, "the temp folder must still be full at the end"
        assert_gone_within(ray, 10)
    assert code == 0, stderr
    assert (meta(out)["status"], meta(out)["counts"]["skipped"]) == ("completed", stored)
    assert_complete_and_equal(out, reference)


# Ray's memory monitor (PLATFORM.md: this machine's memory cgroups are not ours to make, so no
# kernel OOM kill in a cgroup of our own): it kills a worker running a task when the node's
# used memory crosses RAY_memory_usage_threshold, as the kernel's OOM killer would kill the
# largest process
OOM_HEADROOM = 4 << 30      # the threshold: this much above the memory used when the module starts
# (more than another program on a shared machine is likely to take meanwhile)


@pytest.fixture(scope="module")
def oom_ray(tmp_path_factory):
    """A 1-CPU local Ray whose memory monitor kills a worker once the node uses OOM_HEADROOM
    more memory than now; its workers carry the hang hook, disarmed while the file exists.
    One CPU: the blocked chunk is the only task running, so it is the one the monitor kills."""
    from ray._private.utils import get_system_memory, get_used_memory

    from sweep.rayhead import LocalHead

    threshold = (get_used_memory() + OOM_HEADROOM) / get_system_memory()
    assert threshold < 0.9, "the machine is too full of memory for this test"
    folder = tmp_path_factory.mktemp("oom-ray")
    hang = folder / "hang"
    hang.write_text("disarmed")
    env = {"SWEEP_TEST_HANG_FILE": str(hang), "RAY_memory_usage_threshold": f"{threshold:.4f}",
           "RAY_memory_monitor_refresh_ms": "100"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)          # the head's environment reaches its raylet and workers
    try:
        head = LocalHead(1, folder / "ray-head.log")
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    try:
        assert head.wait_ready(lambda: False)
        yield {"address": head.address, "hang": hang, "pids": {pid for pid, _ in head.pids}}
    finally:
        head.close()


def test_a_worker_killed_by_rays_memory_monitor_mid_chunk_is_retried_or_stored_as_lost(disk_config, reference,
                                                                                      oom_ray, tmp_path):
    out = tmp_path / "retried"          # ray.max_retries=3: the chunk runs again, nothing is lost
    driver = Driver([disk_config, f"output.dir={out}", f"ray.address={oom_ray['address']}"], tmp_path)
    _oom_kill_the_blocked_worker(driver, oom_ray)
    code, stderr = finish(driver)
    assert code == 0, stderr
    counts = meta(out)["counts"]
    assert (counts["lost"], counts["retried"] > 0) == (0, True) and meta(out)["status"] == "completed"
    assert_complete_and_equal(out, reference)

    out = tmp_path / "lost"             # ray.max_retries=0: stored as lost, the rerun runs it
    args = [disk_config, f"output.dir={out}"]
    driver = Driver(args + [f"ray.address={oom_ray['address']}", "ray.max_retries=0"], tmp_path)
    _oom_kill_the_blocked_worker(driver, oom_ray)
    code, stderr = finish(driver)
    assert code == 1, stderr
    lost = frame(out).query("status == 'error'")
    assert len(lost) > 0 and lost["error"].str.startswith("worker lost: OutOfMemoryError").all(), lost["error"]
    assert (f"lost: {plural(len(lost), 'workload')} whose worker died 1 time (ray.max_retries=0; last: "
            f"OutOfMemoryError: ") in last_line(stderr), stderr
    assert meta(out)["status"] == "completed" and meta(out)["counts"]["lost"] == len(lost)
    assert alive(oom_ray["pids"]) == oom_ray["pids"], "the monitor killed only a worker, none of Ray's own"
    code, stderr = finish(Driver(args, tmp_path))
    assert code == 0 and meta(out)["counts"]["ran"] == len(lost), stderr
    assert_complete_and_equal(out, reference)


def _oom_kill_the_blocked_worker(driver: Driver, ray: dict) -> None:
    """Arm the hang hook, wait for a worker to block in a chunk (sweep/worker.py), then take
    memory in this process, 128 MiB at a time, until Ray's memory monitor kills that worker;
    the memory is given back at once."""
    ray["hang"].unlink()

    def blocked():
        assert driver.proc.poll() is None, driver.proc.communicate()
        return ray["hang"].exists() and ray["hang"].read_text()
    worker = int(wait_until(blocked, timeout=300, what="a worker blocked in a chunk"))
    balloon = []
    try:
        while alive({worker}):
            assert len(balloon) < 128, "Ray's memory monitor killed nothing at 16 GiB more"
            balloon.append(bytearray(b"\1") * (128 << 20))     # written: really taken
            time.sleep(0.05)
    finally:
        balloon.clear()


def test_a_full_mlflow_artifact_store_leaves_a_note_until_log_completes(disk_config, tmp_path):
    out = tmp_path / "out"
    code, stderr = finish(Driver([disk_config, f"output.dir={out}", "--local", "output.report=true"], tmp_path))
    assert code == 0, stderr
    with tmpfs(tmp_path / "artifacts", "300k") as store:    # smaller than the report: its upload cannot fit
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        log = ["log", out, f"tracking.uri={uri}"]
        code, stderr = finish(Driver(log, store))      # MLflow puts ./mlruns where it runs
        assert code == 6, stderr
        line = last_line(stderr)
        assert line.startswith(f"MLflow logging failed: disk error: {store / 'mlruns'}/") and \
            "(MLflow's artifact store): no space left on device (ENOSPC)" in line and \
            line.endswith(f"then: python -m sweep log {out}"), stderr
        parent = parent_run(uri)
        assert parent.data.tags["kmemcg.upload_incomplete"].endswith(f"python -m sweep log {out}")

        subprocess.run(["mount", "-o", "remount,size=4m", str(store)], check=True)     # room again
        code, stderr = finish(Driver(log, store))
        assert code == 0, stderr
        parent = parent_run(uri)
        assert "kmemcg.upload_incomplete" not in parent.data.tags and parent.info.status == "FINISHED"
        assert (Path(parent.info.artifact_uri.removeprefix("file://")) / "report.html").stat().st_size > 100_000


def parent_run(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`kmemcg.role` = 'parent'")
    assert len(runs) == 1
    return runs[0]
