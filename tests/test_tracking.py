"""sweep.tracking against a real ``mlflow server`` on loopback (and the sqlite default)."""
import datetime
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlflow_server import free_port, mlflow_server
from results_data import real, write_sweep_dir
from sweep import analysis, report, tracking
from sweep.config import CELL_AXES
from sweep.outdir import SweepDir
from sweep.store import Store

pytestmark = pytest.mark.mlflow_server
REPO = Path(__file__).resolve().parent.parent
N_CELLS, N_DESIGNS = 8, 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def results():
    return real(reps=4)                   # 8 cells x 3 designs x 4 seeds, from the simulator


def _cfg(url: str, experiment: str) -> dict:
    return {"tracking": {"uri": url, "experiment": experiment}}


@pytest.fixture(scope="module")
def one_replication(results, tmp_path_factory):
    """A sweep folder with its report built once; tests log copies of it."""
    sweep_dir = write_sweep_dir(tmp_path_factory.mktemp("template"), results[results["replication"] == 0])
    report.build_report(sweep_dir)
    return sweep_dir


def _copy(template: Path, where: Path, **config) -> Path:
    """A copy of the template folder (report stays current: copytree keeps mtimes)."""
    sweep_dir = shutil.copytree(template, where / "sweep")
    if config:
        write_config(sweep_dir, config)
    return sweep_dir


def write_config(sweep_dir: Path, settings: dict) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sweep_dir / "config.yaml")
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value)
    (sweep_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))


def _runs(client: MlflowClient, experiment: str) -> list:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return list(client.search_runs([experiment_id], max_results=1000))


COMMAND = "python -m sweep configs/grid.yaml replications=4 grid.nodes=[1,2]"


@pytest.fixture(scope="module")
def logged(server, results, tmp_path_factory):
    sweep_dir = write_sweep_dir(tmp_path_factory.mktemp("sweep"), results, name="tracked",
                                **{"tracking.experiment": "t-logged", "tracking.uri": server})
    shutil.copyfile(REPO / "configs" / "claims.yaml", sweep_dir / "claims.yaml")   # as the run copies it
    meta = json.loads((sweep_dir / "sweep.json").read_text())        # as the CLI records it
    meta.update(command=COMMAND, overrides=["replications=4", "grid.nodes=[1,2]"], seconds=300)
    (sweep_dir / "sweep.json").write_text(json.dumps(meta))
    report.build_report(sweep_dir)                          # as `python -m sweep log` does first
    parent_id = tracking.log_sweep(sweep_dir)               # cfg None: read config.yaml
    return sweep_dir, parent_id, MlflowClient(server)


def _epoch_ms(stamp: str) -> int:
    return int(datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)


def test_experiment_opens_on_classic_runs_with_a_description(logged):
    _, parent_id, client = logged
    experiment = client.get_experiment(client.get_run(parent_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    description = experiment.tags["mlflow.note.content"]
    for design in ("v4.3", "way1", "way2"):                              # every design the sweep ran
        assert tracking.DESIGN_NAMES[design] in description
    assert "v6.18" not in description and "Simulated" in description


def test_parent_run_carries_config_version_commit_host_and_cluster(logged):
    _, parent_id, client = logged
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tracked"
    params, tags = parent.data.params, parent.data.tags
    assert params["model_version"] == "test-model"
    assert params["grid.mix"] == "[kernel]" and params["designs"] == "[v4.3, way1, way2]"
    assert tags["mlflow.source.git.commit"] == "0123abc"
    assert tags["kmemcg.host"] == "testhost" and tags["kmemcg.ray_cpus"] == "2"
    assert tags["config.replications"] == "8" and tags["kmemcg.role"] == "parent"
    assert tags["kmemcg.command"] == COMMAND and tags["kmemcg.overrides"] == "replications=4 grid.nodes=[1,2]"
    assert parent.data.metrics["cells"] == N_CELLS
    # the sweep's own start and end (sweep.json), not the time of logging
    assert parent.info.start_time == _epoch_ms("2026-11-25T10:00:00+0000")
    assert parent.info.end_time == _epoch_ms("2026-11-25T10:05:00+0000")


def test_parent_description_starts_with_the_verdict_and_lists_every_claim(logged):
    sweep_dir, parent_id, client = logged
    note = client.get_run(parent_id).data.tags["mlflow.note.content"]
    summary = analysis.load(sweep_dir).summary()
    assert note.startswith(summary["verdict"] + "\n")
    assert "simulated (the kmemcg-sweep simulator, model" in summary["verdict"]
    assert summary["claims"]
    for claim in summary["claims"]:
        assert f"- {claim['id']}: **{claim['verdict']}**" in note
    assert len(note) < tracking.MAX_TAG_VAL_LENGTH and note.rstrip().endswith("report/summary.json.")  # not clipped
    assert "negative = better" in note and "report.html" in note


def test_the_parent_description_fits_mlflows_limit_by_construction():
    """However many claims the registry has, every one gets its line and the text fits."""
    found = type("Found", (), {"table": pd.DataFrame({"n_pairs": [16], "cell_id": ["c"]}),
                               "alpha": 0.05, "correction": "holm"})()
    claims = [{"id": f"claim-{i:03d}", "who": "x", "verdict": "inconclusive", "reason": "because " * 40}
              for i in range(150)]
    note = tracking.parent_note({"verdict": "The verdict. " * 40, "claims": claims}, found)
    assert len(note) <= tracking.MAX_TAG_VAL_LENGTH
    assert all(f"- claim-{i:03d}: **inconclusive**" in note for i in range(150))
    assert note.startswith("The verdict. ")


def test_parent_params_describe_the_blocks():
    cfg = {"name": "g", "seed": 1, "designs": ["v4.3", "way1"], "grid": {"limit": ["32M"]},
           "blocks": [{"name": "card", "grid": {"limit": ["16M", "64M"], "high": [0.75, "max"]}},
                      {"name": "find", "grid": {"cpus": [4, 16]}, "workload": {"length": {"kernel_entries": 5000}}}]}
    params = tracking.parent_params(cfg, {"model_version": "m"})
    assert params["blocks.card.grid.limit"] == "[16M, 64M]" and params["blocks.card.grid.high"] == "[0.75, max]"
    assert params["blocks.find.grid.cpus"] == "[4, 16]"
    assert params["blocks.find.workload.length.kernel_entries"] == "5000"


def test_child_names_are_unique_and_say_what_distinguishes_the_cell():
    rows = []
    for block, cpus in (("find", 4), ("find", 16), ("card", 4)):
        rows.append({"cell_id": f"{block}-{cpus}", "block": block, "cpus": cpus, "limit": 32 << 20, "high": 0.75,
                     "order": 3, "nodes": 1, "mix": "kernel", "allocator": "slub", "fragment": 0.0})
    labels = tracking.child_labels(pd.DataFrame(rows))
    assert len(set(labels.values())) == 3
    assert labels["find-16"].startswith("find · ") and "16cpu" in labels["find-16"]
    assert labels["card-4"].startswith("card · ")
    params = tracking.child_params("find-16", "way1", pd.Series(rows[1]))
    assert params["block"] == "find" and params["cpus"] == "16" and params["allocator"] == "slub"


def test_metrics_are_rounded_and_the_headline_set_sorts_first():
    assert tracking.rounded(123.456789) == 123.5 and tracking.rounded(0.000123456) == 0.0001235
    assert tracking.rounded(0.0) == 0.0
    row = pd.Series({"rate/enomem_workloads": 0.25, "mean/overshoot_high_peak_pages": 10.0,
                     "mean/syscall_latency_p99_ns": 5.0})
    table = pd.DataFrame({"baseline": ["v4.3"], "metric": ["overshoot_high_peak_pages"], "pct_change": [-12.5]})
    headline = tracking.headline_metrics(row, table)
    assert headline["0_headline/enomem"] == 0.25
    assert headline["0_headline/overshoot_high_peak_pages_change_pct_vs_v4.3"] == -12.5
    assert sorted([*headline, "cells", "mean/x", "n_ok", "rate/x"])[:len(headline)] == sorted(headline)


def test_one_child_per_cell_and_design_with_its_aggregates(logged, results):
    _, parent_id, client = logged
    runs = _runs(client, "t-logged")
    children = [r for r in runs if r.info.run_id != parent_id]
    assert len(runs) == 1 + N_CELLS * N_DESIGNS
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    keys = {(r.data.params["cell_id"], r.data.params["design"]) for r in children}
    assert keys == set(results[["cell_id", "design"]].itertuples(index=False, name=None))
    child = next(r for r in children if r.data.params["cell_id"] == "L32M-o3-n1-nowait-burst"
                 and r.data.params["design"] == "way1")
    assert child.info.run_name == "way1 · 32M o3 n1 nowait-burst"         # design first
    assert child.data.params["limit"] == "32M" and child.data.params["nodes"] == "1"
    mine = results[(results["cell_id"] == "L32M-o3-n1-nowait-burst") & (results["design"] == "way1")]
    metrics = child.data.metrics
    assert metrics["n_ok"] == 4
    assert metrics["mean/reclaim_scanned_pages"] == pytest.approx(mine["reclaim_scanned_pages"].mean(), rel=1e-3)
    assert "0_headline/enomem" in metrics and "0_headline/overshoot_high_peak_pages" in metrics
    assert metrics["p99/overshoot_high_peak_pages"] <= mine["overshoot_high_peak_pages"].max()
    assert 0 <= metrics["rate/enomem_workloads/ci_lo"] <= metrics["rate/enomem_workloads"] \
        <= metrics["rate/enomem_workloads/ci_hi"] <= 1
    assert "vs_v4.3/overshoot_high_peak_pages/diff" in metrics       # way1 is a candidate of v4.3
    assert not any(key.endswith(("/p_holm", "/p_bh")) for key in metrics)   # adjusted p: the report's table
    assert client.get_metric_history(child.info.run_id, "n_ok")[0].step == 0
    tags = child.data.tags
    assert tags["kmemcg.design"] == "way1" and tags["kmemcg.regime"] in ("idle", "high-bound", "max-bound",
                                                                          "saturated")
    assert tags["verdict/vs_v4.3/enomem"] in ("better", "worse", "indistinguishable", "untestable")
    assert not any(key.endswith("/verdict") for key in metrics)          # verdicts are words, in tags


def test_child_differences_follow_the_report_sign_convention(logged):
    sweep_dir, parent_id, client = logged
    table = pd.read_parquet(sweep_dir / "report" / "comparisons.parquet")
    row = table[(table["candidate"] == "way2") & (table["baseline"] == "v4.3")
                & (table["metric"] == "overshoot_high_integral_page_ms")].iloc[0]
    run = next(r for r in _runs(client, "t-logged")
               if r.data.tags.get("kmemcg.child_key") == f"{row['cell_id']}/way2")
    assert run.data.metrics["vs_v4.3/overshoot_high_integral_page_ms/diff"] == pytest.approx(
        row["cand_mean"] - row["base_mean"], rel=1e-3)
    assert run.data.tags["verdict/vs_v4.3/overshoot_high_integral_page_ms"] == row["verdict"]


def test_report_and_results_are_parent_artifacts(logged, tmp_path):
    sweep_dir, parent_id, client = logged
    top = {a.path for a in client.list_artifacts(parent_id)}
    assert top == {"config.yaml", "sweep.json", "report", "report.html", "summary.png"}
    in_report = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert {"report/report.md", "report/report.html", "report/results.parquet",
            "report/summary.png", "report/cells.md"} <= in_report
    local = client.download_artifacts(parent_id, "report/results.parquet", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_parquet(local),
                                  pd.read_parquet(sweep_dir / "report" / "results.parquet"))


def test_logging_the_same_sweep_again_duplicates_nothing(logged):
    sweep_dir, parent_id, client = logged
    before = {r.info.run_id for r in _runs(client, "t-logged")}
    assert tracking.log_sweep(sweep_dir) == parent_id
    after = _runs(client, "t-logged")
    assert {r.info.run_id for r in after} == before
    child = next(r for r in after if r.info.run_id != parent_id)
    # nothing changed, so nothing new was written into the metric history either
    assert len(client.get_metric_history(child.info.run_id, "n_ok")) == 1


def test_runs_logged_while_the_sweep_runs_are_finished_by_sending_only_what_changed(server, results, tmp_path,
                                                                                     monkeypatch):
    """sweep.cellwise logs each cell's child runs as the cell finishes (``LiveRuns``); the
    step after the sweep then sends the parent's numbers and the verdicts that waited for
    the correction across cells - no child metric again - and every run ends as a run
    logged after the sweep would: same runs, same verdicts as the report's table."""
    settings = {"tracking.experiment": "t-live", "tracking.uri": server}
    sweep_dir = SweepDir(write_sweep_dir(tmp_path, results, **settings))
    cfg = sweep_dir.config_dict()
    cells = results.groupby("cell_id", sort=False)[[a for a in CELL_AXES if a in results]].first().reset_index()
    live = tracking.LiveRuns(sweep_dir, cfg, cells)
    with Store(sweep_dir.results) as store:
        for cell in cells["cell_id"]:
            frame = store.dataframe(cells=[cell])
            live.log_cell(frame, analysis.cache_cell(sweep_dir, frame, 0.05, cfg["designs"]), 0.05)
    client = MlflowClient(server)
    during = _runs(client, "t-live")
    assert len(during) == 1 + N_CELLS * N_DESIGNS
    settled = {v for r in during for k, v in r.data.tags.items() if k.startswith("verdict/")}
    assert settled <= {"indistinguishable", "untestable"}          # better / worse wait for the correction
    sent = []
    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, metrics=(), params=(), tags=(), **k: (
        sent.append((run_id, list(metrics), list(tags))), real(self, run_id, metrics=metrics, params=params,
                                                               tags=tags, **k))[1])
    parent_id = tracking.log_sweep(sweep_dir, live=live)
    assert not [m for run_id, metrics, _ in sent if run_id != parent_id for m in metrics]
    after = _runs(client, "t-live")
    assert {r.info.run_id for r in after} == {r.info.run_id for r in during}
    table = analysis.load(sweep_dir).table
    for run in after:
        if run.info.run_id == parent_id:
            assert run.data.metrics and run.info.status == "FINISHED"
            continue
        cell, design = run.data.tags["kmemcg.child_key"].split("/")
        mine = table[(table["cell_id"] == cell) & (table["candidate"] == design)]
        assert {k: v for k, v in run.data.tags.items() if k.startswith("verdict/")} == tracking.verdict_tags(mine)


def test_a_cell_whose_workloads_all_failed_still_gives_its_children_their_columns(results):
    """A cell with no successful workload has nothing to compare (no pct_change at all):
    its child runs are still logged while the sweep runs, every verdict 'untestable'."""
    from sweep import stats

    none_ok = stats.workload_values(results).iloc[0:0]
    rows = stats.compare_cell(none_ok, 0.05, list(stats.KEY_METRICS), stats.comparisons(["v4.3", "way1", "way2"]))
    frame = tracking.settled_comparisons(rows, 0.05)
    assert len(frame) == len(stats.KEY_METRICS) * 3 and set(frame["verdict"]) == {"untestable"}
    content = tracking.child_content("p", "s", "c", "way1", {"limit": 1 << 25, "high": 0.75, "order": 3, "nodes": 1,
                                                               "mix": "kernel", "n_ok": 0.0},
                                     frame[frame["candidate"] == "way1"])
    assert content.tags["verdict/vs_v4.3/enomem"] == "untestable"
    assert not any(key.startswith("vs_") and math.isfinite(value) for key, value in content.metrics.items())


def test_two_folders_of_the_same_config_are_two_parent_runs(server, one_replication, tmp_path):
    settings = {"tracking.experiment": "t-folders", "tracking.uri": server}
    first = _copy(one_replication, tmp_path / "a", **settings)
    second = _copy(one_replication, tmp_path / "b", **settings)
    one, two = tracking.log_sweep(first), tracking.log_sweep(second)
    assert one != two
    assert tracking.log_sweep(first) == one                                # the same folder again: same run
    parents = [r for r in _runs(MlflowClient(server), "t-folders") if r.data.tags.get("kmemcg.role") == "parent"]
    assert sorted(r.data.tags["kmemcg.sweep_dir"] for r in parents) == sorted([str(Path(first).resolve()), str(Path(second).resolve())])


def test_a_resumed_sweep_updates_the_same_runs(server, results, tmp_path):
    first = results[results["replication"] < 2]
    settings = {"tracking.experiment": "t-resume", "tracking.uri": server}
    sweep_dir = write_sweep_dir(tmp_path, first, replications=2, **settings)
    parent_id = tracking.log_sweep(sweep_dir)
    client = MlflowClient(server)
    ids = {r.info.run_id for r in _runs(client, "t-resume")}
    # the sweep resumes with more replications: more rows in the same store, new config
    write_sweep_dir(tmp_path, results, replications=4, **settings)
    assert tracking.log_sweep(sweep_dir) == parent_id
    runs = _runs(client, "t-resume")
    assert {r.info.run_id for r in runs} == ids and len(ids) == 1 + N_CELLS * N_DESIGNS
    child = next(r for r in runs if r.info.run_id != parent_id)
    assert child.data.metrics["n_ok"] == 4
    assert [m.value for m in client.get_metric_history(child.info.run_id, "n_ok")] == [2, 4]
    assert client.get_run(parent_id).data.tags["config.replications"] == "4"


def test_the_environment_selects_the_server(server, one_replication, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    sweep_dir = _copy(one_replication, tmp_path, **{"tracking.experiment": "t-env"})
    parent_id = tracking.log_sweep(sweep_dir)
    assert MlflowClient(server).get_run(parent_id).info.experiment_id == \
        MlflowClient(server).get_experiment_by_name("t-env").experiment_id


def test_default_is_sqlite_mlflow_db_in_the_working_folder(one_replication, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    sweep_dir = _copy(one_replication, tmp_path)
    parent_id = tracking.log_sweep(sweep_dir)
    assert (tmp_path / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(parent_id).data.tags["kmemcg.role"] == "parent"
    assert len(_runs(client, "kmemcg-sweep")) == 1 + N_CELLS * N_DESIGNS


def test_an_unreachable_server_fails_fast_and_says_how_to_retry(one_replication, tmp_path):
    sweep_dir = _copy(one_replication, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable) as err:
        tracking.log_sweep(sweep_dir, _cfg(dead, "t-dead"))
    assert time.monotonic() - start < 15
    assert dead in str(err.value) and f"python -m sweep log {sweep_dir}" in str(err.value)
    assert (sweep_dir / "results.sqlite").exists()


def test_batches_stay_within_mlflow_request_limits(server):
    metrics = [f"m{i}" for i in range(2500)]
    params, tags = [f"p{i}" for i in range(150)], [f"t{i}" for i in range(130)]
    chunks = list(tracking.batches(metrics, params, tags))
    for m, p, t in chunks:
        assert len(m) <= 1000 and len(p) <= 100 and len(t) <= 100 and len(m) + len(p) + len(t) <= 1000
    assert [x for c in chunks for x in c[0]] == metrics
    assert [x for c in chunks for x in c[1]] == params and [x for c in chunks for x in c[2]] == tags
    # the real server rejects an oversized request; this one must go through whole
    client = MlflowClient(server)
    run_id = client.create_run(tracking.ensure_experiment(client, "t-batch")).info.run_id
    sent = tracking.log_batch(client, run_id, {f"m{i}": float(i) for i in range(2500)},
                              {f"p{i}": str(i) for i in range(150)}, {f"t{i}": "x" for i in range(130)})
    assert sent == 3
    data = client.get_run(run_id).data
    assert len(data.metrics) == 2500 and len(data.params) == 150 and data.metrics["m2499"] == 2499


def _cli(*args, env_uri: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": env_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_log_sends_later_what_a_dead_server_missed(server, one_replication, tmp_path):
    sweep_dir = _copy(one_replication, tmp_path, **{"tracking.experiment": "t-cli"})
    dead = _cli("log", str(sweep_dir), env_uri=f"http://127.0.0.1:{free_port()}")
    assert dead.returncode != 0 and f"python -m sweep log {sweep_dir}" in dead.stderr
    alive = _cli("log", str(sweep_dir), env_uri=server)
    assert alive.returncode == 0, alive.stderr
    assert len(_runs(MlflowClient(server), "t-cli")) == 1 + N_CELLS * N_DESIGNS


def test_a_single_design_sweep_logs_children_without_comparisons(results, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    one = results[(results["design"] == "way2") & (results["replication"] < 2)]
    parent_id = tracking.log_sweep(write_sweep_dir(tmp_path / "sweep", one, name="solo"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = _runs(client, "kmemcg-sweep")
    assert len(runs) == 1 + N_CELLS
    parent = client.get_run(parent_id)
    assert parent.data.metrics["cells"] == N_CELLS and parent.data.metrics["workloads"] == 2 * N_CELLS
    child = next(r for r in runs if r.info.run_id != parent_id)
    assert child.data.metrics["n_ok"] == 2
    assert not any(key.startswith("vs_") for key in child.data.metrics)
