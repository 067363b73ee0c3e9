"""Results tables shaped like ``sweep.store.Store.dataframe()`` for the statistics, report
and tracking tests: synthetic ones with a known (planted) truth, and real ones from
``core.run_workload``."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from core.metrics import GFP_CLASSES, METRICS

MIX_DIR = Path(__file__).resolve().parent.parent / "configs" / "mixes"
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
            base["slub_new_slab_attempts"] = float(crn.integers(40, 80))
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


_COUNT_PAIRS = [("slub_order_fallbacks", "slub_new_slab_attempts"),
               ("slub_high_order_attempts", "slub_new_slab_attempts"),
                ("nowait_fallbacks", "alloc_nowait_attempts")] + [
    (f"alloc_{c}_failures", f"alloc_{c}_attempts")
    for c in GFP_CLASSES]


# ---------------------------------------------------------------- real simulator results

def real_spec(cell: dict, design: str, kernel_entries: int = 300) -> dict:
    """A small workload spec for one cell (the mix file inlined, as the sweep does)."""
    import yaml

    mix = yaml.safe_load((MIX_DIR / f"{cell['mix']}.yaml").read_text())
    return {"machine": {"nodes": cell["nodes"], "mem_mib": 512, "cpus": 2,
                        "slub_max_order": cell["order"]},
            "design": design, "cgroup": {"max": int(cell["limit"]), "high": cell["high"]},
            "tasks": 2, "length": {"kernel_entries": kernel_entries}, "mix": mix}


def real(designs=("v4.3", "way1", "way2"), reps=6, cells=None, seed_offset=0, relabel=None):
    """Results of ``core.run_workload``: replication r of a cell runs seed
    ``seed_offset + 1000 * cell_index + r`` under every design (common random numbers).
    ``relabel`` maps a design to the name stored (an A/A sweep runs one design twice)."""
    import core

    cells = cells if cells is not None else grid_cells()
    rows = []
    for c_index, cell in enumerate(cells):
        for rep in range(reps):
            seed = seed_offset + 1000 * c_index + rep
            for design in designs:
                metrics = core.run_workload(real_spec(cell, design), seed)
                rows.append({**cell, "design": (relabel or {}).get(design, design),
                             "replication": rep, "seed": seed, "status": "ok", "error": None,
                             **metrics})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- a sweep folder on disk

def write_sweep_dir(path: Path, df: pd.DataFrame, name: str = "test-sweep", **config) -> Path:
    """A sweep folder as the runner leaves it: results.sqlite (the real Store),
    config.yaml (the real schema, resolved) and sweep.json."""
    import json

    from omegaconf import OmegaConf

    from sweep.config import SweepSchema
    from sweep.store import Store

    path.mkdir(parents=True, exist_ok=True)
    rows = [{**row, "key": f"{row['cell_id']}/{row['design']}/{row['seed']}"}
            for row in df.to_dict("records")]
    with Store(path / "results.sqlite") as store:
        store.put(rows)
        store.set_plan([r["key"] for r in rows])
    cfg = OmegaConf.merge(OmegaConf.structured(SweepSchema),
                          {"name": name, "designs": sorted(df["design"].unique()),
                           "output": {"dir": str(path)}},
                          OmegaConf.from_dotlist([f"{k}={v}" for k, v in config.items()]))
    (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (path / "sweep.json").write_text(json.dumps({
        "name": name, "model_version": "test-model", "git_commit": "0123abc", "host": "testhost",
        "ray_cpus": 2, "started": "2026-11-25T10:00:00+0000", "finished": "2026-11-25T10:05:00+0000"}))
    return path
