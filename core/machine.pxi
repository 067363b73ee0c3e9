# machine: the Python face of the simulator (docs/api.md, docs/api.md): core.Machine drives
# the C model the way the cgroup selftests drive a real kernel through cgroupfs files.
import math
import re
from contextlib import contextmanager

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
ALLOCATORS = ("slub", "slab")
MEMORY_FILES = ("memory.current", "memory.peak", "memory.max", "memory.high", "memory.low",
                "memory.events", "memory.stat", "memory.reclaim")
REQUEST_KINDS = {"kmalloc": REQ_KMALLOC, "kmalloc_node": REQ_KMALLOC_NODE,
                 "alloc_pages": REQ_ALLOC_PAGES, "dentries": REQ_DENTRIES,
                 "read_file": REQ_READ_FILE, "fault_anon": REQ_FAULT_ANON}
FATAL = {FATAL_NOFAIL_OOM: "a __GFP_NOFAIL request found no free page even in the reserves "
                           "(the simulated machine is out of memory)",
         FATAL_NOMEM: "the simulator could not grow one of its tables"}


def parse_size(value, what="size"):
    """cgroupfs memparse: bytes, or a number with K/M/G/T; "max" is no limit (None)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected bytes, 'NNN[KMG]' or 'max', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what}: must be >= 0, got {value}")
        return value
    if isinstance(value, str):
        if value.strip() == "max":
            return None
        mt = _SIZE_RE.match(value)
        if mt:
            return int(mt.group(1)) * _UNITS[mt.group(2).upper()]
    raise ValueError(f"{what}: expected bytes, 'NNN[KMG]' or 'max', got {value!r}")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}: must be an integer in {lo}..{hi}, got {value!r}")
    return value


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


cdef class Machine:
    """A simulated machine: buddy allocator, SLUB or SLAB, memcg, under one kmem design."""
    cdef mm_t *mm
    cdef dict _paths
    cdef readonly str design
    cdef readonly str allocator
    cdef readonly int nodes
    cdef readonly int cpus
    cdef readonly int seed
    cdef int _next_cpu

    def __cinit__(self, nodes=1, mem_mib=1024, cpus=2, allocator="slub", design="way2",
                  seed=0, slub_max_order=3, swap=False):
        _check_int("nodes", nodes, 1, MAX_NODES)
        _check_int("mem_mib", mem_mib, 16, 65536)
        _check_int("cpus", cpus, 1, MAX_CPUS)
        _check_int("slub_max_order", slub_max_order, 0, MAX_ORDER - 1)
        _check_int("seed", seed, 0, (1 << 64) - 1)
        if cpus < nodes:
            raise ValueError(f"cpus: need at least one CPU per node ({nodes} nodes), got {cpus}")
        if allocator not in ALLOCATORS:
            raise ValueError(f"allocator: must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
        error = design_allocator_error(design, allocator)
        if error:
            raise ValueError(f"allocator: {error}")
        if not isinstance(swap, bool):
            raise ValueError(f"swap: must be true or false, got {swap!r}")
        self.mm = mm_create(nodes, mem_mib, cpus, ALLOC_SLUB if allocator == "slub" else ALLOC_SLAB,
                            policy_for(design), slub_max_order, swap)
        self.design, self.allocator, self.nodes, self.cpus, self.seed = design, allocator, nodes, cpus, seed
        self._paths = {"/": ROOT_MEMCG}
        self._next_cpu = 0

    def __dealloc__(self):
        mm_destroy(self.mm)
        self.mm = NULL

    # ---- cgroupfs -------------------------------------------------------------------
    cdef int _memcg(self, path) except -1:
        if not isinstance(path, str) or path not in self._paths:
            raise ValueError(f"path: no such cgroup {path!r}; existing: {', '.join(sorted(self._paths))}")
        return self._paths[path]

    def mkdir(self, path):
        if not isinstance(path, str) or not path.startswith("/") or path == "/" or path.endswith("/"):
            raise ValueError(f"path: expected an absolute cgroup path like '/a/b', got {path!r}")
        if path in self._paths:
            raise ValueError(f"path: cgroup {path!r} exists")
        parent_path = path.rsplit("/", 1)[0] or "/"
        parent = self._memcg(parent_path)
        if self.mm.nr_memcgs >= MAX_MEMCGS:
            raise ValueError(f"path: at most {MAX_MEMCGS - 1} cgroups")
        cdef int memcg_id = self.mm.nr_memcgs
        self.mm.nr_memcgs += 1
        memcg_init(self.mm, memcg_id, parent)
        self.mm.memcgs[memcg_id].online = True
        self.mm.memcgs[memcg_id].last_ns = self.mm.now_ns
        self.mm.memcgs[memcg_id].next_sibling = self.mm.memcgs[parent].first_child
        self.mm.memcgs[parent].first_child = memcg_id
        self._paths[path] = memcg_id

    def write(self, path, file, value):
        cdef int memcg_id = self._memcg(path)
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        if memcg_id == ROOT_MEMCG:
            raise ValueError(f"path: the root cgroup has no {file} (cgroup v2)")
        if file not in ("memory.max", "memory.high", "memory.low", "memory.reclaim"):
            raise ValueError(f"file: {file!r} is not writable; writable: memory.max, memory.high, "
                             "memory.low, memory.reclaim")
        nbytes = parse_size(value, file)
        nr = PAGE_COUNTER_MAX if nbytes is None else min(nbytes // PAGE_SIZE, PAGE_COUNTER_MAX)
        if file == "memory.max":
            self._resize_limit(memcg_id, nr)
        elif file == "memory.high":
            memcg_usage_add(self.mm, memcg_id, 0)          # close the integral at the old high
            m.high = nr
            if self.mm.policy.high_write_loop:
                self._high_write_loop(memcg_id)
            elif m.memory.count > m.high:                  # memory_high_write (§2.5)
                try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, m.memory.count - m.high,
                                             GFP_KERNEL, True, RP_DIRECT)
            self._check_fatal()
        elif file == "memory.low":
            m.low = nr
        else:
            self._proactive_reclaim(memcg_id, nr)

    cdef _high_write_loop(self, int memcg_id):
        """6.18 memory_high_write() (§7.3): drain the stocks once, then reclaim until usage
        is at most high, giving up after MAX_RECLAIM_RETRIES fruitless rounds."""
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        cdef int retries = self.mm.policy.reclaim_retries
        cdef bint drained = False
        while m.memory.count > m.high:
            if not drained:
                drain_all_stock(self.mm, memcg_id)
                drained = True
                continue
            if try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, m.memory.count - m.high,
                                            GFP_KERNEL, True, RP_DIRECT) == 0:
                if retries == 0:
                    break
                retries -= 1

    cdef _resize_limit(self, int memcg_id, int64_t nr):
        """4.2 mem_cgroup_resize_limit(): shrink below the usage by reclaim, -EBUSY if that
        makes no progress for MEM_CGROUP_RECLAIM_RETRIES rounds."""
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        cdef int retries = MEM_CGROUP_RECLAIM_RETRIES
        cdef int64_t old_usage = m.memory.count
        while m.memory.count > nr:
            if retries == 0:
                raise OSError(16, f"memory.max: usage {m.memory.count * PAGE_SIZE} cannot be "
                                  f"reclaimed below {nr * PAGE_SIZE} (EBUSY)")
            try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, 1, GFP_KERNEL, True, RP_DIRECT)
            self._check_fatal()
            if m.memory.count >= old_usage:
                retries -= 1
            old_usage = m.memory.count
        memcg_usage_add(self.mm, memcg_id, 0)
        m.memory.limit = nr

    cdef _proactive_reclaim(self, int memcg_id, int64_t nr):
        """memory.reclaim (5.19+): reclaim until nr pages are freed, -EAGAIN after 16
        fruitless tries (MAX_RECLAIM_RETRIES)."""
        cdef int64_t reclaimed = 0, got
        cdef int retries = 16
        while reclaimed < nr:
            got = try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, nr - reclaimed,
                                               GFP_KERNEL, True, RP_DIRECT)
            reclaimed += got
            if got == 0:
                retries -= 1
                if retries == 0:
                    raise OSError(11, f"memory.reclaim: reclaimed {reclaimed * PAGE_SIZE} of "
                                      f"{nr * PAGE_SIZE} bytes (EAGAIN)")

    def read(self, path, file):
        cdef int memcg_id = self._memcg(path)
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        if file not in MEMORY_FILES or file == "memory.reclaim":
            raise ValueError(f"file: {file!r} is not readable; readable: "
                             + ", ".join(f for f in MEMORY_FILES if f != "memory.reclaim"))
        if memcg_id == ROOT_MEMCG and file not in ("memory.stat",):
            raise ValueError(f"path: the root cgroup has no {file} (cgroup v2)")
        if file == "memory.current":
            return f"{m.memory.count * PAGE_SIZE}\n"
        if file == "memory.peak":
            return f"{m.memory.watermark * PAGE_SIZE}\n"
        if file in ("memory.max", "memory.high"):
            nr = m.memory.limit if file == "memory.max" else m.high
            return "max\n" if nr >= PAGE_COUNTER_MAX else f"{nr * PAGE_SIZE}\n"
        if file == "memory.low":
            return f"{m.low * PAGE_SIZE}\n"
        if file == "memory.events":
            return "".join(f"{k} {v}\n" for k, v in self.events(path).items())
        return "".join(f"{k} {v}\n" for k, v in self.stat(path).items())

    def events(self, path):
        cdef int memcg_id = self._memcg(path)
        return {name: int(self.mm.memcgs[memcg_id].events[e]) for e, name in enumerate(MEMCG_EVENTS)}

    def stat(self, path):
        """memory.stat in bytes, hierarchical (the cgroup and its descendants)."""
        cdef int root = self._memcg(path), i
        cdef int64_t s[6]
        cdef int64_t objs[2]              # per-object charging: object bytes (5.9+)
        for i in range(NR_MEMCG_STAT):
            s[i] = 0
        objs[0] = objs[1] = 0
        for i in range(self.mm.nr_memcgs):
            if mem_cgroup_is_descendant(self.mm, i, root):
                for k in range(NR_MEMCG_STAT):
                    s[k] += self.mm.memcgs[i].stat[k]
                objs[0] += self.mm.memcgs[i].slab_bytes[0]
                objs[1] += self.mm.memcgs[i].slab_bytes[1]
        return {"anon": s[MS_ANON] * PAGE_SIZE, "file": s[MS_FILE] * PAGE_SIZE,
                "kernel": s[MS_KERNEL] * PAGE_SIZE,
                "slab": (s[MS_SLAB_RECLAIMABLE] + s[MS_SLAB_UNRECLAIMABLE]) * PAGE_SIZE
                        + objs[0] + objs[1],
                "slab_reclaimable": s[MS_SLAB_RECLAIMABLE] * PAGE_SIZE + objs[0],
                "slab_unreclaimable": s[MS_SLAB_UNRECLAIMABLE] * PAGE_SIZE + objs[1],
                "swap": s[MS_SWAP] * PAGE_SIZE}

    # ---- tasks ------------------------------------------------------------------------
    def spawn(self, path, cpu=None):
        cdef int memcg_id = self._memcg(path)
        if cpu is None:
            cpu = self._next_cpu
            self._next_cpu = (self._next_cpu + 1) % self.cpus
        _check_int("cpu", cpu, 0, self.cpus - 1)
        cdef int tid = task_new(self.mm, memcg_id, cpu)
        self._check_fatal()
        return Task(self, tid)

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

    # ---- observation ------------------------------------------------------------------
    def metrics(self):
        return collect_metrics(self.mm)

    @property
    def now_ns(self):
        return self.mm.now_ns

    def buddyinfo(self):
        return [[int(self.mm.zones[n].free_area[o].nr) for o in range(MAX_ORDER)]
                for n in range(self.nodes)]

    cdef int _node(self, node) except -1:
        return _check_int("node", node, 0, self.nodes - 1)

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

    cdef int32_t _object(self, handle) except -1:
        if isinstance(handle, bool) or not isinstance(handle, int) or not 0 <= handle < self.mm.cap_objs \
                or self.mm.objs[handle].kind not in (OBJ_SLAB, OBJ_PAGES):
            raise ValueError(f"handle: {handle!r} is not a live kmalloc/alloc_pages handle")
        return handle

    cdef _check_fatal(self):
        if self.mm.fatal:
            raise RuntimeError(f"simulation stopped: {FATAL[self.mm.fatal]}")


cdef class Task:
    """A task in a cgroup (docs/api.md). Requests outside `syscall()` are a kernel entry of
    their own; fault_anon is a user page fault and must be made from user mode."""
    cdef Machine m
    cdef readonly int tid

    def __cinit__(self, Machine m, int tid):
        self.m = m
        self.tid = tid

    cdef task_t *_t(self):
        return &self.m.mm.tasks[self.tid]

    cdef _alive(self):
        if not self._t().alive:
            raise ValueError(f"task {self.tid}: has exited" + (" (OOM-killed)" if self._t().killed else ""))

    @property
    def killed(self):
        return bool(self._t().killed)

    @property
    def alive(self):
        return bool(self._t().alive)

    @property
    def in_kernel(self):
        return bool(self._t().in_kernel)

    @contextmanager
    def syscall(self):
        self._alive()
        nested = self._t().in_kernel
        if not nested:
            syscall_enter(self.m.mm, self.tid)
        try:
            yield self
        finally:
            if not nested and self._t().alive:
                return_to_user(self.m.mm, self.tid)
                self.m._check_fatal()

    @contextmanager
    def lock(self):
        """Requests inside are made while holding a lock (reclaim there counts as 'locked')."""
        held = self._t().lock_held
        self._t().lock_held = True
        try:
            yield self
        finally:
            if self._t().alive:
                self._t().lock_held = held

    def request(self, kind, arg, gfp="GFP_KERNEL", node=None, fallback=False):
        """One workload request through the shared C entry point (task_request); kmalloc &
        co. are thin wrappers around it. Returns the C result (handle or count; -1 failed)."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"kind: must be one of {', '.join(REQUEST_KINDS)}, got {kind!r}")
        self._alive()
        cdef int k = REQUEST_KINDS[kind]
        cdef uint32_t mask = gfp_parse(gfp)
        cdef int nid = -1 if node is None else self.m._node(node)
        _check_int("arg", arg, 0, 1 << 40)
        if k == REQ_FAULT_ANON and self._t().in_kernel:
            raise ValueError("fault_anon: a user page fault cannot be made inside a syscall")
        cdef bint entered = False
        if k != REQ_FAULT_ANON and not self._t().in_kernel:
            syscall_enter(self.m.mm, self.tid)
            entered = True
        cdef int64_t result, n = arg
        cdef bint fb = fallback
        cdef int tid = self.tid
        cdef mm_t *mm = self.m.mm
        with nogil:
            result = task_request(mm, tid, k, n, mask, nid, fb)
        if entered and self._t().alive:
            return_to_user(self.m.mm, self.tid)
        self.m._check_fatal()
        return result

    def kmalloc(self, size, gfp="GFP_KERNEL", node=None):
        limit = SLUB_KMALLOC_MAX * 1024 if self.m.allocator == "slub" else SLAB_KMALLOC_MAX
        _check_int("size", size, 1, limit)
        h = self.request("kmalloc" if node is None else "kmalloc_node", size, gfp, node)
        return None if h < 0 else h

    def alloc_pages(self, order, gfp="GFP_KERNEL", node=None):
        _check_int("order", order, 0, MAX_ORDER - 1)
        h = self.request("alloc_pages", order, gfp, node)
        return None if h < 0 else h

    def kfree(self, handle):
        cdef int32_t oid = self.m._object(handle)
        if self.m.mm.objs[oid].owner != self.tid:
            raise ValueError(f"handle: {handle} is not owned by task {self.tid}")
        saved = self.m.mm.current
        self.m.mm.current = self.tid
        do_kfree(self.m.mm, oid)
        self.m.mm.current = saved

    free_pages = kfree

    def create_dentries(self, n):
        _check_int("n", n, 0, 1 << 30)
        return self.request("dentries", n)

    def read_file(self, nbytes):
        _check_int("nbytes", nbytes, 0, 1 << 46)
        return self.request("read_file", (nbytes + PAGE_SIZE - 1) // PAGE_SIZE)

    def fault_anon(self, nbytes):
        _check_int("nbytes", nbytes, 0, 1 << 46)
        self.request("fault_anon", (nbytes + PAGE_SIZE - 1) // PAGE_SIZE)
        return not self._t().killed

    def enter_kernel(self):
        """The low-level form of syscall(): a kernel entry left with return_to_user()."""
        self._alive()
        syscall_enter(self.m.mm, self.tid)

    def return_to_user(self):
        if self._t().alive and self._t().in_kernel:
            return_to_user(self.m.mm, self.tid)
            self.m._check_fatal()

    def kill(self):
        """A fatal signal: in user mode the task dies now, in the kernel on its way out."""
        self._alive()
        self._t().dying = True
        if not self._t().in_kernel:
            task_exit(self.m.mm, self.tid)

    def exit(self):
        self._alive()
        task_exit(self.m.mm, self.tid)


cdef uint32_t gfp_parse(spec) except? 0xffffffff:
    return gfp(spec)


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
    _check_int("order", order, 0, MAX_ORDER - 1)
    cdef list_t area[11]
    for i in range(MAX_ORDER):
        area[i].nr = nr_free[i]
    return bool(__zone_watermark_ok(free, area, order, mark, flags))


def slub_geometry(size, cpus, slub_max_order=3):
    """SLUB calculate_order() of 4.2 for a kmalloc object size (§3.5)."""
    _check_int("size", size, 1, SLUB_KMALLOC_MAX)
    _check_int("cpus", cpus, 1, 4096)
    _check_int("slub_max_order", slub_max_order, 0, MAX_ORDER - 1)
    order = slub_calculate_order(size, cpus, slub_max_order)
    min_order = get_order(size)
    return {"order": order, "objects": (PAGE_SIZE << order) // size,
            "min_order": min_order, "min_objects": (PAGE_SIZE << min_order) // size}


def high_delay_jiffies(usage, high, nr_pages=64, charge_batch=64):
    """The memory.high throttle of one memcg level, in jiffies (HZ = 1000, so ms):
    calculate_high_delay() of 5.4+ (§6.3) clamped at MEMCG_MAX_HIGH_DELAY_JIFFIES; usage,
    high in pages; nr_pages the task's punted overage."""
    for name, value in (("usage", usage), ("high", high), ("nr_pages", nr_pages)):
        _check_int(name, value, 0, 1 << 40)
    _check_int("charge_batch", charge_batch, 1, 1 << 20)
    cdef int64_t h = max(high, 1), overage = 0
    if usage > h:
        overage = ((usage - h) << MEMCG_DELAY_PRECISION_SHIFT) // h
    return min(calculate_high_delay(charge_batch, nr_pages, overage), MEMCG_MAX_HIGH_DELAY_JIFFIES)


def slab_geometry(size, slab_max_order=1, reclaimable=False):
    """SLAB calculate_slab_order() of 4.2 (§4.5)."""
    _check_int("size", size, 1, SLAB_KMALLOC_MAX)
    _check_int("slab_max_order", slab_max_order, 0, MAX_ORDER - 1)
    cdef int order, num
    slab_calculate_order(size, slab_max_order, reclaimable, &order, &num)
    return {"order": order, "objects": num}
