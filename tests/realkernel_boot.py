"""ONE boot of Debian's Linux 6.1 under qemu for the whole test session (a boot is most of
a real-kernel test's time under TCG): tests/test_realkernel.py and tests/test_kernel_row.py
both read it.  It runs the kernel's test_kmem, the bench's comparison streams and the
streams the kernel-row sweep of test_kernel_row.py will ask for (planned here with the
sweep's own config, grid and worker code), in that order.

The sweep then runs in-process with ``realkernel.run`` answered from this boot
(``answer_from_boot``): the answer is given only for the very machine and traces the boot
ran, anything else raises, so the sweep's worker, store and report see the guest's real
results for exactly the streams it planned.  (Not in conftest.py: only these two modules
need it.)
"""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import yaml

import realkernel
from sweep import config, grid, plan, worker
from sweep.config import is_kernel_row
from sweep_helpers import SMALL, deep_update, write_config

REPO = Path(__file__).resolve().parent.parent
STREAMS = REPO / "realkernel" / "streams"
ATOMIC_FILL = yaml.safe_load((STREAMS / "atomic-fill.yaml").read_text())
KERNEL_FILL = dict(yaml.safe_load((STREAMS / "kernel-fill.yaml").read_text()),
                   length={"kernel_entries": 1})
# two tasks whose first entry is task 0's (seed chosen for it): kreplay's later children
# must not hold task 0's command pipe, or its exit at the end of the stream never comes
TWO_TASKS = dict(yaml.safe_load((STREAMS / "kernel.yaml").read_text()), length={"kernel_entries": 100},
                 mix=yaml.safe_load((REPO / "configs" / "mixes" / "kernel.yaml").read_text()))
TWO_TASKS_SEED = 4611686018427387905
BENCH_TRACES = [(ATOMIC_FILL, 1), (KERNEL_FILL, 1), (TWO_TASKS, TWO_TASKS_SEED)]

# the kernel-row sweep: 2 replications of one small cell, on the guest machine of the bench
# streams (2 CPUs, 2 NUMA nodes, 1 GiB), so one boot serves both
KERNEL_CELL = deep_update(SMALL, {
    "name": "kernelrow", "replications": 2, "designs": ["v6.1", "linux-6.1"],
    "grid": {"limit": ["32M"], "high": 0.75, "order": [3], "nodes": [2], "mix": ["nowait-burst"]},
    "workload": {"length": {"kernel_entries": 30}},
    "output": {"report": True},
})
SETUP = realkernel.Setup(cpus=2, nodes=2, mem_mib=1024, timeout_s=600)


def sweep_items(cfg_dict: dict = KERNEL_CELL) -> list[dict]:
    """The worker items of the real-kernel workloads the sweep of ``cfg_dict`` plans."""
    import core

    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), cfg_dict)
        cfg = config.load(path, [])
        cells = grid.build_cells(cfg, config.load_mixes(cfg, path))
    workloads = grid.workloads(cells, list(cfg.designs), cfg.replications, cfg.seed, core.MODEL_VERSION)
    return [plan.as_item(w) for w in workloads if is_kernel_row(w.design)]


def _trace_key(spec: dict, seed: int) -> str:
    return json.dumps([spec, seed], sort_keys=True)


@functools.cache
def boot() -> dict:
    """realkernel.run's result of the session's boot, plus ``sweep_traces``: the kernel-row
    sweep's (spec, seed) in the order they ran (after the bench's)."""
    sweep_traces = [worker.kernel_trace(item) for item in sweep_items()]
    out = realkernel.run(SETUP, selftests=["test_kmem"], traces=BENCH_TRACES + sweep_traces)
    return dict(out, sweep_traces=sweep_traces)


def answer_from_boot(setup, traces, log=print, **_):
    """Stands in for ``realkernel.run`` in the sweep's worker: the session boot's results of
    ``traces`` - only for the machine it booted and the streams it ran."""
    ran = boot()
    if (setup.cpus, setup.nodes, setup.mem_mib) != (SETUP.cpus, SETUP.nodes, SETUP.mem_mib):
        raise AssertionError(f"the sweep asked for another guest machine: {setup}")
    first = len(BENCH_TRACES)
    index = {_trace_key(spec, seed): first + i for i, (spec, seed) in enumerate(ran["sweep_traces"])}
    wanted = [index[_trace_key(spec, seed)] for spec, seed in traces]     # KeyError: a stream not booted
    return dict(ran, streams=[ran["streams"][i] for i in wanted], raw=[ran["raw"][i] for i in wanted])
