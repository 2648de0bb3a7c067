"""The verdict rule checked by simulation on the data sweeps really produce: quantised
accuracies (steps of 1/256), bimodal "solved or not" outcomes, survivorship (an arm whose
worst runs diverge), sequential looks and search-then-confirm. Each scenario draws
thousands of sweeps at once and runs them through ``analysis.family.decide_family`` (the
report's own rule), and, for the before/after figures, through the old rule (paired t on
completed runs, Holm at alpha, one look). Used by tests/test_verdict_simulation.py and
benchmarks/verdict_simulation.py."""

from __future__ import annotations

import math

import numpy as np

from analysis import family, stats

TEST_SIZE = 256  # sudoku4's test puzzles: exact accuracy moves in steps of 1/256


def quantised(rng, sims: int, arms: int, n: int, level: float) -> np.ndarray:
    """Exact accuracies (sims, arms, n) near ``level``: each seed has its own solve rate,
    shared by every arm (the null), and a run solves Binomial(256, rate) puzzles."""
    logit = math.log(level / (1 - level)) + rng.normal(0, 0.5, (sims, 1, n))
    rate = 1 / (1 + np.exp(-logit))
    return rng.binomial(TEST_SIZE, np.broadcast_to(rate, (sims, arms, n))) / TEST_SIZE


def bimodal(rng, sims: int, arms: int, n: int, solved: float = 0.5) -> np.ndarray:
    """Solved-or-not accuracies: a run solves the task (about 0.95) with probability
    ``solved``, else stays near 0.02; quantised to 1/256."""
    ok = rng.random((sims, arms, n)) < solved
    rate = np.where(ok, 0.95, 0.02)
    return rng.binomial(TEST_SIZE, rate) / TEST_SIZE


def normal(rng, sims: int, arms: int, n: int, effects=None) -> np.ndarray:
    """Paired normal values: seed effect SD 1 shared by the arms, run noise SD 1/sqrt(2)
    (paired differences SD 1); ``effects`` (per arm, d_z units) shift the arms."""
    seed = rng.normal(0, 1, (sims, 1, n))
    x = seed + rng.normal(0, 1 / math.sqrt(2), (sims, arms, n))
    if effects is not None:
        x = x + np.asarray(effects, dtype=float)[None, :, None]
    return x


def diffs(values: np.ndarray) -> np.ndarray:
    """Each arm (1..) minus the control (0): (sims, arms - 1, n)."""
    return values[:, 1:] - values[:, :1]


def false_verdicts(res: dict) -> np.ndarray:
    """Sweeps (sims,) with any beats or worse."""
    v = res["verdict"]
    return ((v == family.BEATS) | (v == family.WORSE)).any(axis=-1)


def covered(res: dict, truth: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(sweeps that show an interval, of those whether every shown interval covers the truth)."""
    shown = np.isfinite(res["ci_low"])
    cover = ~shown | ((res["ci_low"] <= truth) & (truth <= res["ci_high"]))
    return shown.any(axis=-1), cover.all(axis=-1)


def old_rule(d_cc: np.ndarray, alpha: float = stats.ALPHA, mode: str = "max") -> np.ndarray:
    """The rule before issue 15: paired t on the completed pairs, Holm at alpha, one look,
    no minimum n: verdict codes (sims, m)."""
    n, mean, _, _, p = family.moments(d_cc)
    p = np.where(np.isnan(p), 1.0, p)
    sig = stats.holm_rows(p) < alpha
    better = mean > 0 if mode == "max" else mean < 0
    return np.where(sig, np.where(better, family.BEATS, family.WORSE), family.NO_DIFFERENCE)


def survivorship(rng, sims: int, n: int, share: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """One arm with the control's accuracy distribution whose worst ``share`` of runs
    diverge (value 0 under intention to treat, absent when completed-only):
    (ITT differences, completed-only differences), each (sims, 1, n)."""
    v = np.clip(0.5 + rng.normal(0, 0.05, (sims, 1, n)) + rng.normal(0, 0.05, (sims, 2, n)), 0, 1)
    v = np.round(v * TEST_SIZE) / TEST_SIZE
    cut = 0.5 + math.sqrt(0.005) * -0.5244  # the arm's 30% quantile (normal, SD sqrt(0.05^2 * 2))
    div = v[:, 1] < cut
    itt = np.where(div, 0.0, v[:, 1]) - v[:, 0]
    cc = np.where(div, np.nan, v[:, 1]) - v[:, 0]
    return itt[:, None], cc[:, None]


def sequential_looks(rng, sims: int, arms: int, plan: family.Plan, looks=(3, 5, 10), data=None) -> list:
    """Cumulative false-verdict rate after each look (3, then 5, then 10 seeds) of null
    sweeps with ``arms`` arms, every look tested with the looks before it recorded."""
    x = normal(rng, sims, arms + 1, looks[-1]) if data is None else data
    d = diffs(x)
    any_false = np.zeros(sims, dtype=bool)
    out = []
    for k, n in enumerate(looks):
        p = family.Plan(plan.alpha, plan.mode, plan.min_seeds, plan.max_seeds, tuple(looks[:k]), plan.margin)
        res = family.decide_family(d[..., :n], d[..., :n], p)
        any_false |= false_verdicts(res)
        out.append(float(any_false.mean()))
    return out


def search_then_confirm(rng, sims: int, k: int = 8, top: int = 3, n: int = 10,
                        plan: family.Plan | None = None) -> dict:
    """A search of ``k`` null configurations, each tried once (one seed, validation), the
    best ``top`` confirmed against the base with ``n`` fresh paired seeds on test.
    Returns the winner's optimism (its search value minus its true mean, in run-noise SDs)
    and the family-wise rate of false confirmed verdicts."""
    search = rng.normal(0, 1, (sims, k))  # true means all 0, run noise SD 1
    winner_bias = float(search.max(axis=1).mean())
    fresh = normal(rng, sims, top + 1, n)  # confirmation: independent of the selection
    plan = plan or family.Plan()
    res = family.decide_family(diffs(fresh), diffs(fresh), plan)
    old = old_rule(diffs(fresh))
    return {"winner_bias_sd": winner_bias, "confirm_fwer": float(false_verdicts(res).mean()),
            "old_confirm_fwer": float(((old == family.BEATS) | (old == family.WORSE)).any(-1).mean()),
            "res": res}


def mc_bound(p: float, reps: int, k: float = 3.0) -> float:
    """p plus k Monte Carlo standard errors of a rate estimated from ``reps`` draws."""
    return p + k * math.sqrt(p * (1 - p) / reps)
