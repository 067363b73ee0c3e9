"""The sweep's private local Ray, started so that it cannot outlive the driver.

``ray.init()`` in the driver would make Ray's GCS, raylet and agents the driver's children in
the driver's process group: a terminal's Ctrl-C reaches them too, and after a ``kill -9`` of
the driver they linger for a minute.  Instead the driver starts ``python -m sweep.rayhead``
in a session of its own; this process starts the local Ray (``ray.init(address="local")``:
its GCS, raylet and agents join this process group; workers die with their raylet), prints
one JSON line ``{"address", "pids"}`` and then waits on stdin.  Stdin reaches EOF when the
driver closes it or dies in any way, and the whole group is killed at once.  A watchdog ends
the group as well when one of Ray's own processes dies (e.g. the runtime-env agent was
killed), printing ``{"lost": reason}`` first, so the driver stops instead of marking
thousands of workloads "lost" against a dead Ray.

The driver side (``LocalHead``) never imports Ray; the Ray executor (sweep.runner) connects
with ``ray.init(address=head.address)``.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

WATCH_S = 0.2


class RayLost(RuntimeError):
    """The local Ray stopped (or never started); the message says why."""


class LocalHead:
    """Driver side: start the head process, wait for its address, close it."""

    STARTS = 3      # Ray gives a raylet 30 s to register (node.py): a busy machine can miss that

    def __init__(self, num_cpus: int | None, log_path: Path):
        self.log_path = log_path
        self.args = [sys.executable, "-m", "sweep.rayhead", str(num_cpus or 0)]
        self.proc = self._spawn()
        self.address: str | None = None
        self.pids: list[list[int]] = []   # [pid, start time] of Ray's own processes

    def _spawn(self) -> subprocess.Popen:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                    start_new_session=True, env=_loopback_env())

    def wait_ready(self, stop) -> bool:
        """Read the address line; False when ``stop()`` turned true first (nothing connected)."""
        for start in range(self.STARTS):
            if start:
                self.kill()
                self.proc.wait()
                self.proc = self._spawn()
            ready = self._wait_once(stop)
            if ready is not None:
                return ready
            if "timed out during startup" not in self._last_log_line():
                break
        raise RayLost(f"the local Ray did not start (see {self.log_path}): {self._last_log_line()}")

    def _wait_once(self, stop) -> bool | None:
        """True: ready; False: stopped; None: the head exited without starting Ray."""
        while True:
            if stop():
                return False
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    return None
                info = _message(line)
                if "address" in info:
                    self.address, self.pids = info["address"], info["pids"]
                    return True

    def check(self) -> None:
        """Raise :class:`RayLost` when the head process ended (Ray's processes died)."""
        if self.proc.poll() is None:
            return
        reason = "the head process exited"
        for line in self.proc.stdout:
            reason = _message(line).get("lost", reason)
        raise RayLost(f"the local Ray stopped: {reason}")

    def kill(self) -> None:
        """At once, from anywhere (a second Ctrl-C's last words): Ray's processes and the head."""
        kill_tree(self.proc.pid)

    def close(self) -> None:
        """EOF on the head's stdin: it kills its process group (Ray's processes) and exits.
        A head still inside ``ray.init`` reads no stdin: it is killed at once."""
        if self.address is None:
            self.kill()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self.proc.wait()

    def _last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"


def ray_temp_dir() -> Path:
    """The folder a local Ray keeps its session in (logs, sockets, spilled objects), chosen
    as Ray chooses it (``ray._common.utils.get_default_ray_temp_dir``): $RAY_TMPDIR, else
    $TMPDIR, else /tmp; then ``ray/``."""
    return Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / "ray"


def _message(line: bytes) -> dict:
    """One line of the head's stdout: our JSON messages, or Ray's own chatter (ignored)."""
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _loopback_env() -> dict:
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # GCS, raylet on 127.0.0.1 (PLATFORM.md)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


# --- processes (Linux /proc) ------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), None when gone or a zombie:
    with the pid it names one process, even after the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else int(fields[19])


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return members


def kill_tree(pid: int) -> None:
    """``pid``'s process group and every process below it: Ray's workers run in process
    groups of their own, and one still starting up can outlive its raylet for a minute."""
    below = descendants(pid)
    for child in below:
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    kill_group(pid)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_leftovers(pids: list[list[int]]) -> int:
    """Kill the recorded processes (``[pid, start time]``) that still run; returns how many."""
    stopped = 0
    for pid, started in pids:
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                stopped += 1
            except ProcessLookupError:
                pass
    return stopped


# --- the head process -----------------------------------------------------------------


def main(num_cpus: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # only the driver decides; EOF ends us
    import ray

    ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    signal.signal(signal.SIGTERM, lambda *_: _end(0))
    me = os.getpid()
    pids = [[pid, start_time(pid)] for pid in group_members(me) if pid != me]
    pids = [p for p in pids if p[1] is not None]
    print(json.dumps({"address": ray.get_runtime_context().gcs_address, "pids": pids}), flush=True)
    names = {pid: _name(pid) for pid, _ in pids}
    threading.Thread(target=_watch, args=(pids, names), daemon=True).start()
    sys.stdin.buffer.read()      # until the driver closes it or dies
    _end(0)


def _watch(pids: list[list[int]], names: dict[int, str]) -> None:
    while True:
        time.sleep(WATCH_S)
        dead = [f"{names[pid]} (pid {pid})" for pid, started in pids if start_time(pid) != started]
        if dead:
            print(json.dumps({"lost": f"Ray's {', '.join(dead)} exited"}), flush=True)
            _end(1)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "a Ray process"
    except OSError:
        return "a Ray process"


def _end(code: int) -> None:
    sys.stdout.flush()
    kill_tree(os.getpid())       # Ray's processes, its workers and this one
    os._exit(code)


if __name__ == "__main__":
    main(int(sys.argv[1]))
