"""Issue 15's six failures, measured with the old verdict rule and the new one.

    python benchmarks/verdict_simulation.py [--reps 2000]

Old rule: paired t on completed runs, Holm at alpha, one look, no minimum n, MDE at
alpha. New rule: ``analysis.family.decide_family`` (intention to treat, min_seeds, sign-flip
beside t, Holm over the declared family with O'Brien-Fleming spending per comparison,
family-level intervals). Every figure is a share of simulated sweeps (tests/support/verdict_sims.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import family, stats  # noqa: E402
from tests.support import verdict_sims as vs  # noqa: E402


def _flagged(codes: np.ndarray, which=(family.BEATS, family.WORSE)) -> float:
    return float(np.isin(codes, which).any(axis=-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    reps = ap.parse_args().reps
    rng = np.random.default_rng(15)
    plan = family.Plan()
    print(f"{reps} simulated sweeps per figure; alpha = {plan.alpha}, min_seeds 3, max_seeds 10\n")

    print("1. survivorship (arm = control, its worst 30% of runs diverge): P('beats')")
    for n in (3, 5, 10):
        itt, cc = vs.survivorship(rng, reps, n)
        new = family.decide_family(itt, cc, plan)["verdict"]
        print(f"   n = {n:2d}: old {_flagged(vs.old_rule(cc), (family.BEATS,)):.3f}   "
              f"new {_flagged(new, (family.BEATS,)):.3f}")

    print("2. n = 2, quantised 1/256, A/A with 2 arms + control: P(any 'beats')")
    for level in (0.5, 0.99):
        x = vs.quantised(rng, reps, 3, 2, level)
        new = family.decide_family(vs.diffs(x), vs.diffs(x), plan)["verdict"]
        print(f"   near {level}: old {_flagged(vs.old_rule(vs.diffs(x)), (family.BEATS,)):.3f}   new "
              f"{_flagged(new, (family.BEATS,)):.3f} (inconclusive: {(new == family.INCONCLUSIVE).all()})")

    print("3. stated power with 4 arms at n = 5: MDE d_z at alpha vs at alpha/m; CIs excluding 0 "
          "next to 'no detectable difference' (null, 4 arms, n = 5)")
    old_mde, new_mde = stats.min_detectable_dz(5, 0.05), stats.min_detectable_dz(5, 0.05 / 4)
    print(f"   MDE old {old_mde:.2f}, at alpha/4 {new_mde:.2f}")
    x = vs.normal(rng, reps, 5, 5)
    d = vs.diffs(x)
    _, _, _, _, p = family.moments(d)
    t = stats.paired_ttest(d[..., :], np.zeros_like(d))
    old_excl = ((t.ci_low > 0) | (t.ci_high < 0)) & ~(stats.holm_rows(p) < 0.05)
    res = family.decide_family(d, d, plan)
    new_excl = ((res["ci_low"] > 0) | (res["ci_high"] < 0)) & (res["verdict"] == family.NO_DIFFERENCE)
    print(f"   old {old_excl.any(-1).mean():.3f}   new {new_excl.any(-1).mean():.3f}")

    print("4. peeking at 3 -> 5 -> 10 seeds (null, 1 arm): cumulative false-verdict rate")
    x = vs.normal(rng, reps, 2, 10)
    d = vs.diffs(x)
    old, seen = [], np.zeros(reps, dtype=bool)
    for n in (3, 5, 10):
        seen |= np.isin(vs.old_rule(d[..., :n]), (family.BEATS, family.WORSE)).any(-1)
        old.append(float(seen.mean()))
    new = vs.sequential_looks(rng, reps, 1, plan, data=x)
    print(f"   old {' -> '.join(f'{r:.3f}' for r in old)}   new {' -> '.join(f'{r:.3f}' for r in new)}")

    print("5. search then confirm (8 null configurations, one seed each; top 3 confirmed on 10 fresh seeds)")
    r = vs.search_then_confirm(rng, reps, k=8, top=3, n=10, plan=plan)
    print(f"   the winner's search value beats its true mean by {r['winner_bias_sd']:.2f} SD of run noise "
          f"(reported as 'selected on validation, optimistic'); confirmed false verdicts: old rule "
          f"{r['old_confirm_fwer']:.3f}, new {r['confirm_fwer']:.3f}")

    print("6. the control the question needs is declared per sweep (comparisons:), Holm over that family.\n"
          "   The rule on quantised and bimodal A/A sweeps (control + 3 arms, 10 seeds): P(false verdict)")
    for level in (0.02, 0.5, 0.98):
        x = vs.quantised(rng, reps, 4, 10, level)
        res = family.decide_family(vs.diffs(x), vs.diffs(x), plan)
        print(f"   quantised A/A near {level}: false verdicts new {_flagged(res['verdict']):.3f}, "
              f"old {_flagged(vs.old_rule(vs.diffs(x))):.3f}")
    x = vs.bimodal(rng, reps, 4, 10)
    res = family.decide_family(vs.diffs(x), vs.diffs(x), plan)
    print(f"   bimodal A/A: new {_flagged(res['verdict']):.3f}, old {_flagged(vs.old_rule(vs.diffs(x))):.3f}")
    print(f"smallest n for any verdict: 1 comparison {family.smallest_decisive_n(plan, 1)}, "
          f"2: {family.smallest_decisive_n(plan, 2)}, 4: {family.smallest_decisive_n(plan, 4)}")


if __name__ == "__main__":
    main()
