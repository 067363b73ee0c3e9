"""A real Linux 6.1 kernel beside the model: Debian 12's kernel under qemu runs the kernel's
own memcg selftests and replays core's request streams through a small module, and reports
the results under core's metric names (docs/realkernel.md).

    import realkernel
    setup = realkernel.Setup(cpus=2, mem_mib=2048, nodes=2)
    realkernel.run_selftests(setup, ["test_kmem"])       # {test: [(subtest, outcome)]}
    realkernel.run_streams(setup, [(spec, seed), ...])   # [metrics dict per stream]

This package depends on core (the stream, the metric names) but core and sweep know
nothing of it. Every failure is a RealKernelError with a one-line message.
"""
import core

from realkernel import bench
from realkernel.errors import RealKernelError
from realkernel.qemu import Setup
from realkernel.stream import build_stream, linux_metrics

__all__ = ["RealKernelError", "Setup", "run", "run_selftests", "run_streams", "setup_for"]


def setup_for(spec, **overrides):
    """The guest machine of a workload spec: its nodes, CPUs and memory (at least 1 GiB
    for the guest's own needs)."""
    m = core.validate_spec(spec)["machine"]
    args = {"cpus": m["cpus"], "nodes": m["nodes"], "mem_mib": max(1024, m["mem_mib"])}
    args.update(overrides)
    return Setup(**args)


def run(setup, selftests=(), traces=(), log=print, echo=False):
    """ONE boot: the named selftests, then each (spec, seed) of `traces` as a stream.
    Returns {"selftests": {...}, "streams": [metrics], "raw": [per-stream guest results],
    "seconds": wall time, "boot": the guest's boot line}."""
    streams = [build_stream(spec, seed) for spec, seed in traces]
    try:
        out = bench.run_boot(setup, selftests=selftests, streams=streams, log=log, echo=echo)
    except RealKernelError as err:      # a boot that ended early: its finished streams' metrics
        err.streams = [_stream_metrics(i, stream, raw) for i, (stream, raw) in enumerate(zip(streams, err.finished))]
        raise
    if len(out["streams"]) != len(streams):
        raise RealKernelError(f"the guest finished {len(out['streams'])} of {len(streams)} streams")
    metrics = [_stream_metrics(i, stream, raw) for i, (stream, raw) in enumerate(zip(streams, out["streams"]))]
    return {"selftests": out["selftests"], "selftest_notes": out["selftest_notes"],
            "streams": metrics, "raw": out["streams"],
            "seconds": out["seconds"], "boot": out["boot"], "accel": out["accel"],
            "kernel": out["kernel"]}


def _stream_metrics(i, stream, raw):
    """Stream ``i``'s metrics under core's names, from its results and cgroup files (the
    stream itself is kept in ``raw``)."""
    w = raw["cgroups"].get(f"w{i}", {})
    cg = {"events": w.get("events", {}), "stat": w.get("stat", {}),
          "peak": w.get("memory.peak", 0), "max": _limit(stream.spec["cgroup"]["max"]),
          "high": _limit(stream.spec["cgroup"]["high"])}
    raw["stream"] = stream
    return linux_metrics(stream, raw["results"], cg)


def run_selftests(setup, names=("test_kmem", "test_memcontrol"), log=print):
    """{selftest: [(subtest, "pass" | "fail" | "skip")]} from one boot."""
    return run(setup, selftests=names, log=log)["selftests"]


def run_streams(setup, traces, log=print):
    """The metrics of each (spec, seed) on Linux, from one boot: a dict per trace with every
    name of core.METRICS, None where the kernel does not expose the quantity. The shape
    sweep executors return, so a sweep can run this as a design row."""
    return run(setup, traces=traces, log=log)["streams"]


def _limit(value):
    return None if value in (None, "max") else int(value)
