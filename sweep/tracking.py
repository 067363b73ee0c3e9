"""MLflow tracking of a finished (or resumed) sweep - the only module that imports mlflow.

One **parent run** per sweep (params: the parts of the config that define the sweep, and
the model version; tags: git commit, host, Ray CPUs, the rest of the config; artifacts:
config.yaml, sweep.json and the whole report folder incl. results.parquet) and one **child
run** per (cell, design) with the cell's parameters and its aggregates from
``sweep.stats.aggregate`` plus its paired comparisons.  Everything is logged from the
driver with ``MlflowClient.log_batch``, split to MLflow's per-request limits.

Runs are found again by tags (``kmemcg.sweep_id`` on all, ``kmemcg.child_key`` on
children), so logging the same sweep twice - after a resume, or ``python -m sweep log``
after a failed attempt - updates the same runs instead of adding new ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd                                           # noqa: E402
from mlflow import MlflowClient                               # noqa: E402
from mlflow.entities import Metric, Param, RunTag             # noqa: E402
from mlflow.exceptions import MlflowException                 # noqa: E402
from mlflow.utils.validation import (                         # noqa: E402
    MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH)
from omegaconf import DictConfig, OmegaConf                   # noqa: E402

from sweep import report, stats                               # noqa: E402

DEFAULT_URI = "sqlite:///mlflow.db"          # MLflow's own default: ./mlflow.db
DEFAULT_EXPERIMENT = "kmemcg-sweep"
SWEEP_ID_TAG = "kmemcg.sweep_id"
CHILD_KEY_TAG = "kmemcg.child_key"
ROLE_TAG = "kmemcg.role"
# config sections that define WHAT a sweep computes (-> params, immutable in MLflow);
# replications, stats, ray, output and tracking may change on a resume (-> tags)
IDENTITY_SECTIONS = ("name", "seed", "designs", "grid", "workload")
# a dead server must fail in seconds, not after MLflow's default 7 retries x 120 s; and
# no "View run ... at" line (plus the get_run behind it) for each of hundreds of child runs
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
HEALTH_TIMEOUT_S = 5
VERDICT_VALUE = {"better": 1.0, "indistinguishable": 0.0, "worse": -1.0}


class TrackingUnavailable(RuntimeError):
    """The tracking server could not be reached or refused the data; nothing is lost."""


# ---------------------------------------------------------------- entry point

def log_sweep(sweep_dir: Path, cfg=None) -> str:
    """Log a sweep folder to MLflow; returns the parent run id.

    ``cfg`` is the resolved config (DictConfig or mapping); None reads config.yaml.  The
    report is (re)built first when it is older than the results store."""
    sweep_dir = Path(sweep_dir)
    cfg = _plain(cfg) if cfg is not None else report.read_config(sweep_dir)
    meta = report.read_meta(sweep_dir)
    if not report.is_current(sweep_dir):
        report.build_report(sweep_dir)
    uri = tracking_uri(cfg)
    try:
        with client_env():
            check_reachable(uri)
            return _log(MlflowClient(tracking_uri=uri), sweep_dir, cfg, meta)
    except (MlflowException, OSError) as err:
        raise TrackingUnavailable(_unavailable(uri, sweep_dir, err)) from err


def tracking_uri(cfg: Mapping) -> str:
    """``tracking.uri`` of the config, else $MLFLOW_TRACKING_URI, else ./mlflow.db.

    A relative sqlite path is made absolute against the current folder: MLflow caches its
    store per URI string, so "sqlite:///mlflow.db" would keep writing to the first
    folder's file after a chdir."""
    uri = (cfg.get("tracking") or {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        uri = prefix + str(Path.cwd() / uri[len(prefix):])       # sqlite:////abs/path/mlflow.db
    return uri


@contextlib.contextmanager
def client_env() -> Iterator[None]:
    """CLIENT_ENV for the MLflow client while logging, unless the user set their own."""
    added = {k: v for k, v in CLIENT_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def check_reachable(uri: str) -> None:
    """Fail fast (one short request) when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as reply:
            reply.read()
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"no answer from {uri}/health: {getattr(err, 'reason', err)}") from err


def _unavailable(uri: str, sweep_dir: Path, err: Exception) -> str:
    return (f"MLflow tracking at {uri} failed: {type(err).__name__}: {str(err)[:300]}. "
            f"The results are safe in {sweep_dir / 'results.sqlite'}; when the server is back, "
            f"send them with: python -m sweep log {sweep_dir}")


def _plain(cfg) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


# ---------------------------------------------------------------- the logging itself

def _log(client: MlflowClient, sweep_dir: Path, cfg: dict, meta: dict) -> str:
    out = sweep_dir / report.REPORT_DIR
    aggregates = pd.read_parquet(out / report.AGGREGATES)
    comparisons = pd.read_parquet(out / report.COMPARISONS)
    experiment_id = ensure_experiment(client, (cfg.get("tracking") or {}).get("experiment") or DEFAULT_EXPERIMENT)
    sweep_id = sweep_identity(cfg, meta)
    existing = find_runs(client, experiment_id, sweep_id)
    step = int(aggregates["n_ok"].sum())           # grows as a resumed sweep adds workloads
    parent = RunContent(
        name=str(cfg.get("name") or "sweep"), params=parent_params(cfg, meta),
        metrics=parent_metrics(comparisons, aggregates),
        tags={SWEEP_ID_TAG: sweep_id, ROLE_TAG: "parent", "mlflow.source.name": "python -m sweep",
              "mlflow.note.content": verdict_note(comparisons, cfg.get("stats")), **parent_tags(cfg, meta)})
    parent_id = upsert_run(client, experiment_id, existing.get(""), parent, step)
    for (cell_id, design), row in aggregates.set_index(["cell_id", "design"]).iterrows():
        child = child_content(parent_id, sweep_id, cell_id, design, row, comparisons)
        run = existing.get(child.tags[CHILD_KEY_TAG])
        run_id = upsert_run(client, experiment_id, run, child, step)
        if run is None or run.info.status != "FINISHED":
            client.set_terminated(run_id, "FINISHED")
    _log_artifacts(client, parent_id, sweep_dir)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


@dataclass
class RunContent:
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def upsert_run(client: MlflowClient, experiment_id: str, run, content: RunContent, step: int) -> str:
    """Create the run, or send an existing one only what changed; returns its id.
    (Params are immutable in MLflow; the ones a run already has are never re-sent.)"""
    if run is None:
        run_id = client.create_run(experiment_id, run_name=content.name, tags=content.tags).info.run_id
        log_batch(client, run_id, content.metrics, content.params, {}, step)
        return run_id
    log_batch(client, run.info.run_id, changed(content.metrics, run.data.metrics),
              {k: v for k, v in content.params.items() if k not in run.data.params},
              changed(content.tags, run.data.tags), step)
    return run.info.run_id


def ensure_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def sweep_identity(cfg: Mapping, meta: Mapping) -> str:
    """Stable id of "this sweep": the config sections that define it + the model version."""
    defining = {key: cfg.get(key) for key in IDENTITY_SECTIONS}
    defining["model_version"] = meta.get("model_version")
    text = json.dumps(defining, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_runs(client: MlflowClient, experiment_id: str, sweep_id: str) -> dict[str, object]:
    """Runs of this sweep already in MLflow: child key (or "" for the parent) -> Run."""
    found, token = {}, None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'",
                                  max_results=1000, page_token=token)
        for run in page:
            found[run.data.tags.get(CHILD_KEY_TAG, "")] = run
        token = page.token
        if not token:
            return found


def child_content(parent_id: str, sweep_id: str, cell_id: str, design: str, row,
                  comparisons: pd.DataFrame) -> RunContent:
    return RunContent(
        name=f"{stats.cell_label(row)} {design}",
        params=child_params(cell_id, design, row),
        metrics={**child_metrics(row), **comparison_metrics(comparisons, cell_id, design)},
        tags={SWEEP_ID_TAG: sweep_id, CHILD_KEY_TAG: f"{cell_id}/{design}", ROLE_TAG: "child",
              "mlflow.parentRunId": parent_id, "kmemcg.cell_id": cell_id, "kmemcg.design": design})


def _log_artifacts(client: MlflowClient, run_id: str, sweep_dir: Path) -> None:
    for name in ("config.yaml", "sweep.json"):
        if (sweep_dir / name).exists():
            client.log_artifact(run_id, str(sweep_dir / name))
    client.log_artifacts(run_id, str(sweep_dir / report.REPORT_DIR), artifact_path=report.REPORT_DIR)


# ---------------------------------------------------------------- what goes into each run

def parent_params(cfg: Mapping, meta: Mapping) -> dict[str, str]:
    defining = {key: cfg.get(key) for key in IDENTITY_SECTIONS if cfg.get(key) is not None}
    return {**flatten(defining), "model_version": str(meta.get("model_version"))}


def parent_tags(cfg: Mapping, meta: Mapping) -> dict[str, str]:
    mutable = {key: value for key, value in cfg.items() if key not in IDENTITY_SECTIONS}
    tags = {f"config.{k}": v for k, v in flatten(mutable).items()}
    facts = {"git_commit": meta.get("git_commit"), "host": meta.get("host"),
             "ray_cpus": meta.get("ray_cpus"), "started": meta.get("started"),
             "finished": meta.get("finished")}
    tags.update({f"kmemcg.{k}": str(v) for k, v in facts.items() if v is not None})
    if meta.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(meta["git_commit"])
    return tags


def parent_metrics(comparisons: pd.DataFrame, aggregates: pd.DataFrame) -> dict[str, float]:
    """cells, workloads, and verdict/<candidate>_vs_<baseline>/<metric>/<verdict>: cells."""
    summary = stats.summarize_verdicts(comparisons)
    metrics = {"cells": float(aggregates["cell_id"].nunique()),
               "workloads": float(aggregates["n_workloads"].sum()),
               "workloads_failed": float(aggregates["n_errors"].sum())}
    for row in summary.itertuples(index=False):
        for verdict in stats.VERDICTS:
            metrics[f"verdict/{row.candidate}_vs_{row.baseline}/{row.metric}/{verdict}"] = float(getattr(row, verdict))
    return metrics


def child_params(cell_id: str, design: str, row) -> dict[str, str]:
    return {"cell_id": cell_id, "design": design, "limit": stats.format_size(row["limit"]),
            "high": stats.format_high(row["high"]), "order": str(int(row["order"])),
            "nodes": str(int(row["nodes"])), "mix": str(row["mix"])}


def child_metrics(row) -> dict[str, float]:
    """Every numeric aggregate of the (cell, design): counts, mean/, p50/, p99/, rate/
    (not the raw count/ columns behind the rates: they are in report/aggregates.parquet)."""
    return {key: float(value) for key, value in row.items()
            if key not in stats.AXES and not key.startswith("count/")
            and isinstance(value, numbers.Real) and not isinstance(value, bool)}


def comparison_metrics(comparisons: pd.DataFrame, cell_id: str, design: str) -> dict[str, float]:
    """vs_<baseline>/<metric>/{change_pct,p_holm,p_bh,verdict} where design is the candidate
    (diffs, raw p and CIs are in the report: every metric key costs ~0.5 ms per run to store)."""
    rows = comparisons[(comparisons["cell_id"] == cell_id) & (comparisons["candidate"] == design)]
    metrics = {}
    for row in rows.itertuples(index=False):
        prefix = f"vs_{row.baseline}/{row.metric}"
        metrics[f"{prefix}/change_pct"] = row.pct_change
        metrics[f"{prefix}/p_holm"] = row.p_holm
        metrics[f"{prefix}/p_bh"] = row.p_bh
        if row.verdict in VERDICT_VALUE:
            metrics[f"{prefix}/verdict"] = VERDICT_VALUE[row.verdict]
    return metrics


def verdict_note(comparisons: pd.DataFrame, stats_cfg=None) -> str:
    """The run description shown in the MLflow UI: where each design wins or loses."""
    lines = ["Significant cells per metric (better / worse); details in the report artifact.", ""]
    warning = stats.sweep_power_warning(comparisons, *stats.significance_settings(stats_cfg))
    if warning:
        lines[1:1] = [f"**Warning**: {warning}", ""]
    for row in stats.summarize_verdicts(comparisons).itertuples(index=False):
        if row.better or row.worse:
            lines.append(f"- {row.candidate} vs {row.baseline}, {row.metric}: "
                         f"{row.better} better / {row.worse} worse of {row.better + row.worse + row.indistinguishable}")
    if len(lines) == 2:
        lines.append("- no significant difference in any cell")
    return _clip("\n".join(lines), MAX_TAG_VAL_LENGTH)


def changed(new: Mapping, logged: Mapping) -> dict:
    """Entries whose value differs from what the run already shows (its latest values)."""
    return {k: v for k, v in new.items()
            if k not in logged or logged[k] != (v if isinstance(v, str) else float(v))}


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """{"grid": {"limit": ["16M", "32M"]}} -> {"grid.limit": "[16M, 32M]"}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = "[" + ", ".join(map(str, value)) + "]"
        else:
            flat[name] = str(value)
    return flat


# ---------------------------------------------------------------- batching

def log_batch(client: MlflowClient, run_id: str, metrics: Mapping[str, float],
              params: Mapping[str, str], tags: Mapping[str, str], step: int = 0) -> int:
    """Log in as few requests as MLflow's limits allow; non-finite metrics are left out
    (undefined, e.g. a rate with no attempts).  Returns the number of requests."""
    now = int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now, step) for k, v in metrics.items()
                   if v is not None and math.isfinite(float(v))]
    param_list = [Param(k, _clip(str(v), MAX_PARAM_VAL_LENGTH)) for k, v in params.items()]
    tag_list = [RunTag(k, _clip(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
    requests = 0
    for batch_metrics, batch_params, batch_tags in batches(metric_list, param_list, tag_list):
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
        requests += 1
    return requests


def batches(metrics: list, params: list, tags: list):
    """Split into requests of <= 1000 metrics, <= 100 params, <= 100 tags, <= 1000 entities."""
    while metrics or params or tags:
        p, t = params[:MAX_PARAMS_TAGS_PER_BATCH], tags[:MAX_PARAMS_TAGS_PER_BATCH]
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(p) - len(t))
        m = metrics[:room]
        yield m, p, t
        metrics, params, tags = metrics[len(m):], params[len(p):], tags[len(t):]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
