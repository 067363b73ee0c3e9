"""The claims registry (configs/claims.yaml, sweep.claims): every entry is checked before a
sweep starts (a bad one exits 2 naming its id), the default grid has cells for every
testable claim, and verdicts follow the paired differences (issue 11)."""
import numpy as np
import pandas as pd
import pytest
import yaml

from core.metrics import METRICS
from sweep import claims, config, grid, regime
from sweep.config import ConfigError
from sweep_helpers import REPO, run_cli, write_config

REGISTRY = REPO / "configs" / "claims.yaml"
GOOD = {"id": "x", "who": "someone", "claim": "a is lower", "metric": "nowait_failures",
        "compare": ["way1", "way2"], "expect": "a<b", "where": {"mix": ["kernel"]}, "regimes": ["max-bound"]}


def test_the_shipped_registry_loads_and_names_the_threads_claims():
    registry = claims.load_claims(REGISTRY)
    ids = {c.id for c in registry}
    assert {"slub-highorder-fallback", "slab-thisnode-wrong-node", "nowait-burst-over-high",
            "find-dentries-over-high", "long-entry-nowait-fails", "force-charge-overshoot-small",
            "force-charge-atomic-failures", "sync-high-reclaim-under-locks",
            "way2-double-reclaim-fragmentation", "slab-nowait-charge-enomem"} <= ids
    untestable = [c for c in registry if c.untestable]
    assert [c.id for c in untestable] == ["slab-nowait-charge-enomem"]
    assert "fallback_alloc" in untestable[0].untestable       # the reason cites the 4.3 code path


def test_the_default_grid_has_cells_for_every_testable_claim():
    cfg = config.load(REPO / "configs" / "grid.yaml")
    cells = grid.build_cells(cfg, config.load_mixes(cfg, REPO / "configs" / "grid.yaml"))
    axes = pd.DataFrame([c.axes for c in cells])
    for claim in claims.load_claims(REGISTRY):
        if not claim.untestable:
            assert regime.matches(axes, claim.where).sum() >= 2, claim.id


def write_registry(tmp_path, *entries):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": list(entries)}))
    return path


@pytest.mark.parametrize("change, needle", [
    ({"metric": "nowait_failure"}, "unknown metric 'nowait_failure' (did you mean 'nowait_failures'?)"),
    ({"compare": ["way1", "way9"]}, "unknown design 'way9'"),
    ({"compare": ["way1", "way1"]}, "compare must be two different designs"),
    ({"expect": "a<<b"}, "expect must be one of a<b, a>b"),
    ({"regimes": ["busy"]}, "unknown regime 'busy'"),
    ({"where": {"mixx": ["kernel"]}}, "where.mixx: unknown axis (did you mean 'mix'?)"),
    ({"where": {"mix": ["kernal"]}}, "where.mix: 'kernal': unknown mix (did you mean 'kernel'?)"),
    ({"where": {"limit": ["lots"]}}, "where.limit: 'lots'"),
    ({"where": {"allocator": ["slob"]}}, "where.allocator: 'slob'"),
    ({"who": None}, "who is required"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_a_bad_entry_is_a_config_error_naming_it(tmp_path, change, needle):
    other = {**GOOD, "id": "fine"}
    path = write_registry(tmp_path, other, {**GOOD, **change})
    with pytest.raises(ConfigError) as err:
        claims.load_claims(path, mixes=["kernel", "atomic"])
    assert f"claim 'x': {needle}" in str(err.value)


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="claim 'x': id is used twice"):
        claims.load_claims(write_registry(tmp_path, GOOD, GOOD), mixes=["kernel"])
    (tmp_path / "empty.yaml").write_text("claims: []\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        claims.load_claims(tmp_path / "empty.yaml")


def test_the_command_line_exits_2_naming_the_bad_claim(tmp_path):
    write_registry(tmp_path, GOOD, {**GOOD, "id": "broken", "metric": "no_such_metric"})
    path = write_config(tmp_path, {"claims": "claims.yaml"})
    done = run_cli([path, "--dry-run"], cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "config error:" in done.stderr and "claim 'broken': unknown metric 'no_such_metric'" in done.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- verdicts on hand-made results

def results(cell, way1, way2, max_events=1.0, mix="kernel"):
    """Paired rows of one cell: the metric `nowait_failures` per seed under way1 and way2."""
    out = []
    for design, values in (("way1", way1), ("way2", way2)):
        for seed, value in enumerate(values):
            out.append({**dict.fromkeys(METRICS, 0.0), "cell_id": cell, "design": design, "seed": seed,
                        "status": "ok", "mix": mix, "limit": 32.0 * 2**20, "high": float("inf"), "order": 3,
                        "nodes": 1, "nowait_failures": float(value), "events_max": max_events})
    return out


def verdict(claim, df):
    return claims.evaluate([claim], df, regime.classify(df))[0]


def test_verdicts_follow_the_paired_differences():
    rng = np.random.default_rng(1)
    low = rng.integers(0, 5, 16)
    df = pd.DataFrame(results("c1", low, low + 10) + results("c2", low, low + 7)
                      + results("idle", low, low + 50, max_events=0.0))
    claim = claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("max-bound",),
                            "where": {"mix": ["kernel"]}})
    holds = verdict(claim, df)
    assert holds.verdict == "holds" and holds.cells_tested == ["c1", "c2"]   # the idle cell is not tested
    assert holds.effect == pytest.approx(8.5) and holds.ci[0] > 0 and holds.cells_holding == ["c1", "c2"]
    refuted = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "expect": "a>b",
                                      "regimes": ("max-bound",)}), df)
    assert refuted.verdict == "refuted" and refuted.cells_against == ["c1", "c2"]
    same = pd.DataFrame(results("c1", low, low))
    assert verdict(claim, same).verdict == "inconclusive"
    nowhere = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("high-bound",)}), df)
    assert nowhere.verdict == "untestable" and "no cell" in nowhere.reason
    said = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "untestable": "not in 4.3"}), df)
    assert said.verdict == "untestable" and said.reason == "not in 4.3"
    table = claims.verdict_table([holds, refuted])
    assert table["verdict"].tolist() == ["holds", "refuted"] and table["cells"].tolist() == [2, 2]


# ---------------------------------------------------------------- issue 20.9: no pooling across unlike cells

def paired(cell, values_by_design, metric="nowait_failures", **axes):
    """Rows of one cell: ``metric`` per seed under each design of ``values_by_design``."""
    out = []
    for design, values in values_by_design.items():
        for seed, value in enumerate(values):
            out.append({**dict.fromkeys(METRICS, 0.0), "cell_id": cell, "design": design, "seed": seed,
                        "replication": seed, "status": "ok", "mix": "kernel", "limit": 32.0 * 2**20,
                        "high": float("inf"), "order": 3, "nodes": 1, metric: float(value),
                        "events_max": 1.0, **axes})
    return out


def test_one_outlier_cell_cannot_flip_a_claims_effect():
    """Four cells where way2 is a little higher, one where it is far lower: the pooled mean
    paired difference (-196) says the opposite of four of five cells; the claim's effect
    (the median per-cell difference) keeps their sign, and the outlier, significant against
    the claim on its own, keeps the verdict from "holds" - never "refuted"."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(4):
        base = rng.integers(10, 20, 16)
        rows += paired(f"c{i}", {"way1": base, "way2": base + 2 + rng.integers(0, 2, 16)})
    base = rng.integers(1000, 1100, 16)
    rows += paired("outlier", {"way1": base, "way2": base - 1000})
    df = pd.DataFrame(rows)
    pooled = (df[df.design == "way2"]["nowait_failures"].mean() - df[df.design == "way1"]["nowait_failures"].mean())
    assert pooled < 0
    v = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("max-bound",)}), df)
    assert v.effect > 0 and v.ci[0] > 0                         # the sign of the majority of cells
    assert v.cells_against == ["outlier"] and len(v.cells_holding) == 4
    assert v.verdict == "inconclusive"
    without = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("max-bound",)}),
                      df[df.cell_id != "outlier"])
    assert without.verdict == "holds"


@pytest.mark.parametrize("seed", range(12))
def test_no_effect_has_the_opposite_sign_of_the_majority_of_its_cells(seed):
    """Random cells of random size and spread: the effect's sign is the sign of most per-cell
    mean differences, and a decided verdict never goes against that majority."""
    rng = np.random.default_rng(seed)
    rows = []
    n_cells = int(rng.integers(3, 8))
    for i in range(n_cells):
        base = rng.integers(0, 50, 16)
        shift = rng.normal(0, 1) * 10 ** rng.uniform(0, 3)
        rows += paired(f"c{i}", {"way1": base, "way2": base + shift + rng.normal(0, 3, 16)})
    df = pd.DataFrame(rows)
    v = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("max-bound",)}), df)
    means = df.pivot_table(index=["cell_id", "seed"], columns="design", values="nowait_failures")
    per_cell = (means["way2"] - means["way1"]).groupby(level="cell_id").mean()
    majority = np.sign((per_cell > 0).sum() - (per_cell < 0).sum())
    if (per_cell > 0).sum() * 2 > n_cells or (per_cell < 0).sum() * 2 > n_cells:
        assert np.sign(v.effect) == majority
        if v.verdict == "holds":
            assert majority > 0
        if v.verdict == "refuted":
            assert majority < 0


def test_a_claim_compares_only_the_cells_both_designs_ran():
    """v6.18 runs no SLAB cell: the SLAB cells, where way2 is far higher, are not compared;
    in the cells both ran v6.18 is higher, so "v6.18 lower than way2" is refuted."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(3):
        base = rng.integers(10, 20, 16)
        rows += paired(f"slub{i}", {"way2": base, "v6.18": base + 5}, allocator="slub")
        rows += paired(f"slab{i}", {"way2": base + 5000}, allocator="slab")
    df = pd.DataFrame(rows)
    v = verdict(claims.Claim(**{**GOOD, "compare": ("v6.18", "way2"), "where": {}, "regimes": ("max-bound",)}), df)
    assert v.cells_tested == ["slub0", "slub1", "slub2"]
    assert v.effect == pytest.approx(-5) and v.verdict == "refuted"


def test_a_claim_spanning_regimes_shows_its_effect_per_regime():
    rows = []
    for i in range(3):
        rows += paired(f"max{i}", {"way1": [5] * 16, "way2": [9] * 16})
        rows += paired(f"high{i}", {"way1": [5] * 16, "way2": [4] * 16}, events_max=0.0, events_high=1.0,
                       overshoot_high_peak_pages=10.0)
    df = pd.DataFrame(rows)
    v = verdict(claims.Claim(**{**GOOD, "compare": ("way1", "way2"), "regimes": ("high-bound", "max-bound")}), df)
    by = {r["regime"]: r for r in v.by_regime}
    assert set(by) == {"high-bound", "max-bound"}
    assert by["max-bound"]["effect"] == 4 and by["high-bound"]["effect"] == -1
    assert by["max-bound"]["cells"] == 3


def test_the_verdict_rule_is_one_sentence():
    rule = claims.VERDICT_RULE.format(confidence="95%", correction="Holm", alpha=0.05)
    assert rule.count(". ") == 0 and rule.endswith(".")
    for word in ("holds", "refuted", "inconclusive", "median"):
        assert word in rule
