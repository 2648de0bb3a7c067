"""The verdict rule (``analysis.family``, the report's own) checked by simulation on the data
sweeps produce, 2,000 sweeps per scenario, vectorised: quantised accuracies near 0, 0.5 and
1, bimodal outcomes, survivorship, sequential looks 3 -> 5 -> 10 and search-then-confirm.
Each asserts within 3 Monte Carlo standard errors: family-wise false verdicts <= alpha, in
the survivorship scenario P("beats") <= alpha / 2, coverage of the shown intervals >=
nominal; the power for a stated effect is printed."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import family, stats
from tests.support import verdict_sims as vs

REPS = 2000
ALPHA = stats.ALPHA
PLAN = family.Plan(alpha=ALPHA, min_seeds=3, max_seeds=10)
FWER_BOUND = vs.mc_bound(ALPHA, REPS)
COVER_BOUND = 1 - vs.mc_bound(ALPHA, REPS)  # 1 - alpha, less 3 MC SE


def _check_null(res, what: str) -> None:
    fw = float(vs.false_verdicts(res).mean())
    shown, cover = vs.covered(res)
    cov = float(cover[shown].mean()) if shown.any() else 1.0
    print(f"{what}: false verdicts {fw:.4f} (bound {FWER_BOUND:.4f}); intervals shown in {shown.mean():.2f} "
          f"of sweeps, family coverage {cov:.4f}")
    assert fw <= FWER_BOUND
    if shown.sum() >= 200:
        assert cov >= 1 - vs.mc_bound(ALPHA, int(shown.sum()))


@pytest.mark.parametrize("level", [0.02, 0.5, 0.98])
def test_quantised_accuracy_null(level):
    rng = np.random.default_rng(int(level * 100))
    x = vs.quantised(rng, REPS, 4, 10, level)  # control + 3 arms, 10 seeds, steps of 1/256
    _check_null(family.decide_family(vs.diffs(x), vs.diffs(x), PLAN), f"quantised near {level}")


def test_two_seeds_quantised_are_inconclusive_not_beats():
    rng = np.random.default_rng(2)
    x = vs.quantised(rng, REPS, 3, 2, 0.5)
    res = family.decide_family(vs.diffs(x), vs.diffs(x), PLAN)
    old = vs.old_rule(vs.diffs(x))
    print(f"n = 2 A/A: old rule flags {(old == family.BEATS).any(-1).mean():.3f} of sweeps as beats")
    assert (res["verdict"] == family.INCONCLUSIVE).all() and res["few"].all()


def test_bimodal_null():
    rng = np.random.default_rng(11)
    x = vs.bimodal(rng, REPS, 4, 10)
    _check_null(family.decide_family(vs.diffs(x), vs.diffs(x), PLAN), "bimodal")


def test_survivorship_arm_truly_worse_is_never_beats():
    rng = np.random.default_rng(12)
    for n in (3, 5, 10):
        itt, cc = vs.survivorship(rng, REPS, n)
        res = family.decide_family(itt, cc, PLAN)
        beats = float((res["verdict"] == family.BEATS).mean())
        old = float((vs.old_rule(cc) == family.BEATS).mean())
        print(f"survivorship n = {n}: P(beats) new {beats:.4f}, old {old:.4f}")
        assert beats <= vs.mc_bound(ALPHA / 2, REPS)


def test_sequential_looks_keep_the_family_rate():
    rng = np.random.default_rng(13)
    rates = vs.sequential_looks(rng, REPS, 3, PLAN)
    print(f"cumulative false verdicts after looks at 3, 5, 10 seeds: {rates}")
    assert rates == sorted(rates) and rates[-1] <= FWER_BOUND


def test_sequential_repeated_intervals_cover():
    rng = np.random.default_rng(14)
    d = vs.diffs(vs.normal(rng, REPS, 4, 10, effects=[0, 0.5, 1.0, 1.5]))
    truth = np.array([0.5, 1.0, 1.5])[None, :]
    ok = np.ones(REPS, dtype=bool)
    for k, n in enumerate((3, 5, 10)):
        p = family.Plan(ALPHA, "max", 3, 10, (3, 5, 10)[:k])
        res = family.decide_family(d[..., :n], d[..., :n], p)
        _, cover = vs.covered(res, truth)
        ok &= cover
    power = float((res["verdict"] == family.BEATS)[:, 2].mean())
    print(f"repeated-CI simultaneous coverage over 3 looks: {ok.mean():.4f}; "
          f"power at d_z = 1.5, 10 seeds, 3 looks: {power:.3f}")
    assert ok.mean() >= COVER_BOUND


def test_search_then_confirm_under_the_null():
    rng = np.random.default_rng(15)
    r = vs.search_then_confirm(rng, REPS, k=8, top=3, n=10, plan=PLAN)
    print(f"search winner optimism {r['winner_bias_sd']:.2f} SD; confirmed false verdicts "
          f"{r['confirm_fwer']:.4f}")
    assert r["winner_bias_sd"] > 1.2  # what the search reports is optimistic
    assert r["confirm_fwer"] <= FWER_BOUND


def test_power_for_a_stated_effect_is_what_the_plan_says():
    rng = np.random.default_rng(16)
    d = vs.diffs(vs.normal(rng, REPS, 2, 10, effects=[0, 1.5]))
    res = family.decide_family(d, d, PLAN)
    power = float((res["verdict"] == family.BEATS).mean())
    print(f"power at d_z = 1.5, 10 seeds, one look, one comparison: {power:.3f}")
    assert power > 0.5
