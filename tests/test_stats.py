"""sweep.stats: paired tests, corrections, verdicts and the stopping rule.

Reference values come from scipy/statsmodels called directly on hand-made pairs, or from
closed forms worked out by hand (McNemar exact = two-sided binomial on the discordant
pairs; Holm/BH step-up and step-down on three p-values; Wilson's formula)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from results_data import grid_cells, real, synthetic
from sweep import fmt, stats

OVERSHOOT = stats.METRICS_BY_NAME["overshoot_high_peak_pages"]
CONTINUOUS = [m.name for m in stats.KEY_METRICS if not m.binary]


# ------------------------------------------------------------------ one cell, hand-made pairs

def test_mcnemar_exact_on_discordant_pairs():
    # 1 pair where only the baseline failed, 9 where only the candidate failed, 5 both, 5 none
    base = np.array([1] * 1 + [0] * 9 + [1] * 5 + [0] * 5)
    cand = np.array([0] * 1 + [1] * 9 + [1] * 5 + [0] * 5)
    row = stats.compare_pair(base, cand, stats.ENOMEM, resamples=0)
    by_hand = 2 * sum(math.comb(10, k) for k in (0, 1)) / 2 ** 10
    assert row["p_value"] == pytest.approx(by_hand)          # 0.021484375
    assert row["p_value"] == pytest.approx(mcnemar([[5, 1], [9, 5]], exact=True).pvalue)
    assert (row["discordant_base"], row["discordant_cand"]) == (1, 9)
    assert row["direction"] == 1                              # the candidate fails more
    assert row["base_mean"] == pytest.approx(0.3) and row["cand_mean"] == pytest.approx(0.7)
    lo, hi = proportion_confint(14, 20, alpha=0.05, method="wilson")
    assert (row["cand_ci_lo"], row["cand_ci_hi"]) == pytest.approx((lo, hi))


def test_mcnemar_without_discordant_pairs_is_not_significant():
    same = np.array([1, 0, 1, 0, 0, 1])
    row = stats.compare_pair(same, same.copy(), stats.ENOMEM, resamples=0)
    assert row["p_value"] == 1.0 and row["direction"] == 0


def test_wilcoxon_and_bootstrap_match_scipy():
    base = np.array([12.0, 15, 9, 30, 22, 18, 11, 25, 14, 19, 27, 16])
    cand = base - np.array([3.0, 1, 0, 7, 2, -1, 4, 6, 2, 5, 8, 0.5])
    row = stats.compare_pair(base, cand, OVERSHOOT, resamples=999)
    # a zero difference (dropped) and ties (|2|, |2|, |1|, |-1|): the normal approximation
    assert row["p_value"] == pytest.approx(
        sps.wilcoxon(cand - base, zero_method="wilcox", method="asymptotic").pvalue)
    assert row["direction"] == -1                              # candidate lower = better
    expected = sps.bootstrap((base, cand), lambda b, c, axis: np.mean(c - b, axis=axis),
                             paired=True, vectorized=True, method="BCa", n_resamples=999,
                             rng=np.random.default_rng(stats.BOOTSTRAP_SEED)).confidence_interval
    assert (row["diff_ci_lo"], row["diff_ci_hi"]) == pytest.approx((expected.low, expected.high))
    assert row["diff_ci_lo"] < row["diff_mean"] < row["diff_ci_hi"] < 0
    assert row["pct_change"] == pytest.approx((cand.mean() - base.mean()) / base.mean() * 100)


def test_wilcoxon_without_ties_is_exact():
    base = np.zeros(9)
    cand = np.array([-1.0, -2, -3, -4, -5, -6, -7, -8, 9])     # R+ = 9, R- = 36
    row = stats.compare_pair(base, cand, OVERSHOOT, resamples=0)
    assert row["p_value"] == pytest.approx(sps.wilcoxon(cand, method="exact").pvalue)
    # exact two-sided p by enumeration of the 2**9 sign patterns
    ranks = np.arange(1, 10)
    r_plus = [sum(r for r, bit in zip(ranks, f"{k:09b}") if bit == "1") for k in range(512)]
    assert row["p_value"] == pytest.approx(2 * np.mean(np.array(r_plus) <= 9))
    assert row["direction"] == -1


def test_identical_pairs_give_no_evidence_and_a_point_interval():
    values = np.array([5.0, 7, 7, 9])
    row = stats.compare_pair(values, values.copy(), OVERSHOOT)
    assert row["p_value"] == 1.0 and row["direction"] == 0
    assert row["diff_ci_lo"] == row["diff_ci_hi"] == 0.0


def test_wilson_interval_matches_closed_form():
    z = sps.norm.ppf(0.975)
    assert stats.wilson(0, 10) == pytest.approx((0.0, z * z / (10 + z * z)))
    k, n = 7, 40
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson(k, n) == pytest.approx((centre - half, centre + half))
    assert np.isnan(stats.wilson(0, 0)).all()


def test_holm_and_bh_by_hand_and_by_statsmodels():
    table = pd.DataFrame({"baseline": "v4.3", "candidate": "way2", "metric": "enomem",
                          "p_value": [0.01, 0.04, 0.03, np.nan]})
    adjusted = stats.adjust(table)
    # Holm: sorted 0.01*3, 0.03*2, max(0.04*1, 0.06); BH: 0.01*3/1, 0.03*3/2, 0.04*3/3
    assert adjusted["p_holm"].tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert adjusted["p_bh"].tolist()[:3] == pytest.approx([0.03, 0.04, 0.04])
    assert np.isnan(adjusted["p_holm"].iloc[3])                 # untested cells stay out
    p = np.array([0.01, 0.04, 0.03])
    assert adjusted["p_holm"].tolist()[:3] == pytest.approx(multipletests(p, method="holm")[1])
    assert adjusted["p_bh"].tolist()[:3] == pytest.approx(multipletests(p, method="fdr_bh")[1])


def test_families_are_adjusted_separately():
    table = pd.DataFrame({"baseline": "v4.3", "candidate": ["way1", "way1", "way2"],
                          "metric": "enomem", "p_value": [0.02, 0.5, 0.02]})
    adjusted = stats.adjust(table)
    assert adjusted["p_holm"].tolist() == pytest.approx([0.04, 0.5, 0.02])


def test_comparisons_put_the_baseline_first():
    assert stats.comparisons(["way2", "v4.3", "way1"]) == [
        ("v4.3", "way1"), ("v4.3", "way2"), ("way1", "way2")]
    assert stats.comparisons(["way2", "way1"]) == [("way1", "way2")]
    # the 6.x row comes last in the policy table: the candidate against every 2015 design
    assert stats.comparisons(["v6.18", "way1", "v4.3"]) == [
        ("v4.3", "way1"), ("v4.3", "v6.18"), ("way1", "v6.18")]


def test_unknown_correction_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"stats.correction.*holm"):
        stats.correction_method("bonferroni")


# ------------------------------------------------------------------ whole sweeps

def _planted(cell, design):
    """way2 lowers overshoot and raises ENOMEM, only in nowait-burst cells at 32M."""
    if design == "way2" and cell["mix"] == "nowait-burst" and cell["limit"] == 32 << 20:
        return {"overshoot_high_peak_pages": -40.0, "enomem_user_visible": 0.5}
    return {}


@pytest.fixture(scope="module")
def planted_table():
    return stats.compare_cells(synthetic(reps=24, shift=_planted), resamples=199)


def test_planted_difference_is_detected_where_planted(planted_table):
    table = planted_table[planted_table["baseline"] == "v4.3"]
    planted = (table["candidate"] == "way2") & (table["mix"] == "nowait-burst") & (table["limit"] == 32 << 20)
    overshoot = table["metric"] == "overshoot_high_peak_pages"
    enomem = table["metric"] == "enomem"
    assert (table.loc[planted & overshoot, "verdict"] == "better").all()
    assert (table.loc[planted & enomem, "verdict"] == "worse").all()
    # the planted metrics are quiet wherever nothing was planted (each metric is its own
    # family, so the other metrics' families say nothing about this correction)
    assert (table.loc[~planted & (overshoot | enomem), "verdict"] == "indistinguishable").all()
    assert (table.loc[planted & overshoot, "diff_ci_hi"] < 0).all()


def test_verdict_summary_counts_and_locates_cells(planted_table):
    summary = stats.summarize_verdicts(planted_table).set_index(["baseline", "candidate", "metric"])
    row = summary.loc[("v4.3", "way2", "overshoot_high_peak_pages")]
    assert (row["better"], row["worse"], row["indistinguishable"]) == (2, 0, 6)
    better = planted_table[(planted_table["candidate"] == "way2") & (planted_table["baseline"] == "v4.3")
                           & (planted_table["metric"] == "overshoot_high_peak_pages")
                           & (planted_table["verdict"] == "better")]
    assert fmt.where(better) == "limit 32M x2; nodes 1 x1, 2 x1; mix nowait-burst x2; order 3 x2"
    assert summary.loc[("v4.3", "way2", "enomem"), "worse"] == 2
    assert summary.loc[("v4.3", "way1", "enomem"), "indistinguishable"] == 8


def test_pairing_is_by_seed_not_by_row_order():
    df = synthetic(reps=12, shift=_planted)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = stats.compare_cells(df, resamples=0)
    b = stats.compare_cells(shuffled, resamples=0)
    pd.testing.assert_frame_equal(a, b)
    # breaking the pairing (seeds relabelled in one design) changes the answer
    broken = df.copy()
    way2 = broken["design"] == "way2"
    broken.loc[way2, "seed"] = broken.loc[way2].groupby("cell_id")["seed"].transform(np.roll, 1)
    c = stats.compare_cells(broken, resamples=0)
    assert not np.allclose(a["p_value"], c["p_value"])


def test_failed_workloads_drop_their_pair():
    df = synthetic(reps=10)
    first_cell = df["cell_id"].iloc[0]
    victim = (df["cell_id"] == first_cell) & (df["design"] == "way1") & (df["replication"] < 3)
    df.loc[victim, "status"] = "error"
    table = stats.compare_cells(df, resamples=0)
    n = table.set_index(["cell_id", "baseline", "candidate", "metric"])["n_pairs"]
    assert n[(first_cell, "v4.3", "way1", "enomem")] == 7
    assert n[(first_cell, "v4.3", "way2", "enomem")] == 10


def test_aa_sweep_has_no_significant_cell_after_correction():
    """Two replication streams of the same design (independent seeds, same distribution)."""
    df = synthetic(designs=("way2",), reps=60, seed=11)
    half = df["replication"] >= 30
    stream_b = df[half].assign(design="way2-b", replication=lambda d: d["replication"] - 30)
    # the pairing key is the replication index of each stream
    aa = pd.concat([df[~half], stream_b]).assign(seed=lambda d: d["replication"])
    table = stats.compare_cells(aa, pairs=[("way2", "way2-b")], resamples=0)
    assert len(table) == 8 * len(stats.KEY_METRICS)
    assert (table["p_holm"] >= 0.05).all() and (table["p_bh"] >= 0.05).all()
    assert set(table["verdict"]) == {"indistinguishable"}


def test_aa_with_the_simulator_two_seed_streams_of_one_design():
    """The real core: way1 on seeds 0.. against way1 on seeds 500000.. (the same
    distribution, independent draws) - no significant cell after either correction."""
    a = real(designs=("way1",), reps=10)
    b = real(designs=("way1",), reps=10, seed_offset=500_000, relabel={"way1": "way1-b"})
    aa = pd.concat([a, b]).assign(seed=lambda d: d["replication"])   # pair stream a with b
    table = stats.compare_cells(aa, pairs=[("way1", "way1-b")], resamples=0)
    assert len(table) == 8 * len(stats.KEY_METRICS)
    # a failure rate is undefined (no pairs, untestable) where the mix makes no such request
    undefined = table["metric"].isin(["nowait_failure_rate", "atomic_failure_rate"])
    assert table.loc[~undefined, "n_pairs"].eq(10).all()
    assert table.loc[undefined, "n_pairs"].isin([0, 10]).all()
    assert (table.loc[undefined & table["n_pairs"].eq(0), "verdict"] == "untestable").all()
    assert (table["p_holm"].fillna(1) >= 0.05).all() and (table["p_bh"].fillna(1) >= 0.05).all()


def test_aa_with_the_simulator_same_seeds_is_exactly_null():
    """Same design, same seeds: the simulator is deterministic, every difference is 0."""
    a = real(designs=("way2",), reps=5)
    aa = pd.concat([a, a.assign(design="way2-again")])
    table = stats.compare_cells(aa, pairs=[("way2", "way2-again")])
    untested = table["n_pairs"] == 0            # a rate the mix has no requests for
    assert set(table.loc[untested, "metric"]) <= {"nowait_failure_rate", "atomic_failure_rate"}
    table = table[~untested]
    assert (table["p_value"] == 1.0).all() and (table["diff_mean"] == 0).all()
    assert (table["diff_ci_lo"] == 0).all() and (table["diff_ci_hi"] == 0).all()


def test_aa_family_wise_error_is_controlled_by_holm():
    """Under the null the share of A/A sweeps with any significant cell stays near alpha
    with Holm (and BH), far below the uncorrected rate - the correction really acts."""
    rng = np.random.default_rng(5)
    sweeps, cells, n = 300, 8, 16
    any_raw = any_holm = any_bh = 0
    for _ in range(sweeps):
        p = np.array([sps.wilcoxon(rng.normal(size=n) - rng.normal(size=n)).pvalue
                      for _ in range(cells)])
        table = stats.adjust(pd.DataFrame({"baseline": "a", "candidate": "b",
                                           "metric": "x", "p_value": p}))
        any_raw += (p < 0.05).any()
        any_holm += (table["p_holm"] < 0.05).any()
        any_bh += (table["p_bh"] < 0.05).any()
    assert any_raw / sweeps > 0.2          # ~1 - 0.95**8 = 0.34 without correction
    assert any_holm / sweeps < 0.05 + 3 * np.sqrt(0.05 * 0.95 / sweeps)
    assert any_bh / sweeps < 0.05 + 3 * np.sqrt(0.05 * 0.95 / sweeps)


def test_correction_choice_changes_only_the_verdict_column():
    df = synthetic(reps=24, shift=_planted)
    holm = stats.compare_cells(df, resamples=0, correction="holm")
    bh = stats.compare_cells(df, resamples=0, correction="bh")
    assert set(holm["correction"]) == {"p_holm"} and set(bh["correction"]) == {"p_bh"}
    assert (bh["p_bh"] <= holm["p_holm"] + 1e-12).all()     # BH never stricter than Holm
    pd.testing.assert_series_equal(holm["p_value"], bh["p_value"])


# ------------------------------------------------------------------ aggregates per (cell, design)

def test_aggregate_counts_means_quantiles_and_wilson_rates():
    df = synthetic(reps=15)
    df.loc[df.index[:2], "status"] = "error"
    agg = stats.aggregate(df).set_index(["cell_id", "design"])
    cell, design = df["cell_id"].iloc[0], df["design"].iloc[0]
    rows = df[(df["cell_id"] == cell) & (df["design"] == design)]
    ok = rows[rows["status"] == "ok"]
    got = agg.loc[(cell, design)]
    assert (got["n_workloads"], got["n_errors"], got["n_ok"]) == (15, 1, 14)
    assert got["mean/reclaim_scanned_pages"] == pytest.approx(ok["reclaim_scanned_pages"].mean())
    assert got["p99/latency_kernel_p99_ns"] == pytest.approx(np.quantile(ok["latency_kernel_p99_ns"], 0.99))
    k = int((ok["enomem_user_visible"] > 0).sum())
    assert got["rate/enomem_workloads"] == pytest.approx(k / 14)
    lo, hi = proportion_confint(k, 14, alpha=0.05, method="wilson")
    assert (got["rate/enomem_workloads/ci_lo"], got["rate/enomem_workloads/ci_hi"]) == pytest.approx((lo, hi))
    pooled = ok["slub_order_fallbacks"].sum() / ok["slub_new_slab_attempts"].sum()
    assert got["rate/slub_order_fallback"] == pytest.approx(pooled)


# ------------------------------------------------------------------ precision-based stopping

def _controlled(noise_by_cell, reps, seed=0):
    """Key metrics equal across designs except overshoot, whose paired noise is chosen per cell."""
    cells = [c for c in grid_cells() if c["cell_id"] in noise_by_cell]
    df = synthetic(reps=reps, cells=cells, seed=seed)
    for name in CONTINUOUS:
        df[name] = 100.0
    df["enomem_user_visible"] = 0.0
    df["slub_order_fallbacks"], df["slub_new_slab_attempts"] = 1.0, 10.0
    rng = np.random.default_rng(seed)
    noise = df["cell_id"].map(noise_by_cell) * rng.normal(size=len(df))
    df["overshoot_high_peak_pages"] = 100.0 + noise
    return df


def test_stopping_asks_for_more_only_where_the_interval_is_wide():
    ids = [c["cell_id"] for c in grid_cells()]
    narrow, wide = ids[0], ids[1]
    df = _controlled({narrow: 0.5, wide: 60.0}, reps=10)
    cfg = {"alpha": 0.05, "min_replications": 5, "max_replications": 40, "ci_halfwidth": 0.1}
    assert stats.cells_needing_more(df, cfg) == [wide]
    # the relative half-width really is the quantity compared
    cell = df[df["cell_id"] == wide].pivot(index="seed", columns="design",
                                           values="overshoot_high_peak_pages")
    hw = stats.relative_halfwidth(cell["v4.3"].to_numpy(), cell["way1"].to_numpy(), OVERSHOOT)
    assert hw > 0.1


def test_stopping_respects_min_and_max_replications():
    ids = [c["cell_id"] for c in grid_cells()]
    df = _controlled({ids[0]: 0.5, ids[1]: 60.0}, reps=10)
    assert stats.cells_needing_more(df, {"min_replications": 12, "max_replications": 40,
                                         "ci_halfwidth": 0.1}) == sorted(ids[:2])
    assert stats.cells_needing_more(df, {"min_replications": 5, "max_replications": 10,
                                         "ci_halfwidth": 0.1}) == []


def test_stopping_ignores_p_values():
    """Same interval width, very different p-values: the stopping decision is the same."""
    ids = [c["cell_id"] for c in grid_cells()]
    df = _controlled({ids[0]: 5.0}, reps=20)
    shifted = df.copy()
    way1 = shifted["design"] == "way1"
    shifted.loc[way1, "overshoot_high_peak_pages"] += 30.0   # a clear, significant shift
    cfg = {"min_replications": 5, "max_replications": 40, "ci_halfwidth": 0.2}
    assert stats.cells_needing_more(df, cfg) == stats.cells_needing_more(shifted, cfg) == []


# ------------------------------------------------------------------ power: can a cell be significant?

def test_pairs_needed_by_hand():
    assert stats.smallest_p(8) == 2 / 256
    assert stats.pairs_needed(24, 0.05) == 10       # 2/2**10 = 0.00195 < 0.05/24 = 0.00208 < 2/2**9
    assert stats.pairs_needed(168, 0.05) == 13      # 2/2**13 = 0.000244 < 0.000298 < 2/2**12


def _everywhere(cell, design):
    return {"overshoot_high_peak_pages": -200.0} if design == "way2" else {}


@pytest.mark.parametrize("reps, holm_finds", [(8, False), (9, True)])
def test_the_power_rule_holds_for_a_uniform_effect(reps, holm_finds):
    """8 cells: Holm needs 9 pairs (2/2**9 < 0.05/8 < 2/2**8), whatever the effect size."""
    assert stats.pairs_needed(8) == 9
    df = synthetic(reps=reps, shift=_everywhere)
    table = stats.compare_cells(df, pairs=[("v4.3", "way2")], metrics=[OVERSHOOT], resamples=0)
    assert (table["p_value"] == stats.smallest_p(reps)).all()          # all pairs one way
    assert ((table["p_holm"] < 0.05).all() if holm_finds else (table["p_holm"] >= 0.05).all())
    assert (table["p_bh"] < 0.05).all()          # BH: the effect is in every cell
    warning = stats.power_warning(reps, 8, 0.05, "holm")
    assert bool(warning) != holm_finds
    if warning:
        assert "no such cell can be significant" in warning and "at least 9 replications" in warning
        assert "at least 2 cells" in stats.power_warning(reps, 8, 0.05, "bh")


def test_vectorised_halfwidths_equal_scipy_ttest_rel_per_cell():
    df = synthetic(reps=7)
    values = stats.workload_values(df)
    for metric in (OVERSHOOT, stats.ENOMEM, stats.METRICS_BY_NAME["slub_order_fallback_rate"]):
        wide = stats._paired_wide(values, metric.name)[["v4.3", "way2"]].dropna()
        together = stats.relative_halfwidths(wide["v4.3"], wide["way2"], metric)
        for cell_id, cell in wide.groupby(level="cell_id"):
            one = stats.relative_halfwidth(cell["v4.3"].to_numpy(), cell["way2"].to_numpy(), metric)
            assert together[cell_id] == pytest.approx(one, rel=1e-9)


def test_each_list_is_declared_once_and_the_others_follow_it():
    """Metric names come from core.metrics (or what workload_values derives), axes and
    corrections from sweep.config: a name added there reaches every reader."""
    from sweep import claims, config, store

    known = set(claims.metric_names())
    assert {m.name for m in stats.KEY_METRICS} <= known
    assert set(stats.HEADLINE) <= {m.name for m in stats.KEY_METRICS} and "enomem" in stats.HEADLINE
    assert {c for r in stats.RATES.values() for c in r[:2]} <= known | {"one", "oom_killed"}
    assert store.AXIS_COLUMNS == stats.AXES == config.CELL_AXES
    assert set(config.CELL_AXES) == set(config.GRID_AXES) | {"block"} == set(claims.FILTER_AXES)
    assert sorted(fmt.WHERE_ORDER) == sorted(config.REQUIRED_AXES)
    assert stats.correction_method("bh") == "fdr_bh" and set(config.CORRECTIONS) == {"holm", "bh", "fdr_bh"}


# ---------------------------------------------------------------- issue 20.9: per-cell summaries

def test_median_effect_keeps_the_majority_sign_and_its_interval_covers_it():
    rng = np.random.default_rng(2)
    diffs = [rng.normal(2, 1, 16) for _ in range(4)] + [rng.normal(-500, 1, 16)]
    median, lo, hi = stats.median_effect(diffs)
    assert np.mean(np.concatenate(diffs)) < 0                 # the pooled mean: the outlier's sign
    assert 1 < lo <= median <= hi < 3
    assert stats.effect_direction(median, lo, hi) == 1
    same = [np.zeros(16), np.zeros(16)]
    assert stats.median_effect(same) == (0.0, 0.0, 0.0) and stats.effect_direction(0.0, 0.0, 0.0) == 0


def test_design_effects_compare_each_pair_over_the_cells_both_ran():
    """v6.18 skips the SLAB cells, where way2's wrong-node count is huge: pooled over "all
    cells" v6.18 looks lowest; over the cells both ran it is higher in every one."""
    rows = []
    for i in range(3):
        for seed in range(16):
            common = {"status": "ok", "seed": seed, "replication": seed}
            rows.append({"cell_id": f"slub{i}", "design": "way2", "slab_wrong_node_objects": 10.0 + seed, **common})
            rows.append({"cell_id": f"slub{i}", "design": "v6.18", "slab_wrong_node_objects": 20.0 + seed, **common})
            rows.append({"cell_id": f"slab{i}", "design": "way2", "slab_wrong_node_objects": 9000.0, **common})
    df = _with_metrics(pd.DataFrame(rows))
    pooled = stats.pooled_means(df)
    pooled = pooled[pooled.metric == "slab_wrong_node_objects"].set_index("design")["mean"]
    assert pooled["v6.18"] < pooled["way2"]
    effects = stats.design_effects(df, pairs=[("way2", "v6.18")],
                                   metrics=[stats.METRICS_BY_NAME["slab_wrong_node_objects"]])
    row = effects.iloc[0]
    assert row["n_cells"] == 3 and row["median_diff"] == 10 and row["direction"] == 1
    assert row["base_mean"] == pytest.approx(17.5) and row["pooled_pct"] > 0


def _with_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Every core metric column the statistics read, 0 where the test does not set it."""
    from core.metrics import METRICS

    for name in METRICS:
        if name not in df:
            df[name] = 0.0
    return df.fillna({name: 0.0 for name in METRICS})
