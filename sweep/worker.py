"""What runs on a worker: a chunk of workloads, each in ``core.run_workload``.

Plain dicts in, plain dicts out (no classes from the driver), so a Ray worker on any node
only needs the installed ``core`` and ``sweep`` packages.  A workload that raises becomes
an error result carrying the message; the rest of the chunk still runs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback

from sweep.config import is_kernel_row, model_row

BOOT_TIMEOUT_S = 300.0      # one real-kernel boot under TCG on a busy host, before the streams
STREAM_TIMEOUT_S = 120.0    # and per stream of the batch


def run_chunk(items: list[dict]) -> list[dict]:
    """``items``: ``{"key", "spec", "seed"}`` each; returns one result dict per item.
    Model rows run one by one in ``core.run_workload``; real-kernel rows (sweep.config
    KERNEL_ROWS) all in one boot per guest machine (``run_on_kernel``)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    on_kernel = run_on_kernel([item for item in items if is_kernel_row(item["spec"]["design"])])
    return [dict(on_kernel.get(item["key"]) or run_one(item["spec"], item["seed"]), key=item["key"], worker=worker)
            for item in items]


def run_on_kernel(items: list[dict]) -> dict[str, dict]:
    """key -> result of each real-kernel item: ONE boot per guest machine (a boot costs
    ~6-15 s under TCG; the streams after it some seconds each), each stream in a fresh
    cgroup (``realkernel.run_streams``).  Metrics the kernel does not expose stay None
    ("not observable", stored as NULL, never as 0).  ``version`` is the kernel release."""
    if not items:
        return {}
    import realkernel      # only here: core and the rest of sweep never need it

    by_machine: dict = {}
    for item in items:
        by_machine.setdefault(json.dumps(item["spec"]["machine"], sort_keys=True), []).append(item)
    out = {}
    for batch in by_machine.values():
        traces = [kernel_trace(item) for item in batch]
        start = time.perf_counter()
        try:
            setup = realkernel.setup_for(traces[0][0], timeout_s=BOOT_TIMEOUT_S + STREAM_TIMEOUT_S * len(batch))
            run = realkernel.run(setup, traces=traces, log=lambda *_: None)
        except Exception as err:    # a failed boot fails the streams it did not finish, not the sweep
            elapsed = (time.perf_counter() - start) / len(batch)
            finished = getattr(err, "streams", [])      # RealKernelError: those it finished first
            out.update(_kernel_results(batch, finished, elapsed, getattr(err, "kernel", None)))
            out.update((item["key"], {"status": "error", "error": _describe(err), "metrics": {},
                                      "elapsed_s": elapsed}) for item in batch[len(finished):])
            continue
        out.update(_kernel_results(batch, run["streams"], run["seconds"] / len(batch), run["kernel"]))  # the boot shared
    return out


def _kernel_results(batch: list[dict], streams: list[dict], elapsed: float, kernel: str | None):
    """(key, ok result) of the first ``len(streams)`` items of ``batch``, from Linux's metrics."""
    for item, metrics in zip(batch, streams):
        yield item["key"], {"status": "ok", "error": None, "elapsed_s": elapsed, "version": f"linux {kernel}",
                            "metrics": {k: None if v is None else float(v) for k, v in metrics.items()}}


def kernel_trace(item: dict) -> tuple[dict, int]:
    """The (spec, seed) a real-kernel item replays: the stream of its model twin's spec
    (core builds the stream; the row's own name is no design core knows)."""
    return dict(item["spec"], design=model_row(item["spec"]["design"])), item["seed"]


def run_chunk_in_ray_worker(items: list[dict]) -> list[dict]:
    """``run_chunk`` as a Ray task. Ctrl-C in a terminal signals the whole process group,
    local Ray workers included; a worker dying of it races the driver's own shutdown and can
    crash Ray 2.60's core worker ("Tried to complete task that was not pending"). The driver
    stops the sweep cleanly and Ray then ends its workers, so workers ignore SIGINT."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the worker's main thread: nothing to do
        pass
    _hang_once_for_tests()
    return run_chunk(items)


def _hang_once_for_tests() -> None:
    """Test hook (tests/test_faults.py): with SWEEP_TEST_HANG_FILE set in Ray's environment,
    the first chunk to find no such file creates it holding its worker's pid and never
    returns, so a test can kill a worker that is certainly running a chunk."""
    path = os.environ.get("SWEEP_TEST_HANG_FILE")
    if not path or os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        os.link(tmp, path)          # atomic: exactly one chunk wins
    except FileExistsError:
        return
    finally:
        os.unlink(tmp)
    while True:
        time.sleep(1)


def run_one(spec: dict, seed: int) -> dict:
    """``{"status", "error", "metrics", "elapsed_s"}`` of one workload."""
    import core

    start = time.perf_counter()
    try:
        metrics = core.run_workload(spec, seed)
    except Exception as err:  # a bad workload must not stop the sweep: keep its message
        return {"status": "error", "error": _describe(err), "metrics": {},
                "elapsed_s": time.perf_counter() - start}
    return {"status": "ok", "error": None, "metrics": {k: float(v) for k, v in metrics.items()},
            "elapsed_s": time.perf_counter() - start}


def _describe(err: Exception) -> str:
    """Type, message and the innermost frames: enough to find the bug, short enough to store."""
    frames = traceback.extract_tb(err.__traceback__)[-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    return f"{type(err).__name__}: {err} [{where}]"


def calibration_main() -> None:
    """``plan.calibrate``'s child process: JSON items on stdin, one JSON result line each on
    stdout as it finishes.  Dies with its parent (PR_SET_PDEATHSIG): a workload can run for
    hours and nothing may keep it running once the driver is gone."""
    import json
    import sys

    die_with_parent(int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the driver stops us when it wants to
    items = json.load(sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    for result in map(lambda item: run_chunk([item])[0], items):
        print(json.dumps(result), flush=True)


def die_with_parent(parent: int) -> None:
    """A child of the driver (the calibration's, a ``sweep.pool`` worker) is killed when the
    driver ends, however it ends (``interrupt.leave`` skips every clean-up)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:        # the parent died before prctl took effect
        os._exit(1)


def result_row(w, result: dict) -> dict:
    """The store row of one workload's result (``w``: the ``sweep.grid.Workload`` it ran)."""
    import core

    if result["key"] != w.key:
        raise RuntimeError(f"result for {result['key']} where {w.key} was expected: chunk order broken")
    return {"key": w.key, "cell_id": w.cell.cell_id, "design": w.design, "replication": w.replication,
            "seed": w.seed, "status": result["status"], "error": result["error"], **w.cell.axes,
            **result["metrics"], "elapsed_s": result["elapsed_s"], "worker": result["worker"],
            "model_version": result.get("version") or core.MODEL_VERSION, "finished_at": time.time()}
