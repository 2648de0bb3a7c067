"""The verdict rule for a declared family of paired comparisons, vectorised over leading
axes so that one report and a simulation of thousands of sweeps run the same code.

For each comparison (arm - reference, one paired difference per seed):

- fewer than ``min_seeds`` pairs, or paired differences with zero variance: inconclusive;
- missing pairs (error, killed, never started): incomplete;
- otherwise a paired t-test against the group-sequential boundary of this look
  (``analysis.sequential``: O'Brien-Fleming spending over n / N_max), with Holm's step-down
  over the family: the k-th smallest p is held to the boundary at alpha / (m - k + 1)
  (Bonferroni split of alpha, spent per comparison; a rejection passes its alpha on, as in
  the graphical Holm procedure for group-sequential designs);
- the exact sign-flip test must cross the same nominal level (its smallest two-sided p is
  2 / 2^n, so no verdict is possible below 6 pairs: ``smallest_decisive_n`` says from when);
- the completed-runs-only analysis (the sensitivity check) must cross it too, in the same
  direction. Then "beats" or "worse" by the objective's direction;
- not rejected: "equivalent" when the family-level interval lies inside
  +-``equivalence_margin`` (a conservative sequential TOST), else "no detectable difference".

Intervals are Bonferroni-simultaneous (alpha / m) at the current look's boundary: repeated
confidence intervals once there was more than one look. An interval that excludes 0 while
the sign-flip test does not reject at its level is not shown (it would rest on normality).
NaN marks an absent pair.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from analysis import sequential

SIGN_FLIP_MIN_N = 6  # below this the smallest two-sided sign-flip p (2/2^n) is >= 0.0625
EXACT_FLIP_MAX_N = 12  # up to 4096 sign patterns enumerated; beyond, a seeded random sample
RANDOM_FLIPS = 8192
FLIP_SEED = 1729

BEATS, WORSE, EQUIVALENT, NO_DIFFERENCE, INCONCLUSIVE, INCOMPLETE = range(6)
VERDICTS = ("beats", "worse", "equivalent", "no detectable difference", "inconclusive", "incomplete")
DECIDED = (BEATS, WORSE, EQUIVALENT)


def moments(d: np.ndarray) -> tuple[np.ndarray, ...]:
    """n, mean, SD (ddof 1), t and two-sided p of paired differences along the last
    axis, NaN = absent. Zero variance gives t = +-inf (p 0) or 0 (p 1, no difference)."""
    d = np.asarray(d, dtype=float)
    ok = np.isfinite(d)
    n = ok.sum(axis=-1)
    x = np.where(ok, d, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = x.sum(axis=-1) / n
        var = np.where(ok, (x - mean[..., None]) ** 2, 0.0).sum(axis=-1) / (n - 1)
        sd = np.sqrt(var)
        se = sd / np.sqrt(n)
        limit = np.where(mean == 0, 0.0, np.sign(mean) * np.inf)
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), limit)
        df = np.maximum(n - 1, 1)
        p = np.where(np.isfinite(t), 2 * sps.t.sf(np.abs(t), df), 0.0)
    p = np.where(n >= 2, p, np.nan)
    return n, mean, sd, t, p


def _signs(n: int) -> np.ndarray:
    """Sign patterns (k, n): all 2^n up to EXACT_FLIP_MAX_N, else a seeded sample plus the identity."""
    if n <= EXACT_FLIP_MAX_N:
        return 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    rng = np.random.default_rng(FLIP_SEED)
    return np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(RANDOM_FLIPS - 1, n))])


def sign_flip_p(d: np.ndarray) -> np.ndarray:
    """Exact two-sided paired sign-flip (permutation) p of the mean difference along the
    last axis, NaN = absent (an absent pair flips to itself, so it changes nothing)."""
    d = np.nan_to_num(np.asarray(d, dtype=float), nan=0.0)
    n = d.shape[-1]
    if n == 0:
        return np.ones(d.shape[:-1])
    signs = _signs(n)
    obs = np.abs(d.sum(axis=-1))
    tol = 1e-9 * np.maximum(np.abs(d).sum(axis=-1), 1e-300)
    out = np.empty(obs.shape)
    flat_d, flat_o, flat_t = d.reshape(-1, n), obs.reshape(-1), tol.reshape(-1)
    res = out.reshape(-1)
    step = max(1, 2_000_000 // len(signs))
    for i in range(0, len(flat_d), step):
        s = np.abs(flat_d[i : i + step] @ signs.T)
        res[i : i + step] = (s >= (flat_o[i : i + step] - flat_t[i : i + step])[:, None]).mean(axis=1)
    return out


@dataclass
class Plan:
    """What the rule needs besides the data: the family's alpha, the objective's direction,
    the minimum pairs, N_max, the earlier looks (pair counts) and the equivalence margin."""

    alpha: float = 0.05
    mode: str = "max"
    min_seeds: int = 3
    max_seeds: int = 10
    looks: tuple[int, ...] = ()
    margin: float | None = None

    def crit(self, n: int, level: float) -> float:
        """|t| boundary for n pairs at this look, for a comparison tested at ``level``."""
        if n < 2:
            return math.inf
        looks = sequential.schedule(self.looks, n, self.min_seeds)
        return sequential.boundaries(looks, float(level), int(self.max_seeds))[-1]

    def n_looks(self, n: int) -> int:
        return len(sequential.schedule(self.looks, n, self.min_seeds))


def _crit_table(plan: Plan, n: np.ndarray, level: np.ndarray) -> np.ndarray:
    """plan.crit over arrays (few distinct (n, level) pairs)."""
    out = np.full(np.broadcast(n, level).shape, np.inf)
    n_b, l_b = np.broadcast_arrays(n, level)
    for nn, ll in {(int(a), float(b)) for a, b in zip(n_b.ravel(), l_b.ravel(), strict=True)}:
        out[(n_b == nn) & (l_b == ll)] = plan.crit(nn, ll)
    return out


def _passes(t, p_flip, n, crit) -> np.ndarray:
    """The t-test crosses |t| > crit and the sign-flip p reaches the same nominal level."""
    level = np.vectorize(sequential.nominal_level, otypes=[float])(crit, np.maximum(n, 2))
    flip_ok = p_flip <= level
    return (np.abs(t) > crit) & flip_ok, flip_ok, level


def decide_family(itt: np.ndarray, cc: np.ndarray, plan: Plan, complete: np.ndarray | None = None) -> dict:
    """Verdicts of a family of m comparisons: ``itt`` and ``cc`` are (..., m, n) paired
    differences (arm - reference) under intention to treat and completed-only (NaN = no
    pair). Returns arrays (..., m): verdict codes (see VERDICTS) and what led to them."""
    itt, cc = np.asarray(itt, dtype=float), np.asarray(cc, dtype=float)
    m = itt.shape[-2]
    n, mean, sd, t, p = moments(itt)
    n_cc, mean_cc, _, t_cc, p_cc = moments(cc)
    complete = np.ones(n.shape, dtype=bool) if complete is None else np.broadcast_to(complete, n.shape)
    few = n < max(plan.min_seeds, 2)
    zero_var = ~few & ~(sd > 0)
    n_min = smallest_decisive_n(plan, m)
    below = ~few & (n < (n_min or np.iinfo(np.int64).max))  # no verdict is possible yet
    testable = ~few & ~zero_var & complete  # tested; below n_min they cannot pass and sort last in Holm
    flip = np.where(testable, sign_flip_p(itt), np.nan)
    flip_cc = np.where(testable, sign_flip_p(cc), np.nan)
    # Holm's step-down: the k-th smallest p at alpha / (m - k)
    order = np.argsort(np.where(testable & ~below, p, 2.0), axis=-1, kind="mergesort")
    rejected = np.zeros(n.shape, dtype=bool)
    still = np.ones(n.shape[:-1], dtype=bool)
    t_pass = np.zeros(n.shape, dtype=bool)
    flip_fail = np.zeros(n.shape, dtype=bool)
    cc_fail = np.zeros(n.shape, dtype=bool)
    for k in range(m):
        idx = order[..., k : k + 1]

        def at(x, idx=idx):
            return np.take_along_axis(x, idx, axis=-1)[..., 0]

        crit = _crit_table(plan, at(n), np.full(at(n).shape, plan.alpha / (m - k)))
        ok_itt, ok_flip, level = _passes(at(t), at(flip), at(n), crit)
        cc_ok = ((at(p_cc) <= level) & (at(flip_cc) <= level)
                 & (np.sign(at(mean_cc)) == np.sign(at(mean))))
        ok = at(testable) & ok_itt & cc_ok & still
        for arr, val in ((rejected, ok), (t_pass, at(testable) & (np.abs(at(t)) > crit) & still),
                         (flip_fail, ~ok_flip), (cc_fail, ~cc_ok)):
            np.put_along_axis(arr, idx, val[..., None], axis=-1)
        still &= ok
    # family-level (Bonferroni-simultaneous, repeated) intervals at this look
    crit_f = _crit_table(plan, n, np.full(n.shape, plan.alpha / m))
    with np.errstate(invalid="ignore"):
        half = crit_f * sd / np.sqrt(n)
    # an interval that excludes 0 where the exact sign-flip test does not reject at the same level
    # rests on normality the data lack (quantised, bimodal): not shown
    level_f = np.vectorize(sequential.nominal_level, otypes=[float])(crit_f, np.maximum(n, 2))
    untrusted = testable & (np.abs(t) > crit_f) & ~(flip <= level_f)
    shown = testable & np.isfinite(half) & ~untrusted
    lo, hi = np.where(shown, mean - half, np.nan), np.where(shown, mean + half, np.nan)
    better = mean > 0 if plan.mode == "max" else mean < 0
    verdict = np.full(n.shape, NO_DIFFERENCE)
    if plan.margin is not None:
        verdict = np.where(shown & (lo > -plan.margin) & (hi < plan.margin), EQUIVALENT, verdict)
    verdict = np.where(rejected, np.where(better, BEATS, WORSE), verdict)
    verdict = np.where(t_pass & ~rejected & (flip_fail | cc_fail), INCONCLUSIVE, verdict)
    verdict = np.where(few | zero_var | below, INCONCLUSIVE, verdict)
    verdict = np.where(~complete, INCOMPLETE, verdict)
    return {"verdict": verdict, "n": n, "diff": mean, "sd": sd, "t": t, "p": p, "flip_p": flip,
            "ci_low": lo, "ci_high": hi, "crit": crit_f, "few": few, "zero_var": zero_var, "below": below,
            "flip_fail": flip_fail & t_pass & ~rejected, "cc_fail": cc_fail & t_pass & ~rejected,
            "n_cc": n_cc, "diff_cc": mean_cc, "p_cc": p_cc, "rejected": rejected, "ci_untrusted": untrusted}


def smallest_decisive_n(plan: Plan, m: int, upto: int = 64) -> int | None:
    """The smallest number of pairs at which any verdict is possible for this family (the
    first Holm step, alpha / m), these earlier looks and this spending: the t boundary must
    be finite and the sign-flip test's smallest p (2 / 2^n) must reach its nominal level."""
    key = (plan.alpha, plan.mode, plan.min_seeds, plan.max_seeds, tuple(plan.looks), plan.margin)
    return _smallest(key, m, upto)


@functools.lru_cache(maxsize=256)
def _smallest(plan_key: tuple, m: int, upto: int) -> int | None:
    plan = Plan(*plan_key)
    for n in range(max(plan.min_seeds, 2), min(upto, max(2 * plan.max_seeds, 16)) + 1):
        crit = plan.crit(n, plan.alpha / m)
        if not math.isfinite(crit) and n >= plan.max_seeds:
            return None  # every look from here on spends nothing: alpha was spent by N_max
        if math.isfinite(crit) and 2.0 ** (1 - n) <= sequential.nominal_level(crit, n):
            return n
    return None
