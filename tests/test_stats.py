"""The statistics of ablation reports, checked by simulation in memory (fixed seeds,
vectorised: thousands of paired ablations per case in well under a second)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import rungs, stats
from hrm_core import names
from tests.support import simulation

ALPHA = 0.05
SIMS = 4000  # per case (>= 500 asked): the coverage SE is then 0.0034, well inside 0.93-0.97
POWER_DZ = 1.0  # the stated effect size: a mean difference of one SD of the paired differences


# --------------------------------------------------------------------------------------
# error rates, coverage and power by simulation
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5, 10])
def test_no_effect_false_positive_rate_and_coverage(n):
    r = simulation.simulate_paired_ablations(n, sims=SIMS, dz=0.0, alpha=ALPHA, rng=1000 + n)
    print(f"n={n}: {r}")
    assert r["paired_reject"] <= ALPHA + 0.02
    assert r["welch_reject"] <= ALPHA + 0.02
    assert 0.93 <= r["paired_ci_coverage"] <= 0.97
    assert 0.93 <= r["mean_ci_coverage"] <= 0.97
    assert 0.93 <= r["welch_ci_coverage"] <= 0.97


@pytest.mark.parametrize("n", [3, 5, 10])
def test_coverage_under_a_true_effect_and_power_reported(n):
    r = simulation.simulate_paired_ablations(n, sims=SIMS, dz=POWER_DZ, alpha=ALPHA, rng=2000 + n)
    print(
        f"n={n}: power at d_z={POWER_DZ}: simulated {r['paired_reject']:.3f}, "
        f"analytic {r['power_analytic']:.3f}"
    )
    assert 0.93 <= r["paired_ci_coverage"] <= 0.97
    # The reported (analytic, noncentral t) power is what simulation measures.
    assert abs(r["paired_reject"] - r["power_analytic"]) < 0.03


def test_power_grows_with_seeds_and_min_detectable_effect():
    powers = [stats.power_paired_t(POWER_DZ, n) for n in (3, 5, 10)]
    assert powers == sorted(powers)
    assert powers[2] == pytest.approx(0.80, abs=0.01)  # 10 pairs detect d_z = 1 with ~80% power
    for n in (3, 5, 10):
        mde = stats.min_detectable_dz(n)
        assert stats.power_paired_t(mde, n) == pytest.approx(0.8, abs=1e-6)
    assert stats.power_paired_t(0.0, 5) == pytest.approx(ALPHA)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_aa_sweep_family_wise_rate_with_holm(n):
    fwer = simulation.simulate_aa_sweeps(n, arms=3, sims=SIMS, alpha=ALPHA, rng=3000 + n)
    print(f"n={n}: A/A sweep (3 null arms), share flagged after Holm: {fwer:.4f}")
    assert fwer <= ALPHA + 0.02


def _frame(arms: dict[str, np.ndarray], seeds=None, metric=names.EVAL_EXACT_ACCURACY) -> pd.DataFrame:
    rows = []
    for arm, vals in arms.items():
        for i, v in enumerate(vals):
            rows.append(
                {
                    "run_id": f"{arm}{i}",
                    "arm": arm,
                    "seed": (seeds[arm][i] if seeds else i),
                    "outcome": "completed",
                    "value": float(v),
                    "used": True,
                    "reason": "",
                    "metric": metric,
                }
            )
    return pd.DataFrame(rows)


def test_aa_sweep_with_identical_arms_is_not_flagged():
    vals = np.array([0.52, 0.55, 0.61, 0.49, 0.58])
    out = stats.compare_to_control(_frame({"control": vals, "copy": vals.copy()}), "control")
    (row,) = out.to_dict("records")
    assert row["p"] == 1.0 and row["diff"] == 0.0 and row["ci_low"] == row["ci_high"] == 0.0
    assert not row["significant"] and row["verdict"] == "no detectable difference"


def test_aa_sweeps_through_the_report_path_are_rarely_flagged():
    """500 A/A sweeps (control + 2 copies, 5 paired seeds, noisy) through the same
    frame-level code the report uses: family-wise rate after Holm <= alpha + 0.02."""
    rng = np.random.default_rng(7)
    flagged = 0
    for _ in range(500):
        seed = rng.normal(0, 0.05, 5)
        arms = {a: 0.5 + seed + rng.normal(0, 0.01, 5) for a in ("control", "a1", "a2")}
        out = stats.compare_to_control(_frame(arms), "control")
        flagged += bool(out["significant"].any())
    assert flagged / 500 <= ALPHA + 0.02


# --------------------------------------------------------------------------------------
# the primitives against scipy
# --------------------------------------------------------------------------------------
def test_paired_and_welch_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 7), rng.normal(0, 2, 7)
    p = stats.paired_ttest(a, b)
    ref = sps.ttest_rel(a, b)
    assert float(p.statistic) == pytest.approx(ref.statistic) and float(p.p) == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert (float(p.ci_low), float(p.ci_high)) == pytest.approx((lo, hi))
    c = rng.normal(0, 3, 9)
    w = stats.welch_ttest(a, c)
    ref = sps.ttest_ind(a, c, equal_var=False)
    assert float(w.statistic) == pytest.approx(ref.statistic) and float(w.p) == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert (float(w.ci_low), float(w.ci_high)) == pytest.approx((lo, hi))
    m, sd, lo, hi = stats.mean_ci(a)
    assert (float(lo), float(hi)) == pytest.approx(sps.t.interval(0.95, 6, loc=a.mean(), scale=sps.sem(a)))


def test_holm():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    adj = stats.holm(p)
    # sorted: 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, 0.06 (monotone)
    assert adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06) and np.isnan(adj[3])
    rows = np.array([[0.01, 0.04, 0.03], [0.5, 0.001, 0.2]])
    assert np.allclose(stats.holm_rows(rows), np.vstack([stats.holm(r) for r in rows]))


def test_zero_variance_differences():
    r = stats.paired_ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # constant +0.5: deterministic effect
    assert float(r.p) == 0.0 and float(r.ci_low) == float(r.ci_high) == 0.5


def test_intervals_of_a_rate_clipped_to_its_bounds_keep_their_coverage():
    """Accuracy near 0% (seeds' values from Beta(1, 30), mean 3.2%): t-intervals of the mean
    often reach below 0; clipped to [0, 1] they cover the true mean exactly as often."""
    true = 1 / 31
    x = np.random.default_rng(7).beta(1, 30, (SIMS, 5))
    _, _, lo, hi = stats.mean_ci(x)
    c_lo, c_hi, clipped = stats.clip_interval(lo, hi, stats.bounds(names.EVAL_EXACT_ACCURACY))
    assert (lo < 0).mean() > 0.2 and clipped.mean() == (lo < 0).mean()
    assert (c_lo >= 0).all() and (c_hi <= 1).all()
    covered, covered_clipped = (lo <= true) & (true <= hi), (c_lo <= true) & (true <= c_hi)
    assert (covered == covered_clipped).all() and 0.85 <= covered.mean() <= 0.97  # skewed: t undercovers
    assert stats.bounds(names.EVAL_LM_LOSS) is None and stats.diff_bounds(names.EVAL_ACCURACY) == (-1.0, 1.0)
    nan = stats.clip_interval(np.nan, np.nan, (0.0, 1.0))
    assert np.isnan(nan[0]) and not nan[2]
    v = pd.DataFrame({"arm": "a", "value": [0.0, 0.0, 0.01], "used": True, "reason": "",
                      "metric": names.EVAL_EXACT_ACCURACY})
    s = stats.summarize_groups(v).iloc[0]
    assert s["ci_low"] == 0.0 and s["ci_clipped"] and s["ci_high"] < 0.03


def test_bca_is_seeded_and_reasonable():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 12)
    assert stats.bca_interval(x) == stats.bca_interval(x)
    lo, hi = stats.bca_interval(x)
    t_lo, t_hi = stats.mean_ci(x)[2:]
    assert lo < x.mean() < hi and abs((hi - lo) - (t_hi - t_lo)) < 0.5 * (t_hi - t_lo)
    # Coverage at n = 20 (it undercovers at 10: ~0.90, which is why t is the default).
    xs = np.random.default_rng(6).normal(0, 1, (500, 20))
    intervals = (stats.bca_interval(row, resamples=1000, seed=i) for i, row in enumerate(xs))
    cover = np.mean([lo <= 0 <= hi for lo, hi in intervals])
    print(f"BCa coverage at n=20: {cover:.3f}")
    assert cover >= 0.9


# --------------------------------------------------------------------------------------
# frame-level rules
# --------------------------------------------------------------------------------------
def _runs(values: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": f"{a}{s}",
                "run_name": f"x/{a}{s}",
                "arm": a,
                "seed": s,
                "outcome": o,
                f"metrics.{names.EVAL_EXACT_ACCURACY}": v,
            }
            for a, s, o, v in values
        ]
    )


def test_primary_value_is_the_final_value_not_the_best():
    runs = _runs([("c", 0, "completed", 0.5)])
    history = pd.DataFrame(
        {"run_id": "c0", "key": names.EVAL_EXACT_ACCURACY, "step": [10, 20, 30], "value": [0.4, 0.7, 0.5]}
    )
    v = stats.run_values(runs, names.EVAL_EXACT_ACCURACY, history)
    assert v.loc[0, "value"] == 0.5 and v.loc[0, "final_step"] == 30 and bool(v.loc[0, "used"])


def test_failed_diverged_early_stopped_are_counted_not_used():
    runs = _runs(
        [
            ("c", 0, "completed", 0.5),
            ("c", 1, "error", np.nan),
            ("c", 2, "diverged", 0.1),
            ("c", 3, "early_stopped", 0.3),
            ("c", 4, "completed", np.nan),
            ("c", 5, "running", 0.2),
        ]
    )
    v = stats.run_values(runs, names.EVAL_EXACT_ACCURACY)
    assert v["used"].tolist() == [True, False, False, False, False, False]
    assert v["reason"].tolist() == ["", "error", "diverged", "early_stopped", "no value", "running"]
    s = stats.summarize_groups(v).iloc[0]
    assert s["n"] == 1 and s["runs"] == 6 and s["excluded"] == 5 and math.isnan(s["ci_low"])
    counts = stats.outcome_counts(runs)
    assert counts.loc["c", "error"] == 1 and counts.loc["c", "killed"] == 0 and counts.loc["c", "total"] == 6


def test_wilcoxon_only_from_six_pairs_and_welch_for_unshared_seeds():
    rng = np.random.default_rng(3)
    five = stats.compare_to_control(_frame({"c": rng.normal(0, 1, 5), "a": rng.normal(1, 1, 5)}), "c")
    six = stats.compare_to_control(_frame({"c": rng.normal(0, 1, 6), "a": rng.normal(1, 1, 6)}), "c")
    assert np.isnan(five.loc[0, "wilcoxon_p"]) and np.isfinite(six.loc[0, "wilcoxon_p"])
    assert five.loc[0, "test"] == "paired t" and five.loc[0, "n_pairs"] == 5
    seeds = {"c": [0, 1, 2, 3], "a": [10, 11, 12, 13]}
    arms = {"c": rng.normal(0, 1, 4), "a": rng.normal(1, 1, 4)}
    unshared = stats.compare_to_control(_frame(arms, seeds), "c")
    assert unshared.loc[0, "test"] == "Welch t" and unshared.loc[0, "effect_kind"] == "Hedges g"


def test_one_seed_arm_gets_no_test():
    out = stats.compare_to_control(_frame({"c": np.array([0.5, 0.6, 0.55]), "solo": np.array([0.7])}), "c")
    assert out.loc[0, "verdict"] == "no test" and "too few runs" in out.loc[0, "note"]


def test_search_trials_compared_at_the_same_rung():
    # t1 peaks early then drops; t2 is stopped at rung 50; t3 runs to 100.
    h = pd.DataFrame(
        [("t1", 50, 0.9), ("t1", 100, 0.6), ("t2", 50, 0.8), ("t3", 50, 0.7), ("t3", 100, 0.65)],
        columns=["run_id", "step", "value"],
    ).assign(key=names.EVAL_EXACT_ACCURACY)
    runs = pd.DataFrame(
        {
            "run_id": ["t1", "t2", "t3"],
            "run_name": ["t1", "t2", "t3"],
            "trial_id": ["t1", "t2", "t3"],
            "arm": ["a", "b", "c"],
            "outcome": ["completed", "early_stopped", "completed"],
        }
    )
    assert rungs.infer_rungs(h, runs, names.EVAL_EXACT_ACCURACY) == [50, 100]
    board = rungs.search_leaderboard(runs, h, names.EVAL_EXACT_ACCURACY, "max")
    # At the top rung t3 (0.65) beats t1 (0.6); t2 reached only rung 50. Never the best eval (t1's 0.9).
    assert board["run_id"].tolist() == ["t3", "t1", "t2"]
    assert board["value_at_rung"].tolist() == [0.65, 0.6, 0.8]
