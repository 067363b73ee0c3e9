"""Are two sweeps' stored metrics bit-identical?  For refactors that must not change a number.

    python benchmarks/same_metrics.py SWEEP_DIR_BEFORE SWEEP_DIR_AFTER

Rows are matched by (cell_id, design, replication, seed), not by the workload key: the key
hashes core.MODEL_VERSION, which changes with every edit of core/ (comments included).  Every
metric column both stores hold is compared as raw 64-bit patterns, so -0.0 != 0.0 and NaN ==
NaN only when the bits agree.  Exit 0 when every planned row of the one has its twin in the
other with identical metrics; 1 otherwise, with the first differences listed.
"""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MATCH = ["cell_id", "design", "replication", "seed"]
NOT_METRICS = {"key", "status", "error", "elapsed_s", "worker", "model_version", "finished_at"}


def stored_rows(sweep_dir: Path) -> pd.DataFrame:
    """The rows of the folder's latest plan (the rows a report of that folder reads)."""
    with sqlite3.connect(sweep_dir / "results.sqlite") as db:
        return pd.read_sql_query("SELECT r.* FROM results r JOIN plan p ON r.key = p.key", db)


def metric_columns(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    shared = [c for c in before.columns if c in after.columns and c not in NOT_METRICS]
    return [c for c in shared if c not in MATCH and pd.api.types.is_numeric_dtype(before[c])]


def differences(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    joined = before.merge(after, on=MATCH, how="outer", suffixes=("_a", "_b"), indicator=True)
    found = [f"{len(joined[joined._merge == side])} rows only in {name}"
             for side, name in (("left_only", "the first"), ("right_only", "the second"))
             if (joined._merge == side).any()]
    both = joined[joined._merge == "both"]
    for column in metric_columns(before, after):
        bits_a = both[f"{column}_a"].to_numpy(np.float64).view(np.int64)
        bits_b = both[f"{column}_b"].to_numpy(np.float64).view(np.int64)
        unequal = np.flatnonzero(bits_a != bits_b)
        if len(unequal):
            row = both.iloc[unequal[0]]
            found.append(f"{column}: {len(unequal)} rows differ, e.g. {row.cell_id} {row.design} "
                         f"rep {row.replication}: {float(row[f'{column}_a'])!r} != {float(row[f'{column}_b'])!r}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = (stored_rows(Path(d)) for d in argv)
    found = differences(before, after)
    columns = metric_columns(before, after)
    if found:
        print("\n".join(found))
        return 1
    print(f"bit-identical: {len(before)} rows x {len(columns)} metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
