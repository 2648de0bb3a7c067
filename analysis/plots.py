"""Report figures (matplotlib). Each function takes tidy frames from ``analysis.loading``
/ ``analysis.stats`` and returns a Figure, or None when the sweep logged nothing to draw
(the notebook then says so instead of showing an empty axis).

Callers outside a notebook should ``plt.close(fig)`` when done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from scipy import stats as sps

from analysis import stats
from hrm_core import names

CONF = 0.95
MAX_LINES = 6  # more groups than this in one axis: small multiples instead
_EXCLUDED_COLOR = "tab:red"
VERDICT_COLORS = {"better": "tab:green", "beats": "tab:green", "worse": "tab:red", "equivalent": "tab:blue",
                  "no detectable difference": "0.35", "no test": "0.6", "inconclusive": "0.6",
                  "incomplete": "0.6"}


def _colors(keys: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def rate_axis(ax: plt.Axes, metric: str, axis: str = "y") -> None:
    """Rates read as percentages on their axis (0.612 -> 61%), like the tables write them."""
    if stats.is_rate(metric):
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0))


def small_multiples(
    n: int, width: float = 4.3, height: float = 3.1, ncols: int = 3, sharey: bool = False
) -> tuple[Figure, list[plt.Axes]]:
    """A figure of ``n`` small multiples, at most ``ncols`` a row; unused cells removed.
    ``finish_multiples`` adds the title, the one legend and the layout."""
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False,
                             sharex=True, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    for ax in flat[:n][-cols:]:  # the bottom row keeps its x tick labels
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in flat[:n]:  # few ticks: small panels read better, and draw faster
        ax.locator_params(nbins=4)
    return fig, flat[:n]


def finish_multiples(
    fig: Figure, title: str, colors: dict[str, tuple] | None = None, xlabel: str = "optimizer step"
) -> Figure:
    """The title on top, one legend for all small multiples under it (a line per group),
    the shared x label, and fixed margins in inches (a tight layout would draw the figure
    once more: the many panels of a large sweep made reports slower)."""
    w, h = fig.get_size_inches()
    rows = math.ceil(len(colors) / 6) if colors else 0
    fig.suptitle(title, fontsize=11, y=1 - 0.06 / h, va="top")
    if colors:
        handles = [plt.Line2D([], [], color=c, lw=2) for c in colors.values()]
        fig.legend(handles, list(colors), loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / h),
                   ncols=min(len(colors), 6), fontsize=8, frameon=False)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=9, y=0.05 / h, va="bottom")
    fig.subplots_adjust(left=0.65 / w, right=1 - 0.2 / w, bottom=(0.6 if xlabel else 0.45) / h,
                        top=1 - (0.62 + 0.24 * rows) / h, wspace=0.3, hspace=0.45)
    return fig


def _band(
    pivot: pd.DataFrame, conf: float = CONF, limits: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per-step mean and t-interval over the runs present at each step (no band at n < 2),
    kept inside ``limits`` (a bounded metric's range); the last item says whether it was
    clipped anywhere."""
    vals = pivot.to_numpy(dtype=float)
    finite = np.isfinite(vals)
    n = finite.sum(axis=1)
    mean = np.where(n > 0, np.where(finite, vals, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
    dev = np.where(finite, vals - mean[:, None], 0.0)
    sd = np.sqrt((dev**2).sum(axis=1) / np.maximum(n - 1, 1))
    crit = sps.t.ppf(0.5 + conf / 2, np.maximum(n - 1, 1))
    half = np.where(n >= 2, crit * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    lo, hi, clipped = stats.clip_interval(mean - half, mean + half, limits)
    return pivot.index.to_numpy(), mean, lo, hi, bool(clipped.any())


def _band_title(metric: str, conf: float, clipped: bool) -> str:
    limits = stats.bounds(metric)
    tail = f", clipped to {limits[0]:.0%}–{limits[1]:.0%}" if clipped and limits else ""
    return f"{metric}: mean over seeds, {int(conf * 100)}% CI band{tail}"


def learning_curves(
    history: pd.DataFrame,
    metric: str,
    by: str = "arm",
    outcomes: Sequence[str] | None = (names.OUTCOME_COMPLETED,),
    ax: plt.Axes | None = None,
    conf: float = CONF,
    control: str | None = None,
) -> Figure | None:
    """Mean curve per arm over seeds with a t-interval band, clipped to a bounded metric's
    range (runs of other outcomes are left out of the band by default; the legend gives
    n). More than ``MAX_LINES`` arms: small multiples, one per arm, each with the
    ``control`` (or the first arm) in grey for reference."""
    h = history[history["key"] == metric]
    if outcomes is not None and "outcome" in h.columns:
        h = h[h["outcome"].isin(outcomes)]
    if h.empty:
        return None
    groups = sorted(h[by].astype(str).unique())
    curves = {g: _band(sub.pivot_table(index="step", columns="run_id", values="value", aggfunc="last")
                       .sort_index(), conf, stats.bounds(metric)) + (sub["run_id"].nunique(),)
              for g, sub in h.groupby(h[by].astype(str))}
    clipped = any(c[4] for c in curves.values())
    if ax is None and len(groups) > MAX_LINES:
        return _curve_multiples(curves, groups, metric, control, _band_title(metric, conf, clipped))
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 4.2))
    colors = _colors(groups)
    for g in groups:
        _draw_band(ax, curves[g], colors[g], f"{g} (n={curves[g][5]})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    rate_axis(ax, metric)
    ax.set_title(_band_title(metric, conf, clipped), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _draw_band(ax: plt.Axes, curve: tuple, color, label: str | None, lw: float = 1.8) -> None:
    steps, mean, lo, hi = curve[:4]
    ax.plot(steps, mean, color=color, lw=lw, label=label)
    if np.isfinite(lo).any():
        ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)


def _curve_multiples(curves: dict, groups: list[str], metric: str, control: str | None, title: str) -> Figure:
    """One small multiple per arm (the reference arm in grey in each), shared y axis."""
    ref = control if control in curves else groups[0]
    others = [g for g in groups if g != ref] or [ref]
    fig, axes = small_multiples(len(others), width=3.2, height=2.3, sharey=True)
    colors = _colors(groups)
    for ax, g in zip(axes, others, strict=True):
        if g != ref:
            _draw_band(ax, curves[ref], "0.55", None, lw=1.2)
        _draw_band(ax, curves[g], colors[g], None)
        ax.set_title(f"{g} (n={curves[g][5]})" + (f" vs {ref}" if g != ref else ""), fontsize=9)
        rate_axis(ax, metric)
        ax.grid(alpha=0.3)
    return finish_multiples(fig, f"{title} (grey: {ref})")


def final_values(
    values: pd.DataFrame, metric: str, order: Sequence[str] | None = None, control: str | None = None
) -> Figure | None:
    """Strip + box plot of each run's primary value per arm, with mean and CI; runs that
    are not in the statistics appear as red crosses under the axis, with their count."""
    if values.empty:
        return None
    arms = list(order) if order is not None else sorted(values["arm"].astype(str).unique())
    used = values[values["used"]]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(arms) + 2.5), 4.2))
    rng = np.random.default_rng(0)
    data = [used.loc[used["arm"] == a, "value"].to_numpy(dtype=float) for a in arms]
    box_pos = [i for i, d in enumerate(data) if d.size >= 4]
    if box_pos:
        ax.boxplot([data[i] for i in box_pos], positions=box_pos, widths=0.5, showfliers=False,
                   medianprops={"color": "0.3"}, boxprops={"color": "0.6"}, whiskerprops={"color": "0.6"},
                   capprops={"color": "0.6"})
    finite = np.concatenate([d for d in data if d.size]) if any(d.size for d in data) else np.array([0.0])
    lo_y = float(np.min(finite))
    span = float(np.ptp(finite)) or 1.0
    for i, (arm, d) in enumerate(zip(arms, data, strict=True)):
        ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=22, alpha=0.8,
                   color="tab:blue" if arm != control else "0.35", zorder=3)
        if d.size >= 2:
            m, _, lo, hi = stats.mean_ci(d)
            lo, hi, _ = stats.clip_interval(lo, hi, stats.bounds(metric))
            ax.errorbar(i + 0.28, m, yerr=[[m - lo], [hi - m]], fmt="D", color="black", ms=5, capsize=3,
                        zorder=4)
        elif d.size == 1:
            ax.plot(i + 0.28, d[0], "D", color="black", ms=5, zorder=4)
        excl = values[(values["arm"] == arm) & ~values["used"]]
        if len(excl):
            ax.scatter(np.full(len(excl), i), np.full(len(excl), lo_y - 0.12 * span), marker="x",
                       color=_EXCLUDED_COLOR, zorder=3)
            ax.annotate(f"{len(excl)} excl.", (i, lo_y - 0.12 * span), textcoords="offset points",
                        xytext=(8, -3), fontsize=7, color=_EXCLUDED_COLOR)
    ax.set_xticks(range(len(arms)), [f"{a}\n(control)" if a == control else a for a in arms], fontsize=8)
    ax.set_xlim(-0.6, len(arms) - 0.3)
    ax.set_ylabel(f"{metric} at end of budget")
    rate_axis(ax, metric)
    ax.set_title("Final value per run (dots), mean with 95% CI (diamonds); x = not in the statistics",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def pareto(runs: pd.DataFrame, accuracy: str = names.EVAL_EXACT_ACCURACY, steps: str = names.EVAL_STEPS,
           by: str | None = "arm") -> Figure | None:
    """Accuracy vs mean ACT steps per completed run and per arm mean, with the arms' Pareto
    front (more accuracy for fewer steps). ``by=None``: one group, the front over runs."""
    ca, cs = f"metrics.{accuracy}", f"metrics.{steps}"
    if ca not in runs.columns or cs not in runs.columns:
        return None
    if by is None:  # searches: every trial is its own configuration
        runs, by = runs.assign(_all="trials"), "_all"
    df = runs[(runs["outcome"] == names.OUTCOME_COMPLETED)][[by, ca, cs]].dropna()
    if df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    groups = sorted(df[by].astype(str).unique())
    colors = _colors(groups)
    means = df.groupby(df[by].astype(str))[[ca, cs]].mean() if by != "_all" else df.set_index(by)[[ca, cs]]
    for g in groups:
        sub = df[df[by].astype(str) == g]
        ax.scatter(sub[cs], sub[ca], s=16, alpha=0.45, color=colors[g])
        if by != "_all":
            ax.scatter(means.loc[g, cs], means.loc[g, ca], s=90, marker="o", edgecolor="black",
                       color=colors[g], label=g, zorder=4)
    front, best = [], -np.inf
    for _, row in means.sort_values([cs, ca], ascending=[True, False]).iterrows():
        if row[ca] > best:
            front.append((row[cs], row[ca]))
            best = row[ca]
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        label = "Pareto front (runs)" if by == "_all" else "Pareto front (arm means)"
        ax.step(xs, ys, where="post", color="black", lw=1, ls="--", label=label)
    ax.set_xlabel(f"{steps} (mean ACT steps, lower is cheaper)")
    ax.set_ylabel(accuracy)
    rate_axis(ax, accuracy)
    ax.set_title("Accuracy vs ACT steps")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def trial_curves(
    history: pd.DataFrame, metric: str, leaderboard: pd.DataFrame, rungs: Sequence[int] = (), top: int = 5
) -> Figure | None:
    """Search: every trial's curve (grey), the ``top`` trials of the rung leaderboard in
    colour, and the rungs as dotted lines."""
    h = history[history["key"] == metric]
    if h.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    best = leaderboard.dropna(subset=["value_at_rung"]).head(top)
    best_ids = list(best["run_id"])
    for rid, sub in h.groupby("run_id"):
        if rid not in best_ids:
            ax.plot(sub["step"], sub["value"], color="0.75", lw=0.8, alpha=0.7)
    colors = _colors([str(i) for i in range(len(best_ids))])
    for i, row in enumerate(best.itertuples()):
        sub = h[h["run_id"] == row.run_id]
        ax.plot(sub["step"], sub["value"], color=colors[str(i)], lw=1.8,
                label=f"#{row.rank} {row.trial_id or row.run_name}")
    for r in rungs:
        ax.axvline(r, color="0.4", ls=":", lw=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    rate_axis(ax, metric)
    ax.set_title(f"{metric} per trial: top {len(best_ids)} at the top rung in colour, rungs dotted",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if best_ids:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rung_values(values: pd.DataFrame, metric: str) -> Figure | None:
    """Search: each trial's value at every rung it reached (lines join a trial's rungs),
    which shows what early stopping kept."""
    if values.empty:
        return None
    rungs = sorted(values["rung"].unique())
    pos = {r: i for i, r in enumerate(rungs)}
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(rungs) + 2), 4.2))
    for _, sub in values.groupby("run_id"):
        sub = sub.sort_values("rung")
        ax.plot(sub["rung"].map(pos), sub["value"], color="0.6", lw=0.7, alpha=0.6, marker="o", ms=3)
    ticks = [f"step {r}\n({(values['rung'] == r).sum()} trials)" for r in rungs]
    ax.set_xticks(range(len(rungs)), ticks, fontsize=8)
    ax.set_ylabel(metric)
    rate_axis(ax, metric)
    ax.set_title("Trials at each rung (same step, same budget)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def param_importance(importances: dict[str, float], method: str) -> Figure | None:
    """Horizontal bars of parameter importances (from the Optuna study, or a fallback)."""
    if not importances:
        return None
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6.0, 0.45 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel("importance")
    ax.set_title(f"Parameter importance ({method})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _axis_values(col: pd.Series) -> tuple[np.ndarray, list[float], list[str]]:
    """Map a parameter to [0, 1]: log scale for wide positive ranges, evenly spaced
    categories for non-numbers; returns the ticks to label the axis."""
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().all() and num.nunique() > 1:
        v = num.to_numpy(dtype=float)
        lo, hi = float(v.min()), float(v.max())
        log = lo > 0 and hi / lo > 20
        f = np.log10 if log else (lambda x: x)
        flo, fhi = float(f(lo)), float(f(hi))
        ticks = sorted(num.unique()) if num.nunique() <= 6 else [lo, hi]
        pos = [(float(f(t)) - flo) / (fhi - flo) for t in ticks]
        return (f(v) - flo) / (fhi - flo), pos, [f"{t:.3g}" for t in ticks]
    cats = sorted(col.astype(str).unique())
    pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return col.astype(str).map(pos).to_numpy(dtype=float), list(pos.values()), cats


def parallel_coordinates(
    runs: pd.DataFrame,
    params: Sequence[str],
    value: pd.Series,
    metric: str,
    mode: str = "max",
    label: str = "",
) -> Figure | None:
    """One line per trial through its parameter values, coloured by ``value`` (every trial
    at the same rung); the best trials are drawn on top."""
    params = [p for p in params if p in runs.columns and runs[p].nunique(dropna=True) > 1]
    value = pd.to_numeric(pd.Series(value, index=runs.index), errors="coerce")
    keep = value.notna().to_numpy()
    if not params or keep.sum() < 2:
        return None
    df, v = runs.loc[keep, params], value[keep].to_numpy(dtype=float)
    cols = [_axis_values(df[p]) for p in params]
    cols.append(((v - v.min()) / (np.ptp(v) or 1.0), [0.0, 1.0], [f"{v.min():.3g}", f"{v.max():.3g}"]))
    ys = np.column_stack([c[0] for c in cols])
    order = np.argsort(v if mode == "max" else -v)
    norm = plt.Normalize(v.min(), v.max())
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    fig, ax = plt.subplots(figsize=(1.6 * (len(params) + 1) + 2, 4.2))
    xs = np.arange(len(cols))
    for i in order:
        ax.plot(xs, ys[i], color=cmap(norm(v[i])), alpha=0.7, lw=1.2)
    for x, (_, ticks, labels) in enumerate(cols):
        ax.axvline(x, color="0.7", lw=0.8)
        for t, lab in zip(ticks, labels, strict=True):
            ax.annotate(lab, (x, t), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    names_ = [p.removeprefix("params.") for p in params] + [metric]
    ax.set_xticks(xs, names_, rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(cols) - 0.5)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    ax.set_title(f"Parallel coordinates (each line a trial{', ' + label if label else ''})", fontsize=10)
    fig.tight_layout()
    return fig


def _keys(history: pd.DataFrame, prefix: str) -> list[str]:
    return sorted(k for k in history["key"].unique() if k.startswith(prefix))


def _panel(
    history: pd.DataFrame, groups: list[tuple[str, list[str]]], title: str, by: str = "arm"
) -> Figure | None:
    """Small multiples: one axis per metric key (in the order of ``groups``), a line per
    arm (its mean over seeds), one legend of the arms for the figure."""
    keys = [k for _, ks in groups for k in ks]
    if not keys:
        return None
    h = history[history["key"].isin(keys)]
    arms = sorted(h[by].astype(str).unique())
    colors = _colors(arms)
    means = h.groupby(["key", h[by].astype(str), "step"])["value"].mean()
    fig, axes = small_multiples(len(keys), width=3.4, height=2.4)
    for ax, key in zip(axes, keys, strict=True):
        for arm, s in means.loc[key].groupby(level=0):
            ax.plot(s.index.get_level_values("step"), s.to_numpy(), color=colors[arm], lw=1.5)
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    return finish_multiples(fig, title, colors)


def gate_panel(history: pd.DataFrame, by: str = "arm") -> Figure | None:
    """Gate means per source and the share of saturated gates (< 0.1, > 0.9) over training."""
    keys = _keys(history, names.GATE_PREFIX)
    means = [k for k in keys if k.endswith("_mean")]
    sats = [k for k in keys if "/sat_" in k]
    return _panel(history, [("gate means", means), ("saturation share", sats)], "Gates (mean over seeds)", by)


def feudal_panel(history: pd.DataFrame, by: str = "arm") -> Figure | None:
    """Feudal worker loss, manager loss, goal alignment and goal updates over training."""
    present = set(history["key"].unique())
    losses = [k for k in (names.FEUDAL_LOSS, names.FEUDAL_MANAGER_LOSS) if k in present]
    align = [k for k in (names.FEUDAL_ALIGNMENT, names.FEUDAL_GATE_MEAN, names.FEUDAL_GOAL_UPDATES)
             if k in present]
    groups = [("feudal losses", losses), ("alignment, gate, goal updates", align)]
    return _panel(history, groups, "Feudal subgoal head (mean over seeds)", by)


def stage_boundaries(history: pd.DataFrame, by: str = "arm") -> pd.DataFrame:
    """First step of each curriculum stage per arm (median over the arm's runs)."""
    h = history[history["key"] == names.CURRICULUM_STAGE]
    if h.empty:
        return pd.DataFrame(columns=[by, "stage", "step"])
    first = h.groupby([by, "run_id", "value"])["step"].min().reset_index()
    out = first.groupby([by, "value"])["step"].median().reset_index().rename(columns={"value": "stage"})
    out["stage"] = out["stage"].astype(int)
    return out


def curriculum_panel(history: pd.DataFrame, metric: str, by: str = "arm") -> Figure | None:
    """The metric's curves with each arm's curriculum stage boundaries as vertical lines."""
    bounds = stage_boundaries(history, by)
    if bounds.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if learning_curves(history, metric, by, ax=ax) is None:
        ax.set_title("curriculum stages")
    arms = sorted(history[by].astype(str).unique())
    colors = _colors(arms)
    for _, row in bounds[bounds["stage"] > bounds["stage"].min()].iterrows():
        ax.axvline(row["step"], color=colors.get(str(row[by]), "0.5"), ls=":", lw=1.2)
        ax.annotate(f"stage {row['stage']}", (row["step"], 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=7, va="top", ha="right", color=colors.get(str(row[by]), "0.5"))
    ax.set_title(f"{metric} with curriculum stage boundaries (dotted)", fontsize=10)
    return fig


def compute_curves(curve: pd.DataFrame, metric: str, by: str | None = "arm", target: float | None = None,
                   conf: float = CONF) -> Figure | None:
    """The metric against cumulative training FLOPs (``stats.metric_vs_compute``).

    ``by="arm"``: per arm the mean over seeds at each eval step with a t-interval band,
    drawn at the arm's mean FLOPs of that step (seeds of an arm take the same FLOPs per
    step). ``by=None`` (searches): one line per trial, early-stopped trials dashed.
    The target of the compute-to-target table is a dotted horizontal line."""
    if curve.empty or curve["flops"].notna().sum() == 0:
        return None
    c = curve.dropna(subset=["flops"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    clipped = False
    if by is None:
        for _, sub in c.groupby("run_id"):
            stopped = "outcome" in sub.columns and sub["outcome"].iloc[0] == names.OUTCOME_EARLY_STOPPED
            ax.plot(sub["flops"], sub["value"], color="0.55" if stopped else "tab:blue",
                    ls="--" if stopped else "-", lw=0.9, alpha=0.8)
        ax.plot([], [], color="tab:blue", label="ran to the end")
        ax.plot([], [], color="0.55", ls="--", label="stopped early")
        title = f"{metric} vs training FLOPs per trial"
    else:
        groups = sorted(c[by].astype(str).unique())
        colors = _colors(groups)
        for g, sub in c.groupby(c[by].astype(str)):
            pivot = sub.pivot_table(index="step", columns="run_id", values="value", aggfunc="last")
            pivot = pivot.sort_index()
            x = sub.groupby("step")["flops"].mean().reindex(pivot.index).to_numpy()
            _, mean, lo, hi, cut = _band(pivot, conf, stats.bounds(metric))
            clipped |= cut
            ax.plot(x, mean, color=colors[g], lw=1.8, marker="o", ms=3, label=f"{g} (n={pivot.shape[1]})")
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=colors[g], alpha=0.18, lw=0)
        title = _band_title(metric, conf, clipped).replace(":", " vs training FLOPs:", 1)
    if target is not None and np.isfinite(target):
        shown = f"{target:.1%}" if stats.is_rate(metric) else f"{target:.3g}"
        ax.axhline(target, color="0.3", ls=":", lw=1, label=f"target {shown}")
    ax.set_xlabel("cumulative training FLOPs")
    ax.set_ylabel(metric)
    rate_axis(ax, metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def health_panel(history: pd.DataFrame, by: str = "arm") -> Figure | None:
    """Training-health diagnostics over steps as small multiples, one thin line per run
    coloured by ``by`` (a mean would hide the one run that went wrong): the gradient norm
    (log scale) and the share of rows that halt at the ACT maximum, train and eval."""
    present = set(history["key"].unique()) if len(history) else set()
    keys = [k for k in (names.DIAG_GRAD_NORM, *(names.DIAG_HALT_AT_MAX.format(split=s)
                                                for s in (names.TRAIN, names.EVAL)))
            if k in present]
    if not keys:
        return None
    h = history[history["key"].isin(keys)]
    arms = sorted(h[by].astype(str).unique())
    colors = _colors(arms)
    fig, axes = small_multiples(len(keys), width=3.8, height=2.6)
    for ax, key in zip(axes, keys, strict=True):
        sub_h = h[h["key"] == key]
        for (arm, _), sub in sub_h.groupby([sub_h[by].astype(str), "run_id"]):
            sub = sub.sort_values("step")
            ax.plot(sub["step"], sub["value"], color=colors[arm], lw=1.0, alpha=0.75)
        if key == names.DIAG_GRAD_NORM and (sub_h["value"] > 0).all():
            ax.set_yscale("log")
        elif key != names.DIAG_GRAD_NORM:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(key if key != names.DIAG_GRAD_NORM else f"{key} (log)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    return finish_multiples(fig, f"Training health (one line per run, colour = {by})", colors)


def forest(rows: pd.DataFrame, metric: str, control: str = "") -> Figure | None:
    """Forest plot of the declared comparisons: each arm's difference to the control on
    the primary metric with its 95% CI, coloured by its verdict, with the verdict and
    numbers written beside it (``rows``: ``report.tables.forest_rows``, in display units)."""
    if rows.empty:
        return None
    n = len(rows)
    _, unit = stats.display_scale(metric)
    fig, ax = plt.subplots(figsize=(8.5, 0.6 * n + 1.4))
    ys = np.arange(n)[::-1]
    for y, r in zip(ys, rows.itertuples(), strict=True):
        color = VERDICT_COLORS.get(r.verdict, "0.35")
        if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
            ax.hlines(y, r.ci_low, r.ci_high, color=color, lw=2.2)
        hollow = r.verdict in ("no test", "inconclusive", "incomplete")
        ax.plot(r.diff, y, "o" if hollow else "D", ms=7, color=color, mfc="white" if hollow else color)
        ax.annotate(r.label, (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=8,
                    color=color if r.verdict in ("better", "beats", "worse") else "0.2")
    ax.axvline(0.0, color="0.3", ls="--", lw=1)
    ax.set_yticks(ys, rows["arm"], fontsize=9)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"{metric}: arm − {control or 'control'}" + (f" ({unit.strip()})" if unit else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Effect of each arm vs {control or 'the control'} (family-level 95% CI; colour = verdict)",
                 fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(right=0.64)
    return fig


def describe(fig: Figure) -> str:
    """A figure's alternative text for the HTML page: its titles."""
    parts = [fig.get_suptitle(), *(leg.get_title().get_text() for leg in fig.legends)]
    parts = [p for p in parts if p] or [ax.get_title() for ax in fig.axes if ax.get_title()][:3]
    return "; ".join(parts) or "figure"


def show(fig: Figure | None, missing: str) -> None:
    """Display a figure in the notebook (its titles as the image's alternative text) and
    close it, or say in words why there is none."""
    from IPython.display import Markdown, display

    if fig is None:
        display(Markdown(f"*{missing}*"))
        return
    display(fig, metadata={"image/png": {"alt": describe(fig)}})
    plt.close(fig)
