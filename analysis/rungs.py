"""Searches: trials compared at the same rung, as ASHA compares them.

A rung is a step at which early-stopped trials stopped, or the full budget. A trial's
value at a rung is its last value at a step <= the rung; trials are ranked by the
highest rung they reached, then by their value there, never by their best eval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats import Mode
from hrm_core import names


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
        rows.append(pd.DataFrame({"run_id": at["run_id"].to_numpy(), "rung": rung,
                                  "value": at["value"].to_numpy()}))
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
    board = board.sort_values(["rung", "_key"], ascending=[False, True], na_position="last")
    board = board.drop(columns="_key")
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
