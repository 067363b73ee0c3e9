# memcg: page_counter, the per-CPU charge stock and try_charge() of 4.2/4.3
# (mm/memcontrol.c, kernel-facts §2.1-§2.3), with the design differences read from the
# policy table (designs.pxi) at the points where the kernels differed.

cdef enum:
    CHARGE_OK = 0
    CHARGE_NOMEM = 1
    CHARGE_BYPASS = 2        # 4.2 -EINTR: the charge was not made

cdef int64_t PAGE_COUNTER_MAX = 1 << 50


cdef inline bint mem_cgroup_is_descendant(mm_t *mm, int memcg_id, int root) noexcept nogil:
    while memcg_id != root:
        if memcg_id == ROOT_MEMCG:
            return root == ROOT_MEMCG
        memcg_id = mm.memcgs[memcg_id].parent
    return True


cdef void memcg_usage_add(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    """Change one counter, keeping the peak and the overshoot statistics (DESIGN §4)."""
    cdef memcg_t *m = &mm.memcgs[memcg_id]
    cdef int64_t over = m.memory.count - m.high
    if over > 0:
        m.over_high_page_ns += <double>over * <double>(mm.now_ns - m.last_ns)
    m.last_ns = mm.now_ns
    m.memory.count += nr_pages
    if m.memory.count > m.memory.watermark:
        m.memory.watermark = m.memory.count
    over = m.memory.count - m.high
    if over > m.peak_over_high:
        m.peak_over_high = over
    over = m.memory.count - m.memory.limit
    if over > m.peak_over_max:
        m.peak_over_max = over


cdef int page_counter_try_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    """Charge every level up to the root; on a level over its limit undo and return that
    level (the mem_over_limit), else -1."""
    cdef int c = memcg_id, u
    while c != ROOT_MEMCG:
        if mm.memcgs[c].memory.count + nr_pages > mm.memcgs[c].memory.limit:
            mm.memcgs[c].memory.failcnt += 1
            u = memcg_id
            while u != c:
                memcg_usage_add(mm, u, -nr_pages)
                u = mm.memcgs[u].parent
            return c
        memcg_usage_add(mm, c, nr_pages)
        c = mm.memcgs[c].parent
    return -1


cdef void page_counter_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    while memcg_id != ROOT_MEMCG:
        memcg_usage_add(mm, memcg_id, nr_pages)
        memcg_id = mm.memcgs[memcg_id].parent


cdef void page_counter_uncharge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    while memcg_id != ROOT_MEMCG:
        memcg_usage_add(mm, memcg_id, -nr_pages)
        memcg_id = mm.memcgs[memcg_id].parent


cdef inline int64_t mem_cgroup_margin(mm_t *mm, int memcg_id) noexcept nogil:
    cdef memcg_t *m = &mm.memcgs[memcg_id]
    return m.memory.limit - m.memory.count if m.memory.count < m.memory.limit else 0


# ---- per-CPU charge stock (§2.2) ------------------------------------------------------

cdef inline bint consume_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil:
    if nr_pages > CHARGE_BATCH:
        return False
    if mm.stock_memcg[cpu] == memcg_id and mm.stock_nr[cpu] >= nr_pages:
        mm.stock_nr[cpu] -= nr_pages
        mm.now_ns += COST_STOCK
        return True
    return False


cdef void drain_stock(mm_t *mm, int cpu) noexcept nogil:
    if mm.stock_memcg[cpu] >= 0 and mm.stock_nr[cpu] > 0:
        page_counter_uncharge(mm, mm.stock_memcg[cpu], mm.stock_nr[cpu])
    mm.stock_nr[cpu] = 0
    mm.stock_memcg[cpu] = -1


cdef void refill_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil:
    if mm.stock_memcg[cpu] != memcg_id:
        drain_stock(mm, cpu)
        mm.stock_memcg[cpu] = memcg_id
    mm.stock_nr[cpu] += nr_pages


cdef void drain_all_stock(mm_t *mm, int root) noexcept nogil:
    """Local CPU synchronously; remote CPUs by work items, which this model completes before
    the charging task retries (docs/model.md)."""
    cdef int cpu
    for cpu in range(mm.nr_cpus):
        if mm.stock_memcg[cpu] >= 0 and mem_cgroup_is_descendant(mm, mm.stock_memcg[cpu], root):
            drain_stock(mm, cpu)


# ---- try_charge (§2.3, step numbers in the comments) ----------------------------------

cdef void force_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    """page_counter_charge() past the limit: 4.2's kmem -EINTR path, 4.4's force: label."""
    page_counter_charge(mm, memcg_id, nr_pages)
    mm.stats[M_CHARGE_FORCED] += 1
    mm.stats[M_CHARGE_FORCED_PAGES] += nr_pages


cdef void mem_cgroup_high(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                          int64_t nr_pages, int64_t batch) noexcept nogil:
    """done_restock's memory.high step, as the policy says for this gfp: 4.2 reclaims
    synchronously with the caller's gfp and skips !__GFP_WAIT charges; 4.4 punts the overage
    of any charge to the return-to-user path (mem_cgroup_handle_over_high)."""
    cdef int level = memcg_id
    cdef int how = mm.policy.high_wait if gfp_mask & __GFP_WAIT else mm.policy.high_nowait
    if how == HIGH_SKIP:
        return
    while level != ROOT_MEMCG:
        if mm.memcgs[level].memory.count > mm.memcgs[level].high:
            if how == HIGH_PUNT:
                t.nr_pages_over_high += batch
                t.notify_resume = True
                return
            mm.memcgs[level].events[MEMCG_HIGH] += 1
            try_to_free_mem_cgroup_pages(mm, t, level, nr_pages, gfp_mask, True, RP_CHARGE)
        level = mm.memcgs[level].parent


cdef int try_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil:
    cdef int64_t batch = max(<int64_t>CHARGE_BATCH, nr_pages), nr_reclaimed
    cdef int retries = MEM_CGROUP_RECLAIM_RETRIES, mem_over_limit
    cdef bint drained = False
    if memcg_id == ROOT_MEMCG:                                      # 0
        return CHARGE_OK
    mm.now_ns += COST_CHARGE
    while True:
        if consume_stock(mm, t.cpu, memcg_id, nr_pages):           # 1 (no high check)
            return CHARGE_OK
        mem_over_limit = page_counter_try_charge(mm, memcg_id, batch)   # 2
        if mem_over_limit < 0:
            break                                                   # -> done_restock
        if batch > nr_pages:                                        # 3
            batch = nr_pages
            continue
        if t.memdie or t.dying:                                     # 4
            return bypass_or_force(mm, memcg_id, nr_pages)
        if t.memcg_oom >= 0:                                        # 5
            return charge_nomem(mm, memcg_id, gfp_mask, nr_pages)
        if not (gfp_mask & __GFP_WAIT):                             # 6
            return charge_nomem(mm, memcg_id, gfp_mask, nr_pages)
        mm.memcgs[mem_over_limit].events[MEMCG_MAX] += 1            # 7
        nr_reclaimed = try_to_free_mem_cgroup_pages(mm, t, mem_over_limit, nr_pages,
                                                    gfp_mask, True, RP_CHARGE)  # 8
        if mem_cgroup_margin(mm, mem_over_limit) >= nr_pages:       # 9
            continue
        if not drained:                                             # 10
            drain_all_stock(mm, mem_over_limit)
            drained = True
            continue
        if gfp_mask & __GFP_NORETRY:                                # 11
            return charge_nomem(mm, memcg_id, gfp_mask, nr_pages)
        if nr_reclaimed > 0 and nr_pages <= (1 << PAGE_ALLOC_COSTLY_ORDER):   # 12
            continue
        if retries > 0:                                             # 14
            retries -= 1
            continue
        if (gfp_mask & __GFP_NOFAIL) or t.dying:                    # 15
            return bypass_or_force(mm, memcg_id, nr_pages)
        mm.memcgs[mem_over_limit].events[MEMCG_OOM] += 1            # 16
        if t.may_oom:
            t.memcg_oom = mem_over_limit                            # mem_cgroup_oom()
        return charge_nomem(mm, memcg_id, gfp_mask, nr_pages)
    # 19: done_restock
    if batch > nr_pages:
        refill_stock(mm, t.cpu, memcg_id, batch - nr_pages)
    mem_cgroup_high(mm, t, memcg_id, gfp_mask, nr_pages, batch)
    return CHARGE_OK


cdef int charge_nomem(mm_t *mm, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil:
    """17 nomem: -ENOMEM, except NOFAIL (and __GFP_HIGH where the policy forces it)."""
    if gfp_mask & __GFP_NOFAIL:
        return bypass_or_force(mm, memcg_id, nr_pages)
    if (gfp_mask & __GFP_HIGH) and mm.policy.force_gfp_high:
        force_charge(mm, memcg_id, nr_pages)
        return CHARGE_OK
    return CHARGE_NOMEM


cdef int bypass_or_force(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    """18 bypass: 4.2 returns -EINTR (callers decide); 4.4 force-charges past the limit."""
    if mm.policy.bypass_forces:
        force_charge(mm, memcg_id, nr_pages)
        return CHARGE_OK
    return CHARGE_BYPASS


cdef void mem_cgroup_handle_over_high(mm_t *mm, task_t *t) noexcept nogil:
    """4.4 return-to-user: reclaim the punted overage with GFP_KERNEL on every level above
    high. Killed tasks never get here (they do not return to user mode)."""
    cdef int64_t nr_pages = t.nr_pages_over_high
    cdef int level = t.memcg
    t.nr_pages_over_high = 0
    t.notify_resume = False
    if nr_pages == 0 or t.killed:
        return
    while level != ROOT_MEMCG:
        if mm.memcgs[level].memory.count > mm.memcgs[level].high:
            mm.memcgs[level].events[MEMCG_HIGH] += 1
            try_to_free_mem_cgroup_pages(mm, t, level, nr_pages, GFP_KERNEL, True, RP_RETURN_TO_USER)
        level = mm.memcgs[level].parent


# ---- charge entry points of the page users --------------------------------------------

cdef int memcg_charge_kmem(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil:
    """memcg_charge_kmem(): try_charge; a 4.2 bypass (-EINTR) force-charges kmem. The v1
    kmem counter is unlimited in this model. Returns 0 or -1 (ENOMEM)."""
    cdef int ret = try_charge(mm, t, memcg_id, gfp_mask, nr_pages)
    if ret == CHARGE_BYPASS:
        force_charge(mm, memcg_id, nr_pages)
        return 0
    return 0 if ret == CHARGE_OK else -1


cdef int mem_cgroup_try_charge_user(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil:
    """mem_cgroup_try_charge() of a user page (anon or page cache): the memcg charged, the
    root on a 4.2 bypass, or -1 on ENOMEM."""
    cdef int ret = try_charge(mm, t, t.memcg, gfp_mask, 1)
    if ret == CHARGE_OK:
        return t.memcg
    if ret == CHARGE_BYPASS:
        mm.stats[M_CHARGE_BYPASSED_PAGES] += 1
        return ROOT_MEMCG
    return -1


cdef bint memcg_kmem_bypass(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil:
    """The inline checks of memcg_kmem_newpage_charge()/memcg_kmem_get_cache() (§2.4):
    True means "leave this allocation uncharged"."""
    if t == NULL or t.memcg == ROOT_MEMCG or (gfp_mask & __GFP_NOACCOUNT):
        return True
    if (gfp_mask & __GFP_NOFAIL) and mm.policy.kmem_nofail_uncharged:
        return True
    if t.dying and mm.policy.kmem_dying_uncharged:
        return True
    return False
