# wl_heap: the generator's object slots and its min-heap of pending frees (ordered by
# expiry, ties by request sequence number).


cdef inline int32_t slot_get(wl_gen_t *g) noexcept nogil:
    cdef int32_t i, old = g.nr_slots
    if g.slot_free < 0:
        g.nr_slots = max(1024, 2 * old)
        g.slot_oid = <int32_t *>realloc(g.slot_oid, g.nr_slots * sizeof(int32_t))
        for i in range(old, g.nr_slots):
            g.slot_oid[i] = i + 1 if i + 1 < g.nr_slots else -1
        g.slot_free = old
    i = g.slot_free
    g.slot_free = g.slot_oid[i]
    g.slot_oid[i] = -1
    return i


cdef inline void heap_push(wl_gen_t *g, int64_t expiry, int64_t seq, int32_t slot, int32_t task,
                    int32_t life) noexcept nogil:
    cdef int64_t i, parent
    cdef heap_item_t item
    if g.heap_len == g.heap_cap:
        g.heap_cap = max(<int64_t>1024, 2 * g.heap_cap)
        g.heap = <heap_item_t *>realloc(g.heap, g.heap_cap * sizeof(heap_item_t))
    item.key = (<uint64_t>expiry << 32) | (<uint64_t>seq & 0xffffffffULL)
    item.slot = slot
    item.task = task
    item.life = life
    i = g.heap_len
    g.heap_len += 1
    while i > 0:
        parent = (i - 1) >> 1
        if g.heap[parent].key <= item.key:
            break
        g.heap[i] = g.heap[parent]
        i = parent
    g.heap[i] = item


cdef inline heap_item_t heap_pop(wl_gen_t *g) noexcept nogil:
    cdef heap_item_t top = g.heap[0], last
    cdef int64_t i = 0, child, n
    g.heap_len -= 1
    n = g.heap_len
    last = g.heap[n]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and g.heap[child + 1].key < g.heap[child].key:
            child += 1
        if last.key <= g.heap[child].key:
            break
        g.heap[i] = g.heap[child]
        i = child
    g.heap[i] = last
    return top


