"""The designs are one policy table (issue 3, docs/kernel.md §8.3): every difference is a
field, the layers never test a design name, and a design is added as a row."""
import pathlib

import pytest

import core

CORE = pathlib.Path(core.__file__).parent
LAYERS = ("buddy", "compaction", "vmscan", "oom", "memcg", "slab_common", "slub", "slab", "task")


def test_every_row_sets_every_field_and_rows_differ():
    fields = {frozenset(row) for row in core.POLICIES.values()}
    assert len(fields) == 1
    rows = [tuple(sorted(row.items())) for row in core.POLICIES.values()]
    assert len(set(rows)) == len(rows)
    assert core.DESIGNS[:3] == ("v4.3", "way1", "way2")


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_tests_a_design_name(layer):
    code = (CORE / f"{layer}.pxi").read_text()
    for name in core.DESIGNS:
        for quoted in (f'"{name}"', f"'{name}'"):
            assert quoted not in code, f"{layer}.pxi compares with the design name {quoted}"
    assert "design" not in "".join(line.split("#")[0] for line in code.splitlines()
                                   if '"""' not in line).replace("designs", "")


def nowait_burst(design):
    """One syscall of many GFP_NOWAIT kmallocs under memory.high (Heo's back-to-back
    NOWAIT concern, §6.1): what is over high after the syscall returns?"""
    m = core.Machine(nodes=1, mem_mib=512, cpus=2, design=design)
    m.mkdir("/a")
    m.write("/a", "memory.high", "16M")
    t = m.spawn("/a", cpu=0)
    t.read_file(24 << 20)                      # reclaimable page cache up to high
    with t.syscall():
        t.kmalloc(256, "GFP_NOWAIT")            # start the clone's creation
    t.read_file(4096)                           # ... and let its work item run
    with t.syscall():
        for _ in range(8192):                   # 8 MiB of kmalloc-1024, never freed
            t.kmalloc(1024, "GFP_NOWAIT")
    return int(m.read("/a", "memory.current")) - (16 << 20), m.metrics()


def test_way2_plus_differs_from_way2_in_one_field_only():
    diff = {k for k in core.POLICIES["way2"] if core.POLICIES["way2"][k] != core.POLICIES["way2+"][k]}
    assert diff == {"high_nowait"}


def test_way2_plus_catches_back_to_back_nowait_over_high():
    over_way2, _ = nowait_burst("way2")
    over_plus, metrics = nowait_burst("way2+")
    assert over_way2 > (4 << 20)                # NOWAIT charges skip memory.high (4.2 rule)
    assert over_plus <= 0                       # punted, reclaimed on the way out
    assert metrics["reclaim_rounds_return_to_user"] > 0
