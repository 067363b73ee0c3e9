# Doubly linked lists of int32 ids threaded through parallel next/prev arrays (pfns through
# pg_next/pg_prev, slabs through slab_next/slab_prev, objects through obj_next/obj_prev), so
# no Python object and no allocation per element: list_head in C terms.

cdef inline void list_init(list_t *l) noexcept nogil:
    l.head = -1
    l.tail = -1
    l.nr = 0

cdef inline void list_add(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil:
    """Add x at the head (the newest end)."""
    nxt[x] = l.head
    prv[x] = -1
    if l.head >= 0:
        prv[l.head] = x
    else:
        l.tail = x
    l.head = x
    l.nr += 1

cdef inline void list_add_tail(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil:
    prv[x] = l.tail
    nxt[x] = -1
    if l.tail >= 0:
        nxt[l.tail] = x
    else:
        l.head = x
    l.tail = x
    l.nr += 1

cdef inline void list_del(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil:
    cdef int32_t n = nxt[x], p = prv[x]
    if p >= 0:
        nxt[p] = n
    else:
        l.head = n
    if n >= 0:
        prv[n] = p
    else:
        l.tail = p
    nxt[x] = -1
    prv[x] = -1
    l.nr -= 1

cdef inline void list_replace(list_t *l, int32_t *nxt, int32_t *prv, int32_t old, int32_t new) noexcept nogil:
    """Put `new` where `old` is (page migration keeps the LRU position)."""
    cdef int32_t n = nxt[old], p = prv[old]
    nxt[new] = n
    prv[new] = p
    if p >= 0:
        nxt[p] = new
    else:
        l.head = new
    if n >= 0:
        prv[n] = new
    else:
        l.tail = new
    nxt[old] = -1
    prv[old] = -1
