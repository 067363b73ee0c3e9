"""The slab layer: SLUB geometry (docs/kernel.md §3.5), kmalloc size classes (§3.6), large
kmalloc as kmem pages (§2.4, §3.6), SLAB geometry (§4.5) and reclaimable dentries (§2.6).

Geometry is observed the way a user would: by allocating objects on a fresh machine and
counting the slab pages that appear (one slab until it is full, then the next).
"""
from pathlib import Path

import pytest

import core
from kernel_selftest import MB, PAGE_SIZE, cg_read_long, warm_kmalloc

CPUS = (1, 2, 4, 8, 16, 64, 256)

# §3.5 table, transcribed: size -> (order, objects) per CPU count of CPUS; then s->min
SLUB_TABLE = {
    8: ["o0/512"] * 7,
    16: ["o0/256"] * 7,
    32: ["o0/128"] * 7,
    64: ["o0/64"] * 7,
    96: ["o0/42"] * 7,
    128: ["o0/32"] * 6 + ["o1/64"],
    192: ["o0/21"] * 4 + ["o1/42"] * 3,
    256: ["o0/16"] * 3 + ["o1/32"] * 3 + ["o2/64"],
    512: ["o0/8", "o1/16", "o1/16", "o2/32", "o2/32", "o2/32", "o3/64"],
    1024: ["o1/8", "o2/16", "o2/16", "o3/32", "o3/32", "o3/32", "o3/32"],
    2048: ["o2/8"] + ["o3/16"] * 6,
    4096: ["o3/8"] * 7,
    8192: ["o3/4"] * 7,
}
SLUB_MIN = {size: "o1/1" if size == 8192 else f"o0/{PAGE_SIZE // size}" for size in SLUB_TABLE}


def parse(cell):
    order, objects = cell[1:].split("/")
    return int(order), int(objects)


@pytest.mark.parametrize("size", sorted(SLUB_TABLE))
@pytest.mark.parametrize("cpus", CPUS)
def test_slub_geometry_matches_the_table(size, cpus):
    order, objects = parse(SLUB_TABLE[size][CPUS.index(cpus)])
    min_order, min_objects = parse(SLUB_MIN[size])
    assert core.slub_geometry(size, cpus, slub_max_order=3) == {
        "order": order, "objects": objects, "min_order": min_order, "min_objects": min_objects}


@pytest.mark.parametrize("size,cpus,max_order,expected", [
    # calculate_order with a lower slub_max_order: min_objects is capped at what fits
    (2048, 2, 1, (1, 4)),      # 12 objects wanted, 4 fit in order 1
    (2048, 2, 0, (0, 2)),
    (8192, 2, 0, (1, 1)),      # one object needs order 1: the "up to MAX_ORDER" step
    (512, 256, 2, (2, 32)),
])
def test_slub_geometry_respects_slub_max_order(size, cpus, max_order, expected):
    geometry = core.slub_geometry(size, cpus, slub_max_order=max_order)
    assert (geometry["order"], geometry["objects"]) == expected


def present_cpus():
    # /sys/devices/system/cpu/present is a list like "0-1" or "0,2-3"
    text = Path("/sys/devices/system/cpu/present").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def real_kmalloc_caches():
    """(size, order, objs_per_slab) of this machine's undebugged kmalloc-* caches."""
    root = Path("/sys/kernel/slab")
    for size in SLUB_TABLE:
        name = f"kmalloc-{size // 1024}k" if size >= 1024 else f"kmalloc-{size}"
        cache = root / name
        read = lambda f: int((cache / f).read_text())   # noqa: E731
        if cache.is_dir() and read("slab_size") == read("object_size") == size:
            yield size, read("order"), read("objs_per_slab")


def slub_sysfs_with_default_geometry():
    cmdline = Path("/proc/cmdline")
    return (Path("/sys/kernel/slab/kmalloc-8").is_dir()
            and not (cmdline.exists() and "slub_" in cmdline.read_text()))


@pytest.mark.skipif(not slub_sysfs_with_default_geometry(),
                    reason="needs SLUB sysfs and default slub_* boot parameters")
def test_slub_geometry_matches_this_machines_kernel():
    # kernels since 4.2 keep the §3.5 rules for undebugged kmalloc caches (6.x counts
    # present CPUs); caches with debug metadata (slab_size != object_size) are left out
    cpus = present_cpus()
    compared = 0
    for size, order, objects in real_kmalloc_caches():
        geometry = core.slub_geometry(size, cpus, slub_max_order=3)
        assert (geometry["order"], geometry["objects"]) == (order, objects), size
        compared += 1
    assert compared >= 8


# ---- geometry observed through allocations ------------------------------------------------

def slab_pages(m):
    return sum(m.node_pages(node)["slab"] for node in range(len(m.buddyinfo())))


def slab_pages_after(m, size, count):
    """Slab pages a root task holds after `count` kmalloc(size) on a fresh machine."""
    task = m.spawn("/")
    with task.syscall():
        for _ in range(count):
            assert task.kmalloc(size, "GFP_KERNEL") is not None
    return slab_pages(m)


def fresh(allocator, **kw):
    return core.Machine(nodes=1, mem_mib=kw.pop("mem_mib", 64), cpus=2, allocator=allocator,
                        **kw)


# request size -> (class, order, objects per slab) for SLUB at 2 CPUs (§3.6, §3.5 table)
SLUB_CLASSES = [
    (1, 8, 0, 512), (8, 8, 0, 512), (9, 16, 0, 256), (33, 64, 0, 64),
    (65, 96, 0, 42), (96, 96, 0, 42), (97, 128, 0, 32), (129, 192, 0, 21),
    (192, 192, 0, 21), (193, 256, 0, 16), (257, 512, 1, 16), (1025, 2048, 3, 16),
    (4097, 8192, 3, 4), (8192, 8192, 3, 4),
]


@pytest.mark.parametrize("size,size_class,order,objects", SLUB_CLASSES)
def test_slub_kmalloc_size_classes(size, size_class, order, objects):
    # one slab holds exactly `objects` of them; one more object opens a second slab
    assert slab_pages_after(fresh("slub"), size, objects) == 1 << order
    assert slab_pages_after(fresh("slub"), size, objects + 1) == 2 << order


@pytest.mark.parametrize("size,order", [(8193, 2), (16384, 2), (65536, 4), (MB(1), 8)])
def test_slub_large_kmalloc_is_kmem_pages(size, order):
    m = fresh("slub")
    task = m.spawn("/")
    free = m.zoneinfo(0)["free"]
    with task.syscall():
        handle = task.kmalloc(size, "GFP_KERNEL")
        assert handle is not None
        assert slab_pages(m) == 0                       # kmalloc_large bypasses slab
        assert m.zoneinfo(0)["free"] == free - (1 << order)
        task.kfree(handle)
    assert m.zoneinfo(0)["free"] == free


def test_slub_large_kmalloc_is_charged_as_kernel_memory():
    m = fresh("slub")
    m.mkdir("/a")
    task = m.spawn("/a")
    with task.syscall():
        handle = task.kmalloc(3 * PAGE_SIZE, "GFP_KERNEL")     # order 2
    assert m.stat("/a")["kernel"] == 4 * PAGE_SIZE
    assert m.stat("/a")["slab"] == 0
    with task.syscall():
        task.kfree(handle)
    assert m.stat("/a")["kernel"] == 0


# SLAB with slab_max_order 1 (RAM > 32 MiB): the freelist is off-slab from 128 bytes, so a
# class of size s holds (PAGE_SIZE << order) // s objects at the first order that fits one
SLAB_CLASSES = [
    (100, 128, 0, 32), (200, 256, 0, 16), (512, 512, 0, 8), (1000, 1024, 0, 4),
    (3000, 4096, 0, 1), (5000, 8192, 1, 1), (8193, 16384, 2, 1), (65536, 65536, 4, 1),
    (MB(4), MB(4), 10, 1),
]


@pytest.mark.parametrize("size,size_class,order,objects", SLAB_CLASSES)
def test_slab_geometry_and_size_classes(size, size_class, order, objects):
    def machine():
        return fresh("slab", slub_max_order=1)
    assert slab_pages_after(machine(), size, objects) == 1 << order
    assert slab_pages_after(machine(), size, objects + 1) == 2 << order


def test_slab_smallest_class_is_32_bytes():
    # SLAB: KMALLOC_SHIFT_LOW = 5; an 8-byte request takes a 32-byte object (§3.6)
    def pages_for(size):
        return slab_pages_after(fresh("slab", slub_max_order=1), size, 2000)
    assert pages_for(8) == pages_for(32) < pages_for(33)
    # SLUB goes down to 8 bytes
    assert slab_pages_after(fresh("slub"), 8, 2000) < slab_pages_after(fresh("slub"), 32, 2000)


def test_kmem_cache_create_fails_when_the_cache_table_is_full():
    # the table holds every root cache and one clone per memcg; past its end,
    # kmem_cache_create() must fail (-1, the machine stops) rather than hand out cache 0
    m = fresh("slub")
    ids = []
    while not ids or ids[-1] >= 0:
        ids.append(m._kmem_cache_create(64))
    assert ids[-1] == -1 and 0 not in ids
    assert len(set(ids[:-1])) == len(ids) - 1
    with pytest.raises(RuntimeError, match="could not grow one of its tables"):
        m.spawn("/")


def test_machine_rejects_unknown_allocator():
    with pytest.raises(ValueError, match="allocator") as err:
        core.Machine(nodes=1, mem_mib=64, cpus=1, allocator="slob")
    assert "slub" in str(err.value)


# ---- reclaimable slab: dentries are shrunk only with __GFP_FS (§2.6) ---------------------

@pytest.mark.parametrize("design", core.DESIGNS)
def test_dentries_are_reclaimable_only_with_fs(design):
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, allocator="slub", design=design)
    m.mkdir("/a")
    m.write("/a", "memory.max", "8M")
    task = m.spawn("/a")
    created = 0
    with task.syscall():
        for _ in range(200):                 # 20000 pairs: ~3x what fits in 8M
            created += task.create_dentries(100)
    # the shrinker made the room: more than half of the 2 * created objects were freed
    assert m.metrics()["reclaim_slab_objects"] > created
    assert m.stat("/a")["slab_reclaimable"] > 0
    assert cg_read_long(m, "/a", "memory.current") <= MB(8)
    shrunk = m.metrics()["reclaim_slab_objects"]
    with task.syscall():
        # GFP_NOFS cannot run the superblock shrinker and nothing else is reclaimable:
        # once the margin and the stock are used up, NOFS charges fail
        for _ in range(MB(8) // PAGE_SIZE):
            if task.alloc_pages(0, "GFP_NOFS") is None:
                break
        else:
            raise AssertionError("GFP_NOFS charges kept succeeding at memory.max")
        assert m.metrics()["reclaim_slab_objects"] == shrunk
        # GFP_KERNEL shrinks dentries and succeeds
        assert task.alloc_pages(0, "GFP_KERNEL") is not None
    assert m.metrics()["reclaim_slab_objects"] > shrunk


def test_memcg_slab_is_charged_per_slab_page():
    # §2.4: a clone's slab pages are charged when a slab is created, not per object, so
    # the charge grows in whole slabs (kmalloc-512 at 2 CPUs: order 1, 16 objects)
    m = fresh("slub")
    m.mkdir("/a")
    task = m.spawn("/a")
    warm_kmalloc(m, task, 512)
    steps = []
    with task.syscall():
        for _ in range(16 * 3):
            slab = m.stat("/a")["slab"]
            assert task.kmalloc(512, "GFP_KERNEL") is not None
            steps.append(m.stat("/a")["slab"] - slab)
    assert set(steps) == {0, 2 * PAGE_SIZE}
    assert steps.count(2 * PAGE_SIZE) in (2, 3)      # 48 objects; the warm slab may be reused


# ---- SLUB NUMA_NO_NODE partial search (§3.7) -------------------------------------------

def task_on_node(m, node):
    """A root task on a CPU of `node` (found by where its pages land)."""
    for cpu in range(m.cpus):
        task = m.spawn("/", cpu=cpu)
        with task.syscall():
            page = task.alloc_pages(0, "GFP_KERNEL")
            here = m.node_of(page)
            task.free_pages(page)
        if here == node:
            return task
        task.exit()
    raise AssertionError(f"no CPU on node {node}")


@pytest.mark.parametrize("partial_slabs,expected_node", [(8, 1), (5, 0)])
def test_slub_takes_remote_partial_slabs_only_beyond_min_partial(partial_slabs, expected_node):
    # kmalloc-512 at 2 CPUs: o1/16, min_partial = clamp(ilog2(512)/2, 5, 10) = 5
    m = core.Machine(nodes=2, mem_mib=64, cpus=2, allocator="slub")
    remote, local = task_on_node(m, 1), task_on_node(m, 0)
    with remote.syscall():
        slabs = [[remote.kmalloc(512, "GFP_KERNEL") for _ in range(16)]
                 for _ in range(partial_slabs + 1)]    # the last stays the CPU slab
        for objects in slabs[:-1]:
            remote.kfree(objects[0])                  # full -> partial on node 1
    with local.syscall():
        # NUMA_NO_NODE: the local node has no partial slab, so get_any_partial() looks at
        # the nodes holding more than min_partial partial slabs
        assert m.node_of(local.kmalloc(512, "GFP_KERNEL")) == expected_node
        # a node given: only that node's list, then a new slab there
        assert m.node_of(local.kmalloc(512, "GFP_KERNEL", node=0)) == 0


def test_slab_frees_a_remote_object_back_to_its_node():
    """Issue 20 point 3. 4.2 mm/slab.c __cache_free() -> cache_free_alien(): an object whose
    page is on another node than the freeing CPU's (numa_mem_id()) goes into that node's
    alien array (__cache_free_alien), flushed to its own node's lists by
    __drain_alien_cache() -> free_block() when full (12 entries, alloc_alien_cache) - never
    into the CPU's array cache, which serves local requests. So a node-0 request with
    __GFP_THISNODE is never handed the node-1 object just freed on node 0."""
    m = core.Machine(nodes=2, mem_mib=64, cpus=2, allocator="slab")
    task = m.spawn("/", cpu=0)                                # CPU 0 is on node 0
    with task.syscall():
        remote = task.kmalloc(64, node=1)
    assert m.node_of(remote) == 1
    task.kfree(remote)                                        # freed on node 0
    wrong = m.metrics()["slab_wrong_node_objects"]
    with task.syscall():
        local = task.kmalloc(64, "GFP_KERNEL|__GFP_THISNODE", node=0)
    assert local is not None and m.node_of(local) == 0
    assert m.metrics()["slab_wrong_node_objects"] == wrong


def test_slab_alien_array_flushes_to_the_remote_node_when_full():
    """__cache_free_alien(): the 13th remote free finds the 12-entry alien array full and
    drains it to node 1's lists first (free_block); node 1 then serves its own CPU's
    requests from those objects without growing a new slab."""
    m = core.Machine(nodes=2, mem_mib=64, cpus=2, allocator="slab")
    near, far = m.spawn("/", cpu=0), m.spawn("/", cpu=1)     # nodes 0 and 1
    with near.syscall():
        remote = [near.kmalloc(4096, node=1) for _ in range(13)]   # kmalloc-4096: 1 per slab
    assert {m.node_of(h) for h in remote} == {1}
    slabs = m.metrics()["slab_pages_allocated"]
    for h in remote:
        near.kfree(h)                          # 12 wait in the alien array, then all go back
    arrays = m._slab_arrays(4096)
    # the 12 went into node 1's shared array (transfer_objects), the 13th waits
    assert arrays["alien"][(0, 1)] == 1 and arrays["shared"][1] == 12
    with far.syscall():
        again = [far.kmalloc(4096) for _ in range(12)]
    assert {m.node_of(h) for h in again} == {1}
    assert m.metrics()["slab_pages_allocated"] == slabs   # the freed objects were reused


def test_slab_shared_array_passes_objects_between_cpus_of_a_node():
    """4.2 mm/slab.c: a full CPU array gives its oldest batchcount objects to the node's
    shared array (cache_flusharray), which holds 8 batches of a cache of objects up to a
    page on an SMP machine (enable_cpucache); cache_alloc_refill on another CPU of the node
    takes a batch from there (transfer_objects) before it looks at the slab lists."""
    m = core.Machine(nodes=1, mem_mib=64, cpus=2, allocator="slab")
    a, b = m.spawn("/", cpu=0), m.spawn("/", cpu=1)
    with a.syscall():
        handles = [a.kmalloc(64) for _ in range(240)]
    before = m._slab_arrays(64)
    for h in handles:                          # kmalloc-64: limit 120, batchcount 60
        a.kfree(h)
    after = m._slab_arrays(64)
    # every object is in CPU 0's array or, flushed a batch at a time, in the shared array
    assert after["cpu"][0] + after["shared"][0] == before["cpu"][0] + 240
    assert after["shared"][0] >= 60 and after["shared"][0] % 60 == 0
    assert after["free_objects"] == before["free_objects"]      # nothing went to the lists
    with b.syscall():
        b.kmalloc(64)
    taken = m._slab_arrays(64)
    assert taken["shared"][0] == after["shared"][0] - 60           # one batch to CPU 1
    assert taken["cpu"][1] == 59 and taken["free_objects"] == after["free_objects"]
