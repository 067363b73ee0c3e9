# hooks: beneath core.Machine's cgroupfs API - the C machine's lifetime, the lookups the API
# shares, the workload drivers' hooks and the introspection tests and benchmarks use (what a
# kernel shows in /proc and debugfs). core.Machine (machine.pxi) extends MachineHooks.


cdef class MachineHooks:
    """The C machine under core.Machine (attributes declared in core/_mm.pxd)."""

    def __dealloc__(self):
        mm_destroy(self.mm)
        self.mm = NULL

    # ---- lookups shared with the cgroupfs API -------------------------------------
    cdef int _memcg(self, path) except -1:
        if not isinstance(path, str) or path not in self._paths:
            raise ValueError(f"path: no such cgroup {path!r}; existing: {', '.join(sorted(self._paths))}")
        return self._paths[path]

    cdef int _node(self, node) except -1:
        return check_int("node", node, 0, self.nodes - 1)

    cdef int32_t _object(self, handle) except -1:
        if isinstance(handle, bool) or not isinstance(handle, int) or not 0 <= handle < self.mm.cap_objs \
                or self.mm.objs[handle].kind not in (OBJ_SLAB, OBJ_PAGES):
            raise ValueError(f"handle: {handle!r} is not a live kmalloc/alloc_pages handle")
        return handle

    cdef _check_fatal(self):
        if self.mm.fatal:
            raise RuntimeError(f"simulation stopped: {FATAL[self.mm.fatal]}")

    # ---- the workload drivers' hooks (core.replay, build_workload_machine) ---------
    def _respawn(self, tid):
        """core.replay's twin of wl_respawn()."""
        cdef int new = wl_respawn(self.mm, tid)
        self._check_fatal()
        return Task(self, new)

    def _task_node(self, tid):
        return self.mm.tasks[tid].node

    def _setup_background(self, int root_tid, int64_t file_pages, double fragment):
        """Background pressure outside the cgroups: a root task's page cache, then
        scattered pinned order-0 pages (every 1/fragment-th free page) that break up the
        high-order blocks (fragmentation). Statistics start after it."""
        with nogil:
            setup_background(self.mm, root_tid, file_pages, fragment)
        self._check_fatal()

    # ---- introspection for tests and benchmarks -------------------------------------
    def buddyinfo(self):
        return [[int(self.mm.zones[n].free_area[o].nr) for o in range(MAX_ORDER)]
                for n in range(self.nodes)]

    def zoneinfo(self, node):
        cdef zone_t *z = &self.mm.zones[self._node(node)]
        return {"managed": z.managed, "free": z.nr_free, "min": z.wmark[ALLOC_WMARK_MIN],
                "low": z.wmark[ALLOC_WMARK_LOW], "high": z.wmark[ALLOC_WMARK_HIGH]}

    def node_pages(self, node):
        """Pages of a node by user; they sum to `managed` (pages conserved)."""
        cdef zone_t *z = &self.mm.zones[self._node(node)]
        cdef int64_t pages = z.managed - z.nr_free - z.nr_file - z.nr_anon - z.nr_slab - z.nr_kmem
        return {"free": z.nr_free, "file": z.nr_file, "anon": z.nr_anon, "slab": z.nr_slab,
                "kmem": z.nr_kmem, "pages": pages}

    def charged_pages(self, path):
        """Pages whose memcg is path or a descendant (what memory.current must account)."""
        cdef int root = self._memcg(path), pfn
        cdef int64_t n = 0, count
        cdef uint8_t f
        for pfn in range(self.mm.nr_pages):
            f = self.mm.pg_flags[pfn]
            if (f & PG_head) and self.mm.pg_memcg[pfn] and \
                    mem_cgroup_is_descendant(self.mm, self.mm.pg_memcg[pfn], root):
                n += 1 << self.mm.pg_order[pfn]
        return n

    def objcg_pages(self, path):
        """Pages charged through obj_cgroup (5.9+ per-object charging) to path and its
        descendants; their bytes are live objects, byte stocks and nr_charged_bytes."""
        cdef int root = self._memcg(path), i
        return sum(self.mm.memcgs[i].objcg_pages for i in range(self.mm.nr_memcgs)
                   if mem_cgroup_is_descendant(self.mm, i, root))

    def objcg_bytes(self, path):
        """(live charged object bytes, bytes pre-charged in obj stocks and nr_charged_bytes)
        of path and its descendants: together they are objcg_pages(path) pages."""
        cdef int root = self._memcg(path), i, c
        live = sum(self.mm.memcgs[i].slab_bytes[0] + self.mm.memcgs[i].slab_bytes[1]
                   for i in range(self.mm.nr_memcgs) if mem_cgroup_is_descendant(self.mm, i, root))
        spare = sum(self.mm.memcgs[i].nr_charged_bytes for i in range(self.mm.nr_memcgs)
                    if mem_cgroup_is_descendant(self.mm, i, root))
        spare += sum(self.mm.obj_stock_bytes[c] for c in range(self.cpus)
                     if self.mm.obj_stock_memcg[c] >= 0
                     and mem_cgroup_is_descendant(self.mm, self.mm.obj_stock_memcg[c], root))
        return live, spare

    def stock_pages(self, path):
        cdef int root = self._memcg(path), c
        return sum(self.mm.stock_nr[c] for c in range(self.cpus)
                   if self.mm.stock_memcg[c] >= 0
                   and mem_cgroup_is_descendant(self.mm, self.mm.stock_memcg[c], root))

    def _bench_buddy_pairs(self, int64_t n, int order=0):
        """Benchmark hook: n alloc_pages/free_pages pairs through the C layer, GIL released;
        returns the virtual ns they cost."""
        cdef int64_t i, start = self.mm.now_ns
        cdef int32_t pfn
        with nogil:
            for i in range(n):
                pfn = __alloc_pages_nodemask(self.mm, NULL, GFP_KERNEL, order, 0)
                if pfn >= 0:
                    __free_pages(self.mm, pfn, order)
        return self.mm.now_ns - start

    def _owner(self, handle):
        """The task owning a live kmalloc/alloc_pages handle, -1 if it is not live."""
        if not 0 <= handle < self.mm.cap_objs or self.mm.objs[handle].kind not in (OBJ_SLAB, OBJ_PAGES):
            return -1
        return self.mm.objs[handle].owner

    def node_of(self, handle):
        cdef int32_t oid = self._object(handle)
        return page_to_nid(self.mm, self.mm.objs[oid].pfn)

    def _slab_arrays(self, size):
        """Test hook (SLAB): where the free objects of the root kmalloc cache serving `size`
        wait - {"cpu": per-CPU array entries, "shared": per-node shared array entries,
        "alien": {(node, page_node): entries}, "free_objects": per-node list objects}."""
        if self.mm.allocator != ALLOC_SLAB:
            raise ValueError("_slab_arrays: the machine's allocator is not slab")
        check_int("size", size, 1, 1 << 22)
        cdef int idx = kmalloc_index(self.mm, size), n = self.mm.nr_nodes, i, j
        cdef kmem_cache_t *s = &self.mm.caches[self.mm.kmalloc_caches[idx]]
        return {"cpu": [s.ac_avail[i] for i in range(self.mm.nr_cpus)],
                "shared": [s.shared_avail[i] if s.shared != NULL else 0 for i in range(n)],
                "alien": {(i, j): s.alien_avail[i * n + j] for i in range(n) for j in range(n)
                          if s.alien != NULL and i != j},
                "free_objects": [s.free_objects[i] for i in range(n)]}

    def _kmem_cache_create(self, size):
        """Test hook: kmem_cache_create() of a root cache; the new cache's id, -1 when the
        cache table is full (the machine then stops: FATAL_NOMEM)."""
        check_int("size", size, 8, 1 << 22)
        return kmem_cache_create(self.mm, size, False, -1, ROOT_MEMCG)
