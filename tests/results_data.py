"""Results tables shaped like ``sweep.store.Store.dataframe()`` for the statistics, report
and tracking tests: synthetic ones with a known (planted) truth, and real ones from
``core.run_workload``."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from core.metrics import GFP_CLASSES, METRICS

LIMITS = (32 << 20, 64 << 20)
NODES = (1, 2)
MIXES = ("kernel", "nowait-burst")
ORDERS = (3,)


def grid_cells(limits=LIMITS, nodes=NODES, mixes=MIXES, orders=ORDERS):
    """Cell dicts (cell_id + axes) for every combination, in a fixed order."""
    cells = []
    for limit, node, mix, order in itertools.product(limits, nodes, mixes, orders):
        cell_id = f"L{limit >> 20}M-o{order}-n{node}-{mix}"
        cells.append({"cell_id": cell_id, "limit": limit, "high": 0.75, "order": order,
                      "nodes": node, "mix": mix})
    return cells


def synthetic(designs=("v4.3", "way1", "way2"), reps=20, cells=None, shift=None, seed=0):
    """A results table where every design draws from the same per-seed baseline.

    ``shift(cell, design) -> dict[metric, float]`` plants a difference: added to the
    metric (continuous) or, for ``enomem_user_visible``, the probability of an ENOMEM.
    Workloads of one seed share their random base values under every design (common
    random numbers), as in a real sweep.
    """
    cells = cells if cells is not None else grid_cells()
    rows = []
    for c_index, cell in enumerate(cells):
        for rep in range(reps):
            crn = np.random.default_rng([seed, c_index, rep])
            base = {m: float(crn.gamma(2.0, 50.0)) for m in METRICS}
            base["slub_high_order_attempts"] = float(crn.integers(20, 60))
            base["slub_order_fallbacks"] = float(crn.integers(0, 20))
            u_enomem = crn.random()
            for d_index, design in enumerate(designs):
                own = np.random.default_rng([seed, c_index, rep, d_index + 1])
                planted = shift(cell, design) if shift else {}
                values = {m: max(0.0, v + own.normal(0, 5.0) + planted.get(m, 0.0))
                          for m, v in base.items()}
                p_enomem = 0.3 + planted.get("enomem_user_visible", 0.0)
                values["enomem_user_visible"] = float(u_enomem < p_enomem)
                _keep_counts_consistent(values)
                rows.append({**cell, "design": design, "replication": rep,
                             "seed": 1000 * c_index + rep, "status": "ok", "error": None,
                             **values})
    return pd.DataFrame(rows)


def _keep_counts_consistent(values: dict) -> None:
    """Failures never exceed attempts (the real core guarantees it; rates rely on it)."""
    for failures, attempts in _COUNT_PAIRS:
        values[failures] = min(values[failures], values[attempts])


_COUNT_PAIRS = [("slub_order_fallbacks", "slub_high_order_attempts"),
                ("nowait_fallbacks", "alloc_nowait_attempts")] + [
    (f"alloc_{c}_failures", f"alloc_{c}_attempts")
    for c in GFP_CLASSES]
