"""The regime of each (cell, design): how hard the workload pressed on its cgroup's limits.

The designs differ only under pressure, and differently at memory.high than at memory.max,
so every comparison is read against the regime it was made in:

  idle        the cgroup never went over memory.high (nor reached memory.max)
  high-bound  it went over memory.high, but memory.max was never hit
  max-bound   memory.events max > 0: charges hit memory.max (and reclaimed there)
  saturated   most replications OOM-killed, or failing most of their kernel entries

A (cell, design) takes the regime most of its replications are in (shares are kept, so a
reader can see a split cell).  ``summary`` counts them; ``warnings`` says when a grid sits
where the designs cannot differ.  Nothing here knows Ray or MLflow.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.store import AXIS_COLUMNS

REGIMES = ("idle", "high-bound", "max-bound", "saturated")
MAJORITY = 0.5              # a regime needs more than this share of the replications
FAILING_ENTRIES = 0.5       # enomem_per_kentry above this: "most kernel entries failing"
SATURATED_WARN_SHARE = 0.10  # the sweep warns when more cells than this are saturated


def workload_flags(df: pd.DataFrame) -> pd.DataFrame:
    """Per workload: went over high, hit max, saturated (1.0/0.0)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    col = lambda name: ok[name].fillna(0) if name in ok else pd.Series(0.0, index=ok.index)  # noqa: E731
    over_high = (col("events_high") > 0) | (col("overshoot_high_peak_pages") > 0)
    at_max = col("events_max") > 0
    killed = (col("oom_kills_memcg") + col("oom_kills_global")) > 0
    saturated = killed | (col("enomem_per_kentry") > FAILING_ENTRIES)
    return pd.DataFrame({"over_high": over_high.astype(float), "at_max": at_max.astype(float),
                         "saturated": saturated.astype(float)}, index=ok.index)


def classify(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, design): its axis columns, ``design``, ``regime`` and the shares of
    replications over high / at max / saturated it was decided on, and ``n``."""
    axes = [c for c in AXIS_COLUMNS if c in results.columns]
    columns = ["cell_id", *axes, "design", "regime", "n", "share_high", "share_max", "share_saturated"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    flags = workload_flags(results)
    frame = results.loc[flags.index, ["cell_id", *axes, "design"]].join(flags)
    grouped = frame.groupby(["cell_id", "design"], sort=True)
    out = grouped[axes].first() if axes else pd.DataFrame(index=grouped.size().index)
    out["n"] = grouped.size()
    out["share_high"] = grouped["over_high"].mean()
    out["share_max"] = grouped["at_max"].mean()
    out["share_saturated"] = grouped["saturated"].mean()
    out["regime"] = [regime_of(h, m, s) for h, m, s in
                     zip(out["share_high"], out["share_max"], out["share_saturated"])]
    return out.reset_index()[columns]


def regime_of(share_high: float, share_max: float, share_saturated: float) -> str:
    """The regime of one (cell, design) from the shares of its replications."""
    if share_saturated > MAJORITY:
        return "saturated"
    if share_max > MAJORITY:
        return "max-bound"
    if share_high > MAJORITY or share_max > 0:   # hitting max at all means it passed high
        return "high-bound"
    return "idle"


def by_cell(regimes: pd.DataFrame) -> pd.DataFrame:
    """cell_id x design table of regimes."""
    if regimes.empty:
        return pd.DataFrame()
    return regimes.pivot(index="cell_id", columns="design", values="regime")


def summary(regimes: pd.DataFrame) -> dict:
    """Counts of (cell, design) pairs per regime, and per cell: saturated under every design,
    reaching memory.max (max-bound or saturated) under at least one design."""
    table = by_cell(regimes)
    pressed = table.isin(["max-bound", "saturated"])
    return {
        "cells": int(len(table)),
        "pairs": {r: int((regimes["regime"] == r).sum()) for r in REGIMES},
        "cells_saturated_any": int((table == "saturated").any(axis=1).sum()),
        "cells_saturated_all": int((table == "saturated").all(axis=1).sum()) if len(table) else 0,
        "cells_max_any": int(pressed.any(axis=1).sum()),
        "cells_idle_all": int((table == "idle").all(axis=1).sum()) if len(table) else 0,
    }


def format_summary(counts: dict) -> str:
    """'regimes of 120 cells x designs: idle 30, high-bound 90, ...; 70 cells reach max ...'."""
    pairs = ", ".join(f"{r} {counts['pairs'][r]}" for r in REGIMES)
    return (f"regimes (cell x design): {pairs}; cells reaching memory.max under some design: "
            f"{counts['cells_max_any']} of {counts['cells']}; saturated under every design: "
            f"{counts['cells_saturated_all']}")


def warnings(regimes: pd.DataFrame, claims=()) -> list[str]:
    """What makes a sweep unable to tell the designs apart: too many saturated cells, or a
    testable claim whose cells are all idle (or missing)."""
    out = []
    counts = summary(regimes)
    if counts["cells"] and counts["cells_saturated_any"] > SATURATED_WARN_SHARE * counts["cells"]:
        out.append(f"{counts['cells_saturated_any']} of {counts['cells']} cells "
                   f"({counts['cells_saturated_any'] / counts['cells']:.0%}) are saturated under some design "
                   f"(more than {SATURATED_WARN_SHARE:.0%}): there every design fails and they cannot differ")
    for claim in claims:
        if claim.untestable:
            continue
        cells = regimes[matches(regimes, claim.where)]
        if cells.empty:
            out.append(f"claim {claim.id!r}: no cell of this sweep matches its filter {dict(claim.where)}")
        elif (cells["regime"] == "idle").all():
            out.append(f"claim {claim.id!r}: all {cells['cell_id'].nunique()} matching cells are idle "
                       f"under every design, so the claim is not tested")
    return out


def matches(frame: pd.DataFrame, where: dict) -> pd.Series:
    """Rows of `frame` (with axis columns) inside an axis filter {axis: [values]}."""
    from sweep.grid import size_bytes

    keep = pd.Series(True, index=frame.index)
    for axis, values in where.items():
        if axis not in frame:
            return pd.Series(False, index=frame.index)
        column = frame[axis]
        if axis in ("limit", "high"):
            wanted = [size_bytes(v) for v in values]
            keep &= column.astype(float).apply(lambda x: any(np.isclose(x, w) or x == w for w in wanted))
        elif axis in ("order", "nodes", "cpus"):
            keep &= column.astype(float).isin([float(v) for v in values])
        elif axis == "fragment":
            keep &= column.astype(float).round(6).isin([round(float(v), 6) for v in values])
        else:
            keep &= column.astype(str).isin([str(v) for v in values])
    return keep
