# wl_exec: the executor - runs the generator's events on the model in C, GIL released.


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
            if not mm.tasks[tid].alive:               # OOM-killed since its last entry
                tid = tids[ev.task] = wl_respawn(mm, tid)
                if tid < 0:
                    break
                gen_task_replaced(g, ev.task)
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
    if g.nomem:
        mm.fatal = FATAL_NOMEM
    return n


