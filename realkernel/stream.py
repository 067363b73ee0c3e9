"""A workload's request stream in the form the guest runs it, and its results under the
model's metric names.

The stream is core's own event stream (core.workload_events: the events core.replay and
run_workload execute) for one (spec, seed): each kernel entry of a task becomes one message
to that task's guest process (guest/kreplay.c), whose kernel requests run as ONE write() to
/proc/kmemreq (guest/kmemreq.c), followed by the entry's user page faults. The result of
every request (ok / failed / fell back, and memory.current after it) comes back per request,
so the Linux column of a comparison is computed from the same requests as the model's.
"""
import dataclasses
import struct

import core
from core.constants import REQUEST_KINDS

REQ = struct.Struct("<BBBbII")          # struct kmemreq_req (guest/kmemreq.h)
RES = struct.Struct("<II")              # struct kmemreq_res
HDR = struct.Struct("<II")              # an entry: task, number of requests
EXIT = 0xffffffff                       # an entry header's count: the task exits (churn)
NO_SLOT = 0xffffffff
LONG_LIVED = 1 << 30                    # slots of objects the stream never frees (above core's)
# kmemreq op codes: the module's kernel requests, then kreplay's user-space ones
OPS = {"kmalloc": 1, "kmalloc_node": 2, "alloc_pages": 3, "free": 4,
       "read_file": 5, "fault_anon": 6, "dentries": 7}
GFP_CODES = {"kernel": 0, "nofs": 1, "nowait": 2, "atomic": 3}
F_NOFAIL, F_THISNODE, F_ACCOUNT, F_FALLBACK = 0x1, 0x2, 0x4, 0x8
S_OK, S_FALLBACK = 0x1, 0x2
S_KILLED, S_NOT_RUN = 0xffffffff, 0xfffffffe     # the task died in / before the request
USER_KINDS = ("read_file", "fault_anon", "dentries")     # run from user space; class kernel

G = core.GFP_FLAGS


def gfp_class(mask):
    """The model's metric class of a 4.x gfp mask (core/gfp.pxi gfp_class): nofail > atomic >
    nowait > nofs > kernel."""
    if mask & G["__GFP_NOFAIL"]:
        return "nofail"
    if not mask & G["__GFP_WAIT"]:
        return "atomic" if mask & G["__GFP_HIGH"] else "nowait"
    return "kernel" if mask & G["__GFP_FS"] else "nofs"


def linux_gfp(mask):
    """(kmemreq gfp code, flags) of a 4.x mask: the same request in 6.1's terms - GFP_NOWAIT
    and GFP_ATOMIC by __GFP_WAIT/__GFP_HIGH, GFP_NOFS by __GFP_FS, __GFP_NOFAIL and
    __GFP_THISNODE kept, and __GFP_ACCOUNT where the model's request has it (an accounted
    site: the mix's `accounted`, core/spec.py; 6.1 charges only such sites, as the model's
    rows with charge_only_accounted do)."""
    cls = gfp_class(mask & ~G["__GFP_NOFAIL"])
    flags = F_ACCOUNT if mask & G["__GFP_ACCOUNT"] else 0
    if mask & G["__GFP_NOFAIL"]:
        flags |= F_NOFAIL
    if mask & G["__GFP_THISNODE"]:
        flags |= F_THISNODE
    if cls == "nowait":
        flags |= F_FALLBACK             # the caller retries a failed NOWAIT with GFP_KERNEL
    return GFP_CODES[cls], flags


@dataclasses.dataclass
class Stream:
    """One workload's stream: the bytes kreplay reads, and per request (in stream order) its
    seq, kind and metric class, so results can be matched with the model's trace."""
    spec: dict
    seed: int
    data: bytes = b""
    requests: list = dataclasses.field(default_factory=list)    # (seq, kind, class)
    frees: int = 0
    entries: int = 0
    read_pages: int = 0

    @property
    def nr_tasks(self):
        return self.spec["tasks"] + self.spec["sibling"]["tasks"]


def build_stream(spec, seed):
    """The guest stream of (spec, seed): core's events grouped by kernel entry. Frees go by
    slot (the generator's own slot numbers); request results are not fed back (the guest
    does not know the model's), so every slot counts as allocated and a free of an object the
    kernel failed to allocate is a no-op in the module."""
    s = core.validate_spec(spec)
    out = Stream(s, seed)
    parts, entry, task = [], [], None
    events = core.workload_events(s, seed)

    def flush():
        if task is not None and entry:
            parts.append(HDR.pack(task, len(entry)) + b"".join(entry))

    for kind, t, req_kind, arg, gfp, node, locked, seq, slot in events:
        if kind == "enter":
            flush()
            entry, task = [], t
            out.entries += 1
        elif kind == "exit":
            pass                        # the entry's user faults follow its exit
        elif kind == "respawn":
            flush()
            entry, task = [], None
            parts.append(HDR.pack(t, EXIT))
        elif kind == "free":
            # no set_result here: the generator has put the slot back on its free list
            # (slot_oid[slot] links the list), and writing it would hand the same slot to
            # every later allocation, whose store in kmemreq's table frees the one before
            entry.append(REQ.pack(OPS["free"], 0, 0, -1, slot, 0))
            out.frees += 1
        else:
            name = REQUEST_KINDS[req_kind]
            code, flags = linux_gfp(gfp)
            cls = "kernel" if name in USER_KINDS else gfp_class(gfp)
            if slot < 0 and name in ("kmalloc", "kmalloc_node", "alloc_pages"):
                slot = LONG_LIVED + len(out.requests)     # no free: kept until its task exits
            entry.append(REQ.pack(OPS[name], code, flags, node, NO_SLOT if slot < 0 else slot,
                                  arg))
            out.requests.append((seq, name, cls))
            if name == "read_file":
                out.read_pages += arg
            if 0 <= slot < LONG_LIVED:
                events.set_result(slot, slot)
    flush()
    out.data = b"".join(parts)
    return out


def parse_results(hex_lines):
    """The guest's "@@RK r <hex>" lines -> [(status, usage_pages)] in request order."""
    blob = bytes.fromhex("".join(hex_lines))
    return [RES.unpack_from(blob, i) for i in range(0, len(blob), RES.size)]


def _pages(nbytes):
    return nbytes // 4096


def linux_metrics(stream, results, cg):
    """The metrics of core.METRICS the kernel exposes, under the same names, from the
    per-request results and the workload cgroup's files (`cg`: {"events": {...}, "stat":
    {...}, "peak": bytes, "max": bytes or None, "high": bytes or None}); the rest are None
    (not observable). Free records carry a result too but are not requests."""
    if len(results) != len(stream.requests) + stream.frees:
        raise ValueError(f"the guest returned {len(results)} results for "
                         f"{len(stream.requests) + stream.frees} records")
    m = {name: None for name in core.METRICS}
    for cls in core.GFP_CLASSES:
        m[f"alloc_{cls}_attempts"] = m[f"alloc_{cls}_failures"] = 0
    m.update(requests=0, kernel_entries=stream.entries, enomem_user_visible=0,
             nowait_failures=0, nowait_fallbacks=0)
    peak_usage = 0
    for (_, kind, cls), (status, usage) in zip(stream.requests, request_results(stream, results)):
        if status == S_NOT_RUN:         # its task had died in this entry: never issued, as
            continue                    # the model issues nothing for a dead task
        m["requests"] += 1
        killed = status == S_KILLED
        ok = not killed and status & S_OK
        m[f"alloc_{cls}_attempts"] += 1
        peak_usage = max(peak_usage, 0 if killed else usage)
        if cls == "nowait" and not killed and status & S_FALLBACK:
            m["nowait_failures"] += 1
            m["nowait_fallbacks"] += 1
            m["alloc_nowait_failures"] += 1
            m["alloc_kernel_attempts"] += 1
            if not ok:
                m["alloc_kernel_failures"] += 1
                m["enomem_user_visible"] += 1
        elif not ok:
            m[f"alloc_{cls}_failures"] += 1
            if cls in ("kernel", "nofs"):
                m["enomem_user_visible"] += 1
    m["enomem_per_kentry"] = _ratio(m["enomem_user_visible"], m["kernel_entries"])
    m["nowait_failure_rate"] = _ratio(m["nowait_failures"], m["alloc_nowait_attempts"])
    m["atomic_failure_rate"] = _ratio(m["alloc_atomic_failures"], m["alloc_atomic_attempts"])
    for e in ("low", "high", "max", "oom", "oom_kill"):
        m[f"events_{e}"] = cg["events"].get(e, 0)
    peak = max(_pages(cg["peak"]), peak_usage)
    for key, limit in (("max", cg["max"]), ("high", cg["high"])):
        m[f"overshoot_{key}_peak_pages"] = max(0, peak - _pages(limit)) if limit is not None else 0
    m["oom_kills_memcg"] = cg["events"].get("oom_kill", 0)
    m["reclaim_scanned_pages"] = cg["stat"].get("pgscan", 0)
    m["reclaim_reclaimed_pages"] = cg["stat"].get("pgsteal", 0)
    return m


def request_results(stream, results):
    """The results of the requests alone, in stream order: kreplay answers the frees the
    stream interleaves too; their positions are read back from the stream bytes."""
    ops = []
    pos = 0
    data = stream.data
    while pos < len(data):
        _, n = HDR.unpack_from(data, pos)
        pos += HDR.size
        if n == EXIT:
            continue
        for i in range(n):
            ops.append(data[pos + i * REQ.size])
        pos += n * REQ.size
    return [r for op, r in zip(ops, results) if op != OPS["free"]]


def _ratio(a, b):
    return a / b if b else 0.0
