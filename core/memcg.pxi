# memcg: page_counter, the per-CPU charge stock and try_charge() of 4.2/4.3
# (mm/memcontrol.c, docs/kernel.md §2.1-§2.3), with the design differences read from the
# policy table (designs.pxi) at the points where the kernels differed - including the
# later kernels' (§6.3): the memory.high throttle and synchronous enforcement, and the
# obj_cgroup byte charging of slab objects with its per-CPU byte stock (§3.4).

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
    """Change one counter, keeping the peak and the overshoot statistics (docs/workload-spec.md)."""
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
    if nr_pages > mm.policy.charge_batch:
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
    """A stock above one batch is drained (5.x+; it can only get there through the
    obj_cgroup uncharges, done_restock never leaves more than a batch in it)."""
    if mm.stock_memcg[cpu] != memcg_id:
        drain_stock(mm, cpu)
        mm.stock_memcg[cpu] = memcg_id
    mm.stock_nr[cpu] += nr_pages
    if mm.stock_nr[cpu] > mm.policy.charge_batch:
        drain_stock(mm, cpu)


cdef void drain_all_stock(mm_t *mm, int root) noexcept nogil:
    """Local CPU synchronously; remote CPUs by work items, which this model completes before
    the charging task retries (docs/model.md)."""
    cdef int cpu
    for cpu in range(mm.nr_cpus):
        if mm.obj_stock_memcg[cpu] >= 0 and mem_cgroup_is_descendant(mm, mm.obj_stock_memcg[cpu], root):
            drain_obj_stock(mm, cpu)                 # drain_local_stock(): bytes first (5.9+)
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
                # one level over is enough: the return-to-user work walks them all again
                t.nr_pages_over_high += batch
                t.notify_resume = True
                return
            mm.memcgs[level].events[MEMCG_HIGH] += 1
            try_to_free_mem_cgroup_pages(mm, t, level, nr_pages, gfp_mask, True, RP_CHARGE)
        level = mm.memcgs[level].parent


cdef int try_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil:
    """4.2/4.3 try_charge() (§2.3). Each numbered step says why the kernel takes it; the
    numbers are those of docs/kernel.md §2.3, and the designs differ only through policy
    fields (bypass_or_force, nomem_or_force, mem_cgroup_high)."""
    cdef int64_t batch = max(<int64_t>mm.policy.charge_batch, nr_pages), nr_reclaimed
    cdef int retries = mm.policy.reclaim_retries, mem_over_limit
    cdef bint drained = False, raised_max = False
    # 0: the root has no limit to enforce, so charging it would only cost atomic operations
    if memcg_id == ROOT_MEMCG:
        return CHARGE_OK
    mm.now_ns += COST_CHARGE
    while True:
        # 1: pages pre-charged to this CPU serve small charges without touching the shared,
        #    hierarchical counters; they were checked against max when stocked, never high
        if consume_stock(mm, t.cpu, memcg_id, nr_pages):
            return CHARGE_OK
        # 2: charge a whole batch so the next charges on this CPU hit the stock; a failure
        #    names the level that is over (maybe an ancestor): that is where to reclaim
        mem_over_limit = page_counter_try_charge(mm, memcg_id, batch)
        if mem_over_limit < 0:
            break                                                   # -> done_restock
        # 3: the surplus was only a cache; the exact size may still fit before any reclaim
        if batch > nr_pages:
            batch = nr_pages
            continue
        # 4: memcg is not short of physical memory: let a dying task past its last charges
        #    so it exits quickly and frees its memory (4.2 bypass, 4.4 force)
        if (t.memdie or t.dying) and mm.policy.force_dying:
            return bypass_or_force(mm, memcg_id, nr_pages)
        # 5: the task already owes a memcg OOM kill at the end of its fault; fail at once so
        #    it unwinds to the kill instead of reclaiming again
        if t.memcg_oom >= 0:
            return nomem_or_force(mm, memcg_id, mem_over_limit, gfp_mask, nr_pages, raised_max)
        # 6: reclaim sleeps and this caller cannot; nothing was tried, so no max event either
        if not (gfp_mask & __GFP_WAIT):
            return nomem_or_force(mm, memcg_id, mem_over_limit, gfp_mask, nr_pages, raised_max)
        # 7: memory.events max counts the charges that hit the limit and must reclaim (§2.5)
        mm.memcgs[mem_over_limit].events[MEMCG_MAX] += 1
        raised_max = True
        # 8: reclaim from the level over its limit, with the caller's gfp (what it may do:
        #    a NOFS caller cannot shrink dentries, §2.6)
        nr_reclaimed = try_to_free_mem_cgroup_pages(mm, t, mem_over_limit, nr_pages,
                                                    gfp_mask, True, RP_CHARGE)
        # 9: room was made (by this reclaim or by frees meanwhile): retry, no retry used up
        if mem_cgroup_margin(mm, mem_over_limit) >= nr_pages:
            continue
        # 10: other CPUs' stocks hold charged pages nobody uses; give them back once (it is
        #     costly: work on every CPU) before calling the memcg out of memory
        if not drained:
            drain_all_stock(mm, mem_over_limit)
            drained = True
            continue
        # 11: the caller has a fallback and asked for one attempt only (SLUB's first try)
        if gfp_mask & __GFP_NORETRY:
            return nomem_or_force(mm, memcg_id, mem_over_limit, gfp_mask, nr_pages, raised_max)
        # 12: reclaim freed something though the limit is still exceeded: retry before
        #     giving up, but only for small charges - a large one is unlikely to fit so close
        #     to the limit, and its callers fall back to small ones anyway
        if nr_reclaimed > 0 and nr_pages <= (1 << PAGE_ALLOC_COSTLY_ORDER):
            continue
        # 13 (wait for a task moving between memcgs, whose charges may count twice) is not
        #    modelled: tasks never change memcg here
        # 14: bounded: MEM_CGROUP_RECLAIM_RETRIES fruitless rounds mean out of memory
        if retries > 0:
            retries -= 1
            continue
        # 15: a NOFAIL caller cannot handle failure, and a task killed meanwhile should exit
        #     and free its memory, not OOM: let both past the limit
        if (gfp_mask & __GFP_NOFAIL) or (t.dying and mm.policy.force_dying):
            return bypass_or_force(mm, memcg_id, nr_pages)
        # 16: out of memory. The kill is deferred to the end of a user page fault
        #     (mem_cgroup_oom only records it): killing here, deep in the kernel with locks
        #     held, could deadlock; any other charge just fails with -ENOMEM
        mm.memcgs[mem_over_limit].events[MEMCG_OOM] += 1
        if t.may_oom:
            t.memcg_oom = mem_over_limit                            # mem_cgroup_oom()
        return nomem_or_force(mm, memcg_id, mem_over_limit, gfp_mask, nr_pages, raised_max)
    # 19: done_restock. The surplus of the batch stays on this CPU for its next charges
    if batch > nr_pages:
        refill_stock(mm, t.cpu, memcg_id, batch - nr_pages)
    # ... and a hierarchy above its normal range (memory.high) makes the charging task trim
    # its excess: synchronously in 4.2 (not without __GFP_WAIT: reclaim sleeps), punted to
    # the return to user mode in 4.4 so reclaim always runs with GFP_KERNEL and no locks
    mem_cgroup_high(mm, t, memcg_id, gfp_mask, nr_pages, batch)
    # 5.18: a long kernel entry must not run far over high before it returns to user mode
    if mm.policy.high_sync_over_batch:
        mem_cgroup_high_sync(mm, t, gfp_mask)
    return CHARGE_OK


cdef int nomem_or_force(mm_t *mm, int memcg_id, int mem_over_limit, uint32_t gfp_mask,
                        int64_t nr_pages, bint raised_max) noexcept nogil:
    """nomem; a charge forced there counts a max event on mem_over_limit when the loop
    did not count one yet (6.x force:, policy force_max_event)."""
    cdef int64_t forced = mm.stats[M_CHARGE_FORCED]
    cdef int ret = charge_nomem(mm, memcg_id, gfp_mask, nr_pages)
    if mm.policy.force_max_event and not raised_max and mm.stats[M_CHARGE_FORCED] != forced:
        mm.memcgs[mem_over_limit].events[MEMCG_MAX] += 1
    return ret


cdef int charge_nomem(mm_t *mm, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil:
    """17 nomem: -ENOMEM, and the caller decides what failing means - except a NOFAIL
    caller, which cannot, and __GFP_HIGH where the policy forces it: such charges are few
    and memcg has no reserve for them (Davydov, §6.1; 5.4 and later, §6.2-§6.3)."""
    if gfp_mask & __GFP_NOFAIL:
        return bypass_or_force(mm, memcg_id, nr_pages)
    if (gfp_mask & __GFP_HIGH) and mm.policy.force_gfp_high:
        force_charge(mm, memcg_id, nr_pages)
        return CHARGE_OK
    return CHARGE_NOMEM


cdef int bypass_or_force(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil:
    """18 bypass: 4.2 returns -EINTR, nothing charged, and each caller decides (user pages
    go to the root, kmem is force-charged, §2.4); 4.4 force-charges past the limit here,
    so callers need no special case (§2.7: the overage is brief and bounded)."""
    if mm.policy.bypass_forces:
        force_charge(mm, memcg_id, nr_pages)
        return CHARGE_OK
    return CHARGE_BYPASS


cdef void mem_cgroup_handle_over_high(mm_t *mm, task_t *t) noexcept nogil:
    """4.4 return-to-user: reclaim the punted overage with GFP_KERNEL on every level above
    high. Killed tasks never get here (they do not return to user mode)."""
    __mem_cgroup_handle_over_high(mm, t, GFP_KERNEL, RP_RETURN_TO_USER)


cdef void mem_cgroup_high_sync(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil:
    """5.18 (c9afe31ec443, §6.3 step 10): once the task's punted overage exceeds one charge
    batch, handle it right away in the charging context with the caller's gfp, so a long
    kernel entry cannot run far over high before it returns to user mode."""
    if t.nr_pages_over_high > mm.policy.charge_batch and (gfp_mask & __GFP_WAIT):
        mm.stats[M_HIGH_SYNC] += 1
        __mem_cgroup_handle_over_high(mm, t, gfp_mask, RP_CHARGE)


cdef int64_t reclaim_high(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages,
                          uint32_t gfp_mask, int place) noexcept nogil:
    """reclaim_high(): every level above its high counts a high event and reclaims."""
    cdef int64_t nr_reclaimed = 0
    while memcg_id != ROOT_MEMCG:
        if mm.memcgs[memcg_id].memory.count > mm.memcgs[memcg_id].high:
            mm.memcgs[memcg_id].events[MEMCG_HIGH] += 1
            nr_reclaimed += try_to_free_mem_cgroup_pages(mm, t, memcg_id, nr_pages, gfp_mask,
                                                         True, place)
        memcg_id = mm.memcgs[memcg_id].parent
    return nr_reclaimed


cdef int64_t mem_find_max_overage(mm_t *mm, int memcg_id) noexcept nogil:
    """The largest (usage - high) / high of the memcg and its ancestors, << 20 (§6.3)."""
    cdef int64_t overage, max_overage = 0, usage, high
    while memcg_id != ROOT_MEMCG:
        usage = mm.memcgs[memcg_id].memory.count
        high = max(mm.memcgs[memcg_id].high, <int64_t>1)
        if usage > high:
            overage = ((usage - high) << MEMCG_DELAY_PRECISION_SHIFT) // high
            max_overage = max(max_overage, overage)
        memcg_id = mm.memcgs[memcg_id].parent
    return max_overage


cdef int64_t calculate_high_delay(int64_t charge_batch, int64_t nr_pages, int64_t max_overage) noexcept nogil:
    """calculate_high_delay() (5.4, 0e4b01df8659; §6.3): quadratic in the overage, scaled
    by the task's share nr_pages / MEMCG_CHARGE_BATCH; jiffies."""
    cdef int64_t penalty_jiffies
    if max_overage == 0:
        return 0
    penalty_jiffies = max_overage * max_overage * HZ
    penalty_jiffies >>= MEMCG_DELAY_PRECISION_SHIFT
    penalty_jiffies >>= MEMCG_DELAY_SCALING_SHIFT
    return penalty_jiffies * nr_pages // charge_batch


cdef void __mem_cgroup_handle_over_high(mm_t *mm, task_t *t, uint32_t gfp_mask, int place) noexcept nogil:
    """Reclaim the task's punted overage (4.4), then, with the high_throttle policy, the
    6.18 loop (§6.3): while the penalty is worth sleeping for, reclaim again as long as
    reclaim progresses or retries remain, then sleep the penalty (at most 2 s). The sleep
    is not CPU work: it goes to the task's latencies, not the machine's clock."""
    cdef int64_t nr_pages = t.nr_pages_over_high, nr_reclaimed, penalty
    cdef int retries = mm.policy.reclaim_retries, loops = 0
    cdef bint in_retry = False
    t.nr_pages_over_high = 0
    t.notify_resume = False
    if nr_pages == 0 or t.killed:
        return
    while True:
        if mm.policy.high_skip_dying and (t.dying or t.memdie):     # task_is_dying()
            return
        nr_reclaimed = reclaim_high(mm, t, t.memcg, SWAP_CLUSTER_MAX if in_retry else nr_pages,
                                    gfp_mask, place)
        if not mm.policy.high_throttle:
            return
        penalty = min(calculate_high_delay(mm.policy.charge_batch, nr_pages,
                                           mem_find_max_overage(mm, t.memcg)),
                      <int64_t>MEMCG_MAX_HIGH_DELAY_JIFFIES)
        if penalty <= HZ // 100:                                    # not worth a sleep
            return
        loops += 1
        # reclaim again while it helps: sleeping would only stall a task that can make room
        if (nr_reclaimed > 0 or retries > 0) and loops < SLOWPATH_MAX_LOOPS:
            if nr_reclaimed == 0:
                retries -= 1
            in_retry = True
            continue
        # throttle the allocator to the pace reclaim can keep up with (schedule_timeout_killable)
        t.sleep_ns += penalty * NSEC_PER_JIFFY
        t.syscall_sleep_ns += penalty * NSEC_PER_JIFFY
        mm.stats[M_HIGH_THROTTLES] += 1
        mm.stats[M_HIGH_THROTTLE_NS] += penalty * NSEC_PER_JIFFY
        return


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


cdef inline bint kmem_opted_out(mm_t *mm, uint32_t gfp_mask) noexcept nogil:
    """The allocation site is not accounted: 4.2's opt-out (__GFP_NOACCOUNT), or - where
    only opted-in sites are charged (4.5 a9bb7e620efd, policy charge_only_accounted) - a
    site without __GFP_ACCOUNT (SLAB_ACCOUNT caches pass it too, slab_common.pxi d_alloc)."""
    if gfp_mask & __GFP_NOACCOUNT:
        return True
    return mm.policy.charge_only_accounted and not (gfp_mask & __GFP_ACCOUNT)


cdef bint memcg_kmem_bypass(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil:
    """The inline checks of memcg_kmem_newpage_charge()/memcg_kmem_get_cache() (§2.4):
    True means "leave this allocation uncharged"."""
    # interrupts and kernel threads have no memcg of their own; unaccounted sites opted out
    if t == NULL or t.memcg == ROOT_MEMCG or kmem_opted_out(mm, gfp_mask):
        return True
    # 4.2: a NOFAIL allocation must not fail, so it skips a charge that could (4.4 forces)
    if (gfp_mask & __GFP_NOFAIL) and mm.policy.kmem_nofail_uncharged:
        return True
    # 4.2: a task with a fatal signal is about to free everything; charging it would only
    # make it reclaim on its way out
    if t.dying and mm.policy.kmem_dying_uncharged:
        return True
    return False


# ---- obj_cgroup: per-object byte charging of slab objects (5.9+, §3.4) --------------------
# Linux 6.18 mm/memcontrol.c obj_cgroup_charge(), consume_obj_stock(), refill_obj_stock(),
# drain_obj_stock(), obj_cgroup_charge_pages()/obj_cgroup_uncharge_pages(). The obj_cgroup
# of a memcg is the memcg itself here (no reparenting: cgroups are never removed).

cdef int obj_cgroup_charge_pages(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                                 int64_t nr_pages) noexcept nogil:
    """try_charge_memcg() with the caller's gfp, then memcg_account_kmem(); 0 or -1."""
    cdef int ret = try_charge(mm, t, memcg_id, gfp_mask, nr_pages)
    if ret == CHARGE_BYPASS:                    # not with a forcing row; kept for symmetry
        force_charge(mm, memcg_id, nr_pages)
    elif ret != CHARGE_OK:
        return -1
    mm.memcgs[memcg_id].objcg_pages += nr_pages
    return 0


cdef void obj_cgroup_uncharge_pages(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil:
    """memcg_account_kmem(-n), then the pages go to this CPU's page stock (refill_stock)."""
    mm.memcgs[memcg_id].objcg_pages -= nr_pages
    refill_stock(mm, cpu, memcg_id, nr_pages)


cdef void drain_obj_stock(mm_t *mm, int cpu) noexcept nogil:
    """Whole pages back to the memcg, the sub-page rest to objcg->nr_charged_bytes."""
    cdef int memcg_id = mm.obj_stock_memcg[cpu]
    cdef int64_t nr_bytes = mm.obj_stock_bytes[cpu]
    if memcg_id < 0:
        return
    if nr_bytes >> PAGE_SHIFT:
        obj_cgroup_uncharge_pages(mm, cpu, memcg_id, nr_bytes >> PAGE_SHIFT)
    mm.memcgs[memcg_id].nr_charged_bytes += nr_bytes & (PAGE_SIZE - 1)
    mm.obj_stock_bytes[cpu] = 0
    mm.obj_stock_memcg[cpu] = -1


cdef inline bint consume_obj_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_bytes) noexcept nogil:
    if mm.obj_stock_memcg[cpu] == memcg_id and mm.obj_stock_bytes[cpu] >= nr_bytes:
        mm.obj_stock_bytes[cpu] -= nr_bytes
        mm.now_ns += COST_STOCK
        return True
    return False


cdef void refill_obj_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_bytes,
                           bint allow_uncharge) noexcept nogil:
    """Switching memcg drains the old one and takes over the new one's nr_charged_bytes;
    with allow_uncharge (frees, or a switch) whole pages above one go back."""
    cdef int64_t nr_pages = 0
    if mm.obj_stock_memcg[cpu] != memcg_id:
        drain_obj_stock(mm, cpu)
        mm.obj_stock_memcg[cpu] = memcg_id
        mm.obj_stock_bytes[cpu] = mm.memcgs[memcg_id].nr_charged_bytes
        mm.memcgs[memcg_id].nr_charged_bytes = 0
        allow_uncharge = True
    mm.obj_stock_bytes[cpu] += nr_bytes
    if allow_uncharge and mm.obj_stock_bytes[cpu] > PAGE_SIZE:
        nr_pages = mm.obj_stock_bytes[cpu] >> PAGE_SHIFT
        mm.obj_stock_bytes[cpu] &= PAGE_SIZE - 1
    if nr_pages:
        obj_cgroup_uncharge_pages(mm, cpu, memcg_id, nr_pages)


cdef inline int obj_cgroup_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                           int64_t size) noexcept nogil:
    """Charge `size` bytes: from the byte stock, else whole pages with the caller's gfp,
    the unused rest of the last page into the stock (without uncharging). 0 or -1."""
    cdef int64_t nr_pages = size >> PAGE_SHIFT, nr_bytes = size & (PAGE_SIZE - 1)
    if consume_obj_stock(mm, t.cpu, memcg_id, size):
        return 0
    if nr_bytes:
        nr_pages += 1
    if obj_cgroup_charge_pages(mm, t, memcg_id, gfp_mask, nr_pages) < 0:
        return -1
    if nr_bytes:
        refill_obj_stock(mm, t.cpu, memcg_id, PAGE_SIZE - nr_bytes, False)
    return 0


cdef void obj_cgroup_uncharge(mm_t *mm, int cpu, int memcg_id, int64_t size) noexcept nogil:
    refill_obj_stock(mm, cpu, memcg_id, size, True)
