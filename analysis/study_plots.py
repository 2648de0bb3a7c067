"""Optuna's views of a search, drawn with matplotlib from ``analysis.study.StudyTrials``
(the persisted study, or the MLflow runs when it cannot be read): the optimisation
history, the intermediate values per trial with the ASHA stops marked, and for
two-objective searches the Pareto front. Each returns a Figure, or None when there is
nothing to draw.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis import plots
from analysis.plots import rate_axis, small_multiples
from analysis.study import COMPLETE, FAIL, PRUNED, StudyTrials, pareto_mask

_STATE_STYLE = {COMPLETE: ("tab:blue", "ran to the end"), PRUNED: ("0.55", "stopped early (ASHA)"),
                FAIL: ("tab:red", "failed")}


def _last_steps(t: StudyTrials) -> pd.DataFrame:
    """Each trial's last intermediate value: where a pruned trial stopped."""
    return t.steps.sort_values("step").groupby("number").tail(1).set_index("number")


def optimization_history(t: StudyTrials | None) -> Figure | None:
    """Objective value per trial in the order they were sampled, with the best so far
    (one objective); trials stopped early are grey crosses at their last intermediate
    value. Two objectives: one panel each."""
    if t is None or t.trials.empty:
        return None
    done = t.trials[t.trials["state"] == COMPLETE]
    stopped = t.trials[t.trials["state"] == PRUNED].join(_last_steps(t)["value"], on="number")
    if done.empty and stopped["value"].isna().all():
        return None
    fig, axes = small_multiples(len(t.objectives), width=6.8 if not t.multi else 4.6, height=3.8, ncols=2)
    for i, (ax, name, mode) in enumerate(zip(axes, t.objectives, t.modes, strict=True)):
        values = done[f"obj{i}"]
        ax.scatter(done["number"], values, s=22, color="tab:blue", zorder=3, label="ran to the end")
        if i == 0 and stopped["value"].notna().any():
            ax.scatter(stopped["number"], stopped["value"], marker="x", s=26, color="0.55", zorder=2,
                       label="stopped early: last intermediate value")
        if not t.multi and values.notna().any():
            best = values.cummax() if mode == "max" else values.cummin()
            ax.step(done["number"], best, where="post", color="tab:red", lw=1.4, label="best so far")
        ax.set_xlabel("trial (sampling order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{name} ({mode})")
        rate_axis(ax, name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return plots.finish_multiples(fig, f"Optimisation history ({t.source})", xlabel="")


def intermediate_values(t: StudyTrials | None, metric: str = "") -> Figure | None:
    """Each trial's reported values over the optimizer steps (what ASHA compared): trials
    that ran to the end in blue, trials stopped early in grey ending in a cross at the step
    where they stopped; the rungs where any stopped are dotted."""
    if t is None or t.steps.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for _, sub in t.steps.groupby("number"):
        color, _ = _STATE_STYLE.get(sub["state"].iloc[0], ("0.4", ""))
        ax.plot(sub["step"], sub["value"], color=color, lw=1.0, alpha=0.8, marker="o", ms=2)
    last = _last_steps(t)
    stops = last[last["state"] == PRUNED]
    ax.scatter(stops["step"], stops["value"], marker="x", s=40, color="black", zorder=4)
    for rung in sorted(stops["step"].unique()):
        ax.axvline(rung, color="0.5", ls=":", lw=0.8)
    counts = t.trials["state"].value_counts()
    for state, (color, label) in _STATE_STYLE.items():
        if counts.get(state, 0):
            ax.plot([], [], color=color, label=f"{label} ({counts[state]})")
    if len(stops):
        ax.scatter([], [], marker="x", color="black", label="where ASHA stopped a trial")
    name = metric or t.objectives[0]
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(name)
    rate_axis(ax, name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Intermediate values per trial ({t.source})", fontsize=10)
    fig.tight_layout()
    return fig


def pareto_front(t: StudyTrials | None) -> Figure | None:
    """Two-objective searches: every completed trial in the plane of the two objectives,
    the Pareto-optimal ones (no other trial at least as good in both and better in one)
    highlighted, labelled and joined. None for one objective."""
    if t is None or len(t.objectives) != 2:
        return None
    done = t.trials[t.trials["state"] == COMPLETE].dropna(subset=["obj0", "obj1"])
    if done.empty:
        return None
    v = done[["obj0", "obj1"]].to_numpy(dtype=float)
    front = pareto_mask(v, t.modes)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ax.scatter(v[~front, 1], v[~front, 0], s=24, color="0.6", label="dominated trials")
    ax.scatter(v[front, 1], v[front, 0], s=46, color="tab:red", edgecolor="black", zorder=3,
               label=f"Pareto front ({int(front.sum())} trials)")
    order = np.argsort(v[front, 1])
    ax.plot(v[front, 1][order], v[front, 0][order], color="tab:red", lw=1, ls="--")
    for (x, y), label in zip(v[front][:, ::-1], done.loc[front, "label"], strict=True):
        ax.annotate(str(label), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    (n0, n1), (m0, m1) = t.objectives, t.modes
    ax.set_xlabel(f"{n1} ({'higher' if m1 == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{n0} ({'higher' if m0 == 'max' else 'lower'} is better)")
    rate_axis(ax, n0)
    rate_axis(ax, n1, "x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Pareto front of the two objectives ({t.source})", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["intermediate_values", "optimization_history", "pareto_front"]
