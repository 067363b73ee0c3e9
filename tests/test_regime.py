"""sweep.regime on hand-made results: each (cell, design) gets the regime most of its
replications are in, from memory.events (high, max), the overage over memory.high, OOM kills
and failing kernel entries (issue 11)."""
import pandas as pd
import pytest

from sweep import regime


def rows(cell, design, n, **metrics):
    base = {"events_high": 0.0, "events_max": 0.0, "overshoot_high_peak_pages": 0.0, "oom_kills_memcg": 0.0,
            "oom_kills_global": 0.0, "enomem_per_kentry": 0.0}
    return [{"cell_id": cell, "design": design, "seed": s, "status": "ok", "limit": 32.0 * 2**20, "high": 0.75,
             "order": 3, "nodes": 1, "mix": "kernel", "block": "b", "allocator": "slub", "cpus": 4,
             "fragment": 0.0, **base, **metrics} for s in range(n)]


def frame(*groups):
    return pd.DataFrame([r for g in groups for r in g])


def regime_of(table, cell, design):
    return table.set_index(["cell_id", "design"]).loc[(cell, design), "regime"]


def test_each_regime_from_its_signal():
    df = frame(rows("idle", "way1", 4),
               rows("high", "way1", 4, events_high=3.0),
               rows("over", "way1", 4, overshoot_high_peak_pages=12.0),      # v4.3 NOWAIT skips the event
               rows("max", "way1", 4, events_high=9.0, events_max=2.0),
               rows("oom", "way1", 4, events_max=5.0, oom_kills_memcg=1.0),
               rows("fail", "way1", 4, events_max=5.0, enomem_per_kentry=0.9))
    table = regime.classify(df)
    assert list(table.columns[:2]) == ["cell_id", "limit"] and "share_max" in table
    assert [regime_of(table, c, "way1") for c in ("idle", "high", "over", "max", "oom", "fail")] == \
        ["idle", "high-bound", "high-bound", "max-bound", "saturated", "saturated"]
    assert set(table["regime"]) <= set(regime.REGIMES)


def test_the_majority_of_replications_decides_and_shares_are_kept():
    df = frame(rows("c", "v4.3", 3, events_max=1.0) + rows("c", "v4.3", 1)[:1],   # 3 of 4 hit max
               rows("c", "way2", 1, events_max=1.0) + rows("c", "way2", 3)[1:])   # 1 of 3 hits max
    df["seed"] = range(len(df))
    table = regime.classify(df).set_index("design")
    assert table.loc["v4.3", "regime"] == "max-bound" and table.loc["v4.3", "share_max"] == 0.75
    # reaching max at all means it went over high: not idle, but not max-bound either
    assert table.loc["way2", "regime"] == "high-bound"
    assert table.loc["way2", "share_max"] == pytest.approx(1 / 3)


def test_error_rows_are_ignored():
    df = frame(rows("c", "way1", 2, events_max=1.0), rows("c", "way1", 3))
    df["seed"] = range(len(df))
    df.loc[2:, "status"] = "error"
    assert regime.classify(df)["regime"].tolist() == ["max-bound"]


def test_summary_and_warnings():
    df = frame(rows("a", "way1", 2, events_max=1.0, oom_kills_memcg=1.0), rows("a", "way2", 2, events_max=1.0),
               rows("b", "way1", 2, events_max=1.0), rows("b", "way2", 2),
               rows("c", "way1", 2), rows("c", "way2", 2))
    table = regime.classify(df)
    counts = regime.summary(table)
    assert counts["pairs"] == {"idle": 3, "high-bound": 0, "max-bound": 2, "saturated": 1}
    assert counts["cells_max_any"] == 2 and counts["cells_saturated_all"] == 0 and counts["cells"] == 3
    text = " ".join(regime.warnings(table))
    assert "1 of 3 cells (33%) are saturated" in text

    class C:   # a claim whose cells are idle, and one no cell matches
        untestable = None

    idle, nowhere = C(), C()
    idle.id, idle.where = "idle-claim", {"block": ["b"], "limit": ["32M"]}
    nowhere.id, nowhere.where = "elsewhere", {"mix": ["atomic"]}
    only_c = table[table["cell_id"] == "c"]
    warned = regime.warnings(only_c, [idle, nowhere])
    assert any("claim 'idle-claim'" in w and "idle" in w for w in warned)
    assert any("claim 'elsewhere'" in w and "no cell" in w for w in warned)
    assert regime.warnings(table, [idle]) == ["1 of 3 cells (33%) are saturated under some design (more than "
                                              "10%): there every design fails and they cannot differ"]


def test_axis_filters_compare_sizes_as_bytes():
    df = frame(rows("c", "way1", 1))
    assert regime.matches(df, {"limit": ["32M"], "high": [0.75], "order": [3]}).all()
    assert not regime.matches(df, {"limit": ["64M"]}).any()
    assert not regime.matches(df, {"allocator": ["slab"]}).any()
