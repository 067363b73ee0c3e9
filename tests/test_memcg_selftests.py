"""memcg scenarios that mirror the cgroup v2 selftests (docs/kernel.md §7.2), with their own
tolerances, plus the try_charge rules of §2.3 that decide ENOMEM versus OOM kill.

Each selftest's `cg_run(cgroup, fn)` is a task spawned in the cgroup that runs `fn` and
exits; page cache outlives it, anon memory does not.  Swap is off (`memory.swap.max = 0`
in the selftests).  Every scenario runs under each design: user memory is charged the same
way in all of them.
"""
import errno

import pytest

import core
from kernel_selftest import (
    MB, cg_read_key_long, cg_read_long,
    fill_with_kmem, metrics_delta, values_close,
)


@pytest.fixture(params=core.DESIGNS)
def m(request):
    return core.Machine(nodes=1, mem_mib=512, cpus=2, allocator="slub",
                        design=request.param)


def new_cgroup(m, path, **controls):
    m.mkdir(path)
    for control, value in controls.items():
        m.write(path, f"memory.{control}", value)
    return path


def current(m, cgroup):
    return cg_read_long(m, cgroup, "memory.current")


def run_in(m, cgroup, work):
    """cg_run: a task in `cgroup` does `work(task)` and exits; returns work's result."""
    task = m.spawn(cgroup)
    result = work(task)
    task.exit()
    return result


# ---- §7.2 test_memcontrol.c ----------------------------------------------------------------

def test_memcg_current_peak(m):
    cg = new_cgroup(m, "/t")
    assert current(m, cg) == 0
    assert cg_read_long(m, cg, "memory.peak") == 0

    def alloc_anon_50M_check(task):
        assert task.fault_anon(MB(50))
        usage = current(m, cg)
        assert usage >= MB(50)
        assert values_close(MB(50), usage, 3)
        assert values_close(m.stat(cg)["anon"], usage, 3)
    run_in(m, cg, alloc_anon_50M_check)
    assert cg_read_long(m, cg, "memory.peak") >= MB(50)

    def alloc_pagecache_50M_check(task):
        task.read_file(MB(50))
        usage = current(m, cg)
        assert usage >= MB(50)
        assert values_close(m.stat(cg)["file"], usage, 10)
    run_in(m, cg, alloc_pagecache_50M_check)


def test_memcg_high(m):
    cg = new_cgroup(m, "/t", high="30M")
    # 31M of anon over a 30M high: throttled, never OOM-killed (§2.5: high never OOMs)
    assert run_in(m, cg, lambda task: task.fault_anon(MB(31)))
    # alloc_pagecache_50M_check must fail: usage does not stay at 50M
    run_in(m, cg, lambda task: task.read_file(MB(50)))
    assert current(m, cg) < MB(50)
    # alloc_pagecache_max_30M
    run_in(m, cg, lambda task: task.read_file(MB(50)))
    assert values_close(current(m, cg), MB(30), 5)
    events = m.events(cg)
    assert events["high"] > 0
    assert events["oom"] == 0 and events["oom_kill"] == 0


def test_memcg_max(m):
    cg = new_cgroup(m, "/t", max="30M")
    task = m.spawn(cg)
    assert task.fault_anon(MB(100)) is False      # alloc_anon(100M) is OOM-killed
    assert task.killed
    # alloc_pagecache_max_30M, then 0 < current <= 30M
    run_in(m, cg, lambda t: t.read_file(MB(50)))
    usage = current(m, cg)
    assert values_close(usage, MB(30), 5)
    assert 0 < usage <= MB(30)
    assert m.events(cg)["max"] > 0


def test_memcg_oom_events(m):
    cg = new_cgroup(m, "/t", max="30M")
    task = m.spawn(cg)
    assert task.fault_anon(MB(100)) is False
    assert task.killed                              # the victim is gone ...
    assert m.stat(cg)["anon"] == 0                  # ... and the cgroup ends up empty
    events = m.events(cg)
    assert events["oom"] == 1
    assert events["oom_kill"] == 1
    metrics = m.metrics()
    assert (metrics["oom_kills_memcg"], metrics["oom_kills_global"]) == (1, 0)


def reclaim_until(m, cgroup, goal):
    """test_memcontrol.c reclaim_until: up to 5 writes of memory.reclaim; a write that
    returns 0 must have reached the goal (within 3); -EAGAIN means "try again"."""
    reclaimed = False
    for _ in range(5):
        usage = current(m, cgroup)
        if usage < goal or values_close(usage, goal, 3):
            break
        if reclaimed:
            return False                            # memory.reclaim returned 0 too early
        try:
            m.write(cgroup, "memory.reclaim", str(usage - goal))
            reclaimed = True
        except OSError as err:
            if err.errno != errno.EAGAIN:
                raise
    return reclaimed


def test_memcg_reclaim(m):
    cg = new_cgroup(m, "/t")
    run_in(m, cg, lambda task: task.read_file(MB(50)))
    assert values_close(current(m, cg), MB(50), 10)
    assert reclaim_until(m, cg, MB(30))
    assert values_close(current(m, cg), MB(30), 3)


def test_memcg_events_file_matches_events_dict(m):
    cg = new_cgroup(m, "/t", max="30M")
    assert m.spawn(cg).fault_anon(MB(100)) is False
    events = m.events(cg)
    for key in ("low", "high", "max", "oom", "oom_kill"):
        assert cg_read_key_long(m, cg, "memory.events", key) == events[key]


def test_memcg_low_protects_until_only_protected_memory_is_left(m):
    # §2.5: memory.low protects a memcg whose usage, and every ancestor's up to the reclaim
    # root, is below low; it is reclaimed anyway (events.low) only when nothing else can be.
    # (the §7.2.3 numbers are the 5.x effective-low distribution, which 4.2 does not have)
    parent = new_cgroup(m, "/p", max="100M", low="200M")
    prot = new_cgroup(m, "/p/prot", low="40M")
    unprot = new_cgroup(m, "/p/unprot")
    hog = new_cgroup(m, "/p/hog")
    run_in(m, prot, lambda task: task.read_file(MB(30)))
    run_in(m, unprot, lambda task: task.read_file(MB(30)))

    first = m.spawn(hog)
    assert first.fault_anon(MB(60))                 # 120M wanted: 20M must be reclaimed
    assert values_close(current(m, prot), MB(30), 3)
    assert m.events(prot)["low"] == 0
    assert current(m, unprot) < MB(15)

    second = m.spawn(hog)
    assert second.fault_anon(MB(25))               # more than unprot still holds
    assert m.events(prot)["low"] > 0
    assert current(m, prot) < MB(29)
    assert m.events(parent)["oom"] == 0


# ---- §2.3 try_charge: ENOMEM from syscalls, OOM only in user faults -----------------------

@pytest.fixture
def full(m):
    """/a (max 4M) filled with unreclaimable kmem by a task in a syscall; stock drained."""
    cg = new_cgroup(m, "/a", max="4M")
    task = m.spawn(cg)
    fill_with_kmem(m, task, cg)
    return m, task, cg


def test_kmem_pages_are_charged_as_kernel_memory(m):
    cg = new_cgroup(m, "/a")
    task = m.spawn(cg)
    with task.syscall():
        task.alloc_pages(2, "GFP_KERNEL|__GFP_COMP")
    assert m.stat(cg)["kernel"] == 4 * 4096
    assert current(m, cg) >= 4 * 4096


def test_syscall_charge_over_max_is_enomem_without_oom_kill(full):
    m, task, cg = full
    assert current(m, cg) == MB(4)
    assert not task.killed
    events = m.events(cg)
    assert events["max"] > 0
    # step 16 counts the OOM even though nobody is killed (4.x); rows that kill from the
    # charge path filled with __GFP_NORETRY, which never reaches step 16 (tests/test_v61.py)
    assert events["oom"] >= (0 if core.POLICIES[m.design]["oom_charge_path"] else 1)
    assert events["oom_kill"] == 0
    assert m.metrics()["oom_kills_memcg"] == 0


def charge_once(m, task, cg, gfp):
    """One order-0 kmem request at the limit; the growth of events and metrics it caused."""
    events, metrics = m.events(cg), m.metrics()
    with task.syscall():
        handle = task.alloc_pages(0, gfp)
    after = m.events(cg)
    return handle, {k: after[k] - events[k] for k in events}, metrics_delta(metrics, m.metrics())


def test_kernel_charge_reclaims_through_all_retries_then_records_oom(full):
    m, task, cg = full
    handle, events, metrics = charge_once(m, task, cg, "GFP_KERNEL")
    assert handle is None
    # steps 7-8 run once, again after the drain (10), then once per retry (14); then 16
    # (5 retries in 4.x; MAX_RECLAIM_RETRIES = 16 from 5.9, docs/kernel.md §6.3)
    retries = core.POLICIES[m.design]["reclaim_retries"]
    if not core.POLICIES[m.design]["oom_charge_path"]:
        assert events["max"] == metrics["reclaim_rounds"] == 2 + retries
        assert events["oom"] == 1 and events["oom_kill"] == 0
        assert not task.killed
        return
    # 4.19+: step 16 kills the only task of the memcg (the charging one) and the charge
    # retries with a fresh set of retries; a victim that passed the OOM killer then fails
    # (5.16 a4ebf1b6ca1e): one more round and each retry, nothing forced
    assert events["max"] == metrics["reclaim_rounds"] == 2 + retries + 1 + retries
    assert events["oom"] == 1 and events["oom_kill"] == 1
    assert task.killed and not task.alive


def test_noretry_charge_gives_up_after_the_drain(full):
    m, task, cg = full
    handle, events, metrics = charge_once(m, task, cg, "GFP_KERNEL|__GFP_NORETRY")
    assert handle is None
    # step 8 reclaims, step 10 drains and retries, step 8 again, step 11 -> nomem
    assert events["max"] == 2
    assert metrics["reclaim_rounds"] == 2
    assert events["oom"] == 0


def test_nowait_charge_over_max_fails_without_reclaim_or_max_event(full):
    m, task, cg = full
    handle, events, metrics = charge_once(m, task, cg, "GFP_NOWAIT")
    assert handle is None
    assert events == {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": 0}   # step 6
    assert metrics["reclaim_rounds"] == 0
    assert metrics["alloc_nowait_failures"] == 1
    assert current(m, cg) == MB(4)


def test_charge_retries_with_exact_size_before_reclaiming(m):
    # step 3: a charge that fails as a batch (32 pages; 64 from 6.1) retries with its exact
    # size before any reclaim, so a cgroup can be filled to the last page without a max event
    batch = core.POLICIES[m.design]["charge_batch"]
    cg = new_cgroup(m, "/a", max=str(batch * 4096 + 4096))
    task = m.spawn(cg)
    with task.syscall():
        handles = [task.alloc_pages(0, "GFP_KERNEL") for _ in range(batch + 1)]
    assert None not in handles
    assert current(m, cg) == (batch + 1) * 4096
    assert m.events(cg)["max"] == 0


# ---- hierarchy: limits of an ancestor (§2.1, §2.3 steps 7 and 19) -------------------------

def test_ancestor_max_is_enforced_and_counted_on_the_ancestor(m):
    parent = new_cgroup(m, "/p", max="16M")
    child = new_cgroup(m, "/p/c")
    run_in(m, child, lambda task: task.read_file(MB(30)))
    assert current(m, parent) <= MB(16)
    assert values_close(current(m, child), MB(16), 5)
    # mem_over_limit is the ancestor whose counter failed: the max event is its own
    assert m.events(parent)["max"] > 0
    assert m.events(child)["max"] == 0


def test_ancestor_high_is_reclaimed_too(m):
    parent = new_cgroup(m, "/p", high="16M")
    child = new_cgroup(m, "/p/c")
    run_in(m, child, lambda task: task.read_file(MB(30)))
    assert values_close(current(m, parent), MB(16), 5)
    assert m.events(parent)["high"] > 0
    assert m.events(child)["high"] == 0


# ---- writes below the usage (§2.5 memory_high_write, memory_max_write) ---------------------

def test_writing_high_below_usage_reclaims_down_to_it(m):
    cg = new_cgroup(m, "/t")
    run_in(m, cg, lambda task: task.read_file(MB(30)))
    m.write(cg, "memory.high", "10M")
    assert values_close(current(m, cg), MB(10), 3)
    assert m.events(cg)["high"] == 0              # the write reclaims; no charge was over


def test_writing_max_below_usage_shrinks_or_is_busy(m):
    cg = new_cgroup(m, "/t")
    run_in(m, cg, lambda task: task.read_file(MB(30)))
    m.write(cg, "memory.max", "10M")             # page cache: reclaimable
    assert current(m, cg) <= MB(10)
    assert cg_read_long(m, cg, "memory.max") == MB(10)

    pinned = new_cgroup(m, "/k")
    task = m.spawn(pinned)
    with task.syscall():
        for _ in range(MB(8) // 4096):
            assert task.alloc_pages(0, "GFP_KERNEL") is not None
    with pytest.raises(OSError) as err:          # kmem cannot be reclaimed: -EBUSY
        m.write(pinned, "memory.max", "4M")
    assert err.value.errno == errno.EBUSY
    assert m.read(pinned, "memory.max") == "max\n"     # the limit was not changed
