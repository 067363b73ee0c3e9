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
