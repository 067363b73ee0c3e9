# Shared C declarations of the simulator: constants, gfp bits, and the structs of every
# layer (what include/linux/{gfp,mmzone,memcontrol,slub_def,sched}.h hold in the kernel).
# The layers themselves live in one .pxi file each, included by _mm.pyx, so the C compiler
# sees one translation unit and can inline across layers on the per-request path.
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    MAX_ORDER = 11                      # orders 0..10 (docs/kernel.md §5.1)
    PAGE_ALLOC_COSTLY_ORDER = 3
    CHARGE_BATCH = 32                   # §2.2 (4.x; the policy's charge_batch is used)
    MEM_CGROUP_RECLAIM_RETRIES = 5      # §2.3 (4.x; the policy's reclaim_retries is used)
    OBJCG_PTR_SIZE = 8                  # sizeof(struct obj_cgroup *): obj_full_size() (§3.4)
    HZ = 1000                           # jiffies per second for the memory.high throttle (§6.3)
    NSEC_PER_JIFFY = 1000000
    MEMCG_MAX_HIGH_DELAY_JIFFIES = 2000 # 2 * HZ (§6.3)
    MEMCG_DELAY_PRECISION_SHIFT = 20
    MEMCG_DELAY_SCALING_SHIFT = 14
    SWAP_CLUSTER_MAX = 32               # §2.6
    DEF_PRIORITY = 12
    SHRINK_BATCH = 128
    DEFAULT_SEEKS = 2
    MAX_NODES = 8
    MAX_MEMCGS = 64
    MAX_CPUS = 256
    ROOT_MEMCG = 0
    NUMA_NO_NODE = -1
    SLOWPATH_MAX_LOOPS = 64             # simulator guard, see docs/model.md "livelock"

# ---- gfp: v4.2 bit values (docs/kernel.md §1.1) ------------------------------------------
cdef enum:
    __GFP_DMA = 0x01
    __GFP_HIGHMEM = 0x02
    __GFP_DMA32 = 0x04
    __GFP_MOVABLE = 0x08
    __GFP_WAIT = 0x10
    __GFP_HIGH = 0x20
    __GFP_IO = 0x40
    __GFP_FS = 0x80
    __GFP_COLD = 0x100
    __GFP_NOWARN = 0x200
    __GFP_REPEAT = 0x400
    __GFP_NOFAIL = 0x800
    __GFP_NORETRY = 0x1000
    __GFP_MEMALLOC = 0x2000
    __GFP_COMP = 0x4000
    __GFP_ZERO = 0x8000
    __GFP_NOMEMALLOC = 0x10000
    __GFP_HARDWALL = 0x20000
    __GFP_THISNODE = 0x40000
    __GFP_RECLAIMABLE = 0x80000
    __GFP_NOACCOUNT = 0x100000
    __GFP_NOTRACK = 0x200000
    __GFP_NO_KSWAPD = 0x400000
    __GFP_OTHER_NODE = 0x800000
    __GFP_WRITE = 0x1000000
    # 4.5 (a9bb7e620efd): the opt-in that replaced __GFP_NOACCOUNT, which took its value
    # 0x100000; the model keeps both, so the opt-in gets a bit of its own above the 4.2 ones
    __GFP_ACCOUNT = 0x2000000
    GFP_ATOMIC = 0x20
    GFP_NOWAIT = 0
    GFP_NOIO = 0x10
    GFP_NOFS = 0x50
    GFP_KERNEL = 0xd0
    GFP_USER = 0xd0 | 0x20000
    GFP_HIGHUSER_MOVABLE = 0xd0 | 0x20000 | 0x02 | 0x08

# gfp classes for per-class metrics (core/metrics.py GFP_CLASSES order)
cdef enum:
    GC_KERNEL = 0
    GC_NOFS = 1
    GC_NOWAIT = 2
    GC_ATOMIC = 3
    GC_NOFAIL = 4
    NR_GFP_CLASSES = 5

# ---- buddy: alloc flags (mm/internal.h, 4.2 values) ------------------------------------
cdef enum:
    ALLOC_WMARK_MIN = 0
    ALLOC_WMARK_LOW = 1
    ALLOC_WMARK_HIGH = 2
    ALLOC_NO_WATERMARKS = 0x04
    ALLOC_WMARK_MASK = 0x03
    ALLOC_HARDER = 0x10
    ALLOC_HIGH = 0x20
    ALLOC_CPUSET = 0x40
    ALLOC_FAIR = 0x100

# page flags (one byte per page)
cdef enum:
    PG_buddy = 0x01          # head of a free block on free_area[pg_order]
    PG_lru_file = 0x02
    PG_lru_anon = 0x04
    PG_slab = 0x08           # head page of a slab
    PG_kmem = 0x10           # head page of an alloc_kmem_pages block
    PG_head = 0x20           # head of an allocated block of order pg_order
    PG_acct_miss = 0x40      # allocated for a memcg task but left uncharged (bypass)
    PG_isolated = 0x80       # isolated by compaction

cdef struct list_t:          # doubly linked list of int32 ids (pfn, slab id, object id)
    int32_t head
    int32_t tail
    int64_t nr

cdef struct zone_t:          # one zone (NORMAL) per node
    int32_t node
    int32_t start_pfn
    int32_t managed
    int64_t nr_free
    int64_t wmark[3]         # WMARK_MIN, WMARK_LOW, WMARK_HIGH (§5.2)
    list_t free_area[11]
    int64_t nr_file
    int64_t nr_anon
    int64_t nr_slab
    int64_t nr_kmem
    int32_t compact_cursor   # next block the compaction model looks at

cdef struct page_counter_t:  # mm/page_counter.c (§2.1)
    int64_t count
    int64_t limit
    int64_t watermark
    int64_t failcnt

cdef enum:
    MEMCG_LOW = 0
    MEMCG_HIGH = 1
    MEMCG_MAX = 2
    MEMCG_OOM = 3
    MEMCG_OOM_KILL = 4
    NR_MEMCG_EVENTS = 5

cdef enum:                   # memory.stat, in pages
    MS_ANON = 0
    MS_FILE = 1
    MS_KERNEL = 2            # alloc_kmem_pages / kmalloc_large
    MS_SLAB_RECLAIMABLE = 3
    MS_SLAB_UNRECLAIMABLE = 4
    MS_SWAP = 5
    NR_MEMCG_STAT = 6

cdef enum:
    LRU_FILE = 0
    LRU_ANON = 1

cdef struct memcg_t:
    int32_t parent
    int32_t first_child
    int32_t next_sibling
    uint8_t online
    page_counter_t memory
    int64_t high
    int64_t low
    int64_t events[5]
    int64_t stat[6]
    list_t lru[8][2]         # per node: file, anon (one list each; no active/inactive split)
    list_t dentries          # memcg-aware list_lru of unused dentries (object ids)
    int32_t reclaim_node     # round-robin start node (mem_cgroup_select_victim_node)
    int64_t last_ns          # overshoot integral bookkeeping
    double over_high_page_ns
    int64_t peak_over_high
    int64_t peak_over_max
    int64_t slab_bytes[2]    # per-object charging (5.9+): charged slab object bytes,
                             # [0] reclaimable, [1] unreclaimable (memory.stat slab_*)
    int64_t objcg_pages      # pages charged through obj_cgroup_charge_pages, not yet uncharged
    int64_t nr_charged_bytes # objcg->nr_charged_bytes: sub-page bytes of a drained obj stock

cdef struct task_t:
    int32_t memcg
    int32_t cpu
    int32_t node             # numa_mem_id() of the task's CPU
    uint8_t alive
    uint8_t in_kernel
    uint8_t may_oom          # set only around user page faults (§2.3 step 16)
    uint8_t lock_held        # a lock of the calling kernel code (Task.lock, mix locked_share)
    uint8_t mmap_sem         # mmap_sem held for read by the user page fault handler (4.x
                             # do_page_fault; mmap_lock or the per-VMA lock in 6.x)
    uint8_t dying            # fatal signal pending
    uint8_t memdie           # TIF_MEMDIE: OOM victim
    uint8_t killed
    uint8_t notify_resume
    uint8_t in_syscall       # a syscall entry is open (user page faults are not syscalls)
    int32_t memcg_oom        # memcg recorded by mem_cgroup_oom(), -1 if none
    int64_t nr_pages_over_high
    int64_t syscall_start_ns # virtual time of the open syscall's entry
    int64_t sleep_ns         # memory.high throttle sleeps (5.4+), total: not on the machine's
                             # clock, added to the sleeping task's request/syscall latency
    int64_t syscall_sleep_ns # ... of them, during the open syscall
    int64_t rss              # anon pages
    list_t objs              # objects and page blocks it owns

cdef enum:                   # obj_t.kind
    OBJ_FREE = 0
    OBJ_SLAB = 1             # kmalloc object
    OBJ_PAGES = 2            # alloc_kmem_pages / kmalloc_large block
    OBJ_DENTRY = 3           # dentry (+ its inode in .aux), owned by the dcache
    OBJ_INODE = 4

cdef struct obj_t:
    int32_t slab             # slab id for slab objects, -1 for page blocks
    int32_t pfn              # head pfn of the page block (page objects)
    int32_t owner            # task id, -1 when owned by the dcache
    int32_t aux              # dentry -> inode object id
    int32_t size
    int8_t kind
    int8_t order
    uint8_t lazy             # put in a root cache while the memcg clone was being created
    int8_t gclass
    uint16_t objcg           # memcg the object's bytes are charged to (5.9+ obj_cgroup), 0: none

cdef enum:                   # slab_t.where
    SL_NONE = 0              # full (SLUB does not track full slabs)
    SL_CPU = 1               # a CPU's active slab (SLUB)
    SL_PARTIAL = 2
    SL_FREE = 3              # SLAB's slabs_free list

cdef struct slab_t:
    int32_t pfn
    int32_t cache
    int32_t inuse
    int32_t objects
    int8_t order
    int8_t node
    int8_t where
    int16_t cpu

cdef enum:                   # kmem_cache_t.state (per-memcg clones, §2.4)
    CACHE_NONE = 0
    CACHE_PENDING = 1
    CACHE_READY = 2

cdef struct kmem_cache_t:
    int32_t size
    int32_t root             # index of the root cache (itself for a root cache)
    int32_t memcg
    int8_t oo_order          # s->oo
    int8_t min_order         # s->min
    int32_t oo_objects
    int32_t min_objects
    int32_t min_partial
    uint8_t reclaimable      # SLAB_RECLAIM_ACCOUNT
    uint8_t state
    int64_t ready_ns
    int32_t *cpu_slab        # SLUB: per-CPU active slab id, -1
    list_t partial[8]        # per node (SLUB partial; SLAB slabs_partial)
    list_t slabs_free[8]     # SLAB only
    int64_t free_objects[8]  # SLAB only
    int32_t *ac              # SLAB per-CPU array_cache entries (slab id of each object)
    int32_t *ac_avail
    int32_t ac_limit
    int32_t batchcount
    int64_t free_limit       # SLAB per-node free_limit
    int32_t *alien           # SLAB, more than one node: n->alien of each node, one array of
                             # alien_limit slab ids per other node: [(node * nr_nodes + page_node) * limit]
    int32_t *alien_avail     # ... entries in each, [node * nr_nodes + page_node]
    int32_t alien_limit      # 12 (alloc_alien_cache), 1 for caches whose limit is 1
    int32_t *shared          # SLAB n->shared of each node: [node * shared_limit], NULL if none
    int32_t *shared_avail    # ... entries in each node's
    int32_t shared_limit     # 8 * batchcount (enable_cpucache: objects <= PAGE_SIZE, > 1 CPU)

cdef enum:                   # what done_restock does about memory.high
    HIGH_SKIP = 0            # nothing (4.2/4.3 for !__GFP_WAIT charges)
    HIGH_SYNC = 1            # reclaim now, in the charging context, with the caller's gfp
    HIGH_PUNT = 2            # record the overage; reclaim at return-to-user (4.4)

# ---- designs: every difference between the kmem charging designs (docs/kernel.md §8.3) ---
cdef struct policy_t:
    uint8_t slab_charge_caller_gfp   # slab pages are charged with the caller's gfp; the
                                     # optimistic masks apply to the buddy allocation only
    uint8_t kmem_charge_after_alloc  # 4.4: allocate the page, then charge with the same gfp
    uint8_t high_wait                # memory.high after a charge with __GFP_WAIT: HIGH_*
    uint8_t high_nowait              # ... and after one without it
    uint8_t kmem_nofail_uncharged    # __memcg_kmem_bypass: NOFAIL kmem left uncharged
    uint8_t kmem_dying_uncharged     # __memcg_kmem_bypass: fatal signal -> uncharged
    uint8_t bypass_forces            # 4.4 force: label instead of -EINTR bypass
    uint8_t force_gfp_high           # __GFP_HIGH charges forced past max at nomem
    # the modern kernel's mechanisms (docs/kernel.md §6.2-§6.4, docs/model.md "v6.18")
    uint8_t charge_batch             # MEMCG_CHARGE_BATCH: 32, 64 from 6.1
    uint8_t reclaim_retries          # MEM_CGROUP_RECLAIM_RETRIES 5; MAX_RECLAIM_RETRIES 16 (5.9)
    uint8_t force_dying              # try_charge forces (4.4) / bypasses (4.2) a dying task's
                                     # charge; 5.16 stopped (a4ebf1b6ca1e)
    uint8_t force_max_event          # force: counts a max event if none was counted (6.x)
    uint8_t high_sync_over_batch     # 5.18: over-high handled at once in the charge when the
                                     # task's punted overage exceeds one charge batch
    uint8_t high_throttle            # 5.4: calculate_high_delay() sleep after high reclaim
    uint8_t high_skip_dying          # 6.8: a dying task skips memory.high reclaim
    uint8_t high_write_loop          # memory_high_write: drain, reclaim until <= high (6.x)
    uint8_t obj_charge               # 5.9: slab objects charged in bytes (obj_cgroup) with
                                     # the caller's gfp after the allocation; slab pages and
                                     # caches shared, never charged
    uint8_t slub_high_no_kswapd      # 6.x allocate_slab: the high-order try drops all of
                                     # __GFP_RECLAIM (no kswapd wake-up either)
    uint8_t slub_only                # SLAB removed (6.8): the row refuses allocator slab
    uint8_t charge_only_accounted    # 4.5+: only __GFP_ACCOUNT / SLAB_ACCOUNT kmem is charged
                                     # (4.2-4.4: all of a memcg task's kmem but __GFP_NOACCOUNT)

cdef enum:                   # where reclaim ran (core/metrics.py RECLAIM_PLACES)
    RP_CHARGE = 0
    RP_LOCKED = 1
    RP_RETURN_TO_USER = 2
    RP_KSWAPD = 3
    RP_DIRECT = 4
    NR_RECLAIM_PLACES = 5

cdef struct scan_control_t:  # mm/vmscan.c struct scan_control
    int64_t nr_to_reclaim
    int64_t nr_reclaimed
    int64_t nr_scanned
    uint32_t gfp_mask
    int32_t target_memcg     # ROOT_MEMCG for global reclaim
    int32_t priority
    uint8_t may_swap
    uint8_t may_thrash
    uint8_t global_reclaim

# latency histogram: log-linear buckets (16 sub-buckets per power of two)
cdef enum:
    LAT_SUB = 16
    LAT_BUCKETS = 64 * 16

# ---- virtual-time costs of operations, ns (docs/model.md "Costs") ----------------------
cdef enum:
    COST_BUDDY_ALLOC = 60
    COST_BUDDY_SPLIT = 15
    COST_BUDDY_FREE = 50
    COST_BUDDY_MERGE = 15
    COST_CHARGE = 30
    COST_STOCK = 8
    COST_SLAB_FAST = 15
    COST_SLAB_SLOW = 120
    COST_NEW_SLAB = 400
    COST_SCAN_PAGE = 60
    COST_RECLAIM_PAGE = 250
    COST_SHRINK_OBJ = 120
    COST_COMPACT_SCAN_PAGE = 8
    COST_MIGRATE_PAGE = 1500
    COST_PAGE_ZERO = 300
    COST_CONGESTION_WAIT = 1000
    COST_OOM_KILL = 50000
    COST_SYSCALL = 100
    COST_FAULT = 500
    CACHE_CREATE_DELAY_NS = 20000   # async memcg_create_kmem_cache work item

# ---- metric counters (names in core/metrics.py; assembled by metrics.pxi) --------------
cdef enum:
    M_REQUESTS = 0
    M_ENOMEM
    M_NOWAIT_FAIL
    M_NOWAIT_FALLBACK
    M_CHARGE_FORCED
    M_CHARGE_FORCED_PAGES
    M_CHARGE_BYPASSED_PAGES
    M_OVER_HIGH_SYSCALL_PEAK
    M_RECLAIM_ROUNDS
    M_RECLAIM_SCANNED
    M_RECLAIM_RECLAIMED
    M_RECLAIM_SLAB_OBJS
    M_SLAB_PAGES
    M_SLUB_HIGH_ATTEMPTS
    M_SLUB_FALLBACKS
    M_SLAB_WRONG_NODE
    M_SLAB_PROBE_FAIL
    M_SLAB_LAZY
    M_KSWAPD_WAKEUPS
    M_COMPACT_ATTEMPTS
    M_COMPACT_SUCCESS
    M_BUDDY_FAIL
    M_OOM_GLOBAL
    M_OOM_MEMCG
    M_KENTRIES                # syscall entries (kernel entries that can return ENOMEM)
    M_SLAB_WRONG_NODE_OBJS    # objects placed in a slab off the node asked for
    M_SLUB_NEW_SLAB_ATTEMPTS  # allocate_slab() calls
    M_HIGH_THROTTLES          # memory.high throttle sleeps (5.4+)
    M_HIGH_THROTTLE_NS        # ... their total length
    M_HIGH_SYNC               # 5.18 synchronous memory.high enforcements inside a charge
    M_RR_MMAP_SEM             # reclaim rounds with mmap_sem held (in a user page fault)
    M_RNS_MMAP_SEM            # ... their time
    M_SLAB_CHARGE_RECLAIM     # reclaim rounds in the charge of a new slab's pages (RP_CHARGE)
    M_RR_BASE                 # + RP_*: reclaim rounds by place
    M_RNS_BASE = M_RR_BASE + 5  # + RP_*: reclaim ns by place
    M_ATTEMPTS_BASE = M_RNS_BASE + 5   # + GC_*
    M_FAILURES_BASE = M_ATTEMPTS_BASE + 5
    NR_M = M_FAILURES_BASE + 5

cdef struct mm_t:            # the machine
    int32_t nr_nodes
    int32_t nr_cpus
    int32_t nr_pages
    int32_t node_span        # pfns per node (aligned to a MAX_ORDER block)
    uint8_t allocator        # 0 SLUB, 1 SLAB
    uint8_t swap
    int32_t slub_max_order
    int32_t slab_max_order
    policy_t policy
    int64_t now_ns
    int64_t kswapd_ns
    zone_t zones[8]
    int32_t *pg_next
    int32_t *pg_prev
    int32_t *pg_private      # slab id (slab pages), owner task (anon pages)
    int8_t *pg_order
    uint8_t *pg_flags
    uint16_t *pg_memcg       # memcg charged for the page (0: root / uncharged)
    memcg_t memcgs[64]
    int32_t nr_memcgs
    int32_t stock_memcg[256] # per-CPU memcg_stock_pcp (§2.2)
    int64_t stock_nr[256]
    int32_t obj_stock_memcg[256]  # per-CPU obj_stock_pcp cached_objcg (5.9+, §3.4), -1
    int64_t obj_stock_bytes[256]  # ... its pre-charged bytes
    task_t *tasks
    int32_t nr_tasks
    int32_t cap_tasks
    obj_t *objs
    int32_t *obj_next
    int32_t *obj_prev
    int32_t cap_objs
    int32_t obj_free
    slab_t *slabs
    int32_t *slab_next
    int32_t *slab_prev
    int32_t cap_slabs
    int32_t slab_free
    kmem_cache_t *caches
    int32_t nr_caches
    int32_t cap_caches
    int32_t nr_root_caches
    int32_t *memcg_cache     # [root cache * MAX_MEMCGS + memcg] -> clone, -1
    int32_t kmalloc_caches[24]
    int32_t kmalloc_sizes[24]
    int32_t nr_kmalloc
    int8_t kmalloc_first[32]  # fls(size - 1) -> first class to look at
    int32_t dentry_cache
    int32_t inode_cache
    int32_t current          # task running the current request (-1: none)
    int32_t slab_want_node   # node the current slab allocation asked for
    int64_t reclaimed_slab   # current->reclaim_state->reclaimed_slab
    int64_t acct_miss_pages  # outstanding user pages charged to the root by a 4.2 bypass
    int64_t kmem_miss_pages  # outstanding kmem pages left uncharged by __memcg_kmem_bypass
    int64_t lazy_bytes       # outstanding object bytes in root caches for memcg tasks
    int64_t stats[64]
    int64_t lat[5][1024]     # per-request latency per gfp class
    int64_t syscall_lat[1024]  # per syscall: entry until return-to-user work is done
    int32_t fatal            # non-zero: the simulation cannot continue (see core._mm.FATAL)

cdef enum:                   # mm_t.fatal
    FATAL_NONE = 0
    FATAL_NOFAIL_OOM = 1     # a __GFP_NOFAIL request found no page even in the reserves
    FATAL_NOMEM = 2          # the simulator itself could not grow a table
