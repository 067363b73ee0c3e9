"""Issue 23: the v6.1 row (the kernel on the bench) and the memcg OOM killer invoked from
the charge path (4.19, 29ef680ae7c2 "memcg, oom: move out_of_memory back to the charge
path"; 6.1 mm/memcontrol.c try_charge_memcg() -> mem_cgroup_oom() ->
mem_cgroup_out_of_memory()), policy field oom_charge_path.
"""
import pytest

import core
MB = 1 << 20

LEGACY = ("v4.3", "way1", "way2", "way2+")
MODERN = ("v6.1", "v6.18")


def test_v61_differs_from_v618_only_where_a_later_kernel_changed():
    v61, v618 = core.POLICIES["v6.1"], core.POLICIES["v6.18"]
    differ = {f for f in v618 if v61[f] != v618[f]}
    # 6.8: dying tasks skip memory.high reclaim; SLAB removed (docs/model.md "v6.1")
    assert differ == {"high_skip_dying", "slub_only"}
    assert (v61["high_skip_dying"], v61["slub_only"]) == (0, 0)
    assert core.design_allocator_error("v6.1", "slab") is None
    assert core.DESIGNS.index("v6.1") == core.DESIGNS.index("v6.18") - 1


def test_oom_charge_path_is_on_for_the_modern_rows_only():
    assert [core.POLICIES[d]["oom_charge_path"] for d in LEGACY + MODERN] == [0] * 4 + [1] * 2


def kmalloc_past_max(design, n=20_000):
    """The issue 23 measurement on Linux 6.1 under qemu: memory.max 32M, memory.high 24M,
    16M of reclaimable page cache, then ONE kernel entry of n kmalloc(2048,
    GFP_KERNEL|__GFP_ACCOUNT) - 40M of unreclaimable kmem, more than max."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design=design)
    m.mkdir("/a")
    m.write("/a", "memory.max", "32M")
    m.write("/a", "memory.high", "24M")
    t = m.spawn("/a")
    t.read_file(16 * MB)
    outcomes, killed_at_first_failure = [], None
    with t.syscall():
        for _ in range(n):
            outcomes.append(t.kmalloc(2048, "GFP_KERNEL_ACCOUNT") is not None)
            if killed_at_first_failure is None and not outcomes[-1]:
                killed_at_first_failure = t.killed
        in_entry_alive = t.alive
    return m, t, outcomes, killed_at_first_failure, in_entry_alive


@pytest.mark.parametrize("design", MODERN)
def test_charge_past_max_in_a_system_call_oom_kills_the_task(design):
    m, t, ok, killed_at_first_failure, in_entry_alive = kmalloc_past_max(design)
    events, metrics = m.events("/a"), m.metrics()
    failed = ok.count(False)
    # throttled first: memory.high's 5.4 penalty inside the entry (5.18 sync enforcement)
    assert metrics["high_throttle_sleeps"] > 0 and events["high"] > 0
    # then one memcg OOM kill, from the charge itself: the charging task (the only one)
    assert events["oom_kill"] == 1 and metrics["oom_kills_memcg"] == 1
    assert killed_at_first_failure and t.killed
    # the victim stays in its kernel entry (in_entry_alive) and dies at return to user,
    # freeing its kmem then
    assert in_entry_alive and not t.alive
    assert int(m.read("/a", "memory.current")) < 24 * MB
    # 5.16 (a4ebf1b6ca1e): once the victim passed the OOM killer its charges fail (no
    # force for dying tasks); each failed charge went through mem_cgroup_oom() once more,
    # counting an oom event but killing nothing (mem_cgroup_out_of_memory(): task_is_dying)
    assert failed > 0 and all(not x for x in ok[ok.index(False):])
    assert events["oom"] == failed == metrics["enomem_user_visible"]


@pytest.mark.parametrize("design", LEGACY)
def test_the_2015_rows_fail_the_charge_and_kill_nothing(design):
    """4.x: the kill waits for the end of a user page fault; a system call's charge fails."""
    m, t, ok, killed_at_first_failure, _ = kmalloc_past_max(design)
    events = m.events("/a")
    assert events["oom_kill"] == 0 and not t.killed and t.alive
    assert ok.count(False) > 0 and events["oom"] >= ok.count(False)


def test_a_charge_kills_the_biggest_task_of_the_memcg_which_dies_on_its_next_entry():
    """mem_cgroup_out_of_memory() picks by badness (anon pages), not the charging task: the
    victim, in user mode, has its anon memory reaped at once (oom_reaper) and is gone before
    it can make another request; the charging task's charge then succeeds."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design="v6.1")
    m.mkdir("/a")
    m.write("/a", "memory.max", "16M")
    hog, filler = m.spawn("/a"), m.spawn("/a")
    assert hog.fault_anon(8 * MB)
    with filler.syscall():
        ok = [filler.kmalloc(2048, "GFP_KERNEL_ACCOUNT") is not None for _ in range(6_000)]
    assert all(ok) and not filler.killed
    assert m.events("/a")["oom_kill"] == 1 and hog.killed
    with pytest.raises(ValueError, match="OOM-killed"):
        hog.read_file(4096)
    assert not hog.alive


def test_costly_charges_skip_the_oom_killer():
    """6.1 mem_cgroup_oom(): order > PAGE_ALLOC_COSTLY_ORDER returns at once (no event)."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design="v6.1")
    m.mkdir("/a")
    m.write("/a", "memory.max", "4M")
    t = m.spawn("/a")
    with t.syscall():
        assert t.alloc_pages(4, "GFP_KERNEL|__GFP_COMP") is not None     # 64K fits
        handles = [t.alloc_pages(4, "GFP_KERNEL|__GFP_COMP") for _ in range(80)]
    assert None in handles
    assert m.events("/a")["oom"] == 0 and not t.killed


def test_a_workload_with_charge_path_kills_is_deterministic():
    spec = {"machine": {"nodes": 1, "mem_mib": 256, "cpus": 2}, "design": "v6.1",
            "cgroup": {"max": "8M", "high": "max"}, "tasks": 2, "length": {"kernel_entries": 40},
            "mix": {"name": "fill", "requests": [{"kind": "kmalloc", "weight": 1,
                    "gfp": "GFP_KERNEL", "accounted": True, "size": {"min": 1024, "max": 4096}}],
                    "burst": 256, "lifetime": {"mean": 100000, "long_lived_share": 1.0}}}
    a, b = core.run_workload(spec, 3), core.run_workload(spec, 3)
    assert a == b
    assert a["oom_kills_memcg"] > 0
    legacy = core.run_workload(dict(spec, design="v4.3"), 3)
    assert legacy["oom_kills_memcg"] == 0
