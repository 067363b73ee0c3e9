"""The results store: one SQLite file (WAL mode) per sweep folder.

Tables:
  results  one row per workload run, primary key = the workload key (sha256 of normalised
           spec incl. design, seed, model version), every metric a REAL column;
  plan     the keys the latest run of this folder asked for.  ``dataframe()`` shows the
           planned rows only, so rows cached from an earlier grid stay reusable (changing
           an axis back costs nothing) without leaking into this sweep's statistics.

Each ``put`` is one transaction, so a driver killed mid-write loses at most that chunk.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from sweep.config import CELL_AXES

HASH_METRICS = ("request_hash_lo", "request_hash_hi")
ID_COLUMNS = ("cell_id", "design", "replication", "seed", "status", "error")
AXIS_COLUMNS = CELL_AXES
INFO_COLUMNS = ("elapsed_s", "worker", "model_version", "finished_at")
_SQL_TYPES = {"block": "TEXT", "allocator": "TEXT", "replication": "INTEGER", "seed": "INTEGER", "order": "INTEGER", "nodes": "INTEGER",
              "cpus": "INTEGER", "fragment": "REAL", "limit": "REAL", "high": "REAL", "elapsed_s": "REAL", "finished_at": "REAL"}


class StoreDamaged(ValueError):
    """results.sqlite is not a readable SQLite database (truncated, overwritten, ...)."""


# what a write can meet on a filesystem that is full or read-only (docs/sweep.md, exit 6)
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class DiskFault(RuntimeError):
    """A file the sweep writes could not be written: its filesystem is full or read-only
    (or the folder is not ours to write).  ``path`` names the file or folder."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def disk_fault(err: BaseException, path=None) -> DiskFault | None:
    """``err`` as a :class:`DiskFault` when a full or read-only filesystem caused it, else None.

    OSErrors carry their errno; SQLite (``database or disk is full``, ``disk I/O error``) and
    Arrow (``Error writing bytes``) errors do not, so their filesystem is looked at: call this
    before cleaning up, while the space the failed write took is still taken."""
    if isinstance(err, DiskFault):
        return err
    where = getattr(err, "filename", None) or path
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        return DiskFault(where or "?", f"{os.strerror(err.errno).lower()} ({errno.errorcode[err.errno]})")
    if isinstance(err, (OSError, sqlite3.OperationalError)) and where is not None:
        problem = filesystem_problem(Path(where))
        if problem:
            return DiskFault(where, problem)
    return None


def filesystem_problem(path: Path, room: int = 64 << 10) -> str | None:
    """Why nothing more can be written under ``path``: a read-only or (all but) full filesystem."""
    folder = next((p for p in (path, *path.parents) if p.is_dir()), None)
    if folder is None:
        return None
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "read-only file system (EROFS)"
    if fs.f_bavail * fs.f_frsize < room:
        return "no space left on device (ENOSPC)"
    return _cannot_create_in(folder)


def _cannot_create_in(folder: Path) -> str | None:
    """Try: a filesystem turned read-only by an error (ext4's errors=remount-ro sets
    ``emergency_ro``) fails every write with EROFS while statvfs still calls it writable."""
    probe = folder / f".probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.unlink(probe)
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            return f"{os.strerror(err.errno).lower()} ({errno.errorcode[err.errno]})"
    return None


def metric_names() -> tuple[str, ...]:
    from core.metrics import METRICS

    return tuple(METRICS) + HASH_METRICS


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            self._create_tables()

    @contextlib.contextmanager
    def _writing(self):
        """A full or read-only filesystem becomes a :class:`DiskFault` naming the store.
        SQLite rolls the failed transaction back: every row stored before stays intact."""
        try:
            yield
        except (OSError, sqlite3.OperationalError) as err:
            fault = disk_fault(err, self.path)
            if fault is None:
                raise
            raise DiskFault(self.path, fault.problem) from err

    @staticmethod
    def check(path: str | Path) -> None:
        """Raise :class:`StoreDamaged` unless ``path`` is absent or an intact SQLite database.
        ``quick_check`` reads every page (~10 ms per MB) but skips the index cross-checks."""
        path = Path(path)
        if not path.exists():
            return
        try:
            db = sqlite3.connect(path, timeout=30)
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                db.execute("SELECT COUNT(*) FROM results").fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError as err:
            verdict = str(err)
        if verdict != "ok":
            raise StoreDamaged(damaged_message(path, verdict))

    @staticmethod
    def remove(path: str | Path) -> None:
        """Delete a store and its WAL side files (``--fresh``)."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------------

    def put(self, rows: Iterable[Mapping]) -> int:
        """Insert or replace result rows (dicts keyed by column name) in one transaction."""
        rows = list(rows)
        if not rows:
            return 0
        self._add_missing_columns({name for row in rows for name in row})
        columns = sorted({name for row in rows for name in row})
        sql = (f"INSERT OR REPLACE INTO results ({', '.join(map(_quote, columns))}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        with self._writing(), self._db:
            self._db.executemany(sql, [[row.get(c) for c in columns] for row in rows])
        return len(rows)

    def set_plan(self, keys: Iterable[str], replace: bool = True) -> None:
        with self._writing(), self._db:
            if replace:
                self._db.execute("DELETE FROM plan")
            self._db.executemany("INSERT OR IGNORE INTO plan (key) VALUES (?)", ((k,) for k in keys))

    def merge_from(self, other: str | Path) -> int:
        """Copy every result and plan entry of another store (a shard) into this one."""
        with Store(other) as source:
            rows = source._rows("SELECT * FROM results")
            keys = [k for (k,) in source._db.execute("SELECT key FROM plan")]
        self.put(rows)
        self.set_plan(keys, replace=False)
        return len(rows)

    # --- reading ----------------------------------------------------------------------

    def keys(self, status: str | None = None) -> set[str]:
        """Stored workload keys (optionally only those with ``status``)."""
        if status is None:
            cursor = self._db.execute("SELECT key FROM results")
        else:
            cursor = self._db.execute("SELECT key FROM results WHERE status = ?", (status,))
        return {key for (key,) in cursor}

    def count(self, status: str | None = None, planned_only: bool = True) -> int:
        where = ["key IN (SELECT key FROM plan)"] if planned_only else []
        args = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT COUNT(*) FROM results" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._db.execute(sql, args).fetchone()[0]

    def errors(self, limit: int = 5) -> list[tuple[str, str, str]]:
        """(cell_id, design, error) of planned error rows, first ``limit``."""
        return self._db.execute(
            "SELECT cell_id, design, error FROM results WHERE status = 'error' "
            "AND key IN (SELECT key FROM plan) ORDER BY cell_id, design LIMIT ?", (limit,)).fetchall()

    def dataframe(self, all_rows: bool = False, cells: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per workload: ids, grid-axis columns, one column per metric.

        Only this sweep's planned workloads unless ``all_rows``, only the ``cells`` given
        (None: all); sorted by cell, design, replication so two stores with the same results
        give equal frames.  Metric columns are floats even where every value is NULL (a
        cell read alone then looks as it does in the whole frame)."""
        where = [] if all_rows else ["key IN (SELECT key FROM plan)"]
        args: list[str] = []
        if cells is not None:
            args = list(cells)
            where.append(f"cell_id IN ({', '.join('?' * len(args))})")
        sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        frame = pd.read_sql_query(sql, self._db, params=args)
        ordered = [*ID_COLUMNS, *AXIS_COLUMNS, *metric_names(), *INFO_COLUMNS, "key"]
        for name in ordered:
            if name not in frame.columns:
                frame[name] = pd.NA
        for name in metric_names():
            if frame[name].dtype == object:
                frame[name] = pd.to_numeric(frame[name]).astype(float)
        extra = [c for c in frame.columns if c not in ordered]
        frame = frame[ordered + extra]
        return frame.sort_values(["cell_id", "design", "replication"], ignore_index=True)

    def to_parquet(self, path: str | Path, all_rows: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.dataframe(all_rows=all_rows).to_parquet(path, index=False)
        return path

    # --- schema -----------------------------------------------------------------------

    def _create_tables(self) -> None:
        columns = [*ID_COLUMNS, *AXIS_COLUMNS, *INFO_COLUMNS]
        defs = ", ".join(f"{_quote(c)} {_SQL_TYPES.get(c, 'TEXT')}" for c in columns)
        with self._db:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, {defs})")
            self._db.execute("CREATE TABLE IF NOT EXISTS plan (key TEXT PRIMARY KEY)")
        self._add_missing_columns(set(metric_names()))

    def _add_missing_columns(self, names: set[str]) -> None:
        """Metric columns follow core.METRICS; a metric added to the model adds a column."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
        with self._writing(), self._db:
            for name in sorted(names - have):
                self._db.execute(f"ALTER TABLE results ADD COLUMN {_quote(name)} {_SQL_TYPES.get(name, 'REAL')}")

    def _rows(self, sql: str, args=()) -> list[dict]:
        cursor = self._db.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor]


def damaged_message(path: Path, problem: str) -> str:
    return (f"{path}: the results store is damaged ({problem.splitlines()[0][:200]}); no row in it can be "
            f"trusted as is. SQLite can often copy the readable rows into a new file (sqlite3 {path} .dump, "
            f"see docs/sweep.md \"A damaged store\"); or start afresh: rerun the sweep with --fresh "
            f"(deletes the store)")


def _quote(name: str) -> str:
    """Column names like ``limit`` and ``order`` are SQL keywords."""
    return '"' + name.replace('"', '""') + '"'
