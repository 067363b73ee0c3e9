"""A real ``mlflow server`` / ``mlflow ui`` on loopback for the tracking and UI tests,
with PLATFORM.md's fast settings (one worker, no job execution)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(workdir: Path, command: str = "server", backend: str | None = None):
    """Start ``mlflow <command>`` in ``workdir``; yields its URL; stops it (and only it).

    ``mlflow server`` gets a sqlite store and proxied artifacts under ``workdir``; plain
    ``mlflow ui`` gets no store option, so it reads ./mlflow.db as a user's would."""
    port = free_port()
    args = [str(MLFLOW), command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if backend or command == "server":
        args += ["--backend-store-uri", backend or f"sqlite:///{workdir / 'mlflow.db'}"]
    if command == "server":
        args += ["--artifacts-destination", str(workdir / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = ServerProcess(args, env, workdir, workdir / f"mlflow-{command}.log", f"http://127.0.0.1:{port}")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class ServerProcess:
    """One server process group that this test session started: started, stopped or killed
    by its own pid, and startable again on the same port (as a pod behind its Service)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, url: str):
        self.argv, self.env, self.cwd, self.log, self.url = argv, env, cwd, log, url
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)   # its own group: workers stop with it
        try:
            _wait_healthy(self.url, self.proc, self.log, timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM (what a pod gets first), SIGKILL after 20 s."""
        if self.proc is not None:
            _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL to the whole group at once, as when a container is OOM-killed or its node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
