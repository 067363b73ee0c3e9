"""Issue 10: every metric that compares the designs, planted in a small scenario.

Each test plants the effect a metric measures through `core.Machine` and shows that the
metric moves for the design that causes it and not for the others (or, where every design
behaves alike, that it counts exactly what was planted). The kernel fact each scenario
mirrors is cited by section of the kernel facts and by kernel source.
"""
import functools

import pytest

import core
from test_designs import slab_node_probes_near_max
from kernel_selftest import (
    MB, PAGE_SIZE, cg_read_long, fill_with_kmem, metrics_delta, warm_kmalloc,
)

DESIGNS = ("v4.3", "way1", "way2")
RATES = ("enomem_per_kentry", "nowait_failure_rate", "atomic_failure_rate")


def test_new_metric_names_are_in_core_metrics():
    for name in ("syscall_latency_p50_ns", "syscall_latency_p99_ns", "slab_wrong_node_objects",
                 "kmem_uncharged_pages", "kernel_entries", *RATES):
        assert name in core.METRICS
    assert "accounting_error_pages" not in core.METRICS   # renamed: kmem_uncharged_pages


def usage(m, cgroup="/a"):
    return cg_read_long(m, cgroup, "memory.current")


def at_max(design, cpus=1):
    """/a at exactly memory.max = 4M of unreclaimable kmem, stock drained (the state of
    the over-max tests of test_designs.py); kmalloc-96 and kmalloc-4096 clones warm."""
    m = core.Machine(nodes=1, mem_mib=128, cpus=cpus, allocator="slub", design=design)
    m.mkdir("/a")
    task = m.spawn("/a", cpu=0)
    warm_kmalloc(m, task, 96)
    warm_kmalloc(m, task, 4096)
    m.write("/a", "memory.max", "4M")
    fill_with_kmem(m, task, "/a")
    assert usage(m) == MB(4)
    return m, task


# ---- kmem_uncharged_pages ------------------------------------------------------------------

@functools.cache
def nofail_kmem_at_max(design):
    """At memory.max: one NOFAIL kmem page and 16 NOFAIL kmalloc-4096 objects, kept."""
    m, task = at_max(design)
    before = m.metrics()
    with task.syscall():
        assert task.alloc_pages(0, "GFP_KERNEL|__GFP_NOFAIL") is not None
        assert None not in [task.kmalloc(4096, "GFP_KERNEL|__GFP_NOFAIL") for _ in range(16)]
    return m, before, m.metrics()


def test_kmem_uncharged_pages_counts_nofail_kmem_v43_leaves_uncharged():
    # §2.4 (4.3 include/linux/memcontrol.h memcg_kmem_newpage_charge / memcg_kmem_get_cache:
    # "if (gfp & __GFP_NOFAIL) return true" - the allocation is not accounted): one page
    # plus 16 objects of 4 KiB escape memory.max, and only this metric sees them
    m, before, after = nofail_kmem_at_max("v4.3")
    assert after["kmem_uncharged_pages"] - before["kmem_uncharged_pages"] == 1 + 16
    assert usage(m) == MB(4)
    assert after["charge_forced_pages"] == before["charge_forced_pages"]


@pytest.mark.parametrize("design", ["way1", "way2"])
def test_kmem_uncharged_pages_stays_flat_where_nofail_is_force_charged(design):
    # §2.7 (4.4 mm/memcontrol.c try_charge "force:" label) and Davydov's way2: NOFAIL is
    # charged past memory.max - the cost shows in charge_forced_pages instead
    m, before, after = nofail_kmem_at_max(design)
    assert after["kmem_uncharged_pages"] == before["kmem_uncharged_pages"]
    assert after["charge_forced_pages"] - before["charge_forced_pages"] >= 1 + 1
    assert usage(m) > MB(4)


def test_kmem_uncharged_pages_returns_to_zero_when_the_memory_is_freed():
    m, task = at_max("v4.3")
    with task.syscall():
        handle = task.alloc_pages(2, "GFP_KERNEL|__GFP_NOFAIL")
    assert m.metrics()["kmem_uncharged_pages"] == 4
    task.kfree(handle)
    assert m.metrics()["kmem_uncharged_pages"] == 0


# ---- per-workload failure rates ------------------------------------------------------------

@functools.cache
def mixed_syscalls_at_max(design):
    """At memory.max, 4 syscalls: one GFP_KERNEL page (ENOMEM: kmem is unreclaimable,
    §2.3 steps 8-16, no OOM kill from a syscall), then 2 NOWAIT pages (fail at step 6,
    one failure per request) and 2 ATOMIC pages. User page faults are not syscalls."""
    m, task = at_max(design)
    before = m.metrics()
    with task.syscall():
        assert task.alloc_pages(0, "GFP_KERNEL") is None
    for gfp in ("GFP_NOWAIT", "GFP_ATOMIC"):
        with task.syscall():
            task.alloc_pages(0, gfp)
            task.alloc_pages(0, gfp)
    with task.syscall():
        assert task.kmalloc(96, "GFP_KERNEL") is not None     # a free object of the warm cache
    return m, metrics_delta(before, m.metrics()), m.metrics()


@pytest.mark.parametrize("design", DESIGNS)
def test_enomem_per_kentry_counts_enomem_per_syscall(design):
    # §2.3 step 16: a charge from a syscall gets -ENOMEM (user-visible), never an OOM kill
    m, delta, after = mixed_syscalls_at_max(design)
    assert delta["kernel_entries"] == 4
    assert delta["enomem_user_visible"] == 1
    assert after["enomem_per_kentry"] == after["enomem_user_visible"] / after["kernel_entries"]


@pytest.mark.parametrize("design", DESIGNS)
def test_nowait_failure_rate_is_failed_per_nowait_request(design):
    # §2.3 step 6: !__GFP_WAIT over the limit -> nomem, in every design
    m, delta, after = mixed_syscalls_at_max(design)
    assert delta["alloc_nowait_attempts"] == 2 and delta["nowait_failures"] == 2
    assert after["nowait_failure_rate"] == after["nowait_failures"] / after["alloc_nowait_attempts"]
    assert after["nowait_failure_rate"] > 0


def test_atomic_failure_rate_drops_only_where_gfp_high_is_forced():
    # way2 (Davydov, §3.3/§8.3): __GFP_HIGH charges are forced past max, so GFP_ATOMIC
    # never fails at the limit; v4.3 and way1 (4.4 try_charge: only NOFAIL/dying forced)
    # fail both ATOMIC requests
    deltas = {d: mixed_syscalls_at_max(d)[1] for d in DESIGNS}
    rates = {d: mixed_syscalls_at_max(d)[2]["atomic_failure_rate"] for d in DESIGNS}
    assert deltas["way2"]["alloc_atomic_failures"] == 0
    assert deltas["way2"]["charge_forced_pages"] == 2
    for design in ("v4.3", "way1"):
        assert deltas[design]["alloc_atomic_failures"] == 2
        assert deltas[design]["charge_forced_pages"] == 0
        assert rates[design] > rates["way2"]


def test_rates_are_zero_without_a_denominator():
    m = core.Machine(nodes=1, mem_mib=64, cpus=1, design="way1")
    metrics = m.metrics()
    assert all(metrics[name] == 0.0 for name in RATES)
    assert metrics["kernel_entries"] == 0


def test_page_faults_are_not_kernel_entries_of_enomem_per_kentry():
    m = core.Machine(nodes=1, mem_mib=64, cpus=1, design="way1")
    m.mkdir("/a")
    task = m.spawn("/a")
    task.fault_anon(4 * PAGE_SIZE)
    assert m.metrics()["kernel_entries"] == 0
    task.kmalloc(64)                              # a request outside syscall(): one entry
    assert m.metrics()["kernel_entries"] == 1


# ---- syscall latency: kernel entry until the return-to-user work is done ------------------

def bucket_floor(ns):
    """The lower bound of the latency histogram bucket holding ns (16 per power of two)."""
    if ns < 16:
        return ns
    shift = ns.bit_length() - 5
    return (ns >> shift) << shift


@functools.cache
def kmalloc_syscalls_over_high(design, high):
    """30M of page cache in /a, memory.high = `high` ("max": none), then 4 syscalls of 6M
    of GFP_KERNEL kmalloc-2048 each (the memory.high bug scenario of test_designs.py)."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design=design)
    m.mkdir("/a")
    task = m.spawn("/a", cpu=0)
    warm_kmalloc(m, task, 2048)
    m.write("/a", "memory.high", high)
    task.read_file(MB(30))
    before, spans = m.metrics(), []
    for _ in range(4):
        start = m.now_ns
        with task.syscall():
            for _ in range(MB(6) // 2048):
                assert task.kmalloc(2048, "GFP_KERNEL") is not None
        spans.append(m.now_ns - start)
    return m, metrics_delta(before, m.metrics()), spans


def test_syscall_latency_is_entry_to_end_of_return_to_user_work():
    m = core.Machine(nodes=1, mem_mib=64, cpus=1, design="way1")
    m.mkdir("/a")
    task = m.spawn("/a")
    start = m.now_ns
    with task.syscall():
        for _ in range(100):
            task.kmalloc(512)
    span = m.now_ns - start
    metrics = m.metrics()
    assert metrics["syscall_latency_p50_ns"] == metrics["syscall_latency_p99_ns"] == bucket_floor(span)
    task.fault_anon(PAGE_SIZE)                  # a user page fault is not a syscall
    assert m.metrics()["syscall_latency_p99_ns"] == bucket_floor(span)


def test_way1_punted_high_reclaim_is_in_syscall_latency_not_in_request_latency():
    # §2.7 (4.4 mm/memcontrol.c try_charge -> set_notify_resume; tracehook_notify_resume ->
    # mem_cgroup_handle_over_high): way1 reclaims memory.high on the way back to user mode,
    # after the last request of the syscall - only the syscall latency can see it
    m, with_high, spans = kmalloc_syscalls_over_high("way1", "32M")
    _, no_high, spans_no_high = kmalloc_syscalls_over_high("way1", "max")
    assert with_high["reclaim_ns_return_to_user"] > 0
    after, after_no_high = m.metrics(), kmalloc_syscalls_over_high("way1", "max")[0].metrics()
    assert after["syscall_latency_p99_ns"] == bucket_floor(max(spans))
    assert after["syscall_latency_p99_ns"] > 2 * after_no_high["syscall_latency_p99_ns"]
    # the per-request latency does not move: the punted work is outside every request
    assert after["latency_kernel_p99_ns"] <= 1.25 * after_no_high["latency_kernel_p99_ns"]


def test_way2_synchronous_high_reclaim_is_in_both_latencies():
    # 4.2/4.3 try_charge done_restock (§2.3 step 19): way2 reclaims memory.high at charge
    # time, inside the request and hence inside its syscall
    m, with_high, _ = kmalloc_syscalls_over_high("way2", "32M")
    assert with_high["reclaim_ns_charge"] > 0 and with_high["reclaim_ns_return_to_user"] == 0
    after, after_no_high = m.metrics(), kmalloc_syscalls_over_high("way2", "max")[0].metrics()
    assert after["syscall_latency_p99_ns"] > 2 * after_no_high["syscall_latency_p99_ns"]
    assert after["latency_kernel_p99_ns"] > after_no_high["latency_kernel_p99_ns"]


def test_v43_skips_high_so_its_syscall_latency_does_not_move():
    # §3.2 b (4.3 mm/slub.c allocate_slab drops __GFP_WAIT for oo > min; 4.3 try_charge
    # returns before the high check for !__GFP_WAIT): no high reclaim anywhere
    m, with_high, _ = kmalloc_syscalls_over_high("v4.3", "32M")
    assert with_high["reclaim_rounds"] == 0
    after, after_no_high = m.metrics(), kmalloc_syscalls_over_high("v4.3", "max")[0].metrics()
    assert after["syscall_latency_p99_ns"] == after_no_high["syscall_latency_p99_ns"]


def test_way1_and_way2_pay_comparable_high_reclaim_in_syscall_latency():
    # the point: the same work in a different place must cost the same here
    way1 = kmalloc_syscalls_over_high("way1", "32M")[0].metrics()["syscall_latency_p99_ns"]
    way2 = kmalloc_syscalls_over_high("way2", "32M")[0].metrics()["syscall_latency_p99_ns"]
    print("syscall latency p99 with memory.high=32M: way1", way1, "way2", way2)
    assert 0.5 < way1 / way2 < 2


# ---- slab_wrong_node_objects --------------------------------------------------------------

# test_designs.py's scenario: SLAB on 2 nodes, /a at memory.max = 32M full of page cache,
# then 2048 GFP_KERNEL kmalloc_node(1024) on the node the task does not run on
slab_kmalloc_node_near_max = slab_node_probes_near_max


@pytest.mark.parametrize("design", ["v4.3", "way1"])
def test_slab_wrong_node_objects_counts_every_object_off_the_node(design):
    # §4.2-§4.4 (4.3 mm/slab.c ____cache_alloc_node -> cache_grow(gfp_exact_node(flags))
    # charged with the probe's NOWAIT mask fails at max; fallback_alloc then takes objects
    # of the other node's slabs and grows on numa_mem_id())
    placed_wrong, delta = slab_kmalloc_node_near_max(design)
    assert placed_wrong > 0
    assert delta["slab_wrong_node_objects"] == placed_wrong
    # many objects per wrong-node slab page: the page count understates the harm
    assert delta["slab_wrong_node_objects"] > delta["slab_wrong_node_pages"]


def test_way2_charges_slab_probes_with_the_caller_gfp_and_places_nothing_off_node():
    # §4.6 (Davydov, "mm/slab: skip memcg reclaim only if in atomic context"): the charge
    # reclaims with GFP_KERNEL, only the page allocation is THISNODE|NOWAIT
    placed_wrong, delta = slab_kmalloc_node_near_max("way2")
    assert placed_wrong == 0
    assert delta["slab_wrong_node_objects"] == 0


@pytest.mark.parametrize("design", DESIGNS)
def test_slub_objects_on_a_fallback_node_count_in_every_design(design):
    # 4.3 mm/slub.c alloc_slab_page -> __alloc_pages_node(node) without __GFP_THISNODE:
    # the zonelist falls back to the other node when the asked-for one is exhausted
    m = core.Machine(nodes=2, mem_mib=256, cpus=2, allocator="slub", design=design)
    m.mkdir("/a")
    root = m.spawn("/", cpu=0)
    with root.syscall():
        while root.alloc_pages(0, "GFP_ATOMIC|__GFP_MEMALLOC|__GFP_THISNODE", node=1) is not None:
            pass
    task = m.spawn("/a", cpu=0)
    before = m.metrics()
    with task.syscall():
        handles = [task.kmalloc(512, "GFP_KERNEL", node=1) for _ in range(100)]
    delta = metrics_delta(before, m.metrics())
    assert all(m.node_of(h) == 0 for h in handles)
    assert delta["slab_wrong_node_objects"] == 100
    assert delta["slab_wrong_node_pages"] > 0


# ---- slub_order_fallbacks: ORDER_FALLBACK as 4.3 counts it ---------------------------------

@functools.cache
def nofail_kmalloc96_at_max(design):
    """At memory.max (unreclaimable kmem), 100 NOFAIL kmalloc-96: kmalloc-96 has
    oo == min == order 0 (1 CPU), 42 objects per slab, so new slabs are needed."""
    m, task = at_max(design)
    geometry = core.slub_geometry(96, 1)
    assert geometry["order"] == geometry["min_order"] == 0
    before = m.metrics()
    with task.syscall():
        assert None not in [task.kmalloc(96, "GFP_KERNEL|__GFP_NOFAIL") for _ in range(100)]
    return metrics_delta(before, m.metrics())


def test_order_fallback_counted_for_oo_equal_min_when_the_first_charge_fails():
    # way1 (4.4: try_charge sees the allocation's own gfp): the first try of 4.3
    # mm/slub.c allocate_slab() has __GFP_NORETRY and no __GFP_NOFAIL (§3.1 step 3), so
    # its charge fails at memory.max (§2.3 step 11); the second try with the caller's NOFAIL
    # is forced (4.4 try_charge force:) and the kernel counts stat(s, ORDER_FALLBACK) with
    # no oo > min test - although both tries are order 0
    delta = nofail_kmalloc96_at_max("way1")
    assert delta["slub_high_order_attempts"] == 0
    assert delta["slub_order_fallbacks"] >= 2
    assert delta["slub_new_slab_attempts"] == delta["slub_order_fallbacks"]


@pytest.mark.parametrize("design", ["v4.3", "way2"])
def test_order_fallback_not_counted_where_the_first_try_succeeds(design):
    # v4.3: §2.4 (4.3 memcg_kmem_get_cache: NOFAIL bypass) serves NOFAIL from the root
    # cache, uncharged; way2 (§3.3/§4.6): the charge sees the caller's NOFAIL and is forced
    # at the first try. Neither falls back
    delta = nofail_kmalloc96_at_max(design)
    assert delta["slub_new_slab_attempts"] >= 2
    assert delta["slub_order_fallbacks"] == 0
    if design == "v4.3":
        assert delta["kmem_uncharged_pages"] >= 1
    else:
        assert delta["charge_forced"] == delta["slub_new_slab_attempts"]


@pytest.mark.parametrize("design", DESIGNS)
def test_order_fallbacks_never_exceed_new_slab_attempts(design):
    for delta in (nofail_kmalloc96_at_max(design), mixed_syscalls_at_max(design)[1]):
        assert delta["slub_order_fallbacks"] <= delta["slub_new_slab_attempts"]
        assert delta["slub_high_order_attempts"] <= delta["slub_new_slab_attempts"]


def test_run_workload_syscall_latency_sees_way1_punt_like_way2_sync_reclaim():
    # the measurement, in C (core.run_workload, the sweep's path): under memory.high
    # pressure way1 and way2 do about the same high reclaim - way1 on return to user (4.4
    # mem_cgroup_handle_over_high), way2 at charge time (4.3 try_charge done_restock) - so
    # the per-request p99 differs by an order of magnitude while the syscall p99 does not
    import yaml

    from results_data import MIX_DIR
    mix = yaml.safe_load((MIX_DIR / "kernel.yaml").read_text())
    runs = {d: core.run_workload({"machine": {"nodes": 1, "mem_mib": 256, "cpus": 2}, "design": d,
                                  "cgroup": {"max": "32M", "high": 0.5}, "tasks": 2,
                                  "length": {"kernel_entries": 3000}, "mix": mix}, 7)
            for d in ("way1", "way2")}
    way1, way2 = runs["way1"], runs["way2"]
    assert way1["reclaim_ns_charge"] == 0 and way1["reclaim_ns_return_to_user"] > 0
    assert 0.8 < way1["reclaim_ns_return_to_user"] / way2["reclaim_ns_charge"] < 1.25
    assert way2["latency_kernel_p99_ns"] > 5 * way1["latency_kernel_p99_ns"]
    assert 0.8 < way1["syscall_latency_p99_ns"] / way2["syscall_latency_p99_ns"] < 1.25


@pytest.mark.parametrize("design", core.DESIGNS)
def test_slab_charge_reclaim_rounds_counts_the_reclaim_of_new_slabs_charges(design):
    """Issue 20 point 8 (way2-double-reclaim-fragmentation): the charge-time reclaim rounds
    spent on new slabs, so a sweep can derive rounds per new slab (/ slab_pages_allocated).
    At memory.max full of page cache, a syscall of kmalloc-2048 charges nothing but slab
    pages in the 2015 rows (memcg_charge_slab, §3.1), so every charge-time round is one of
    them; under v6.18 slab pages are never charged (obj_cgroup, 5.9 §3.4): the objects'
    charges reclaim, the slabs' never."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design=design)
    m.mkdir("/a")
    task = m.spawn("/a", cpu=0)
    warm_kmalloc(m, task, 2048)
    m.write("/a", "memory.max", "8M")
    task.read_file(MB(12))
    before = m.metrics()
    with task.syscall():
        for _ in range(MB(2) // 2048):
            assert task.kmalloc(2048, accounted=True) is not None
    delta = metrics_delta(before, m.metrics())
    assert delta["slab_pages_allocated"] > 0 and delta["reclaim_rounds_charge"] > 0
    if core.POLICIES[design]["obj_charge"]:
        assert delta["slab_charge_reclaim_rounds"] == 0
    else:
        assert delta["slab_charge_reclaim_rounds"] == delta["reclaim_rounds_charge"]
