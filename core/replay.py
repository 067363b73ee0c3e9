"""Replay a workload through the scenario API, request by request.

`core.run_workload` runs the event stream of (spec, seed) in C; `replay` drives the very
same events through `core.Machine`/`core.Task` from Python. Both call the same C request
function, so their metrics must be equal: one model, two drivers (tests/test_workload.py).
Slow (Python per request); meant for small workloads and for debugging one of them.
"""
from contextlib import nullcontext

from core._mm import build_workload_machine
from core.constants import REQUEST_KINDS
from core.spec import validate_spec
from core.workload import workload_events


def replay(spec, seed, probe=None, every=1000, around_request=None):
    """The metrics of (spec, seed), as run_workload gives them. `probe(machine)`, if given,
    is called after every `every`-th kernel entry (e.g. to sample memory.stat over time).
    `around_request(machine, gfp)`, if given, is a context manager entered around every
    request (e.g. to measure what each request charged)."""
    s = validate_spec(spec)
    entries = 0
    machine, tasks = build_workload_machine(s)
    events = workload_events(s, seed)
    for kind, task, req_kind, arg, gfp, node, locked, seq, slot in events:
        t = tasks[task]
        if kind == "enter":
            if not t.alive:                               # OOM-killed since its last entry
                t = tasks[task] = machine._respawn(t.tid)
                events.task_replaced(task)
            t.enter_kernel()
        elif kind == "exit":
            if t.alive and t.in_kernel:
                t.return_to_user()
            entries += 1
            if probe is not None and entries % every == 0:
                probe(machine)
        elif kind == "respawn":
            if t.alive:
                t.exit()
            tasks[task] = machine._respawn(t.tid)
        elif kind == "free":
            if arg >= 0 and t.alive and machine._owner(arg) == t.tid:
                t.kfree(arg)
        elif t.alive:
            with (t.lock() if locked else nullcontext(),
                  around_request(machine, gfp) if around_request else nullcontext()):
                result = t.request(REQUEST_KINDS[req_kind], arg, gfp, None if node < 0 else node,
                                   fallback=True)
            events.set_result(slot, result)
    out = machine.metrics()
    out["request_hash_lo"] = float(events.request_hash & 0xffffffff)
    out["request_hash_hi"] = float(events.request_hash >> 32)
    return out

