# geometry: the allocators' sizing rules on given numbers, for tests and docs - the
# watermark check, SLUB/SLAB slab orders, the memory.high throttle - computed by the very
# C functions the model runs.


def watermark_ok(free, nr_free, order, mark, alloc_flags=""):
    """__zone_watermark_ok() of 4.2/4.3 (§5.3) on given numbers; alloc_flags is a
    '|'-separated subset of ALLOC_HIGH, ALLOC_HARDER."""
    names = {"ALLOC_HIGH": ALLOC_HIGH, "ALLOC_HARDER": ALLOC_HARDER}
    cdef int flags = 0
    for name in filter(None, alloc_flags.replace(" ", "").split("|")):
        if name not in names:
            raise ValueError(f"alloc_flags: unknown {name!r}; allowed: {', '.join(names)}")
        flags |= names[name]
    if len(nr_free) != MAX_ORDER:
        raise ValueError(f"nr_free: need {MAX_ORDER} counts (orders 0..10), got {len(nr_free)}")
    check_int("order", order, 0, MAX_ORDER - 1)
    cdef list_t area[11]
    for i in range(MAX_ORDER):
        area[i].nr = nr_free[i]
    return bool(__zone_watermark_ok(free, area, order, mark, flags))


def slub_geometry(size, cpus, slub_max_order=3):
    """SLUB calculate_order() of 4.2 for a kmalloc object size (§3.5)."""
    check_int("size", size, 1, SLUB_KMALLOC_MAX)
    check_int("cpus", cpus, 1, 4096)
    check_int("slub_max_order", slub_max_order, 0, MAX_ORDER - 1)
    order = slub_calculate_order(size, cpus, slub_max_order)
    min_order = get_order(size)
    return {"order": order, "objects": (PAGE_SIZE << order) // size,
            "min_order": min_order, "min_objects": (PAGE_SIZE << min_order) // size}


def high_delay_jiffies(usage, high, nr_pages=64, charge_batch=64):
    """The memory.high throttle of one memcg level, in jiffies (HZ = 1000, so ms):
    calculate_high_delay() of 5.4+ (§6.3) clamped at MEMCG_MAX_HIGH_DELAY_JIFFIES; usage,
    high in pages; nr_pages the task's punted overage."""
    for name, value in (("usage", usage), ("high", high), ("nr_pages", nr_pages)):
        check_int(name, value, 0, 1 << 40)
    check_int("charge_batch", charge_batch, 1, 1 << 20)
    cdef int64_t h = max(high, 1), overage = 0
    if usage > h:
        overage = ((usage - h) << MEMCG_DELAY_PRECISION_SHIFT) // h
    return min(calculate_high_delay(charge_batch, nr_pages, overage), MEMCG_MAX_HIGH_DELAY_JIFFIES)


def slab_geometry(size, slab_max_order=1, reclaimable=False):
    """SLAB calculate_slab_order() of 4.2 (§4.5)."""
    check_int("size", size, 1, SLAB_KMALLOC_MAX)
    check_int("slab_max_order", slab_max_order, 0, MAX_ORDER - 1)
    cdef int order, num
    slab_calculate_order(size, slab_max_order, reclaimable, &order, &num)
    return {"order": order, "objects": num}
