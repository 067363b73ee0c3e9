# slab_common: what SLUB and SLAB share (mm/slab_common.c, mm/memcontrol.c kmem hooks):
# the object and slab tables, kmalloc size classes, per-memcg cache clones created lazily,
# slab-page charging per the design policy, kmem pages (kmalloc_large, alloc_kmem_pages),
# and reclaimable dentries/inodes on a memcg-aware list_lru.

cdef enum:
    ALLOC_SLUB = 0
    ALLOC_SLAB = 1
    SLUB_KMALLOC_MAX = 8192          # KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1 (§3.6)
    SLAB_KMALLOC_MAX = 4194304       # 4 MiB (§3.6)
    DENTRY_SIZE = 192                # struct dentry on x86_64
    INODE_SIZE = 1120                # ext4_inode_cache object_size (this machine's kernel)

# ---- tables ----------------------------------------------------------------------------

cdef int grow_objs(mm_t *mm) noexcept nogil:
    cdef int32_t old = mm.cap_objs, new = max(1024, 2 * old), i
    cdef obj_t *o = <obj_t *>realloc(mm.objs, new * sizeof(obj_t))
    cdef int32_t *n = <int32_t *>realloc(mm.obj_next, new * sizeof(int32_t))
    cdef int32_t *p = <int32_t *>realloc(mm.obj_prev, new * sizeof(int32_t))
    if o == NULL or n == NULL or p == NULL:
        mm.fatal = FATAL_NOMEM
        return -1
    mm.objs, mm.obj_next, mm.obj_prev, mm.cap_objs = o, n, p, new
    for i in range(old, new):
        mm.objs[i].kind = OBJ_FREE
        mm.obj_next[i] = i + 1 if i + 1 < new else mm.obj_free
        mm.obj_prev[i] = -1
    mm.obj_free = old
    return 0


cdef int32_t obj_new(mm_t *mm, int kind, int owner) noexcept nogil:
    cdef int32_t oid
    if mm.obj_free < 0 and grow_objs(mm) < 0:
        return -1
    oid = mm.obj_free
    mm.obj_free = mm.obj_next[oid]
    mm.objs[oid].kind = kind
    mm.objs[oid].owner = owner
    mm.objs[oid].slab = -1
    mm.objs[oid].pfn = -1
    mm.objs[oid].aux = -1
    mm.objs[oid].lazy = 0
    mm.objs[oid].order = 0
    mm.objs[oid].objcg = ROOT_MEMCG
    mm.obj_next[oid] = -1
    mm.obj_prev[oid] = -1
    if owner >= 0:
        list_add(&mm.tasks[owner].objs, mm.obj_next, mm.obj_prev, oid)
    return oid


cdef void obj_release(mm_t *mm, int32_t oid) noexcept nogil:
    cdef int owner = mm.objs[oid].owner
    if owner >= 0:
        list_del(&mm.tasks[owner].objs, mm.obj_next, mm.obj_prev, oid)
    mm.objs[oid].kind = OBJ_FREE
    mm.obj_next[oid] = mm.obj_free
    mm.obj_prev[oid] = -1
    mm.obj_free = oid


cdef int grow_slabs(mm_t *mm) noexcept nogil:
    cdef int32_t old = mm.cap_slabs, new = max(256, 2 * old), i
    cdef slab_t *s = <slab_t *>realloc(mm.slabs, new * sizeof(slab_t))
    cdef int32_t *n = <int32_t *>realloc(mm.slab_next, new * sizeof(int32_t))
    cdef int32_t *p = <int32_t *>realloc(mm.slab_prev, new * sizeof(int32_t))
    if s == NULL or n == NULL or p == NULL:
        mm.fatal = FATAL_NOMEM
        return -1
    mm.slabs, mm.slab_next, mm.slab_prev, mm.cap_slabs = s, n, p, new
    for i in range(old, new):
        mm.slab_next[i] = i + 1 if i + 1 < new else mm.slab_free
        mm.slab_prev[i] = -1
    mm.slab_free = old
    return 0


# ---- geometry ---------------------------------------------------------------------------

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline int fls(int64_t x) noexcept nogil:
    """Find last set bit, 1-based (fls(0) == 0), as the kernel's fls64()."""
    return 0 if x == 0 else 64 - __builtin_clzll(<unsigned long long>x)


cdef inline int get_order(int64_t size) noexcept nogil:
    cdef int order = 0
    size = (size - 1) >> PAGE_SHIFT
    while size:
        size >>= 1
        order += 1
    return order


cdef int slub_slab_order(int64_t size, int64_t min_objects, int max_order, int fract_leftover) noexcept nogil:
    """v4.2 slab_order() (§3.5); slub_min_order = 0, reserved = 0."""
    cdef int order
    cdef int64_t slab_size, rem
    if (PAGE_SIZE // size) > 32767:                       # MAX_OBJS_PER_PAGE
        return get_order(size * 32767) - 1
    order = max(0, fls(min_objects * size - 1) - PAGE_SHIFT)
    while order <= max_order:
        slab_size = <int64_t>PAGE_SIZE << order
        rem = slab_size % size
        if rem <= slab_size // fract_leftover:
            break
        order += 1
    return order


cdef int slub_calculate_order(int64_t size, int nr_cpus, int slub_max_order) noexcept nogil:
    """v4.2 calculate_order(): slub_min_objects = 4 * (fls(nr_cpu_ids) + 1) (§3.5)."""
    cdef int64_t min_objects = 4 * (fls(nr_cpus) + 1)
    cdef int64_t max_objects = (<int64_t>PAGE_SIZE << slub_max_order) // size
    cdef int fraction, order
    min_objects = min(min_objects, max_objects)
    while min_objects > 1:
        fraction = 16
        while fraction >= 4:
            order = slub_slab_order(size, min_objects, slub_max_order, fraction)
            if order <= slub_max_order:
                return order
            fraction //= 2
        min_objects -= 1
    order = slub_slab_order(size, 1, slub_max_order, 1)
    if order <= slub_max_order:
        return order
    return slub_slab_order(size, 1, MAX_ORDER, 1)


cdef void slab_calculate_order(int64_t size, int slab_max_order, bint reclaimable,
                               int *order_out, int *num_out) noexcept nogil:
    """4.2 SLAB calculate_slab_order()/cache_estimate() (§4.5): the freelist is off-slab for
    size >= PAGE_SIZE/32, else one index byte per object sits in the slab (alignment of
    the on-slab freelist is ignored)."""
    cdef int gfporder
    cdef int64_t slab_size, num, left_over
    cdef bint off_slab = size >= (PAGE_SIZE >> 5)
    order_out[0] = 0
    num_out[0] = 0
    for gfporder in range(MAX_ORDER):
        slab_size = <int64_t>PAGE_SIZE << gfporder
        if off_slab:
            num = slab_size // size
            left_over = slab_size - num * size
        else:
            num = slab_size // (size + 1)
            left_over = slab_size - num * (size + 1)
        if num == 0:
            continue
        order_out[0] = gfporder
        num_out[0] = <int>num
        if reclaimable or gfporder >= slab_max_order or left_over * 8 <= slab_size:
            break


cdef inline int kmalloc_index(mm_t *mm, int64_t size) noexcept nogil:
    """Index into mm.kmalloc_sizes: 65..96 -> 96, 129..192 -> 192, else the next power of
    two, never below the allocator's KMALLOC_MIN_SIZE (§3.6)."""
    cdef int i = mm.kmalloc_first[fls(size - 1)] if size > 1 else 0
    while i < mm.nr_kmalloc:
        if size <= mm.kmalloc_sizes[i]:
            return i
        i += 1
    return -1


# ---- caches and per-memcg clones --------------------------------------------------------

cdef int32_t kmem_cache_create(mm_t *mm, int64_t size, bint reclaimable, int root, int memcg_id) noexcept nogil:
    """A new cache's id; -1 (and FATAL_NOMEM) when the cache table is full."""
    cdef int32_t cid = mm.nr_caches, i
    cdef int order, num
    cdef kmem_cache_t *s
    cdef int ncpus_node = (mm.nr_cpus + mm.nr_nodes - 1) // mm.nr_nodes
    if cid >= mm.cap_caches:
        mm.fatal = FATAL_NOMEM
        return -1
    s = &mm.caches[cid]
    mm.nr_caches += 1
    s.size = <int32_t>size
    s.root = cid if root < 0 else root
    s.memcg = memcg_id
    s.reclaimable = reclaimable
    s.state = CACHE_READY
    s.ready_ns = 0
    for i in range(MAX_NODES):
        list_init(&s.partial[i])
        list_init(&s.slabs_free[i])
        s.free_objects[i] = 0
    if mm.allocator == ALLOC_SLUB:
        order = slub_calculate_order(size, mm.nr_cpus, mm.slub_max_order)
        s.oo_order = order
        s.oo_objects = <int32_t>((<int64_t>PAGE_SIZE << order) // size)
        s.min_order = get_order(size)
        s.min_objects = <int32_t>((<int64_t>PAGE_SIZE << s.min_order) // size)
        s.min_partial = min(10, max(5, (fls(size) - 1) // 2))   # clamp(ilog2(size)/2, 5, 10)
        s.cpu_slab = <int32_t *>malloc(mm.nr_cpus * sizeof(int32_t))
        for i in range(mm.nr_cpus):
            s.cpu_slab[i] = -1
        s.ac = NULL
        s.ac_avail = NULL
        s.alien = NULL
        s.alien_avail = NULL
        s.shared = NULL
        s.shared_avail = NULL
    else:
        slab_calculate_order(size, mm.slab_max_order, reclaimable, &order, &num)
        s.oo_order = s.min_order = order
        s.oo_objects = s.min_objects = num
        s.min_partial = 0
        s.cpu_slab = NULL
        if size > 131072:
            s.ac_limit = 1
        elif size > PAGE_SIZE:
            s.ac_limit = 8
        elif size > 1024:
            s.ac_limit = 24
        elif size > 256:
            s.ac_limit = 54
        else:
            s.ac_limit = 120
        s.batchcount = (s.ac_limit + 1) // 2
        s.free_limit = (1 + ncpus_node) * s.batchcount + num
        s.ac = <int32_t *>malloc(mm.nr_cpus * s.ac_limit * sizeof(int32_t))
        s.ac_avail = <int32_t *>calloc(mm.nr_cpus, sizeof(int32_t))
        # 4.2 alloc_alien_cache(): with more than one node (use_alien_caches), each node
        # keeps for every other node an array of at most 12 of its objects freed here
        s.alien_limit = 12 if s.ac_limit > 1 else 1
        if mm.nr_nodes > 1:
            s.alien = <int32_t *>malloc(mm.nr_nodes * mm.nr_nodes * s.alien_limit * sizeof(int32_t))
            s.alien_avail = <int32_t *>calloc(mm.nr_nodes * mm.nr_nodes, sizeof(int32_t))
        else:
            s.alien = NULL
            s.alien_avail = NULL
        # 4.2 enable_cpucache(): caches of objects up to a page on a machine with more than
        # one CPU get a per-node shared array of 8 batches (setup_kmem_cache_node)
        s.shared_limit = 8 * s.batchcount if size <= PAGE_SIZE and mm.nr_cpus > 1 else 0
        if s.shared_limit:
            s.shared = <int32_t *>malloc(mm.nr_nodes * s.shared_limit * sizeof(int32_t))
            s.shared_avail = <int32_t *>calloc(mm.nr_nodes, sizeof(int32_t))
        else:
            s.shared = NULL
            s.shared_avail = NULL
    return cid


cdef inline int32_t memcg_kmem_get_cache(mm_t *mm, task_t *t, int32_t root, uint32_t gfp_mask,
                                  bint *lazy) noexcept nogil:
    """The cache a task's kmem_cache_alloc really uses: the root cache when the allocation
    is bypassed (§2.4), else the memcg's clone, created asynchronously on first use -
    until its work item has run, objects go uncharged to the root cache (4.2)."""
    cdef int32_t idx, clone
    lazy[0] = False
    # 5.9+: one set of caches, objects charged instead: per-memcg copies kept partly filled
    # slab pages in every memcg (§3.4)
    if mm.policy.obj_charge:
        return root
    if memcg_kmem_bypass(mm, t, gfp_mask):
        lazy[0] = t != NULL and t.memcg != ROOT_MEMCG and not kmem_opted_out(mm, gfp_mask)
        return root
    idx = root * MAX_MEMCGS + t.memcg
    clone = mm.memcg_cache[idx]
    # creating a cache takes mutexes and may sleep, which a kmalloc caller (possibly
    # atomic) cannot: a work item creates it, and the root cache serves meanwhile
    if clone < 0:
        clone = kmem_cache_create(mm, mm.caches[root].size, mm.caches[root].reclaimable, root, t.memcg)
        if clone < 0:                    # table full (FATAL_NOMEM): the root cache serves
            return root
        mm.caches[clone].state = CACHE_PENDING
        mm.caches[clone].ready_ns = mm.now_ns + CACHE_CREATE_DELAY_NS
        mm.memcg_cache[idx] = clone
    if mm.caches[clone].state == CACHE_PENDING:
        if mm.now_ns < mm.caches[clone].ready_ns:
            lazy[0] = True
            mm.stats[M_SLAB_LAZY] += 1
            return root
        mm.caches[clone].state = CACHE_READY
    return clone


# ---- slab pages: charged per page, in the order and with the gfp the design says --------

cdef int32_t memcg_kmem_alloc_pages(mm_t *mm, task_t *t, int memcg_id, uint32_t page_gfp,
                                    uint32_t charge_gfp, int order, int node) noexcept nogil:
    """alloc_pages() with the kmem charge of memcg_id on the side the design says (the one
    place both orders are written): 4.2/4.3 (v4.3, way2) charge first and uncharge when the
    allocation fails (memcg_kmem_newpage_charge, memcg_charge_slab; §2.4, §3.1); 4.4 (way1,
    v6.18) allocate first and free the page when the charge fails (§2.7). The charge sees
    `charge_gfp`, the buddy allocator `page_gfp`. A page, or -1."""
    cdef int64_t nr_pages = 1 << order
    cdef int32_t pfn
    if memcg_id == ROOT_MEMCG:
        return __alloc_pages_nodemask(mm, t, page_gfp, order, node)
    if mm.policy.kmem_charge_after_alloc:
        pfn = __alloc_pages_nodemask(mm, t, page_gfp, order, node)
        if pfn >= 0 and memcg_charge_kmem(mm, t, memcg_id, charge_gfp, nr_pages) < 0:
            __free_pages(mm, pfn, order)
            return -1
        return pfn
    if memcg_charge_kmem(mm, t, memcg_id, charge_gfp, nr_pages) < 0:
        return -1
    pfn = __alloc_pages_nodemask(mm, t, page_gfp, order, node)
    if pfn < 0:
        page_counter_uncharge(mm, memcg_id, nr_pages)
    return pfn


cdef int32_t alloc_slab_page(mm_t *mm, task_t *t, int32_t cid, uint32_t page_gfp,
                             uint32_t charge_gfp, int node, int order) noexcept nogil:
    """memcg_charge_slab() + alloc_pages for a slab of cache cid, charged to the cache's
    memcg (a root cache's slabs are not charged); the page records that memcg."""
    cdef int memcg_id = mm.caches[cid].memcg
    cdef int64_t rounds = mm.stats[M_RR_BASE + RP_CHARGE]
    cdef int32_t pfn = memcg_kmem_alloc_pages(mm, t, memcg_id, page_gfp | __GFP_NOTRACK,
                                              charge_gfp, order, node)
    # the charge-time reclaim a new slab cost (way2 may reclaim twice for one slab, §3.3)
    mm.stats[M_SLAB_CHARGE_RECLAIM] += mm.stats[M_RR_BASE + RP_CHARGE] - rounds
    if pfn >= 0:
        mm.pg_memcg[pfn] = memcg_id
    return pfn


cdef int32_t register_slab(mm_t *mm, int32_t cid, int32_t pfn, int order) noexcept nogil:
    """Turn an allocated block into a slab of cache cid (page->slab_cache, NR_SLAB_*)."""
    cdef int32_t sid
    cdef kmem_cache_t *s = &mm.caches[cid]
    cdef int nid = page_to_nid(mm, pfn)
    if mm.slab_free < 0 and grow_slabs(mm) < 0:
        __free_pages(mm, pfn, order)
        return -1
    sid = mm.slab_free
    mm.slab_free = mm.slab_next[sid]
    mm.slab_next[sid] = -1
    mm.slab_prev[sid] = -1
    mm.slabs[sid].pfn = pfn
    mm.slabs[sid].cache = cid
    mm.slabs[sid].inuse = 0
    mm.slabs[sid].objects = <int32_t>((<int64_t>PAGE_SIZE << order) // s.size) if mm.allocator == ALLOC_SLUB else s.oo_objects
    mm.slabs[sid].order = order
    mm.slabs[sid].node = nid
    mm.slabs[sid].where = SL_NONE
    mm.slabs[sid].cpu = -1
    mm.pg_flags[pfn] = PG_head | PG_slab
    mm.pg_private[pfn] = sid
    mm.zones[nid].nr_slab += 1 << order
    mm.memcgs[mm.pg_memcg[pfn]].stat[MS_SLAB_RECLAIMABLE if s.reclaimable else MS_SLAB_UNRECLAIMABLE] += 1 << order
    mm.stats[M_SLAB_PAGES] += 1
    if mm.slab_want_node >= 0 and nid != mm.slab_want_node:
        mm.stats[M_SLAB_WRONG_NODE] += 1 << order
    mm.now_ns += COST_NEW_SLAB
    return sid


cdef void discard_slab(mm_t *mm, int32_t sid) noexcept nogil:
    """Return an empty slab to the buddy allocator and uncharge it."""
    cdef slab_t *sl = &mm.slabs[sid]
    cdef int32_t pfn = sl.pfn
    cdef int order = sl.order, memcg_id = mm.pg_memcg[pfn]
    cdef kmem_cache_t *s = &mm.caches[sl.cache]
    mm.zones[sl.node].nr_slab -= 1 << order
    mm.memcgs[memcg_id].stat[MS_SLAB_RECLAIMABLE if s.reclaimable else MS_SLAB_UNRECLAIMABLE] -= 1 << order
    if memcg_id != ROOT_MEMCG:
        page_counter_uncharge(mm, memcg_id, 1 << order)
    mm.reclaimed_slab += 1 << order           # current->reclaim_state
    sl.pfn = -1
    mm.slab_next[sid] = mm.slab_free
    mm.slab_prev[sid] = -1
    mm.slab_free = sid
    mm.pg_flags[pfn] = PG_head
    __free_pages(mm, pfn, order)


# ---- object front end -------------------------------------------------------------------

cdef int32_t kmem_cache_alloc_node(mm_t *mm, task_t *t, int32_t root, uint32_t gfp_mask,
                                   int node, int owner) noexcept nogil:
    """kmem_cache_alloc_node(): an object id, or -1 (NULL). An object that lands in a slab
    off the node asked for (kmalloc_node's node, else the local node) counts as a wrong-node
    object, whichever path put it there: a new slab from a fallback page, SLAB's
    fallback_alloc taking a free object of another node's slab, SLUB's get_any_partial or a
    CPU slab of another node."""
    cdef bint lazy
    cdef int32_t cid = memcg_kmem_get_cache(mm, t, root, gfp_mask, &lazy), sid, oid
    cdef int want = node if node >= 0 else t.node
    mm.slab_want_node = want
    if mm.allocator == ALLOC_SLUB:
        sid = slub_alloc(mm, t, cid, gfp_mask, node)
    else:
        sid = slab_alloc_node(mm, t, cid, gfp_mask, node)
    mm.slab_want_node = -1
    if sid < 0:
        return -1
    if mm.slabs[sid].node != want:
        mm.stats[M_SLAB_WRONG_NODE_OBJS] += 1
    oid = obj_new(mm, OBJ_SLAB, owner)
    if oid < 0:
        return -1
    mm.objs[oid].slab = sid
    mm.objs[oid].pfn = mm.slabs[sid].pfn
    mm.objs[oid].size = mm.caches[cid].size
    if lazy:
        mm.objs[oid].lazy = 1
        mm.lazy_bytes += mm.caches[cid].size
    if mm.policy.obj_charge and not memcg_slab_post_alloc_hook(mm, t, oid, gfp_mask):
        return -1
    return oid


cdef inline int64_t obj_full_size(kmem_cache_t *s) noexcept nogil:
    """The object plus its obj_cgroup pointer in the slab's obj_exts (charged too)."""
    return s.size + OBJCG_PTR_SIZE


cdef inline int obj_cpu(mm_t *mm) noexcept nogil:
    """The CPU a free runs on: the current task's (kswapd and cgroupfs writes: CPU 0)."""
    return mm.tasks[mm.current].cpu if mm.current >= 0 else 0


cdef bint memcg_slab_post_alloc_hook(mm_t *mm, task_t *t, int32_t oid, uint32_t gfp_mask) noexcept nogil:
    """6.18 __memcg_slab_post_alloc_hook() (§3.4): charge the new object's bytes to the
    task's obj_cgroup with the caller's gfp; a failed charge frees the object again
    (memcg_alloc_abort_single) and the allocation returns NULL."""
    cdef kmem_cache_t *s = &mm.caches[mm.slabs[mm.objs[oid].slab].cache]
    if memcg_kmem_bypass(mm, t, gfp_mask):
        return True
    if obj_cgroup_charge(mm, t, t.memcg, gfp_mask, obj_full_size(s)) < 0:
        kmem_cache_free(mm, oid)
        return False
    mm.objs[oid].objcg = t.memcg
    mm.memcgs[t.memcg].slab_bytes[0 if s.reclaimable else 1] += obj_full_size(s)
    return True


cdef void memcg_slab_free_hook(mm_t *mm, int32_t oid) noexcept nogil:
    """__memcg_slab_free_hook(): the object's bytes back to the obj stock of this CPU."""
    cdef kmem_cache_t *s = &mm.caches[mm.slabs[mm.objs[oid].slab].cache]
    cdef int memcg_id = mm.objs[oid].objcg
    mm.memcgs[memcg_id].slab_bytes[0 if s.reclaimable else 1] -= obj_full_size(s)
    obj_cgroup_uncharge(mm, obj_cpu(mm), memcg_id, obj_full_size(s))
    mm.objs[oid].objcg = ROOT_MEMCG


cdef inline int mem_cgroup_from_obj(mm_t *mm, int32_t oid) noexcept nogil:
    """The memcg an object belongs to (list_lru placement): its obj_cgroup when charged
    per object, else the memcg of its (cloned) cache."""
    if mm.objs[oid].objcg != ROOT_MEMCG:
        return mm.objs[oid].objcg
    return mm.caches[mm.slabs[mm.objs[oid].slab].cache].memcg


cdef void kmem_cache_free(mm_t *mm, int32_t oid) noexcept nogil:
    cdef int32_t sid = mm.objs[oid].slab
    cdef int32_t cid = mm.slabs[sid].cache
    if mm.objs[oid].lazy:
        mm.lazy_bytes -= mm.objs[oid].size
    if mm.objs[oid].objcg != ROOT_MEMCG:
        memcg_slab_free_hook(mm, oid)
    obj_release(mm, oid)
    if mm.allocator == ALLOC_SLUB:
        slub_free(mm, cid, sid)
    else:
        slab_free(mm, cid, sid)


cdef int32_t alloc_kmem_pages(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int node,
                              int owner) noexcept nogil:
    """alloc_kmem_pages_node() (also kmalloc_large): charged with the caller's gfp in every
    design - before the allocation in 4.2/4.3 (memcg_kmem_newpage_charge), after it in 4.4."""
    cdef bint bypass = memcg_kmem_bypass(mm, t, gfp_mask)
    cdef int memcg_id = ROOT_MEMCG if bypass else t.memcg
    cdef int64_t nr_pages = 1 << order
    cdef int32_t pfn = memcg_kmem_alloc_pages(mm, t, memcg_id, gfp_mask, gfp_mask, order, node), oid
    if pfn < 0:
        return -1
    oid = obj_new(mm, OBJ_PAGES, owner)
    if oid < 0:
        return -1
    mm.pg_flags[pfn] = PG_head | PG_kmem
    mm.pg_memcg[pfn] = memcg_id
    if bypass and t != NULL and t.memcg != ROOT_MEMCG and not kmem_opted_out(mm, gfp_mask):
        mm.pg_flags[pfn] |= PG_acct_miss
        mm.kmem_miss_pages += nr_pages
        mm.stats[M_CHARGE_BYPASSED_PAGES] += nr_pages
    mm.memcgs[memcg_id].stat[MS_KERNEL] += nr_pages
    mm.zones[page_to_nid(mm, pfn)].nr_kmem += nr_pages
    mm.objs[oid].pfn = pfn
    mm.objs[oid].order = order
    mm.objs[oid].size = <int32_t>(nr_pages * PAGE_SIZE)
    return oid


cdef void free_kmem_pages(mm_t *mm, int32_t oid) noexcept nogil:
    cdef int32_t pfn = mm.objs[oid].pfn
    cdef int order = mm.objs[oid].order, memcg_id = mm.pg_memcg[pfn]
    cdef int64_t nr_pages = 1 << order
    if mm.pg_flags[pfn] & PG_acct_miss:
        mm.kmem_miss_pages -= nr_pages
    mm.memcgs[memcg_id].stat[MS_KERNEL] -= nr_pages
    mm.zones[page_to_nid(mm, pfn)].nr_kmem -= nr_pages
    if memcg_id != ROOT_MEMCG:
        page_counter_uncharge(mm, memcg_id, nr_pages)
    obj_release(mm, oid)
    mm.pg_flags[pfn] = PG_head
    __free_pages(mm, pfn, order)


cdef inline int32_t do_kmalloc(mm_t *mm, task_t *t, int64_t size, uint32_t gfp_mask, int node,
                        int owner) noexcept nogil:
    """kmalloc_node(): a size class, or kmalloc_large() above 8 KiB under SLUB (§3.6)."""
    cdef int idx
    if mm.allocator == ALLOC_SLUB and size > SLUB_KMALLOC_MAX:
        return alloc_kmem_pages(mm, t, gfp_mask | __GFP_COMP, get_order(size), node, owner)
    idx = kmalloc_index(mm, size)
    if idx < 0:
        return -1
    return kmem_cache_alloc_node(mm, t, mm.kmalloc_caches[idx], gfp_mask, node, owner)


cdef void do_kfree(mm_t *mm, int32_t oid) noexcept nogil:
    if mm.objs[oid].kind == OBJ_PAGES:
        free_kmem_pages(mm, oid)
    else:
        kmem_cache_free(mm, oid)


# ---- dentries and inodes: reclaimable slab on a memcg-aware list_lru ---------------------

cdef bint d_alloc(mm_t *mm, task_t *t) noexcept nogil:
    """One path looked up by `find /`: a dentry and an inode, both GFP_KERNEL (as in the
    §6.1 experiment; ext4 itself allocates inodes with GFP_NOFS, which would make them
    unreclaimable by their own charges), in SLAB_RECLAIM_ACCOUNT caches. The pair
    stays in the dcache after the task exits, on the list_lru of the memcg of the dentry's
    slab, until a shrinker with __GFP_FS frees it. Both caches are SLAB_ACCOUNT from 4.5
    (5d097056c9a0), which the model passes as __GFP_ACCOUNT (read only by 4.5+ rows)."""
    cdef int32_t d = kmem_cache_alloc_node(mm, t, mm.dentry_cache, GFP_KERNEL | __GFP_ACCOUNT,
                                           NUMA_NO_NODE, -1)
    cdef int32_t i
    if d < 0:
        return False
    i = kmem_cache_alloc_node(mm, t, mm.inode_cache, GFP_KERNEL | __GFP_ACCOUNT, NUMA_NO_NODE, -1)
    if i < 0:
        kmem_cache_free(mm, d)
        return False
    mm.objs[d].kind = OBJ_DENTRY
    mm.objs[d].aux = i
    mm.objs[i].kind = OBJ_INODE
    list_add_tail(&mm.memcgs[mem_cgroup_from_obj(mm, d)].dentries, mm.obj_next, mm.obj_prev, d)
    return True


cdef void free_dentry(mm_t *mm, int32_t d) noexcept nogil:
    cdef int memcg_id = mem_cgroup_from_obj(mm, d)
    list_del(&mm.memcgs[memcg_id].dentries, mm.obj_next, mm.obj_prev, d)
    kmem_cache_free(mm, mm.objs[d].aux)
    kmem_cache_free(mm, d)
