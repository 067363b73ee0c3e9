"""gfp masks: the v4.2 bit values and composites of docs/kernel.md §1.1, and how bad masks are
rejected (issue 2: unknown names raise ValueError listing the valid ones)."""
import pytest

import core

# §1.1 table, transcribed: every single-bit flag of v4.2 include/linux/gfp.h
V42_FLAGS = {
    "__GFP_DMA": 0x01, "__GFP_HIGHMEM": 0x02, "__GFP_DMA32": 0x04, "__GFP_MOVABLE": 0x08,
    "__GFP_WAIT": 0x10, "__GFP_HIGH": 0x20, "__GFP_IO": 0x40, "__GFP_FS": 0x80,
    "__GFP_COLD": 0x100, "__GFP_NOWARN": 0x200, "__GFP_REPEAT": 0x400,
    "__GFP_NOFAIL": 0x800, "__GFP_NORETRY": 0x1000, "__GFP_MEMALLOC": 0x2000,
    "__GFP_COMP": 0x4000, "__GFP_ZERO": 0x8000, "__GFP_NOMEMALLOC": 0x10000,
    "__GFP_HARDWALL": 0x20000, "__GFP_THISNODE": 0x40000, "__GFP_RECLAIMABLE": 0x80000,
    "__GFP_NOACCOUNT": 0x100000, "__GFP_NOTRACK": 0x200000, "__GFP_NO_KSWAPD": 0x400000,
    "__GFP_OTHER_NODE": 0x800000, "__GFP_WRITE": 0x1000000,
}

# §1.1 composite masks of v4.2, as hex (GFP_NOWAIT is 0: "atomic" minus __GFP_HIGH)
V42_COMPOSITES = {
    "GFP_ATOMIC": 0x20,
    "GFP_NOWAIT": 0x0,
    "GFP_NOIO": 0x10,
    "GFP_NOFS": 0x50,
    "GFP_KERNEL": 0xd0,
    "GFP_USER": 0x200d0,
    # HIGHUSER_MOVABLE (0x200da) | COMP | NOMEMALLOC | NORETRY | NOWARN | NO_KSWAPD
    "GFP_TRANSHUGE": 0x4352da,
}


@pytest.mark.parametrize("name,value", sorted(V42_FLAGS.items()))
def test_single_flag_has_its_v42_bit(name, value):
    assert core.gfp(name) == value


@pytest.mark.parametrize("name,value", sorted(V42_COMPOSITES.items()))
def test_composite_mask_has_its_v42_value(name, value):
    assert core.gfp(name) == value


def test_every_flag_fits_below_gfp_bits_shift():
    # §1.1: __GFP_BITS_SHIFT = 25, and the 25 flags are the 25 distinct bits below it
    assert sorted(core.gfp(name) for name in V42_FLAGS) == [1 << b for b in range(25)]


@pytest.mark.parametrize("spec,value", [
    ("GFP_KERNEL|__GFP_NOFAIL", 0xd0 | 0x800),
    ("GFP_NOFS|__GFP_NORETRY|__GFP_NOWARN", 0x50 | 0x1000 | 0x200),
    ("GFP_NOWAIT|__GFP_THISNODE", 0x40000),
    ("GFP_ATOMIC|__GFP_NOMEMALLOC", 0x20 | 0x10000),
    ("__GFP_WAIT|__GFP_IO|__GFP_FS", 0xd0),          # GFP_KERNEL spelled out
])
def test_or_of_names_is_the_or_of_bits(spec, value):
    assert core.gfp(spec) == value


def test_atomic_and_nowait_cannot_sleep_but_kernel_can():
    # the property every design turns on: reclaim needs __GFP_WAIT (§1.1, §2.3 step 6)
    wait = V42_FLAGS["__GFP_WAIT"]
    assert core.gfp("GFP_ATOMIC") & wait == 0
    assert core.gfp("GFP_NOWAIT") & wait == 0
    assert core.gfp("GFP_NOFS") & wait
    assert core.gfp("GFP_KERNEL") & wait
    # GFP_NOFS may sleep but may not call into the FS (no dentry shrinking, §2.6)
    assert core.gfp("GFP_NOFS") & V42_FLAGS["__GFP_FS"] == 0


def test_unknown_name_is_a_value_error_listing_valid_names():
    with pytest.raises(ValueError) as err:
        core.gfp("GFP_KERNEL|__GFP_NOFAIL_PLEASE")
    message = str(err.value)
    assert "__GFP_NOFAIL_PLEASE" in message
    assert "GFP_KERNEL" in message and "__GFP_NOFAIL" in message


def test_4_4_names_are_not_v42_flags():
    # __GFP_RECLAIM / __GFP_DIRECT_RECLAIM arrived with the 4.4 renaming (§1.2)
    for name in ("__GFP_DIRECT_RECLAIM", "__GFP_RECLAIM"):
        with pytest.raises(ValueError):
            core.gfp(name)


def test_gfp_account_is_a_model_bit_of_its_own():
    # 4.5 (a9bb7e620efd) gave the opt-in __GFP_ACCOUNT the value of the opt-out
    # __GFP_NOACCOUNT; the model keeps both (issue 20), so the opt-in sits above the 25 bits
    account = core.gfp("__GFP_ACCOUNT")
    assert account >= 1 << 25 and account & core.gfp("__GFP_NOACCOUNT") == 0
    assert core.gfp("GFP_KERNEL_ACCOUNT") == core.gfp("GFP_KERNEL") | account


def test_task_requests_reject_bad_gfp_names():
    m = core.Machine(nodes=1, mem_mib=32, cpus=1)
    m.mkdir("/a")
    task = m.spawn("/a")
    with task.syscall():
        with pytest.raises(ValueError, match="GFP_KERNEL"):
            task.kmalloc(64, "GFP_KERNAL")
        with pytest.raises(ValueError, match="GFP_KERNEL"):
            task.alloc_pages(0, "GFP_KERNEL|NOFAIL")
