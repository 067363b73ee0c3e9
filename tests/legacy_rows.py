"""The workloads whose metrics pin the 4.x rows (v4.3, way1, way2, way2+) bit for bit.

Adding a design (issue 14: the 6.x row) must not change what the existing rows compute:
tests/fixtures/legacy_rows.json holds these workloads' metrics as computed by the build
*before* the 6.x mechanisms existed (main at 179211c,
with the i10 metrics merged; the metrics both have are equal). Regenerate only when a change is
meant to alter the 4.x rows:  PYTHONPATH=. .venv/bin/python tests/legacy_rows.py

Regenerated for issue 20 (branch i20core), whose model fixes change the 4.x rows on purpose:
SLAB alien caches (remote frees go back to their node) and shared arrays, faults never carry the syscall's
`locked` flag and reclaim under mmap_sem counts as locked, an OOM-killed task's scheduled
frees are dropped, and alloc_pages requests carry __GFP_ACCOUNT (which moves the request
hash; the 4.x rows do not read the bit). Each change has its own test (docs/model.md
"What changed (issue 20)").
"""
import json
import pathlib

import yaml

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "legacy_rows.json"
MIXES = pathlib.Path(__file__).resolve().parent.parent / "configs" / "mixes"
LEGACY_DESIGNS = ("v4.3", "way1", "way2", "way2+")
# (mix, allocator, slub/slab max order, nodes, memory.max): pressure on every path the new
# fields touch - stock, retries, high punting, forced charges, slab charging, SLAB probes
CASES = (
    ("kernel", "slub", 3, 1, "4M"),
    ("nowait-burst", "slub", 3, 2, "4M"),
    ("atomic", "slub", 1, 1, "4M"),
    ("nofail", "slub", 3, 1, "4M"),
    ("dentry-find", "slub", 3, 2, "8M"),
    ("nofs", "slub", 0, 1, "4M"),
    ("numa-remote", "slab", 1, 2, "4M"),
    ("kernel", "slab", 1, 2, "4M"),
    ("pressure", "slub", 3, 2, "4M"),
    ("pressure", "slab", 1, 2, "4M"),
)
# unreclaimable kmem of every gfp class, kept long: the cgroup sits at memory.max
PRESSURE = {"name": "pressure", "burst": 8, "locked_share": 0.2,
            "lifetime": {"mean": 4000, "long_lived_share": 0.5},
            "requests": [
                {"kind": "kmalloc", "weight": 30, "gfp": "GFP_KERNEL", "size": {"min": 64, "max": 16384}},
                {"kind": "kmalloc", "weight": 20, "gfp": "GFP_NOWAIT", "size": {"min": 64, "max": 2048}},
                {"kind": "kmalloc", "weight": 10, "gfp": "GFP_ATOMIC", "size": {"min": 64, "max": 2048}},
                {"kind": "kmalloc", "weight": 10, "gfp": "GFP_NOFS", "size": {"min": 64, "max": 4096}},
                {"kind": "alloc_pages", "weight": 5, "gfp": "GFP_KERNEL|__GFP_NOFAIL", "order": 0},
                {"kind": "alloc_pages", "weight": 5, "gfp": "GFP_KERNEL|__GFP_COMP", "order": 2},
                {"kind": "dentries", "weight": 10, "count": 4},
                {"kind": "fault_anon", "weight": 5, "pages": 4}]}
SEEDS = (1, 2)


def spec(case, design):
    mix, allocator, order, nodes, limit = case
    machine = {"nodes": nodes, "mem_mib": 128, "cpus": 2, "allocator": allocator,
               "slub_max_order": order}       # the max order of either allocator
    return {"machine": machine, "design": design, "cgroup": {"max": limit, "high": 0.75},
            "background": {"file_mib": 32, "fragment": 0.1}, "tasks": 3,
            "length": {"kernel_entries": 600},
            "mix": PRESSURE if mix == "pressure" else
                   yaml.safe_load((MIXES / f"{mix}.yaml").read_text())}


def key(case, design, seed):
    return "/".join(map(str, case)) + f"/{design}/{seed}"


def compute():
    import core
    return {key(case, design, seed): core.run_workload(spec(case, design), seed)
            for case in CASES for design in LEGACY_DESIGNS for seed in SEEDS}


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(compute(), indent=0, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
