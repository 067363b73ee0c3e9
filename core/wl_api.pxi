# wl_api: the Python face of the workload layer - the event stream for core.replay, the
# starting machine of a validated spec, and the run of one validated workload (core.workload
# validates the spec first).


cdef class WorkloadEvents:
    """The event stream of a workload (for core.replay and inspection); iterating yields
    (type, task, kind, arg, gfp, node, locked, seq, slot) tuples with type one of
    "enter", "request", "free", "exit", "respawn". For "free", `arg` is the slot's object as filled
    in by the driver through set_result()."""
    def __cinit__(self):
        memset(&self.g, 0, sizeof(wl_gen_t))
        self.g.slot_free = -1

    def __dealloc__(self):
        gen_free(&self.g)

    def __iter__(self):
        return self

    def __next__(self):
        cdef wl_event_t ev
        memset(&ev, 0, sizeof(ev))
        if not gen_next(&self.g, &ev):
            if self.g.nomem:
                raise MemoryError("the workload generator could not grow its fault buffer")
            raise StopIteration
        kind = ("", "enter", "request", "free", "exit", "respawn")[ev.type]
        return (kind, ev.task, ev.kind, ev.arg, ev.gfp_mask, ev.node, bool(ev.locked), ev.seq, ev.slot)

    def set_result(self, int slot, int64_t handle):
        if slot >= 0:
            self.g.slot_oid[slot] = <int32_t>handle if handle >= 0 else -1

    def task_replaced(self, int task):
        """The driver replaced `task` (OOM-killed) by a new one: its scheduled frees are
        dropped (gen_task_replaced), as run_workload does."""
        if not 0 <= task < self.g.nr_tasks:
            raise ValueError(f"task: must be in 0..{self.g.nr_tasks - 1}, got {task}")
        gen_task_replaced(&self.g, task)

    @property
    def request_hash(self):
        return self.g.hash


def build_workload_machine(dict s):
    """The machine, cgroups, background and tasks of a validated spec: (machine, tids).
    Shared by run_workload and core.replay so both drive the same starting state."""
    mach = s["machine"]
    m = Machine(nodes=mach["nodes"], mem_mib=mach["mem_mib"], cpus=mach["cpus"],
                allocator=mach["allocator"], design=s["design"],
                slub_max_order=mach["slub_max_order"], swap=mach["swap"])
    m.mkdir("/w")
    for key in ("max", "high", "low"):
        m.write("/w", f"memory.{key}", s["cgroup"][key])
    if s["sibling"]["tasks"]:
        m.mkdir("/s")
        m.write("/s", "memory.max", s["sibling"]["max"])
    root = m.spawn("/", cpu=0)
    m._setup_background(root.tid, s["background"]["file_mib"] * 256, s["background"]["fragment"])
    tasks = [m.spawn("/w") for _ in range(s["tasks"])]
    tasks += [m.spawn("/s") for _ in range(s["sibling"]["tasks"])]
    assert [m._task_node(t.tid) for t in tasks] == _task_nodes(s)
    return m, tasks


def _task_nodes(dict s):
    """Nodes of the workload tasks: spawned on CPUs 0, 1, ... round-robin (task_new)."""
    cpus, nodes = s["machine"]["cpus"], s["machine"]["nodes"]
    return [(i % cpus) * nodes // cpus for i in range(s["tasks"] + s["sibling"]["tasks"])]


def events_of(dict s, seed):
    """The event stream of a validated spec and a seed (core.workload_events validates)."""
    cdef WorkloadEvents ev = WorkloadEvents()
    gen_init(&ev.g, s, check_int("seed", seed, 0, (1 << 64) - 1), _task_nodes(s))
    ev.nr_tasks = len(_task_nodes(s))
    return ev


def run_validated(dict s, seed, trace=None):
    """Run one validated workload in C with the GIL released (core.run_workload validates
    the spec first); every metric of core.METRICS plus request_hash_lo/hi (the request
    stream's hash, equal across designs). With trace="file", each request and its outcome
    is written there (TSV)."""
    seed = check_int("seed", seed, 0, (1 << 64) - 1)
    cdef Machine m
    m, tasks = build_workload_machine(s)
    cdef wl_gen_t g
    memset(&g, 0, sizeof(wl_gen_t))
    cdef int tids[256]
    cdef wl_trace_t *records = NULL
    cdef wl_trace_t **trace_ptr = &records if trace is not None else NULL
    cdef int64_t nr_records = 0
    cdef mm_t *mm = m.mm
    try:
        gen_init(&g, s, seed, _task_nodes(s))
        for i, t in enumerate(tasks):
            tids[i] = t.tid
        with nogil:
            wl_execute(mm, &g, tids, trace_ptr, &nr_records)
        m._check_fatal()
        out = m.metrics()
        out["request_hash_lo"] = float(g.hash & 0xffffffff)
        out["request_hash_hi"] = float(g.hash >> 32)
        if trace is not None:
            _write_trace(trace, records, nr_records)
        return out
    finally:
        gen_free(&g)
        free(records)


cdef _write_trace(path, wl_trace_t *records, int64_t n):
    with open(path, "w") as f:
        f.write("seq\ttask\tkind\targ\tgfp\tnode\tlocked\tresult\tlatency_ns\n")
        for i in range(n):
            r = records[i]
            f.write(f"{r.seq}\t{r.task}\t{REQUEST_KINDS[r.kind]}\t{r.arg}\t{r.gfp_mask:#x}\t{r.node}\t"
                    f"{int(r.locked)}\t{r.result}\t{r.latency_ns}\n")
