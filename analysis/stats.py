"""Statistics for ablation sweeps: per-run primary values, group summaries with CIs,
arm-vs-control tests with Holm correction, rung comparisons for searches, and power.

The primitives (``mean_ci``, ``paired_ttest``, ``welch_ttest``) are vectorised over
leading axes, so the same code serves one report and a simulation of thousands of
ablations (see ``simulate_paired_ablations``, used by the tests that check error rates).
"""

from __future__ import annotations

import importlib.util
import math
import os
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


# --------------------------------------------------------------------------------------
# vectorised primitives
# --------------------------------------------------------------------------------------
def mean_ci(x: Any, conf: float = CONF, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _t_from(diff: np.ndarray, se: np.ndarray, df: np.ndarray, conf: float) -> tuple[np.ndarray, ...]:
    """t, p and CI, with zero-variance cases made explicit instead of NaN.

    Identical samples (diff 0, se 0) give p = 1 and a zero-width CI; a constant non-zero
    difference (se 0) gives p = 0: deterministic runs are not 'insignificant'.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
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
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(sd > 0, diff / np.where(sd > 0, sd, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    return TTest(diff, lo, hi, t, df, p, dz)


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
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(pooled > 0, j * diff / np.where(pooled > 0, pooled, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    return TTest(diff, lo, hi, t, df, p, g)


def bca_interval(x: Any, conf: float = CONF, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
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
    BCa bootstrap instead. n = 1 shows the value with no SD or CI.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in values.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        v = g.loc[g["used"], "value"].to_numpy(dtype=float)
        lo, hi, method = _ci(v, ci_method, conf, seed)
        excluded = g.loc[~g["used"], "reason"].value_counts()
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": int(v.size),
                "mean": float(v.mean()) if v.size else math.nan,
                "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "ci_method": method,
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
    effect size and Holm-adjusted p across arms.

    Shared seeds -> paired t-test on the shared seeds (Wilcoxon signed-rank added when
    there are >= 6 pairs); otherwise Welch's t-test. Fewer than 2 runs (or pairs) on a
    side -> no test, the row says so.
    """
    metric = str(values["metric"].iloc[0]) if len(values) else ""
    arms = [a for a in pd.unique(values["arm"]) if a != control]
    ctrl = _per_seed(values, control)
    seeds_known = not values["seed"].isna().all()
    rows = []
    for arm in arms:
        cur = _per_seed(values, arm)
        shared = ctrl.index.intersection(cur.index) if seeds_known else pd.Index([])
        row: dict[str, Any] = {
            "metric": metric, "arm": arm, "control": control, "role": role,
            "n_arm": int(cur.size), "n_control": int(ctrl.size), "n_pairs": 0,
            "test": "", "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "",
            "statistic": math.nan, "df": math.nan, "p": math.nan, "effect": math.nan, "effect_kind": "",
            "wilcoxon_p": math.nan, "sd_diff": math.nan, "note": "",
        }
        mean_a = float(cur.mean()) if cur.size else math.nan
        mean_c = float(ctrl.mean()) if ctrl.size else math.nan
        row["mean_arm"], row["mean_control"] = mean_a, mean_c
        row["diff"] = mean_a - mean_c
        paired = len(shared) >= 2
        if paired:
            a, c = cur.loc[shared].to_numpy(), ctrl.loc[shared].to_numpy()
            r = paired_ttest(a, c, conf)
            row.update(test="paired t", n_pairs=len(shared), effect_kind="d_z", sd_diff=float(np.std(a - c, ddof=1)))
            unpaired = cur.size + ctrl.size - 2 * len(shared)
            if unpaired:
                row["note"] = f"{unpaired} unpaired run(s) left out of the paired test"
            if len(shared) >= WILCOXON_MIN_N:
                d = a - c
                row["wilcoxon_p"] = 1.0 if np.all(d == 0) else float(sps.wilcoxon(a, c, zero_method="wilcox").pvalue)
            if ci_method == "bca" and len(shared) >= BCA_MIN_N:
                lo, hi = bca_interval(a - c, conf, seed=seed)
                r = TTest(r.diff, np.float64(lo), np.float64(hi), r.statistic, r.df, r.p, r.effect)
                row["ci_method"] = "BCa bootstrap"
            else:
                row["ci_method"] = "t"
        elif cur.size >= 2 and ctrl.size >= 2:
            r = welch_ttest(cur.to_numpy(), ctrl.to_numpy(), conf)
            row.update(test="Welch t", effect_kind="Hedges g", ci_method="t")
            row["sd_diff"] = float(math.sqrt(cur.var(ddof=1) + ctrl.var(ddof=1)))
            if len(shared) == 1:
                row["note"] = "only one shared seed: unpaired test"
        else:
            r = None
            row["note"] = f"too few runs for a test (n = {cur.size} vs {ctrl.size})"
        if r is not None:
            row.update(
                diff=float(r.diff), ci_low=float(r.ci_low), ci_high=float(r.ci_high), statistic=float(r.statistic),
                df=float(r.df), p=float(r.p), effect=float(r.effect),
            )
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
            frames.append(compare_to_control(run_values(runs, m), control, metric_mode(m), alpha, ci_method, "exploratory"))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def outcome_counts(runs: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Runs per group and outcome (every known outcome is a column, zeros included)."""
    cols = [*names.OUTCOMES, RUNNING]
    table = pd.crosstab(runs[by], runs["outcome"]) if len(runs) else pd.DataFrame()
    table = table.reindex(columns=[*cols, *[c for c in table.columns if c not in cols]], fill_value=0)
    table["total"] = table.sum(axis=1)
    return table


# --------------------------------------------------------------------------------------
# searches: compare trials at the same rung
# --------------------------------------------------------------------------------------
def infer_rungs(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> list[int]:
    """Rungs = steps where early-stopped trials stopped, plus the full budget."""
    h = history[history["key"] == metric]
    if h.empty:
        return []
    last = h.groupby("run_id")["step"].max()
    stopped = runs.loc[runs["outcome"] == names.OUTCOME_EARLY_STOPPED, "run_id"]
    rungs = set(int(s) for s in last.reindex(stopped).dropna())
    rungs.add(int(last.max()))
    return sorted(rungs)


def rung_values(history: pd.DataFrame, metric: str, rungs: list[int]) -> pd.DataFrame:
    """Each trial's value at each rung it reached: its last value at a step <= the rung."""
    h = history.loc[history["key"] == metric, ["run_id", "step", "value"]].sort_values(["run_id", "step"])
    if h.empty or not rungs:
        return pd.DataFrame(columns=["run_id", "rung", "value"])
    last = h.groupby("run_id")["step"].max()
    rows = []
    for rung in rungs:
        reached = last.index[last >= rung]
        sub = h[h["run_id"].isin(reached) & (h["step"] <= rung)]
        at = sub.groupby("run_id").tail(1)
        rows.append(pd.DataFrame({"run_id": at["run_id"].to_numpy(), "rung": rung, "value": at["value"].to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def search_leaderboard(runs: pd.DataFrame, history: pd.DataFrame, metric: str, mode: Mode) -> pd.DataFrame:
    """Trials ranked like ASHA ranks them: highest rung reached first, then the value
    there. Never the best-over-evals value, and never values from different budgets."""
    rungs = infer_rungs(history, runs, metric)
    rv = rung_values(history, metric, rungs)
    base = runs[["run_id", "run_name", "trial_id", "arm", "outcome"]].copy()
    if rv.empty:
        base["rung"], base["value_at_rung"] = np.nan, np.nan
        return base
    top = rv.sort_values("rung").groupby("run_id").tail(1).rename(columns={"value": "value_at_rung"})
    board = base.merge(top, on="run_id", how="left")
    sign = -1.0 if mode == "max" else 1.0
    board["_key"] = sign * board["value_at_rung"]
    board = board.sort_values(["rung", "_key"], ascending=[False, True], na_position="last").drop(columns="_key")
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board.reset_index(drop=True)


def rung_summary(history: pd.DataFrame, runs: pd.DataFrame, metric: str, mode: Mode) -> pd.DataFrame:
    """Per rung: how many trials reached it and the best / median value there."""
    rv = rung_values(history, metric, infer_rungs(history, runs, metric))
    if rv.empty:
        return pd.DataFrame(columns=["rung", "trials", "best", "median"])
    agg = rv.groupby("rung")["value"]
    best = agg.max() if mode == "max" else agg.min()
    return pd.DataFrame({"trials": agg.size(), "best": best, "median": agg.median()}).reset_index()


# --------------------------------------------------------------------------------------
# compute: the metric against cumulative training FLOPs, compute to reach a target
# --------------------------------------------------------------------------------------
TARGET_FACTOR = 0.9  # default target: 0.9 x the best group's final mean (max metrics)


def metric_vs_compute(history: pd.DataFrame, metric: str, compute: str = names.COMPUTE_TRAIN_FLOPS) -> pd.DataFrame:
    """Every logged value of ``metric`` with the run's cumulative ``compute`` at that step.

    The trainer logs compute/* at every eval step, so the figure is exact there; for other
    steps (older runs that logged compute/* only at train log steps) it is interpolated
    linearly between the run's logged points (within one curriculum stage FLOPs grow
    linearly in steps), and missing past the run's last compute point.
    Columns: run_id, step, value, flops (+ arm, seed, outcome when in ``history``).
    """
    meta = [c for c in ("arm", "seed", "outcome") if c in history.columns]
    cols = ["run_id", "step", "value", *meta, compute]
    m = history.loc[history["key"] == metric, ["run_id", "step", "value", *meta]]
    c = history.loc[history["key"] == compute, ["run_id", "step", "value"]]
    if m.empty or c.empty:
        return pd.DataFrame(columns=cols).rename(columns={compute: "flops"})
    parts = []
    for rid, sub in m.groupby("run_id", sort=False):
        pts = c[c["run_id"] == rid].sort_values("step")
        if pts.empty:
            continue
        xs = np.concatenate([[0.0], pts["step"].to_numpy(dtype=float)])
        ys = np.concatenate([[0.0], pts["value"].to_numpy(dtype=float)])
        steps = sub["step"].to_numpy(dtype=float)
        flops = np.interp(steps, xs, ys, right=np.nan)
        exact = pts.set_index("step")["value"]
        hit = sub["step"].map(exact).to_numpy(dtype=float)  # exact where logged (no float interpolation)
        parts.append(sub.assign(flops=np.where(np.isfinite(hit), hit, flops)))
    if not parts:
        return pd.DataFrame(columns=cols).rename(columns={compute: "flops"})
    return pd.concat(parts, ignore_index=True).sort_values(["run_id", "step"]).reset_index(drop=True)


def default_target(values: pd.DataFrame, mode: Mode = "max", by: str = "arm", factor: float = TARGET_FACTOR) -> tuple[float, str]:
    """The default compute target: ``factor`` x the best group's final mean (``by`` = arm)
    or the best trial's final value (``by`` = run_id); for 'min' metrics best / factor.
    Uses the runs in the statistics (completed, finite). Returns (target, how in words)."""
    used = values[values["used"]] if "used" in values.columns else values
    if used.empty:
        return math.nan, "no completed run: no default target"
    means = used.groupby(by)["value"].mean()
    best = float(means.max() if mode == "max" else means.min())
    what = "best arm's final mean" if by == "arm" else "best trial's final value"
    if mode == "max":
        return factor * best, f"{factor:g} × the {what}"
    return best / factor, f"the {what} / {factor:g}"


def compute_to_target(curve: pd.DataFrame, target: float, mode: Mode = "max") -> pd.DataFrame:
    """Per run: the first eval at which ``value`` reached ``target`` (>= for max, <= for
    min), its step and the cumulative FLOPs spent to get there. ``curve`` is
    ``metric_vs_compute``. Runs that never reached it have reached=False, step/flops NaN."""
    meta = [c for c in ("arm", "seed", "outcome") if c in curve.columns]
    out_cols = ["run_id", *meta, "reached", "step", "flops", "final_step", "final_flops"]
    if curve.empty or not np.isfinite(target):
        return pd.DataFrame(columns=out_cols)
    rows = []
    for rid, sub in curve.sort_values("step").groupby("run_id", sort=False):
        ok = sub["value"] >= target if mode == "max" else sub["value"] <= target
        first = sub[ok.to_numpy()].head(1)
        row = {"run_id": rid, **{c: sub[c].iloc[0] for c in meta}, "reached": not first.empty,
               "step": float(first["step"].iloc[0]) if len(first) else math.nan,
               "flops": float(first["flops"].iloc[0]) if len(first) else math.nan,
               "final_step": float(sub["step"].iloc[-1]), "final_flops": float(sub["flops"].iloc[-1])}
        rows.append(row)
    return pd.DataFrame(rows, columns=out_cols)


def target_summary(to_target: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per group: runs, how many reached the target, the median FLOPs to reach it (runs
    that never did count as infinite: a median above every run that reached is 'not
    reached' = inf) and the mean over the runs that reached it."""
    rows = []
    for key, g in to_target.groupby(by, sort=True):
        f = np.where(g["reached"].to_numpy(dtype=bool), g["flops"].to_numpy(dtype=float), np.inf)
        reached = f[np.isfinite(f)]
        rows.append({by: key, "runs": len(g), "reached": int(reached.size),
                     "median_flops": float(np.median(f)) if f.size else math.nan,
                     "mean_flops_reached": float(reached.mean()) if reached.size else math.nan})
    return pd.DataFrame(rows, columns=[by, "runs", "reached", "median_flops", "mean_flops_reached"])


def compute_totals(runs: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per group: runs, total and mean training FLOPs and device-seconds (each run's last,
    cumulative compute/* value). Empty when no run logged compute/*."""
    fc, dc = f"metrics.{names.COMPUTE_TRAIN_FLOPS}", f"metrics.{names.COMPUTE_DEVICE_SECONDS}"
    if fc not in runs.columns or runs[fc].isna().all():
        return pd.DataFrame(columns=[by, "runs", "train_flops", "mean_train_flops", "device_seconds"])
    df = runs.assign(_f=pd.to_numeric(runs[fc], errors="coerce"),
                     _d=pd.to_numeric(runs[dc], errors="coerce") if dc in runs.columns else np.nan)
    g = df.groupby(by, sort=True)
    return pd.DataFrame({
        "runs": g.size(), "train_flops": g["_f"].sum(min_count=1), "mean_train_flops": g["_f"].mean(),
        "device_seconds": g["_d"].sum(min_count=1),
    }).reset_index()


def early_stopping_savings(runs: pd.DataFrame) -> tuple[float, float]:
    """(FLOPs early stopping saved, FLOPs of running every trial to the end), from the
    trials: for each early-stopped trial its planned FLOPs (compute/planned_train_flops,
    else planned steps x flops per step) minus those it took. NaN when not logged."""
    fc = f"metrics.{names.COMPUTE_TRAIN_FLOPS}"
    if fc not in runs.columns or runs[fc].isna().all():
        return math.nan, math.nan
    taken = pd.to_numeric(runs[fc], errors="coerce").fillna(0.0)

    def col(key: str) -> pd.Series:
        c = f"metrics.{key}"
        return pd.to_numeric(runs[c], errors="coerce") if c in runs.columns else pd.Series(np.nan, index=runs.index)

    planned = col(names.COMPUTE_PLANNED_FLOPS).fillna(col(names.COMPUTE_PLANNED_STEPS) * col(names.COMPUTE_FLOPS_PER_STEP))
    stopped = runs["outcome"] == names.OUTCOME_EARLY_STOPPED
    if stopped.any() and planned[stopped].isna().all():
        return math.nan, math.nan
    saved = float((planned[stopped] - taken[stopped]).clip(lower=0).sum())
    return saved, float(taken.sum()) + saved


# --------------------------------------------------------------------------------------
# checking the statistics by simulation
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# parameter importance (searches)
# --------------------------------------------------------------------------------------
def study_importances(storage: str, study_name: str, objective_index: int = 0) -> tuple[dict[str, float], str]:
    """Parameter importances (seeded fANOVA; PED-ANOVA without scikit-learn) from the
    sweep's persisted Optuna study.

    With early stopping, the completed trials are the survivors only, so trials are
    compared at one rung instead: each trial's intermediate value at the largest step
    every trial reached. Without pruned trials, the final values are used. Raises
    ``LookupError`` when the study cannot be read or has too few trials.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None
    if path is not None and not os.path.exists(path):  # Optuna would create an empty one
        raise LookupError(f"Optuna storage {storage} does not exist")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, ValueError, RuntimeError, ImportError, SQLAlchemyError) as e:
        raise LookupError(f"cannot load Optuna study '{study_name}' from {storage}: {e}") from None
    state = optuna.trial.TrialState
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(state.PRUNED,))
    if importlib.util.find_spec("sklearn") is not None:  # fANOVA's forest (mlflow brings scikit-learn)
        evaluator, method = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    else:
        evaluator, method = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    multi = len(study.directions) > 1
    if not pruned or multi:
        if len(done) < 2:
            raise LookupError(f"Optuna study has {len(done)} completed trial(s): too few for importances")
        target = (lambda t: t.values[objective_index]) if multi else None
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        return {k: float(v) for k, v in imp.items()}, f"{method} on the final values of {len(done)} completed trials (Optuna study)"
    trials = [t for t in (*done, *pruned) if t.intermediate_values]
    if len(trials) < 2:
        raise LookupError("Optuna study has too few trials with intermediate values for importances")
    rung = min(max(t.intermediate_values) for t in trials)
    same_rung = optuna.create_study(direction=study.direction)
    same_rung.add_trials([
        optuna.trial.create_trial(
            params=t.params, distributions=t.distributions,
            value=t.intermediate_values[max(s for s in t.intermediate_values if s <= rung)],
        )
        for t in trials
    ])
    imp = optuna.importance.get_param_importances(same_rung, evaluator=evaluator)
    return {k: float(v) for k, v in imp.items()}, f"{method} on {len(trials)} trials of the Optuna study, all compared at step {rung}"


def rank_importances(params: pd.DataFrame, values: pd.Series) -> dict[str, float]:
    """Fallback importance: |Spearman rho| between each parameter and the value (trials
    compared at one rung). Categorical parameters use their category codes."""
    out = {}
    v = pd.to_numeric(values, errors="coerce")
    for col in params.columns:
        x = pd.to_numeric(params[col], errors="coerce")
        if x.isna().any():
            x = params[col].astype("category").cat.codes.astype(float)
        ok = x.notna() & v.notna()
        if ok.sum() >= 3 and x[ok].nunique() > 1 and v[ok].nunique() > 1:
            out[col.removeprefix("params.")] = float(abs(sps.spearmanr(x[ok], v[ok]).statistic))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
