# workload: randomized workloads generated and run entirely in C (issue 4).
# A generator turns (spec without design, seed) into a stream of events - kernel entry,
# request, free, return to user - from its own random stream, never reading model state,
# so every design sees the identical request sequence (common random numbers). The runner
# executes events on the model; core.replay executes the same events through core.Machine.

cdef enum:
    EV_END = 0
    EV_ENTER = 1             # syscall entry of `task`
    EV_REQ = 2               # a request (kind, arg, gfp, node, locked) with sequence `seq`
    EV_FREE = 3              # free the object made by request `seq`
    EV_EXIT = 4              # return to user of `task`
    EV_RESPAWN = 5           # `task` exits (its job is done) and a new task takes its place
    MAX_MIX = 16
    NODE_REMOTE = -2
    NODE_LOCAL = -3

cdef struct wl_req_t:        # one request kind of the GFP mix
    int kind
    double cum_weight
    uint32_t gfp_mask
    int64_t size_min
    int64_t size_max
    double log_min           # log(size_min), precomputed
    double log_span          # log(size_max) - log(size_min)
    int64_t arg              # order, count or pages
    int node                 # -1 none, NODE_REMOTE, NODE_LOCAL or a node

cdef struct wl_event_t:
    int type
    int task
    int32_t slot             # object slot of a request that will be freed (-1: never)
    int kind
    int node
    uint8_t locked
    uint32_t gfp_mask
    int64_t arg
    int64_t seq

cdef struct heap_item_t:   # key = expiry << 32 | (seq & 0xffffffff): one compare, ties by seq
    uint64_t key
    int32_t slot
    int32_t task
    int32_t life             # the task's life (g.task_life) that made the object

cdef struct wl_gen_t:
    uint64_t s[4]            # xoshiro256** state
    int nr_mix
    wl_req_t mix[16]
    double burst_p           # geometric: P(stop) per request = 1 / mean burst
    double locked_share
    double lifetime_mean
    double long_lived_share
    int nr_tasks
    int task_node[256]
    double churn_p           # P(a task exits after a kernel entry) = 1 / churn.mean_entries; 0: never
    int32_t task_life[256]   # how many times the task slot was respawned by churn
    int nr_nodes
    int64_t entries_left
    int64_t seq
    int cur_task
    int pending_faults       # fault requests of this entry, run after its return to user
    wl_event_t faults[64]
    int phase                # 0: start entry, 1: in syscall, 2: faults, 3: end
    heap_item_t *heap
    int64_t heap_len
    int64_t heap_cap
    uint64_t hash            # a 64-bit hash over the request stream
    int32_t *slot_oid        # slot -> object made by the request (filled in by the driver)
    int32_t nr_slots
    int32_t slot_free


cdef inline uint64_t rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next(wl_gen_t *g) noexcept nogil:
    cdef uint64_t result = rotl(g.s[1] * 5, 7) * 9, t = g.s[1] << 17
    g.s[2] ^= g.s[0]
    g.s[3] ^= g.s[1]
    g.s[1] ^= g.s[2]
    g.s[0] ^= g.s[3]
    g.s[2] ^= t
    g.s[3] = rotl(g.s[3], 45)
    return result


cdef inline double rng_double(wl_gen_t *g) noexcept nogil:
    return (rng_next(g) >> 11) * (1.0 / 9007199254740992.0)


cdef void rng_seed(wl_gen_t *g, uint64_t seed) noexcept nogil:
    cdef int i
    cdef uint64_t z
    for i in range(4):                      # splitmix64
        seed += 0x9E3779B97F4A7C15ULL
        z = seed
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        g.s[i] = z ^ (z >> 31)


cdef inline void hash_mix(wl_gen_t *g, uint64_t v) noexcept nogil:
    g.hash = rotl(g.hash ^ v, 27) * 0x9E3779B97F4A7C15ULL


cdef int32_t slot_get(wl_gen_t *g) noexcept nogil:
    cdef int32_t i, old = g.nr_slots
    if g.slot_free < 0:
        g.nr_slots = max(1024, 2 * old)
        g.slot_oid = <int32_t *>realloc(g.slot_oid, g.nr_slots * sizeof(int32_t))
        for i in range(old, g.nr_slots):
            g.slot_oid[i] = i + 1 if i + 1 < g.nr_slots else -1
        g.slot_free = old
    i = g.slot_free
    g.slot_free = g.slot_oid[i]
    g.slot_oid[i] = -1
    return i


cdef void heap_push(wl_gen_t *g, int64_t expiry, int64_t seq, int32_t slot, int32_t task,
                    int32_t life) noexcept nogil:
    cdef int64_t i, parent
    cdef heap_item_t item
    if g.heap_len == g.heap_cap:
        g.heap_cap = max(<int64_t>1024, 2 * g.heap_cap)
        g.heap = <heap_item_t *>realloc(g.heap, g.heap_cap * sizeof(heap_item_t))
    item.key = (<uint64_t>expiry << 32) | (<uint64_t>seq & 0xffffffffULL)
    item.slot = slot
    item.task = task
    item.life = life
    i = g.heap_len
    g.heap_len += 1
    while i > 0:
        parent = (i - 1) >> 1
        if g.heap[parent].key <= item.key:
            break
        g.heap[i] = g.heap[parent]
        i = parent
    g.heap[i] = item


cdef heap_item_t heap_pop(wl_gen_t *g) noexcept nogil:
    cdef heap_item_t top = g.heap[0], last
    cdef int64_t i = 0, child, n
    g.heap_len -= 1
    n = g.heap_len
    last = g.heap[n]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and g.heap[child + 1].key < g.heap[child].key:
            child += 1
        if last.key <= g.heap[child].key:
            break
        g.heap[i] = g.heap[child]
        i = child
    g.heap[i] = last
    return top


cdef void gen_request(wl_gen_t *g, wl_event_t *ev) noexcept nogil:
    """Draw one request of the current task (always the same draws, whatever its kind)."""
    cdef double u = rng_double(g) * g.mix[g.nr_mix - 1].cum_weight, ln
    cdef int i = 0, tnode = g.task_node[g.cur_task]
    cdef wl_req_t *r
    cdef double size_u = rng_double(g), node_u = rng_double(g), lock_u = rng_double(g)
    cdef double life_u = rng_double(g), long_u = rng_double(g)
    while i < g.nr_mix - 1 and u >= g.mix[i].cum_weight:
        i += 1
    r = &g.mix[i]
    ev.type = EV_REQ
    ev.task = g.cur_task
    ev.kind = r.kind
    ev.gfp_mask = r.gfp_mask
    ev.locked = lock_u < g.locked_share
    ev.node = -1
    if r.kind == REQ_KMALLOC or r.kind == REQ_KMALLOC_NODE:   # log-uniform size
        ev.arg = min(r.size_max, max(r.size_min, <int64_t>exp(r.log_min + size_u * r.log_span)))
    else:
        ev.arg = r.arg
    if r.kind == REQ_KMALLOC_NODE:
        if r.node == NODE_LOCAL or g.nr_nodes == 1:
            ev.node = tnode
        elif r.node == NODE_REMOTE:
            ev.node = (tnode + 1 + <int>(node_u * (g.nr_nodes - 1))) % g.nr_nodes
        else:
            ev.node = r.node
    ev.seq = g.seq
    ev.slot = -1
    g.seq += 1
    if r.kind <= REQ_ALLOC_PAGES and long_u >= g.long_lived_share:   # freed after its lifetime
        ev.slot = slot_get(g)
        heap_push(g, ev.seq + 1 + <int64_t>(-log(1.0 - life_u) * g.lifetime_mean), ev.seq,
                  ev.slot, ev.task, g.task_life[ev.task])
    hash_mix(g, (<uint64_t>ev.kind << 56) ^ (<uint64_t>ev.task << 40) ^ (<uint64_t>ev.locked << 39)
             ^ (<uint64_t>(ev.node + 8) << 32) ^ ev.gfp_mask)
    hash_mix(g, <uint64_t>ev.arg)


cdef bint gen_next(wl_gen_t *g, wl_event_t *ev) noexcept nogil:
    """The next event; False at the end. An entry is: ENTER, (due FREEs, REQ)*, EXIT, then
    the entry's user page faults (REQ fault_anon), which happen in user mode, then - with
    churn, after a geometric number of entries - RESPAWN: the task exits and a new one
    takes its place. Objects of an exited task's life died with it: their FREEs are dropped."""
    cdef heap_item_t it
    while True:
        if g.phase == 0:                                          # between entries
            if g.entries_left == 0:
                return False
            g.entries_left -= 1
            g.cur_task = <int>(rng_next(g) % <uint64_t>g.nr_tasks)
            g.phase = 1
            ev.type = EV_ENTER
            ev.task = g.cur_task
            return True
        if g.phase == 1:                                          # inside the syscall
            if g.heap_len > 0 and (g.heap[0].key >> 32) <= <uint64_t>g.seq:
                it = heap_pop(g)
                if it.life != g.task_life[it.task]:               # freed by do_exit already
                    g.slot_oid[it.slot] = g.slot_free
                    g.slot_free = it.slot
                    continue
                ev.type = EV_FREE
                ev.seq = <int64_t>(it.key & 0xffffffffULL)
                ev.task = it.task
                ev.slot = it.slot
                ev.arg = g.slot_oid[it.slot]          # the object, read before the slot is reused
                g.slot_oid[it.slot] = g.slot_free
                g.slot_free = it.slot
                return True
            gen_request(g, ev)
            if rng_double(g) < g.burst_p:                         # the entry's last request
                g.phase = 2
            if ev.kind != REQ_FAULT_ANON:
                return True
            if g.pending_faults < 64:
                g.faults[g.pending_faults] = ev[0]
                g.pending_faults += 1
            continue
        if g.phase == 2:
            g.phase = 3
            ev.type = EV_EXIT
            ev.task = g.cur_task
            return True
        if g.pending_faults > 0:                                  # phase 3: user faults
            g.pending_faults -= 1
            ev[0] = g.faults[g.pending_faults]
            return True
        g.phase = 0
        if g.churn_p > 0 and rng_double(g) < g.churn_p:           # the job is done: exit
            g.task_life[g.cur_task] += 1
            hash_mix(g, <uint64_t>EV_RESPAWN << 56 ^ <uint64_t>g.cur_task)
            ev.type = EV_RESPAWN
            ev.task = g.cur_task
            return True


cdef struct wl_trace_t:      # one traced request
    int64_t seq
    int64_t arg
    int64_t result
    int64_t latency_ns
    uint32_t gfp_mask
    int task
    int kind
    int node
    uint8_t locked


cdef int wl_respawn(mm_t *mm, int tid) noexcept nogil:
    """A workload task that was OOM-killed, or whose job ended (churn), is replaced (as a
    service supervisor or a job queue would) by a new task in the same cgroup on the same
    CPU, so the request stream goes on identically."""
    return task_new(mm, mm.tasks[tid].memcg, mm.tasks[tid].cpu)


cdef int64_t wl_execute(mm_t *mm, wl_gen_t *g, int *tids, wl_trace_t **trace,
                        int64_t *trace_len) noexcept nogil:
    """Run every event on the model; returns the number of requests issued."""
    cdef wl_event_t ev
    cdef int tid
    cdef int64_t result, start, n = 0, cap = 0
    cdef int32_t oid
    memset(&ev, 0, sizeof(ev))
    while gen_next(g, &ev):
        if mm.fatal:
            break
        tid = tids[ev.task]
        if ev.type == EV_ENTER:
            if not mm.tasks[tid].alive:
                tid = tids[ev.task] = wl_respawn(mm, tid)
                if tid < 0:
                    break
            syscall_enter(mm, tid)
        elif ev.type == EV_EXIT:
            if mm.tasks[tid].alive and mm.tasks[tid].in_kernel:
                return_to_user(mm, tid)
        elif ev.type == EV_RESPAWN:
            task_exit(mm, tid)                   # do_exit(): its objects and anon memory go
            tid = tids[ev.task] = wl_respawn(mm, tid)
            if tid < 0:
                break
        elif ev.type == EV_FREE:
            oid = <int32_t>ev.arg
            if oid >= 0 and (mm.objs[oid].kind == OBJ_SLAB or mm.objs[oid].kind == OBJ_PAGES) \
                    and mm.objs[oid].owner == tid:
                mm.current = tid
                do_kfree(mm, oid)
                mm.current = -1
        elif mm.tasks[tid].alive:
            start = mm.now_ns
            mm.tasks[tid].lock_held = ev.locked
            result = task_request(mm, tid, ev.kind, ev.arg, ev.gfp_mask, ev.node, True)
            if mm.tasks[tid].alive:
                mm.tasks[tid].lock_held = False
            if ev.slot >= 0:
                g.slot_oid[ev.slot] = <int32_t>result if result >= 0 else -1
            n += 1
            if trace != NULL:
                if trace_len[0] == cap:
                    cap = max(<int64_t>4096, 2 * cap)
                    trace[0] = <wl_trace_t *>realloc(trace[0], cap * sizeof(wl_trace_t))
                trace[0][trace_len[0]] = wl_trace_t(ev.seq, ev.arg, result, mm.now_ns - start,
                                                    ev.gfp_mask, ev.task, ev.kind, ev.node, ev.locked)
                trace_len[0] += 1
    return n


cdef class WorkloadEvents:
    """The event stream of a workload (for core.replay and inspection); iterating yields
    (type, task, kind, arg, gfp, node, locked, seq, slot) tuples with type one of
    "enter", "request", "free", "exit", "respawn". For "free", `arg` is the slot's object as filled
    in by the driver through set_result()."""
    cdef wl_gen_t g
    cdef readonly int nr_tasks

    def __cinit__(self):
        memset(&self.g, 0, sizeof(wl_gen_t))
        self.g.slot_free = -1

    def __dealloc__(self):
        free(self.g.heap)
        free(self.g.slot_oid)

    def __iter__(self):
        return self

    def __next__(self):
        cdef wl_event_t ev
        memset(&ev, 0, sizeof(ev))
        if not gen_next(&self.g, &ev):
            raise StopIteration
        kind = ("", "enter", "request", "free", "exit", "respawn")[ev.type]
        return (kind, ev.task, ev.kind, ev.arg, ev.gfp_mask, ev.node, bool(ev.locked), ev.seq, ev.slot)

    def set_result(self, int slot, int64_t handle):
        if slot >= 0:
            self.g.slot_oid[slot] = <int32_t>handle if handle >= 0 else -1

    @property
    def request_hash(self):
        return self.g.hash


cdef void gen_init(wl_gen_t *g, dict s, uint64_t seed, list task_nodes) except *:
    """Fill the generator from a validated spec (core.spec.validate_spec)."""
    mix = s["mix"]
    cdef double cum = 0.0
    cdef int i
    rng_seed(g, seed)
    g.hash = 0xcbf29ce484222325ULL      # any fixed start
    g.nr_mix = len(mix["requests"])
    for i, req in enumerate(mix["requests"]):
        cum += req["weight"]
        g.mix[i].kind = REQUEST_KINDS[req["kind"]]
        g.mix[i].cum_weight = cum
        g.mix[i].gfp_mask = gfp(req["gfp"])
        g.mix[i].size_min = req.get("size", {}).get("min", 0)
        g.mix[i].size_max = req.get("size", {}).get("max", 0)
        if g.mix[i].size_min > 0:
            g.mix[i].log_min = log(<double>g.mix[i].size_min)
            g.mix[i].log_span = log(<double>g.mix[i].size_max) - g.mix[i].log_min
        g.mix[i].arg = req.get("order", req.get("count", req.get("pages", 0)))
        node = req.get("node", -1)
        g.mix[i].node = NODE_REMOTE if node == "remote" else NODE_LOCAL if node == "local" else node
    g.burst_p = 1.0 / mix["burst"]
    g.locked_share = mix["locked_share"]
    g.lifetime_mean = mix["lifetime"]["mean"]
    g.long_lived_share = mix["lifetime"]["long_lived_share"]
    g.nr_tasks = len(task_nodes)
    mean_entries = s["churn"]["mean_entries"]
    g.churn_p = 1.0 / mean_entries if mean_entries > 0 else 0.0
    for i, node in enumerate(task_nodes):
        g.task_node[i] = node
    g.nr_nodes = s["machine"]["nodes"]
    g.entries_left = s["length"]["kernel_entries"]
    g.slot_free = -1


def _workload_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < (1 << 64):
        raise ValueError(f"seed: must be an integer in 0..2**64-1, got {seed!r}")
    return seed


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


def workload_events(spec, seed):
    """The event stream of (spec, seed) - identical for every design."""
    from core.spec import validate_spec
    s = validate_spec(spec)
    cdef WorkloadEvents ev = WorkloadEvents()
    gen_init(&ev.g, s, _workload_seed(seed), _task_nodes(s))
    ev.nr_tasks = len(_task_nodes(s))
    return ev


def run_workload(spec, seed, trace=None):
    """Run one randomized workload in C with the GIL released; every metric of
    core.METRICS plus request_hash_lo/hi (the request stream's hash, equal across designs).
    With trace="file", each request and its outcome is written there (TSV)."""
    from core.spec import validate_spec
    s = validate_spec(spec)
    seed = _workload_seed(seed)
    cdef Machine m
    m, tasks = build_workload_machine(s)
    cdef wl_gen_t g
    memset(&g, 0, sizeof(wl_gen_t))
    gen_init(&g, s, seed, _task_nodes(s))
    cdef int tids[256]
    for i, t in enumerate(tasks):
        tids[i] = t.tid
    cdef wl_trace_t *records = NULL
    cdef wl_trace_t **trace_ptr = &records if trace is not None else NULL
    cdef int64_t nr_records = 0
    cdef mm_t *mm = m.mm
    try:
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
        free(g.heap)
        free(g.slot_oid)
        free(records)


cdef _write_trace(path, wl_trace_t *records, int64_t n):
    kinds = {v: k for k, v in REQUEST_KINDS.items()}
    with open(path, "w") as f:
        f.write("seq\ttask\tkind\targ\tgfp\tnode\tlocked\tresult\tlatency_ns\n")
        for i in range(n):
            r = records[i]
            f.write(f"{r.seq}\t{r.task}\t{kinds[r.kind]}\t{r.arg}\t{r.gfp_mask:#x}\t{r.node}\t"
                    f"{int(r.locked)}\t{r.result}\t{r.latency_ns}\n")
