# The interface of each layer of the simulator: the C functions another .pxi file calls,
# layer by layer, as the kernel's include/linux/*.h declare what mm/*.c export (a function
# only its own file calls stays undeclared, like a `static` one), and the workload
# generator's types. Cython reads this file with _mm.pyx, so any layer may call any other
# whatever the order of the includes; a definition must match its prototype here.
# Cython exports what a .pxd declares (their addresses go into __pyx_capi__), which costs
# the C compiler its inlining of static functions called once: the hot ones of those say
# `inline` where they are defined (benchmarks/RESULTS.md, issue 13).
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t
from core.mm_types cimport *

# ---- the workload generator's types (wl_gen.pxi, wl_heap.pxi, wl_exec.pxi) ----------------
cdef enum:
    EV_END = 0
    EV_ENTER = 1             # syscall entry of `task`
    EV_REQ = 2               # a request (kind, arg, gfp, node, locked) with sequence `seq`
    EV_FREE = 3              # free the object made by request `seq`
    EV_EXIT = 4              # return to user of `task`
    EV_RESPAWN = 5           # `task` exits (its job is done) and a new task takes its place
    MAX_MIX = 16
    NODE_REMOTE = -2
    NODE_LOCAL = -3

cdef struct wl_req_t:        # one request kind of the GFP mix
    int kind
    double cum_weight
    uint32_t gfp_mask
    int64_t size_min
    int64_t size_max
    double log_min           # log(size_min), precomputed
    double log_span          # log(size_max) - log(size_min)
    int64_t arg              # order, count or pages
    int node                 # -1 none, NODE_REMOTE, NODE_LOCAL or a node

cdef struct wl_event_t:
    int type
    int task
    int32_t slot             # object slot of a request that will be freed (-1: never)
    int kind
    int node
    uint8_t locked
    uint32_t gfp_mask
    int64_t arg
    int64_t seq

cdef struct heap_item_t:   # key = expiry << 32 | (seq & 0xffffffff): one compare, ties by seq
    uint64_t key
    int32_t slot
    int32_t task
    int32_t life             # the task's life (g.task_life) that made the object

cdef struct wl_gen_t:
    uint64_t s[4]            # xoshiro256** state
    int nr_mix
    wl_req_t mix[16]
    double burst_p           # geometric: P(stop) per request = 1 / mean burst
    double locked_share
    double lifetime_mean
    double long_lived_share
    int nr_tasks
    int task_node[256]
    double churn_p           # P(a task exits after a kernel entry) = 1 / churn.mean_entries; 0: never
    int32_t task_life[256]   # how many times the task slot was replaced (churn, or an OOM
                             # kill: gen_task_replaced)
    int nr_nodes
    int64_t entries_left
    int64_t seq
    int cur_task
    int pending_faults       # fault requests of this entry, run after its return to user
    int faults_cap
    wl_event_t *faults       # ... grown as needed (grow_faults)
    uint8_t nomem            # a buffer could not grow: the stream stopped early
    int phase                # 0: start entry, 1: in syscall, 2: faults, 3: end
    heap_item_t *heap
    int64_t heap_len
    int64_t heap_cap
    uint64_t hash            # a 64-bit hash over the request stream
    int32_t *slot_oid        # slot -> object made by the request (filled in by the driver)
    int32_t nr_slots
    int32_t slot_free


cdef struct wl_trace_t:      # one traced request
    int64_t seq
    int64_t arg
    int64_t result
    int64_t latency_ns
    uint32_t gfp_mask
    int task
    int kind
    int node
    uint8_t locked




# ---- lists.pxi: doubly linked lists of int32 ids (include/linux/list.h)
cdef void list_init(list_t *l) noexcept nogil
cdef void list_add(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil
cdef void list_add_tail(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil
cdef void list_del(list_t *l, int32_t *nxt, int32_t *prv, int32_t x) noexcept nogil
cdef void list_replace(list_t *l, int32_t *nxt, int32_t *prv, int32_t old, int32_t new) noexcept nogil


# ---- gfp.pxi: gfp flag classes
cdef int gfp_class(uint32_t gfp_mask) noexcept nogil


# ---- designs.pxi: the policy table
cdef policy_t policy_for(str design) except *


# ---- buddy.pxi: the page allocator (mm/page_alloc.c)
cdef int page_to_nid(mm_t *mm, int32_t pfn) noexcept nogil
cdef void add_to_free_area(mm_t *mm, zone_t *z, int32_t pfn, int order, bint tail) noexcept nogil
cdef void del_from_free_area(mm_t *mm, zone_t *z, int32_t pfn) noexcept nogil
cdef int32_t __rmqueue_smallest(mm_t *mm, zone_t *z, int order) noexcept nogil
cdef void __free_pages(mm_t *mm, int32_t pfn, int order) noexcept nogil
cdef bint __zone_watermark_ok(int64_t free_pages, const list_t *free_area, int order,
                                     int64_t mark, int alloc_flags) noexcept nogil
cdef bint zone_watermark_ok(zone_t *z, int order, int64_t mark, int alloc_flags) noexcept nogil
cdef int zonelist(mm_t *mm, int preferred, uint32_t gfp_mask, int *nodes) noexcept nogil
cdef int32_t get_page_from_freelist(mm_t *mm, uint32_t gfp_mask, int order, int alloc_flags,
                                    int preferred) noexcept nogil
cdef int32_t __alloc_pages_nodemask(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                    int nid) noexcept nogil


# ---- compaction.pxi: memory compaction (mm/compaction.c)
cdef int32_t try_to_compact_pages(mm_t *mm, uint32_t gfp_mask, int order, int preferred,
                                  bint sync) noexcept nogil


# ---- vmscan.pxi: reclaim (mm/vmscan.c)
cdef int64_t try_to_free_mem_cgroup_pages(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages,
                                          uint32_t gfp_mask, bint may_swap, int place) noexcept nogil
cdef int64_t direct_reclaim(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int preferred) noexcept nogil
cdef void kswapd_balance_node(mm_t *mm, int node) noexcept nogil


# ---- oom.pxi: the OOM killer (mm/oom_kill.c)
cdef bint out_of_memory(mm_t *mm, task_t *t) noexcept nogil
cdef bint mem_cgroup_oom_synchronize(mm_t *mm, task_t *t) noexcept nogil
cdef bint mem_cgroup_oom(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages) noexcept nogil
cdef bint task_is_dying(task_t *t) noexcept nogil


# ---- memcg.pxi: memory cgroups: charging, stocks, memory.high (mm/memcontrol.c)
cdef bint mem_cgroup_is_descendant(mm_t *mm, int memcg_id, int root) noexcept nogil
cdef int64_t mem_cgroup_margin(mm_t *mm, int memcg_id) noexcept nogil
cdef void memcg_usage_add(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void page_counter_uncharge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void drain_all_stock(mm_t *mm, int root) noexcept nogil
cdef void mem_cgroup_handle_over_high(mm_t *mm, task_t *t) noexcept nogil
cdef int64_t calculate_high_delay(int64_t charge_batch, int64_t nr_pages, int64_t max_overage) noexcept nogil
cdef int memcg_charge_kmem(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil
cdef int mem_cgroup_try_charge_user(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil
cdef bint kmem_opted_out(mm_t *mm, uint32_t gfp_mask) noexcept nogil
cdef bint memcg_kmem_bypass(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil
cdef int obj_cgroup_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                           int64_t size) noexcept nogil
cdef void obj_cgroup_uncharge(mm_t *mm, int cpu, int memcg_id, int64_t size) noexcept nogil


# ---- slab_common.pxi: objects, caches, kmalloc, slab pages and their charging (mm/slab_common.c)
cdef int32_t obj_new(mm_t *mm, int kind, int owner) noexcept nogil
cdef int fls(int64_t x) noexcept nogil
cdef int get_order(int64_t size) noexcept nogil
cdef int slub_calculate_order(int64_t size, int nr_cpus, int slub_max_order) noexcept nogil
cdef void slab_calculate_order(int64_t size, int slab_max_order, bint reclaimable,
                               int *order_out, int *num_out) noexcept nogil
cdef int32_t kmem_cache_create(mm_t *mm, int64_t size, bint reclaimable, int root, int memcg_id) noexcept nogil
cdef int kmalloc_index(mm_t *mm, int64_t size) noexcept nogil
cdef int32_t memcg_kmem_get_cache(mm_t *mm, task_t *t, int32_t root, uint32_t gfp_mask,
                                  bint *lazy) noexcept nogil
cdef int32_t alloc_slab_page(mm_t *mm, task_t *t, int32_t cid, uint32_t page_gfp,
                             uint32_t charge_gfp, int node, int order) noexcept nogil
cdef int32_t register_slab(mm_t *mm, int32_t cid, int32_t pfn, int order) noexcept nogil
cdef void discard_slab(mm_t *mm, int32_t sid) noexcept nogil
cdef int32_t alloc_kmem_pages(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int node,
                              int owner) noexcept nogil
cdef int32_t do_kmalloc(mm_t *mm, task_t *t, int64_t size, uint32_t gfp_mask, int node,
                        int owner) noexcept nogil
cdef void do_kfree(mm_t *mm, int32_t oid) noexcept nogil
cdef bint d_alloc(mm_t *mm, task_t *t) noexcept nogil
cdef void free_dentry(mm_t *mm, int32_t d) noexcept nogil


# ---- slub.pxi: SLUB (mm/slub.c)
cdef int32_t slub_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t gfp_mask, int node) noexcept nogil
cdef void slub_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil


# ---- slab.pxi: SLAB (mm/slab.c)
cdef int32_t slab_alloc_node(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid) noexcept nogil
cdef void slab_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil


# ---- task.pxi: a process: kernel entries, faults, page cache, exit, the request entry point
cdef int task_new(mm_t *mm, int memcg_id, int cpu) noexcept nogil
cdef void syscall_enter(mm_t *mm, int tid) noexcept nogil
cdef void setup_background(mm_t *mm, int root_tid, int64_t file_pages, double fragment) noexcept nogil
cdef void return_to_user(mm_t *mm, int tid) noexcept nogil
cdef int64_t read_file(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil
cdef int64_t fault_anon(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil
cdef void free_task_anon(mm_t *mm, int tid) noexcept nogil
cdef void task_exit(mm_t *mm, int tid) noexcept nogil
cdef int64_t task_request(mm_t *mm, int tid, int kind, int64_t arg, uint32_t gfp_mask, int node,
                          bint fallback) noexcept nogil


# ---- metrics.pxi: the metrics of a run
cdef dict collect_metrics(mm_t *mm)


# ---- mm_init.pxi: the machine's set-up and tear-down
cdef mm_t *mm_create(int nodes, int mem_mib, int cpus, int allocator, policy_t policy,
                     int max_order, bint swap) except NULL
cdef void memcg_init(mm_t *mm, int memcg_id, int parent) noexcept nogil
cdef void mm_destroy(mm_t *mm) noexcept nogil


# ---- rng.pxi: the workload generator's random stream
cdef uint64_t rng_next(wl_gen_t *g) noexcept nogil
cdef double rng_double(wl_gen_t *g) noexcept nogil
cdef void rng_seed(wl_gen_t *g, uint64_t seed) noexcept nogil
cdef void hash_mix(wl_gen_t *g, uint64_t v) noexcept nogil


# ---- wl_heap.pxi: the generator's object slots and pending frees
cdef int32_t slot_get(wl_gen_t *g) noexcept nogil
cdef void heap_push(wl_gen_t *g, int64_t expiry, int64_t seq, int32_t slot, int32_t task,
                    int32_t life) noexcept nogil
cdef heap_item_t heap_pop(wl_gen_t *g) noexcept nogil


# ---- wl_gen.pxi: the workload generator
cdef void gen_free(wl_gen_t *g) noexcept nogil
cdef bint gen_next(wl_gen_t *g, wl_event_t *ev) noexcept nogil
cdef void gen_task_replaced(wl_gen_t *g, int task) noexcept nogil
cdef void gen_init(wl_gen_t *g, dict s, uint64_t seed, list task_nodes) except *


# ---- wl_exec.pxi: the executor
cdef int wl_respawn(mm_t *mm, int tid) noexcept nogil
cdef int64_t wl_execute(mm_t *mm, wl_gen_t *g, int *tids, wl_trace_t **trace,
                        int64_t *trace_len) noexcept nogil

# ---- the Python classes (hooks.pxi, machine.pxi, wl_api.pxi) --------------------------------
cdef class MachineHooks:
    cdef mm_t *mm
    cdef dict _paths
    cdef readonly str design
    cdef readonly str allocator
    cdef readonly int nodes
    cdef readonly int cpus
    cdef int _next_cpu
    cdef int _memcg(self, path) except -1
    cdef int _node(self, node) except -1
    cdef int32_t _object(self, handle) except -1
    cdef _check_fatal(self)


cdef class Machine(MachineHooks):
    cdef _high_write_loop(self, int memcg_id)
    cdef _resize_limit(self, int memcg_id, int64_t nr)
    cdef _proactive_reclaim(self, int memcg_id, int64_t nr)


cdef class Task:
    cdef Machine m
    cdef readonly int tid
    cdef task_t *_t(self)
    cdef _alive(self)


cdef class WorkloadEvents:
    cdef wl_gen_t g
    cdef readonly int nr_tasks
