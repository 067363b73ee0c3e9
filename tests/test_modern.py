"""Issue 14: the v6.18 row - the kernel the 2015 designs converged on (docs/kernel.md
§6.2-§6.4) - mechanism by mechanism, each a field of the policy table:

* obj_charge: slab objects charged in bytes to an obj_cgroup with the caller's gfp after
  the allocation, slab pages never charged, a per-CPU byte stock (5.9, 6.8; §3.4);
* charge_batch 64 (6.1) and reclaim_retries 16 (5.9);
* force_gfp_high / NOFAIL forced, with force_max_event (5.4, 6.3; §6.3 steps 8-9);
* force_dying off: a dying task's charge is not forced (5.16);
* high_sync_over_batch: memory.high handled inside the charge once one kernel entry is a
  batch over (5.18, c9afe31ec443);
* high_throttle: calculate_high_delay(), at most 2 s, in the syscall's latency (5.4);
* high_skip_dying: a dying task skips high reclaim (6.8);
* slub_only: SLAB is gone (6.8);
and the 4.x rows stay bit-identical (tests/fixtures/legacy_rows.json).
"""
import json

import pytest

import core
import legacy_rows
from kernel_selftest import (
    MAX_RECLAIM_RETRIES, MB, MEMCG_CHARGE_BATCH_6, OBJCG_PTR_SIZE, PAGE_SIZE, cg_read_long,
    fill_with_kmem, fragment_memory, metrics_delta, pages,
)

MODERN = "v6.18"
NEW_FIELDS = ("charge_batch", "reclaim_retries", "force_dying", "force_max_event",
              "high_sync_over_batch", "high_throttle", "high_skip_dying", "high_write_loop",
              "obj_charge", "slub_high_no_kswapd", "slub_only", "charge_only_accounted")


def machine(design=MODERN, **kw):
    params = dict(nodes=1, mem_mib=256, cpus=2, allocator="slub", design=design)
    params.update(kw)
    m = core.Machine(**params)
    m.mkdir("/a")
    return m


def usage(m, cgroup="/a"):
    return cg_read_long(m, cgroup, "memory.current")


def obj_bytes_consistent(m, cgroup="/a"):
    """Every page charged through obj_cgroup is live object bytes or pre-charged bytes."""
    return sum(m.objcg_bytes(cgroup)) == m.objcg_pages(cgroup) * PAGE_SIZE


# ---- the row and the legacy rows ------------------------------------------------------------

def test_the_modern_row_turns_on_every_later_mechanism_and_the_2015_rows_none():
    row = core.POLICIES[MODERN]
    assert (row["charge_batch"], row["reclaim_retries"]) == (MEMCG_CHARGE_BATCH_6, MAX_RECLAIM_RETRIES)
    assert all(row[f] for f in NEW_FIELDS if f not in ("force_dying",))
    assert row["force_dying"] == 0
    # Heo's charge side (§6.4): punt for every gfp, force NOFAIL and HIGH, charge after alloc
    assert (row["high_wait"], row["high_nowait"]) == (core.POLICIES["way1"]["high_wait"],) * 2
    assert row["bypass_forces"] and row["force_gfp_high"] and row["kmem_charge_after_alloc"]
    for name in ("v4.3", "way1", "way2", "way2+"):
        old = core.POLICIES[name]
        assert (old["charge_batch"], old["reclaim_retries"]) == (32, 5)
        assert old["force_dying"] == 1
        assert not any(old[f] for f in NEW_FIELDS if f not in ("charge_batch", "reclaim_retries",
                                                             "force_dying"))


def test_the_2015_rows_are_bit_identical_to_before_the_modern_row():
    expected = json.loads(legacy_rows.FIXTURE.read_text())
    got = legacy_rows.compute()
    assert set(got) == set(expected)
    diffs = {(k, name): (v, got[k][name]) for k, row in expected.items()
             for name, v in row.items() if name in got[k] and got[k][name] != v}
    assert not diffs, sorted(diffs.items())[:10]


# ---- SLAB is gone (6.8) -----------------------------------------------------------------------

def test_slab_allocator_is_refused_with_the_path_named():
    with pytest.raises(ValueError, match=r"^allocator: design 'v6.18' .*SLAB.*6\.8"):
        core.Machine(nodes=1, mem_mib=64, cpus=1, allocator="slab", design=MODERN)
    spec = legacy_rows.spec(legacy_rows.CASES[-1], MODERN)         # the slab case
    with pytest.raises(core.SpecError, match=r"^machine\.allocator: design 'v6.18'.*use allocator slub"):
        core.validate_spec(spec)
    assert core.design_allocator_error("way1", "slab") is None


# ---- per-object charging (5.9 f2fe7b09a52b; 6.18 memcg_slab_post_alloc_hook) ---------------

def test_objects_are_charged_in_bytes_and_slab_pages_never():
    m = machine()
    task = m.spawn("/a", cpu=0)
    full = 128 + OBJCG_PTR_SIZE                     # kmalloc(100) -> kmalloc-128 + objcg ptr
    with task.syscall():
        for n in range(1, 100):
            assert task.kmalloc(100, accounted=True) is not None
            assert m.stat("/a")["slab"] == n * full
            # the byte stock is refilled a page at a time: exactly the pages the bytes need
            assert m.objcg_pages("/a") == -(-n * full // PAGE_SIZE)
            assert obj_bytes_consistent(m)
    assert m.charged_pages("/a") == 0               # no page (slab or other) carries /a
    assert m.node_pages(0)["slab"] > 0              # ... though slabs were allocated
    assert m.metrics()["slab_lazy_uncharged_objects"] == 0    # one set of caches: no clones
    # memory.current: the object pages, the rest of the 64-page batch in the page stock
    assert usage(m) == (m.objcg_pages("/a") + m.stock_pages("/a")) * PAGE_SIZE
    assert usage(m) == MEMCG_CHARGE_BATCH_6 * PAGE_SIZE


def test_the_byte_stock_takes_frees_back_and_returns_whole_pages():
    m = machine()
    task = m.spawn("/a", cpu=0)
    with task.syscall():
        handles = [task.kmalloc(1000, accounted=True) for _ in range(200)]       # kmalloc-1024: 1032 bytes
    pages_before = m.objcg_pages("/a")
    task.kfree(handles.pop())
    with task.syscall():
        handles.append(task.kmalloc(1000, accounted=True))           # consume_obj_stock: no page charged
    assert m.objcg_pages("/a") == pages_before
    for handle in handles:
        task.kfree(handle)
        assert obj_bytes_consistent(m)
    live, spare = m.objcg_bytes("/a")
    assert live == 0 and spare <= PAGE_SIZE          # refill_obj_stock gave back whole pages
    assert m.stock_pages("/a") <= MEMCG_CHARGE_BATCH_6   # refill_stock drains above a batch


def test_switching_memcg_on_a_cpu_drains_the_byte_stock():
    m = machine()
    m.mkdir("/b")
    a, b = m.spawn("/a", cpu=0), m.spawn("/b", cpu=0)
    for _ in range(20):
        for task in (a, b):
            with task.syscall():
                task.kmalloc(300, accounted=True)
            for cg in ("/a", "/b"):
                assert obj_bytes_consistent(m, cg)
    # the sub-page rest of a drained stock waits in objcg->nr_charged_bytes
    assert sum(m.objcg_bytes("/a")) + sum(m.objcg_bytes("/b")) == \
        (m.objcg_pages("/a") + m.objcg_pages("/b")) * PAGE_SIZE


@pytest.mark.parametrize("design", core.DESIGNS)
def test_only_accounted_sites_are_charged_in_the_modern_row(design):
    """Issue 20 point 4. 4.5 a9bb7e620efd ("memcg: only account kmem allocations marked as
    __GFP_ACCOUNT") made kmem accounting opt-in: in 6.x slab_pre_alloc_hook() /
    memcg_slab_post_alloc_hook() charge only __GFP_ACCOUNT or SLAB_ACCOUNT allocations,
    __memcg_kmem_charge_page() only __GFP_ACCOUNT pages. In 4.2-4.4 every kmem allocation
    of a memcg task with kmem accounting active was charged (only __GFP_NOACCOUNT opted
    out), so the 2015 rows charge a plain kmalloc too."""
    m = machine(design)
    task = m.spawn("/a", cpu=0)
    before = usage(m)
    with task.syscall():
        for _ in range(64):
            assert task.kmalloc(2048) is not None                   # a driver's kmalloc
            assert task.kmalloc(16384) is not None                  # kmalloc_large
            assert task.alloc_pages(0, accounted=False) is not None  # a driver's page
    plain = usage(m) - before
    with task.syscall():
        for _ in range(64):
            assert task.kmalloc(2048, "GFP_KERNEL_ACCOUNT") is not None
            assert task.alloc_pages(0) is not None                  # alloc_kmem_pages
        task.create_dentries(64)                                   # SLAB_ACCOUNT caches
    accounted = usage(m) - before - plain
    # 64 * (2 KiB + 16 KiB + 4 KiB) were allocated each way, far more than one batch
    assert accounted >= 64 * (2048 + PAGE_SIZE)
    if core.POLICIES[design]["charge_only_accounted"]:
        assert plain == 0
    else:   # the kmalloc-2048 objects of this short burst go to the root cache while the
            # memcg's clone is created (§2.4); the page-backed ones are charged at once
        assert plain >= 64 * (16384 + PAGE_SIZE)


def test_a_failed_object_charge_frees_the_object_again():
    # 6.18 memcg_slab_post_alloc_hook: the object is allocated first; a failed charge
    # frees it (memcg_alloc_abort_single) and kmalloc returns NULL
    m = machine()
    m.write("/a", "memory.max", "4M")
    task = m.spawn("/a", cpu=0)
    fill_with_kmem(m, task, "/a")
    slab_before, events = m.stat("/a")["slab"], m.events("/a")
    with task.syscall():
        assert task.kmalloc(512, "GFP_NOWAIT", accounted=True) is None       # no headroom for NOWAIT (§6.4 5)
    assert m.stat("/a")["slab"] == slab_before
    assert m.events("/a") == events                          # step 4 nomem: no max event
    assert usage(m) <= MB(4)


def fallbacks_at_the_memcg_boundary(design):
    """/a full of kmem at memory.max = 8M, with plenty of free order-3 blocks; one more
    syscall of GFP_KERNEL kmalloc-2048 (oo order 3 > min order 0 on 2 CPUs)."""
    m = machine(design)
    m.write("/a", "memory.max", "8M")
    task = m.spawn("/a", cpu=0)
    task.read_file(MB(12))                      # reclaimable: the charges can make room
    before = m.metrics()
    with task.syscall():
        for _ in range(MB(2) // 2048):
            task.kmalloc(2048, "GFP_KERNEL", accounted=True)
    return metrics_delta(before, m.metrics())


def test_per_object_charging_removes_order_fallbacks_at_the_memcg_boundary():
    # §3.2 a / §6.4 2: way1 charges SLUB's NOWAIT high-order try, which fails at max; in
    # 6.x the slab page is not charged, the object is, with the caller's GFP_KERNEL
    way1, modern = fallbacks_at_the_memcg_boundary("way1"), fallbacks_at_the_memcg_boundary(MODERN)
    assert way1["slub_order_fallbacks"] > 0
    assert modern["slub_high_order_attempts"] > 0
    assert modern["slub_order_fallbacks"] == 0


def test_dentries_go_on_the_list_lru_of_their_objcg_and_are_reclaimed():
    m = machine()
    task = m.spawn("/a", cpu=0)
    with task.syscall():
        assert task.create_dentries(2000) == 2000
    slab = m.stat("/a")["slab_reclaimable"]
    assert slab == 2000 * (192 + 1120 + 2 * OBJCG_PTR_SIZE)
    m.write("/a", "memory.high", "1M")                # the superblock shrinker finds them
    assert m.stat("/a")["slab_reclaimable"] < slab // 2
    assert m.metrics()["reclaim_slab_objects"] > 0


# ---- batch 64, 16 retries, forcing -----------------------------------------------------------

@pytest.mark.parametrize("design,batch", [("way1", 32), (MODERN, MEMCG_CHARGE_BATCH_6)])
def test_one_page_charge_leaves_the_rest_of_a_batch_in_the_stock(design, batch):
    m = machine(design)
    task = m.spawn("/a", cpu=0)
    with task.syscall():
        task.alloc_pages(0)
    assert m.stock_pages("/a") == batch - 1


@pytest.fixture
def full():
    m = machine()
    m.write("/a", "memory.max", "4M")
    task = m.spawn("/a", cpu=0)
    fill_with_kmem(m, task, "/a")
    return m, task


def charge(m, task, gfp, order=0):
    events, metrics = m.events("/a"), m.metrics()
    with task.syscall():
        handle = task.alloc_pages(order, gfp)
    after = m.events("/a")
    return handle, {k: after[k] - events[k] for k in events}, metrics_delta(metrics, m.metrics())


def test_kernel_charge_runs_sixteen_retries(full):
    handle, events, metrics = charge(*full, "GFP_KERNEL")
    assert handle is None
    assert events["max"] == metrics["reclaim_rounds"] == 2 + MAX_RECLAIM_RETRIES
    assert events["oom"] == 1


def test_gfp_high_is_forced_and_counts_the_max_event_it_skipped(full):
    # §6.3 steps 4, 8, 9: no reclaim for a non-blocking charge, nomem -> force for
    # __GFP_HIGH, and force: counts the max event the loop did not count
    m, task = full
    handle, events, metrics = charge(m, task, "GFP_ATOMIC")
    assert handle is not None
    assert metrics["charge_forced"] == 1 and metrics["reclaim_rounds"] == 0
    assert events["max"] == 1
    assert usage(m) > MB(4)


def test_nofail_is_forced_after_the_retries_with_no_extra_max_event(full):
    handle, events, metrics = charge(*full, "GFP_KERNEL|__GFP_NOFAIL")
    assert handle is not None and metrics["charge_forced"] == 1
    assert events["max"] == 2 + MAX_RECLAIM_RETRIES          # counted by the loop already
    assert events["oom"] == 0


@pytest.mark.parametrize("design,forced", [("way1", True), (MODERN, False)])
def test_a_dying_task_is_forced_in_44_but_not_since_516(full, design, forced):
    m = machine(design)
    m.write("/a", "memory.max", "4M")
    task = m.spawn("/a", cpu=0)
    fill_with_kmem(m, task, "/a")
    with task.syscall():
        task.kill()                                   # fatal signal while in the kernel
        handle = task.alloc_pages(0, "GFP_KERNEL")
    assert (handle is not None) == forced
    assert (m.metrics()["charge_forced"] > 0) == forced


# ---- memory.high inside one kernel entry (5.18) and the throttle (5.4) -----------------------

def long_entry_over_high(design, gfp, kill=False):
    """memory.high = 16M over 24M of page cache, then one syscall of 8M of kmem pages."""
    m = machine(design)
    task = m.spawn("/a", cpu=0)
    m.write("/a", "memory.high", "16M")
    task.read_file(MB(24))
    before, peak = m.metrics(), 0
    with task.syscall():
        if kill:
            task.kill()
        for _ in range(pages(MB(8))):
            task.alloc_pages(0, gfp)
            peak = max(peak, usage(m) - MB(16))
    return m, peak, metrics_delta(before, m.metrics())


def test_sync_enforcement_bounds_the_overage_of_one_kernel_entry():
    # 5.18: once the punted overage exceeds a batch, handle it in the charge
    _, peak_way1, way1 = long_entry_over_high("way1", "GFP_KERNEL")
    _, peak, modern = long_entry_over_high(MODERN, "GFP_KERNEL")
    assert peak_way1 >= MB(7)                         # way1 waits for return-to-user
    assert way1["high_sync_enforcements"] == 0
    assert modern["high_sync_enforcements"] > 0 and modern["reclaim_rounds_charge"] > 0
    assert peak <= 3 * MEMCG_CHARGE_BATCH_6 * PAGE_SIZE


def test_sync_enforcement_needs_a_gfp_that_may_block():
    _, peak, delta = long_entry_over_high(MODERN, "GFP_NOWAIT")
    assert delta["high_sync_enforcements"] == 0
    assert peak >= MB(7)                              # punted until return-to-user
    assert delta["reclaim_rounds_return_to_user"] > 0


def test_a_dying_task_skips_high_reclaim():
    m, peak, delta = long_entry_over_high(MODERN, "GFP_KERNEL", kill=True)
    assert delta["events_high"] == 0 and delta["reclaim_rounds"] == 0
    assert peak >= MB(7)


def test_calculate_high_delay_matches_the_in_tree_example():
    # mm/memcontrol.c (5.4+): for high = 100M, 101M -> 6 ms, 105M -> 159 ms, 110M -> 639 ms,
    # 118M and above -> the 2 s clamp (HZ = 1000: a jiffy is a millisecond)
    high = pages(MB(100))
    got = {mb: core.high_delay_jiffies(pages(MB(mb)), high) for mb in (100, 101, 105, 110, 118, 200)}
    assert got == {100: 0, 101: 6, 105: 159, 110: 639, 118: 2000, 200: 2000}
    # scaled by the task's share of the overage, in charge batches
    assert core.high_delay_jiffies(pages(MB(110)), high, nr_pages=32) == 639 // 2


def unreclaimable_over_high(design, nbytes, high=MB(8)):
    """memory.high = 8M, then one syscall of nbytes of kmem pages: nothing to reclaim."""
    m = machine(design)
    task = m.spawn("/a", cpu=0)
    m.write("/a", "memory.high", str(high))
    before = m.metrics()
    with task.syscall():
        for _ in range(pages(nbytes)):
            task.alloc_pages(0, "GFP_NOWAIT")          # never synchronously enforced
    return m, metrics_delta(before, m.metrics())


def test_throttle_sleeps_when_reclaim_cannot_keep_up_and_the_syscall_pays_for_it():
    m, delta = unreclaimable_over_high(MODERN, MB(9))   # 1M over an 8M high: 12.5 %
    assert delta["high_throttle_sleeps"] == 1
    assert delta["high_throttle_ns"] == 2_000_000_000  # 9/8 is above the 2 s clamp (118%)
    # 16 fruitless reclaim retries first, then the sleep
    assert delta["reclaim_rounds_return_to_user"] == 1 + MAX_RECLAIM_RETRIES
    metrics = m.metrics()
    assert metrics["syscall_latency_p99_ns"] >= 2e9 * 0.94     # log-linear bucket bound
    assert metrics["sim_ns"] < 1e9                             # the machine's clock ran on


def test_a_small_overage_is_not_worth_a_sleep():
    # penalty <= HZ/100 jiffies ends the function without sleeping (§6.3 step 4): one
    # 64-page batch over a 64M high is 0.4 %, under a jiffy
    _, delta = unreclaimable_over_high(MODERN, MB(64) + 10 * PAGE_SIZE, high=MB(64))
    assert delta["events_high"] > 0
    assert delta["high_throttle_sleeps"] == 0


def test_way1_never_throttles():
    _, delta = unreclaimable_over_high("way1", MB(9))
    assert delta["high_throttle_sleeps"] == 0 and delta["high_throttle_ns"] == 0


# ---- the sweep: a 6.x row next to the 2015 designs --------------------------------------------

def test_sweep_runs_the_modern_row_in_every_slub_cell_and_refuses_an_all_slab_sweep(tmp_path):
    from sweep import config, grid
    from sweep_helpers import write_config

    path = write_config(tmp_path, {"designs": ["v4.3", "way1", MODERN],
                                   "grid": {"allocator": ["slub", "slab"]}})
    cfg = config.load(path)
    cells = grid.build_cells(cfg, config.load_mixes(cfg, path))
    for cell in cells:
        expected = {"v4.3", "way1"} | ({MODERN} if cell.axes["allocator"] == "slub" else set())
        assert set(cell.specs) == expected
    work = grid.workloads(cells, cfg.designs, 2, cfg.seed, core.MODEL_VERSION)
    assert {w.cell.axes["allocator"] for w in work if w.design == MODERN} == {"slub"}
    assert grid.skipped_designs(cfg, cells) == {MODERN: len(cells) // 2}

    cfg = config.load(path, ["grid.allocator=[slab]"])
    with pytest.raises(config.ConfigError, match=r"^designs\[2\]: design 'v6.18' .*SLAB"):
        grid.build_cells(cfg, config.load_mixes(cfg, path))


def test_slub_high_order_try_does_not_wake_kswapd():
    # 6.18 allocate_slab(): the optimistic high-order try drops all of __GFP_RECLAIM, so on
    # a buddy allocator without order-3 blocks it no longer wakes kswapd (4.3 did, §3.4)
    woken = {}
    for design in ("way1", MODERN):
        m = machine(design, mem_mib=64)
        fragment_memory(m)
        task = m.spawn("/a", cpu=0)
        before = m.metrics()
        with task.syscall():
            for _ in range(64):                        # kmalloc-2048: oo order 3, min order 0
                assert task.kmalloc(2048, "GFP_KERNEL", accounted=True) is not None
        delta = metrics_delta(before, m.metrics())
        assert delta["slub_high_order_attempts"] > 0 and delta["slub_order_fallbacks"] > 0
        woken[design] = delta["kswapd_wakeups"]
    assert woken["way1"] > 0
    assert woken[MODERN] == 0
