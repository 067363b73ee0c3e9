# oom: victim selection and kill (mm/oom_kill.c), global and per memcg.
# badness = resident anon pages (oom_badness() without page tables and swap); ties go to
# the lowest task id. Simplified: a victim of a global or end-of-fault kill that is not the
# running task exits at once (as if the OOM reaper had run); the running task is marked
# TIF_MEMDIE, its anon memory is reaped, and it exits at its return to user mode. A kill
# from inside a charge (4.19+) only reaps its victim's anon memory; the victim exits at its
# next return to user mode or kernel entry (its kmem is freed then, docs/model.md).

cdef int select_bad_process(mm_t *mm, int memcg_root) noexcept nogil:
    """The alive task with the most anon pages (in memcg_root's subtree unless ROOT_MEMCG)."""
    cdef int i, best = -1
    cdef int64_t best_points = -1
    for i in range(mm.nr_tasks):
        if not mm.tasks[i].alive or mm.tasks[i].killed:
            continue
        if memcg_root != ROOT_MEMCG and not mem_cgroup_is_descendant(mm, mm.tasks[i].memcg, memcg_root):
            continue
        if mm.tasks[i].rss > best_points:        # the death that frees the most memory
            best_points = mm.tasks[i].rss
            best = i
    return best


cdef inline bint task_is_dying(task_t *t) noexcept nogil:
    """tsk_is_oom_victim() || fatal_signal_pending() || PF_EXITING (5.16 memcontrol.c)."""
    return t.memdie or t.dying


cdef void oom_kill_process(mm_t *mm, int victim, int memcg_id, bint reap_only) noexcept nogil:
    cdef task_t *v = &mm.tasks[victim]
    v.killed = True
    v.memdie = True
    v.dying = True
    mm.memcgs[memcg_id if memcg_id != ROOT_MEMCG else v.memcg].events[MEMCG_OOM_KILL] += 1
    mm.now_ns += COST_OOM_KILL
    if memcg_id == ROOT_MEMCG:
        mm.stats[M_OOM_GLOBAL] += 1
    else:
        mm.stats[M_OOM_MEMCG] += 1
    if victim != mm.current and not reap_only:
        task_exit(mm, victim)
    else:
        free_task_anon(mm, victim)           # exit_mmap() of the running victim


cdef bint out_of_memory(mm_t *mm, task_t *t) noexcept nogil:
    """Global OOM: a dying current task just gets TIF_MEMDIE; else kill the worst task."""
    cdef int victim
    # an exiting task will free its memory anyway: let it allocate and exit, kill no other
    if t != NULL and (t.dying or t.memdie):
        t.memdie = True
        return True
    victim = select_bad_process(mm, ROOT_MEMCG)
    if victim < 0:
        return False
    oom_kill_process(mm, victim, ROOT_MEMCG, False)
    return True


cdef bint mem_cgroup_oom_synchronize(mm_t *mm, task_t *t) noexcept nogil:
    """End of a user page fault (pagefault_out_of_memory): kill in the memcg whose limit was
    hit. Returns True if the running task was the victim."""
    cdef int memcg_id = t.memcg_oom, victim
    if memcg_id < 0:
        return False
    t.memcg_oom = -1
    victim = select_bad_process(mm, memcg_id)
    if victim < 0:
        return False
    oom_kill_process(mm, victim, memcg_id, False)
    return victim == mm.current


cdef bint mem_cgroup_oom(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages) noexcept nogil:
    """6.1 mem_cgroup_oom() -> mem_cgroup_out_of_memory() from inside try_charge (4.19+):
    True if the charge should be retried (a victim was killed, or the charging task is
    itself dying and will free its memory). Costly orders skip the OOM killer (no event):
    they fall back to smaller allocations. memory.oom.group is not modelled (default 0)."""
    cdef int victim
    if nr_pages > (1 << PAGE_ALLOC_COSTLY_ORDER):
        return False
    mm.memcgs[memcg_id].events[MEMCG_OOM] += 1
    if mem_cgroup_margin(mm, memcg_id) >= nr_pages:
        return True                      # others freed memory meanwhile: no kill needed
    if task_is_dying(t):                 # out_of_memory(): task_will_free_mem(current)
        t.memdie = True
        return True
    victim = select_bad_process(mm, memcg_id)
    if victim < 0:
        return False
    # the victim's kmem stays charged until it exits; running the exit here, inside this
    # task's allocation, is what the kernel never does (the victim exits on its own CPU)
    oom_kill_process(mm, victim, memcg_id, True)
    return True
