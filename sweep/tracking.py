"""MLflow tracking of a finished (or resumed) sweep - the only module that imports mlflow.

The numbers come from ``sweep.analysis`` (computed once, shared with the report); the
report itself is logged as it is on disk (``python -m sweep log`` builds it first when it
is missing or older than the results; this module never builds it).

The experiment is tagged for classic runs (``mlflow.experimentKind``), so the UI opens on
its runs table, and carries a description.  One **parent run** per sweep folder: its
description starts with the report's answer and the verdict on each claim; it carries
~20 headline metrics (per design pooled, per pair net better-minus-worse cells), the
sweep's real start and end time, the command line; artifacts: the self-contained
report.html and summary.png at the root, config.yaml, sweep.json and the whole report
folder.  One **child run** per (cell, design), named design first ("way2 · 32M o3 n2
nowait-burst"), with the cell's parameters, its aggregates from ``sweep.stats.aggregate``,
its paired comparisons (candidate - baseline: negative = better, the report's sign
convention) and the verdicts as string tags.  Everything is logged at step 0 from the
driver with ``MlflowClient.log_batch``, split to MLflow's per-request limits.

Runs are found again by tags (``kmemcg.sweep_id`` on all, ``kmemcg.child_key`` on
children), so logging the same sweep folder twice - after a resume, or ``python -m sweep
log`` after a failed attempt - updates the same runs instead of adding new ones.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import numbers
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
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

from sweep import analysis, fmt, stats                        # noqa: E402
from sweep.analysis import Analysis                           # noqa: E402
from sweep.outdir import SweepDir                             # noqa: E402
from sweep.store import DiskFault, disk_fault                 # noqa: E402

DEFAULT_URI = "sqlite:///mlflow.db"          # MLflow's own default: ./mlflow.db
DEFAULT_EXPERIMENT = "kmemcg-sweep"
SWEEP_ID_TAG = "kmemcg.sweep_id"
CHILD_KEY_TAG = "kmemcg.child_key"
ROLE_TAG = "kmemcg.role"
UPLOAD_TAG = "kmemcg.upload_incomplete"     # on the parent while its artifacts are not all stored
# config sections that define WHAT a sweep computes (-> params, immutable in MLflow);
# replications, stats, ray, output and tracking may change on a resume (-> tags)
IDENTITY_SECTIONS = ("name", "seed", "designs", "grid", "workload")
# a dead server must fail in seconds, not after MLflow's default 7 retries x 120 s; and
# no "View run ... at" line (plus the get_run behind it) for each of hundreds of child runs
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
HEALTH_TIMEOUT_S = 5
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}   # classic runs UI
DESIGN_NAMES = {"v4.3": "v4.3 is the kernel as shipped", "way1": "way1 Tejun Heo's design (merged in 4.4)",
                "way2": "way2 Vladimir Davydov's", "way2+": "way2+ Davydov's variant that also punts NOWAIT overage",
                "v6.18": "v6.18 today's kernel (per-object charging; no SLAB)"}
EXPERIMENT_DESCRIPTION = (
    "Which memcg kmem-charging design of the September 2015 thread causes more user-visible "
    "ENOMEM, overshoot over memory.high/max, reclaim (and reclaim under locks), SLUB order "
    "fallbacks and wrong-node slabs, and where? Simulated (kmemcg-sweep), not measured on a kernel. "
    "Designs run here: {designs}. Each sweep folder is one parent run: its description opens with "
    "the verdict and gives each claim of the thread its verdict, and its artifact report.html the "
    "evidence. Child runs are one per (cell, design), named design first; filter "
    "tags.`kmemcg.design` or group by it (docs/tracking.md has a runs-table recipe); the metrics "
    "under 0_headline/ sort first.")
# every logged metric is lower-is-better, and so is every difference: negative = better
SIGN_NOTE = ("Sign convention of every metric: lower is better; differences are candidate - baseline, so "
             "negative = better (net_worse_cells = cells worse minus cells better).")
HEADLINE_PREFIX = "0_headline/"              # digits sort before letters: the chart view shows these first
SIGNIFICANT_DIGITS = 4                       # a mean of 16 workloads means nothing past that
CLAIM_LINE_MAX = 160                         # one line per claim in the parent description


class TrackingUnavailable(RuntimeError):
    """The tracking server could not be reached or refused the data; nothing is lost."""


# ---------------------------------------------------------------- entry point

def log_sweep(sweep_dir: SweepDir | Path, cfg=None, runs: "Future | None" = None, live: "LiveRuns | None" = None) -> str:
    """Log a sweep folder to MLflow; returns the parent run id.

    ``cfg`` is the resolved config (DictConfig or mapping); None reads config.yaml.  The
    report folder is logged as it is (none yet: the runs without it).  ``runs``: the
    ``start_runs`` already logging the runs in a thread while the report was drawn; this
    waits for them, then uploads the report and ends the parent.  ``live``: the runs
    logged while the sweep ran (only what changed since is sent)."""
    sweep_dir = SweepDir(SweepDir.of(sweep_dir).path.resolve())
    cfg = sweep_dir.config_dict(cfg)
    uri = tracking_uri(cfg)
    try:
        logged = runs.result() if runs is not None else None      # (its thread sets client_env itself)
        with client_env():
            logged = logged or _log_runs(sweep_dir, cfg, uri, live)
            _upload(logged.client, logged.parent_id, sweep_dir)
            _finish(logged.client, logged.parent_id, logged.existing_parent, logged.end_ms, always=True)
            return logged.parent_id
    except (MlflowException, OSError) as err:
        raise TrackingUnavailable(_unavailable(uri, sweep_dir.path, err)) from err


def start_runs(sweep_dir: SweepDir | Path, cfg=None, live: "LiveRuns | None" = None) -> "Future":
    """The parent and child runs of ``log_sweep`` (all but the report's upload), logged in a
    thread from the cached analysis while the caller draws the report: the MLflow store's
    work overlaps the figures' (which run in processes of their own, ``sweep.pool``).
    Hand the future to ``log_sweep(runs=...)``; it re-raises what the thread raised."""
    import threading

    sweep_dir = SweepDir(SweepDir.of(sweep_dir).path.resolve())
    cfg = sweep_dir.config_dict(cfg)
    analysis.load(sweep_dir, cfg)        # computed (and cached) once, here, before either reads it
    future = Future()

    def runs() -> None:                  # a daemon: Ctrl-C during the report does not wait for it
        try:
            with client_env():
                future.set_result(_log_runs(sweep_dir, cfg, tracking_uri(cfg), live))
        except BaseException as err:     # handed to log_sweep, which says what failed
            future.set_exception(err)

    threading.Thread(target=runs, name="mlflow-runs", daemon=True).start()
    return future


@dataclass
class Logged:
    """What ``_log_runs`` leaves for the upload: the client, the parent run, and what it was."""
    client: MlflowClient
    parent_id: str
    existing_parent: object
    end_ms: int | None


class LiveRuns:
    """The parent run and the child runs of each cell as soon as it finished, logged while
    the sweep runs (``sweep.cellwise``): each child with its cell's own numbers (params,
    aggregates, diff and change against each baseline) and the verdicts that the
    correction across cells cannot change (``stats.settled_verdict``).  At the end,
    ``log_sweep(live=...)`` sends only what changed: the parent's numbers and note, the
    verdicts that waited for the correction.  ``runs`` mirrors what MLflow holds, so the
    end needs no search of the runs."""

    def __init__(self, sweep_dir: SweepDir, cfg, cells: pd.DataFrame):
        """``cells``: the axes of every planned cell (cell_id and the store's axis columns),
        which name the child runs as the end will (``child_labels``)."""
        sweep_dir = SweepDir(sweep_dir.path.resolve())
        cfg = sweep_dir.config_dict(cfg)
        self.uri = tracking_uri(cfg)
        check_reachable(self.uri)
        meta = sweep_dir.read_meta()
        with client_env():
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = ensure_experiment(self.client, experiment_name(cfg), _time_order(cfg["designs"]))
            self.sweep_id = sweep_identity(cfg, meta, sweep_dir.path)
            self.runs = find_runs(self.client, self.experiment_id, self.sweep_id)    # a resumed sweep's
            parent = RunContent(name=str(cfg.get("name") or "sweep"), params=parent_params(cfg, meta), metrics={},
                                tags={**_parent_identity(self.sweep_id, sweep_dir), **parent_tags(cfg, meta)},
                                times=(_ms(meta.get("started")), None))
            self.parent_id = self._upsert("", parent)
        self.labels = child_labels(cells)

    def log_cell(self, frame: pd.DataFrame, rows: list[dict], alpha: float) -> None:
        """The child runs of one finished cell: ``frame`` its stored rows, ``rows`` its
        comparisons (``stats.compare_cell``)."""
        from sweep import regime

        comparisons = settled_comparisons(rows, alpha)
        regime_of = _regime_lookup(regime.classify(frame))
        times = cell_times(frame)
        with client_env():
            for (cell, design), row in stats.aggregate(frame, alpha).set_index(["cell_id", "design"]).iterrows():
                child = child_content(self.parent_id, self.sweep_id, cell, design, row,
                                      comparisons[comparisons["candidate"] == design], regime_of.get((cell, design)),
                                      times.get((cell, design), (None, None)), label=self.labels.get(cell))
                self._upsert(child.tags[CHILD_KEY_TAG], child)

    def _upsert(self, key: str, content: RunContent) -> str:
        before = self.runs.get(key)
        run_id = upsert_run(self.client, self.experiment_id, before, content)
        self.runs[key] = _Held.after(run_id, before, content)
        return run_id


def settled_comparisons(rows: list[dict], alpha: float) -> pd.DataFrame:
    """A finished cell's comparisons (``stats.compare_cell``) as the child runs read them,
    with the verdicts known before the correction across cells (``stats.settled_verdict``;
    None where only the correction can tell).  Every column the runs read is there even
    when no pair of the cell had a workload to compare (no ``pct_change`` then)."""
    comparisons = pd.DataFrame(rows)
    for column in ("baseline", "candidate", "metric", "diff_mean", "pct_change", "p_value"):
        if column not in comparisons:
            comparisons[column] = math.nan
    comparisons["verdict"] = [stats.settled_verdict(p, alpha) for p in comparisons["p_value"]]
    return comparisons


@dataclass
class _Held:
    """A run as MLflow holds it after ``upsert_run`` (the fields ``upsert_run`` and
    ``_finish`` read of an ``mlflow.entities.Run``)."""
    info: object
    data: object

    @classmethod
    def after(cls, run_id: str, before, content: RunContent) -> "_Held":
        from types import SimpleNamespace

        old = before.data if before is not None else SimpleNamespace(metrics={}, params={}, tags={})
        metrics = {k: v for k, v in content.metrics.items() if v is not None and math.isfinite(float(v))}
        tags = {**content.tags, "mlflow.runName": content.name}
        finished = content.tags.get(ROLE_TAG) != "parent"
        info = SimpleNamespace(run_id=run_id, status="FINISHED" if finished else "RUNNING",
                               end_time=content.times[1] if finished else None)
        return cls(info, SimpleNamespace(metrics={**old.metrics, **metrics}, params={**old.params, **content.params},
                                         tags={**old.tags, **tags}))


def _parent_identity(sweep_id: str, sweep_dir: SweepDir) -> dict[str, str]:
    return {SWEEP_ID_TAG: sweep_id, ROLE_TAG: "parent", "mlflow.source.name": "python -m sweep",
            "kmemcg.sweep_dir": str(sweep_dir.path)}


def _log_runs(sweep_dir: SweepDir, cfg: dict, uri: str, live: "LiveRuns | None" = None) -> Logged:
    found = analysis.load(sweep_dir, cfg)
    check_reachable(uri)
    if live is not None and live.uri == uri:
        return _log(live.client, sweep_dir, cfg, sweep_dir.read_meta(), found, existing=live.runs)
    return _log(MlflowClient(tracking_uri=uri), sweep_dir, cfg, sweep_dir.read_meta(), found)


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


# ---------------------------------------------------------------- the logging itself

def _log(client: MlflowClient, sweep_dir: SweepDir, cfg: dict, meta: dict, found: Analysis,
         existing: dict | None = None) -> Logged:
    """The parent run (left RUNNING until its artifacts are stored) and every child run;
    ``existing``: this sweep's runs as MLflow holds them (None: looked up)."""
    aggregates, comparisons, summary = found.aggregates, found.table, found.summary()
    experiment_id = ensure_experiment(client, experiment_name(cfg), _time_order(found.designs))
    sweep_id = sweep_identity(cfg, meta, sweep_dir.path)
    existing = find_runs(client, experiment_id, sweep_id) if existing is None else existing
    sweep_times = (_ms(meta.get("started")), _ms(meta.get("finished")))
    parent = RunContent(
        name=str(cfg.get("name") or "sweep"), params=parent_params(cfg, meta),
        metrics=parent_metrics(summary, aggregates),
        tags={**_parent_identity(sweep_id, sweep_dir), "mlflow.note.content": parent_note(summary, found),
              **parent_tags(cfg, meta)},
        times=sweep_times)
    parent_id = upsert_run(client, experiment_id, existing.get(""), parent)
    times = cell_times(found.df)
    regime_of = _regime_lookup(found.regimes)
    labels = child_labels(found.df)
    mine = {key: rows for key, rows in comparisons.groupby(["cell_id", "candidate"], sort=False)}
    none = comparisons.iloc[0:0]
    for (cell_id, design), row in aggregates.set_index(["cell_id", "design"]).iterrows():
        child = child_content(parent_id, sweep_id, cell_id, design, row, mine.get((cell_id, design), none),
                              regime_of.get((cell_id, design)), times.get((cell_id, design), sweep_times),
                              label=labels.get(cell_id))
        upsert_run(client, experiment_id, existing.get(child.tags[CHILD_KEY_TAG]), child)
    return Logged(client, parent_id, existing.get(""), parent.times[1])


@dataclass
class RunContent:
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    times: tuple[int | None, int | None] = (None, None)     # start, end (ms since the epoch)


def upsert_run(client: MlflowClient, experiment_id: str, run, content: RunContent, step: int = 0) -> str:
    """Create the run, or send an existing one only what changed; returns its id.
    (Params are immutable in MLflow; the ones a run already has are never re-sent.)
    Every value is logged at ``step`` 0: one point per metric, not a history of dots."""
    tags = {**content.tags, "mlflow.runName": content.name}
    content.metrics = {k: rounded(v) for k, v in content.metrics.items()}
    if run is None:
        run_id = client.create_run(experiment_id, start_time=content.times[0], run_name=content.name,
                                   tags=content.tags).info.run_id
        log_batch(client, run_id, content.metrics, content.params, {}, step)
    else:
        run_id = run.info.run_id
        log_batch(client, run_id, changed(content.metrics, run.data.metrics),
                  {k: v for k, v in content.params.items() if k not in run.data.params},
                  changed(tags, run.data.tags), step)
    if content.tags.get(ROLE_TAG) != "parent":    # the parent ends after its artifacts
        _finish(client, run_id, run, content.times[1])
    return run_id


def _finish(client: MlflowClient, run_id: str, run, end_ms: int | None, always: bool = False) -> None:
    """FINISHED with the sweep's real end time (not the time of logging)."""
    if always or run is None or run.info.status != "FINISHED" or (end_ms and run.info.end_time != end_ms):
        client.set_terminated(run_id, "FINISHED", end_time=end_ms)


def experiment_name(cfg: Mapping) -> str:
    return (cfg.get("tracking") or {}).get("experiment") or DEFAULT_EXPERIMENT


def experiment_description(designs) -> str:
    return EXPERIMENT_DESCRIPTION.format(designs="; ".join(DESIGN_NAMES.get(d, d) for d in designs))


def ensure_experiment(client: MlflowClient, name: str, designs=("v4.3", "way1", "way2")) -> str:
    """The experiment, created if needed, tagged for the classic runs UI, with a description
    naming the designs run (those of this sweep and of the ones logged before it)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, tags={
            **EXPERIMENT_KIND, "mlflow.note.content": experiment_description(designs),
            "kmemcg.designs": ",".join(designs)})
        return experiment_id
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    known = [d for d in (experiment.tags.get("kmemcg.designs") or "").split(",") if d]
    designs = list(dict.fromkeys([*known, *designs]))
    wanted = {**EXPERIMENT_KIND, "mlflow.note.content": experiment_description(designs),
              "kmemcg.designs": ",".join(designs)}
    for key, value in changed(wanted, experiment.tags).items():
        client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def sweep_identity(cfg: Mapping, meta: Mapping, sweep_dir: Path | None = None) -> str:
    """Stable id of "this sweep": the config sections that define it, the model version and
    the sweep folder (two folders of the same config are two sweeps, two parent runs)."""
    defining = {key: cfg.get(key) for key in IDENTITY_SECTIONS}
    defining["model_version"] = meta.get("model_version")
    if sweep_dir is not None:
        defining["sweep_dir"] = str(Path(sweep_dir).resolve())
    text = json.dumps(defining, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ms(stamp) -> int | None:
    """sweep.json's '2026-11-25T10:00:00+0000' as ms since the epoch."""
    if not stamp:
        return None
    try:
        return int(datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
    except ValueError:
        return None


def cell_times(results: pd.DataFrame) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """(cell_id, design) -> when its first workload started and its last one finished."""
    if "finished_at" not in results:
        return {}
    done = results[["cell_id", "design", "finished_at", "elapsed_s"]].dropna(subset=["finished_at"])
    if done.empty:
        return {}
    done = done.assign(started_at=done["finished_at"] - done["elapsed_s"].fillna(0.0))
    span = done.groupby(["cell_id", "design"]).agg(start=("started_at", "min"), end=("finished_at", "max"))
    return {key: (int(row.start * 1000), int(row.end * 1000)) for key, row in span.iterrows()}


def _regime_lookup(regimes: pd.DataFrame | None) -> dict:
    if regimes is None or regimes.empty:
        return {}
    return dict(zip(zip(regimes["cell_id"], regimes["design"]), regimes["regime"]))


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


def _time_order(designs) -> list[str]:
    import core

    return [d for d in core.DESIGNS if d in designs] + [d for d in designs if d not in core.DESIGNS]


def child_labels(results: pd.DataFrame) -> dict[str, str]:
    """cell_id -> a label unique within the sweep: the block (when the sweep has blocks), then
    the report's cell label (limit, order, nodes, mix; memory.high, allocator, CPUs and
    fragmentation where they vary); a cell_id suffix only if two cells still read the same."""
    from sweep.plots import cell_labels

    labels = cell_labels(results)
    axes = stats.cell_axes(results)
    if "block" in axes and axes["block"].notna().any():
        labels = {c: f"{axes.loc[c, 'block']} · {text.split(' [')[0]}" for c, text in labels.items()}
    seen = pd.Series(labels).value_counts()
    return {c: f"{text} ({c})" if seen[text] > 1 else text for c, text in labels.items()}


def child_name(design: str, row, label: str | None = None) -> str:
    """Design first, so a cell's designs differ where the runs table cuts names short."""
    return f"{design} · {label or fmt.cell_label(row)}"


def child_content(parent_id: str, sweep_id: str, cell_id: str, design: str, row,
                  mine: pd.DataFrame, regime: str | None = None, times=(None, None),
                  label: str | None = None) -> RunContent:
    """``mine``: the comparison rows where ``design`` is the candidate in ``cell_id``."""
    mine = _as_lists(mine, COMPARED_COLUMNS)       # read once: three helpers below walk them
    tags = {SWEEP_ID_TAG: sweep_id, CHILD_KEY_TAG: f"{cell_id}/{design}", ROLE_TAG: "child",
            "mlflow.parentRunId": parent_id, "kmemcg.cell_id": cell_id, "kmemcg.design": design,
            **verdict_tags(mine)}
    if regime:
        tags["kmemcg.regime"] = regime
    return RunContent(name=child_name(design, row, label), params=child_params(cell_id, design, row),
                      metrics={**headline_metrics(row, mine), **child_metrics(row), **comparison_metrics(mine)},
                      tags=tags, times=times)


def _upload(client: MlflowClient, run_id: str, sweep_dir: SweepDir) -> None:
    """The artifacts, under a note that stays on the parent run until every one is stored:
    an upload cut short (a full artifact store, a kill) is never half-logged unsaid, and the
    next ``python -m sweep log`` that completes removes the note."""
    client.set_tag(run_id, UPLOAD_TAG, f"the report upload did not complete; finish it with: "
                                       f"python -m sweep log {sweep_dir.path}")
    try:
        _log_artifacts(client, run_id, sweep_dir)
    except OSError as err:
        store = client.get_run(run_id).info.artifact_uri.removeprefix("file://")
        fault = disk_fault(err, store)
        if fault is None:
            raise
        raise DiskFault(f"{store} (MLflow's artifact store)", fault.problem) from err
    client.delete_tag(run_id, UPLOAD_TAG)


def _log_artifacts(client: MlflowClient, run_id: str, sweep_dir: SweepDir) -> None:
    """config.yaml, sweep.json, and at the root what a reader opens first: the
    self-contained report.html and summary.png; the whole report folder under report/."""
    out = sweep_dir.report_dir
    for path in (sweep_dir.config, sweep_dir.meta, out / "report.html", out / "summary.png"):
        if path.exists():
            client.log_artifact(run_id, str(path))
    if out.is_dir():
        client.log_artifacts(run_id, str(out), artifact_path=out.name)


# ---------------------------------------------------------------- what goes into each run

def parent_params(cfg: Mapping, meta: Mapping) -> dict[str, str]:
    """The sections that define the sweep, and each block's own axes and workload
    (``blocks.<name>.grid.limit``): the blocks, not the top-level defaults, define the cells."""
    defining = {key: cfg.get(key) for key in IDENTITY_SECTIONS if cfg.get(key) is not None}
    blocks = {str(b.get("name") or i): {k: v for k, v in b.items() if k != "name"}
              for i, b in enumerate(cfg.get("blocks") or []) if isinstance(b, Mapping)}
    block_params = {k: v for k, v in flatten(blocks, "blocks.").items() if v != "None"}   # unset in the block
    return {**flatten(defining), **block_params, "model_version": str(meta.get("model_version"))}


def parent_tags(cfg: Mapping, meta: Mapping) -> dict[str, str]:
    mutable = {key: value for key, value in cfg.items() if key not in (*IDENTITY_SECTIONS, "blocks")}  # blocks: params
    tags = {f"config.{k}": v for k, v in flatten(mutable).items()}
    facts = {"git_commit": meta.get("git_commit"), "host": meta.get("host"),
             "ray_cpus": meta.get("ray_cpus"), "started": meta.get("started"),
             "finished": meta.get("finished"), "command": meta.get("command"),
             "overrides": " ".join(meta["overrides"]) if meta.get("overrides") else None}
    tags.update({f"kmemcg.{k}": str(v) for k, v in facts.items() if v is not None})
    if meta.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(meta["git_commit"])
    return tags


def parent_metrics(summary: Mapping, aggregates: pd.DataFrame) -> dict[str, float]:
    """About 20 headline numbers: cells and workloads; ``pooled/<design>/<metric>`` (mean
    over every workload) and ``net_worse_cells/<candidate>_vs_<baseline>/<metric>`` (cells
    worse minus cells better: negative = better, like every other metric) for the headline
    metrics, and the net over all compared metrics per pair (``net_worse_cells/<pair>/all``)."""
    metrics = {"cells": float(aggregates["cell_id"].nunique()),
               "workloads": float(aggregates["n_workloads"].sum()),
               "workloads_failed": float(aggregates["n_errors"].sum())}
    headline = summary.get("headline") or []
    for design, values in (summary.get("pooled") or {}).items():
        for metric in headline:
            if values.get(metric) is not None:
                metrics[f"pooled/{design}/{metric}"] = values[metric]
    for pair, values in (summary.get("net_cells") or {}).items():
        for metric in headline:
            if metric in values:
                metrics[f"net_worse_cells/{pair}/{metric}"] = -float(values[metric])
        metrics[f"net_worse_cells/{pair}/all"] = -float(sum(values.values()))
    return metrics


def child_params(cell_id: str, design: str, row) -> dict[str, str]:
    """The cell's id, design and every axis value it has (block and optional axes included)."""
    params = {"cell_id": cell_id, "design": design, "limit": fmt.format_size(row["limit"]),
              "high": fmt.format_high(row["high"]), "order": str(int(row["order"])),
              "nodes": str(int(row["nodes"])), "mix": str(row["mix"])}
    for axis in stats.AXES:
        value = row.get(axis) if hasattr(row, "get") else None
        if axis not in params and value is not None and not (isinstance(value, float) and math.isnan(value)):
            params[axis] = f"{value:g}" if isinstance(value, float) else str(value)
    return params


def headline_metrics(row, comparisons: pd.DataFrame | Mapping[str, list]) -> dict[str, float]:
    """The few numbers a reader compares first (``0_headline/``, sorted before the rest):
    the cell's ENOMEM share and the means of the headline metrics, and the change of each
    against the baseline (% of its mean, negative = better)."""
    out = {}
    for name in stats.HEADLINE:
        column = "rate/enomem_workloads" if name == "enomem" else f"mean/{name}"
        if column in row:
            out[f"{HEADLINE_PREFIX}{name}"] = row[column]
    for baseline, metric, pct_change in _columns(comparisons, "baseline", "metric", "pct_change"):
        if baseline == stats.BASELINE and metric in stats.HEADLINE:
            out[f"{HEADLINE_PREFIX}{metric}_change_pct_vs_{baseline}"] = pct_change
    return out


# what the comparison helpers read of a child's comparison rows
COMPARED_COLUMNS = ("baseline", "metric", "diff_mean", "pct_change", "verdict")


def _as_lists(rows: pd.DataFrame, names) -> dict[str, list]:
    """Column -> its values as iterating the column (and itertuples) gives them."""
    return {name: list(rows[name]) for name in names}


def _columns(rows: pd.DataFrame | Mapping[str, list], *names: str):
    """The rows' values of ``names``, row by row, as itertuples gives them - without its
    cost: itertuples takes every column (33) and builds a namedtuple class per call, which
    made these helpers most of the time of logging a few hundred child runs."""
    return zip(*(rows[name] for name in names))


def child_metrics(row) -> dict[str, float]:
    """Every numeric aggregate of the (cell, design): counts, mean/, p50/, p99/, rate/
    (not the raw count/ columns behind the rates: they are in report/aggregates.parquet)."""
    return {key: float(value) for key, value in row.items()
            if key not in stats.AXES and not key.startswith("count/") and _is_number(value)}


def _is_number(value) -> bool:
    """A real number but not a bool (float and int tested first: the ABC check is slow)."""
    return not isinstance(value, bool) and (isinstance(value, (float, int)) or isinstance(value, numbers.Real))


def comparison_metrics(rows: pd.DataFrame | Mapping[str, list]) -> dict[str, float]:
    """vs_<baseline>/<metric>/{diff,change_pct} of the comparisons where this run's design
    is the candidate: diff = candidate - baseline (negative = better, as in the report);
    change_pct the same in % of the baseline, left out where the baseline is 0.  Both are
    the cell's own, so they are logged while the sweep runs.  The p-values adjusted across
    cells decide the ``verdict/`` tags; they and the CIs are in the report (comparisons
    table): every metric key costs ~0.6 ms per run to store."""
    metrics = {}
    for baseline, metric, diff, change in _columns(rows, "baseline", "metric", "diff_mean", "pct_change"):
        prefix = f"vs_{baseline}/{metric}"
        metrics[f"{prefix}/diff"] = diff
        metrics[f"{prefix}/change_pct"] = change
    return metrics


def rounded(value, digits: int = SIGNIFICANT_DIGITS):
    """``value`` to ``digits`` significant digits (None and non-finite values as they are)."""
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) and value else value


def verdict_tags(rows: pd.DataFrame | Mapping[str, list]) -> dict[str, str]:
    """verdict/vs_<baseline>/<metric> = better | worse | indistinguishable | untestable."""
    return {f"verdict/vs_{baseline}/{metric}": verdict
            for baseline, metric, verdict in _columns(rows, "baseline", "metric", "verdict")
            if isinstance(verdict, str)}      # (while the sweep runs: only the settled ones)


def parent_note(summary: Mapping, found: Analysis) -> str:
    """The parent run's description, within MLflow's limit by construction: the verdict, one
    line per claim (each clipped to CLAIM_LINE_MAX), the sign convention and a pointer to
    report.html.  The per-metric answer and the claims' full reasons are in report.html and
    report/summary.json (artifacts)."""
    head = [summary.get("verdict") or "No verdict: the sweep ran a single design.", ""]
    tail = []
    warning = stats.sweep_power_warning(found.table, found.alpha, found.correction)
    if warning:
        tail += ["", _clip(f"**Warning**: {warning}", 600)]
    tail += ["", SIGN_NOTE, "", "The evidence: artifact report.html (self-contained: the comparison table, "
             "each claim's evidence, per-cell tables at its end); the per-metric answer: report/summary.json."]
    claims = summary.get("claims") or []
    middle = []
    if claims:
        middle = [f"**The {len(claims)} claims of the 2015 thread** (verdict rule and evidence: report.html)", ""]
        # every claim gets a line, shortened so that all of them fit beside the verdict
        room = MAX_TAG_VAL_LENGTH - len("\n".join(head + middle + tail)) - 2 * len(claims)
        width = min(CLAIM_LINE_MAX, room // len(claims))
        middle += [_clip(f"- {c['id']}: **{c['verdict']}**" + (f" - {c['reason']}" if c.get("reason") else ""),
                         max(width, len(f"- {c['id']}: **{c['verdict']}**"))) for c in claims]
    return "\n".join(head + middle + tail)


def ui_url(base: str, experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """A page of the MLflow UI.  ``workflowType=machine_learning`` opens the classic runs
    views: MLflow 3.17's UI picks GenAI or classic from this (or the user's toggle, which it
    remembers), not from the experiment's ``mlflow.experimentKind`` tag."""
    page = f"#/experiments/{experiment_id}"
    if run_id:
        page += f"/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return f"{base.rstrip('/')}/{page}?workflowType=machine_learning"


def run_url(cfg: Mapping, run_id: str) -> tuple[str, str | None]:
    """(the URL of the run in the MLflow UI, the command that starts that UI or None).
    A sqlite store needs ``mlflow ui`` started on it (default port 5000)."""
    uri = tracking_uri(cfg)
    with client_env():
        experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    if uri.startswith(("http://", "https://")):
        return ui_url(uri, experiment_id, run_id), None
    mlflow = Path(sys.executable).parent / "mlflow"
    try:
        mlflow = mlflow.relative_to(Path.cwd())         # .venv/bin/mlflow
    except ValueError:
        pass
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    here = str(Path.cwd() / "mlflow.db")
    command = f"{mlflow} ui" if db == here else f"{mlflow} ui --backend-store-uri {uri}"
    return ui_url("http://127.0.0.1:5000", experiment_id, run_id), command


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
