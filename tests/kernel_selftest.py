"""The vocabulary the core tests share with the kernel's cgroup selftests (docs/kernel.md §7.1).

`values_close` and `MB` are those of tools/testing/selftests/cgroup/cgroup_util.h, so a test
that mirrors a selftest keeps the selftest's own tolerance.  The constants are the v4.2
values the model must use (§2.2, §2.3, §2.6, §5.1).  The helpers are what cgroup_util.c
gives the selftests (reading a cgroup file as a number) plus the set-up steps several core
tests need: warming a memcg's kmem_cache clones and filling a cgroup to its limit.
"""
import core

PAGE_SIZE = 4096
CHARGE_BATCH = 32                  # §2.2: per-CPU stock batch, pages
MEM_CGROUP_RECLAIM_RETRIES = 5     # §2.3
PAGE_ALLOC_COSTLY_ORDER = 3        # §2.3 step 12, §5.5 l/m
SWAP_CLUSTER_MAX = 32              # §2.6: memcg reclaim target is max(nr_pages, 32)
MAX_ORDER = 11                     # §5.1: free_area[0..10]
# the modern kernel's values (§6.2, §6.3), used by the v6.18 row's tests
MEMCG_CHARGE_BATCH_6 = 64          # MEMCG_CHARGE_BATCH from 6.1 (1813e51eece0)
MAX_RECLAIM_RETRIES = 16           # 5.9 (d977aa939fca)
OBJCG_PTR_SIZE = 8                 # obj_full_size(): object + its obj_cgroup pointer (§3.4)

# v4.2 gfp bits the tests reason about (§1.1)
GFP_WAIT = 0x10
GFP_HIGH = 0x20
GFP_NOFAIL = 0x800
GFP_THISNODE = 0x40000


def MB(x):
    """cgroup_util.h MB(x): x MiB in bytes."""
    return x << 20


def values_close(a, b, err):
    """cgroup_util.c values_close: |a - b| <= (a + b) / 100 * err (a percentage of the sum)."""
    return abs(a - b) <= (a + b) / 100 * err


def pages(nbytes):
    return nbytes // PAGE_SIZE


def cg_read_long(m, cgroup, control):
    """cgroup_util.c cg_read_long: a one-number cgroup file ("31457280\\n")."""
    return int(m.read(cgroup, control))


def cg_read_key_long(m, cgroup, control, key):
    """cgroup_util.c cg_read_key_long: the value of `key` in a "key value" file."""
    for line in m.read(cgroup, control).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise KeyError(f"{key!r} not in {cgroup}/{control}")


def metrics_delta(before, after):
    """Per-metric growth between two `Machine.metrics()` snapshots."""
    return {name: after[name] - before[name] for name in before}


def warm_memcg_caches(m, task, request, max_syscalls=10_000):
    """Repeat `request(task)` in syscalls until it no longer lands in a root cache.

    A memcg's kmem_cache clone is created asynchronously; until it exists the task's
    objects go uncharged to the root cache (§2.4, §8.1; slab_lazy_uncharged_objects).
    Tests that assert exact charges warm the caches they use first.
    """
    for _ in range(max_syscalls):
        lazy = m.metrics()["slab_lazy_uncharged_objects"]
        with task.syscall():
            request(task)
        if m.metrics()["slab_lazy_uncharged_objects"] == lazy:
            return
    raise AssertionError(f"memcg cache clone not ready after {max_syscalls} syscalls")


def warm_kmalloc(m, task, size, node=None):
    """Warm the memcg clone of the kmalloc cache serving `size` (object freed again)."""
    def request(t):
        handle = t.kmalloc(size, "GFP_KERNEL", node=node)
        assert handle is not None, f"kmalloc({size}) failed while warming its cache"
        t.kfree(handle)
    warm_memcg_caches(m, task, request)


def fill_with_kmem(m, task, cgroup):
    """Charge order-0 kmem pages to `cgroup` until a GFP_KERNEL charge fails.

    Kmem is unreclaimable, so the failing charge ran the whole §2.3 loop, drained the
    stock (step 10) and left the cgroup at exactly its limit: the state the over-max
    tests start from.  Returns the handles (freed by task exit). In a row whose charges
    call the OOM killer (oom_charge_path, 4.19+) the filling charges add __GFP_NORETRY,
    which gives up right after the drain (step 11), so the task is not killed by the fill.
    """
    limit = pages(cg_read_long(m, cgroup, "memory.max"))
    gfp = "GFP_KERNEL|__GFP_NORETRY" if core.POLICIES[m.design]["oom_charge_path"] else "GFP_KERNEL"
    handles = []
    with task.syscall():
        for _ in range(limit + CHARGE_BATCH + 1):
            handle = task.alloc_pages(0, gfp)
            if handle is None:
                return handles
            handles.append(handle)
    raise AssertionError(f"GFP_KERNEL charges to {cgroup} never failed at memory.max")


def fragment_memory(m):
    """Leave the buddy allocator without free blocks of order >= 3: a root task takes every
    free page (MEMALLOC ignores watermarks), then frees every other one."""
    task = m.spawn("/", cpu=0)
    with task.syscall():
        handles = []
        while (handle := task.alloc_pages(0, "GFP_ATOMIC|__GFP_MEMALLOC")) is not None:
            handles.append(handle)
        for handle in handles[::2]:
            task.free_pages(handle)
    assert all(n == 0 for n in m.buddyinfo()[0][3:]), m.buddyinfo()
