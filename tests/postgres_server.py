"""The Kubernetes tracking path on loopback: a throwaway PostgreSQL cluster with the role and
database k8s/mlflow.yaml's StatefulSet creates, and ``mlflow server`` started with the
command line and environment of that manifest's Deployment.

What is changed for a machine without a cluster, and nothing else:
- PostgreSQL: the postgres:17 image's entrypoint becomes Debian's ``initdb`` + ``pg_ctl``
  (``initdb -U <POSTGRES_USER> --pwfile``, then ``createdb <POSTGRES_DB>``, which is what
  the image's entrypoint does), listening on 127.0.0.1 at a free port, in a temporary folder.
- the Secret ``mlflow-postgres``: a fresh hex password (as docs/kubernetes.md makes one);
- ``mlflow-postgres:5432`` in the backend URI -> 127.0.0.1:<port>;
- ``--host 0.0.0.0 --port 5000`` -> 127.0.0.1 and a free port;
- the artifact volume's mount path -> a temporary folder; ``mlflow`` -> this venv's.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from k8s_manifests import K8S, find, literal_env, load_objects, substitute
from mlflow_server import ServerProcess, free_port

MANIFEST = K8S / "mlflow.yaml"
PG_OS_USER = "postgres"        # Debian's postgresql package creates it; the server refuses root
INSTALL_HINT = "install Debian's PostgreSQL: `make system-deps` (apt-get install postgresql)"
# Set here, they would change what the server does; its pod has none of them.
NOT_IN_A_POD = ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_SERVER_ALLOWED_HOSTS",
                "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed or would not start; the message says why."""


# --- what the manifest asks for -------------------------------------------------------------


def manifest_objects() -> list[dict]:
    return load_objects([MANIFEST])


def mlflow_container(objects: list[dict]) -> dict:
    deployment, = find(objects, "Deployment", "mlflow")
    container, = deployment["spec"]["template"]["spec"]["containers"]
    return container


def postgres_env(objects: list[dict]) -> dict[str, str]:
    statefulset, = find(objects, "StatefulSet", "mlflow-postgres")
    container, = statefulset["spec"]["template"]["spec"]["containers"]
    return literal_env(container)


def password_secret(container: dict) -> tuple[str, str]:
    """(variable, Secret name) of the env entry that takes the password from a Secret."""
    entry, = [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    return entry["name"], entry["valueFrom"]["secretKeyRef"]["name"]


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    user: str
    database: str
    password: str
    data: Path
    host: str = "127.0.0.1"

    def pid(self) -> int:
        """The postmaster's pid (first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


def bindir() -> Path:
    """Debian's server binaries (/usr/lib/postgresql/<major>/bin, newest major), else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(f"no initdb found; {INSTALL_HINT}")


@contextlib.contextmanager
def postgres(user: str, database: str, password: str):
    """A new PostgreSQL cluster on 127.0.0.1 at a free port with ``user`` as its bootstrap
    superuser (password auth, as the postgres image sets it up) and ``database`` owned by it.
    Yields a Postgres; at exit stops the server and removes every file."""
    bin_ = bindir()
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="kmemcg-pg-", dir="/tmp"))
    as_server_user = _server_user(root)
    data, log = root / "data", root / "server.log"
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        _own(pwfile)
        _run(as_server_user + [str(bin_ / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                               "--auth=scram-sha-256", "-E", "UTF8", "--no-locale",
                               "--no-sync"],   # throwaway cluster: skip initdb's fsyncs (seconds)
             root, "initdb")
        pwfile.unlink()
        port = _start(bin_, as_server_user, data, log, root)
        pg = Postgres(port, user, database, password, data)
        _run([str(bin_ / "createdb"), "-h", pg.host, "-p", str(port), "-U", user, database], root, "createdb",
             env={**_clean(os.environ), "PGPASSWORD": password})
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            # immediate: no shutdown checkpoint, the files are deleted next
            subprocess.run(as_server_user + [str(bin_ / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           cwd=root, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _server_user(root: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's binaries as an unprivileged user: postgres
    refuses to run as root, so root hands ``root`` to the postgres user and uses runuser."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise PostgresUnavailable(f"running as root and there is no {PG_OS_USER!r} user; {INSTALL_HINT}") from None
    _own(root)
    return ["runuser", "-u", PG_OS_USER, "--"]


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _start(bin_: Path, prefix: list[str], data: Path, log: Path, cwd: Path, attempts: int = 3) -> int:
    """pg_ctl start on a free loopback port, TCP only (no Unix socket to clash with anyone);
    retried on a new port if another process took the port between our probe and the bind."""
    for _ in range(attempts):
        port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
        done = subprocess.run(prefix + [str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                        "-w", "-t", "60", "start"], cwd=cwd, capture_output=True, text=True,
                              timeout=90)
        if done.returncode == 0:
            return port
        text = log.read_text() if log.exists() else ""
        if "could not bind" not in text and "Address already in use" not in text:
            break
    raise PostgresUnavailable(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n{text[-3000:]}")


def _run(argv: list[str], cwd: Path, what: str, env: dict | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}")


def _clean(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in NOT_IN_A_POD}


# --- mlflow server, as the Deployment runs it ---------------------------------------------------


@dataclass
class ManifestServer:
    """The manifest's MLflow server on the local PostgreSQL; ``server`` restarts on its port."""
    server: ServerProcess
    postgres: Postgres
    artifacts: Path
    argv: list[str]
    env: dict[str, str]           # the container's env as resolved here (incl. the password)

    @property
    def url(self) -> str:
        return self.server.url


def server_command(pg: Postgres, workdir: Path, port: int) -> tuple[list[str], dict[str, str], Path]:
    """argv, env and artifact folder of the Deployment's ``mlflow`` container, localized."""
    container = mlflow_container(manifest_objects())
    argv = [str(a) for a in container["command"] + container["args"]]
    argv[0] = str(Path(sys.executable).parent / argv[0])            # the venv's mlflow
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    # --workers stays the manifest's (1, which test_k8s.py holds it to): every worker is a whole
    # server process of ~0.5 GB, and a second one would only compete for this machine's 2 cores.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    where = argv.index("--artifacts-destination") + 1
    artifacts = workdir / mounts[argv[where]]                       # the volume -> a folder here
    artifacts.mkdir()
    argv[where] = str(artifacts)
    return argv, _container_env(container, pg), artifacts


def _container_env(container: dict, pg: Postgres) -> dict[str, str]:
    """The container's env in order, $(VAR)s resolved as the kubelet does, the Secret's
    value the local password and the backend's host:port the local PostgreSQL."""
    secret_var, _ = password_secret(container)
    resolved: dict[str, str] = {}
    for entry in container["env"]:
        if entry["name"] == secret_var:
            resolved[secret_var] = pg.password
        elif "value" in entry:
            resolved[entry["name"]] = substitute(entry["value"], resolved)
    backend = urlsplit(resolved["MLFLOW_BACKEND_STORE_URI"])
    netloc = f"{backend.username}:{backend.password}@{pg.host}:{pg.port}"
    resolved["MLFLOW_BACKEND_STORE_URI"] = urlunsplit(backend._replace(netloc=netloc))
    return {**_clean(os.environ), **resolved}


@contextlib.contextmanager
def manifest_mlflow_on_postgres(workdir: Path):
    """PostgreSQL with the StatefulSet's role and database, and the Deployment's mlflow server
    on it; yields a ManifestServer; stops both and removes their files."""
    objects = manifest_objects()
    pg_env = postgres_env(objects)
    user, database = pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]
    # hex, as docs/kubernetes.md makes the Secret: it goes into the URL unescaped
    with postgres(user, database, secrets.token_hex(24)) as pg:
        port = free_port()
        argv, env, artifacts = server_command(pg, workdir, port)
        backend = urlsplit(env["MLFLOW_BACKEND_STORE_URI"])
        if (backend.username, backend.path.lstrip("/")) != (user, database):
            raise AssertionError(f"the Deployment's backend URI {backend.username}@{backend.path} does not "
                                 f"name the StatefulSet's POSTGRES_USER/POSTGRES_DB {user}/{database}")
        server = ServerProcess(argv, env, workdir, workdir / "mlflow-server.log", f"http://127.0.0.1:{port}")
        server.start(timeout=240)        # the first start creates MLflow's schema in PostgreSQL
        try:
            yield ManifestServer(server, pg, artifacts, argv, env)
        finally:
            server.stop()
