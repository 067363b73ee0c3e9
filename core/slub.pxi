# slub: the SLUB allocation and free paths of 4.3 (mm/slub.c, docs/kernel.md §3.1-§3.2, §3.7).
# Per-CPU active slab, per-node partial lists, empty slabs kept up to min_partial.
# Simplified (docs/model.md): no per-CPU partial lists (frees go to the node partial list),
# get_any_partial() is always allowed (remote_node_defrag_ratio gate not modelled).

cdef inline void add_partial(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil:
    mm.slabs[sid].where = SL_PARTIAL
    list_add_tail(&s.partial[mm.slabs[sid].node], mm.slab_next, mm.slab_prev, sid)


cdef inline void remove_partial(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil:
    list_del(&s.partial[mm.slabs[sid].node], mm.slab_next, mm.slab_prev, sid)
    mm.slabs[sid].where = SL_NONE


cdef void deactivate_slab(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil:
    """A CPU gives up its slab: empty -> freed unless the node keeps min_partial; partly
    used -> partial list; full -> untracked."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef slab_t *sl = &mm.slabs[sid]
    sl.where = SL_NONE
    sl.cpu = -1
    if sl.inuse == 0 and s.partial[sl.node].nr >= s.min_partial:
        discard_slab(mm, sid)
    elif sl.inuse < sl.objects:
        add_partial(mm, s, sid)


cdef int32_t get_partial(mm_t *mm, kmem_cache_t *s, int node, int local_node) noexcept nogil:
    """get_partial(): the requested (or local) node's list; for NUMA_NO_NODE also
    get_any_partial() over nodes with more than min_partial partial slabs (§3.7)."""
    cdef int searchnode = node if node >= 0 else local_node, i, n
    cdef int32_t sid = s.partial[searchnode].head
    if sid < 0 and node < 0:
        for i in range(1, mm.nr_nodes):
            n = (searchnode + i) % mm.nr_nodes
            if s.partial[n].nr > s.min_partial:
                sid = s.partial[n].head
                break
    if sid >= 0:
        remove_partial(mm, s, sid)
    return sid


cdef int32_t allocate_slab(mm_t *mm, task_t *t, int32_t cid, uint32_t gfp_mask, int node) noexcept nogil:
    """4.3 allocate_slab() (§3.1, §3.2): the preferred order oo without __GFP_WAIT when
    oo > min (Joonsoo Kim, 6af3142bed1f), then s->min with the caller's full flags. Every
    call is a new-slab attempt; those with oo > min are also high-order attempts. Which
    of these masks the memcg charge sees is the design's slab_charge_caller_gfp."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef uint32_t flags = gfp_mask & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK)
    cdef uint32_t alloc_gfp
    cdef bint high = s.oo_order > s.min_order
    cdef int32_t pfn
    cdef int order = s.oo_order
    # §3.1 steps 1-2: only the caller's reclaim and placement bits reach the page allocator,
    # plus the cache's own (reclaimable slabs are grouped apart from unmovable ones)
    if s.reclaimable:
        flags |= __GFP_RECLAIMABLE
    # step 3: the first try is optimistic - the preferred order oo packs objects with less
    # waste, but a fallback exists, so it must neither warn, retry nor be a NOFAIL
    alloc_gfp = (flags | __GFP_NOWARN | __GFP_NORETRY) & ~__GFP_NOFAIL
    # §3.2 (4.3): nor wait - reclaim and compaction for an order the cache can do without
    # cost more latency than the better packing saves; NOMEMALLOC keeps this non-blocking
    # try out of the atomic reserve (§5.4)
    if high and (alloc_gfp & __GFP_WAIT):
        alloc_gfp = (alloc_gfp | __GFP_NOMEMALLOC) & ~__GFP_WAIT
        if mm.policy.slub_high_no_kswapd:        # 6.x: ~__GFP_RECLAIM, kswapd not woken (§3.4)
            alloc_gfp |= __GFP_NO_KSWAPD
    mm.stats[M_SLUB_NEW_SLAB_ATTEMPTS] += 1
    if high:
        mm.stats[M_SLUB_HIGH_ATTEMPTS] += 1
    # step 4; the charge's gfp is the one place the designs differ here (§3.3, §8.3)
    pfn = alloc_slab_page(mm, t, cid, alloc_gfp,
                          flags if mm.policy.slab_charge_caller_gfp else alloc_gfp,
                          node, order)
    if pfn < 0:
        # 4.3 mm/slub.c allocate_slab(): "oo = s->min; alloc_gfp = flags; page =
        # alloc_slab_page(s, alloc_gfp, node, oo); if (unlikely(!page)) goto out;
        # stat(s, ORDER_FALLBACK);" - counted whenever the second try succeeds, whether the
        # first failed in the buddy allocator or at the memcg charge (memcg_charge_slab is
        # inside alloc_slab_page in 4.3), and with no oo > min test: a cache whose oo is
        # min counts it too (its first try had NORETRY and no NOFAIL, §3.1 step 3).
        # Step 5: the smallest order that holds one object, with everything the caller
        # allows: the allocation must not fail for want of a better geometry
        order = s.min_order
        pfn = alloc_slab_page(mm, t, cid, flags, flags, node, order)
        if pfn < 0:
            return -1
        mm.stats[M_SLUB_FALLBACKS] += 1
    return register_slab(mm, cid, pfn, order)


cdef inline int32_t slub_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t gfp_mask, int node) noexcept nogil:
    """slab_alloc_node(): the CPU slab's freelist (fast path), else ___slab_alloc():
    a partial slab, else new_slab(). Returns the slab the object came from, or -1."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef int cpu = t.cpu
    cdef int32_t sid = s.cpu_slab[cpu]
    if sid >= 0:
        if (node < 0 or mm.slabs[sid].node == node) and mm.slabs[sid].inuse < mm.slabs[sid].objects:
            mm.slabs[sid].inuse += 1
            mm.now_ns += COST_SLAB_FAST
            return sid
        s.cpu_slab[cpu] = -1
        deactivate_slab(mm, cid, sid)
    mm.now_ns += COST_SLAB_SLOW
    sid = get_partial(mm, s, node, t.node)
    if sid < 0:
        sid = allocate_slab(mm, t, cid, gfp_mask, node)
        if sid < 0:
            return -1
        s = &mm.caches[cid]
    mm.slabs[sid].where = SL_CPU
    mm.slabs[sid].cpu = cpu
    s.cpu_slab[cpu] = sid
    mm.slabs[sid].inuse += 1
    return sid


cdef void slub_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil:
    """__slab_free(): a full slab goes back on the partial list; an empty partial slab is
    discarded once the node has more than min_partial of them."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef slab_t *sl = &mm.slabs[sid]
    sl.inuse -= 1
    mm.now_ns += COST_SLAB_FAST
    if sl.where == SL_CPU:
        return
    if sl.where == SL_NONE:
        add_partial(mm, s, sid)
    if sl.inuse == 0 and s.partial[sl.node].nr > s.min_partial:
        remove_partial(mm, s, sid)
        discard_slab(mm, sid)
