"""The Kubernetes tracking path end to end on loopback: sweeps log to ``mlflow server`` started
with k8s/mlflow.yaml's own command line and environment, on a real PostgreSQL with the role
and database of the manifest's StatefulSet (tests/postgres_server.py says what is localized).

Command lines come from the manifests too: the smoke sweep runs with the RayJob entrypoint's
overrides, the shards with the Indexed Job's, and the merge runs the merge Job's two
containers as they are written. One PostgreSQL and one server serve the whole module; the
restart test kills the server mid-log and starts it again on the same port, as a pod behind
its Service is replaced.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from mlflow import MlflowClient

from browser import browse_until
from k8s_manifests import REPO, container_commands, dockerfile_stages, literal_env, load_objects
from postgres_server import (PostgresUnavailable, bindir, manifest_mlflow_on_postgres, manifest_objects,
                             mlflow_container)
from sweep import cli
from sweep_helpers import cli_env, start_cli, wait_until

pytestmark = [pytest.mark.mlflow_server, pytest.mark.postgres]
SMOKE = REPO / "configs" / "smoke.yaml"
SERVICE_URL = "http://mlflow:5000"          # what the sweeps in the manifests log to
CELLS, DESIGNS = 24, 3                      # configs/smoke.yaml
RUNS = 1 + CELLS * DESIGNS                  # one parent, one child per cell and design


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """PostgreSQL + the Deployment's mlflow server; fails (never skips) when PostgreSQL can't run."""
    try:
        with manifest_mlflow_on_postgres(tmp_path_factory.mktemp("k8s-mlflow")) as running:
            yield running
    except PostgresUnavailable as err:
        pytest.fail(f"PostgreSQL for the manifest's MLflow server: {err}")


def sql(server, query: str, *params) -> list[tuple]:
    """Ask the backend database itself (what the server stored, not what it answers)."""
    import psycopg

    pg = server.postgres
    with psycopg.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                         dbname=pg.database, connect_timeout=10) as db:
        return db.execute(query, params).fetchall()


def runs_in_db(server, experiment: str) -> int:
    return sql(server, "SELECT count(*) FROM runs r JOIN experiments e USING (experiment_id) "
                       "WHERE e.name = %s", experiment)[0][0]


def runs_of(client: MlflowClient, experiment: str) -> list:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return list(client.search_runs([experiment_id], max_results=1000))


def parent_and_children(runs: list):
    parent, = [r for r in runs if r.data.tags.get("kmemcg.role") == "parent"]
    return parent, [r for r in runs if r is not parent]


def manifest_command(where: str):
    """A command line of the manifests by where it runs (see k8s_manifests.container_commands)."""
    found, = [c for c in container_commands(load_objects()) if c.where == where]
    return found


def localized_overrides(cmd, url: str, results: Path) -> list[str]:
    """A manifest sweep's key=value overrides with the Service URL -> the local server and
    the results volume's mount -> a folder here."""
    mount = results_mount(cmd, cmd.overrides()["output.dir"])
    out = []
    for key, value in cmd.overrides().items():
        value = url if value == SERVICE_URL else value.replace(mount, str(results), 1)
        out.append(f"{key}={value}")
    assert f"tracking.uri={url}" in out, "the manifest's sweep must log to the MLflow Service"
    return out


def set_config(sweep_dir: Path, key: str, value) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sweep_dir / "config.yaml")
    OmegaConf.update(cfg, key, value)
    (sweep_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))


def results_mount(cmd, path: str) -> str:
    """The container's mount path that ``path`` lies under (the results volume)."""
    mount, = [m for m in cmd.mounts if path.startswith(m.rstrip("/") + "/")]
    return mount


def quietly(argv: list[str]) -> tuple[int, str]:
    """cli.main in this process (the session's Ray), stderr captured."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, err.getvalue()


def test_the_servers_init_container_waits_for_this_postgres(server):
    """wait-for-postgres's own script (pg_isready in a loop), pointed at the local PostgreSQL."""
    init = manifest_command("Deployment/mlflow container wait-for-postgres")
    backend = urlsplit(literal_env(mlflow_container(manifest_objects()))["MLFLOW_BACKEND_STORE_URI"])
    script = init.argv[-1]
    local = script.replace(f"-h {backend.hostname} ", f"-h {server.postgres.host} ") \
                  .replace(f"-p {backend.port} ", f"-p {server.postgres.port} ")
    assert local.count(str(server.postgres.port)) == 1, script
    done = subprocess.run(init.argv[:-1] + [local], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bindir()}:/usr/bin:/bin"})
    assert done.returncode == 0 and "accepting connections" in done.stdout, done.stdout + done.stderr


# --- a sweep as the RayJob runs it, logged by its driver -----------------------------------------


@pytest.fixture(scope="module")
def smoke(server, ray_session, tmp_path_factory):
    """configs/smoke.yaml with the RayJob entrypoint's overrides, logging to the server."""
    entrypoint = manifest_command("RayJob/kmemcg-sweep entrypoint (on the head)")
    results = tmp_path_factory.mktemp("results")
    overrides = localized_overrides(entrypoint, server.url, results)
    rc, stderr = quietly([str(SMOKE), *overrides])
    assert rc == 0, stderr
    out = Path(dict(o.split("=", 1) for o in overrides)["output.dir"])
    client = MlflowClient(server.url)
    parent, children = parent_and_children(runs_of(client, "kmemcg-smoke"))
    assert f"MLflow: parent run {parent.info.run_id}" in stderr
    return out, client, parent, children


def test_smoke_sweep_logs_one_parent_and_a_child_per_cell_and_design(smoke, server):
    out, client, parent, children = smoke
    assert parent.info.status == "FINISHED" and parent.info.run_name == "smoke"
    assert parent.data.metrics["cells"] == CELLS and parent.data.metrics["workloads"] == 144
    assert len(children) == CELLS * DESIGNS
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    aggregates = pd.read_parquet(out / "report" / "aggregates.parquet")
    assert {c.data.tags["kmemcg.child_key"] for c in children} == \
        {f"{cell}/{design}" for cell, design in aggregates[["cell_id", "design"]].itertuples(index=False)}
    # the rows are in PostgreSQL, not in some fallback store of the server's
    assert runs_in_db(server, "kmemcg-smoke") == RUNS
    child = children[0]
    stored = dict(sql(server, "SELECT key, value FROM latest_metrics WHERE run_uuid = %s", child.info.run_id))
    assert stored == pytest.approx(child.data.metrics)


def test_report_artifacts_go_through_the_server_onto_its_volume(smoke, server, tmp_path):
    out, client, parent, _ = smoke
    in_report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/results.parquet", "report/summary.png"} <= in_report
    # the self-contained report and the summary figure also sit at the root (the artifact viewer)
    assert {"report.html", "summary.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    local = client.download_artifacts(parent.info.run_id, "report/results.parquet", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_parquet(local), pd.read_parquet(out / "report" / "results.parquet"))
    # --serve-artifacts: the client sent HTTP only; the files are on the artifact volume
    on_volume = list(server.artifacts.rglob("report/results.parquet"))
    assert len(on_volume) == 1 and parent.info.run_id in on_volume[0].parts


def test_logging_the_smoke_sweep_again_duplicates_nothing(smoke, server):
    out, client, parent, children = smoke
    rows = table_rows(server)
    files = artifact_files(server)
    rc, stderr = quietly(["log", str(out)])
    assert rc == 0, stderr
    assert f"MLflow: parent run {parent.info.run_id}" in stderr
    assert {r.info.run_id for r in runs_of(client, "kmemcg-smoke")} == \
        {parent.info.run_id} | {c.info.run_id for c in children}
    # nothing changed, so no row was added anywhere: not even a metric history entry
    assert table_rows(server) == rows
    assert artifact_files(server) == files


def table_rows(server) -> dict[str, int]:
    return {table: sql(server, f"SELECT count(*) FROM {table}")[0][0] for table in ("runs", "metrics", "params", "tags")}


def artifact_files(server) -> list[Path]:
    return sorted(p.relative_to(server.artifacts) for p in server.artifacts.rglob("*") if p.is_file())


# --- the MLflow UI of that server -------------------------------------------------------------


def test_ui_runs_page_shows_the_sweep(smoke, server, tmp_path):
    _, client, parent, _ = smoke
    experiment_id = client.get_experiment_by_name("kmemcg-smoke").experiment_id
    page = f"{server.url}/#/experiments/{experiment_id}/runs"
    dom = browse_until(page, "matching runs", tmp_path / "runs.png", tmp_path / "profile")
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    assert ">smoke<" in dom                                     # the parent row
    shown = re.search(r"<strong>(\d+)</strong>\s*matching runs", dom)
    assert shown and int(shown.group(1)) == RUNS


# --- the sharded Indexed Job and its merge Job ---------------------------------------------------


def test_merge_job_logs_the_shards_as_the_one_sweep_they_are(smoke, server, tmp_path, monkeypatch):
    """The smoke sweep again, as 2 shards with the Indexed Job's overrides, then the merge Job's
    two containers: the shards log nothing; the merge logs the merged folder as one sweep (a
    parent of its own - one parent per sweep folder) whose children hold exactly the metrics
    of the unsharded smoke sweep (same seeds), and logging it again duplicates nothing."""
    _, client, parent, children = smoke
    shards_cmd = manifest_command("Job/kmemcg-sweep-shards container sweep")
    results = tmp_path / "results"                     # the sweep-results volume
    overrides = localized_overrides(shards_cmd, server.url, results)
    before = {r.info.run_id for r in runs_of(client, "kmemcg-smoke")}
    for index in range(2):
        rc, stderr = quietly([str(SMOKE), "--shard", f"{index}/2", *overrides])
        assert rc == 0 and "MLflow" not in stderr, stderr   # shards do not log one by one
    assert {r.info.run_id for r in runs_of(client, "kmemcg-smoke")} == before
    report, log = (merge_step(step, server.url, results) for step in ("report", "log"))
    for name, value in report.env.items():             # the init container: in this process
        monkeypatch.setenv(name, value)
    rc, stderr = quietly(report.argv[3:])
    assert rc == 0 and "merged 144 rows from 2 shards" in stderr, stderr
    for attempt in range(2):                           # the Job's pod run twice: nothing doubles
        done = subprocess.run(log.argv, cwd=REPO, env=cli_env(**log.env), capture_output=True, text=True,
                              timeout=300)              # the container: a process of its own, as in its pod
        assert done.returncode == 0, done.stderr[-3000:]
    new = [r for r in runs_of(client, "kmemcg-smoke") if r.info.run_id not in before]
    merged_parent, merged_children = parent_and_children(new)
    assert len(merged_children) == CELLS * DESIGNS
    merged = merged_parent.data
    assert merged.metrics["cells"] == CELLS and merged.metrics["workloads"] == 144
    # the parent describes the merged folder: both shards' Ray CPUs, the volume's path
    assert merged.tags["kmemcg.ray_cpus"] == "4"
    assert merged.tags["config.output.dir"] == str(results / "grid-shards")
    # sharding changes nothing the simulator computes: each child equals the unsharded one
    expected = {c.data.tags["kmemcg.child_key"]: c.data.metrics for c in children}
    got = {c.data.tags["kmemcg.child_key"]: c.data.metrics for c in merged_children}
    assert got.keys() == expected.keys()
    for key, metrics in got.items():
        assert metrics == pytest.approx(expected[key]), key


def merge_step(container: str, url: str, results: Path):
    """A merge Job container's command line and env as written, with the results volume and
    the Service URL localized."""
    cmd = manifest_command(f"Job/kmemcg-sweep-merge container {container}")
    mount = results_mount(cmd, cmd.argv[-1])               # python -m sweep STEP /results/...
    cmd.argv = [sys.executable] + [a.replace(mount, str(results), 1) for a in cmd.argv[1:]]
    cmd.env = {k: (url if v == SERVICE_URL else v) for k, v in cmd.env.items()}
    return cmd


# --- the server's pod replaced mid-log -------------------------------------------------------


def test_server_restarted_mid_log_loses_and_duplicates_nothing(smoke, server, tmp_path):
    out, client, _, smoke_children = smoke
    sweep_dir = shutil.copytree(out, tmp_path / "sweep")      # copytree keeps the report current
    set_config(sweep_dir, "tracking.experiment", "kmemcg-restart")
    first = start_cli(["log", sweep_dir], REPO)
    # kill once some child runs are stored and most are not (the log takes seconds per 10 runs)
    wait_until(lambda: runs_in_db(server, "kmemcg-restart") >= 8 or first.poll() is not None, timeout=120,
               step=0.05, what="the first child runs in PostgreSQL")
    server.server.kill()                                      # SIGKILL: the container is gone at once
    _, stderr = first.communicate(timeout=120)
    assert first.returncode != 0, "the log finished before the server was killed"
    assert f"python -m sweep log {sweep_dir}" in stderr       # says how to send the rest
    assert 8 <= runs_in_db(server, "kmemcg-restart") < RUNS
    server.server.start()                                     # the new pod, same Service address
    rc, stderr = quietly(["log", str(sweep_dir)])
    assert rc == 0, stderr
    runs = runs_of(client, "kmemcg-restart")
    parent, children = parent_and_children(runs)
    assert len(runs) == runs_in_db(server, "kmemcg-restart") == RUNS
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    # every child holds exactly the metrics and params the undisturbed smoke log stored
    expected = {c.data.tags["kmemcg.child_key"]: c.data for c in smoke_children}
    got = {c.data.tags["kmemcg.child_key"]: c.data for c in children}
    assert got.keys() == expected.keys()
    for key, data in got.items():
        assert data.metrics == pytest.approx(expected[key].metrics), key
        assert data.params == expected[key].params, key
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == \
        {"config.yaml", "sweep.json", "report", "report.html", "summary.png"}


# --- the driver the tests use is the image's ----------------------------------------------------


def test_tests_and_image_install_the_database_driver_sqlalchemy_picks():
    import sqlalchemy

    # what `mlflow server` does with the manifest's postgresql:// URL: no connection, just the driver
    driver = sqlalchemy.create_engine("postgresql://mlflow@mlflow-postgres/mlflow").dialect.driver
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pinned = [r for r in extras if re.match(rf"{driver}\b", r)]
    image = " ".join(dockerfile_stages()[-1].all("RUN"))
    assert len(pinned) == 1 and pinned[0] in image, (driver, pinned)
