"""Statistics for ablation sweeps: per-run primary values, group summaries with CIs,
arm-vs-control tests with Holm correction, and power. Pure statistics: no I/O.

The primitives (``mean_ci``, ``paired_ttest``, ``welch_ttest``) are vectorised over
leading axes, so the same code serves one report and a simulation of thousands of
ablations (``tests/support/simulation.py``, used by the tests that check error rates).
Searches compare trials in ``analysis.rungs``; compute to a target is ``analysis.compute``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from hrm_core import names

CiMethod = Literal["t", "bca"]
Mode = Literal["max", "min"]

ALPHA = 0.05
CONF = 0.95
BCA_MIN_N = 10  # below this, the bootstrap undercovers: always the t-interval
WILCOXON_MIN_N = 6  # with 5 pairs the smallest two-sided exact p is 0.0625
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 20240611

# Why a run is not in the statistics (``reason`` column of ``run_values``).
USED = ""
NO_VALUE = "no value"
RUNNING = "running"


# --------------------------------------------------------------------------------------
# metric helpers
# --------------------------------------------------------------------------------------
def metric_mode(metric: str) -> Mode:
    """Direction of improvement implied by a metric's name (losses and ACT steps: lower)."""
    leaf = metric.rsplit("/", 1)[-1]
    return "min" if ("loss" in leaf or leaf == names.STEPS) else "max"


def is_rate(metric: str) -> bool:
    """Rates in [0, 1] are shown in percentage points, so '3.1 points' reads naturally."""
    leaf = metric.rsplit("/", 1)[-1]
    return leaf in (names.ACCURACY, names.EXACT_ACCURACY, names.Q_HALT_ACCURACY) or leaf.endswith("accuracy")


def display_scale(metric: str) -> tuple[float, str]:
    """(factor, unit) to print a metric's differences: x100 'points' for rates."""
    return (100.0, " points") if is_rate(metric) else (1.0, "")


def bounds(metric: str) -> tuple[float, float] | None:
    """The range a metric's values cannot leave: [0, 1] for rates, None when unbounded."""
    return (0.0, 1.0) if is_rate(metric) else None


def diff_bounds(metric: str) -> tuple[float, float] | None:
    """The range a difference of two of the metric's values cannot leave: [-1, 1] for rates."""
    return (-1.0, 1.0) if is_rate(metric) else None


def clip_interval(
    lo: Any, hi: Any, limits: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An interval kept inside ``limits`` (vectorised; NaN stays NaN): (lo, hi, clipped).

    The quantity it covers (a mean of values inside the limits, or a difference of two)
    lies inside them too, so an interval covers it exactly when its clipped form does:
    clipping keeps the coverage and only removes impossible values.
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if limits is None:
        return lo, hi, np.zeros(np.broadcast(lo, hi).shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        c_lo, c_hi = np.clip(lo, *limits), np.clip(hi, *limits)
        clipped = (c_lo != lo) & np.isfinite(lo) | (c_hi != hi) & np.isfinite(hi)
    return c_lo, c_hi, clipped


# --------------------------------------------------------------------------------------
# vectorised primitives
# --------------------------------------------------------------------------------------
def mean_ci(
    x: Any, conf: float = CONF, axis: int = -1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample SD and the Student-t interval along ``axis`` (NaN bounds when n < 2)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[axis]
    mean = x.mean(axis=axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan, nan
    sd = x.std(axis=axis, ddof=1)
    half = sps.t.ppf(0.5 + conf / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


@dataclass(frozen=True)
class TTest:
    """Result of a (vectorised) two-sample t-test; every field broadcasts over sims."""

    diff: np.ndarray  # mean(a) - mean(b)
    ci_low: np.ndarray
    ci_high: np.ndarray
    statistic: np.ndarray
    df: np.ndarray
    p: np.ndarray
    effect: np.ndarray  # d_z for paired, Hedges' g for Welch


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with a zero denominator giving 0 (num 0) or a signed infinity."""
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(num == 0, 0.0, np.sign(num) * np.inf)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), limit)


def _t_from(diff: np.ndarray, se: np.ndarray, df: np.ndarray, conf: float) -> tuple[np.ndarray, ...]:
    """t, p and CI, with zero-variance cases made explicit instead of NaN.

    Identical samples (diff 0, se 0) give p = 1 and a zero-width CI; a constant non-zero
    difference (se 0) gives p = 0: deterministic runs are not 'insignificant'.
    """
    t = _ratio(diff, se)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(np.isfinite(t), 2 * sps.t.sf(np.abs(t), df), 0.0)
        p = np.where((se == 0) & (diff == 0), 1.0, p)
        half = sps.t.ppf(0.5 + conf / 2, df) * np.where(se > 0, se, 0.0)
    return t, p, diff - half, diff + half


def paired_ttest(a: Any, b: Any, conf: float = CONF, axis: int = -1) -> TTest:
    """Paired t-test of a - b along ``axis`` (needs >= 2 pairs)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = np.moveaxis(d, axis, -1)
    n = d.shape[-1]
    if n < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    diff = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1)
    se = sd / math.sqrt(n)
    df = np.full_like(diff, n - 1.0)
    t, p, lo, hi = _t_from(diff, se, df, conf)
    return TTest(diff, lo, hi, t, df, p, _ratio(diff, sd))


def welch_ttest(a: Any, b: Any, conf: float = CONF, axis: int = -1) -> TTest:
    """Welch's unequal-variance t-test of mean(a) - mean(b) (needs >= 2 runs per side)."""
    a = np.moveaxis(np.asarray(a, dtype=float), axis, -1)
    b = np.moveaxis(np.asarray(b, dtype=float), axis, -1)
    na, nb = a.shape[-1], b.shape[-1]
    if na < 2 or nb < 2:
        raise ValueError("Welch's t-test needs at least 2 runs on each side")
    va, vb = a.var(axis=-1, ddof=1), b.var(axis=-1, ddof=1)
    diff = a.mean(axis=-1) - b.mean(axis=-1)
    se2 = va / na + vb / nb
    se = np.sqrt(se2)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    df = np.where(np.isfinite(df), df, na + nb - 2.0)
    t, p, lo, hi = _t_from(diff, se, df, conf)
    pooled = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    j = 1 - 3 / (4 * (na + nb) - 9)  # Hedges' small-sample correction
    return TTest(diff, lo, hi, t, df, p, _ratio(j * diff, pooled))


def bca_interval(
    x: Any, conf: float = CONF, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Seeded BCa bootstrap interval of the mean (bias-corrected and accelerated)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    theta = float(x.mean())
    if np.all(x == x[0]):
        return theta, theta
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    prop = np.mean(boots < theta) + 0.5 * np.mean(boots == theta)
    z0 = sps.norm.ppf(np.clip(prop, 1 / resamples, 1 - 1 / resamples))
    jack = (x.sum() - x) / (n - 1)
    dev = jack.mean() - jack
    denom = 6.0 * np.sum(dev**2) ** 1.5
    accel = float(np.sum(dev**3) / denom) if denom > 0 else 0.0
    z = sps.norm.ppf([0.5 - conf / 2, 0.5 + conf / 2])
    q = sps.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    lo, hi = np.quantile(boots, q)
    return float(lo), float(hi)


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are ignored and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(ok)
    order = np.argsort(p[ok], kind="mergesort")
    adj = np.maximum.accumulate((m - np.arange(m)) * p[ok][order])
    out[idx[order]] = np.minimum(adj, 1.0)
    return out


def holm_rows(pvalues: np.ndarray) -> np.ndarray:
    """Holm adjustment along the last axis, vectorised over leading axes (no NaN)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="mergesort")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    adj = np.minimum(np.maximum.accumulate((m - np.arange(m)) * sorted_p, axis=-1), 1.0)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


def power_paired_t(dz: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with n pairs at standardised effect d_z."""
    if n < 2:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(dz) * math.sqrt(n)  # symmetric in the sign of the effect
    upper = float(sps.nct.sf(crit, df, nc))
    lower = float(sps.nct.cdf(-crit, df, nc))
    # scipy's nct returns NaN far in a tail; those tails are ~1 (upper) and ~0 (lower).
    upper = (1.0 if nc > crit else 0.0) if math.isnan(upper) else upper
    lower = 0.0 if math.isnan(lower) else lower
    return min(upper + lower, 1.0)


def min_detectable_dz(n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Smallest d_z that n pairs detect with the given power (two-sided paired t)."""
    if n < 2:
        return math.nan
    return float(optimize.brentq(lambda dz: power_paired_t(dz, n, alpha) - power, 1e-6, 50.0))


# --------------------------------------------------------------------------------------
# frames: one value per run, groups, comparisons
# --------------------------------------------------------------------------------------
def run_values(runs: pd.DataFrame, metric: str, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run with its primary value: the metric at the end of its budget.

    The value is the last logged one (MLflow's latest = highest step), never the best
    over evals. Only completed runs with a finite value are ``used``; the others keep
    a ``reason`` (their outcome, or 'no value') so they are counted, not dropped.
    ``final_step`` comes from ``history`` when given.
    """
    cols = ["run_id", "run_name", "arm", "seed", "outcome"]
    out = runs[[c for c in cols if c in runs.columns]].copy()
    col = f"metrics.{metric}"
    out["value"] = pd.to_numeric(runs[col], errors="coerce") if col in runs.columns else np.nan
    if history is not None and len(history):
        h = history[history["key"] == metric]
        out["final_step"] = out["run_id"].map(h.groupby("run_id")["step"].max())
    else:
        out["final_step"] = np.nan
    finite = np.isfinite(out["value"].to_numpy(dtype=float))
    completed = out["outcome"] == names.OUTCOME_COMPLETED
    out["used"] = completed & finite
    out["reason"] = np.where(completed, np.where(finite, USED, NO_VALUE), out["outcome"].astype(str))
    out["metric"] = metric
    return out.reset_index(drop=True)


def _ci(values: np.ndarray, ci_method: CiMethod, conf: float, seed: int) -> tuple[float, float, str]:
    n = values.size
    if n < 2:
        return math.nan, math.nan, ""
    if ci_method == "bca" and n >= BCA_MIN_N:
        lo, hi = bca_interval(values, conf, seed=seed)
        return lo, hi, "BCa bootstrap"
    _, _, lo, hi = mean_ci(values, conf)
    return float(lo), float(hi), "t"


def summarize_groups(
    values: pd.DataFrame,
    by: str | list[str] = "arm",
    ci_method: CiMethod = "t",
    conf: float = CONF,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Mean, SD, n and a CI per group (over seeds), plus what was left out and why.

    The CI is the t-interval; with ``ci_method='bca'`` groups with n >= 10 get a seeded
    BCa bootstrap instead. n = 1 shows the value with no SD or CI. For a bounded metric
    (rates: [0, 1]) the CI is clipped to the bounds (``clip_interval``); ``ci_clipped``
    says where.
    """
    by = [by] if isinstance(by, str) else list(by)
    limits = bounds(str(values["metric"].iloc[0])) if "metric" in values.columns and len(values) else None
    rows = []
    for key, g in values.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        v = g.loc[g["used"], "value"].to_numpy(dtype=float)
        lo, hi, method = _ci(v, ci_method, conf, seed)
        c_lo, c_hi, clipped = clip_interval(lo, hi, limits)
        excluded = g.loc[~g["used"], "reason"].value_counts()
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": int(v.size),
                "mean": float(v.mean()) if v.size else math.nan,
                "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                "ci_low": float(c_lo),
                "ci_high": float(c_hi),
                "ci_method": method,
                "ci_clipped": bool(clipped),
                "runs": len(g),
                "excluded": int((~g["used"]).sum()),
                "excluded_why": ", ".join(f"{c} {r}" for r, c in excluded.items()),
            }
        )
    return pd.DataFrame(rows)


def _per_seed(values: pd.DataFrame, arm: str) -> pd.Series:
    """Used values of one arm indexed by seed (duplicates of a seed are averaged)."""
    g = values[(values["arm"] == arm) & values["used"]]
    if g["seed"].isna().all():
        return pd.Series(g["value"].to_numpy(dtype=float), dtype=float)
    return g.groupby("seed")["value"].mean()


# The test columns of a comparison row before any test ran (also the row of 'no test').
_NO_TEST: dict[str, Any] = {
    "n_pairs": 0, "test": "", "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "",
    "statistic": math.nan, "df": math.nan, "p": math.nan, "effect": math.nan, "effect_kind": "",
    "wilcoxon_p": math.nan, "sd_diff": math.nan, "note": "", "ci_clipped": False,
}


def _paired(a: np.ndarray, c: np.ndarray, conf: float, ci_method: CiMethod, seed: int) -> tuple[dict, TTest]:
    """Paired t on the shared seeds, Wilcoxon from 6 pairs, BCa CI from 10 when asked."""
    r = paired_ttest(a, c, conf)
    row: dict[str, Any] = {"test": "paired t", "n_pairs": len(a), "effect_kind": "d_z", "ci_method": "t",
                           "sd_diff": float(np.std(a - c, ddof=1))}
    if len(a) >= WILCOXON_MIN_N:
        d = a - c
        row["wilcoxon_p"] = 1.0 if np.all(d == 0) else float(sps.wilcoxon(a, c, zero_method="wilcox").pvalue)
    if ci_method == "bca" and len(a) >= BCA_MIN_N:
        lo, hi = bca_interval(a - c, conf, seed=seed)
        r = dataclasses.replace(r, ci_low=np.float64(lo), ci_high=np.float64(hi))
        row["ci_method"] = "BCa bootstrap"
    return row, r


def _test(
    cur: pd.Series, ctrl: pd.Series, shared: pd.Index, conf: float, ci_method: CiMethod, seed: int
) -> dict:
    """The test columns of one arm against the control: paired with >= 2 shared seeds,
    else Welch with >= 2 runs a side, else no test (the note says why)."""
    if len(shared) >= 2:
        row, r = _paired(cur.loc[shared].to_numpy(), ctrl.loc[shared].to_numpy(), conf, ci_method, seed)
        unpaired = cur.size + ctrl.size - 2 * len(shared)
        if unpaired:
            row["note"] = f"{unpaired} unpaired run(s) left out of the paired test"
    elif cur.size >= 2 and ctrl.size >= 2:
        r = welch_ttest(cur.to_numpy(), ctrl.to_numpy(), conf)
        row = {"test": "Welch t", "effect_kind": "Hedges g", "ci_method": "t",
               "sd_diff": float(math.sqrt(cur.var(ddof=1) + ctrl.var(ddof=1)))}
        if len(shared) == 1:
            row["note"] = "only one shared seed: unpaired test"
    else:
        return {"note": f"too few runs for a test (n = {cur.size} vs {ctrl.size})"}
    row.update(diff=float(r.diff), ci_low=float(r.ci_low), ci_high=float(r.ci_high),
               statistic=float(r.statistic), df=float(r.df), p=float(r.p), effect=float(r.effect))
    return row


def _clip_row(row: dict, metric: str) -> None:
    """A difference's CI kept inside the metric's possible differences ([-1, 1] for rates)."""
    lo, hi, clipped = clip_interval(row["ci_low"], row["ci_high"], diff_bounds(metric))
    row.update(ci_low=float(lo), ci_high=float(hi), ci_clipped=bool(clipped))


def compare_to_control(
    values: pd.DataFrame,
    control: str,
    mode: Mode = "max",
    alpha: float = ALPHA,
    ci_method: CiMethod = "t",
    role: str = "primary",
    conf: float = CONF,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Every other arm against the control: difference (arm - control) with its CI, test,
    effect size and Holm-adjusted p across arms. For rates the CI stays in [-1, 1].

    Shared seeds -> paired t-test on the shared seeds (Wilcoxon signed-rank added when
    there are >= 6 pairs); otherwise Welch's t-test. Fewer than 2 runs (or pairs) on a
    side -> no test, the row says so.
    """
    metric = str(values["metric"].iloc[0]) if len(values) else ""
    ctrl = _per_seed(values, control)
    seeds_known = not values["seed"].isna().all()
    rows = []
    for arm in (a for a in pd.unique(values["arm"]) if a != control):
        cur = _per_seed(values, arm)
        shared = ctrl.index.intersection(cur.index) if seeds_known else pd.Index([])
        mean_a = float(cur.mean()) if cur.size else math.nan
        mean_c = float(ctrl.mean()) if ctrl.size else math.nan
        row = {"metric": metric, "arm": arm, "control": control, "role": role, "n_arm": int(cur.size),
               "n_control": int(ctrl.size), **_NO_TEST, "mean_arm": mean_a, "mean_control": mean_c}
        row["diff"] = mean_a - mean_c
        row.update(_test(cur, ctrl, shared, conf, ci_method, seed))
        _clip_row(row, metric)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    better = out["diff"] > 0 if mode == "max" else out["diff"] < 0
    out["verdict"] = np.select(
        [out["p"].isna(), out["significant"] & better, out["significant"] & ~better],
        ["no test", "better", "worse"],
        "no detectable difference",
    )
    return out


def compare_metrics(
    runs: pd.DataFrame,
    control: str,
    primary: str,
    mode: Mode,
    exploratory: list[str] | tuple[str, ...] = (),
    alpha: float = ALPHA,
    ci_method: CiMethod = "t",
) -> pd.DataFrame:
    """Arm-vs-control on the primary metric (Holm across arms) and, labelled exploratory,
    on other metrics (each with its own direction, Holm within the metric)."""
    frames = [compare_to_control(run_values(runs, primary), control, mode, alpha, ci_method, "primary")]
    for m in exploratory:
        if m != primary and f"metrics.{m}" in runs.columns:
            values, m_mode = run_values(runs, m), metric_mode(m)
            frames.append(compare_to_control(values, control, m_mode, alpha, ci_method, "exploratory"))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def outcome_counts(runs: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Runs per group and outcome (every known outcome is a column, zeros included)."""
    cols = [*names.OUTCOMES, RUNNING]
    table = pd.crosstab(runs[by], runs["outcome"]) if len(runs) else pd.DataFrame()
    table = table.reindex(columns=[*cols, *[c for c in table.columns if c not in cols]], fill_value=0)
    table["total"] = table.sum(axis=1)
    return table
