"""The report's statistics checked by simulation: error rates, CI coverage and power of
``analysis.stats`` on thousands of simulated ablations at once (the primitives are
vectorised over leading axes)."""

from __future__ import annotations

import math

import numpy as np

from analysis.stats import ALPHA, CONF, holm_rows, mean_ci, paired_ttest, power_paired_t, welch_ttest


def simulate_paired_ablations(
    n: int,
    sims: int = 5000,
    dz: float = 0.0,
    seed_sd: float = 1.0,
    alpha: float = ALPHA,
    conf: float = CONF,
    rng: np.random.Generator | int = 0,
) -> dict[str, float]:
    """Simulate ``sims`` ablations of n seeds (one arm vs control) and measure the tests.

    Each seed shifts both arms alike (``seed_sd``); per-run noise has SD 1/sqrt(2), so the
    paired differences have SD 1 and the true effect is ``dz`` in d_z units. Returns the
    rejection rate of the paired t-test (false-positive rate when dz = 0, power
    otherwise), the coverage of its CI for the difference and of the t-interval of a
    group mean, and the rejection rate / coverage of Welch's test with unshared seeds.
    """
    rng = np.random.default_rng(rng)
    noise = 1 / math.sqrt(2)
    seeds = rng.normal(0.0, seed_sd, (sims, n))
    control = seeds + rng.normal(0.0, noise, (sims, n))
    arm = seeds + dz + rng.normal(0.0, noise, (sims, n))
    paired = paired_ttest(arm, control, conf)
    mean, _, lo, hi = mean_ci(control, conf)
    # Unshared seeds: each run has its own seed effect.
    ctrl_u = rng.normal(0.0, seed_sd, (sims, n)) + rng.normal(0.0, noise, (sims, n))
    arm_u = rng.normal(0.0, seed_sd, (sims, n)) + dz + rng.normal(0.0, noise, (sims, n))
    welch = welch_ttest(arm_u, ctrl_u, conf)
    return {
        "n": n,
        "sims": sims,
        "dz": dz,
        "paired_reject": float(np.mean(paired.p < alpha)),
        "paired_ci_coverage": float(np.mean((paired.ci_low <= dz) & (dz <= paired.ci_high))),
        "mean_ci_coverage": float(np.mean((lo <= 0.0) & (0.0 <= hi))),
        "welch_reject": float(np.mean(welch.p < alpha)),
        "welch_ci_coverage": float(np.mean((welch.ci_low <= dz) & (dz <= welch.ci_high))),
        "power_analytic": power_paired_t(dz, n, alpha) if dz else alpha,
    }


def simulate_aa_sweeps(
    n: int, arms: int = 3, sims: int = 2000, alpha: float = ALPHA, rng: np.random.Generator | int = 0
) -> float:
    """Family-wise false-positive rate of a sweep whose ``arms`` arms all equal the
    control (paired t + Holm across arms, vectorised): the share of sweeps that flag
    any arm."""
    rng = np.random.default_rng(rng)
    noise = 1 / math.sqrt(2)
    seeds = rng.normal(0.0, 1.0, (sims, 1, n))
    control = seeds + rng.normal(0.0, noise, (sims, 1, n))
    others = seeds + rng.normal(0.0, noise, (sims, arms, n))
    p = paired_ttest(others, np.broadcast_to(control, others.shape)).p
    return float(np.mean((holm_rows(p) < alpha).any(axis=-1)))
