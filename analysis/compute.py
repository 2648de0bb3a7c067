"""Compute from the runs' ``compute/*`` metrics: the metric against cumulative training
FLOPs, the FLOPs each run spent to first reach a target value, and totals per group.

A run's compute at an eval step is exact (the trainer logs ``compute/train_flops`` at
every eval); older runs are interpolated linearly between their logged points.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.stats import Mode
from hrm_core import names

TARGET_FACTOR = 0.9  # default target: 0.9 x the best group's final mean (max metrics)


def _no_curve(cols: list[str], compute: str) -> pd.DataFrame:
    return pd.DataFrame(columns=cols).rename(columns={compute: "flops"})


def metric_vs_compute(
    history: pd.DataFrame, metric: str, compute: str = names.COMPUTE_TRAIN_FLOPS
) -> pd.DataFrame:
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
        return _no_curve(cols, compute)
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
        return _no_curve(cols, compute)
    return pd.concat(parts, ignore_index=True).sort_values(["run_id", "step"]).reset_index(drop=True)


def default_target(
    values: pd.DataFrame, mode: Mode = "max", by: str = "arm", factor: float = TARGET_FACTOR
) -> tuple[float, str]:
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
        rows.append({
            "run_id": rid, **{c: sub[c].iloc[0] for c in meta}, "reached": not first.empty,
            "step": float(first["step"].iloc[0]) if len(first) else math.nan,
            "flops": float(first["flops"].iloc[0]) if len(first) else math.nan,
            "final_step": float(sub["step"].iloc[-1]), "final_flops": float(sub["flops"].iloc[-1]),
        })
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


def _metric(runs: pd.DataFrame, key: str) -> pd.Series:
    """A final-value metric column as numbers (NaN where missing or not logged at all)."""
    col = f"metrics.{key}"
    if col not in runs.columns:
        return pd.Series(np.nan, index=runs.index)
    return pd.to_numeric(runs[col], errors="coerce")


def compute_totals(runs: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """Per group: runs, total and mean training FLOPs and device-seconds (each run's last,
    cumulative compute/* value). Empty when no run logged compute/*."""
    if _metric(runs, names.COMPUTE_TRAIN_FLOPS).isna().all():
        return pd.DataFrame(columns=[by, "runs", "train_flops", "mean_train_flops", "device_seconds"])
    df = runs.assign(_f=_metric(runs, names.COMPUTE_TRAIN_FLOPS),
                     _d=_metric(runs, names.COMPUTE_DEVICE_SECONDS))
    g = df.groupby(by, sort=True)
    return pd.DataFrame({
        "runs": g.size(), "train_flops": g["_f"].sum(min_count=1), "mean_train_flops": g["_f"].mean(),
        "device_seconds": g["_d"].sum(min_count=1),
    }).reset_index()


def early_stopping_savings(runs: pd.DataFrame) -> tuple[float, float]:
    """(FLOPs early stopping saved, FLOPs of running every trial to the end), from the
    trials: for each early-stopped trial its planned FLOPs (compute/planned_train_flops,
    else planned steps x flops per step) minus those it took. NaN when not logged."""
    taken = _metric(runs, names.COMPUTE_TRAIN_FLOPS)
    if taken.isna().all():
        return math.nan, math.nan
    taken = taken.fillna(0.0)
    per_step = _metric(runs, names.COMPUTE_PLANNED_STEPS) * _metric(runs, names.COMPUTE_FLOPS_PER_STEP)
    planned = _metric(runs, names.COMPUTE_PLANNED_FLOPS).fillna(per_step)
    stopped = runs["outcome"] == names.OUTCOME_EARLY_STOPPED
    if stopped.any() and planned[stopped].isna().all():
        return math.nan, math.nan
    saved = float((planned[stopped] - taken[stopped]).clip(lower=0).sum())
    return saved, float(taken.sum()) + saved


def sweep_totals(parent_metrics: dict[str, float], runs: pd.DataFrame) -> tuple[float, float, str]:
    """(train FLOPs, device-seconds, source) of a whole sweep: its parent run's totals when
    it logged them, else the sum over its runs."""
    if names.COMPUTE_SWEEP_FLOPS in parent_metrics:
        device = float(parent_metrics.get(names.COMPUTE_SWEEP_DEVICE_SECONDS, math.nan))
        return float(parent_metrics[names.COMPUTE_SWEEP_FLOPS]), device, "parent run totals"
    t = compute_totals(runs)
    flops, device = float(t["train_flops"].sum(min_count=1)), float(t["device_seconds"].sum(min_count=1))
    return flops, device, "sum over the runs"


def sweep_savings(parent_metrics: dict[str, float], runs: pd.DataFrame) -> tuple[float, float, str]:
    """(FLOPs early stopping saved, FLOPs of running every trial to the end, source): the
    parent run's totals when it logged them, else ``early_stopping_savings`` of the trials."""
    if names.COMPUTE_SAVED_FLOPS in parent_metrics and names.COMPUTE_SWEEP_FLOPS in parent_metrics:
        saved = float(parent_metrics[names.COMPUTE_SAVED_FLOPS])
        return saved, float(parent_metrics[names.COMPUTE_SWEEP_FLOPS]) + saved, "parent run totals"
    saved, full = early_stopping_savings(runs)
    return saved, full, "computed from the trials"
