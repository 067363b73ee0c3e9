# The prototypes of the simulator's C functions, layer by layer (what the kernel's
# include/linux/*.h declare for mm/*.c), and the workload generator's types. Cython reads
# this file with _mm.pyx, so a layer may call any other whatever the order in which _mm.pyx
# includes the .pxi files; each definition must match its prototype here.
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
    int32_t task_life[256]   # how many times the task slot was respawned by churn
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
cdef bint gfpflags_allow_blocking(uint32_t gfp_mask) noexcept nogil


# ---- designs.pxi: the policy table
cdef policy_t policy_for(str design) except *


# ---- buddy.pxi: the page allocator (mm/page_alloc.c)
cdef zone_t *page_zone(mm_t *mm, int32_t pfn) noexcept nogil
cdef int page_to_nid(mm_t *mm, int32_t pfn) noexcept nogil
cdef void add_to_free_area(mm_t *mm, zone_t *z, int32_t pfn, int order, bint tail) noexcept nogil
cdef void del_from_free_area(mm_t *mm, zone_t *z, int32_t pfn) noexcept nogil
cdef bint page_is_buddy(mm_t *mm, zone_t *z, int64_t idx, int order) noexcept nogil
cdef void __free_one_page(mm_t *mm, zone_t *z, int32_t pfn, int order) noexcept nogil
cdef int32_t __rmqueue_smallest(mm_t *mm, zone_t *z, int order) noexcept nogil
cdef void __free_pages(mm_t *mm, int32_t pfn, int order) noexcept nogil
cdef bint __zone_watermark_ok(int64_t free_pages, const list_t *free_area, int order,
                                     int64_t mark, int alloc_flags) noexcept nogil
cdef bint zone_watermark_ok(zone_t *z, int order, int64_t mark, int alloc_flags) noexcept nogil
cdef int zonelist(mm_t *mm, int preferred, uint32_t gfp_mask, int *nodes) noexcept nogil
cdef int32_t get_page_from_freelist(mm_t *mm, uint32_t gfp_mask, int order, int alloc_flags,
                                    int preferred) noexcept nogil
cdef int gfp_to_alloc_flags(uint32_t gfp_mask, task_t *t) noexcept nogil
cdef void wake_all_kswapds(mm_t *mm, int order, int preferred, uint32_t gfp_mask) noexcept nogil
cdef int32_t __alloc_pages_may_oom(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                   int preferred, bint *did_some_progress) noexcept nogil
cdef int32_t __alloc_pages_slowpath(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                    int preferred) noexcept nogil
cdef int32_t __alloc_pages_nodemask(mm_t *mm, task_t *t, uint32_t gfp_mask, int order,
                                    int nid) noexcept nogil


# ---- compaction.pxi: memory compaction (mm/compaction.c)
cdef int64_t block_movable_pages(mm_t *mm, int32_t base, int order, int64_t *free_in_block) noexcept nogil
cdef void migrate_lru_page(mm_t *mm, zone_t *z, int32_t old, int32_t new) noexcept nogil
cdef int32_t compact_block(mm_t *mm, zone_t *z, int32_t base, int order) noexcept nogil
cdef int32_t compact_zone_order(mm_t *mm, zone_t *z, int order, int budget) noexcept nogil
cdef int32_t try_to_compact_pages(mm_t *mm, uint32_t gfp_mask, int order, int preferred,
                                  bint sync) noexcept nogil


# ---- vmscan.pxi: reclaim (mm/vmscan.c)
cdef void reclaim_page(mm_t *mm, int32_t pfn, int memcg_id, int node, int lru) noexcept nogil
cdef void shrink_lruvec(mm_t *mm, scan_control_t *sc, int memcg_id, int node) noexcept nogil
cdef int64_t prune_dcache(mm_t *mm, int memcg_id, int64_t nr) noexcept nogil
cdef void shrink_slab_memcg(mm_t *mm, scan_control_t *sc, int memcg_id, int64_t nr_scanned,
                            int64_t nr_eligible) noexcept nogil
cdef bint mem_cgroup_low(mm_t *mm, int root, int memcg_id) noexcept nogil
cdef int next_memcg(mm_t *mm, int root, int cur) noexcept nogil
cdef bint shrink_node_memcgs(mm_t *mm, scan_control_t *sc, int node, bint first_node,
                             bint *skipped_low) noexcept nogil
cdef int64_t do_try_to_free_pages(mm_t *mm, task_t *t, int target_memcg, int64_t nr_to_reclaim,
                                  uint32_t gfp_mask, bint may_swap, int place, int start_node,
                                  bint this_node_only) noexcept nogil
cdef int64_t try_to_free_mem_cgroup_pages(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages,
                                          uint32_t gfp_mask, bint may_swap, int place) noexcept nogil
cdef int64_t direct_reclaim(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int preferred) noexcept nogil
cdef void kswapd_balance_node(mm_t *mm, int node) noexcept nogil


# ---- oom.pxi: the OOM killer (mm/oom_kill.c)
cdef int select_bad_process(mm_t *mm, int memcg_root) noexcept nogil
cdef void oom_kill_process(mm_t *mm, int victim, int memcg_id) noexcept nogil
cdef bint out_of_memory(mm_t *mm, task_t *t) noexcept nogil
cdef bint mem_cgroup_oom_synchronize(mm_t *mm, task_t *t) noexcept nogil


# ---- memcg.pxi: memory cgroups: charging, stocks, memory.high (mm/memcontrol.c)
cdef bint mem_cgroup_is_descendant(mm_t *mm, int memcg_id, int root) noexcept nogil
cdef void memcg_usage_add(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef int page_counter_try_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void page_counter_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void page_counter_uncharge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef int64_t mem_cgroup_margin(mm_t *mm, int memcg_id) noexcept nogil
cdef bint consume_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void drain_stock(mm_t *mm, int cpu) noexcept nogil
cdef void refill_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void drain_all_stock(mm_t *mm, int root) noexcept nogil
cdef void force_charge(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void mem_cgroup_high(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                          int64_t nr_pages, int64_t batch) noexcept nogil
cdef int try_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil
cdef int nomem_or_force(mm_t *mm, int memcg_id, int mem_over_limit, uint32_t gfp_mask,
                        int64_t nr_pages, bint raised_max) noexcept nogil
cdef int charge_nomem(mm_t *mm, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil
cdef int bypass_or_force(mm_t *mm, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void mem_cgroup_handle_over_high(mm_t *mm, task_t *t) noexcept nogil
cdef void mem_cgroup_high_sync(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil
cdef int64_t reclaim_high(mm_t *mm, task_t *t, int memcg_id, int64_t nr_pages,
                          uint32_t gfp_mask, int place) noexcept nogil
cdef int64_t mem_find_max_overage(mm_t *mm, int memcg_id) noexcept nogil
cdef int64_t calculate_high_delay(int64_t charge_batch, int64_t nr_pages, int64_t max_overage) noexcept nogil
cdef void __mem_cgroup_handle_over_high(mm_t *mm, task_t *t, uint32_t gfp_mask, int place) noexcept nogil
cdef int memcg_charge_kmem(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask, int64_t nr_pages) noexcept nogil
cdef int mem_cgroup_try_charge_user(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil
cdef bint memcg_kmem_bypass(mm_t *mm, task_t *t, uint32_t gfp_mask) noexcept nogil
cdef int obj_cgroup_charge_pages(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                                 int64_t nr_pages) noexcept nogil
cdef void obj_cgroup_uncharge_pages(mm_t *mm, int cpu, int memcg_id, int64_t nr_pages) noexcept nogil
cdef void drain_obj_stock(mm_t *mm, int cpu) noexcept nogil
cdef bint consume_obj_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_bytes) noexcept nogil
cdef void refill_obj_stock(mm_t *mm, int cpu, int memcg_id, int64_t nr_bytes,
                           bint allow_uncharge) noexcept nogil
cdef int obj_cgroup_charge(mm_t *mm, task_t *t, int memcg_id, uint32_t gfp_mask,
                           int64_t size) noexcept nogil
cdef void obj_cgroup_uncharge(mm_t *mm, int cpu, int memcg_id, int64_t size) noexcept nogil


# ---- slab_common.pxi: objects, caches, kmalloc, slab pages and their charging (mm/slab_common.c)
cdef int grow_objs(mm_t *mm) noexcept nogil
cdef int32_t obj_new(mm_t *mm, int kind, int owner) noexcept nogil
cdef void obj_release(mm_t *mm, int32_t oid) noexcept nogil
cdef int grow_slabs(mm_t *mm) noexcept nogil
cdef int fls(int64_t x) noexcept nogil
cdef int get_order(int64_t size) noexcept nogil
cdef int slub_slab_order(int64_t size, int64_t min_objects, int max_order, int fract_leftover) noexcept nogil
cdef int slub_calculate_order(int64_t size, int nr_cpus, int slub_max_order) noexcept nogil
cdef void slab_calculate_order(int64_t size, int slab_max_order, bint reclaimable,
                               int *order_out, int *num_out) noexcept nogil
cdef int kmalloc_index(mm_t *mm, int64_t size) noexcept nogil
cdef int32_t kmem_cache_create(mm_t *mm, int64_t size, bint reclaimable, int root, int memcg_id) noexcept nogil
cdef int32_t memcg_kmem_get_cache(mm_t *mm, task_t *t, int32_t root, uint32_t gfp_mask,
                                  bint *lazy) noexcept nogil
cdef int32_t alloc_slab_page(mm_t *mm, task_t *t, int32_t cid, uint32_t page_gfp,
                             uint32_t charge_gfp, int node, int order) noexcept nogil
cdef int32_t register_slab(mm_t *mm, int32_t cid, int32_t pfn, int order) noexcept nogil
cdef void discard_slab(mm_t *mm, int32_t sid) noexcept nogil
cdef int32_t kmem_cache_alloc_node(mm_t *mm, task_t *t, int32_t root, uint32_t gfp_mask,
                                   int node, int owner) noexcept nogil
cdef int64_t obj_full_size(kmem_cache_t *s) noexcept nogil
cdef int obj_cpu(mm_t *mm) noexcept nogil
cdef bint memcg_slab_post_alloc_hook(mm_t *mm, task_t *t, int32_t oid, uint32_t gfp_mask) noexcept nogil
cdef void memcg_slab_free_hook(mm_t *mm, int32_t oid) noexcept nogil
cdef int mem_cgroup_from_obj(mm_t *mm, int32_t oid) noexcept nogil
cdef void kmem_cache_free(mm_t *mm, int32_t oid) noexcept nogil
cdef int32_t alloc_kmem_pages(mm_t *mm, task_t *t, uint32_t gfp_mask, int order, int node,
                              int owner) noexcept nogil
cdef void free_kmem_pages(mm_t *mm, int32_t oid) noexcept nogil
cdef int32_t do_kmalloc(mm_t *mm, task_t *t, int64_t size, uint32_t gfp_mask, int node,
                        int owner) noexcept nogil
cdef void do_kfree(mm_t *mm, int32_t oid) noexcept nogil
cdef bint d_alloc(mm_t *mm, task_t *t) noexcept nogil
cdef void free_dentry(mm_t *mm, int32_t d) noexcept nogil


# ---- slub.pxi: SLUB (mm/slub.c)
cdef void add_partial(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil
cdef void remove_partial(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil
cdef void deactivate_slab(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil
cdef int32_t get_partial(mm_t *mm, kmem_cache_t *s, int node, int local_node) noexcept nogil
cdef int32_t allocate_slab(mm_t *mm, task_t *t, int32_t cid, uint32_t gfp_mask, int node) noexcept nogil
cdef int32_t slub_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t gfp_mask, int node) noexcept nogil
cdef void slub_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil


# ---- slab.pxi: SLAB (mm/slab.c)
cdef uint32_t gfp_exact_node(uint32_t flags) noexcept nogil
cdef void slab_place(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil
cdef int32_t take_obj_from_node(mm_t *mm, kmem_cache_t *s, int node) noexcept nogil
cdef int32_t kmem_getpages(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid,
                           bint exact) noexcept nogil
cdef bint cache_grow(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid,
                     int32_t pfn, bint exact) noexcept nogil
cdef int32_t cache_alloc_refill(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil
cdef int32_t ____cache_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil
cdef int32_t ____cache_alloc_node(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid) noexcept nogil
cdef int32_t fallback_alloc(mm_t *mm, task_t *t, int32_t cid, uint32_t flags) noexcept nogil
cdef int32_t slab_alloc_node(mm_t *mm, task_t *t, int32_t cid, uint32_t flags, int nodeid) noexcept nogil
cdef void free_block(mm_t *mm, kmem_cache_t *s, int32_t sid) noexcept nogil
cdef void slab_free(mm_t *mm, int32_t cid, int32_t sid) noexcept nogil


# ---- task.pxi: a process: kernel entries, faults, page cache, exit, the request entry point
cdef int grow_tasks(mm_t *mm) noexcept nogil
cdef int task_new(mm_t *mm, int memcg_id, int cpu) noexcept nogil
cdef void syscall_enter(mm_t *mm, int tid) noexcept nogil
cdef void syscall_done(mm_t *mm, task_t *t) noexcept nogil
cdef void setup_background(mm_t *mm, int root_tid, int64_t file_pages, double fragment) noexcept nogil
cdef void record_syscall_overage(mm_t *mm, task_t *t) noexcept nogil
cdef void return_to_user(mm_t *mm, int tid) noexcept nogil
cdef void lru_add(mm_t *mm, int32_t pfn, int memcg_id, int lru, int owner) noexcept nogil
cdef int charge_user_page(mm_t *mm, task_t *t, int32_t pfn) noexcept nogil
cdef int64_t read_file(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil
cdef int64_t fault_anon(mm_t *mm, int tid, int64_t nr_pages) noexcept nogil
cdef void free_task_anon(mm_t *mm, int tid) noexcept nogil
cdef void task_exit(mm_t *mm, int tid) noexcept nogil
cdef int lat_bucket(int64_t v) noexcept nogil
cdef int64_t do_request(mm_t *mm, int tid, int kind, int64_t arg, uint32_t gfp_mask, int node) noexcept nogil
cdef bint request_failed(int kind, int64_t arg, int64_t result) noexcept nogil
cdef int64_t task_request(mm_t *mm, int tid, int kind, int64_t arg, uint32_t gfp_mask, int node,
                          bint fallback) noexcept nogil


# ---- metrics.pxi: the metrics of a run
cdef int64_t lat_percentile(const int64_t *hist, double q) noexcept nogil
cdef double ratio(int64_t num, int64_t den) noexcept nogil
cdef dict collect_metrics(mm_t *mm)


# ---- mm_init.pxi: the machine's set-up and tear-down
cdef mm_t *mm_create(int nodes, int mem_mib, int cpus, int allocator, policy_t policy,
                     int max_order, bint swap) except NULL
cdef void memcg_init(mm_t *mm, int memcg_id, int parent) noexcept nogil
cdef void mm_destroy(mm_t *mm) noexcept nogil


# ---- machine.pxi: the scripting API (Python face)
cdef uint32_t gfp_parse(spec) except? 0xffffffff


# ---- rng.pxi: the workload generator's random stream
cdef uint64_t rotl(uint64_t x, int k) noexcept nogil
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
cdef void gen_request(wl_gen_t *g, wl_event_t *ev) noexcept nogil
cdef bint grow_faults(wl_gen_t *g) noexcept nogil
cdef void gen_free(wl_gen_t *g) noexcept nogil
cdef bint gen_next(wl_gen_t *g, wl_event_t *ev) noexcept nogil
cdef void gen_init(wl_gen_t *g, dict s, uint64_t seed, list task_nodes) except *


# ---- wl_exec.pxi: the executor
cdef int wl_respawn(mm_t *mm, int tid) noexcept nogil
cdef int64_t wl_execute(mm_t *mm, wl_gen_t *g, int *tids, wl_trace_t **trace,
                        int64_t *trace_len) noexcept nogil


# ---- wl_api.pxi: the workload layer's Python face
cdef _write_trace(path, wl_trace_t *records, int64_t n)

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
