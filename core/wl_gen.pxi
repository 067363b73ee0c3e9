# wl_gen: the workload generator - randomized workloads generated entirely in C (issue 4).
# A generator turns (spec without design, seed) into a stream of events - kernel entry,
# request, free, return to user - from its own random stream, never reading model state,
# so every design sees the identical request sequence (common random numbers). The runner
# executes events on the model; core.replay executes the same events through core.Machine.
# Its random stream is rng.pxi, its pending frees wl_heap.pxi, the executor wl_exec.pxi.



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
    # a user page fault runs in user mode, where no kernel lock of the syscall is held (the
    # fault itself takes mmap_sem, task.pxi fault_anon); the draw is made for every kind
    ev.locked = lock_u < g.locked_share and r.kind != REQ_FAULT_ANON
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


cdef inline void gen_task_replaced(wl_gen_t *g, int task) noexcept nogil:
    """The driver replaced `task` by a new one (its predecessor was OOM-killed): the frees
    scheduled by the old life are dropped like those of a task that exited by churn, so none
    can hit an object id the new task was given since (the model reuses object ids)."""
    g.task_life[task] += 1


cdef bint grow_faults(wl_gen_t *g) noexcept nogil:
    """Double the buffer of an entry's pending user faults: an entry can make any number
    of them (a long entry of a fault-heavy mix), and none may be dropped."""
    cdef int cap = max(64, 2 * g.faults_cap)
    cdef wl_event_t *faults = <wl_event_t *>realloc(g.faults, cap * sizeof(wl_event_t))
    if faults == NULL:
        g.nomem = True
        return False
    g.faults = faults
    g.faults_cap = cap
    return True


cdef void gen_free(wl_gen_t *g) noexcept nogil:
    free(g.heap)
    free(g.slot_oid)
    free(g.faults)
    g.heap = NULL
    g.slot_oid = NULL
    g.faults = NULL


cdef inline bint gen_next(wl_gen_t *g, wl_event_t *ev) noexcept nogil:
    """The next event; False at the end (or with g.nomem set, out of memory). An entry is: ENTER, (due FREEs, REQ)*, EXIT, then
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
            if g.pending_faults == g.faults_cap and not grow_faults(g):
                return False                                      # g.nomem: out of memory
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
        g.mix[i].kind = REQUEST_KIND[req["kind"]]
        g.mix[i].cum_weight = cum
        g.mix[i].gfp_mask = gfp(req["gfp"])
        # an accounted kmem site is one whose gfp has __GFP_ACCOUNT (core.spec ACCOUNTED_DEFAULT)
        if g.mix[i].kind <= REQ_ALLOC_PAGES and req["accounted"]:
            g.mix[i].gfp_mask |= __GFP_ACCOUNT
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


