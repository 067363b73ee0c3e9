# buddy: the page allocator of 4.2/4.3 (mm/page_alloc.c, docs/kernel.md §5).
# One zone (NORMAL) per node, free_area[0..10] as lists of real PFNs, so splitting and
# merging are the kernel's and fragmentation is real. Simplified (docs/model.md): a single
# migratetype, no per-CPU (pcp) lists, no lowmem_reserve, no fair-zone batches.

cdef inline zone_t *page_zone(mm_t *mm, int32_t pfn) noexcept nogil:
    return &mm.zones[pfn // mm.node_span]

cdef inline int page_to_nid(mm_t *mm, int32_t pfn) noexcept nogil:
    return pfn // mm.node_span


cdef inline void add_to_free_area(mm_t *mm, zone_t *z, int32_t pfn, int order, bint tail) noexcept nogil:
    mm.pg_flags[pfn] = PG_buddy
    mm.pg_order[pfn] = order
    if tail:
        list_add_tail(&z.free_area[order], mm.pg_next, mm.pg_prev, pfn)
    else:
        list_add(&z.free_area[order], mm.pg_next, mm.pg_prev, pfn)


cdef inline void del_from_free_area(mm_t *mm, zone_t *z, int32_t pfn) noexcept nogil:
    list_del(&z.free_area[mm.pg_order[pfn]], mm.pg_next, mm.pg_prev, pfn)
    mm.pg_flags[pfn] = 0
    mm.pg_order[pfn] = -1


cdef inline bint page_is_buddy(mm_t *mm, zone_t *z, int64_t idx, int order) noexcept nogil:
    if idx + (1 << order) > z.managed:
        return False
    cdef int32_t pfn = <int32_t>(z.start_pfn + idx)
    return (mm.pg_flags[pfn] & PG_buddy) != 0 and mm.pg_order[pfn] == order


cdef void __free_one_page(mm_t *mm, zone_t *z, int32_t pfn, int order) noexcept nogil:
    """Free a block and merge it with its buddy (pfn ^ (1 << order)) while possible (§5.1)."""
    cdef int64_t idx = pfn - z.start_pfn, buddy_idx, combined, higher_buddy
    mm.pg_flags[pfn] = 0
    mm.pg_order[pfn] = -1
    z.nr_free += 1 << order
    while order < MAX_ORDER - 1:
        buddy_idx = idx ^ (1 << order)
        if not page_is_buddy(mm, z, buddy_idx, order):
            break
        del_from_free_area(mm, z, <int32_t>(z.start_pfn + buddy_idx))
        idx &= buddy_idx
        order += 1
        mm.now_ns += COST_BUDDY_MERGE
    # if the buddy one level up is free, this block will likely merge soon: put it at the
    # tail so it is not handed out first (4.2 __free_one_page)
    cdef bint tail = False
    if order < MAX_ORDER - 2:
        combined = (idx ^ (1 << order)) & idx
        higher_buddy = combined ^ (1 << (order + 1))
        tail = page_is_buddy(mm, z, higher_buddy, order + 1)
    add_to_free_area(mm, z, <int32_t>(z.start_pfn + idx), order, tail)


cdef int32_t __rmqueue_smallest(mm_t *mm, zone_t *z, int order) noexcept nogil:
    """Take the first block of the smallest order >= order; expand() the rest (§5.1)."""
    cdef int cur
    cdef int32_t pfn
    for cur in range(order, MAX_ORDER):
        if z.free_area[cur].nr == 0:
            continue
        pfn = z.free_area[cur].head
        del_from_free_area(mm, z, pfn)
        while cur > order:                      # expand(): upper halves go back
            cur -= 1
            add_to_free_area(mm, z, pfn + (1 << cur), cur, False)
            mm.now_ns += COST_BUDDY_SPLIT
        z.nr_free -= 1 << order
        mm.pg_flags[pfn] = PG_head
        mm.pg_order[pfn] = order
        return pfn
    return -1


cdef void __free_pages(mm_t *mm, int32_t pfn, int order) noexcept nogil:
    mm.pg_memcg[pfn] = 0
    mm.pg_private[pfn] = -1
    mm.now_ns += COST_BUDDY_FREE
    __free_one_page(mm, page_zone(mm, pfn), pfn, order)


cdef inline bint __zone_watermark_ok(int64_t free_pages, const list_t *free_area, int order,
                                     int64_t mark, int alloc_flags) noexcept nogil:
    """4.2/4.3 __zone_watermark_ok (§5.3); lowmem_reserve is 0 with one zone per node."""
    cdef int64_t min_ = mark
    cdef int o
    free_pages -= (1 << order) - 1              # what is left after taking this block
    if alloc_flags & ALLOC_HIGH:                # the reserve is for these callers (§5.4)
        min_ -= min_ // 2
    if alloc_flags & ALLOC_HARDER:
        min_ -= min_ // 4
    if free_pages <= min_:
        return False
    for o in range(order):
        free_pages -= free_area[o].nr << o      # lower-order pages are useless here
        min_ >>= 1                              # ... but need fewer of the higher ones
        if free_pages <= min_:
            return False
    return True


cdef inline bint zone_watermark_ok(zone_t *z, int order, int64_t mark, int alloc_flags) noexcept nogil:
    return __zone_watermark_ok(z.nr_free, z.free_area, order, mark, alloc_flags)


cdef int zonelist(mm_t *mm, int preferred, uint32_t gfp_mask, int *nodes) noexcept nogil:
    """node_zonelist(): the preferred node, then the others in order; only it with THISNODE.
    All remote nodes are at the same distance in this model, so the order is by node id."""
    cdef int i
    nodes[0] = preferred
    if gfp_mask & __GFP_THISNODE:
        return 1
    for i in range(1, mm.nr_nodes):
        nodes[i] = (preferred + i) % mm.nr_nodes
    return mm.nr_nodes


cdef int32_t get_page_from_freelist(mm_t *mm, uint32_t gfp_mask, int order, int alloc_flags,
                                    int preferred) noexcept nogil:
    cdef int nodes[8]
    cdef int n = zonelist(mm, preferred, gfp_mask, nodes), i
    cdef zone_t *z
    cdef int32_t pfn
    for i in range(n):
        z = &mm.zones[nodes[i]]
        if not (alloc_flags & ALLOC_NO_WATERMARKS):
            if not zone_watermark_ok(z, order, z.wmark[alloc_flags & ALLOC_WMARK_MASK], alloc_flags):
                continue
        pfn = __rmqueue_smallest(mm, z, order)
        if pfn >= 0:
            return pfn
    return -1


cdef int gfp_to_alloc_flags(uint32_t gfp_mask, task_t *t) noexcept nogil:
    """4.2/4.3 gfp_to_alloc_flags (§5.4): a plain GFP_NOWAIT gets ALLOC_HARDER."""
    cdef int alloc_flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    cdef bint atomic = not (gfp_mask & (__GFP_WAIT | __GFP_NO_KSWAPD))
    if gfp_mask & __GFP_HIGH:                    # the caller says it is important
        alloc_flags |= ALLOC_HIGH
    if atomic:
        # a caller that cannot reclaim gets a deeper reserve, and any node: it may be in
        # an interrupt, where the current task's cpuset means nothing
        if not (gfp_mask & __GFP_NOMEMALLOC):
            alloc_flags |= ALLOC_HARDER
        alloc_flags &= ~ALLOC_CPUSET
    # tasks that free memory as they run (reclaimers, OOM victims) may use all of it
    if not (gfp_mask & __GFP_NOMEMALLOC):
        if gfp_mask & __GFP_MEMALLOC:
            alloc_flags |= ALLOC_NO_WATERMARKS
        elif t != NULL and t.memdie:
            alloc_flags |= ALLOC_NO_WATERMARKS
    return alloc_flags


cdef void wake_all_kswapds(mm_t *mm, int order, int preferred, uint32_t gfp_mask) noexcept nogil:
    """wakeup_kswapd(): a node not balanced at its high watermark gets background reclaim.
    Simplified: kswapd runs to completion at once, on its own clock (not the caller's)."""
    cdef int nodes[8]
    cdef int n = zonelist(mm, preferred, gfp_mask, nodes), i
    cdef zone_t *z
    for i in range(n):
        z = &mm.zones[nodes[i]]
        if zone_watermark_ok(z, order, z.wmark[ALLOC_WMARK_HIGH], 0):
            continue
        mm.stats[M_KSWAPD_WAKEUPS] += 1
        kswapd_balance_node(mm, nodes[i])


cdef int32_t __alloc_pages_may_oom(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                   int preferred, bint *did_some_progress) noexcept nogil:
    """§5.5 m: last try at the HIGH watermark, then the global OOM killer for order <= 3."""
    cdef int32_t pfn
    did_some_progress[0] = False
    pfn = get_page_from_freelist(mm, gfp_mask, order, ALLOC_WMARK_HIGH | ALLOC_CPUSET, preferred)
    if pfn >= 0:
        return pfn
    if not (gfp_mask & __GFP_NOFAIL):
        # a large order failing says fragmentation, not a lack of memory: a kill won't help
        if order > PAGE_ALLOC_COSTLY_ORDER:
            return -1
        # the OOM killer does not make up for reclaim that could not do IO; progress is
        # reported anyway and the caller keeps looping ("per tradition")
        if not (gfp_mask & __GFP_FS):
            did_some_progress[0] = True
            return -1
        # killing a task may not free memory on the one node this request accepts
        if gfp_mask & __GFP_THISNODE:
            return -1
    if out_of_memory(mm, t) or (gfp_mask & __GFP_NOFAIL):
        did_some_progress[0] = True
    return -1


cdef int32_t __alloc_pages_slowpath(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                    int preferred) noexcept nogil:
    """The slowpath in the kernel's order (§5.5 a-o)."""
    cdef int alloc_flags, loops = 0
    cdef int32_t pfn
    cdef int64_t progress, pages_reclaimed = 0
    cdef bint oom_progress
    # a: no free list holds a block that large; asking is a caller bug
    if order >= MAX_ORDER:
        return -1
    # b (CONFIG_NUMA): a node-specific request that cannot block is speculative (SLAB's
    #   probe, §4.2) and has a fallback of its own: no kswapd, no retry for it
    if (gfp_mask & __GFP_THISNODE) and not (gfp_mask & __GFP_WAIT):
        return -1
    while True:
        loops += 1
        # c: retry. Background reclaim first, so later requests find the fast path again
        if not (gfp_mask & __GFP_NO_KSWAPD):
            wake_all_kswapds(mm, order, preferred, gfp_mask)
        # d: the fast path's LOW watermark failed; callers that cannot wait (and __GFP_HIGH)
        #    may dip below MIN into the reserve kept for exactly them (§5.4)
        alloc_flags = gfp_to_alloc_flags(gfp_mask, t)
        pfn = get_page_from_freelist(mm, gfp_mask, order, alloc_flags & ~ALLOC_NO_WATERMARKS, preferred)
        if pfn >= 0:
            return pfn
        # e: a task that frees memory once it runs (OOM victim, __GFP_MEMALLOC) may take all
        if alloc_flags & ALLOC_NO_WATERMARKS:
            pfn = get_page_from_freelist(mm, gfp_mask, order, alloc_flags, preferred)
            if pfn >= 0:
                return pfn
        # f: everything below sleeps; this caller cannot
        if not (gfp_mask & __GFP_WAIT):
            return -1
        # g: an OOM victim already tried the whole reserve (e): looping would never end,
        #    unless it cannot cope with a failure
        if t != NULL and t.memdie and not (gfp_mask & __GFP_NOFAIL):
            return -1
        # h: for order > 0 the memory may be free but scattered: moving pages is cheaper
        #    than reclaiming them (async first: it gives up instead of blocking)
        if order > 0:
            pfn = try_to_compact_pages(mm, gfp_mask, order, preferred, False)
            if pfn >= 0:
                return pfn
        # j: direct reclaim: the allocating task frees pages itself, then tries again
        progress = direct_reclaim(mm, t, gfp_mask, order, preferred)
        pfn = get_page_from_freelist(mm, gfp_mask, order, alloc_flags & ~ALLOC_NO_WATERMARKS, preferred)
        if pfn >= 0:
            return pfn
        # k: the caller has a fallback and asked for no second round
        if gfp_mask & __GFP_NORETRY:
            break
        # l: reclaim progressed: small orders are expected to succeed soon, so loop (after
        #    a congestion wait that lets writeback catch up); REPEAT loops for large ones
        #    until one block's worth was reclaimed
        pages_reclaimed += progress
        if loops < SLOWPATH_MAX_LOOPS and (
                (progress > 0 and order <= PAGE_ALLOC_COSTLY_ORDER)
                or ((gfp_mask & __GFP_REPEAT) and pages_reclaimed < (1 << order))):
            mm.now_ns += COST_CONGESTION_WAIT                     # wait_iff_congested()
            continue
        # m: reclaim is stuck: a last try at HIGH only catches a parallel OOM kill; still
        #    failing means heavy pressure, so the OOM killer frees a whole task's memory
        pfn = __alloc_pages_may_oom(mm, t, gfp_mask, order, preferred, &oom_progress)
        if pfn >= 0:
            return pfn
        # n: a kill (or the !__GFP_FS "tradition") counts as progress: try again
        if oom_progress and loops < SLOWPATH_MAX_LOOPS:
            continue
        break
    # o: noretry: one last compaction, synchronous now because nothing else is left
    if order > 0:
        pfn = try_to_compact_pages(mm, gfp_mask, order, preferred, True)
        if pfn >= 0:
            return pfn
    if gfp_mask & __GFP_NOFAIL:
        # A real kernel would keep looping here; the simulator lets NOFAIL dip into the
        # reserves instead of livelocking (docs/model.md), and stops if even they are gone.
        pfn = get_page_from_freelist(mm, gfp_mask, order, ALLOC_NO_WATERMARKS, preferred)
        if pfn < 0:
            mm.fatal = FATAL_NOFAIL_OOM
        return pfn
    return -1


cdef int32_t __alloc_pages_nodemask(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                    int nid) noexcept nogil:
    """alloc_pages_node(): fast path at the LOW watermark, then the slowpath."""
    cdef int preferred = nid
    cdef int32_t pfn
    if preferred < 0:
        preferred = t.node if t != NULL else 0
    mm.now_ns += COST_BUDDY_ALLOC
    # LOW, not MIN: the gap between them is where kswapd works before anyone must wait
    pfn = get_page_from_freelist(mm, gfp_mask, order, ALLOC_WMARK_LOW | ALLOC_CPUSET | ALLOC_FAIR,
                                 preferred)
    if pfn < 0:
        pfn = __alloc_pages_slowpath(mm, t, gfp_mask, order, preferred)
    if pfn < 0:
        mm.stats[M_BUDDY_FAIL] += 1
    return pfn
