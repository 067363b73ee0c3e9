# vmscan: page reclaim (mm/vmscan.c 4.2/4.3, docs/kernel.md §2.6) for memcg limit reclaim,
# direct reclaim and kswapd. Per (memcg, node) one file and one anon LRU list; reclaim takes
# pages from the tail (oldest). Simplified (docs/model.md): no active/inactive split, file
# pages are clean (always reclaimable), anon is evictable only with swap (swapped pages are
# dropped from memory and counted in memory.stat swap, never faulted back).

cdef void reclaim_page(mm_t *mm, int32_t pfn, int memcg_id, int node, int lru) noexcept nogil:
    cdef memcg_t *m = &mm.memcgs[memcg_id]
    cdef zone_t *z = &mm.zones[node]
    list_del(&m.lru[node][lru], mm.pg_next, mm.pg_prev, pfn)
    if lru == LRU_FILE:
        m.stat[MS_FILE] -= 1
        z.nr_file -= 1
    else:
        m.stat[MS_ANON] -= 1
        m.stat[MS_SWAP] += 1
        z.nr_anon -= 1
        if mm.pg_private[pfn] >= 0:
            mm.tasks[mm.pg_private[pfn]].rss -= 1
    if mm.pg_flags[pfn] & PG_acct_miss:
        mm.acct_miss_pages -= 1
    if memcg_id != ROOT_MEMCG:
        page_counter_uncharge(mm, memcg_id, 1)
    mm.pg_flags[pfn] = PG_head
    mm.now_ns += COST_RECLAIM_PAGE
    __free_pages(mm, pfn, 0)


cdef void shrink_lruvec(mm_t *mm, scan_control_t *sc, int memcg_id, int node) noexcept nogil:
    cdef int lru, nr_lrus = 2 if (sc.may_swap and mm.swap) else 1
    cdef int64_t size, scan, batch, i
    cdef list_t *l
    for lru in range(nr_lrus):
        l = &mm.memcgs[memcg_id].lru[node][lru]
        size = l.nr
        # a light scan first, doubling as the priority drops: take only the oldest pages
        scan = size >> sc.priority
        # get_scan_count() force_scan: a small memcg's lists shift to 0, yet limit reclaim
        # must make progress against its own limit
        if scan == 0 and not sc.global_reclaim:
            scan = min(size, <int64_t>SWAP_CLUSTER_MAX)
        while scan > 0:
            batch = min(scan, <int64_t>SWAP_CLUSTER_MAX)
            for i in range(batch):
                if l.tail < 0:
                    break
                sc.nr_scanned += 1
                mm.now_ns += COST_SCAN_PAGE
                reclaim_page(mm, l.tail, memcg_id, node, lru)
                sc.nr_reclaimed += 1
            scan -= batch
            if sc.nr_reclaimed >= sc.nr_to_reclaim or l.tail < 0:
                break


cdef int64_t prune_dcache(mm_t *mm, int memcg_id, int64_t nr) noexcept nogil:
    """super_cache_scan(): free the oldest unused dentries (and their inodes) of a memcg."""
    cdef list_t *l = &mm.memcgs[memcg_id].dentries
    cdef int64_t freed = 0
    while freed < nr and l.head >= 0:
        free_dentry(mm, l.head)
        freed += 1
    mm.stats[M_RECLAIM_SLAB_OBJS] += 2 * freed
    mm.now_ns += 2 * freed * COST_SHRINK_OBJ
    return freed


cdef void shrink_slab_memcg(mm_t *mm, scan_control_t *sc, int memcg_id, int64_t nr_scanned,
                            int64_t nr_eligible) noexcept nogil:
    """4.2 shrink_slab()/do_shrink_slab() for the memcg-aware superblock shrinker. It
    returns SHRINK_STOP without __GFP_FS, so GFP_NOFS reclaim cannot free dentries."""
    cdef int64_t freeable = mm.memcgs[memcg_id].dentries.nr, delta, total_scan, n
    # the caller may hold filesystem locks that freeing inodes would take again (deadlock)
    if not (sc.gfp_mask & __GFP_FS) or freeable == 0:
        return
    if nr_scanned == 0:
        nr_scanned = SWAP_CLUSTER_MAX
    # pressure on the caches in proportion to the LRU scan, so both age at the same pace
    delta = (4 * nr_scanned) // DEFAULT_SEEKS
    delta = delta * freeable // (nr_eligible + 1)
    total_scan = min(delta, freeable * 2)
    while total_scan >= SHRINK_BATCH or total_scan >= freeable:
        n = min(<int64_t>SHRINK_BATCH, total_scan)
        prune_dcache(mm, memcg_id, n)
        total_scan -= n
        freeable = mm.memcgs[memcg_id].dentries.nr
        if freeable == 0 or n == 0:
            break


cdef bint mem_cgroup_low(mm_t *mm, int root, int memcg_id) noexcept nogil:
    """4.2 mem_cgroup_low(): memcg and its ancestors below root are all under memory.low."""
    if memcg_id == ROOT_MEMCG or memcg_id == root:
        return False
    if mm.memcgs[memcg_id].memory.count >= mm.memcgs[memcg_id].low:
        return False
    while memcg_id != root:
        memcg_id = mm.memcgs[memcg_id].parent
        if memcg_id == ROOT_MEMCG:
            break
        if mm.memcgs[memcg_id].memory.count >= mm.memcgs[memcg_id].low:
            return False
    return True


cdef int next_memcg(mm_t *mm, int root, int cur) noexcept nogil:
    """Pre-order walk of root's subtree (mem_cgroup_iter); -1 at the end."""
    cdef memcg_t *m = &mm.memcgs[cur]
    if m.first_child >= 0:
        return m.first_child
    while cur != root:
        if mm.memcgs[cur].next_sibling >= 0:
            return mm.memcgs[cur].next_sibling
        cur = mm.memcgs[cur].parent
    return -1


cdef bint shrink_node_memcgs(mm_t *mm, scan_control_t *sc, int node, bint first_node,
                             bint *skipped_low) noexcept nogil:
    """shrink_zone(): every memcg of the target subtree; True when the target is met."""
    cdef int memcg_id = sc.target_memcg
    cdef int64_t scanned, eligible
    while memcg_id >= 0:
        if mm.memcgs[memcg_id].online:
            if mem_cgroup_low(mm, sc.target_memcg, memcg_id):
                if not sc.may_thrash:
                    skipped_low[0] = True
                    memcg_id = next_memcg(mm, sc.target_memcg, memcg_id)
                    continue
                mm.memcgs[memcg_id].events[MEMCG_LOW] += 1
            eligible = mm.memcgs[memcg_id].lru[node][LRU_FILE].nr
            if sc.may_swap and mm.swap:
                eligible += mm.memcgs[memcg_id].lru[node][LRU_ANON].nr
            scanned = sc.nr_scanned
            shrink_lruvec(mm, sc, memcg_id, node)
            if first_node:        # one list_lru per memcg in this model, shrunk once a round
                shrink_slab_memcg(mm, sc, memcg_id, sc.nr_scanned - scanned, eligible)
            sc.nr_reclaimed += mm.reclaimed_slab
            mm.reclaimed_slab = 0
            # limit reclaim runs in the charging task: stop as soon as it has enough
            if not sc.global_reclaim and sc.nr_reclaimed >= sc.nr_to_reclaim:
                return True
        memcg_id = next_memcg(mm, sc.target_memcg, memcg_id)
    return sc.nr_reclaimed >= sc.nr_to_reclaim


cdef int64_t do_try_to_free_pages(mm_t *mm, task_t *t, int target_memcg, int64_t nr_to_reclaim,
                                  uint32_t gfp_mask, bint may_swap, int place, int start_node,
                                  bint this_node_only) noexcept nogil:
    """One reclaim invocation ("round"): priority DEF_PRIORITY..0 over the nodes, then a
    may_thrash pass through memory.low protection if nothing was reclaimed (4.2)."""
    cdef scan_control_t sc
    cdef int64_t start_ns = mm.now_ns, elapsed
    cdef int i, nr_nodes = 1 if this_node_only else mm.nr_nodes
    cdef bint skipped_low = False, done = False
    sc.nr_to_reclaim = nr_to_reclaim
    sc.nr_reclaimed = 0
    sc.nr_scanned = 0
    sc.gfp_mask = gfp_mask
    sc.target_memcg = target_memcg
    sc.may_swap = may_swap
    sc.may_thrash = False
    sc.global_reclaim = target_memcg == ROOT_MEMCG
    mm.reclaimed_slab = 0
    while True:
        sc.priority = DEF_PRIORITY
        while sc.priority >= 0 and not done:
            for i in range(nr_nodes):
                if shrink_node_memcgs(mm, &sc, (start_node + i) % mm.nr_nodes, i == 0, &skipped_low):
                    done = True
                    break
            sc.priority -= 1
        # memory.low is best-effort protection: reclaim protected memcgs rather than fail
        if sc.nr_reclaimed == 0 and skipped_low and not sc.may_thrash:
            sc.may_thrash = True
            continue
        break
    elapsed = mm.now_ns - start_ns
    mm.stats[M_RECLAIM_ROUNDS] += 1
    mm.stats[M_RECLAIM_SCANNED] += sc.nr_scanned
    mm.stats[M_RECLAIM_RECLAIMED] += sc.nr_reclaimed
    mm.stats[M_RR_BASE + place] += 1
    mm.stats[M_RNS_BASE + place] += elapsed
    # "locked": any lock the reclaiming task holds - the calling kernel code's, or mmap_sem
    # of a user page fault (docs/model.md "Which lock a counted round holds")
    if t != NULL and (t.lock_held or t.mmap_sem) and place != RP_LOCKED:
        mm.stats[M_RR_BASE + RP_LOCKED] += 1
        mm.stats[M_RNS_BASE + RP_LOCKED] += elapsed
        if t.mmap_sem:
            mm.stats[M_RR_MMAP_SEM] += 1
            mm.stats[M_RNS_MMAP_SEM] += elapsed
    return sc.nr_reclaimed


cdef int64_t try_to_free_mem_cgroup_pages(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages,
                                          uint32_t gfp_mask, bint may_swap, int place) noexcept nogil:
    """Limit reclaim (§2.6): max(nr_pages, SWAP_CLUSTER_MAX), from a round-robin start node."""
    cdef memcg_t *m = &mm.memcgs[memcg_id]
    cdef int start = m.reclaim_node
    # mem_cgroup_select_victim_node(): spread successive rounds over the nodes
    m.reclaim_node = (m.reclaim_node + 1) % mm.nr_nodes
    # at least one batch: smaller targets would not pay for the scan
    return do_try_to_free_pages(mm, t, memcg_id, max(nr_pages, <int64_t>SWAP_CLUSTER_MAX),
                                gfp_mask, may_swap, place, start, False)


cdef int64_t direct_reclaim(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int preferred) noexcept nogil:
    """__alloc_pages_direct_reclaim() -> try_to_free_pages(): SWAP_CLUSTER_MAX pages."""
    return do_try_to_free_pages(mm, t, ROOT_MEMCG, SWAP_CLUSTER_MAX, gfp_mask, True, RP_DIRECT,
                                preferred, (gfp_mask & __GFP_THISNODE) != 0)


cdef void kswapd_balance_node(mm_t *mm, int node) noexcept nogil:
    """balance_pgdat(): reclaim until the node is above its high watermark (order 0), or no
    progress. Runs on kswapd's clock: the time is not added to the waking task's latency."""
    cdef zone_t *z = &mm.zones[node]
    cdef int64_t saved_ns = mm.now_ns, need, got
    cdef int64_t saved_slab = mm.reclaimed_slab
    # up to HIGH, not LOW: the gap keeps allocations on the fast path for a while
    while not zone_watermark_ok(z, 0, z.wmark[ALLOC_WMARK_HIGH], 0):
        need = z.wmark[ALLOC_WMARK_HIGH] - z.nr_free + 1
        got = do_try_to_free_pages(mm, NULL, ROOT_MEMCG, max(need, <int64_t>SWAP_CLUSTER_MAX),
                                   GFP_KERNEL, True, RP_KSWAPD, node, True)
        if got == 0:
            break
    mm.kswapd_ns += mm.now_ns - saved_ns
    mm.now_ns = saved_ns
    mm.reclaimed_slab = saved_slab
