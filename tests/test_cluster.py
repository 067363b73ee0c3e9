"""The cluster path: a real Ray head (``ray start --head``) and a second worker node, all on
127.0.0.1; the sweep goes in through ``ray job submit`` (what a KubeRay RayJob does) and its
results equal, bit for bit, direct ``core.run_workload`` calls (as the local executor's do:
tests/test_resource_faults.py, test_faults.py).  Then
the nodes die (issue 25): the worker node mid-sweep (the sweep finishes on the head, the lost
chunks re-run), then the head (the driver stops within seconds with one line; the rerun
finishes on a new Ray).  Those two tests end the cluster, so they come last.
Everything started here is stopped here, by pid."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from sweep.store import Store
from sweep_helpers import (REPO, alive, cli_env, descendants, kill_all, metric_table, planned_workloads,
                           reference_table, stored_rows, wait_until, write_config)
from test_faults import Driver, assert_complete_and_equal

pytestmark = pytest.mark.cluster

RAY = str(Path(sys.executable).with_name("ray"))
# chunks of ~1 s (~14 workloads of 0.02-0.15 s), nearly all of them out at once: when the driver
# pauses, each node still has seconds of chunks queued, so killing one loses some for sure (with
# 0.2 s chunks and 4 in flight, the worker's chunks of cheap cells - run cell by cell - could all
# finish between the pause and the kill)
CLUSTER_SWEEP = {"name": "cluster", "workload": {"length": {"kernel_entries": 15000}},
                 "ray": {"chunk_seconds": 1.0, "max_in_flight": 8}, "output": {"report": False}}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_env(temp_dir: str) -> dict:
    # loopback only, and no token auth for a loopback test cluster (PLATFORM.md)
    # a busy machine starts the dashboard agent slowly: the head's raylet must not give up on it
    return cli_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_TMPDIR=temp_dir,
                   RAY_agent_register_timeout_ms="300000")


HEAD_STARTS = 3     # a head that exits while starting is started again, on new ports


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")     # short: socket paths are length-limited
    env = cluster_env(temp_dir)
    head = worker = None
    started = []
    try:
        for _ in range(HEAD_STARTS):
            head, dashboard, gcs, worker_ports = _start_head(temp_dir, env)
            started.append(head.pid)
            if _head_node_up(head, dashboard):
                break
        else:
            pytest.fail(f"ray start --head exited {HEAD_STARTS} times before its node was up (see {temp_dir})")
        worker = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "ray_worker_node.py"), f"127.0.0.1:{gcs}", "1", temp_dir,
             *map(str, worker_ports)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(worker.pid)
        nodes = wait_until(lambda: _alive_nodes(dashboard, 2), timeout=300, step=0.5, what="two alive nodes")
        yield {"dashboard": dashboard, "env": env, "nodes": nodes, "head": head, "worker": worker,
               "gcs": f"127.0.0.1:{gcs}"}
    finally:
        everything = set(started).union(*(descendants(pid) for pid in started))
        for process in (worker, head):
            if process is not None and process.poll() is None:
                process.terminate()            # --block / the node script stop their processes
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
        try:
            wait_until(lambda: not alive(everything), timeout=30, what="the cluster's processes to exit")
        finally:
            kill_all(everything)
            shutil.rmtree(temp_dir, ignore_errors=True)


def _start_head(temp_dir: str, env: dict):
    gcs, dash, agent, agent_grpc, runtime_env, metrics, client, *worker_ports = free_ports(11)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
         f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return head, f"http://127.0.0.1:{dash}", gcs, worker_ports


def _head_node_up(head: subprocess.Popen, dashboard: str) -> bool:
    """Whether the head's node became ALIVE; False when ``ray start`` exited first.  On a
    loaded machine its raylet gives the dashboard agent ~15 s to write its port file and
    then exits ("Timed out waiting for file .../dashboard_agent_listen_port_...", seen at a
    load of 8 on 2 cores).  The dashboard answers before the raylet is registered; a node
    joining then fails ("No node info found for head node in GCS")."""
    wait_until(lambda: _get(f"{dashboard}/api/version") or head.poll() is not None, timeout=120,
               step=0.5, what="the head's dashboard")
    wait_until(lambda: head.poll() is not None or _alive_nodes(dashboard, 1), timeout=300, step=0.5,
               what="the head node")
    return head.poll() is None


def _get(url: str, timeout: float = 5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError:
        return None


def _alive_nodes(dashboard: str, want: int):
    """The ALIVE nodes from Ray's state API (what ``ray list nodes`` asks, without a new
    Python process per poll); None until there are ``want`` of them or while it cannot answer."""
    listed = _get(f"{dashboard}/api/v0/nodes?limit=100&detail=true&timeout=30", timeout=40)
    try:
        nodes = [n for n in json.loads(listed)["data"]["result"]["result"] if n["state"] == "ALIVE"]
    except (TypeError, ValueError, KeyError):     # not up yet, or "No resource in the cluster"
        return None
    return nodes if len(nodes) >= want else None


def test_cluster_is_two_nodes_on_loopback(cluster):
    assert len(cluster["nodes"]) == 2
    assert {n["node_ip"] for n in cluster["nodes"]} == {"127.0.0.1"}
    assert sum(n["resources_total"]["CPU"] for n in cluster["nodes"]) == 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """CLUSTER_SWEEP's results from direct ``core.run_workload`` calls (the output folder does
    not enter the workloads: one table serves every test here)."""
    return reference_table(planned_workloads(write_config(tmp_path_factory.mktemp("reference"), CLUSTER_SWEEP)))


def test_sweep_submitted_as_a_ray_job_equals_direct_calls(cluster, reference, tmp_path):
    path = write_config(tmp_path, CLUSTER_SWEEP)
    out_cluster = tmp_path / "cluster-out"
    job = subprocess.run(
        [RAY, "job", "submit", "--address", cluster["dashboard"], "--",
         sys.executable, "-m", "sweep", str(path), f"output.dir={out_cluster}"],
        cwd=tmp_path, env=cluster["env"], capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "joined Ray at 127.0.0.1:" in job.stdout          # the job's driver joined, not a new local Ray
    meta = json.loads((out_cluster / "sweep.json").read_text())
    assert meta["ray_cpus"] == 2 and meta["status"] == "completed"

    with Store(out_cluster / "results.sqlite") as store:
        on_cluster = store.dataframe()
    assert len(on_cluster) == 144 and (on_cluster["status"] == "ok").all()
    pd.testing.assert_frame_equal(metric_table(on_cluster), reference, check_exact=True)
    # Ray's own task records: the chunks ran on both nodes
    tasks = subprocess.run([RAY, "list", "tasks", "--address", cluster["dashboard"], "--format", "json",
                            "--filter", "name=run_chunk", "--limit", "10000"],
                           env=cluster["env"], capture_output=True, text=True, timeout=60)
    finished = [t for t in json.loads(tasks.stdout) if t["state"] == "FINISHED"]
    assert {t["node_id"] for t in finished} == {n["node_id"] for n in cluster["nodes"]}, tasks.stdout[-2000:]


# --- nodes dying (these end the cluster: keep them last) ------------------------------

PAUSE_AT_ROWS = 40      # after the calibration (<= 21 rows): chunks are out on both nodes


def test_a_dead_worker_node_loses_nothing(cluster, reference, tmp_path):
    path = write_config(tmp_path, CLUSTER_SWEEP)
    out = tmp_path / "out"
    driver = Driver([path, f"output.dir={out}"], tmp_path, pause=f"stored:{PAUSE_AT_ROWS}", **cluster["env"],
                    RAY_ADDRESS=cluster["gcs"])
    driver.wait_paused("stored")
    node = cluster["worker"]
    kill_all({node.pid} | descendants(node.pid))         # its raylet, agents and workers, at once
    driver.resume()
    code, stderr = driver.finish()
    assert code == 0, stderr
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "completed" and record["counts"]["lost"] == 0
    assert record["counts"]["retried"] > 0, "no chunk was out on the dead node"
    assert_complete_and_equal(out, reference)


def test_a_dead_head_stops_the_driver_with_one_line_and_a_new_ray_resumes(cluster, reference, tmp_path):
    path = write_config(tmp_path, CLUSTER_SWEEP)
    out = tmp_path / "out"
    driver = Driver([path, f"output.dir={out}"], tmp_path, pause=f"stored:{PAUSE_AT_ROWS}", **cluster["env"],
                    RAY_ADDRESS=cluster["gcs"])
    driver.wait_paused("stored")
    head = cluster["head"]
    kill_all({head.pid} | descendants(head.pid))         # GCS, raylet, dashboard, workers
    killed = time.monotonic()
    driver.resume()
    code, stderr = driver.finish(timeout=60)
    assert code == 5 and time.monotonic() - killed < 15, stderr
    stored = stored_rows(out)
    assert stderr.strip().splitlines()[-1] == (
        f"stopped: the Ray cluster's head at {cluster['gcs']} stopped answering (its GCS refuses connections); "
        f"{stored} workloads of this run (+0 from before) are stored in {out / 'results.sqlite'}; no report or "
        f"MLflow run was made from part of the data; rerun the same command to resume"), stderr
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "failed" and record["counts"]["ran"] == stored

    code, stderr = Driver([path, f"output.dir={out}"], tmp_path).finish()   # later: a new (local) Ray
    assert code == 0, stderr
    record = json.loads((out / "sweep.json").read_text())
    assert (record["counts"]["skipped"], record["status"]) == (stored, "completed")
    assert_complete_and_equal(out, reference)


def test_the_cluster_watch_tells_a_dead_gcs_from_a_live_one():
    """The check behind the dead-head test above, on a plain socket: a port that accepts
    answers, a refused one does not (at once, not after Ray's one-minute GCS timeout)."""
    from sweep.runner import ClusterWatch

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    watch = ClusterWatch("127.0.0.1:%d" % listener.getsockname()[1])
    assert watch.answers()
    listener.close()
    time.sleep(ClusterWatch.EVERY_S)
    started = time.monotonic()
    assert not watch.answers() and time.monotonic() - started < ClusterWatch.TIMEOUT_S
