"""The buddy allocator: split/merge (docs/kernel.md §5.1), watermarks (§5.2, §5.3), alloc flags
(§5.4) and the zonelist / slowpath rules of §5.5 that decide which node a page comes from.

Expected numbers are worked out by hand in the comments from the rules of those sections.
"""
import random

import pytest

import core
from kernel_selftest import MAX_ORDER, MB


def machine(nodes=1, mem_mib=64, **kw):
    # the simulator puts at least one CPU on every node
    return core.Machine(nodes=nodes, mem_mib=mem_mib, cpus=max(2, nodes), **kw)


def fill_node(m, task, node, gfp):
    """Order-0 pages on `node` with `gfp` until a request fails (call inside a syscall)."""
    handles = []
    for _ in range(m.zoneinfo(node)["managed"]):
        handle = task.alloc_pages(0, gfp, node=node)
        if handle is None:
            return handles
        handles.append(handle)
    raise AssertionError(f"{gfp} on node {node} never failed")


# ---- §5.1 split and merge ----------------------------------------------------------------

def test_fresh_zone_is_whole_max_order_blocks():
    m = machine(mem_mib=64)                      # 16384 pages = 16 blocks of 1024
    assert m.buddyinfo() == [[0] * 10 + [16]]
    assert m.zoneinfo(0)["free"] == m.zoneinfo(0)["managed"] == 16384


def test_split_returns_upper_halves_and_merge_needs_a_free_buddy():
    m = machine(mem_mib=64)
    task = m.spawn("/")
    with task.syscall():
        a = task.alloc_pages(0, "GFP_KERNEL", node=0)
        # expand(): one order-10 block split down to order 0, an upper half left per order
        assert m.buddyinfo()[0] == [1] * 10 + [15]
        b = task.alloc_pages(0, "GFP_KERNEL", node=0)
        # __rmqueue_smallest takes the smallest free block: a's order-0 buddy
        assert m.buddyinfo()[0] == [0] + [1] * 9 + [15]
        c = task.alloc_pages(0, "GFP_KERNEL", node=0)
        # next smallest is the order-1 block: split, one order-0 half stays free
        assert m.buddyinfo()[0] == [1, 0] + [1] * 8 + [15]
        task.free_pages(a)
        # a's buddy b is in use, so a stays an order-0 block (pfn ^ 1 not free)
        assert m.buddyinfo()[0] == [2, 0] + [1] * 8 + [15]
        task.free_pages(b)
        # a+b merge to order 1, whose buddy (c's pair) is still split
        assert m.buddyinfo()[0] == [1, 1] + [1] * 8 + [15]
        task.free_pages(c)
        # everything merges back up to one order-10 block
        assert m.buddyinfo()[0] == [0] * 10 + [16]


def test_high_order_split_only_touches_orders_above_the_request():
    m = machine(mem_mib=64)
    task = m.spawn("/")
    with task.syscall():
        page = task.alloc_pages(3, "GFP_KERNEL|__GFP_COMP", node=0)
        assert m.buddyinfo()[0] == [0, 0, 0] + [1] * 7 + [15]
        assert m.zoneinfo(0)["free"] == 16384 - 8
        task.free_pages(page)
    assert m.buddyinfo()[0] == [0] * 10 + [16]


@pytest.mark.parametrize("nodes", [1, 2])
def test_freeing_everything_in_any_order_restores_the_free_lists(nodes):
    m = machine(nodes=nodes, mem_mib=64)
    initial = m.buddyinfo()
    task = m.spawn("/")
    rng = random.Random(7)
    with task.syscall():
        handles = [task.alloc_pages(rng.choice([0, 0, 0, 1, 2, 3, 5]), "GFP_KERNEL",
                                    node=rng.randrange(nodes))
                   for _ in range(600)]
        assert None not in handles
        assert m.buddyinfo() != initial
        rng.shuffle(handles)
        for handle in handles:
            task.free_pages(handle)
    assert m.buddyinfo() == initial
    for node in range(nodes):
        assert m.zoneinfo(node)["free"] == m.zoneinfo(node)["managed"]


# ---- §5.3 __zone_watermark_ok --------------------------------------------------------------

def nr_free(*counts):
    return list(counts) + [0] * (MAX_ORDER - len(counts))


def free_of(counts):
    return sum(n << order for order, n in enumerate(counts))


WATERMARK_CASES = [
    # (nr_free per order, order, mark, alloc_flags, expected)      -- hand computation
    (nr_free(101), 0, 100, "", True),        # 101 > 100
    (nr_free(100), 0, 100, "", False),       # step 4 fails on free <= min
    (nr_free(51), 0, 100, "ALLOC_HIGH", True),             # min 100 - 50 = 50
    (nr_free(50), 0, 100, "ALLOC_HIGH", False),
    (nr_free(76), 0, 100, "ALLOC_HARDER", True),           # min 100 - 25 = 75
    (nr_free(75), 0, 100, "ALLOC_HARDER", False),
    (nr_free(39), 0, 100, "ALLOC_HIGH|ALLOC_HARDER", True),   # 100-50=50, 50-12=38
    (nr_free(38), 0, 100, "ALLOC_HIGH|ALLOC_HARDER", False),
    (nr_free(0), 0, 0, "", False),           # 0 <= 0: an empty zone fails even at mark 0
    # order 2, mark 16: free 190 -> 187 > 16; o0: 187-150=37 > 8; o1: 37-20=17 > 4
    (nr_free(150, 10, 5), 2, 16, "", True),
    # order 2, mark 16: free 200 -> 197 > 16; o0: 17 > 8; o1: 17-16=1 <= 4: one order-2 block
    (nr_free(180, 8, 1), 2, 16, "", False),
    # order 1, mark 40: free 100 -> 99 > 40; o0: 99-80=19 <= 20
    (nr_free(80, 10), 1, 40, "", False),
    # the same with ALLOC_HIGH: min 20; 99 > 20; o0: 19 > 10 -- HIGH also eases the loop
    (nr_free(80, 10), 1, 40, "ALLOC_HIGH", True),
    # order 3, mark 8: 96-7=89 > 8; o0: 85 > 4; o1: 81 > 2; o2: 81-80=1 <= 1
    (nr_free(4, 2, 20, 1), 3, 8, "", False),
    # one more order-3 block: 104-7=97; o0: 93; o1: 89; o2: 9 > 1
    (nr_free(4, 2, 20, 2), 3, 8, "", True),
    # one order-10 block: 1024-1023 = 1 > 0; the loop removes nothing
    (nr_free(*[0] * 10, 1), 10, 0, "", True),
    (nr_free(*[0] * 10, 1), 10, 1, "", False),  # 1 <= 1
]


@pytest.mark.parametrize("counts,order,mark,alloc_flags,expected", WATERMARK_CASES)
def test_zone_watermark_ok_hand_computed(counts, order, mark, alloc_flags, expected):
    ok = core.watermark_ok(free_of(counts), counts, order, mark, alloc_flags=alloc_flags)
    assert bool(ok) is expected


# ---- §5.2 watermarks from min_free_kbytes ----------------------------------------------

# min_free_kbytes = clamp(isqrt(lowmem_kbytes * 16), 128, 65536); pages_min = that / 4;
# per zone min = pages_min * managed / total; low = min + min/4; high = min + min/2
WATERMARKS = [
    # nodes, mem_mib -> managed, min, low, high per node
    (1, 16, 4096, 128, 160, 192),       # isqrt(16384*16) = 512 KiB
    (1, 48, 12288, 221, 276, 331),      # isqrt(49152*16) = 886 KiB -> 221 pages
    (1, 64, 16384, 256, 320, 384),      # 1024 KiB
    (1, 100, 25600, 320, 400, 480),     # isqrt(1638400) = 1280 KiB
    (1, 1024, 262144, 1024, 1280, 1536),  # 4096 KiB
    (2, 128, 16384, 181, 226, 271),     # isqrt(2097152) = 1448 KiB -> 362 pages / 2 nodes
    (2, 1024, 131072, 512, 640, 768),
    (4, 256, 16384, 128, 160, 192),     # 2048 KiB -> 512 pages / 4 nodes
]


@pytest.mark.parametrize("nodes,mem_mib,managed,wmin,wlow,whigh", WATERMARKS)
def test_watermarks_follow_min_free_kbytes(nodes, mem_mib, managed, wmin, wlow, whigh):
    m = machine(nodes=nodes, mem_mib=mem_mib)
    for node in range(nodes):
        zone = m.zoneinfo(node)
        assert (zone["managed"], zone["min"], zone["low"], zone["high"]) == \
            (managed, wmin, wlow, whigh)


# ---- §5.4 alloc flags: how far each kind of request may dip below the watermark ---------

def test_atomic_requests_dip_into_reserves_as_alloc_flags_allow():
    m = machine(mem_mib=64)
    task = m.spawn("/")
    wmin = m.zoneinfo(0)["min"]                  # 256 (see above)
    with task.syscall():
        # NOWAIT|NOMEMALLOC: atomic, but NOMEMALLOC suppresses ALLOC_HARDER -> stops at min
        fill_node(m, task, 0, "GFP_NOWAIT|__GFP_NOMEMALLOC")
        assert m.zoneinfo(0)["free"] == wmin
        # plain GFP_NOWAIT gets ALLOC_HARDER in 4.2/4.3: min - min/4
        fill_node(m, task, 0, "GFP_NOWAIT")
        assert m.zoneinfo(0)["free"] == wmin - wmin // 4
        # GFP_ATOMIC gets HIGH and HARDER: (min - min/2) - (min - min/2)/4
        fill_node(m, task, 0, "GFP_ATOMIC")
        half = wmin - wmin // 2
        assert m.zoneinfo(0)["free"] == half - half // 4
        # __GFP_MEMALLOC ignores watermarks (ALLOC_NO_WATERMARKS) unless NOMEMALLOC
        assert task.alloc_pages(0, "GFP_ATOMIC|__GFP_MEMALLOC|__GFP_NOMEMALLOC") is None
        assert task.alloc_pages(0, "GFP_ATOMIC|__GFP_MEMALLOC") is not None


# ---- §5.5 zonelist fallback and __GFP_THISNODE -------------------------------------------

def test_thisnode_nowait_stops_at_low_watermark_without_waking_kswapd():
    m = machine(nodes=2, mem_mib=64)
    task = m.spawn("/")
    wakeups = m.metrics()["kswapd_wakeups"]
    with task.syscall():
        handles = fill_node(m, task, 0, "GFP_NOWAIT|__GFP_THISNODE")
    assert {m.node_of(h) for h in handles} == {0}
    # the fast path allocates while free > low; step b fails THISNODE&!WAIT at once
    assert m.zoneinfo(0)["free"] == m.zoneinfo(0)["low"]
    assert m.metrics()["kswapd_wakeups"] == wakeups
    assert m.zoneinfo(1)["free"] == m.zoneinfo(1)["managed"]


@pytest.mark.parametrize("preferred", [0, 1])
def test_full_preferred_node_falls_back_to_the_other_node(preferred):
    m = machine(nodes=2, mem_mib=64)
    task = m.spawn("/")
    other = 1 - preferred
    with task.syscall():
        fill_node(m, task, preferred, "GFP_NOWAIT|__GFP_THISNODE")
        wakeups = m.metrics()["kswapd_wakeups"]
        for _ in range(64):
            handle = task.alloc_pages(0, "GFP_KERNEL", node=preferred)
            assert handle is not None and m.node_of(handle) == other
        # the other node passed its low watermark in the fast path: no slowpath, no kswapd
        assert m.metrics()["kswapd_wakeups"] == wakeups


def test_thisnode_with_wait_fails_at_min_watermark_and_never_leaves_its_node():
    m = machine(nodes=2, mem_mib=64)
    task = m.spawn("/")
    with task.syscall():
        fill_node(m, task, 0, "GFP_NOWAIT|__GFP_THISNODE")
        wakeups = m.metrics()["kswapd_wakeups"]
        handles = fill_node(m, task, 0, "GFP_KERNEL|__GFP_THISNODE")
    assert handles and {m.node_of(h) for h in handles} == {0}
    # slowpath: kswapd woken (c), MIN watermark (d), nothing reclaimable (j), and no OOM
    # kill for THISNODE (m) -> the request fails with free at min
    assert m.metrics()["kswapd_wakeups"] > wakeups
    assert m.zoneinfo(0)["free"] == m.zoneinfo(0)["min"]
    assert m.metrics()["oom_kills_global"] == 0
    assert m.zoneinfo(1)["free"] == m.zoneinfo(1)["managed"]


# ---- §5.5 m: the global OOM killer -----------------------------------------------------------

def exhausted_machine():
    """64 MiB, all but 1 MiB held as unreclaimable anon by `hog` (no swap)."""
    m = machine(mem_mib=64)
    hog = m.spawn("/")
    assert hog.fault_anon(MB(62))
    return m, hog, m.spawn("/")


def allocate_until_none(task, order, gfp, limit=4096):
    for count in range(limit):
        if task.alloc_pages(order, gfp) is None:
            return count
    return limit


def test_global_oom_kill_only_for_fs_requests_up_to_costly_order():
    m, hog, task = exhausted_machine()
    with task.syscall():
        # order > PAGE_ALLOC_COSTLY_ORDER: reclaim and compaction, then failure, no OOM
        allocate_until_none(task, 4, "GFP_KERNEL")
        # no __GFP_FS: the OOM killer "does not compensate for IO-less reclaim"
        allocate_until_none(task, 0, "GFP_NOFS")
        assert m.metrics()["oom_kills_global"] == 0 and not hog.killed
        # GFP_KERNEL order 0: out_of_memory() kills the biggest task and the request succeeds
        assert task.alloc_pages(0, "GFP_KERNEL") is not None
    assert hog.killed
    assert m.metrics()["oom_kills_global"] == 1


def test_nofail_without_fs_still_gets_the_oom_killer():
    # §5.5 m: the "skip the OOM kill" exceptions apply only without __GFP_NOFAIL
    m, hog, task = exhausted_machine()
    with task.syscall():
        for _ in range(MB(2) // 4096):
            assert task.alloc_pages(0, "GFP_NOFS|__GFP_NOFAIL") is not None
    assert hog.killed


# ---- arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,argument", [
    ({"nodes": 0}, "nodes"),
    ({"nodes": 9}, "nodes"),
    ({"mem_mib": 8}, "mem_mib"),
])
def test_machine_rejects_out_of_range_sizes_naming_the_argument(kwargs, argument):
    params = {"nodes": 1, "mem_mib": 64, "cpus": 1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        core.Machine(**params)


def test_machine_takes_no_seed_because_it_draws_nothing_random():
    # a Machine is deterministic; a seed it ignored (and stored in a C int: >= 2**31 raised
    # OverflowError) is refused, naming where randomness lives instead
    for seed in (0, 2**31, 2**64 - 1):
        with pytest.raises(TypeError, match=r"^seed: .*run_workload\(spec, seed\)"):
            core.Machine(nodes=1, mem_mib=64, cpus=1, seed=seed)
    with pytest.raises(TypeError, match="unexpected argument 'sede'"):
        core.Machine(nodes=1, mem_mib=64, cpus=1, sede=1)
