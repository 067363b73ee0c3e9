"""The results store (sweep.store): schema, resume bookkeeping, plan scoping, WAL, export."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from core.metrics import METRICS
from sweep.store import Store, StoreDamaged, metric_names


def make_row(i: int, design: str = "way1", status: str = "ok", **extra) -> dict:
    metrics = {name: float(i * 1000 + j) for j, name in enumerate(metric_names())}
    row = {"key": f"k{i:04d}-{design}", "cell_id": f"cell{i % 3}", "design": design, "replication": i // 3,
           "seed": 2**62 + i, "status": status, "error": None if status == "ok" else "ValueError: boom",
           "limit": 64.0 * 2**20, "high": 0.75, "order": 3, "nodes": 2, "mix": "kernel",
           "elapsed_s": 0.01, "worker": "host:1", "model_version": "m1", "finished_at": 1.0}
    return row | ({} if status != "ok" else metrics) | extra


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "results.sqlite") as s:
        yield s


def test_dataframe_has_the_pinned_columns_and_types(store):
    rows = [make_row(i, d) for i in range(6) for d in ("way1", "way2")]
    store.put(rows)
    store.set_plan(r["key"] for r in rows)
    df = store.dataframe()
    assert list(df.columns[:11]) == ["cell_id", "design", "replication", "seed", "status", "error",
                                     "limit", "high", "order", "nodes", "mix"]
    for name in (*METRICS, "request_hash_lo", "request_hash_hi"):
        assert name in df.columns
    assert len(df) == 12
    assert df["limit"].iloc[0] == 64 * 2**20
    assert df["seed"].max() == 2**62 + 5            # 63-bit seeds survive SQLite's INTEGER
    assert df[METRICS[0]].dtype == np.float64
    # sorted by cell, design, replication: two stores with the same rows give equal frames
    assert df[["cell_id", "design", "replication"]].equals(
        df[["cell_id", "design", "replication"]].sort_values(["cell_id", "design", "replication"],
                                                             ignore_index=True))


def test_put_replaces_by_key_so_rerunning_a_workload_never_duplicates(store):
    store.put([make_row(1, status="error")])
    store.put([make_row(1)])          # the rerun of an error row
    store.put([make_row(1)])          # and a retried chunk arriving twice
    assert store.keys() == {"k0001-way1"}
    assert store.keys("ok") == {"k0001-way1"}
    assert store.keys("error") == set()


def test_plan_scopes_the_dataframe_but_keeps_cached_rows(store):
    old = [make_row(i) for i in range(4)]
    new = [make_row(i, "way2") for i in range(4)]
    store.put(old + new)
    store.set_plan(r["key"] for r in new)
    assert set(store.dataframe()["key"]) == {r["key"] for r in new}
    assert len(store.dataframe(all_rows=True)) == 8
    assert store.count() == 4 and store.count(planned_only=False) == 8
    store.set_plan([old[0]["key"]], replace=False)     # a later round adds to the plan
    assert store.count() == 5


def test_error_rows_keep_their_message(store):
    store.put([make_row(1, status="error"), make_row(2)])
    store.set_plan(["k0001-way1", "k0002-way1"])
    assert store.count("error") == 1
    assert store.errors() == [("cell1", "way1", "ValueError: boom")]
    df = store.dataframe()
    assert df.loc[df.status == "error", METRICS[0]].isna().all()


def test_wal_mode_lets_a_reader_see_committed_chunks_while_the_writer_holds_the_file(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.put([make_row(i) for i in range(3)])
    reader = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
    store.put([make_row(i) for i in range(3, 5)])
    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 5
    reader.close()


def test_a_new_metric_adds_a_column(store):
    store.put([make_row(1, new_metric_from_a_newer_model=3.5)])
    store.set_plan(["k0001-way1"])
    assert store.dataframe()["new_metric_from_a_newer_model"].tolist() == [3.5]


def test_parquet_export_round_trips(store, tmp_path):
    rows = [make_row(i, d) for i in range(5) for d in ("v4.3", "way2")]
    store.put(rows)
    store.set_plan(r["key"] for r in rows)
    path = store.to_parquet(tmp_path / "x" / "results.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, store.dataframe(), check_dtype=False)


def test_merge_from_a_shard_unions_rows_and_plans(tmp_path):
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        a.put([make_row(i) for i in range(3)])
        a.set_plan(f"k{i:04d}-way1" for i in range(3))
        b.put([make_row(i) for i in range(3, 5)])
        b.set_plan(f"k{i:04d}-way1" for i in range(3, 5))
    with Store(tmp_path / "all.sqlite") as merged:
        assert merged.merge_from(tmp_path / "a.sqlite") == 3
        assert merged.merge_from(tmp_path / "b.sqlite") == 2
        assert merged.merge_from(tmp_path / "b.sqlite") == 2      # merging twice changes nothing
        assert merged.count() == 5
        assert sorted(merged.dataframe()["key"]) == [f"k{i:04d}-way1" for i in range(5)]


def test_remove_deletes_the_database_and_its_wal_files(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        s.put([make_row(1)])
        assert path.exists()
    Store.remove(path)
    assert not any(tmp_path.iterdir())
    with Store(path) as s:
        assert s.keys() == set()


def test_check_names_a_damaged_store_and_passes_an_intact_or_absent_one(tmp_path):
    path = tmp_path / "results.sqlite"
    Store.check(path)                                   # absent: a new sweep
    with Store(path) as s:
        s.put([make_row(i) for i in range(300)])
    Store.check(path)                                   # intact
    whole = path.read_bytes()
    for name, damage in {"truncated": whole[:len(whole) // 3], "garbage": b"\x00garbage" * 4096}.items():
        broken = tmp_path / f"{name}.sqlite"
        broken.write_bytes(damage)
        with pytest.raises(StoreDamaged) as err:
            Store.check(broken)
        message = str(err.value)
        assert message.startswith(f"{broken}: the results store is damaged (")
        assert "--fresh" in message and ".dump" in message and "safe" not in message
