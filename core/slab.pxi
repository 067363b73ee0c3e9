# slab: the SLAB allocator of 4.2/4.3 (mm/slab.c, docs/kernel.md §4): per-CPU array caches,
# per-node partial/free lists, and the NUMA probing sequence of §4.2 -
# ____cache_alloc (local refill, then cache_grow with gfp_exact_node), ____cache_alloc_node,
# then fallback_alloc probing every node with __GFP_THISNODE and finally allocating a page
# with the caller's reclaim bits anywhere (kmem_getpages on numa_mem_id(), no THISNODE).
# Frees of another node's objects go back to that node through the alien caches
# (cache_free_alien); each node has a shared array between the CPU arrays and its lists.
# Simplified (docs/model.md): no periodic cache_reap (so no reap_alien or drain_array
# either: an alien array is flushed only when full, a shared array only by refills).

cdef inline uint32_t gfp_exact_node(uint32_t flags) noexcept nogil:
    """§4.1 (NUMA): the probe mask that drops __GFP_WAIT."""
    return (flags | __GFP_THISNODE | __GFP_NOWARN) & ~__GFP_WAIT


cdef void slab_place(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil:
    """Keep a slab on the list its use says: slabs_free, slabs_partial or (full) none."""
    cdef slab_t *sl = &mm.slabs[sid]
    cdef int want = SL_FREE if sl.inuse == 0 else (SL_NONE if sl.inuse == sl.objects else SL_PARTIAL)
    if sl.where == want:
        return
    if sl.where == SL_PARTIAL:
        list_del(&s.partial[sl.node], mm.slab_next, mm.slab_prev, sid)
    elif sl.where == SL_FREE:
        list_del(&s.slabs_free[sl.node], mm.slab_next, mm.slab_prev, sid)
    if want == SL_PARTIAL:
        list_add(&s.partial[sl.node], mm.slab_next, mm.slab_prev, sid)
    elif want == SL_FREE:
        list_add(&s.slabs_free[sl.node], mm.slab_next, mm.slab_prev, sid)
    sl.where = want


cdef int32_t take_obj_from_node(mm_t *mm, kmem_cache_t *s, int node) noexcept nogil:
    """An object from the node's partial slabs, else its free slabs; -1 if none."""
    cdef int32_t sid = s.partial[node].head
    if sid < 0:
        sid = s.slabs_free[node].head
    if sid < 0:
        return -1
    mm.slabs[sid].inuse += 1
    s.free_objects[node] -= 1
    slab_place(mm, s, sid)
    return sid


cdef int32_t kmem_getpages(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid,
                           bint exact) noexcept nogil:
    """4.2 kmem_getpages(): a probe (`exact`) allocates the page with gfp_exact_node(); the
    charge sees that same mask (v4.3, way1) or the caller's flags (way2, Davydov §4.6)."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef uint32_t local = flags & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK)
    cdef uint32_t page_gfp
    if s.reclaimable:
        local |= __GFP_RECLAIMABLE
    # a probe is speculative (§4.1): the page must come from this node and at no cost
    page_gfp = gfp_exact_node(local) if exact else local
    return alloc_slab_page(mm, t, cid, page_gfp,
                           local if mm.policy.slab_charge_caller_gfp else page_gfp,
                           nodeid, s.oo_order)


cdef bint cache_grow(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid,
                     int32_t pfn, bint exact) noexcept nogil:
    """cache_grow(): a new slab on slabs_free of the page's node (a page may be passed in)."""
    cdef int32_t sid
    cdef kmem_cache_t *s
    if pfn < 0:
        pfn = kmem_getpages(mm, t, cid, flags, nodeid, exact)
        if pfn < 0:
            if exact:
                mm.stats[M_SLAB_PROBE_FAIL] += 1
            return False
    sid = register_slab(mm, cid, pfn, mm.caches[cid].oo_order)
    if sid < 0:
        return False
    s = &mm.caches[cid]
    mm.slabs[sid].where = SL_FREE
    list_add_tail(&s.slabs_free[mm.slabs[sid].node], mm.slab_next, mm.slab_prev, sid)
    s.free_objects[mm.slabs[sid].node] += mm.slabs[sid].objects
    return True


cdef inline int transfer_objects(int32_t *to, int32_t *to_avail, int32_t to_limit,
                                 int32_t *from_, int32_t *from_avail, int max) noexcept nogil:
    """4.2 transfer_objects(): move up to `max` entries from the end of one array cache
    to the end of another, as many as both allow; the number moved."""
    cdef int nr = min(min(from_avail[0], max), to_limit - to_avail[0]), i
    for i in range(nr):
        to[to_avail[0] + i] = from_[from_avail[0] - nr + i]
    to_avail[0] += nr
    from_avail[0] -= nr
    return nr


cdef int32_t cache_alloc_refill(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil:
    """Refill the CPU's array cache with up to batchcount objects of the local node - from
    the node's shared array first, else its lists; if there are none,
    cache_grow(gfp_exact_node(flags)) on the local node and retry."""
    cdef int cpu = t.cpu, node = t.node, batch
    cdef kmem_cache_t *s
    cdef int32_t sid
    mm.now_ns += COST_SLAB_SLOW
    while True:
        s = &mm.caches[cid]
        batch = s.batchcount
        # objects other CPUs of the node flushed: no list walk needed
        if s.shared != NULL and transfer_objects(s.ac + cpu * s.ac_limit, &s.ac_avail[cpu],
                                                 s.ac_limit, s.shared + node * s.shared_limit,
                                                 &s.shared_avail[node], batch):
            break
        while batch > 0 and s.ac_avail[cpu] < s.ac_limit:
            sid = take_obj_from_node(mm, s, node)
            if sid < 0:
                break
            s.ac[cpu * s.ac_limit + s.ac_avail[cpu]] = sid
            s.ac_avail[cpu] += 1
            batch -= 1
        if s.ac_avail[cpu] > 0:
            break
        # §4.2 step 1.2: grow on the local node only, without waiting: objects of this
        # node are what the per-CPU array is for, and the node-aware paths follow
        if not cache_grow(mm, t, cid, flags, node, -1, True):
            return -1
    s.ac_avail[cpu] -= 1
    return s.ac[cpu * s.ac_limit + s.ac_avail[cpu]]


cdef int32_t ____cache_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil:
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef int cpu = t.cpu
    if s.ac_avail[cpu] > 0:
        s.ac_avail[cpu] -= 1
        mm.now_ns += COST_SLAB_FAST
        return s.ac[cpu * s.ac_limit + s.ac_avail[cpu]]
    return cache_alloc_refill(mm, t, cid, flags)


cdef int32_t ____cache_alloc_node(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid) noexcept nogil:
    cdef int32_t sid
    # §4.2 step 2: the node's lists, else a speculative grow there, else the fallback
    while True:
        sid = take_obj_from_node(mm, &mm.caches[cid], nodeid)
        if sid >= 0:
            mm.now_ns += COST_SLAB_SLOW
            return sid
        if not cache_grow(mm, t, cid, flags, nodeid, -1, True):   # must_grow
            break
    return fallback_alloc(mm, t, cid, flags)


cdef int32_t fallback_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil:
    """§4.2 step 3: probe every node that has free objects with __GFP_THISNODE, then get a
    page with the caller's reclaim bits on numa_mem_id() - the buddy allocator may place it
    on any node - and grow the cache on the page's node."""
    cdef int nodes[8]
    cdef int n, i, nid
    cdef int32_t sid, pfn
    cdef uint32_t local = flags & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK)
    # 3.1: the node probes below carry THISNODE; refusing it here ends the recursion
    if flags & __GFP_THISNODE:
        return -1
    # 3.2: objects already free on some node are cheaper than a new page anywhere
    n = zonelist(mm, t.node, flags, nodes)
    for i in range(n):
        if mm.caches[cid].free_objects[nodes[i]] > 0:
            sid = ____cache_alloc_node(mm, t, cid, flags | __GFP_THISNODE, nodes[i])
            if sid >= 0:
                return sid
    # 3.3: now the caller's own bits, WAIT included and no THISNODE: this request must
    # not fail while any node could still give a page after reclaim
    pfn = kmem_getpages(mm, t, cid, local, t.node, False)
    if pfn < 0:
        return -1
    # 3.4: the slab belongs to the node the page came from, whichever that was
    nid = page_to_nid(mm, pfn)
    if not cache_grow(mm, t, cid, flags, nid, pfn, False):
        return -1
    return ____cache_alloc_node(mm, t, cid, flags | __GFP_THISNODE, nid)


cdef inline int32_t slab_alloc_node(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid) noexcept nogil:
    """4.2 slab_alloc_node()/__do_cache_alloc(): the local path first when the request is
    for the local node, then ____cache_alloc_node() on the requested node."""
    cdef int32_t sid
    if nodeid < 0:
        nodeid = t.node
    # §4.2 step 1: the per-CPU array holds local objects only, so only a local request
    # may use it; it is the fast path (no list lock)
    if nodeid == t.node:
        sid = ____cache_alloc(mm, t, cid, flags)
        if sid >= 0:
            return sid
    return ____cache_alloc_node(mm, t, cid, flags, nodeid)


cdef void free_block(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil:
    """Return one object to its slab; an empty slab beyond the node's free_limit is freed."""
    cdef slab_t *sl = &mm.slabs[sid]
    cdef int node = sl.node
    sl.inuse -= 1
    s.free_objects[node] += 1
    if sl.inuse == 0 and s.free_objects[node] > s.free_limit:
        if sl.where == SL_PARTIAL:
            list_del(&s.partial[node], mm.slab_next, mm.slab_prev, sid)
        elif sl.where == SL_FREE:
            list_del(&s.slabs_free[node], mm.slab_next, mm.slab_prev, sid)
        s.free_objects[node] -= sl.objects
        discard_slab(mm, sid)
    else:
        slab_place(mm, s, sid)


cdef void __drain_alien_cache(mm_t *mm, kmem_cache_t *s, int idx, int node) noexcept nogil:
    """Empty one alien array into its objects' node: that node's shared array first
    (transfer_objects), the rest back to their slabs (free_block)."""
    cdef int32_t *ac = s.alien + idx * s.alien_limit
    cdef int i
    if s.shared != NULL:
        transfer_objects(s.shared + node * s.shared_limit, &s.shared_avail[node],
                         s.shared_limit, ac, &s.alien_avail[idx], s.alien_limit)
    for i in range(s.alien_avail[idx]):
        free_block(mm, s, ac[i])
    s.alien_avail[idx] = 0


cdef void cache_free_alien(mm_t *mm, kmem_cache_t *s, int node, int32_t sid) noexcept nogil:
    """4.2 __cache_free_alien(): an object of page_node freed on `node` goes into node's
    alien array for page_node, flushed to page_node's lists when full - never into this
    CPU's array cache, whose objects must all be local (they serve local requests)."""
    cdef int page_node = mm.slabs[sid].node, idx = node * mm.nr_nodes + page_node
    if s.alien_avail[idx] == s.alien_limit:
        __drain_alien_cache(mm, s, idx, page_node)
    s.alien[idx * s.alien_limit + s.alien_avail[idx]] = sid
    s.alien_avail[idx] += 1


cdef void cache_flusharray(mm_t *mm, kmem_cache_t *s, int cpu, int node) noexcept nogil:
    """A full CPU array gives its oldest batchcount objects to the node's shared array,
    as many as fit there, else back to their slabs (free_block)."""
    cdef int32_t *ac = s.ac + cpu * s.ac_limit
    cdef int i, batch = min(s.batchcount, s.ac_avail[cpu]), room
    cdef int32_t *shared
    if s.shared != NULL and s.shared_avail[node] < s.shared_limit:
        room = s.shared_limit - s.shared_avail[node]
        batch = min(batch, room)
        shared = s.shared + node * s.shared_limit + s.shared_avail[node]
        for i in range(batch):
            shared[i] = ac[i]
        s.shared_avail[node] += batch
    else:
        for i in range(batch):
            free_block(mm, s, ac[i])
    for i in range(s.ac_avail[cpu] - batch):
        ac[i] = ac[i + batch]
    s.ac_avail[cpu] -= batch


cdef void slab_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil:
    """__cache_free(): an object of another node goes back to it (cache_free_alien);
    a local one into the CPU's array cache, and a full array is flushed first
    (cache_flusharray)."""
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef int cpu = mm.tasks[mm.current].cpu if mm.current >= 0 else 0
    cdef int node = cpu * mm.nr_nodes // mm.nr_cpus          # numa_mem_id() of the CPU
    cdef int32_t *ac = s.ac + cpu * s.ac_limit
    mm.now_ns += COST_SLAB_FAST
    if s.alien != NULL and mm.slabs[sid].node != node:
        cache_free_alien(mm, s, node, sid)
        return
    if s.ac_avail[cpu] >= s.ac_limit:
        cache_flusharray(mm, s, cpu, node)
    ac[s.ac_avail[cpu]] = sid
    s.ac_avail[cpu] += 1
