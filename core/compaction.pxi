# compaction: a migration model of direct compaction for order > 0 (mm/compaction.c).
# The kernel's model: a free scanner and a migration scanner meet in the middle. Ours: walk
# aligned blocks of the requested order from a per-zone cursor; a block qualifies when every
# page in it is free or on an LRU (movable); its LRU pages are then really migrated to free
# order-0 pages outside the block (keeping their LRU position and memcg), and the block is
# handed to the caller. Slab, kmem and other allocated pages are unmovable, so slab
# fragmentation really blocks compaction. Async mode scans fewer blocks than sync.
cdef enum:
    COMPACT_ASYNC_BLOCKS = 16
    COMPACT_SYNC_BLOCKS = 128


cdef int64_t block_movable_pages(mm_t *mm, int32_t base, int order, int64_t *free_in_block) noexcept nogil:
    """-1 if the block holds an unmovable page, else the number of LRU pages in it."""
    cdef int32_t p = base, end = base + (1 << order)
    cdef int64_t movable = 0
    cdef uint8_t f
    free_in_block[0] = 0
    while p < end:
        f = mm.pg_flags[p]
        mm.now_ns += COST_COMPACT_SCAN_PAGE
        if f & PG_buddy:
            if mm.pg_order[p] > order:
                return -1
            free_in_block[0] += 1 << mm.pg_order[p]
            p += 1 << mm.pg_order[p]
        elif f & (PG_lru_file | PG_lru_anon):
            movable += 1
            p += 1
        else:
            return -1
    return movable


cdef void migrate_lru_page(mm_t *mm, zone_t *z, int32_t old, int32_t new) noexcept nogil:
    """Move one LRU page: same memcg, same (memcg, node) LRU list and position, same owner."""
    cdef int lru = LRU_FILE if mm.pg_flags[old] & PG_lru_file else LRU_ANON
    cdef memcg_t *m = &mm.memcgs[mm.pg_memcg[old]]
    list_replace(&m.lru[z.node][lru], mm.pg_next, mm.pg_prev, old, new)
    mm.pg_flags[new] = mm.pg_flags[old]
    mm.pg_order[new] = 0
    mm.pg_memcg[new] = mm.pg_memcg[old]
    mm.pg_private[new] = mm.pg_private[old]
    mm.pg_flags[old] = PG_isolated
    mm.pg_memcg[old] = 0
    mm.pg_private[old] = -1
    mm.now_ns += COST_MIGRATE_PAGE


cdef int32_t compact_block(mm_t *mm, zone_t *z, int32_t base, int order) noexcept nogil:
    """Isolate the free pieces of the block, migrate its LRU pages out, return the block."""
    cdef int32_t p = base, end = base + (1 << order), new
    cdef int o
    while p < end:                                  # isolate_freepages_block()
        if mm.pg_flags[p] & PG_buddy:
            o = mm.pg_order[p]
            del_from_free_area(mm, z, p)
            z.nr_free -= 1 << o
            mm.pg_flags[p] = PG_isolated
            p += 1 << o
        else:
            p += 1
    p = base
    while p < end:                                  # migrate_pages()
        if mm.pg_flags[p] & (PG_lru_file | PG_lru_anon):
            new = __rmqueue_smallest(mm, z, 0)      # never inside the block: it is isolated
            migrate_lru_page(mm, z, p, new)
        p += 1
    for p in range(base, end):
        mm.pg_flags[p] = 0
        mm.pg_order[p] = -1
    mm.pg_flags[base] = PG_head
    mm.pg_order[base] = order
    return base


cdef int32_t compact_zone_order(mm_t *mm, zone_t *z, int order, int budget) noexcept nogil:
    cdef int64_t nblocks = z.managed >> order, k, movable, free_in_block
    cdef int32_t base
    if nblocks == 0:
        return -1
    for k in range(min(<int64_t>budget, nblocks)):
        base = z.start_pfn + ((z.compact_cursor % nblocks) << order)
        z.compact_cursor = (z.compact_cursor + 1) % nblocks
        movable = block_movable_pages(mm, base, order, &free_in_block)
        if movable < 0:
            continue
        # migration targets must exist outside the block, above the MIN watermark
        if z.nr_free - free_in_block - movable <= z.wmark[ALLOC_WMARK_MIN]:
            return -1
        return compact_block(mm, z, base, order)
    return -1


cdef int32_t try_to_compact_pages(mm_t *mm, uint32_t gfp_mask, int order, int preferred,
                                  bint sync) noexcept nogil:
    cdef int nodes[8]
    cdef int n = zonelist(mm, preferred, gfp_mask, nodes), i
    cdef zone_t *z
    cdef int32_t pfn
    # 4.2 try_to_compact_pages(): skipped for order 0 (a single page cannot be fragmented)
    # and without both __GFP_FS and __GFP_IO (migrating a page may need to write it back)
    if order == 0 or (gfp_mask & (__GFP_FS | __GFP_IO)) != (__GFP_FS | __GFP_IO):
        return -1
    mm.stats[M_COMPACT_ATTEMPTS] += 1
    for i in range(n):
        z = &mm.zones[nodes[i]]
        # compaction_suitable(): migration needs free pages to move into; with too few,
        # compaction can only fail and reclaim must come first
        if not zone_watermark_ok(z, 0, z.wmark[ALLOC_WMARK_LOW] + (2 << order), 0):
            continue
        pfn = compact_zone_order(mm, z, order, COMPACT_SYNC_BLOCKS if sync else COMPACT_ASYNC_BLOCKS)
        if pfn >= 0:
            mm.stats[M_COMPACT_SUCCESS] += 1
            return pfn
    return -1
