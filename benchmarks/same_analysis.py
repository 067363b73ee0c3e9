"""Are two cached analyses of a sweep identical?  For changes to how the statistics are
computed (order, processes) that must not change a number or a verdict.

    python benchmarks/same_analysis.py ANALYSIS_DIR_BEFORE ANALYSIS_DIR_AFTER

Each folder is one ``<sweep_dir>/analysis/<key>/`` (copy it away before the code changes:
a new key removes the old folder).  Every table (``sweep.analysis.TABLES``) is compared
column by column - float columns as raw 64-bit patterns (-0.0 != 0.0; NaN == NaN only when
the bits agree), the others by value - and verdicts.json as parsed JSON.  Exit 0 when all
agree; 1 otherwise, with the differences listed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sweep.analysis import TABLES, VERDICTS_FILE  # noqa: E402


def table_differences(name: str, a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return [f"{name}: shape or columns differ ({a.shape} vs {b.shape})"]
    found = []
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype != y.dtype:
            found.append(f"{name}.{column}: dtype {x.dtype} != {y.dtype}")
        elif x.dtype.kind == "f":
            unequal = np.flatnonzero(x.to_numpy().view(np.int64) != y.to_numpy().view(np.int64))
            if len(unequal):
                found.append(f"{name}.{column}: {len(unequal)} rows differ, e.g. row {unequal[0]}: "
                             f"{x.iloc[unequal[0]]!r} != {y.iloc[unequal[0]]!r}")
        elif not x.equals(y):
            found.append(f"{name}.{column}: values differ")
    return found


def differences(before: Path, after: Path) -> list[str]:
    found = []
    for name in TABLES:
        found += table_differences(name, pd.read_parquet(before / f"{name}.parquet"),
                                   pd.read_parquet(after / f"{name}.parquet"))
    if json.loads((before / VERDICTS_FILE).read_text()) != json.loads((after / VERDICTS_FILE).read_text()):
        found.append(f"{VERDICTS_FILE}: the verdicts differ")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    found = differences(Path(argv[0]), Path(argv[1]))
    if found:
        print("\n".join(found))
        return 1
    rows = len(pd.read_parquet(Path(argv[0]) / "table.parquet"))
    print(f"identical: {len(TABLES)} tables ({rows} comparison rows) and the verdicts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
