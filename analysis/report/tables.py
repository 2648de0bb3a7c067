"""The tables the report notebook shows, each a DataFrame built from an ``Analysis``
(a one-row ``note`` frame when there is nothing to show). Formats; computes nothing new
beyond the power of the paired design."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis import compute, rungs, stats
from analysis.report import fmt
from analysis.report.prose import NO_COMPUTE
from hrm_core import names

if TYPE_CHECKING:
    from analysis.report.sweep_analysis import Analysis


def _note(text: str) -> pd.DataFrame:
    return pd.DataFrame({"note": [text]})


def show(table: pd.DataFrame) -> None:
    """Display a table in the notebook as HTML, without row numbers (an index that names
    the rows, such as the overview's keys or the arms, is kept)."""
    from IPython.display import HTML, display

    named = not isinstance(table.index, pd.RangeIndex)
    display(HTML(table.to_html(index=named, border=0, na_rep="")))


def overview_table(a: Analysis) -> pd.DataFrame:
    """The sweep as its parent run records it."""
    info, tags = a.info, a.info.parent_tags
    seeds = sorted(int(s) for s in a.runs["seed"].dropna().unique())
    started = ""
    if math.isfinite(info.start_time):
        started = datetime.fromtimestamp(info.start_time, UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = {
        "sweep": info.sweep,
        "kind": a.kind,
        "parent run": (f"{info.parent_run_name} ({info.parent_run_id})" if info.parent_run_id
                       else "all invocations"),
        "status": info.status,
        "experiment": f"{info.experiment_name} (id {info.experiment_id})",
        "tracking URI": info.tracking_uri,
        "primary metric": f"{a.metric} ({a.mode})",
        "control": a.control or "-",
        "runs": len(a.runs),
        "arms": a.runs["arm"].nunique() if a.kind != "search" else "-",
        "seeds": ", ".join(map(str, seeds)) if len(seeds) <= 12 else f"{len(seeds)} seeds",
        "git commit": tags.get(names.TAG_GIT_COMMIT, ""),
        "sweep file hash": tags.get(names.TAG_SWEEP_HASH, ""),
        "started": started,
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def counts_table(a: Analysis) -> pd.DataFrame:
    """Runs per arm and outcome (searches, whose every trial is its own arm: per outcome
    for all trials), as integers."""
    if a.kind == "search":
        return stats.outcome_counts(a.runs.assign(trials="all trials"), by="trials").astype(int)
    return a.counts.astype(int)


def excluded_table(a: Analysis) -> pd.DataFrame:
    """The runs left out of the statistics, with their reason (seeds as integers;
    searches: the trial and its outcome)."""
    out = a.excluded.copy()
    if a.kind == "search":
        left_out = a.values.loc[~a.values["used"], "run_id"]  # the rows of a.excluded, in order
        out.insert(0, "trial", left_out.map(a.runs.set_index("run_id")["trial_id"]).to_numpy())
        return out.drop(columns=["arm", "seed"])
    if "seed" in out.columns:
        out["seed"] = out["seed"].map(fmt.count)
    return out


def _search_leaderboard(a: Analysis, top: int) -> pd.DataFrame:
    b = a.leaderboard.head(top)
    return pd.DataFrame({
        "rank": b["rank"].map(fmt.count), "trial": b["trial_id"].where(b["trial_id"] != "", b["run_name"]),
        "run": b["run_name"], "outcome": b["outcome"], "top rung (step)": b["rung"].map(fmt.count),
        f"{a.metric} at that rung": [fmt.value(a.metric, x) for x in b["value_at_rung"]],
    }).reset_index(drop=True)


def leaderboard_table(a: Analysis, top: int = 25) -> pd.DataFrame:
    """Ablation: arms by mean with CI and difference to the control. Search: trials by rung."""
    if a.kind == "search":
        if a.leaderboard.empty:
            return _note(f"no trial has logged {a.metric} yet")
        return _search_leaderboard(a, top)
    s = a.summary.set_index("arm").reindex(a.arm_order or a.summary["arm"]).reset_index()
    ctrl = s.loc[s["arm"] == a.control, "mean"]
    c = float(ctrl.iloc[0]) if len(ctrl) else math.nan
    m = a.metric
    clipped = s["ci_clipped"] if "ci_clipped" in s.columns else [False] * len(s)
    ci = [fmt.interval(m, lo, hi) + ("*" if cut else "") if np.isfinite(lo) else "n < 2: no CI"
          for lo, hi, cut in zip(s["ci_low"], s["ci_high"], clipped, strict=True)]
    return pd.DataFrame({
        "arm": s["arm"] + np.where(s["arm"] == a.control, " (control)", ""),
        "n": s["n"].map(fmt.count),
        f"mean {m}": [fmt.value(m, x) for x in s["mean"]],
        "sd": [fmt.diff(m, x, signed=False) for x in s["sd"]],
        "95% CI": ci,
        "mean − control": [fmt.diff(m, x) for x in s["mean"] - c],
        "excluded": [f"{e} ({w})" if e else "0"
                     for e, w in zip(s["excluded"], s["excluded_why"], strict=True)],
    })


def comparison_table(a: Analysis, role: str = "primary") -> pd.DataFrame:
    """Arm-vs-control rows of one role, each number written for reading."""
    if a.comparisons.empty or not (a.comparisons["role"] == role).any():
        if role == "exploratory":
            return _note("no exploratory metrics logged")
        if not a.metric_logged:
            return _note(f"no run has logged {a.metric} yet")
        return _note("nothing to compare (one arm)")
    c = a.comparisons[a.comparisons["role"] == role]
    n = [f"{p} pairs" if t.startswith("paired") else f"{na} vs {nc}"
         for p, t, na, nc in zip(c["n_pairs"], c["test"], c["n_arm"], c["n_control"], strict=True)]
    rows = list(c.itertuples())
    step = a.decision.step if (a.decision is not None and role == "primary") else None
    out = pd.DataFrame({
        "metric": c["metric"], "arm": c["arm"], "vs": c["control"], "test": c["test"], "n": n,
        "difference": [fmt.diff(r.metric, fmt.on_step(r.diff, step)) for r in rows],
        "95% CI": [_diff_ci(r, step) for r in rows],
        "p": c["p"].map(fmt.p_number), "p (Holm)": c["p_holm"].map(fmt.p_number),
        "effect": [fmt.effect(r.effect, r.effect_kind) for r in rows],
        "Wilcoxon p": [fmt.p_number(x) if np.isfinite(x) else "" for x in c["wilcoxon_p"]],
        "verdict": c["verdict"], "note": c["note"],
    }).reset_index(drop=True)
    if role == "primary" and "sign_flip_p" in c.columns:  # the declared family's verdict rule
        out = out.drop(columns=["Wilcoxon p"]).rename(columns={"95% CI": "95% CI (family)",
                                                               "note": "reason"})
        out.insert(out.columns.get_loc("p (Holm)") + 1, "sign-flip p",
                   [fmt.p_number(x) if np.isfinite(x) else "" for x in c["sign_flip_p"]])
        out.insert(2, "question", c["label"].fillna("").to_numpy())
    return out


def _diff_ci(r, step: float | None) -> str:
    """A comparison's interval, rounded to the quantisation step; 'no interval' with NaN bounds."""
    if not (np.isfinite(r.ci_low) and np.isfinite(r.ci_high)):
        return "no interval (see the reason)"
    lo, hi = fmt.on_step(r.ci_low, step), fmt.on_step(r.ci_high, step)
    return fmt.diff_interval(r.metric, lo, hi) + ("*" if r.ci_clipped else "")


def forest_rows(a: Analysis) -> pd.DataFrame:
    """What the forest plot draws: each declared comparison's difference on the primary
    metric with its family-level CI (in display units: points for rates), verdict and a
    label ("arm", or "arm vs reference" when the reference is not the control)."""
    cols = ["arm", "diff", "ci_low", "ci_high", "verdict", "label"]
    c = a.comparisons
    if c.empty or not (c["role"] == "primary").any():
        return pd.DataFrame(columns=cols)
    c = c[c["role"] == "primary"]
    rank = {x: i for i, x in enumerate(a.arm_order)}
    c = c.assign(_k=c["arm"].map(rank).fillna(len(rank))).sort_values("_k", kind="mergesort")
    scale, _ = stats.display_scale(a.metric)
    labels = []
    for r in c.itertuples():
        head = fmt.diff(a.metric, r.diff)
        if r.verdict == "no test":
            labels.append(f"{head}: no test ({r.note})")
            continue
        ci = fmt.diff_interval(a.metric, r.ci_low, r.ci_high) if np.isfinite(r.ci_low) else "no interval"
        labels.append(f"{head} ({ci})\n{r.verdict}, Holm p {fmt.p_value(r.p_holm)}")
    pairs = zip(c["arm"], c["control"], strict=True)
    shown = [arm if ref == a.control else f"{arm} vs {ref}" for arm, ref in pairs]
    return pd.DataFrame({"arm": shown, "diff": c["diff"].to_numpy() * scale,
                         "ci_low": c["ci_low"].to_numpy() * scale, "ci_high": c["ci_high"].to_numpy() * scale,
                         "verdict": c["verdict"].to_numpy(), "label": labels}, columns=cols)


def power_table(a: Analysis) -> pd.DataFrame:
    """What the paired design can detect, per declared comparison: power at stated effect
    sizes at the family's first Holm step (alpha / m, one look) and the 80%-power minimum
    detectable d_z there and at this look's sequential boundary, also in the metric's units."""
    d = a.decision
    if d is None or d.table.empty:
        return _note("no paired comparison: power not computed")
    m, rows = len(d.table), []
    for _, r in d.table.iterrows():
        n = int(r["n_pairs"])
        if n < 2:
            rows.append({"arm": r["arm"], "vs": r["reference"], "pairs": fmt.count(n),
                         "note": "fewer than 2 pairs: no power"})
            continue
        power = {f"power at d_z = {x:g}": fmt.share(stats.power_paired_t(x, n, a.alpha / m))
                 for x in (0.5, 1.0, 2.0)}
        rows.append({
            "arm": r["arm"], "vs": r["reference"], "pairs": fmt.count(n), **power,
            f"MDE d_z at α/m = {a.alpha / m:.3g}": fmt.effect(r["mde_dz_fixed"]),
            "MDE d_z at this look": fmt.effect(r["mde_dz_look"]),
            "MDE at this look": fmt.diff(a.metric, r["mde_dz_look"] * r["sd_diff"], signed=False),
        })
    return pd.DataFrame(rows)


def rung_table(a: Analysis) -> pd.DataFrame:
    """Search: per rung, how many trials reached it and the best and median value there."""
    if a.rungs.empty:
        return _note(f"no trial has logged {a.metric} yet")
    r = a.rungs
    return pd.DataFrame({
        "rung (step)": r["rung"].map(fmt.count), "trials": r["trials"].map(fmt.count),
        "best": [fmt.value(a.metric, x) for x in r["best"]],
        "median": [fmt.value(a.metric, x) for x in r["median"]],
    })


def rung_values(a: Analysis) -> pd.DataFrame:
    """Search: every trial's value at each rung it reached."""
    if a.kind != "search" or not a.metric_logged:
        return pd.DataFrame(columns=["run_id", "rung", "value"])
    return rungs.rung_values(a.history, a.metric, rungs.infer_rungs(a.history, a.runs, a.metric))


def compute_totals_table(a: Analysis) -> pd.DataFrame:
    """Training FLOPs and device-seconds per arm (searches: per outcome) and for the sweep."""
    if not a.compute_logged:
        return _note(NO_COMPUTE)
    by = "outcome" if a.kind == "search" else "arm"
    t = compute.compute_totals(a.runs, by)
    if by == "arm" and a.arm_order:
        order = [x for x in a.arm_order if x in set(t["arm"])] + [x for x in t["arm"] if x not in a.arm_order]
        t = t.set_index("arm").reindex(order).reset_index()
    flops, device, source = compute.sweep_totals(a.info.parent_metrics, a.runs)
    rows = [{by: str(r[by]), "runs": int(r["runs"]), "train FLOPs": fmt.flops(r["train_flops"]),
             "mean per run": fmt.flops(r["mean_train_flops"]),
             "device-seconds": fmt.seconds(r["device_seconds"])}
            for _, r in t.iterrows()]
    rows.append({by: f"sweep ({source})", "runs": len(a.runs), "train FLOPs": fmt.flops(flops),
                 "mean per run": "", "device-seconds": fmt.seconds(device)})
    return pd.DataFrame(rows)


def _reach_cell(r) -> str:
    return f"{fmt.flops(r.flops)} (step {int(r.step)})" if r.reached else "not reached"


def _trials_to_target(a: Analysis) -> pd.DataFrame:
    """Searches: one row per trial, cheapest to the target first."""
    t, meta = a.to_target, a.runs.set_index("run_id")
    out = t.assign(_k=np.where(t["reached"], t["flops"], np.inf))
    out = out.sort_values(["_k", "final_step"], ascending=[True, False])
    return pd.DataFrame({
        "trial": [meta.at[r, "trial_id"] or meta.at[r, "run_name"] for r in out["run_id"]],
        "outcome": out["outcome"].to_numpy(),
        "FLOPs to target": [_reach_cell(r) for r in out.itertuples()],
        "last eval step": out["final_step"].astype(int).to_numpy(),
        "FLOPs at last eval": [fmt.flops(x) for x in out["final_flops"]],
    }).reset_index(drop=True)


def _arm_to_target(a: Analysis, arm: str, seeds: list[int], summary: pd.Series) -> dict:
    """One arm's row: each seed's FLOPs to the target, the median and the mean."""
    g = a.to_target[a.to_target["arm"] == arm]
    row: dict = {"arm": arm + (" (control)" if arm == a.control else "")}
    for seed in seeds:
        cell = g[g["seed"].eq(seed).fillna(False).astype(bool)]
        row[f"seed {seed}"] = _reach_cell(next(cell.itertuples())) if len(cell) else "–"
    if g["seed"].isna().any():
        row["no seed"] = ", ".join(_reach_cell(r) for r in g[g["seed"].isna()].itertuples())
    row["reached"] = f"{int(summary['reached'])}/{int(summary['runs'])}"
    median = summary["median_flops"]
    row["median FLOPs"] = fmt.flops(median) if np.isfinite(median) else "not reached"
    mean = summary["mean_flops_reached"]
    row["mean FLOPs (runs that reached)"] = fmt.flops(mean) if summary["reached"] else "–"
    return row


def compute_to_target_table(a: Analysis) -> pd.DataFrame:
    """FLOPs each run spent until its first eval at the target: per seed, then the arm's
    median (never-reached runs count as infinite) and mean over the runs that reached it.
    Searches: one row per trial, cheapest first."""
    if not a.compute_logged:
        return _note(NO_COMPUTE)
    if not a.metric_logged or not np.isfinite(a.target):
        return _note(f"no target: {a.target_how or f'no run has logged {a.metric} yet'}")
    t = a.to_target
    if t.empty:
        return _note(f"no run logged both {a.metric} and {names.COMPUTE_TRAIN_FLOPS}")
    if a.kind == "search":
        return _trials_to_target(a)
    seeds = sorted(int(x) for x in t["seed"].dropna().unique())
    summary = compute.target_summary(t, "arm").set_index("arm")
    order = a.arm_order or []
    arms = [x for x in order if x in summary.index] + [x for x in summary.index if x not in order]
    return pd.DataFrame([_arm_to_target(a, arm, seeds, summary.loc[arm]) for arm in arms])


def alerts_table(a: Analysis) -> pd.DataFrame:
    """Every alert that fired: run, rule, step, message (from the hrm.alert.<rule> tags)."""
    h = a.health
    if h.empty or not h["checked"].any():
        return _note("not checked")
    if a.alerts.empty:
        return _note("no alerts")
    who = "trial" if a.kind == "search" else "arm / seed"
    out = a.alerts[["who", "run", "rule", "step", "message"]].rename(columns={"who": who})
    out["step"] = out["step"].map(lambda x: "" if not np.isfinite(x) else int(x))
    return out


def alert_counts_table(a: Analysis) -> pd.DataFrame:
    """Per arm (searches: per outcome): runs, runs checked, runs with alerts, and the
    number of runs that raised each rule that fired anywhere."""
    h = a.health
    if h.empty:
        return _note("no runs")
    by = "outcome" if a.kind == "search" else "arm"
    rules = list(dict.fromkeys(a.alerts["rule"])) if len(a.alerts) else []
    rows = []
    for key, g in h.groupby(by, sort=True):
        row = {by: key, "runs": len(g), "checked": int(g["checked"].sum()),
               "with alerts": int((g["alerts"] > 0).sum())}
        fired = a.alerts[a.alerts["run_id"].isin(g["run_id"])]
        for rule in rules:
            row[rule] = int(fired.loc[fired["rule"] == rule, "run_id"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)
