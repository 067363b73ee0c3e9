# task: what a process does to memory - kernel entry and the return-to-user work, page
# cache reads, user page faults (the only place a memcg OOM kill happens in 4.2, §2.3 step
# 16), kernel allocations on its behalf, exit - and the per-request entry point shared by
# core.Machine and run_workload (one model, two drivers).

cdef enum:                   # request kinds (workload spec "kind")
    REQ_KMALLOC = 0
    REQ_KMALLOC_NODE = 1
    REQ_ALLOC_PAGES = 2
    REQ_DENTRIES = 3
    REQ_READ_FILE = 4
    REQ_FAULT_ANON = 5
    NR_REQ_KINDS = 6

cdef enum:
    FAULT_RETRIES = 16       # a fault whose charge keeps failing without a kill gives up


cdef int grow_tasks(mm_t *mm) noexcept nogil:
    cdef int32_t new = max(16, 2 * mm.cap_tasks)
    cdef task_t *t = <task_t *>realloc(mm.tasks, new * sizeof(task_t))
    if t == NULL:
        mm.fatal = FATAL_NOMEM
        return -1
    mm.tasks = t
    mm.cap_tasks = new
    return 0


cdef int task_new(mm_t *mm, int memcg_id, int cpu) noexcept nogil:
    cdef int tid = mm.nr_tasks
    cdef task_t *t
    if tid >= mm.cap_tasks and grow_tasks(mm) < 0:
        return -1
    mm.nr_tasks += 1
    t = &mm.tasks[tid]
    memset(t, 0, sizeof(task_t))
    t.memcg = memcg_id
    t.cpu = cpu
    t.node = cpu * mm.nr_nodes // mm.nr_cpus
    t.alive = True
    t.memcg_oom = -1
    list_init(&t.objs)
    return tid


cdef inline void syscall_enter(mm_t *mm, int tid) noexcept nogil:
    """A syscall entry: one kernel entry (the denominator of enomem_per_kentry); its
    latency runs until return_to_user() has done the return-to-user work."""
    cdef task_t *t = &mm.tasks[tid]
    t.in_kernel = True
    t.in_syscall = True
    t.syscall_start_ns = mm.now_ns
    t.syscall_sleep_ns = 0
    mm.stats[M_KENTRIES] += 1
    mm.now_ns += COST_SYSCALL


cdef inline void syscall_done(mm_t *mm, task_t *t) noexcept nogil:
    """The syscall's latency as the caller sees it: entry until the return-to-user work
    (way1's punted memory.high reclaim) is done, or until a fatal signal ends it."""
    if t.in_syscall:
        t.in_syscall = False
        mm.syscall_lat[lat_bucket(mm.now_ns - t.syscall_start_ns + t.syscall_sleep_ns)] += 1


cdef void setup_background(mm_t *mm, int root_tid, int64_t file_pages, double fragment) noexcept nogil:
    cdef int32_t pfn, first = -1, last = -1, nxt
    cdef int node, stride
    cdef int32_t oid
    read_file(mm, root_tid, file_pages)
    if fragment > 0:
        stride = max(2, <int>(1.0 / fragment + 0.5))
        # take every free page above the high watermarks, chained through pg_next
        for node in range(mm.nr_nodes):
            while True:
                pfn = get_page_from_freelist(mm, GFP_KERNEL | __GFP_THISNODE, 0, ALLOC_WMARK_HIGH, node)
                if pfn < 0:
                    break
                mm.pg_next[pfn] = first
                first = pfn
        pfn = first
        while pfn >= 0:
            nxt = mm.pg_next[pfn]
            mm.pg_next[pfn] = -1
            if pfn % stride == 0:                    # pinned: unmovable kernel memory
                oid = obj_new(mm, OBJ_PAGES, root_tid)
                if oid >= 0:
                    mm.pg_flags[pfn] = PG_head | PG_kmem
                    mm.objs[oid].pfn = pfn
                    mm.objs[oid].order = 0
                    mm.objs[oid].size = PAGE_SIZE
                    mm.memcgs[ROOT_MEMCG].stat[MS_KERNEL] += 1
                    mm.zones[page_to_nid(mm, pfn)].nr_kmem += 1
                    pfn = nxt
                    continue
            __free_pages(mm, pfn, 0)
            pfn = nxt
    memset(mm.stats, 0, sizeof(mm.stats))
    memset(mm.lat, 0, sizeof(mm.lat))
    memset(mm.syscall_lat, 0, sizeof(mm.syscall_lat))


cdef void record_syscall_overage(mm_t *mm, task_t *t) noexcept nogil:
    """Overage over memory.high seen when the task returns to user mode."""
    cdef int level = t.memcg
    cdef int64_t over
    while level != ROOT_MEMCG:
        over = mm.memcgs[level].memory.count - mm.memcgs[level].high
        if over > mm.stats[M_OVER_HIGH_SYSCALL_PEAK]:
            mm.stats[M_OVER_HIGH_SYSCALL_PEAK] = over
        level = mm.memcgs[level].parent


cdef void return_to_user(mm_t *mm, int tid) noexcept nogil:
    """exit_to_usermode: tracehook_notify_resume() runs the punted high reclaim (4.4); a
    task with a fatal signal dies instead of returning."""
    cdef task_t *t = &mm.tasks[tid]
    t.in_kernel = False
    if not t.alive:
        return
    if t.dying:              # a fatal signal: the task never reaches user space again
        syscall_done(mm, t)
        task_exit(mm, tid)
        return
    if t.notify_resume:      # the over-high reclaim punted here (§2.7): no locks held now
        mem_cgroup_handle_over_high(mm, t)
    record_syscall_overage(mm, t)
    syscall_done(mm, t)


cdef void lru_add(mm_t *mm, int32_t pfn, int memcg_id, int lru, int owner) noexcept nogil:
    cdef int nid = page_to_nid(mm, pfn)
    mm.pg_flags[pfn] = PG_head | (PG_lru_file if lru == LRU_FILE else PG_lru_anon)
    mm.pg_memcg[pfn] = memcg_id
    mm.pg_private[pfn] = owner
    list_add(&mm.memcgs[memcg_id].lru[nid][lru], mm.pg_next, mm.pg_prev, pfn)
    if lru == LRU_FILE:
        mm.memcgs[memcg_id].stat[MS_FILE] += 1
        mm.zones[nid].nr_file += 1
    else:
        mm.memcgs[memcg_id].stat[MS_ANON] += 1
        mm.zones[nid].nr_anon += 1
        mm.tasks[owner].rss += 1


cdef int charge_user_page(mm_t *mm, task_t *t, int32_t pfn) noexcept nogil:
    """mem_cgroup_try_charge() after the page allocation, GFP_KERNEL reclaim bits (4.2
    add_to_page_cache_lru / do_anonymous_page). A 4.2 bypass charges the root."""
    cdef int memcg_id = mem_cgroup_try_charge_user(mm, t, GFP_KERNEL)
    if memcg_id < 0:
        __free_pages(mm, pfn, 0)
    elif memcg_id == ROOT_MEMCG and t.memcg != ROOT_MEMCG:
        mm.pg_flags[pfn] |= PG_acct_miss
        mm.acct_miss_pages += 1
    return memcg_id


cdef int64_t read_file(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil:
    """read(): page cache pages (GFP_HIGHUSER_MOVABLE, charged to the task's memcg, clean,
    reclaimable), kept after the task exits. Returns the pages read; fewer means ENOMEM."""
    cdef task_t *t
    cdef int64_t i
    cdef int32_t pfn
    cdef int memcg_id
    cdef uint8_t miss
    for i in range(nr_pages):
        t = &mm.tasks[tid]
        pfn = __alloc_pages_nodemask(mm, t, GFP_HIGHUSER_MOVABLE, 0, NUMA_NO_NODE)
        if pfn < 0:
            return i
        memcg_id = charge_user_page(mm, t, pfn)
        if memcg_id < 0:
            return i
        miss = mm.pg_flags[pfn] & PG_acct_miss
        lru_add(mm, pfn, memcg_id, LRU_FILE, -1)
        mm.pg_flags[pfn] |= miss
    return nr_pages


cdef int64_t fault_anon(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil:
    """User page faults, one kernel entry each. may_oom is set around the charge; a failed
    charge ends the fault in pagefault_out_of_memory() -> mem_cgroup_oom_synchronize(),
    which kills; the fault is retried unless the task itself was killed (§2.3 step 16)."""
    cdef task_t *t
    cdef int64_t i = 0
    cdef int32_t pfn
    cdef int memcg_id, retries = 0
    cdef uint8_t miss
    while i < nr_pages:
        t = &mm.tasks[tid]
        if t.killed or not t.alive:
            return i
        t.in_kernel = True
        mm.now_ns += COST_FAULT
        # 4.x do_page_fault: the page is allocated and charged with mmap_sem held for read
        # (6.x: the per-VMA lock, or mmap_lock), so reclaim in here runs under that lock;
        # it is released before the OOM kill and the return to user (mm_fault_error)
        t.mmap_sem = True
        pfn = __alloc_pages_nodemask(mm, t, GFP_HIGHUSER_MOVABLE, 0, NUMA_NO_NODE)
        if pfn < 0:                                  # VM_FAULT_OOM from the page allocator
            t.mmap_sem = False
            out_of_memory(mm, t)
            retries += 1
        else:
            mm.now_ns += COST_PAGE_ZERO
            t.may_oom = True
            memcg_id = charge_user_page(mm, t, pfn)
            t.may_oom = False
            t.mmap_sem = False
            if memcg_id < 0:
                mem_cgroup_oom_synchronize(mm, t)
                retries += 1
            else:
                miss = mm.pg_flags[pfn] & PG_acct_miss
                lru_add(mm, pfn, memcg_id, LRU_ANON, tid)
                mm.pg_flags[pfn] |= miss
                retries = 0
                i += 1
        return_to_user(mm, tid)
        if retries > FAULT_RETRIES:                  # SIGBUS in all but name
            return i
    return i


cdef void free_task_anon(mm_t *mm, int tid) noexcept nogil:
    """exit_mmap(): free the task's anonymous pages wherever they are charged."""
    cdef int memcg_id, nid
    cdef int32_t pfn, nxt
    cdef list_t *l
    for memcg_id in range(mm.nr_memcgs):
        for nid in range(mm.nr_nodes):
            l = &mm.memcgs[memcg_id].lru[nid][LRU_ANON]
            pfn = l.head
            while pfn >= 0 and mm.tasks[tid].rss > 0:
                nxt = mm.pg_next[pfn]
                if mm.pg_private[pfn] == tid:
                    list_del(l, mm.pg_next, mm.pg_prev, pfn)
                    mm.memcgs[memcg_id].stat[MS_ANON] -= 1
                    mm.zones[nid].nr_anon -= 1
                    mm.tasks[tid].rss -= 1
                    if mm.pg_flags[pfn] & PG_acct_miss:
                        mm.acct_miss_pages -= 1
                    if memcg_id != ROOT_MEMCG:
                        page_counter_uncharge(mm, memcg_id, 1)
                    __free_pages(mm, pfn, 0)
                pfn = nxt


cdef void task_exit(mm_t *mm, int tid) noexcept nogil:
    """do_exit(): free every object and page block the task owns and its anon memory.
    Page cache and dentries stay (they belong to the file system, charged to the memcg)."""
    cdef int saved = mm.current
    if not mm.tasks[tid].alive:
        return
    mm.current = tid
    while mm.tasks[tid].objs.head >= 0:
        do_kfree(mm, mm.tasks[tid].objs.head)
    free_task_anon(mm, tid)
    mm.tasks[tid].alive = False
    mm.tasks[tid].in_kernel = False
    mm.current = saved


cdef inline int lat_bucket(int64_t v) noexcept nogil:
    cdef int e
    if v < LAT_SUB:
        return <int>(v if v > 0 else 0)
    e = fls(v) - 1
    return (e - 3) * LAT_SUB + <int>((v >> (e - 4)) & (LAT_SUB - 1))


cdef int64_t do_request(mm_t *mm, int tid, int kind, int64_t arg, uint32_t gfp_mask, int node) noexcept nogil:
    """One request; the result is an object id (kmalloc, alloc_pages) or a count; -1 or a
    short count is a failure."""
    cdef task_t *t = &mm.tasks[tid]
    cdef int64_t i
    if kind == REQ_KMALLOC or kind == REQ_KMALLOC_NODE:
        return do_kmalloc(mm, t, arg, gfp_mask, node, tid)
    if kind == REQ_ALLOC_PAGES:
        return alloc_kmem_pages(mm, t, gfp_mask, <int>arg, node, tid)
    if kind == REQ_DENTRIES:
        for i in range(arg):
            if not d_alloc(mm, &mm.tasks[tid]):
                return i
        return arg
    if kind == REQ_READ_FILE:
        return read_file(mm, tid, arg)
    return fault_anon(mm, tid, arg)


cdef inline bint request_failed(int kind, int64_t arg, int64_t result) noexcept nogil:
    if kind <= REQ_ALLOC_PAGES:
        return result < 0
    return result < arg


cdef int64_t task_request(mm_t *mm, int tid, int kind, int64_t arg, uint32_t gfp_mask, int node,
                          bint fallback) noexcept nogil:
    """A request with its accounting (attempts, failures, latency per gfp class). With
    `fallback`, a failed GFP_NOWAIT request is retried with GFP_KERNEL by its caller (the
    fallback path every non-blocking caller must have); a GFP_KERNEL/NOFS failure (or a
    failed fallback) is a user-visible ENOMEM."""
    cdef int64_t start = mm.now_ns, result, slept = mm.tasks[tid].sleep_ns
    cdef int cls = GC_KERNEL if kind >= REQ_DENTRIES else gfp_class(gfp_mask)
    cdef int saved = mm.current
    mm.current = tid
    mm.stats[M_REQUESTS] += 1
    mm.stats[M_ATTEMPTS_BASE + cls] += 1
    result = do_request(mm, tid, kind, arg, gfp_mask, node)
    if request_failed(kind, arg, result):
        mm.stats[M_FAILURES_BASE + cls] += 1
        if cls == GC_NOWAIT:
            mm.stats[M_NOWAIT_FAIL] += 1
            if fallback and mm.tasks[tid].alive:   # a NOWAIT caller must have a fallback (§6.1)
                mm.stats[M_NOWAIT_FALLBACK] += 1
                mm.stats[M_ATTEMPTS_BASE + GC_KERNEL] += 1
                result = do_request(mm, tid, kind, arg,
                                    GFP_KERNEL | (gfp_mask & (__GFP_COMP | __GFP_ACCOUNT)), node)
                if request_failed(kind, arg, result):
                    mm.stats[M_FAILURES_BASE + GC_KERNEL] += 1
                    mm.stats[M_ENOMEM] += 1
        elif (cls == GC_KERNEL or cls == GC_NOFS) and kind != REQ_FAULT_ANON:
            mm.stats[M_ENOMEM] += 1
    mm.lat[cls][lat_bucket(mm.now_ns - start + mm.tasks[tid].sleep_ns - slept)] += 1
    mm.current = saved
    return result
