# gfp: the v4.2 flag bits and composite masks (include/linux/gfp.h, docs/kernel.md §1.1).

GFP_FLAGS = {
    "__GFP_DMA": __GFP_DMA, "__GFP_HIGHMEM": __GFP_HIGHMEM, "__GFP_DMA32": __GFP_DMA32,
    "__GFP_MOVABLE": __GFP_MOVABLE, "__GFP_WAIT": __GFP_WAIT, "__GFP_HIGH": __GFP_HIGH,
    "__GFP_IO": __GFP_IO, "__GFP_FS": __GFP_FS, "__GFP_COLD": __GFP_COLD,
    "__GFP_NOWARN": __GFP_NOWARN, "__GFP_REPEAT": __GFP_REPEAT, "__GFP_NOFAIL": __GFP_NOFAIL,
    "__GFP_NORETRY": __GFP_NORETRY, "__GFP_MEMALLOC": __GFP_MEMALLOC, "__GFP_COMP": __GFP_COMP,
    "__GFP_ZERO": __GFP_ZERO, "__GFP_NOMEMALLOC": __GFP_NOMEMALLOC,
    "__GFP_HARDWALL": __GFP_HARDWALL, "__GFP_THISNODE": __GFP_THISNODE,
    "__GFP_RECLAIMABLE": __GFP_RECLAIMABLE, "__GFP_NOACCOUNT": __GFP_NOACCOUNT,
    "__GFP_NOTRACK": __GFP_NOTRACK, "__GFP_NO_KSWAPD": __GFP_NO_KSWAPD,
    "__GFP_OTHER_NODE": __GFP_OTHER_NODE, "__GFP_WRITE": __GFP_WRITE,
    # 4.5 opt-in to kmem accounting (a model bit, mm_types.pxd); read only under the
    # policy's charge_only_accounted
    "__GFP_ACCOUNT": __GFP_ACCOUNT,
    # composites (v4.2)
    "GFP_ATOMIC": GFP_ATOMIC, "GFP_NOWAIT": GFP_NOWAIT, "GFP_NOIO": GFP_NOIO,
    "GFP_NOFS": GFP_NOFS, "GFP_KERNEL": GFP_KERNEL, "GFP_USER": GFP_USER,
    "GFP_HIGHUSER_MOVABLE": GFP_HIGHUSER_MOVABLE, "GFP_KERNEL_ACCOUNT": GFP_KERNEL | __GFP_ACCOUNT,
    "GFP_TRANSHUGE": GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NORETRY
                     | __GFP_NOWARN | __GFP_NO_KSWAPD,
}

# slab filters the caller's flags with these (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK): how
# the caller may reclaim and where it may allocate pass on to the slab's page; zone and
# page-content bits (COMP, ZERO, ...) belong to the caller's object, not to that page
cdef uint32_t GFP_RECLAIM_MASK = (__GFP_WAIT | __GFP_HIGH | __GFP_IO | __GFP_FS | __GFP_NOWARN
                                  | __GFP_REPEAT | __GFP_NOFAIL | __GFP_NORETRY
                                  | __GFP_MEMALLOC | __GFP_NOMEMALLOC)
cdef uint32_t GFP_CONSTRAINT_MASK = __GFP_HARDWALL | __GFP_THISNODE


def gfp(spec):
    """Parse "GFP_KERNEL|__GFP_NOFAIL" (or an int) into the v4.2 bit mask."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0 or spec >= (1 << 26):
            raise ValueError(f"gfp: {spec:#x} has bits outside __GFP_BITS_SHIFT (25) "
                             f"and the model's __GFP_ACCOUNT ({__GFP_ACCOUNT:#x})")
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"gfp: expected a string like 'GFP_KERNEL|__GFP_NOFAIL', got {spec!r}")
    mask = 0
    for name in spec.replace(" ", "").split("|"):
        if name not in GFP_FLAGS:
            raise ValueError(f"gfp: unknown flag {name!r}; valid names: {', '.join(GFP_FLAGS)}")
        mask |= GFP_FLAGS[name]
    return mask


cdef inline int gfp_class(uint32_t gfp_mask) noexcept nogil:
    """The metric class of a request: nofail > atomic (HIGH, no WAIT) > nowait > nofs > kernel."""
    if gfp_mask & __GFP_NOFAIL:
        return GC_NOFAIL
    if not (gfp_mask & __GFP_WAIT):
        return GC_ATOMIC if gfp_mask & __GFP_HIGH else GC_NOWAIT
    if not (gfp_mask & __GFP_FS):
        return GC_NOFS
    return GC_KERNEL


cdef inline bint gfpflags_allow_blocking(uint32_t gfp_mask) noexcept nogil:
    return (gfp_mask & __GFP_WAIT) != 0
