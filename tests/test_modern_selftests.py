"""The cgroup selftests written for the modern kernel (docs/kernel.md §7.2 item 5, §7.3 item 1)
mirrored against the v6.18 row, with the selftests' own tolerances; the 4.x rows run the
memory.high / memory.max mirrors of tests/test_memcg_selftests.py too (its fixture covers
every row of core.DESIGNS).

Swap is off (the selftests write memory.swap.max = 0); unreclaimable user memory (mlock)
is modelled by unreclaimable kmem pages, as §7.3 "For the model" allows.
"""
import pytest

import core
from kernel_selftest import MB, PAGE_SIZE, cg_read_key_long, cg_read_long, pages

MODERN = "v6.18"
# test_memcg_high_sync waits (inotify) for memory.events to change and then stops the
# child; 10 s of the child's time is far more than that wait.
PATIENCE_NS = 10 * 10**9


def machine(design):
    return core.Machine(nodes=1, mem_mib=512, cpus=2, allocator="slub", design=design)


def high_sync(design):
    """test_memcg_high_sync (5.18+): high = 30M, max = 140M; one kernel entry of 200M of
    unreclaimable memory. Returns (events before, events after)."""
    m = machine(design)
    m.mkdir("/t")
    m.write("/t", "memory.max", "140M")
    m.write("/t", "memory.high", "30M")
    task = m.spawn("/t")
    pre = {k: cg_read_key_long(m, "/t", "memory.events", k) for k in ("high", "max")}
    with task.syscall():                               # alloc_anon_mlock(200M): one entry
        for i in range(pages(MB(200))):
            task.alloc_pages(0, "GFP_KERNEL")
            if i % 64 == 0 and m.metrics()["high_throttle_ns"] >= PATIENCE_NS:
                break                                  # the test has seen its event by now
    post = {k: cg_read_key_long(m, "/t", "memory.events", k) for k in ("high", "max")}
    return m, pre, post


def test_memcg_high_sync():
    m, pre, post = high_sync(MODERN)
    # "if (pre_high == post_high || pre_max != post_max) goto cleanup;" - the pass condition
    assert post["high"] > pre["high"]
    assert post["max"] == pre["max"]
    assert cg_read_long(m, "/t", "memory.current") < MB(140)


def test_memcg_high_sync_fails_without_the_518_enforcement():
    # way1 (4.4) punts every overage to return-to-user: one long entry runs into max
    m, pre, post = high_sync("way1")
    assert post["max"] > pre["max"]


@pytest.mark.parametrize("design", core.DESIGNS)
def test_kmem_basic(design):
    """test_kmem.c test_kmem_basic (5.9+): negative dentries until stat.slab >= 1 MiB, then
    memory.high = 1M; both slab and current must fall below half of the first slab figure.
    The 4.x rows pass too: their one memory.high reclaim round frees dentry slab pages."""
    m = machine(design)
    m.mkdir("/t")
    task = m.spawn("/t")
    while m.stat("/t")["slab"] < MB(1):               # 100000 stat() calls in the selftest
        with task.syscall():
            assert task.create_dentries(100) == 100
    slab0 = m.stat("/t")["slab"]
    assert slab0 >= MB(1)
    m.write("/t", "memory.high", "1M")                # reclaims synchronously (6.18 loop)
    slab = m.stat("/t")["slab"]
    current = cg_read_long(m, "/t", "memory.current")
    assert slab < slab0 / 2
    assert current < slab0 / 2
    assert current % PAGE_SIZE == 0
