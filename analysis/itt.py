"""Intention to treat: every planned run of an ablation counts.

One outcome per (arm, seed): the latest completed or diverged run wins (a rerun replaces a
missing run; runs are never averaged). A diverged run takes the sweep's ``failure_value``
(default for a ``max`` objective bounded below: the metric's worst value, 0 for accuracies).
``error``/``killed``/running runs, runs without a value, and (arm, seed) cells of the sweep's
seeds that have no run at all are *missing*: a comparison with missing pairs is incomplete.
Runs stopped early by ASHA belong to searches and stay out of the tests. Beside the primary
(intention-to-treat) differences this gives the completed-only ones (the sensitivity check)
and each arm's divergence against its reference, with an exact test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats
from hrm_core import names

COMPLETED, DIVERGED, EARLY, MISSING = "completed", "diverged", "early_stopped", "missing"
NEVER_STARTED = "never started"


def failure_value(metric: str, mode: str, declared: float | None, objective: str) -> tuple[float | None, str]:
    """The value a diverged run takes, and how it was chosen; None (with the reason) when
    there is none, and the analysis falls back to completed runs only."""
    if declared is not None and metric == objective:
        return float(declared), f"the sweep's failure_value, {declared:g}"
    limits = stats.bounds(metric)
    if mode == "max" and limits is not None:
        return limits[0], f"the worst value of {metric}, {limits[0]:g}"
    return None, (f"no failure_value for the min objective {metric} (an invocation from before the key): "
                  "diverged runs are left out, as in the completed-only analysis")


def cells(values: pd.DataFrame, runs: pd.DataFrame, fail: float | None) -> pd.DataFrame:
    """One row per (arm, seed) of the sweep's arms x seeds: status (completed, diverged,
    early_stopped, missing), why it is missing, the run that counts, its ITT value and its
    completed-only value."""
    v = values
    if "start_time" in runs:
        v = values.merge(runs[["run_id", "start_time"]], on="run_id", how="left")
    v = v.assign(start_time=v.get("start_time", pd.Series(pd.NaT, index=v.index)))
    v = v.sort_values("start_time", na_position="first", kind="mergesort")
    arms = sorted(v["arm"].astype(str).unique())
    seeds = sorted(int(s) for s in v["seed"].dropna().unique())
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in v.to_dict("records"):  # oldest first: the last one that counts wins
        if pd.notna(r["seed"]):
            groups.setdefault((str(r["arm"]), int(r["seed"])), []).append(r)
    rows = [{"arm": arm, "seed": seed, **_cell(groups.get((arm, seed), []), fail)}
            for arm in arms for seed in seeds]
    return pd.DataFrame(rows, columns=["arm", "seed", "status", "why", "run_name", "itt", "cc", "runs"])


def _cell(g: list[dict], fail: float | None) -> dict:
    """The outcome of one (arm, seed) from its runs, oldest first."""
    done = [r for r in g if r["used"] or r["outcome"] == names.OUTCOME_DIVERGED]
    if done:
        r = done[-1]
        if r["outcome"] == names.OUTCOME_DIVERGED:
            itt = math.nan if fail is None else fail
            return {"status": DIVERGED, "why": "", "run_name": r.get("run_name", ""), "itt": itt,
                    "cc": math.nan, "runs": len(g)}
        return {"status": COMPLETED, "why": "", "run_name": r.get("run_name", ""), "itt": float(r["value"]),
                "cc": float(r["value"]), "runs": len(g)}
    if any(r["outcome"] == names.OUTCOME_EARLY_STOPPED for r in g):
        return {"status": EARLY, "why": "stopped early by ASHA", "run_name": g[-1].get("run_name", ""),
                "itt": math.nan, "cc": math.nan, "runs": len(g)}
    why = str(g[-1]["reason"]) if g else NEVER_STARTED
    name = g[-1].get("run_name", "") if g else ""
    return {"status": MISSING, "why": why, "run_name": name, "itt": math.nan, "cc": math.nan, "runs": len(g)}


def pairs(table: pd.DataFrame, arm: str, reference: str) -> dict:
    """One comparison's paired data: ITT and completed-only differences (arm - reference)
    over the seeds where both count (NaN elsewhere), the missing pairs and the divergences."""
    a = table[table["arm"] == arm].set_index("seed")
    r = table[table["arm"] == reference].set_index("seed")
    seeds = sorted(set(a.index) | set(r.index))
    a, r = a.reindex(seeds), r.reindex(seeds)
    counted = a["status"].isin([COMPLETED, DIVERGED]) & r["status"].isin([COMPLETED, DIVERGED])
    gaps = (a["status"].fillna(MISSING) == MISSING) | (r["status"].fillna(MISSING) == MISSING)
    missing = [f"{who} seed {s} ({(a if who == arm else r).at[s, 'why'] or NEVER_STARTED})"
               for s in seeds if gaps[s] for who in (arm, reference)
               if (a if who == arm else r)["status"].fillna(MISSING)[s] == MISSING]
    itt = np.where(counted, a["itt"] - r["itt"], np.nan)
    cc = np.where(counted, a["cc"] - r["cc"], np.nan)
    div_a = (a["status"] == DIVERGED)[counted].to_numpy()
    div_r = (r["status"] == DIVERGED)[counted].to_numpy()
    early = int((a["status"] == EARLY).sum() + (r["status"] == EARLY).sum())
    return {"seeds": seeds, "itt": itt.astype(float), "cc": cc.astype(float), "missing": missing,
            "div_arm": div_a, "div_ref": div_r, "early_stopped": early,
            "mean_arm": float(a.loc[counted, "itt"].mean()) if counted.any() else math.nan,
            "mean_ref": float(r.loc[counted, "itt"].mean()) if counted.any() else math.nan}


def divergence_test(div_arm: np.ndarray, div_ref: np.ndarray, paired: bool = True) -> tuple[float, str]:
    """Exact test of the divergence rates: McNemar's (binomial on the discordant seeds)
    when paired by seed, Fisher's when not. p = 1 when nothing diverged."""
    div_arm, div_ref = np.asarray(div_arm, bool), np.asarray(div_ref, bool)
    if paired:
        b, c = int((div_arm & ~div_ref).sum()), int((~div_arm & div_ref).sum())
        p = 1.0 if b + c == 0 else float(sps.binomtest(b, b + c, 0.5).pvalue)
        return p, "McNemar exact"
    table = [[int(div_arm.sum()), int((~div_arm).sum())], [int(div_ref.sum()), int((~div_ref).sum())]]
    return float(sps.fisher_exact(table).pvalue), "Fisher exact"
