"""The MLflow UI in a real browser: headless Debian Chromium against ``mlflow ui`` on
loopback, reading the ./mlflow.db a sweep logged to by default."""
import re

import pytest
from mlflow import MlflowClient

from browser import browse_until
from mlflow_server import mlflow_server
from results_data import real, write_sweep_dir
from sweep import tracking

pytestmark = [pytest.mark.browser, pytest.mark.mlflow_server]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A sweep logged with the default URI in a folder, then ``mlflow ui`` in that folder."""
    workdir = tmp_path_factory.mktemp("ui")
    sweep_dir = write_sweep_dir(workdir / "sweep", real(reps=2), name="ui-sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        parent_id = tracking.log_sweep(sweep_dir)
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        experiment_id = client.get_experiment_by_name("kmemcg-sweep").experiment_id
        runs = list(client.search_runs([experiment_id], max_results=1000))
    children = {r.info.run_id: r.info.run_name for r in runs if r.info.run_id != parent_id}
    with mlflow_server(workdir, command="ui") as url:
        yield url, experiment_id, parent_id, children


def test_runs_list_shows_the_sweep_and_all_its_runs(ui, tmp_path):
    url, experiment_id, _, children = ui
    page = f"{url}/#/experiments/{experiment_id}/runs"
    dom = browse_until(page, "matching runs", tmp_path / "runs.png", tmp_path / "profile")
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    assert ">ui-sweep<" in dom                                  # the parent row
    shown = re.search(r"<strong>(\d+)</strong>\s*matching runs", dom)
    assert shown and int(shown.group(1)) == 1 + len(children) == 25


def test_parent_run_page_lists_child_runs(ui, tmp_path):
    url, experiment_id, parent_id, children = ui
    page = f"{url}/#/experiments/{experiment_id}/runs/{parent_id}"
    dom = browse_until(page, "Child runs", tmp_path / "parent.png", tmp_path / "profile")
    linked = dict(re.findall(rf'href="#/experiments/{experiment_id}/runs/(\w+)">([^<]+)</a>', dom))
    listed = {run_id: name for run_id, name in linked.items() if run_id in children}
    # the page shows the first children and a "Load more" button; each is a real child
    assert len(listed) >= min(10, len(children))
    assert all(children[run_id] == name for run_id, name in listed.items())
    assert "0123abc" in dom                                      # the sweep's git commit


def test_parent_run_artifacts_list_the_report(ui, tmp_path):
    url, experiment_id, parent_id, _ = ui
    page = f"{url}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/report/report.html"
    dom = browse_until(page, "results.parquet", tmp_path / "artifacts.png", tmp_path / "profile")
    for name in ("config.yaml", "sweep.json", "report.md", "results.parquet",
                 "failure_rate_vs_limit.png"):
        assert name in dom, name
    assert "report/report.html" in dom                           # the selected artifact
