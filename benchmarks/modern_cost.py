"""What the v6.18 row costs in sweep time: CPU seconds per workload of each design on the
same cells of the default grid, run one after another in this process (no Ray, so the
figure is the simulator's own cost and is not skewed by other users of a shared machine).

    PYTHONPATH=. .venv/bin/python benchmarks/modern_cost.py [--every 2] [--replications 2]

The sweep's workload time scales with the sum over designs, so adding a row costs its
share: (v6.18 seconds) / (sum of the other rows' seconds). Prints Markdown for
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GRID = REPO / "configs" / "grid.yaml"
DESIGNS = ["v4.3", "way1", "way2", "v6.18"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=2, help="every n-th cell of the default grid")
    parser.add_argument("--replications", type=int, default=2)
    args = parser.parse_args()

    import core
    from sweep import config, grid

    cfg = config.load(GRID, [f"designs=[{','.join(DESIGNS)}]", f"replications={args.replications}",
                             "tracking.enabled=false"])
    cells = grid.build_cells(cfg, config.load_mixes(cfg, GRID))[:: args.every]
    work = grid.workloads(cells, cfg.designs, args.replications, cfg.seed, core.MODEL_VERSION)
    cpu, count, by_block = defaultdict(float), defaultdict(int), defaultdict(lambda: defaultdict(float))
    for w in work:                        # interleaved by design: load changes hit all alike
        start = time.process_time()
        core.run_workload(w.spec, w.seed)
        spent = time.process_time() - start
        cpu[w.design] += spent
        count[w.design] += 1
        by_block[w.cell.axes["block"]][w.design] += spent
    old = sum(cpu[d] for d in DESIGNS[:3])
    print(f"{len(cells)} cells (every {args.every}th of configs/grid.yaml), {args.replications} replications; "
          f"v6.18 runs in {count['v6.18']} workloads, each 2015 row in {count['v4.3']}")
    print("\n| design | workloads | CPU s | CPU s per workload |\n|---|---|---|---|")
    for d in DESIGNS:
        print(f"| {d} | {count[d]} | {cpu[d]:.1f} | {cpu[d] / max(count[d], 1):.3f} |")
    print(f"\nadding v6.18 to [v4.3, way1, way2]: +{cpu['v6.18'] / old:.0%} workload CPU time")
    print("\n| block | " + " | ".join(DESIGNS) + " |\n|---|" + "---|" * len(DESIGNS))
    for block, per in by_block.items():
        print(f"| {block} | " + " | ".join(f"{per[d]:.1f}" for d in DESIGNS) + " |")


if __name__ == "__main__":
    main()
