"""Group-sequential boundaries for paired t-tests: alpha spent over looks, so that a
comparison tested at every report (3 seeds, then 5, then 10) keeps its error at alpha.

The spending function is Lan-DeMets O'Brien-Fleming over the information fraction
n_k / N_max (N_max: the sweep's ``max_seeds``). Normal-theory boundaries are wrong at
n = 3-10, so the boundaries are t-based: the first look's is the exact Student-t quantile,
later ones come from a seeded, vectorised simulation of null paired differences (the
t-statistic does not depend on their scale). They are cached per (looks, alpha, N_max).
Pure numbers: no I/O.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as sps

SIM_PATHS = 200_000  # null paths per boundary simulation
SIM_SEED = 20261201
_CHUNK = 50_000  # paths per batch (memory)


def obf_spent(t: float, alpha: float) -> float:
    """Two-sided alpha spent by information fraction ``t`` (Lan-DeMets O'Brien-Fleming):
    2 - 2 Phi(z_{1-alpha/2} / sqrt(t)); all of alpha at t >= 1, none at t = 0."""
    if t <= 0:
        return 0.0
    if t >= 1:
        return float(alpha)
    z = sps.norm.isf(alpha / 2)
    return float(2 * sps.norm.sf(z / math.sqrt(t)))


def schedule(looks: list[int] | tuple[int, ...], current: int, min_n: int = 2) -> tuple[int, ...]:
    """The looks that spend alpha: the distinct pair counts of earlier looks below the
    current one (each with at least ``min_n`` pairs, where a verdict was possible), then the
    current count."""
    past = sorted({int(n) for n in looks if min_n <= int(n) < current})
    return (*past, int(current))


def _t_stats(paths: np.ndarray, looks: tuple[int, ...]) -> np.ndarray:
    """|t| of the cumulative paired differences at each look: (paths, looks)."""
    idx = np.asarray(looks) - 1
    s = np.cumsum(paths, axis=1)[:, idx]
    ss = np.cumsum(paths**2, axis=1)[:, idx]
    n = np.asarray(looks, dtype=float)
    var = (ss - s**2 / n) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(s / n) / np.sqrt(var / n)


@lru_cache(maxsize=256)
def boundaries(looks: tuple[int, ...], alpha: float, n_max: int) -> tuple[float, ...]:
    """|t| critical values, one per look, such that a null comparison crosses one at the
    k-th look with probability obf_spent(t_k) - obf_spent(t_{k-1}), t_k = min(n_k / N_max, 1).
    A look that spends nothing (past N_max after a look at N_max) has an infinite one."""
    looks = tuple(int(n) for n in looks)
    if any(n < 2 for n in looks) or list(looks) != sorted(set(looks)):
        raise ValueError(f"looks must be increasing pair counts >= 2, got {looks}")
    spent = [obf_spent(min(n / n_max, 1.0), alpha) for n in looks]
    inc = np.diff([0.0, *spent])
    first = sps.t.isf(inc[0] / 2, looks[0] - 1) if inc[0] > 0 else math.inf
    if len(looks) == 1:
        return (float(first),)
    rng = np.random.default_rng(SIM_SEED)
    stats = np.concatenate([_t_stats(rng.standard_normal((_CHUNK, looks[-1])), looks)
                            for _ in range(SIM_PATHS // _CHUNK)])
    alive = stats[:, 0] <= first
    out = [float(first)]
    for k in range(1, len(looks)):
        want = inc[k] * len(stats)  # paths to stop at look k, of all paths
        cand = np.sort(stats[alive, k])[::-1]
        if want < 1 or not len(cand):
            c = math.inf if want < 1 else 0.0
        else:
            c = float(cand[min(int(round(want)), len(cand)) - 1])
        out.append(c)
        alive &= stats[:, k] <= c
    return tuple(out)


def nominal_level(crit: float, n: int) -> float:
    """The two-sided p-value a paired t-test with n pairs must beat to cross |t| = crit
    (what the sign-flip test is held to at the same look)."""
    return 0.0 if not math.isfinite(crit) else float(2 * sps.t.sf(crit, n - 1))


def power_at(dz: float, n: int, crit: float) -> float:
    """Power of a paired t-test with n pairs against |t| > crit at effect d_z."""
    if n < 2 or not math.isfinite(crit):
        return 0.0
    nc = abs(dz) * math.sqrt(n)
    up = float(sps.nct.sf(crit, n - 1, nc))
    up = (1.0 if nc > crit else 0.0) if math.isnan(up) else up
    return min(up, 1.0)


def mde_at(n: int, crit: float, power: float = 0.8) -> float:
    """Smallest d_z that n pairs detect with ``power`` against |t| > crit (NaN if none)."""
    if n < 2 or not math.isfinite(crit) or power_at(200.0, n, crit) < power:
        return math.nan
    return float(optimize.brentq(lambda dz: power_at(dz, n, crit) - power, 1e-6, 200.0))
