"""Grid expansion, common-random-number seeds, workload keys, shards and chunking."""
from __future__ import annotations

import itertools
import pathlib

import pytest
import yaml

import core
from sweep import config, grid, plan
from sweep_helpers import SMALL, write_config


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = write_config(tmp_path_factory.mktemp("grid"))
    cfg = config.load(path)
    return path, cfg, grid.build_cells(cfg, config.load_mixes(cfg, path))


def cells_for(path, *overrides):
    cfg = config.load(path, list(overrides))
    return grid.build_cells(cfg, config.load_mixes(cfg, path))


def test_one_cell_per_combination_of_the_axes(small):
    _, cfg, cells = small
    axes = SMALL["grid"]
    combos = set(itertools.product([grid.size_bytes(v) for v in axes["limit"]], axes["order"], axes["nodes"],
                                   axes["mix"]))
    assert len(cells) == len(combos) == 24
    assert {(c.axes["limit"], c.axes["order"], c.axes["nodes"], c.axes["mix"]) for c in cells} == combos
    assert len({c.cell_id for c in cells}) == len(cells)
    assert len({c.key for c in cells}) == len(cells)


def test_cell_specs_carry_the_axes_the_pins_and_the_inlined_mix(small, tmp_path):
    path, cfg, cells = small
    mix_file = yaml.safe_load((path.parent / "mixes" / "nowait-burst.yaml").read_text())
    cell = next(c for c in cells if c.axes == {"block": "", "limit": 128 * 2**20, "high": 0.75, "order": 0,
                                               "nodes": 2, "mix": "nowait-burst", "allocator": "slub",
                                               "cpus": SMALL["workload"]["machine"]["cpus"], "fragment": 0.0})
    for design in cfg.designs:
        spec = cell.specs[design]
        assert spec["design"] == design
        assert spec["machine"]["nodes"] == 2 and spec["machine"]["slub_max_order"] == 0
        assert spec["cgroup"]["max"] == 128 * 2**20
        assert spec["machine"]["mem_mib"] == SMALL["workload"]["machine"]["mem_mib"]
        assert spec["length"]["kernel_entries"] == SMALL["workload"]["length"]["kernel_entries"]
        assert spec["mix"]["name"] == "nowait-burst" and spec["mix"]["burst"] == mix_file["burst"]
        assert core.validate_spec(spec) == spec          # already normalised
    without_design = [{k: v for k, v in cell.specs[d].items() if k != "design"} for d in cfg.designs]
    assert all(s == without_design[0] for s in without_design)


def test_replications_share_a_seed_across_designs_and_nothing_else(small):
    _, cfg, cells = small
    wls = grid.workloads(cells, cfg.designs, 3, cfg.seed, core.MODEL_VERSION)
    assert len(wls) == len(cells) * 3 * len(cfg.designs)
    seeds = {}
    for w in wls:
        seeds.setdefault((w.cell.cell_id, w.replication), set()).add(w.seed)
    assert all(len(s) == 1 for s in seeds.values()), "designs of one replication must share the seed (CRN)"
    distinct = {next(iter(s)) for s in seeds.values()}
    assert len(distinct) == len(seeds), "different cells/replications must get different seeds"
    assert all(0 <= s < 2**63 for s in distinct)
    assert len({w.key for w in wls}) == len(wls)


def test_seeds_depend_on_root_seed_cell_and_replication_only(small):
    path, cfg, cells = small
    # the same cell inside a different grid (other axes, reordered values) keeps key and seeds
    other = cells_for(path, "grid.nodes=[2,1]", "grid.mix=[numa-remote]", "grid.limit=[128M]")
    mine = {c.axes["nodes"]: c for c in cells if c.axes["mix"] == "numa-remote" and c.axes["limit"] == 128 * 2**20
            and c.axes["order"] == 3}
    theirs = {c.axes["nodes"]: c for c in other if c.axes["order"] == 3}
    assert mine[2].key == theirs[2].key
    seeds = lambda cell, n: [grid.replication_seed(cfg.seed, cell.key, r) for r in range(n)]  # noqa: E731
    assert seeds(mine[2], 4) == seeds(theirs[2], 4)
    assert seeds(mine[2], 4) != [grid.replication_seed(cfg.seed + 1, mine[2].key, r) for r in range(4)]
    # a pinned workload field is part of the cell: changing it changes the cell and its seeds
    pinned = {c.axes["nodes"]: c for c in cells_for(path, "workload.tasks=3", "grid.mix=[numa-remote]",
                                                    "grid.limit=[128M]") if c.axes["order"] == 3}
    assert pinned[2].key != mine[2].key
    assert seeds(pinned[2], 4) != seeds(mine[2], 4)


def test_more_replications_extend_the_plan_without_changing_it(small):
    _, cfg, cells = small
    few = grid.workloads(cells, cfg.designs, 2, cfg.seed, core.MODEL_VERSION)
    more = grid.workloads(cells, cfg.designs, 5, cfg.seed, core.MODEL_VERSION)
    assert {w.key for w in few} < {w.key for w in more}
    per_cell = grid.workloads(cells, cfg.designs, {c.cell_id: (4 if i == 0 else 2) for i, c in enumerate(cells)},
                              cfg.seed, core.MODEL_VERSION)
    assert len(per_cell) == len(few) + 2 * len(cfg.designs)


def test_the_key_covers_spec_seed_and_model_version(small):
    _, cfg, cells = small
    spec = cells[0].specs["way1"]
    key = grid.workload_key(spec, 5, "m1")
    assert key == grid.workload_key(dict(reversed(list(spec.items()))), 5, "m1")   # order-free
    assert key != grid.workload_key(spec, 6, "m1")
    assert key != grid.workload_key(spec, 5, "m2")
    assert key != grid.workload_key(cells[0].specs["way2"], 5, "m1")


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_workloads(small, count):
    _, cfg, cells = small
    everything = {w.key for w in grid.workloads(cells, cfg.designs, 2, cfg.seed, core.MODEL_VERSION)}
    parts = []
    for index in range(count):
        shard = grid.Shard(index, count)
        mine = [c for c in cells if shard.holds(c)]
        parts.append({w.key for w in grid.workloads(mine, cfg.designs, 2, cfg.seed, core.MODEL_VERSION)})
    assert set().union(*parts) == everything
    assert sum(len(p) for p in parts) == len(everything), "a workload landed in two shards"
    if count <= 3:
        assert all(parts), "24 cells over <= 3 shards: none should be empty"


def test_shard_membership_is_a_property_of_the_cell(small, tmp_path):
    path, cfg, cells = small
    other = cells_for(path, "grid.nodes=[2]")            # a different grid containing some of the cells
    by_key = {c.key: c for c in cells}
    for cell in other:
        for index in range(3):
            assert grid.Shard(index, 3).holds(cell) == grid.Shard(index, 3).holds(by_key[cell.key])


@pytest.mark.parametrize("text", ["1", "2/2", "-1/3", "a/b", "1/0"])
def test_bad_shard_specs_are_config_errors(text):
    with pytest.raises(config.ConfigError, match="--shard"):
        grid.Shard.parse(text)


def test_chunks_hold_about_chunk_seconds_of_work(small):
    _, cfg, cells = small
    wls = plan.ordered(grid.workloads(cells, cfg.designs, 2, cfg.seed, core.MODEL_VERSION))
    chunks = plan.chunks(wls, seconds_per_workload=0.03, chunk_seconds=0.5)
    assert [w for c in chunks for w in c] == wls
    assert {len(c) for c in chunks[:-1]} == {17}        # ceil(0.5 / 0.03)
    assert plan.chunks(wls, 2.0, 0.5)[0] == wls[:1]      # a slow workload is a chunk of its own
    assert plan.ordered(list(reversed(wls))) == wls      # the order is fixed, not task order


def test_calibration_times_real_workloads_and_returns_their_results(small):
    _, cfg, cells = small
    wls = plan.ordered(grid.workloads(cells, cfg.designs, 1, cfg.seed, core.MODEL_VERSION))
    calibration = plan.calibrate(wls, budget_s=5.0, max_runs=4)
    assert len(calibration.workloads) == 4
    assert {w.cell.axes["mix"] for w in calibration.workloads[:3]} == set(SMALL["grid"]["mix"]), \
        "the sample must take turns over the mixes (they differ 10x in cost)"
    assert calibration.seconds_per_workload > 0
    for w, result in zip(calibration.workloads, calibration.results):
        assert result["key"] == w.key and result["status"] == "ok"
        assert result["metrics"] == {k: float(v) for k, v in core.run_workload(w.spec, w.seed).items()}


BLOCKS = {"blocks": [
    {"name": "card", "grid": {"limit": ["32M", "128M"], "mix": ["kernel", "nowait-burst"]}},
    {"name": "slab", "grid": {"limit": ["32M"], "high": ["max", 0.5], "mix": ["kernel"], "nodes": [2],
                              "allocator": ["slab"]}},
    {"name": "wide", "grid": {"limit": ["32M"], "mix": ["kernel"], "cpus": [2, 8]},
     "workload": {"tasks": 3}},
]}


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    path = write_config(tmp_path_factory.mktemp("blocks"), BLOCKS)
    return path, config.load(path), cells_for(path)


def test_blocks_are_small_grids_over_the_top_level_defaults(blocked):
    path, cfg, cells = blocked
    by_block = {}
    for cell in cells:
        by_block.setdefault(cell.axes["block"], []).append(cell)
    # card: 2 limits x 2 orders x 2 nodes x 2 mixes; slab: 2 highs; wide: 2 orders x 2 nodes x 2 cpus
    assert {b: len(c) for b, c in by_block.items()} == {"card": 16, "slab": 4, "wide": 8}
    assert all(c.cell_id.startswith(c.axes["block"] + "-") for c in cells)
    assert len({c.cell_id for c in cells}) == len({c.key for c in cells}) == len(cells)
    slab = by_block["slab"][0].specs["way1"]
    assert slab["machine"]["allocator"] == "slab" and by_block["slab"][0].axes["allocator"] == "slab"
    assert {c.axes["high"] for c in by_block["slab"]} == {float("inf"), 0.5}
    wide = {c.axes["cpus"]: c.specs["v4.3"] for c in by_block["wide"]}
    assert set(wide) == {2, 8}                              # the axis beats the top-level pinned cpus: 2
    assert all(s["tasks"] == 3 for s in wide.values()) and by_block["card"][0].specs["v4.3"]["tasks"] == 2
    assert all(c.axes["cpus"] == SMALL["workload"]["machine"]["cpus"] for c in by_block["card"])


def test_a_cell_two_blocks_share_runs_once_and_overrides_reach_every_block(blocked):
    path, _, cells = blocked
    twice = {"blocks": BLOCKS["blocks"] + [{"name": "again", "grid": {"limit": ["32M"], "mix": ["kernel"]}}]}
    again = cells_for(write_config(path.parent / "twice", twice))
    assert {c.key for c in again} == {c.key for c in cells}      # "again" adds nothing new
    assert "again" not in {c.axes["block"] for c in again}
    narrowed = cells_for(path, "grid.nodes=[1]")
    assert {c.axes["nodes"] for c in narrowed} == {1} and len(narrowed) == 8 + 4 + 4


def test_shards_and_workload_keys_work_across_blocks(blocked):
    _, cfg, cells = blocked
    everything = {w.key for w in grid.workloads(cells, cfg.designs, 2, cfg.seed, core.MODEL_VERSION)}
    parts = [{w.key for w in grid.workloads([c for c in cells if grid.Shard(i, 3).holds(c)], cfg.designs, 2,
                                            cfg.seed, core.MODEL_VERSION)} for i in range(3)]
    assert set().union(*parts) == everything and sum(map(len, parts)) == len(everything)
    # a block's cell is the same cell (key, seeds) as the same spec in a plain grid: resume
    # and the results store do not care which block asked for it
    plain = cells_for(write_config(blocked[0].parent / "plain", {"grid": {"limit": ["32M"], "mix": ["kernel"]}}))
    assert {c.key for c in plain} <= {c.key for c in cells}


def test_the_default_grid_holds_the_claims_cells_at_a_bounded_cost():
    """Issue 20: Heo's NOWAIT claims get nowait-charge at three memory.high ratios (32M has a
    small LRU, 128M a large one) and nowait-burst at memory.max with no memory.high (16M,
    32M); the sweep grows by at most ~30 % over the 5,504 workloads it had before."""
    path = pathlib.Path(__file__).resolve().parent.parent / "configs" / "grid.yaml"
    cfg = config.load(path)
    cells = grid.build_cells(cfg, config.load_mixes(cfg, path))
    mib = [(c.axes["mix"], int(c.axes["limit"]) >> 20, c.axes["high"]) for c in cells]
    assert {(32, h) for h in (0.5, 0.75, 0.9)} | {(128, h) for h in (0.5, 0.75, 0.9)} <= {
        (limit, high) for mix, limit, high in mib if mix == "nowait-charge"}
    assert {limit for mix, limit, high in mib if mix == "nowait-burst" and high == float("inf")} == {16, 32}
    workloads = sum(len(c.specs) for c in cells) * cfg.replications
    assert workloads <= 1.3 * 5504


def test_the_calibration_config_covers_each_modern_mechanism(monkeypatch):
    """configs/calibrate.yaml (issue 23): the v6.1 row beside Linux 6.1 (the linux-6.1 row) on
    small cells that exercise GFP_KERNEL, NOWAIT, ATOMIC and NOFAIL at memory.high and at
    memory.max with and without page cache, long entries over high, dentry storms and two
    NUMA nodes - every cell on both."""
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parent.parent)   # no-cache mix paths
    path = "configs/calibrate.yaml"
    cfg = config.load(path)
    assert list(cfg.designs) == ["v6.1", "linux-6.1"]
    cells = grid.build_cells(cfg, config.load_mixes(cfg, path))
    assert all(set(c.specs) == {"v6.1", "linux-6.1"} for c in cells)
    kinds = {(r["kind"], r.get("gfp", "")) for c in cells for r in c.specs["v6.1"]["mix"]["requests"]}
    gfps = {g for _, g in kinds}
    assert {"GFP_KERNEL", "GFP_NOWAIT", "GFP_ATOMIC", "GFP_NOFS|__GFP_NOFAIL"} <= gfps
    assert any(k == "dentries" for k, _ in kinds) and any(k == "kmalloc_node" for k, _ in kinds)
    caching = {any(r["kind"] == "read_file" for r in c.specs["v6.1"]["mix"]["requests"])
               for c in cells}
    assert caching == {True, False}
    assert {c.axes["high"] for c in cells} >= {float("inf"), 0.75}       # "max": inf
    assert {c.axes["nodes"] for c in cells} == {1, 2}
    # small enough for qemu TCG: at most ~40 workloads of a few hundred kernel entries
    assert len(cells) * cfg.replications <= 40
    assert all(c.specs["v6.1"]["length"]["kernel_entries"] <= 300 for c in cells)
