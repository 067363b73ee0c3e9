"""The sweep folder: where results, the resolved config and the run record live.

    <output.dir>/results.sqlite   results store (sweep.store)
    <output.dir>/config.yaml      the resolved config
    <output.dir>/sweep.json       name, model version, git commit, host, Ray CPUs, times, counts
    <output.dir>/claims.yaml      the claims registry the config named (sweep.claims)
    <output.dir>/analysis/        the statistics of the stored results, computed once (sweep.analysis)
    <output.dir>/report/          the report (sweep.report); MLflow (sweep.tracking) logs it
    <output.dir>/shard-i-of-N/    the same three files for one shard (--shard i/N);
                                  ``merge_shards`` folds them into the top folder
    <output.dir>/.space-reserve   64 KiB set aside by a run, given up when the disk is full so
                                  that sweep.json can still tell the truth
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweep import config as sweep_config
from sweep.claims import CLAIMS_FILE
from sweep.store import DiskFault, Store, disk_fault

RESERVE_BYTES = 64 << 10    # room for sweep.json (~1 kB) on a full disk, in any block size


class SweepBusy(RuntimeError):
    """Another driver is running in this sweep folder."""


class SweepDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    results = property(lambda self: self.path / "results.sqlite")
    config = property(lambda self: self.path / "config.yaml")
    meta = property(lambda self: self.path / "sweep.json")
    claims = property(lambda self: self.path / CLAIMS_FILE)
    analysis_dir = property(lambda self: self.path / "analysis")
    report_dir = property(lambda self: self.path / "report")

    @classmethod
    def of(cls, folder: "SweepDir | str | Path") -> "SweepDir":
        """A SweepDir as it is, or the one of a path."""
        return folder if isinstance(folder, SweepDir) else cls(folder)

    @classmethod
    def for_config(cls, cfg: DictConfig, shard=None) -> "SweepDir":
        path = Path(cfg.output.dir)
        return cls(path / shard.label if shard else path)

    def check_usable(self) -> None:
        """Refuse (exit 2, before anything starts) a path that cannot become the sweep folder:
        an existing file, a path under a file, a folder we cannot write.  Creates nothing."""
        path = self.path
        existing = next(p for p in (path, *path.parents) if p.exists())
        if existing == path and not path.is_dir():
            raise sweep_config.ConfigError(f"output.dir: {path} is an existing file; allowed: a folder "
                                           f"(new, or the folder of an earlier run)")
        if not existing.is_dir():
            raise sweep_config.ConfigError(f"output.dir: {path}: {existing} is a file, so no folder can be "
                                           f"made under it; allowed: a path under a writable folder")
        try:    # a nameless file (O_TMPFILE): the real test, for root too, and it leaves nothing
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as err:
            raise sweep_config.ConfigError(f"output.dir: {path}: cannot write in {existing} ({err.strerror}); "
                                           f"allowed: a path under a writable folder") from None

    @contextlib.contextmanager
    def lock(self):
        """Exclusive use of the folder; the OS drops the lock when the driver dies."""
        try:   # check_usable() ran first; this catches what access(2) cannot see (e.g. /proc)
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+")
        except OSError as err:
            raise sweep_config.ConfigError(f"output.dir: {self.path}: cannot create the sweep folder "
                                           f"({err.strerror})") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SweepBusy(f"{self.path}: another sweep is running in this folder") from None
            yield

    def write_config(self, cfg: DictConfig) -> None:
        try:
            _write_atomic(self.config, sweep_config.to_yaml(cfg))
        except OSError as err:
            raise disk_fault(err, self.config) or err from err

    def read_config(self, overrides: list[str] = ()) -> DictConfig:
        """config.yaml as the run wrote it; with ``key=value`` overrides, checked like a new
        config (``python -m sweep report DIR stats.alpha=0.01``)."""
        if overrides:
            return sweep_config.load(self.config, overrides)
        return sweep_config.from_yaml_file(self.config)

    def config_dict(self, cfg=None) -> dict:
        """The config as plain data: ``cfg`` (a DictConfig or mapping, e.g. config.yaml with
        command-line overrides) resolved, else config.yaml as the run wrote it ({} if none)."""
        if cfg is None:
            if not self.config.exists():
                return {}
            cfg = OmegaConf.load(self.config)
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)

    def read_meta(self) -> dict:
        return json.loads(self.meta.read_text()) if self.meta.exists() else {}

    def update_meta(self, **fields) -> dict:
        """Atomic (temp file + rename): a killed driver or a full disk never leaves half a
        file.  On a full disk the space reserve is given up and the write tried once more;
        when that fails too, :class:`DiskFault` (sweep.json is then as it was)."""
        meta = self.read_meta() | fields
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        try:
            _write_atomic(self.meta, text)
        except OSError as err:
            if not self.release_reserve():
                raise disk_fault(err, self.meta) or err from err
            try:
                _write_atomic(self.meta, text)
            except OSError as again:
                raise disk_fault(again, self.meta) or again from again
        return meta

    @property
    def reserve(self) -> Path:
        return self.path / ".space-reserve"

    def keep_reserve(self) -> None:
        """Set :data:`RESERVE_BYTES` aside (best effort: a disk already full just has none)."""
        if self.reserve.exists():
            return
        try:
            with open(self.reserve, "wb") as handle:
                handle.write(bytes(RESERVE_BYTES))      # real blocks, not a sparse file
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        try:
            self.reserve.unlink()
            return True
        except OSError:
            return False

    def shard_dirs(self) -> list["SweepDir"]:
        return [SweepDir(p) for p in sorted(self.path.glob("shard-*-of-*")) if (p / "results.sqlite").exists()]

    def merge_shards(self) -> int:
        """Fold every shard's results into this folder's store; returns the rows copied."""
        shards = self.shard_dirs()
        if not shards:
            return 0
        copied = 0
        with Store(self.results) as store:
            for shard in shards:
                copied += store.merge_from(shard.results)
            counts = {"workloads": store.count(), "ok": store.count("ok"), "errors": store.count("error")}
        if not self.config.exists():
            self.config.write_text(shards[0].config.read_text())
        metas = [s.read_meta() for s in shards]
        self.update_meta(**{k: metas[0].get(k) for k in ("name", "model_version", "git_commit", "host")},
                         shards=[s.path.name for s in shards], counts=counts,
                         ray_cpus=sum(m.get("ray_cpus") or 0 for m in metas) or None,   # shards ran side by side
                         started=min((m.get("started") or "") for m in metas) or None,
                         finished=max((m.get("finished") or "") for m in metas) or None,
                         status="merged")
        return copied


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):      # (a read-only filesystem may refuse even this)
            tmp.unlink(missing_ok=True)
        raise


def run_record() -> dict:
    """Where and from what code this sweep runs."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "git_commit": git_commit()}


def git_commit() -> str | None:
    """HEAD of the source tree this package runs from (+ "-dirty"), or None outside git."""
    source = Path(__file__).resolve().parent.parent
    try:
        head = _git(source, "rev-parse", "HEAD")
        dirty = _git(source, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
