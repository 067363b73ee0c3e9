"""The sweep end to end: results equal direct ``core.run_workload`` calls, the Ray executor
stores the same metrics as the local one bit for bit, resume runs only what is missing,
shards merge, errors are stored and counted, the precision loop adds replications where
sweep.stats asks, and tracking failures lose nothing.

Ray is not what these tests are about, so they run on the local executor (``--local``,
sweep/local.py) and need no Ray; the one comparison with Ray reuses the session's Ray
(``ray_session``).  Ray's own faults are tests/test_faults.py's.
"""
from __future__ import annotations

import json
import shutil
import socket

import pandas as pd
import pytest

from sweep import campaign, cli, config, grid
from sweep.local import LocalExecutor
from sweep.outdir import SweepDir
from sweep.store import Store
from sweep_helpers import (REPO, metric_table, planned_workloads, reference_table, run_cli, write_config)

SMOKE = REPO / "configs" / "smoke.yaml"


def counts(sweep_dir) -> dict:
    return json.loads((sweep_dir / "sweep.json").read_text())["counts"]


def frame(sweep_dir) -> pd.DataFrame:
    with Store(sweep_dir / "results.sqlite") as store:
        return store.dataframe()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """configs/smoke.yaml through the real CLI on the local executor (report included, MLflow off)."""
    out = tmp_path_factory.mktemp("smoke") / "smoke"
    capture = tmp_path_factory.mktemp("smoke-log") / "stderr.txt"
    import contextlib

    with open(capture, "w") as err, contextlib.redirect_stderr(err):
        rc = cli.main([str(SMOKE), f"output.dir={out}", "tracking.enabled=false", "--local"])
    return rc, out, capture.read_text()


@pytest.fixture(scope="module")
def smoke_reference():
    return reference_table(planned_workloads(SMOKE))


def test_smoke_sweep_results_equal_direct_core_calls(smoke_run, smoke_reference):
    rc, out, stderr = smoke_run
    assert rc == 0, stderr
    df = frame(out)
    assert len(df) == 144 and (df["status"] == "ok").all()
    pd.testing.assert_frame_equal(metric_table(df), smoke_reference)
    assert counts(out) == {"cells": 24, "workloads": 144, "skipped": 0, "ran": 144, "ok": 144, "errors": 0,
                           "lost": 0, "retried": 0, "rounds": 1}
    assert "progress: 144/144 (100%) errors=0 lost=0" in stderr
    assert (out / "report").is_dir()


def test_the_run_prints_regimes_warns_about_claims_and_keeps_the_registry(smoke_run):
    rc, out, stderr = smoke_run
    assert "regimes (cell x design): idle" in stderr and "cells reaching memory.max under some design" in stderr
    # the smoke grid has no 16-CPU dentry cell: the claim is named, not silently skipped
    assert "warning: claim 'find-dentries-over-high': no cell of this sweep matches" in stderr
    assert (out / "claims.yaml").read_text() == (REPO / "configs" / "claims.yaml").read_text()


def test_common_random_numbers_hold_end_to_end(smoke_run):
    df = frame(smoke_run[1])
    per_pair = df.groupby(["cell_id", "replication"])
    assert (per_pair["design"].nunique() == 3).all()
    for column in ("seed", "request_hash_lo", "request_hash_hi"):
        assert (per_pair[column].nunique() == 1).all(), f"{column} differs between designs of one replication"
    assert df.groupby("cell_id")["seed"].nunique().eq(2).all()


def test_sweep_folder_records_config_and_run(smoke_run):
    import core

    out = smoke_run[1]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["name"] == "smoke" and meta["status"] == "completed"
    assert meta["model_version"] == core.MODEL_VERSION
    assert meta["executor"] == "local" and meta["ray_cpus"] is None and meta["started"] <= meta["finished"]
    assert meta["git_commit"] is None or len(meta["git_commit"]) >= 40
    saved = SweepDir(out).read_config()
    assert saved == config.load(SMOKE, [f"output.dir={out}", "tracking.enabled=false"])


def test_the_ray_executor_stores_the_same_metrics_as_the_local_one(smoke_run, ray_session, tmp_path):
    """Both executors run sweep.worker.run_chunk on the same chunks: bit-identical metrics."""
    from sweep.runner import RayExecutor

    summary = _sweep(SMOKE, tmp_path / "on-ray", executor=RayExecutor)
    assert (summary.executor, summary.cpus, summary.ran, summary.ok) == ("ray", 2, 144, 144)
    on_ray, local = frame(tmp_path / "on-ray"), frame(smoke_run[1])
    pd.testing.assert_frame_equal(metric_table(on_ray), metric_table(local), check_exact=True)
    assert on_ray[["key", "status", "cell_id", "design", "seed"]].equals(local[["key", "status", "cell_id", "design",
                                                                              "seed"]])
    meta = json.loads((tmp_path / "on-ray" / "sweep.json").read_text())
    assert (meta["executor"], meta["ray_cpus"], meta["status"]) == ("ray", 2, "completed")


def test_rerun_runs_only_what_is_missing(smoke_run, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke_run[1], out)
    before = frame(out)
    assert _sweep(SMOKE, out).counts() == {"cells": 24, "workloads": 144, "skipped": 144, "ran": 0,
                                           "ok": 0, "errors": 0, "lost": 0, "retried": 0, "rounds": 1}
    # one more value on one axis (a command-line override reaches every block): only the
    # new cells run - 16 + 8 cells of the two blocks become 24 + 24
    assert _sweep(SMOKE, out, "grid.order=[0,3,1]").counts() == {
        "cells": 48, "workloads": 288, "skipped": 144, "ran": 144, "ok": 144, "errors": 0, "lost": 0, "retried": 0,
        "rounds": 1}
    after = frame(out)
    old = after[after["cell_id"].isin(before["cell_id"])]
    pd.testing.assert_frame_equal(metric_table(old), metric_table(before))
    assert set(old["finished_at"]) == set(before["finished_at"]), "stored rows must not be rewritten"
    # more replications: only the new replications run
    summary = _sweep(SMOKE, out, "replications=3")
    assert (summary.skipped, summary.ran) == (144, 72)
    # --fresh starts over
    summary = _sweep(SMOKE, out, fresh=True)
    assert (summary.skipped, summary.ran) == (0, 144)


def _sweep(config_path, out, *overrides, fresh=False, executor=None):
    """What ``python -m sweep CONFIG output.dir=OUT OVERRIDES --local`` runs, minus the report;
    ``executor``: its class instead (``RayExecutor``)."""
    cfg = config.load(config_path, [f"output.dir={out}", *overrides])
    cells = grid.build_cells(cfg, config.load_mixes(cfg, config_path))
    sweep_dir = SweepDir(out)
    chosen = executor(cfg.ray, sweep_dir) if executor else LocalExecutor()
    return campaign.run_sweep(cfg, cells, sweep_dir, chosen, fresh=fresh)


def _run(config_path, out, *args) -> int:
    return cli.main([str(config_path), f"output.dir={out}", "tracking.enabled=false", "--local", *args])


def test_shards_partition_the_sweep_and_merge_into_the_unsharded_result(smoke_run, tmp_path, capsys):
    out = tmp_path / "sharded"
    for index in range(3):
        assert _run(SMOKE, out, "--shard", f"{index}/3") == 0
    assert "When every shard is done: python -m sweep report" in capsys.readouterr().err
    shards = [frame(out / f"shard-{i}-of-3") for i in range(3)]
    keys = [set(s["key"]) for s in shards]
    assert all(keys) and sum(map(len, keys)) == len(set().union(*keys)) == 144
    assert all(s.groupby("cell_id")["design"].nunique().eq(3).all() for s in shards), "cells are split whole"
    assert cli.main(["export", str(out), "--parquet", str(tmp_path / "all.parquet")]) == 0
    merged = pd.read_parquet(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(metric_table(merged), metric_table(frame(smoke_run[1])))
    meta = json.loads((out / "sweep.json").read_text())
    shard_metas = [json.loads((out / f"shard-{i}-of-3" / "sweep.json").read_text()) for i in range(3)]
    assert meta["counts"] == {"workloads": 144, "ok": 144, "errors": 0}
    assert {m["executor"] for m in shard_metas} == {"local"} and meta["ray_cpus"] is None   # no Ray ran
    assert cli.main(["report", str(out)]) == 0            # one report over every shard
    assert (out / "report").is_dir()


def test_a_workload_that_raises_is_stored_as_an_error_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path, {"grid": {"limit": ["64M"], "order": [3], "nodes": [1, 2], "mix": ["kernel"]}})
    real_build = grid.build_cells

    def one_cell_broken(cfg, mixes):   # a spec core.run_workload rejects at run time, in one design
        cells = real_build(cfg, mixes)
        cells[0].specs["way1"]["machine"]["nodes"] = 99
        return cells

    monkeypatch.setattr(grid, "build_cells", one_cell_broken)
    rc = cli.main([str(path), "--local"])
    err = capsys.readouterr().err
    assert rc == 1, err
    df = frame(tmp_path / "out")
    bad = df[df["status"] == "error"]
    assert len(df) == 2 * 3 * 2 and len(bad) == 2
    assert set(bad["design"]) == {"way1"} and bad["cell_id"].nunique() == 1
    assert bad["error"].str.contains("machine.nodes").all()
    assert (df.loc[df["status"] == "ok", "enomem_user_visible"].notna()).all()
    assert counts(tmp_path / "out")["errors"] == 2
    assert "2 errors" in err and "machine.nodes" in err


def test_precision_rounds_add_replications_where_stats_asks(tmp_path):
    from sweep import stats

    path = write_config(tmp_path, {"grid": {"limit": ["32M"], "mix": ["nowait-burst", "kernel"]},
                                   "stats": {"max_replications": 4, "ci_halfwidth": 1e-9}})
    assert cli.main([str(path), "--local"]) == 0
    df = frame(tmp_path / "out")
    reps = df.groupby("cell_id")["replication"].nunique()
    assert set(reps) <= {2, 4}
    first_round = df[df["replication"] < 2]
    cfg = config.load(path)
    asked = set(stats.cells_needing_more(first_round, cfg.stats))
    assert asked, "with a 1e-9 target some cell must need more"
    assert set(reps[reps == 4].index) == asked
    assert counts(tmp_path / "out")["rounds"] == 2


def test_a_tracking_failure_keeps_the_results_and_says_how_to_retry(tmp_path, capsys):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))                     # a port nobody listens on
    port = dead.getsockname()[1]
    path = write_config(tmp_path, {"grid": {"limit": ["64M"], "order": [3], "nodes": [1], "mix": ["kernel"]},
                                   "tracking": {"enabled": True, "uri": f"http://127.0.0.1:{port}"}})
    rc = cli.main([str(path), "--local"])
    dead.close()
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "tracking failed" in err and f"python -m sweep log {tmp_path / 'out'}" in err
    assert len(frame(tmp_path / "out")) == 6 and counts(tmp_path / "out")["ok"] == 6


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path, capsys):
    path = write_config(tmp_path)
    with SweepDir(tmp_path / "out").lock():
        assert cli.main([str(path)]) == 4
    assert "another sweep is running" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    path = write_config(tmp_path)
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    done = run_cli([path, "--dry-run", "-v"], cwd=tmp_path, timeout=120, RAY_TMPDIR=str(ray_tmp))  # -v: the cells too
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    cells = [line for line in lines if line.startswith("  ") and line.endswith(": 6")]
    assert len(cells) == 24                                    # every cell, 2 reps x 3 designs to run
    assert "cells: 24" in lines
    assert "workloads: 144 (0 stored in" in done.stdout and "144 to run)" in done.stdout
    assert any(line.startswith("Ray tasks: ") for line in lines)
    assert any(line.startswith("estimated time: ") for line in lines)
    assert list(ray_tmp.iterdir()) == [] and not (tmp_path / "out").exists()
    local = run_cli([path, "--dry-run", "--local"], cwd=tmp_path, timeout=120, RAY_TMPDIR=str(ray_tmp))
    assert local.returncode == 0, local.stderr
    assert "\nchunks: " in local.stdout and "one at a time" in local.stdout and "Ray" not in local.stdout
    assert "on this process (--local)" in local.stdout
