# mm_init: the machine's set-up and tear-down - zones filled the way memblock_free_all()
# hands memory to the buddy allocator, watermarks, the memcg table, the kmalloc caches
# (the kernel's mm/mm_init.c and mm/page_alloc.c at boot).
import math


cdef mm_t *mm_create(int nodes, int mem_mib, int cpus, int allocator, policy_t policy,
                     int max_order, bint swap) except NULL:
    cdef mm_t *mm = <mm_t *>calloc(1, sizeof(mm_t))
    cdef int64_t total = <int64_t>mem_mib * 256, per_node = total // nodes
    cdef int64_t span = (per_node + 1023) // 1024 * 1024, pfn, left
    cdef int n, o, i, nr_roots
    if mm == NULL:
        raise MemoryError()
    mm.nr_nodes, mm.nr_cpus, mm.node_span = nodes, cpus, <int32_t>span
    mm.nr_pages = <int32_t>(span * nodes)
    mm.allocator, mm.swap, mm.policy = allocator, swap, policy
    mm.slub_max_order = mm.slab_max_order = max_order
    mm.pg_next = <int32_t *>malloc(mm.nr_pages * sizeof(int32_t))
    mm.pg_prev = <int32_t *>malloc(mm.nr_pages * sizeof(int32_t))
    mm.pg_private = <int32_t *>malloc(mm.nr_pages * sizeof(int32_t))
    mm.pg_order = <int8_t *>malloc(mm.nr_pages)
    mm.pg_flags = <uint8_t *>calloc(mm.nr_pages, 1)
    mm.pg_memcg = <uint16_t *>calloc(mm.nr_pages, sizeof(uint16_t))
    if not (mm.pg_next and mm.pg_prev and mm.pg_private and mm.pg_order and mm.pg_flags and mm.pg_memcg):
        mm_destroy(mm)
        raise MemoryError()
    memset(mm.pg_next, 0xff, mm.nr_pages * sizeof(int32_t))
    memset(mm.pg_prev, 0xff, mm.nr_pages * sizeof(int32_t))
    memset(mm.pg_private, 0xff, mm.nr_pages * sizeof(int32_t))
    memset(mm.pg_order, 0xff, mm.nr_pages)
    # watermarks (§5.2): min_free_kbytes = clamp(int_sqrt(lowmem_kbytes * 16), 128, 65536)
    cdef int64_t min_free_kbytes = min(65536, max(128, math.isqrt(total * 4 * 16)))
    cdef int64_t pages_min = min_free_kbytes >> 2, zmin
    for n in range(nodes):
        z = &mm.zones[n]
        z.node = n
        z.start_pfn = <int32_t>(n * span)
        z.managed = <int32_t>per_node
        for o in range(MAX_ORDER):
            list_init(&z.free_area[o])
        pfn, left = z.start_pfn, per_node
        while left > 0:                      # memblock_free_all(): the largest aligned blocks
            o = MAX_ORDER - 1
            while (1 << o) > left:
                o -= 1
            add_to_free_area(mm, z, <int32_t>pfn, o, True)
            z.nr_free += 1 << o
            pfn += 1 << o
            left -= 1 << o
        zmin = pages_min * per_node // total
        z.wmark[ALLOC_WMARK_MIN] = zmin
        z.wmark[ALLOC_WMARK_LOW] = zmin + zmin // 4
        z.wmark[ALLOC_WMARK_HIGH] = zmin + zmin // 2
    for i in range(MAX_MEMCGS):
        memcg_init(mm, i, -1)
    mm.nr_memcgs = 1
    mm.memcgs[ROOT_MEMCG].online = True
    for i in range(MAX_CPUS):
        mm.stock_memcg[i] = -1
        mm.obj_stock_memcg[i] = -1
    mm.current = -1
    mm.slab_want_node = -1
    mm.obj_free = -1
    mm.slab_free = -1
    # kmalloc caches (§3.6), then the dentry and inode caches
    sizes = ([8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192] if allocator == ALLOC_SLUB
             else [32, 64, 96, 128, 192] + [1 << s for s in range(8, 23)])
    nr_roots = len(sizes) + 2
    mm.cap_caches = nr_roots * (MAX_MEMCGS + 1)
    mm.caches = <kmem_cache_t *>calloc(mm.cap_caches, sizeof(kmem_cache_t))
    mm.memcg_cache = <int32_t *>malloc(nr_roots * MAX_MEMCGS * sizeof(int32_t))
    if mm.caches == NULL or mm.memcg_cache == NULL:
        mm_destroy(mm)
        raise MemoryError()
    memset(mm.memcg_cache, 0xff, nr_roots * MAX_MEMCGS * sizeof(int32_t))
    mm.nr_kmalloc = len(sizes)
    for i, size in enumerate(sizes):
        mm.kmalloc_sizes[i] = size
        mm.kmalloc_caches[i] = kmem_cache_create(mm, size, False, -1, ROOT_MEMCG)
    for i in range(32):
        mm.kmalloc_first[i] = next((k for k, size in enumerate(sizes) if size >= (1 << i) // 2 + 1),
                                   len(sizes))
    mm.dentry_cache = kmem_cache_create(mm, DENTRY_SIZE, True, -1, ROOT_MEMCG)
    mm.inode_cache = kmem_cache_create(mm, INODE_SIZE, True, -1, ROOT_MEMCG)
    mm.nr_root_caches = nr_roots
    if mm.fatal:                         # a cache did not fit its table (cannot happen: sized above)
        mm_destroy(mm)
        raise MemoryError()
    return mm


cdef void memcg_init(mm_t *mm, int memcg_id, int parent) noexcept nogil:
    cdef memcg_t *m = &mm.memcgs[memcg_id]
    cdef int n
    memset(m, 0, sizeof(memcg_t))
    m.parent = parent
    m.first_child = -1
    m.next_sibling = -1
    m.memory.limit = PAGE_COUNTER_MAX
    m.high = PAGE_COUNTER_MAX
    for n in range(MAX_NODES):
        list_init(&m.lru[n][LRU_FILE])
        list_init(&m.lru[n][LRU_ANON])
    list_init(&m.dentries)


cdef void mm_destroy(mm_t *mm) noexcept nogil:
    cdef int i
    if mm == NULL:
        return
    if mm.caches != NULL:
        for i in range(mm.nr_caches):
            free(mm.caches[i].cpu_slab)
            free(mm.caches[i].ac)
            free(mm.caches[i].ac_avail)
            free(mm.caches[i].alien)
            free(mm.caches[i].alien_avail)
            free(mm.caches[i].shared)
            free(mm.caches[i].shared_avail)
    free(mm.caches)
    free(mm.memcg_cache)
    free(mm.pg_next)
    free(mm.pg_prev)
    free(mm.pg_private)
    free(mm.pg_order)
    free(mm.pg_flags)
    free(mm.pg_memcg)
    free(mm.tasks)
    free(mm.objs)
    free(mm.obj_next)
    free(mm.obj_prev)
    free(mm.slabs)
    free(mm.slab_next)
    free(mm.slab_prev)
    free(mm)

