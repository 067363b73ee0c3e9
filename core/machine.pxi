# machine: the Python face of the simulator (docs/api.md): core.Machine drives the C model
# the way the cgroup selftests drive a real kernel through cgroupfs files; core.Task is a
# process in a cgroup. What lies beneath the cgroupfs files (lookups, introspection, the
# workload drivers' hooks) is MachineHooks in hooks.pxi.
from contextlib import contextmanager

MEMORY_FILES = ("memory.current", "memory.peak", "memory.max", "memory.high", "memory.low",
                "memory.events", "memory.stat", "memory.reclaim")
REQUEST_KIND = {name: kind for kind, name in enumerate(REQUEST_KINDS)}   # name -> REQ_*
FATAL = {FATAL_NOFAIL_OOM: "a __GFP_NOFAIL request found no free page even in the reserves "
                           "(the simulated machine is out of memory)",
         FATAL_NOMEM: "the simulator could not grow one of its tables"}


cdef class Machine(MachineHooks):
    """A simulated machine: buddy allocator, SLUB or SLAB, memcg, under one kmem design.
    It is deterministic: it draws no random numbers (a workload's randomness is its seed,
    core.run_workload(spec, seed)), so it takes no seed."""

    def __cinit__(self, nodes=1, mem_mib=1024, cpus=2, allocator="slub", design="way2",
                  slub_max_order=3, swap=False, **unknown):
        if "seed" in unknown:
            raise TypeError("seed: core.Machine draws no random numbers, so a seed would change "
                            "nothing; a workload's randomness is the seed of "
                            "core.run_workload(spec, seed)")
        if unknown:
            raise TypeError(f"Machine: unexpected argument {next(iter(unknown))!r}")
        check_machine(nodes, mem_mib, cpus, allocator, slub_max_order, swap)
        error = design_allocator_error(design, allocator)
        if error:
            raise ValueError(f"allocator: {error}")
        self.mm = mm_create(nodes, mem_mib, cpus, ALLOC_SLUB if allocator == "slub" else ALLOC_SLAB,
                            policy_for(design), slub_max_order, swap)
        self.design, self.allocator, self.nodes, self.cpus = design, allocator, nodes, cpus
        self._paths = {"/": ROOT_MEMCG}
        self._next_cpu = 0

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
        """6.18 memory_high_write() (§6.3): drain the stocks once, then reclaim until usage
        is at most high, giving up after MAX_RECLAIM_RETRIES fruitless rounds.  The writer
        reclaims so that lowering high does not throttle the workload's own tasks on the
        sudden overage (536d3bf261a2)."""
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        cdef int retries = self.mm.policy.reclaim_retries
        cdef bint drained = False
        while m.memory.count > m.high:
            if not drained:
                # pages parked in per-CPU stocks count in usage but no reclaim can free them
                drain_all_stock(self.mm, memcg_id)
                drained = True
                continue
            if try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, m.memory.count - m.high,
                                            GFP_KERNEL, True, RP_DIRECT) == 0:
                # a busy workload may keep usage above the new high: the write must end
                if retries == 0:
                    break
                retries -= 1

    cdef _resize_limit(self, int memcg_id, int64_t nr):
        """4.2 mem_cgroup_resize_limit(): shrink below the usage by reclaim, -EBUSY if that
        makes no progress for MEM_CGROUP_RECLAIM_RETRIES rounds (§2.5).  4.2 refuses a limit
        it cannot reach by reclaim rather than OOM-kill to make room for it."""
        cdef memcg_t *m = &self.mm.memcgs[memcg_id]
        cdef int retries = MEM_CGROUP_RECLAIM_RETRIES
        cdef int64_t old_usage = m.memory.count
        while m.memory.count > nr:
            if retries == 0:
                raise OSError(16, f"memory.max: usage {m.memory.count * PAGE_SIZE} cannot be "
                                  f"reclaimed below {nr * PAGE_SIZE} (EBUSY)")
            try_to_free_mem_cgroup_pages(self.mm, NULL, memcg_id, 1, GFP_KERNEL, True, RP_DIRECT)
            self._check_fatal()
            if m.memory.count >= old_usage:          # only fruitless rounds use up retries
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
        check_int("cpu", cpu, 0, self.cpus - 1)
        cdef int tid = task_new(self.mm, memcg_id, cpu)
        self._check_fatal()
        return Task(self, tid)

    # ---- observation ------------------------------------------------------------------
    def metrics(self):
        return collect_metrics(self.mm)

    @property
    def now_ns(self):
        return self.mm.now_ns


cdef class Task:
    """A task in a cgroup (docs/api.md). Requests outside `syscall()` are a kernel entry of
    their own; fault_anon is a user page fault and must be made from user mode."""
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
        if kind not in REQUEST_KIND:
            raise ValueError(f"kind: must be one of {', '.join(REQUEST_KINDS)}, got {kind!r}")
        self._alive()
        cdef int k = REQUEST_KIND[kind]
        cdef uint32_t mask = gfp_parse(gfp)
        cdef int nid = -1 if node is None else self.m._node(node)
        check_int("arg", arg, 0, 1 << 40)
        if k == REQ_FAULT_ANON and self._t().in_kernel:
            raise ValueError("fault_anon: a user page fault cannot be made inside a syscall")
        if k == REQ_FAULT_ANON and self._t().lock_held:
            raise ValueError("fault_anon: a user page fault runs in user mode, where no kernel "
                             "lock is held (it takes mmap_sem itself); leave Task.lock() first")
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

    def kmalloc(self, size, gfp="GFP_KERNEL", node=None, accounted=False):
        """kmalloc_node(); `accounted` (or a gfp with __GFP_ACCOUNT) marks a site that opted
        in to kmem accounting - what rows with charge_only_accounted (v6.18) charge. Off by
        default, as for a plain kmalloc in 6.x (the workload spec's default too)."""
        limit = SLUB_KMALLOC_MAX * 1024 if self.m.allocator == "slub" else SLAB_KMALLOC_MAX
        check_int("size", size, 1, limit)
        h = self.request("kmalloc" if node is None else "kmalloc_node", size,
                         _with_account(gfp, accounted), node)
        return None if h < 0 else h

    def alloc_pages(self, order, gfp="GFP_KERNEL", node=None, accounted=True):
        """alloc_kmem_pages(): the accounted page API, so `accounted` defaults to True (6.x
        GFP_KERNEL_ACCOUNT pages: thread stacks, page tables)."""
        check_int("order", order, 0, MAX_ORDER - 1)
        h = self.request("alloc_pages", order, _with_account(gfp, accounted), node)
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
        check_int("n", n, 0, 1 << 30)
        return self.request("dentries", n)

    def read_file(self, nbytes):
        check_int("nbytes", nbytes, 0, 1 << 46)
        return self.request("read_file", (nbytes + PAGE_SIZE - 1) // PAGE_SIZE)

    def fault_anon(self, nbytes):
        check_int("nbytes", nbytes, 0, 1 << 46)
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




def _with_account(gfp, accounted):
    """The gfp mask of a kmem request, with __GFP_ACCOUNT when the site is accounted."""
    if not isinstance(accounted, bool):
        raise ValueError(f"accounted: must be True or False, got {accounted!r}")
    return gfp_parse(gfp) | (__GFP_ACCOUNT if accounted else 0)
