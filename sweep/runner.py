"""The Ray executor of a campaign (sweep.campaign): the only module that talks to Ray.

Chunks become Ray core tasks (``sweep.worker.run_chunk_in_ray_worker``), spread over every
node, collected with ``ray.wait``.  Ray retries nothing itself: a chunk whose worker died is
reported lost and the campaign decides whether to submit it again (and counts it).

A local Ray is started by ``sweep.rayhead`` so that it dies with the driver, even a
SIGKILLed one; if it stops during the run (a killed raylet or agent), :meth:`finished`
raises ``ExecutorLost`` and the campaign stops at once with the results kept (exit 5).  No
task is ever cancelled: ``ray.cancel`` on a task whose reply may be arriving can crash Ray
2.60's core worker (PLATFORM.md); a stopping campaign abandons its pending chunks instead.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time

from omegaconf import DictConfig

from sweep import interrupt, worker
from sweep.campaign import ExecutorLost, Interrupted, check_stop
from sweep.outdir import SweepDir
from sweep.rayhead import WATCH_S, LocalHead, RayLost, ray_temp_dir
from sweep.store import DiskFault, filesystem_problem

RAY_TEMP_ROOM = 1 << 20     # below this, a local Ray cannot even write its session's logs


class RayExecutor:
    """Starts a private local Ray (``sweep.rayhead``) or joins a cluster on first use, and
    connects the driver; at the end disconnects and stops the local Ray.

    Ray is imported here, not at module level: a local Ray must listen on loopback only,
    and Ray reads that choice (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) when first imported
    (PLATFORM.md).  A driver joining a cluster keeps its routable address."""

    name = "ray"

    def __init__(self, ray_cfg: DictConfig, sweep_dir: SweepDir):
        self.cfg, self.sweep_dir = ray_cfg, sweep_dir
        self.out = sys.stderr
        self.cpus: int | None = None
        self.max_in_flight = 0
        self.ray = self._task = None
        self.head: LocalHead | None = None
        self._connected = False
        self._pending: set = set()
        self._cluster: ClusterWatch | None = None     # a joined cluster's head, watched
        self._head_since = 0.0                        # when prepare spawned the head

    # --- the executor interface (sweep.campaign.Executor) ---------------------------------

    def prepare(self) -> None:
        """Spawn the local Ray's head now, so it boots (~10 s on 2 cores) while the campaign
        calibrates; ``start`` waits for it.  Nothing here when joining a cluster, when Ray
        is up already, or when the head cannot start now (``start`` then tries, and says why)."""
        if self.head is not None or self.ray is not None or self.cfg.address or os.environ.get("RAY_ADDRESS"):
            return
        try:
            if _import_ray(local=True).is_initialized():      # (in-process tests bring their own Ray)
                return
            _check_ray_temp_dir()
            self.head = LocalHead(self.cfg.num_cpus, self.sweep_dir.path / "ray-head.log")
            self._head_since = time.monotonic()
        except Exception:
            self.head = None

    def start(self, out) -> None:
        interrupt.checkpoint("ray-start")
        self.out = out
        if self.ray is not None:
            return
        address = self.cfg.address or os.environ.get("RAY_ADDRESS")
        ray = _import_ray(local=address is None)
        check_stop()
        if not ray.is_initialized():      # (in-process tests bring their own Ray)
            started = self._head_since if self.head is not None else time.monotonic()
            if address is None:
                address = self._start_head()
            _connect(ray, address)
            interrupt.install()           # ray.init installs its own SIGTERM handler
            self._connected = True
            where = "started a local Ray" if self.head else f"joined Ray at {address}"
            print(f"{where} in {time.monotonic() - started:.1f}s", file=self.out)
        self.ray = ray
        if self.head is None and self._connected:
            self._cluster = ClusterWatch(ray.get_runtime_context().gcs_address)
        # SPREAD: chunks go to every node from the start, instead of piling onto the driver's
        # node while the other nodes' worker processes are still starting (no effect on one node).
        # Ray retries nothing itself (max_retries=0): the campaign does, and counts it.
        self._task = ray.remote(num_cpus=1)(worker.run_chunk_in_ray_worker).options(
            max_retries=0, scheduling_strategy="SPREAD", name="run_chunk")
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = self.cfg.max_in_flight or 2 * self.cpus
        check_stop()

    def submit(self, items: list[dict]):
        ref = self._task.remote(items)
        self._pending.add(ref)
        return ref

    def finished(self, timeout: float):
        ready, _ = self.ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout,
                                 fetch_local=False)
        for ref in ready:
            self._pending.discard(ref)
            try:
                results = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError:
                raise                       # run_chunk catches every workload's exception: a bug
            except self.ray.exceptions.RayError as err:   # worker died, node gone, ...
                self._check(settle=True)    # a dead Ray is not a dead worker: stop, report nothing
                yield ref, None, f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                continue
            yield ref, results, None
        self._check()

    def record(self) -> dict:
        return {"executor": self.name, "ray_cpus": self.cpus}

    def kill(self) -> None:
        if self.head is not None:
            self.head.kill()

    def close(self) -> None:
        self._pending.clear()               # abandoned, never cancelled
        if self._connected:
            self._connected = False
            if self.head is None or self.head.proc.poll() is None:
                self.ray.shutdown()     # disconnect (after a lost Ray there is nothing to leave)
        if self.head is not None:
            self.head.close()
            self.head = None
            try:
                self.sweep_dir.update_meta(ray_head=None)
            except DiskFault:
                pass    # a read-only folder: the campaign's own record says so; the pids are dead


    # --- the local Ray --------------------------------------------------------------------

    def _start_head(self) -> str:
        if self.head is None:             # (else prepare spawned it)
            _check_ray_temp_dir()
            self.head = LocalHead(self.cfg.num_cpus, self.sweep_dir.path / "ray-head.log")
        interrupt.checkpoint("ray-starting")
        try:
            ready = self.head.wait_ready(interrupt.stop_requested)
        except RayLost as err:
            _check_ray_temp_dir()
            raise ExecutorLost(str(err)) from None
        if not ready:
            raise Interrupted
        self.sweep_dir.update_meta(ray_head={"pid": self.head.proc.pid, "pids": self.head.pids})
        return self.head.address

    def _check(self, settle: bool = False) -> None:
        """Raise ``ExecutorLost`` when the local Ray stopped, or a joined cluster's head (a lost
        worker node is Ray's to heal: its chunks come back lost and are re-run).
        ``settle``: a task just failed; give the head's watchdog time to notice a dead Ray."""
        if self._cluster is not None and not self._cluster.answers():
            self._connected = False     # ray.shutdown() would wait for the dead GCS
            raise ExecutorLost(f"the Ray cluster's head at {self._cluster.address} stopped answering "
                               f"(its GCS refuses connections)")
        if self.head is None:
            return
        if settle:
            time.sleep(3 * WATCH_S)
        try:
            self.head.check()
        except RayLost as err:
            _check_ray_temp_dir()           # a full temp folder is the likely cause: say so
            raise ExecutorLost(str(err)) from None


class ClusterWatch:
    """Whether a joined cluster's GCS still accepts connections.  Without it a driver whose
    head node died waits in ``ray.wait`` until Ray's own GCS timeout (a minute) ends the
    process with a C++ stack; a TCP connect tells in milliseconds (a refused port at once,
    a vanished host after TRIES timeouts)."""

    EVERY_S, TIMEOUT_S, TRIES = 0.5, 1.0, 3

    def __init__(self, address: str):
        self.address = address
        host, _, port = address.rpartition(":")
        self._where = (host, int(port))
        self._next, self._failures = 0.0, 0

    def answers(self) -> bool:
        if time.monotonic() < self._next:
            return True
        self._next = time.monotonic() + self.EVERY_S
        try:
            socket.create_connection(self._where, timeout=self.TIMEOUT_S).close()
            self._failures = 0
        except ConnectionRefusedError:
            self._failures = self.TRIES
        except OSError:
            self._failures += 1
        return self._failures < self.TRIES


def _check_ray_temp_dir() -> None:
    """Raise ``DiskFault`` naming Ray's temp folder when its filesystem is full or read-only
    (set RAY_TMPDIR to move it)."""
    folder = ray_temp_dir()
    problem = filesystem_problem(folder, room=RAY_TEMP_ROOM)
    if problem:
        raise DiskFault(f"{folder} (Ray's temp folder; RAY_TMPDIR moves it)", problem)


def _connect(ray, address: str, tries: int = 3) -> None:
    """``ray.init`` to ``address``; a busy GCS can time out a first connection, so try again."""
    for attempt in range(tries):
        try:
            # log_to_driver=False: run_chunk reports every failure itself; Ray's forwarded
            # worker and raylet chatter would bury the one-line messages
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        except ConnectionError as err:
            if attempt == tries - 1:
                raise ExecutorLost(f"cannot connect to Ray at {address}: {err}") from None
            time.sleep(2.0)
            check_stop()


def _import_ray(local: bool):
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # loopback only
        os.environ.setdefault("RAY_AUTH_MODE", "token")   # Ray's default, minus its warning
    import ray

    return ray
