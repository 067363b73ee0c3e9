"""python -m sweep: run a sweep, or log / report / export a finished one.

    python -m sweep CONFIG.yaml [key=value ...] [--dry-run [-v]] [--fresh] [--shard i/N] [--local]
    python -m sweep log    SWEEP_DIR [key=value ...]   # (re)log to MLflow, e.g. tracking.uri=...
    python -m sweep report SWEEP_DIR [key=value ...]   # (re)build the report
    python -m sweep export SWEEP_DIR [--parquet FILE] [--all]

Exit status: 0 done; 1 some workloads failed (stored as error rows); 2 bad config, usage,
output folder or a damaged store (nothing started); 3 results stored but report or tracking
failed; 4 another driver is using the sweep folder; 5 the run stopped early (e.g. the local
Ray or the cluster's head died): finished work kept, rerun resumes; 6 a filesystem the run
writes to (the sweep folder, Ray's temp folder, MLflow's artifact store) is full or read-only:
finished work kept, the line names the path, rerun resumes; 130 interrupted (finished work
kept; rerun resumes).  Ray is imported only when there is work for it, so config errors
never start Ray; with --local the workloads run in this process and Ray is never imported.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from collections import Counter

import shutil
from pathlib import Path

from sweep import config, grid, interrupt, plan
from sweep.claims import CLAIMS_FILE, load_claims
from sweep.config import ConfigError
from sweep.outdir import SweepBusy, SweepDir
from sweep.progress import format_seconds, plural
from sweep.store import DiskFault, Store, StoreDamaged, disk_fault

OK, FAILED, USAGE, POSTPROCESS, BUSY, STOPPED, DISK, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130
SUBCOMMANDS = ("log", "report", "export")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _subcommand(argv)
        return _main(_run_parser().parse_intermixed_args(argv), argv)
    except (ConfigError, StoreDamaged) as err:
        print(f"config error: {err}", file=sys.stderr)
        return USAGE
    except OSError as err:      # (a DiskFault is not one: see below)
        if (fault := disk_fault(err)) is None:
            raise
        return _disk_full(fault)
    except DiskFault as err:    # before the run began, e.g. config.yaml on a full disk
        return _disk_full(err)
    except KeyboardInterrupt:   # before the run began (config, planning, imports, dry run)
        print("interrupted: nothing was started", file=sys.stderr)
        return INTERRUPTED


def _main(args, argv: list[str]) -> int:
    shard = grid.Shard.parse(args.shard) if args.shard else None
    cfg = config.load(args.config, args.overrides)
    cells = grid.build_cells(cfg, config.load_mixes(cfg, args.config))
    cells = [c for c in cells if shard is None or shard.holds(c)]
    _check_stats_available(cfg)
    claims_path = config.claims_file(cfg, args.config)
    claims = load_claims(claims_path) if claims_path else []
    plan.check_size(len(cells), len(cfg.designs), cfg.stats.max_replications)
    claims_path = config.claims_file(cfg, args.config)
    claims = load_claims(claims_path) if claims_path else []
    sweep_dir = SweepDir.for_config(cfg, shard)
    sweep_dir.check_usable()
    if not args.fresh:
        Store.check(sweep_dir.results)
    if args.dry_run:
        return _dry_run(cfg, cells, sweep_dir, shard, args.fresh, claims, verbose=args.verbose, local=args.local)
    if claims_path:   # the report reads the registry from the sweep folder (shards: their parent)
        Path(cfg.output.dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(claims_path, Path(cfg.output.dir) / CLAIMS_FILE)
    return _run(cfg, cells, sweep_dir, args.fresh, shard, claims, command=_command(argv, args.overrides),
                local=args.local)


# --- run ----------------------------------------------------------------------------


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Subcommands: log|report|export SWEEP_DIR (see docs/sweep.md)")
    parser.add_argument("config", help="sweep YAML, e.g. configs/grid.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. grid.nodes=[1,2] replications=4")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (cells, workloads, regimes) and an estimated time; run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="with --dry-run: also one line per cell")
    parser.add_argument("--fresh", action="store_true", help="discard stored results and start over")
    parser.add_argument("--shard", metavar="i/N", help="run only shard i of N (whole cells, by key hash)")
    parser.add_argument("--local", action="store_true",
                        help="run the workloads in this process, one chunk at a time, without Ray (same "
                             "results, one CPU; ray.* settings other than chunk_seconds are ignored)")
    return parser


def _check_stats_available(cfg) -> None:
    if not config.is_adaptive(cfg):
        return
    try:
        from sweep.stats import cells_needing_more  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"stats.max_replications: adding replications needs "
                          f"sweep.stats.cells_needing_more, which is not available ({err})") from None


def _command(argv: list[str], overrides: list[str]) -> dict:
    """The command line as typed, and its overrides: the MLflow parent run shows both."""
    import shlex

    return {"command": shlex.join(["python", "-m", "sweep", *argv]), "overrides": list(overrides)}


def _run(cfg, cells, sweep_dir: SweepDir, fresh: bool, shard, claims=(), command: dict | None = None,
         local: bool = False) -> int:
    from sweep import campaign

    summary = None
    cellwise = _cellwise(cfg, cells, sweep_dir, shard)
    try:
        with interrupt.polling():       # a first Ctrl-C in here is the campaign's to answer
            summary = campaign.run_sweep(cfg, cells, sweep_dir, _executor(cfg, sweep_dir, local), fresh=fresh,
                                         shard=shard, on_cells=cellwise.finished if cellwise else None)
            if command and summary.meta_written:
                try:
                    sweep_dir.update_meta(**command)
                except DiskFault as err:        # the disk filled (or turned read-only) just now
                    summary.meta_written = False
                    summary.disk = summary.disk or err
                    summary.failure = summary.failure or str(err)
            _print_summary(cfg, summary, sweep_dir)
            if summary.interrupted or summary.failure:
                if cellwise:
                    cellwise.close(wait=False)
                return _stopped_early(summary, sweep_dir)
            _print_regimes(sweep_dir, claims)
            # the cells that finished last: their share is part of what follows the last workload
            live = cellwise.close(stop=interrupt.stop_requested) if cellwise else None
            stopped = interrupt.stop_requested()     # Ctrl-C after the last workload
        if stopped:
            raise KeyboardInterrupt
        failed = FAILED if summary.errors or summary.lost else OK
        if summary.lost:
            tries = plural(cfg.ray.max_retries + 1, "time")
            print(f"lost: {plural(summary.lost, 'workload')} whose worker died {tries} "
                  f"(ray.max_retries={cfg.ray.max_retries}; last: {summary.lost_reason}); stored as error rows; "
                  f"rerun the same command to run them again", file=sys.stderr)
        if shard:
            print(f"shard {shard.index}/{shard.count} done. When every shard is done: "
                  f"python -m sweep report {sweep_dir.path.parent} && python -m sweep log {sweep_dir.path.parent}",
                  file=sys.stderr)
            return failed
        post = _report_and_log(sweep_dir, cfg, log=cfg.tracking.enabled, report=cfg.output.report, live=live)
        return failed or post
    except SweepBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return BUSY
    except KeyboardInterrupt:
        if summary is None:
            raise
        if summary.interrupted or summary.failure:
            return INTERRUPTED             # its own line is printed already
        where = sweep_dir.path.parent if shard else sweep_dir.path
        print(f"interrupted: every workload is stored in {sweep_dir.results}; build the report with: "
              f"python -m sweep report {where}; log it with: python -m sweep log {where}", file=sys.stderr)
        return INTERRUPTED


def _disk_full(fault: DiskFault) -> int:
    print(f"disk error: {fault}; nothing was started; make room (or make it writable) and rerun the same "
          f"command", file=sys.stderr)
    return DISK


def _cellwise(cfg, cells, sweep_dir: SweepDir, shard):
    """The thread that does each finished cell's share of the report and MLflow while the
    sweep runs (``sweep.cellwise``); none for a shard (its report is built from every shard
    later) or a run that neither reports nor logs."""
    if shard or not (cfg.output.report or cfg.tracking.enabled):
        return None
    from sweep.cellwise import Cellwise

    return Cellwise(sweep_dir, cfg, cells, log=cfg.tracking.enabled)


def _executor(cfg, sweep_dir: SweepDir, local: bool):
    if local:
        from sweep.local import LocalExecutor

        return LocalExecutor()
    from sweep.runner import RayExecutor   # Ray's module: loaded only once a run is certain

    return RayExecutor(cfg.ray, sweep_dir)


def _print_regimes(sweep_dir: SweepDir, claims) -> None:
    """Regime counts of the stored results, and the warnings of sweep.regime."""
    from sweep import regime

    with Store(sweep_dir.results) as store:
        regimes = regime.classify(store.dataframe())
    if regimes.empty:
        return
    print(regime.format_summary(regime.summary(regimes)), file=sys.stderr)
    for text in regime.warnings(regimes, claims):
        print(f"warning: {text}", file=sys.stderr)


def _stopped_early(summary, sweep_dir: SweepDir) -> int:
    stored = f"{summary.ran} workloads of this run (+{summary.skipped} from before) are stored in {sweep_dir.results}"
    if summary.interrupted:
        print(f"interrupted: {stored}; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    if summary.disk:
        unrecorded = "" if summary.meta_written else f"; {sweep_dir.meta} could not be updated"
        print(f"disk error: {summary.disk}; {stored}{unrecorded}; no report or MLflow run was made from part of "
              f"the data; make room (or make it writable) and rerun the same command to resume", file=sys.stderr)
        return DISK
    print(f"stopped: {summary.failure}; {stored}; no report or MLflow run was made from part of the data; "
          f"rerun the same command to resume", file=sys.stderr)
    return STOPPED


def _print_summary(cfg, summary, sweep_dir: SweepDir) -> None:
    cpus = " in the driver process (--local)" if summary.executor == "local" else \
        f" on {plural(summary.cpus, 'CPU')}" if summary.cpus else ""
    retried = f", {summary.retried:,} re-run after a lost worker" if summary.retried else ""
    print(f"sweep {cfg.name!r}: {plural(summary.cells, 'cell')}, {plural(summary.planned, 'workload')}; "
          f"{summary.skipped:,} already stored, {summary.ran:,} ran ({summary.ok:,} ok, "
          f"{plural(summary.errors, 'error')}, {summary.lost:,} lost{retried}) in "
          f"{format_seconds(summary.seconds)}{cpus}; results: {sweep_dir.results}", file=sys.stderr)
    if summary.disk:        # the store may not even open now (a read-only WAL database)
        return
    with Store(sweep_dir.results) as store:
        for cell_id, design, error in store.errors(limit=5):
            print(f"  error in {cell_id} [{design}]: {error}", file=sys.stderr)


# --- dry run ------------------------------------------------------------------------


def _dry_run(cfg, cells, sweep_dir: SweepDir, shard, fresh: bool = False, claims=(), verbose: bool = False,
             local: bool = False) -> int:
    """The summary first (cells, workloads, estimate, regimes); per-cell lines with -v."""
    import core

    workloads = grid.workloads(cells, cfg.designs, cfg.replications, cfg.seed, core.MODEL_VERSION)
    stored = set() if fresh else _stored_ok_keys(sweep_dir)
    missing = plan.ordered([w for w in workloads if w.key not in stored])
    cpus = cfg.ray.num_cpus or os.cpu_count() or 1
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    print(f"sweep {cfg.name!r} (model {core.MODEL_VERSION}){' ' + shard.label if shard else ''}")
    for block, one in config.block_configs(cfg):
        axes = ", ".join(f"{a}={_axis_text(one.grid[a])}" for a in config.GRID_AXES if one.grid[a] is not None)
        print(f"axes of block {block}: {axes}" if cfg.blocks else f"axes: {axes}")
    print(f"designs: {', '.join(cfg.designs)}; replications: {cfg.replications}"
          + (f" (adaptive up to {cfg.stats.max_replications})" if config.is_adaptive(cfg) else ""))
    print(f"cells: {len(cells):,}")
    for design, n in grid.skipped_designs(cfg, cells).items():
        why = (next(c.refused[design] for c in cells if design in c.refused) if config.is_kernel_row(design)
               else "no such allocator in that kernel: SLAB was removed in 6.8")
        print(f"{design}: not run in {plural(n, 'cell')} ({why})")
    print(f"workloads: {len(workloads):,} ({len(workloads) - len(missing):,} stored in {sweep_dir.results}, "
          f"{len(missing):,} to run)")
    if missing:
        where = ("this process (--local)" if local else f"the cluster at {address}" if address
                 else f"a local Ray, {plural(cpus, 'CPU')}")
        calibration = _print_estimate(cfg, missing, 1 if local else cpus, where, local)
        _print_regime_estimate(workloads, calibration, claims, len(cells))
    if verbose:
        per_cell = Counter(w.cell.cell_id for w in missing)
        print("cells (id: workloads to run):")
        for cell in cells:
            print(f"  {cell.cell_id}: {per_cell[cell.cell_id]}")
    else:
        print("(add -v for one line per cell)")
    print("dry run: nothing was started or stored")
    return OK


def _print_estimate(cfg, missing, cpus: int, where: str, local: bool = False) -> None:
    on_kernel = [w for w in missing if config.is_kernel_row(w.design)]
    if on_kernel:       # never timed here: a boot takes longer than the calibration budget
        print(f"real kernel: {plural(len(on_kernel), 'workload')} in "
              f"{plural(len(plan.kernel_chunks(on_kernel, boots_at_once=1 if local else cpus)), 'boot')} "
              f"(~6-15 s each under TCG, plus 10-30 s per stream of 300 entries)")
    missing = [w for w in missing if not config.is_kernel_row(w.design)]
    if not missing:
        return plan.Calibration(0.0, [], [], lower_bound=True)
    calibration = plan.calibrate(missing)
    spw = calibration.seconds_per_workload
    chunks = plan.chunks(missing, spw, cfg.ray.chunk_seconds)
    if calibration.lower_bound:
        print(f"calibration: no workload finished in {spw:.1f}s; each takes longer, so the estimate "
              f"below is a lower bound")
    else:
        print(f"calibration: {plural(len(calibration.workloads), 'workload')} ran, {spw:.3f}s each on average")
    size = f"up to {plural(len(chunks[0]), 'workload')}, ~{len(chunks[0]) * spw:.2f}s of work each"
    if local:
        print(f"chunks: {len(chunks):,} ({size}), one at a time")
    else:
        print(f"Ray tasks: {len(chunks):,} ({size}), at most {cfg.ray.max_in_flight or 2 * cpus} in flight")
    est = plan.estimate_seconds(len(missing), spw, cpus, with_startup=not local)
    at_least = "at least " if calibration.lower_bound else ""
    start = "" if local else f" (incl. ~{plan.RAY_STARTUP_S:.0f}s Ray start)"
    print(f"estimated time: {at_least}{format_seconds(est)} on {where}{start}")
    return calibration


def _print_regime_estimate(workloads, calibration, claims, n_cells: int) -> None:
    """Regimes estimated from replication 0 of as many cells as a short budget allows."""
    from sweep import regime

    if calibration.lower_bound:     # not one workload finished within the budget: none can be sampled
        print("regime estimate: skipped (no calibration workload finished within its budget)")
        return
    workloads = [w for w in workloads if not config.is_kernel_row(w.design)]    # no boot in a dry run
    regimes, sampled = plan.sample_regimes(workloads, done=list(zip(calibration.workloads, calibration.results)))
    if not sampled:
        return
    print(f"regime estimate from replication 0 of {sampled} of {n_cells} cells: "
          + regime.format_summary(regime.summary(regimes)))
    for text in regime.warnings(regimes, claims if sampled == n_cells else ()):
        print(f"warning (estimate): {text}")


def _axis_text(values) -> str:
    if isinstance(values, (str, int, float)):
        return str(values)
    return "[" + ",".join(map(str, values)) + f"] ({len(values)})"


def _stored_ok_keys(sweep_dir: SweepDir) -> set[str]:
    if not sweep_dir.results.exists():
        return set()
    with Store(sweep_dir.results) as store:
        return store.keys("ok")


# --- report and tracking ---------------------------------------------------------------


def _report_and_log(sweep_dir: SweepDir, cfg, log: bool = True, report: bool = True, live=None) -> int:
    """Build the report, then log to MLflow; a failure or Ctrl-C here loses nothing (the
    results are stored) and the message names the command that redoes the step.  ``live``:
    the MLflow runs logged while the sweep ran (``tracking.LiveRuns``)."""
    status = OK
    runs = _start_runs(sweep_dir, cfg, live) if report and log else None
    for step, wanted, do in (("report", report, _build_report), ("log", log, _log)):
        if not wanted:
            continue
        if step == "log":
            do = functools.partial(_log, runs=runs, live=live)
        redo = f"python -m sweep {step} {sweep_dir.path}"
        try:
            interrupt.checkpoint(step)
            do(sweep_dir, cfg)
        except KeyboardInterrupt:
            print(f"interrupted during the {'report' if step == 'report' else 'MLflow logging'}: the results "
                  f"are intact in {sweep_dir.results}; redo it with: {redo}", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:   # incl. ImportError while sweep.report is not installed
            fault = disk_fault(err) or disk_fault(err.__cause__ or err)
            if fault is not None:
                if step == "report" or sweep_dir.path in fault.path.parents:
                    # no half-written report: it could pass for current (`log` builds a missing one first)
                    shutil.rmtree(sweep_dir.report_dir, ignore_errors=True)
                print(f"{'report' if step == 'report' else 'MLflow logging'} failed: disk error: {fault}; the "
                      f"results are intact in {sweep_dir.results}; make room (or make it writable), then: {redo}",
                      file=sys.stderr)
                return DISK
            print(f"{'report' if step == 'report' else 'tracking'} failed: {type(err).__name__}: {err}\n"
                  f"  results are safe in {sweep_dir.results}; retry with: {redo}", file=sys.stderr)
            status = POSTPROCESS
    if report or log:
        _print_verdict(sweep_dir, cfg)
    return status


def _print_verdict(sweep_dir: SweepDir, cfg) -> None:
    """The verdict (sweep.analysis.verdict_text), the last thing a run prints: from the
    report's summary.json when it is current, else from the cached analysis."""
    import json

    from sweep import analysis, report

    try:
        if report.is_current(sweep_dir, cfg):
            text = json.loads((sweep_dir.report_dir / report.SUMMARY).read_text())["verdict"]
        else:
            text = analysis.verdict_text(analysis.load(sweep_dir, cfg))
    except Exception as err:     # the steps above said what failed; the verdict is not worth a crash
        print(f"verdict: not available ({type(err).__name__}: {err})", file=sys.stderr)
        return
    print("\nVerdict: " + text.replace("**", ""))


def _build_report(sweep_dir: SweepDir, cfg) -> None:
    from sweep.report import build_report

    print(f"report: {build_report(sweep_dir, cfg=cfg) / 'report.html'}", file=sys.stderr)


def _start_runs(sweep_dir: SweepDir, cfg, live=None):
    """Both steps wanted: the MLflow runs start in a thread (``tracking.start_runs``) while
    the report is drawn; the log step then uploads the report.  None when that cannot start
    (the log step then does it all, and says what failed)."""
    try:
        from sweep.tracking import start_runs

        return start_runs(sweep_dir, cfg, live)
    except Exception:
        return None


def _log(sweep_dir: SweepDir, cfg, runs=None, live=None) -> None:
    """MLflow carries the report, so a missing or stale one is built first (from the same
    cached analysis the runs are made of).  ``runs``: already being logged (``_start_runs``)."""
    from sweep import report
    from sweep.tracking import log_sweep

    if not report.is_current(sweep_dir, cfg):
        report.build_report(sweep_dir, cfg=cfg)
    _print_where_to_look(sweep_dir, cfg, log_sweep(sweep_dir, cfg, runs=runs, live=live))


def _print_where_to_look(sweep_dir: SweepDir, cfg, parent_id: str) -> None:
    """The parent run, the command that starts the MLflow UI, and the run's URL in it."""
    from sweep import tracking

    url, command = tracking.run_url(sweep_dir.config_dict(cfg), parent_id)
    print(f"MLflow: parent run {parent_id}", file=sys.stderr)
    if command:
        print(f"  browse: {command}   (then open {url})", file=sys.stderr)
    else:
        print(f"  browse: {url}", file=sys.stderr)


def _subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m sweep {argv[0]}")
    parser.add_argument("sweep_dir", help="a sweep folder (output.dir), e.g. sweeps/grid")
    if argv[0] == "export":
        parser.add_argument("--parquet", metavar="FILE", help="default: SWEEP_DIR/results.parquet")
        parser.add_argument("--all", action="store_true", help="include rows cached from earlier grids")
    else:
        parser.add_argument("overrides", nargs="*",
                            help="key=value on top of the sweep's config.yaml, e.g. tracking.uri=http://host:5000")
    args = parser.parse_args(argv[1:])
    sweep_dir = SweepDir(args.sweep_dir)
    for shard in sweep_dir.shard_dirs():
        Store.check(shard.results)
    Store.check(sweep_dir.results)
    merged = sweep_dir.merge_shards()
    if merged:
        print(f"merged {merged} rows from {len(sweep_dir.shard_dirs())} shards into {sweep_dir.results}",
              file=sys.stderr)
    if not sweep_dir.results.exists():
        print(f"error: {sweep_dir.path} is not a sweep folder (no results.sqlite)", file=sys.stderr)
        return USAGE
    if argv[0] == "export":
        with Store(sweep_dir.results) as store:
            path = store.to_parquet(args.parquet or sweep_dir.path / "results.parquet", all_rows=args.all)
            print(f"exported {store.count(planned_only=not args.all)} rows to {path}", file=sys.stderr)
        return OK
    cfg = sweep_dir.read_config(args.overrides) if args.overrides else None
    return _report_and_log(sweep_dir, cfg, log=argv[0] == "log", report=argv[0] == "report")
