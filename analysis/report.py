"""Ablation reports: ``python -m analysis.report SWEEP|--parent-run ID [--out DIR]``.

Reads the sweep from MLflow only, analyses it (``analyse``), writes an executed notebook
and its HTML copy to ``reports/<sweep>/<parent_run_id>/`` and attaches both to the
sweep's parent run. Bad requests (unknown sweep, parent run without children, a metric
never logged) print one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import html
import logging
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats
from analysis.loading import (
    PROJECT_ROOT,
    AnalysisError,
    SweepInfo,
    default_tracking_uri,
    load_history,
    load_sweep,
    logged_metrics,
    open_client,
    require_metric,
)
from hrm_core import names

REPORTS_DIR = PROJECT_ROOT / "reports"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
TRAIN_LOSS = names.TRAIN_LM_LOSS
EXPLORATORY = (names.EVAL_ACCURACY, names.EVAL_STEPS, names.EVAL_LM_LOSS, names.metric(names.EVAL, names.Q_HALT_ACCURACY))
VARIANT_PREFIXES = (names.GATE_PREFIX, names.FEUDAL_PREFIX, names.CURRICULUM_STAGE)
HEALTH_METRICS = (
    names.DIAG_GRAD_NORM,
    names.DIAG_HALT_AT_MAX.format(split=names.TRAIN),
    names.DIAG_HALT_AT_MAX.format(split=names.EVAL),
)
REPRODUCE_COMMAND = "python -m sweeps reproduce {run_id}"
ARTIFACT_DIR = "report"


@dataclass
class Analysis:
    """Everything a report shows, computed from the runs and their histories."""

    info: SweepInfo
    runs: pd.DataFrame
    history: pd.DataFrame
    metric: str
    mode: str
    alpha: float
    ci_method: str
    kind: str
    control: str
    metric_logged: bool
    values: pd.DataFrame
    counts: pd.DataFrame
    excluded: pd.DataFrame
    arm_order: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    leaderboard: pd.DataFrame = field(default_factory=pd.DataFrame)
    rungs: pd.DataFrame = field(default_factory=pd.DataFrame)
    board_runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # runs + rank, top rung, value at common rung
    common_rung: int | None = None  # the largest step every trial reached
    search_params: list[str] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    importance_method: str = ""
    notes: list[str] = field(default_factory=list)
    conclusion: str = ""
    # compute (compute/* metrics; empty frames when the runs logged none)
    compute_logged: bool = False
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)  # metric vs cumulative train FLOPs
    target: float = math.nan
    target_how: str = ""
    to_target: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: FLOPs to reach the target
    # health (hrm.alert.* / hrm.alerts tags)
    health: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: status and alerts
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)  # per fired alert: run, rule, step, message


# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------
def history_metrics(runs: pd.DataFrame, metric: str) -> list[str]:
    """The histories a report draws: the primary metric, training loss, ACT steps and
    every variant metric the runs logged."""
    logged = logged_metrics(runs)
    wanted = [metric, TRAIN_LOSS, names.EVAL_STEPS, names.EVAL_EXACT_ACCURACY]
    wanted += [m for m in logged if m.startswith(VARIANT_PREFIXES)]
    wanted += [names.COMPUTE_TRAIN_FLOPS, *HEALTH_METRICS]
    return list(dict.fromkeys(m for m in wanted if m in logged))


def _pick_control(info: SweepInfo, arms: list[str], notes: list[str]) -> str:
    if info.control and info.control in arms:
        return info.control
    fallback = next((a for a in ("control", "baseline", "default") if a in arms), arms[0] if arms else "")
    if info.control:
        notes.append(f"The control arm '{info.control}' has no runs; comparing against '{fallback}' instead.")
    elif fallback:
        notes.append(f"The parent run names no control arm; comparing against '{fallback}'.")
    return fallback


def analyse(
    info: SweepInfo,
    runs: pd.DataFrame,
    history: pd.DataFrame | None = None,
    metric: str | None = None,
    mode: str | None = None,
    alpha: float = stats.ALPHA,
    ci_method: str = "t",
    target: float | None = None,
) -> Analysis:
    """Primary values, outcome counts, group summaries and arm-vs-control statistics
    (ablations) or rung leaderboards and parameter importances (searches), compute to
    reach ``target`` (default: ``stats.default_target``) and the runs' health alerts, plus
    the conclusion in words. An explicitly requested metric must have been logged; the
    sweep's own objective may not be yet (the report then says so)."""
    if metric is not None:
        require_metric(runs, metric)
    metric = metric or info.objective
    mode = mode or (info.mode if metric == info.objective else stats.metric_mode(metric))
    if history is None:
        history = load_history(runs, history_metrics(runs, metric), info.tracking_uri)
    notes: list[str] = []
    kind = info.kind or ("search" if info.optuna_study else "ablation")
    logged = metric in logged_metrics(runs)
    values = stats.run_values(runs, metric, history)
    excluded = values.loc[~values["used"], ["run_name", "arm", "seed", "outcome", "reason"]].copy()
    if "tags.hrm.error" in runs.columns:
        excluded["error"] = runs.set_index("run_id").loc[values.loc[~values["used"], "run_id"], "tags.hrm.error"].to_numpy()
    a = Analysis(
        info=info, runs=runs, history=history, metric=metric, mode=mode, alpha=alpha, ci_method=ci_method, kind=kind,
        control="", metric_logged=logged, values=values, counts=stats.outcome_counts(runs), excluded=excluded.reset_index(drop=True),
        notes=notes,
    )
    steps = values.loc[values["used"], "final_step"].dropna()
    if steps.nunique() > 1:
        notes.append(f"Completed runs ended at different steps ({int(steps.min())} to {int(steps.max())}): budgets differ.")
    if kind == "search":
        _analyse_search(a)
    else:
        _analyse_ablation(a)
    _analyse_compute(a, target)
    _analyse_health(a)
    a.conclusion = conclusion(a)
    return a


def _analyse_ablation(a: Analysis) -> None:
    arms = sorted(a.runs["arm"].astype(str).unique())
    a.control = _pick_control(a.info, arms, a.notes)
    a.summary = stats.summarize_groups(a.values, "arm", a.ci_method)
    sign = -1.0 if a.mode == "max" else 1.0
    others = a.summary[a.summary["arm"] != a.control].assign(_k=lambda d: sign * d["mean"]).sort_values("_k", na_position="last")
    a.arm_order = [a.control, *others["arm"].tolist()] if a.control else others["arm"].tolist()
    if a.metric_logged and len(arms) > 1:
        exploratory = [m for m in EXPLORATORY if m != a.metric]
        a.comparisons = stats.compare_metrics(a.runs, a.control, a.metric, a.mode, exploratory, a.alpha, a.ci_method)  # type: ignore[arg-type]


def _analyse_search(a: Analysis) -> None:
    a.arm_order = []
    if not a.metric_logged:
        return
    a.leaderboard = stats.search_leaderboard(a.runs, a.history, a.metric, a.mode)  # type: ignore[arg-type]
    a.rungs = stats.rung_summary(a.history, a.runs, a.metric, a.mode)  # type: ignore[arg-type]
    params = [c for c in a.runs.columns if c.startswith("params.") and c != "params.seed" and a.runs[c].nunique(dropna=True) > 1]
    a.search_params = params
    a.board_runs = a.runs.merge(a.leaderboard[["run_id", "rank", "rung", "value_at_rung"]], on="run_id", how="left")
    rv = stats.rung_values(a.history, a.metric, stats.infer_rungs(a.history, a.runs, a.metric))
    if not rv.empty:
        a.common_rung = int(rv["rung"].min())
        low = rv[rv["rung"] == a.common_rung].set_index("run_id")["value"]
        a.board_runs["value_at_common_rung"] = a.board_runs["run_id"].map(low)
    if a.info.optuna_storage and a.info.optuna_study:
        try:
            a.importances, a.importance_method = stats.study_importances(a.info.optuna_storage, a.info.optuna_study)
            return
        except (LookupError, ValueError, RuntimeError) as e:
            a.notes.append(f"Optuna study not used for importances: {str(e).splitlines()[0]}")
    # Fallback: all trials compared at the lowest rung, which every trial reached.
    if a.common_rung is not None:
        b = a.board_runs.dropna(subset=["value_at_common_rung"])
        a.importances = stats.rank_importances(b[params], b["value_at_common_rung"])
        a.importance_method = f"|Spearman rho| at step {a.common_rung}, which every trial reached (no Optuna study)"


def _analyse_compute(a: Analysis, target: float | None) -> None:
    """The primary metric against cumulative training FLOPs and the compute each run
    needed to reach the target (default: 0.9 x the best arm's final mean, or the best
    trial's for searches)."""
    a.compute_logged = names.COMPUTE_TRAIN_FLOPS in logged_metrics(a.runs)
    by = "run_id" if a.kind == "search" else "arm"
    if target is not None:
        a.target, a.target_how = float(target), "set with the TARGET option"
    elif a.metric_logged:
        a.target, a.target_how = stats.default_target(a.values, a.mode, by)  # type: ignore[arg-type]
    if not (a.compute_logged and a.metric_logged):
        return
    a.curve = stats.metric_vs_compute(a.history, a.metric)
    a.to_target = stats.compute_to_target(a.curve, a.target, a.mode)  # type: ignore[arg-type]


_ALERT_COL = f"tags.{names.TAG_ALERT_PREFIX}"
_ALERTS_COL = f"tags.{names.TAG_ALERTS}"


def parse_alert(text: str) -> tuple[float, str]:
    """``"step 400: eval accuracy fell ..."`` -> (400, "eval accuracy fell ...")."""
    head, sep, rest = str(text).partition(":")
    words = head.split()
    if sep and len(words) == 2 and words[0] == "step" and words[1].lstrip("-").isdigit():
        return float(words[1]), rest.strip()
    return math.nan, str(text).strip()


def _who(row: dict, kind: str) -> str:
    if kind == "search":
        return str(row.get("trial_id") or row.get("run_name"))
    seed = row.get("seed")
    return f"{row['arm']} seed {seed}" if seed is not None and not pd.isna(seed) else str(row.get("run_name") or row["arm"])


def _analyse_health(a: Analysis) -> None:
    """Per run: the alerts that fired (hrm.alert.<rule> tags) and whether it was checked
    at all (hrm.alerts: '' = healthy, absent = not checked)."""
    alert_cols = [c for c in a.runs.columns if c.startswith(_ALERT_COL)]
    order = {r: i for i, r in enumerate(names.ALERT_RULES)}
    health, alerts = [], []
    for row in a.runs.to_dict("records"):
        fired = {c[len(_ALERT_COL):]: row[c] for c in alert_cols if isinstance(row.get(c), str) and row[c].strip()}
        listed = row.get(_ALERTS_COL)
        checked = isinstance(listed, str)
        rules = set(fired) | ({r.strip() for r in listed.split(",") if r.strip()} if checked else set())
        rules_sorted = sorted(rules, key=lambda r: (order.get(r, len(order)), r))
        who = _who(row, a.kind)
        for rule in rules_sorted:
            step, message = parse_alert(fired[rule]) if rule in fired else (math.nan, f"(listed in {names.TAG_ALERTS}; no {names.TAG_ALERT_PREFIX}{rule} tag)")
            alerts.append({"run_id": row["run_id"], "run": row["run_name"], "who": who, "arm": row["arm"], "seed": row.get("seed"),
                           "rule": rule, "step": step, "message": message})
        status = ", ".join(rules_sorted) if rules_sorted else ("ok" if checked else "not checked")
        health.append({"run_id": row["run_id"], "run": row["run_name"], "who": who, "arm": row["arm"], "seed": row.get("seed"),
                       "outcome": row["outcome"], "checked": checked or bool(rules), "alerts": len(rules), "status": status})
    a.health = pd.DataFrame(health, columns=["run_id", "run", "who", "arm", "seed", "outcome", "checked", "alerts", "status"])
    a.alerts = pd.DataFrame(alerts, columns=["run_id", "run", "who", "arm", "seed", "rule", "step", "message"])
    if len(a.alerts):
        a.alerts = a.alerts.assign(_o=a.alerts["rule"].map(lambda r: order.get(r, len(order)))).sort_values(
            ["_o", "step", "who"], na_position="last").drop(columns="_o").reset_index(drop=True)


# --------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------
def _fmt(metric: str, x: float, signed: bool = True) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    scale, unit = stats.display_scale(metric)
    if unit:  # rates: percentage points
        return (f"{x * scale:+.1f}" if signed else f"{x * scale:.1f}") + unit
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def _fmt_value(metric: str, x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x * 100:.1f}%" if stats.is_rate(metric) else f"{x:.4g}"


def _p(p: float) -> str:
    """``= 0.012`` or ``< 0.001``, to follow a 'p'."""
    return "= n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}")


def _comparison_sentence(row: pd.Series, metric: str, alpha: float) -> str:
    ctrl, arm = row["control"], row["arm"]
    if row["verdict"] == "no test":
        return (f"**{arm} vs {ctrl}**: {_fmt_value(metric, row['mean_arm'])} vs {_fmt_value(metric, row['mean_control'])} "
                f"— {row['note']}.")
    scale, unit = stats.display_scale(metric)
    ci = f"95% CI {_fmt(metric, row['ci_low'], True).removesuffix(unit)} to {_fmt(metric, row['ci_high'], True)}"
    n = f"{row['n_pairs']} paired seeds" if row["test"] == "paired t" else f"{row['n_arm']} vs {row['n_control']} runs (unpaired)"
    head = {"better": f"**{arm} beats {ctrl}** by", "worse": f"**{arm} is worse than {ctrl}** by"}.get(row["verdict"], f"**{arm} vs {ctrl}**:")
    test = f"{row['test']}-test p {_p(row['p'])}, Holm-adjusted p {_p(row['p_holm'])}"
    verdict = f"significant at α = {alpha:g}" if row["significant"] else "no detectable difference"
    eff = f"{row['effect_kind']} = {row['effect']:.2f}" if np.isfinite(row["effect"]) else ""
    wil = f"; Wilcoxon p {_p(row['wilcoxon_p'])}" if np.isfinite(row["wilcoxon_p"]) else ""
    return f"{head} {_fmt(metric, row['diff'])} ({ci}) across {n}: {test}{wil} — {verdict}" + (f" ({eff})." if eff else ".")


def _excluded_sentence(a: Analysis) -> str:
    total = len(a.values)
    if a.excluded.empty:
        return f"All {total} runs completed and are in the statistics."
    parts = []
    for reason, g in a.excluded.groupby("reason", sort=True):
        who = ", ".join(f"{r.arm} seed {r.seed}" if pd.notna(r.seed) else str(r.run_name) for r in g.head(6).itertuples())
        more = f" and {len(g) - 6} more" if len(g) > 6 else ""
        parts.append(f"{len(g)} {reason} ({who}{more})")
    return f"Not in the statistics: {len(a.excluded)} of {total} runs — " + "; ".join(parts) + "."


def health_line(a: Analysis) -> str:
    """One line on the runs' health for the conclusion: which runs raised which alerts (a
    report must not hide an unhealthy run); '' when no run was checked."""
    h = a.health
    if h.empty or not h["checked"].any():
        return ""
    n, unchecked = len(h), int((~h["checked"]).sum())
    tail = f" ({unchecked} run{'s' if unchecked != 1 else ''} not checked)" if unchecked else ""
    sick = h[h["alerts"] > 0]
    if sick.empty:
        return f"Health: no alerts in the {n - unchecked} checked runs{tail}."
    parts = []
    for rule, g in a.alerts.groupby("rule", sort=False):
        shown = [f"{r.who} at step {int(r.step)}" if np.isfinite(r.step) else r.who for r in g.head(4).itertuples()]
        more = f" and {len(g) - 4} more" if len(g) > 4 else ""
        parts.append(f"{rule} ({', '.join(shown)}{more})")
    return f"**Health: {len(sick)} of {n} runs raised alerts**: " + "; ".join(parts) + f"{tail}. See the Health section."


def conclusion(a: Analysis) -> str:
    """The report's first cell: what the sweep shows, in plain words with its numbers."""
    info = a.info
    lines = []
    n_runs = len(a.runs)
    if a.kind == "search":
        lines.append(f"Search **{info.sweep}** ({info.parent_run_name or 'all invocations'}, status {info.status or '?'}): "
                     f"{n_runs} trials, primary metric `{a.metric}` ({a.mode}).")
        if a.leaderboard.empty or a.leaderboard["value_at_rung"].isna().all():
            lines.append(f"No trial has logged `{a.metric}` yet: nothing to rank.")
        else:
            top = a.leaderboard.iloc[0]
            top_rung = int(top["rung"])
            at_top = a.leaderboard[a.leaderboard["rung"] == top_rung]
            lines.append(
                f"Best trial at the top rung (step {top_rung}, reached by {len(at_top)} of {n_runs} trials): "
                f"**{top['trial_id'] or top['run_name']}** ({top['arm']}) with {a.metric} = {_fmt_value(a.metric, top['value_at_rung'])}; "
                f"median at that rung {_fmt_value(a.metric, float(at_top['value_at_rung'].median()))}. "
                "Trials are ranked at the same rung, never by their best eval."
            )
        if a.importances:
            k, v = next(iter(sorted(a.importances.items(), key=lambda kv: -kv[1])))
            lines.append(f"Most important parameter: **{k}** ({v:.2f}; {a.importance_method}).")
        counts = a.runs["outcome"].value_counts()
        lines.append("Outcomes: " + ", ".join(f"{c} {o.replace('_', '-')}" for o, c in counts.items()) + ".")
    else:
        arms = a.runs["arm"].nunique()
        seeds = a.runs["seed"].nunique()
        lines.append(f"Ablation **{info.sweep}** ({info.parent_run_name or 'all invocations'}, status {info.status or '?'}): "
                     f"{n_runs} runs, {arms} arms × {seeds} seeds; primary metric `{a.metric}` ({a.mode}imised) "
                     f"at the end of the fixed budget; control **{a.control or '-'}**.")
        if not a.metric_logged:
            counts = a.runs["outcome"].value_counts()
            lines.append(f"No run has logged `{a.metric}` yet ({', '.join(f'{c} {o}' for o, c in counts.items())}): "
                         "nothing to compare. Training curves are in the Curves section.")
        elif a.comparisons.empty:
            lines.append("Only one arm: no comparison. " + "; ".join(
                f"{r.arm}: {_fmt_value(a.metric, r.mean)} (n = {r.n})" for r in a.summary.itertuples()))
        else:
            prim = a.comparisons[a.comparisons["role"] == "primary"].sort_values(["significant", "p"], ascending=[False, True])
            lines += [f"- {_comparison_sentence(r, a.metric, a.alpha)}" for _, r in prim.iterrows()]
            tested = prim[prim["test"] == "paired t"]
            if len(tested):
                n = int(tested["n_pairs"].min())
                mde = stats.min_detectable_dz(n, a.alpha)
                sd = float(np.nanmedian(tested["sd_diff"]))
                units = f", about {_fmt(a.metric, mde * sd, False)} at the observed spread of paired differences" if np.isfinite(sd) and sd > 0 else ""
                lines.append(f"With {n} paired seeds a paired t-test at α = {a.alpha:g} has 80% power only for effects of "
                             f"d_z ≥ {mde:.2f}{units}. Holm correction is across the {len(prim)} arm(s); other metrics are exploratory.")
        lines.append(_excluded_sentence(a))
    health = health_line(a)
    if health:
        lines.append(health)
    lines += [f"*Note: {n}*" for n in a.notes]
    return _join(lines)


def _join(lines: list[str]) -> str:
    """Paragraphs, with consecutive bullet lines kept together as one list."""
    out: list[str] = []
    for line in lines:
        if line.startswith("- ") and out and out[-1].startswith("- "):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return "\n\n".join(out)


# --------------------------------------------------------------------------------------
# tables for the notebook
# --------------------------------------------------------------------------------------
def overview_table(a: Analysis) -> pd.DataFrame:
    """The sweep as its parent run records it."""
    info, tags = a.info, a.info.parent_tags
    seeds = sorted(int(s) for s in a.runs["seed"].dropna().unique())
    rows = {
        "sweep": info.sweep,
        "kind": a.kind,
        "parent run": f"{info.parent_run_name} ({info.parent_run_id})" if info.parent_run_id else "all invocations",
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
        "started": datetime.fromtimestamp(info.start_time, UTC).strftime("%Y-%m-%d %H:%M UTC") if math.isfinite(info.start_time) else "",
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def leaderboard_table(a: Analysis, top: int = 25) -> pd.DataFrame:
    """Ablation: arms by mean with CI and difference to the control. Search: trials by rung."""
    if a.kind == "search":
        if a.leaderboard.empty:
            return pd.DataFrame({"note": [f"no trial has logged {a.metric} yet"]})
        return a.leaderboard.drop(columns=["run_id"]).head(top)
    s = a.summary.set_index("arm").reindex(a.arm_order or a.summary["arm"]).reset_index()
    ctrl = s.loc[s["arm"] == a.control, "mean"]
    c = float(ctrl.iloc[0]) if len(ctrl) else math.nan
    scale, unit = stats.display_scale(a.metric)
    out = pd.DataFrame({
        "arm": s["arm"] + np.where(s["arm"] == a.control, " (control)", ""),
        "n": s["n"],
        f"mean {a.metric}": s["mean"],
        "sd": s["sd"],
        "95% CI": [f"[{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else "n < 2: no CI" for lo, hi in zip(s["ci_low"], s["ci_high"], strict=True)],
        f"mean - control{unit}": (s["mean"] - c) * scale,
        "excluded": [f"{e} ({w})" if e else "0" for e, w in zip(s["excluded"], s["excluded_why"], strict=True)],
    })
    return out


def comparison_table(a: Analysis, role: str = "primary") -> pd.DataFrame:
    """Arm-vs-control rows of one role, with readable column names."""
    if a.comparisons.empty or not (a.comparisons["role"] == role).any():
        why = "no exploratory metrics logged" if role == "exploratory" else (
            f"no run has logged {a.metric} yet" if not a.metric_logged else "nothing to compare (one arm)")
        return pd.DataFrame({"note": [why]})
    c = a.comparisons[a.comparisons["role"] == role]
    scale = c["metric"].map(lambda m: stats.display_scale(m)[0])
    return pd.DataFrame({
        "metric": c["metric"], "arm": c["arm"], "vs": c["control"], "test": c["test"],
        "n": [f"{p} pairs" if t == "paired t" else f"{na} vs {nc}" for p, t, na, nc in zip(c["n_pairs"], c["test"], c["n_arm"], c["n_control"], strict=True)],
        "diff": c["diff"] * scale, "ci_low": c["ci_low"] * scale, "ci_high": c["ci_high"] * scale,
        "p": c["p"], "p_holm": c["p_holm"], "significant": c["significant"], "effect": c["effect"], "effect_kind": c["effect_kind"],
        "wilcoxon_p": c["wilcoxon_p"], "verdict": c["verdict"], "role": c["role"], "note": c["note"],
    }).reset_index(drop=True)


def power_table(a: Analysis) -> pd.DataFrame:
    """What the paired design can detect: power at stated effect sizes and the 80%-power
    minimum detectable effect, per arm's number of pairs."""
    c = a.comparisons[(a.comparisons["role"] == "primary") & (a.comparisons["test"] == "paired t")] if not a.comparisons.empty else a.comparisons
    if c.empty:
        return pd.DataFrame({"note": ["no paired comparison: power not computed"]})
    scale, unit = stats.display_scale(a.metric)
    rows = []
    for _, r in c.iterrows():
        n = int(r["n_pairs"])
        mde = stats.min_detectable_dz(n, a.alpha)
        rows.append({
            "arm": r["arm"], "pairs": n,
            **{f"power at d_z={d:g}": stats.power_paired_t(d, n, a.alpha) for d in (0.5, 1.0, 2.0)},
            "MDE d_z (80%)": mde, f"MDE{unit or ' (metric units)'}": mde * r["sd_diff"] * scale,
        })
    return pd.DataFrame(rows)


def rung_values(a: Analysis) -> pd.DataFrame:
    """Search: every trial's value at each rung it reached."""
    if a.kind != "search" or not a.metric_logged:
        return pd.DataFrame(columns=["run_id", "rung", "value"])
    return stats.rung_values(a.history, a.metric, stats.infer_rungs(a.history, a.runs, a.metric))


def fmt_flops(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _note(text: str) -> pd.DataFrame:
    return pd.DataFrame({"note": [text]})


NO_COMPUTE = "No run logged compute/* (runs from before compute accounting): no compute figures."


def sweep_compute(a: Analysis) -> tuple[float, float, str]:
    """(train FLOPs, device-seconds, source) of the whole sweep: the parent run's totals
    when it has them, else the sum over its runs."""
    pm = a.info.parent_metrics
    if names.COMPUTE_SWEEP_FLOPS in pm:
        return float(pm[names.COMPUTE_SWEEP_FLOPS]), float(pm.get(names.COMPUTE_SWEEP_DEVICE_SECONDS, math.nan)), "parent run totals"
    t = stats.compute_totals(a.runs)
    return float(t["train_flops"].sum(min_count=1)), float(t["device_seconds"].sum(min_count=1)), "sum over the runs"


def early_stopping_saved(a: Analysis) -> tuple[float, float, str]:
    """(FLOPs early stopping saved, FLOPs of running every trial to the end, source)."""
    pm = a.info.parent_metrics
    if names.COMPUTE_SAVED_FLOPS in pm and names.COMPUTE_SWEEP_FLOPS in pm:
        saved = float(pm[names.COMPUTE_SAVED_FLOPS])
        return saved, float(pm[names.COMPUTE_SWEEP_FLOPS]) + saved, "parent run totals"
    saved, full = stats.early_stopping_savings(a.runs)
    return saved, full, "computed from the trials"


def compute_summary(a: Analysis) -> str:
    """The sweep's compute in words (and, for searches, what early stopping saved)."""
    if not a.compute_logged:
        return f"*{NO_COMPUTE}*"
    flops, device, source = sweep_compute(a)
    n = len(a.runs)
    text = [f"The sweep's {n} runs used **{fmt_flops(flops)} training FLOPs** and "
            f"**{'n/a' if not np.isfinite(device) else f'{device:,.1f}'} device-seconds** ({source})."]
    missing = int(a.runs.get(f"metrics.{names.COMPUTE_TRAIN_FLOPS}", pd.Series(np.nan, index=a.runs.index)).isna().sum())
    if missing:
        text.append(f"{missing} run(s) logged no compute/* and are not in these totals.")
    if a.kind == "search":
        stopped = int((a.runs["outcome"] == names.OUTCOME_EARLY_STOPPED).sum())
        saved, full, src = early_stopping_saved(a)
        if not np.isfinite(saved):
            text.append(f"{stopped} trials were stopped early; their planned compute was not logged, so the saving is unknown.")
        else:
            share = saved / full if full > 0 else math.nan
            text.append(f"Early stopping ({stopped} of {n} trials stopped) saved **{fmt_flops(saved)} FLOPs**, "
                        f"**{share:.0%}** of the {fmt_flops(full)} FLOPs that running every trial to the end would have cost ({src}).")
    text.append("FLOPs are the model summary's train-step figure (forward, Q target, one-step backward; "
                "evaluation not counted) × the steps taken, per curriculum stage.")
    return " ".join(text)


def compute_totals_table(a: Analysis) -> pd.DataFrame:
    """Training FLOPs and device-seconds per arm (searches: per outcome) and for the sweep."""
    if not a.compute_logged:
        return _note(NO_COMPUTE)
    by = "outcome" if a.kind == "search" else "arm"
    t = stats.compute_totals(a.runs, by)
    if by == "arm" and a.arm_order:
        t = t.set_index("arm").reindex([x for x in a.arm_order if x in set(t["arm"])] + [x for x in t["arm"] if x not in a.arm_order]).reset_index()
    flops, device, source = sweep_compute(a)
    rows = [{by: str(r[by]), "runs": int(r["runs"]), "train FLOPs": fmt_flops(r["train_flops"]),
             "mean per run": fmt_flops(r["mean_train_flops"]),
             "device-seconds": "n/a" if not np.isfinite(r["device_seconds"]) else f"{r['device_seconds']:,.1f}"}
            for _, r in t.iterrows()]
    rows.append({by: f"sweep ({source})", "runs": len(a.runs), "train FLOPs": fmt_flops(flops), "mean per run": "",
                 "device-seconds": "n/a" if not np.isfinite(device) else f"{device:,.1f}"})
    return pd.DataFrame(rows)


def target_heading(a: Analysis) -> str:
    """The compute-to-target table's heading, with the target and how it was chosen."""
    if not np.isfinite(a.target):
        return f"Compute to reach a target {a.metric}: no target ({a.target_how or 'the metric was not logged'})"
    op = "≥" if a.mode == "max" else "≤"
    return f"Compute to reach {a.metric} {op} {_fmt_value(a.metric, a.target)} (target = {a.target_how}; set TARGET to change it)"


def _reach_cell(r) -> str:
    return f"{fmt_flops(r.flops)} (step {int(r.step)})" if r.reached else "not reached"


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
        meta = a.runs.set_index("run_id")
        out = t.assign(_k=np.where(t["reached"], t["flops"], np.inf)).sort_values(["_k", "final_step"], ascending=[True, False])
        return pd.DataFrame({
            "trial": [meta.at[r, "trial_id"] or meta.at[r, "run_name"] for r in out["run_id"]],
            "outcome": out["outcome"].to_numpy(),
            "FLOPs to target": [_reach_cell(r) for r in out.itertuples()],
            "last eval step": out["final_step"].astype(int).to_numpy(),
            "FLOPs at last eval": [fmt_flops(x) for x in out["final_flops"]],
        }).reset_index(drop=True)
    seeds = sorted(int(x) for x in t["seed"].dropna().unique())
    summary = stats.target_summary(t, "arm").set_index("arm")
    arms = [x for x in (a.arm_order or []) if x in summary.index] + [x for x in summary.index if x not in (a.arm_order or [])]
    rows = []
    for arm in arms:
        g = t[t["arm"] == arm]
        row: dict = {"arm": arm + (" (control)" if arm == a.control else "")}
        for seed in seeds:
            cell = g[g["seed"].eq(seed).fillna(False).astype(bool)]
            row[f"seed {seed}"] = _reach_cell(next(cell.itertuples())) if len(cell) else "–"
        if g["seed"].isna().any():
            row["no seed"] = ", ".join(_reach_cell(r) for r in g[g["seed"].isna()].itertuples())
        s_ = summary.loc[arm]
        row["reached"] = f"{int(s_['reached'])}/{int(s_['runs'])}"
        row["median FLOPs"] = fmt_flops(s_["median_flops"]) if np.isfinite(s_["median_flops"]) else "not reached"
        row["mean FLOPs (runs that reached)"] = fmt_flops(s_["mean_flops_reached"]) if s_["reached"] else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def health_summary(a: Analysis) -> str:
    """The Health section's lead: alerts in a line, or that all is well / unchecked."""
    h = a.health
    if h.empty:
        return "*No runs.*"
    if not h["checked"].any():
        return (f"*Not checked: no run carries the {names.TAG_ALERTS} tag (runs from before the health alerts, "
                "or still running).*")
    line = health_line(a)
    return line if (h["alerts"] > 0).any() else f"No alerts: {line.removeprefix('Health: ')}"


def alerts_table(a: Analysis) -> pd.DataFrame:
    """Every alert that fired: run, rule, step, message (from the hrm.alert.<rule> tags)."""
    h = a.health
    if h.empty or not h["checked"].any():
        return _note("not checked")
    if a.alerts.empty:
        return _note("no alerts")
    out = a.alerts[["who", "run", "rule", "step", "message"]].rename(columns={"who": "trial" if a.kind == "search" else "arm / seed"})
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
        row = {by: key, "runs": len(g), "checked": int(g["checked"].sum()), "with alerts": int((g["alerts"] > 0).sum())}
        fired = a.alerts[a.alerts["run_id"].isin(g["run_id"])]
        for rule in rules:
            row[rule] = int(fired.loc[fired["rule"] == rule, "run_id"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def reproduce_command(run_id: str) -> str:
    """The command that reruns one trial from its recorded context (sweeps/reproduce.py)."""
    return REPRODUCE_COMMAND.format(run_id=run_id)


def run_url(info: SweepInfo, run_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """The MLflow UI page of a run (the tracking server itself when it is one)."""
    base = info.tracking_uri if info.tracking_uri.startswith(("http://", "https://")) else ui_url
    return f"{base.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{run_id}"


def links_html(a: Analysis, ui_url: str = DEFAULT_UI_URL) -> str:
    """An HTML table linking every run (and the parent run) to the MLflow UI."""
    esc = html.escape
    head = ""
    if a.info.parent_run_id:
        head = f'<p>Parent run: <a href="{esc(run_url(a.info, a.info.parent_run_id, ui_url))}">{esc(a.info.parent_run_name)}</a></p>'
    v = a.values.set_index("run_id")["value"]
    status = a.health.set_index("run_id")["status"] if len(a.health) else pd.Series(dtype=str)
    rows = "".join(
        f'<tr><td><a href="{esc(run_url(a.info, r.run_id, ui_url))}">{esc(str(r.run_name))}</a></td><td>{esc(str(r.arm))}</td>'
        f"<td>{'' if pd.isna(r.seed) else r.seed}</td><td>{esc(r.outcome)}</td><td>{_fmt_value(a.metric, v.get(r.run_id, math.nan))}</td>"
        f"<td>{esc(str(status.get(r.run_id, '')))}</td><td><code>{esc(reproduce_command(r.run_id))}</code></td></tr>"
        for r in a.runs.itertuples()
    )
    return (f"{head}<table><thead><tr><th>run</th><th>arm</th><th>seed</th><th>outcome</th><th>{esc(a.metric)}</th>"
            f"<th>health</th><th>reproduce</th></tr></thead><tbody>{rows}</tbody></table>")


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------
@dataclass
class ReportResult:
    notebook: Path
    html: Path
    parent_run_id: str
    conclusion: str
    uploaded: bool

    def summary(self) -> str:
        """What a user reads at the end: the conclusion, then where the report is."""
        lines = [self.conclusion, "", f"notebook: {self.notebook}", f"html: {self.html}"]
        if self.uploaded:
            lines.append(f"attached to parent run {self.parent_run_id} (artifacts/{ARTIFACT_DIR}/)")
        return "\n".join(lines)


def default_out_dir(info: SweepInfo) -> Path:
    return REPORTS_DIR / names.safe_name(info.sweep) / (info.parent_run_id or "all")


def build_report(
    sweep: str | None = None,
    *,
    parent_run: str | None = None,
    tracking_uri: str | None = None,
    out: str | Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
    alpha: float = stats.ALPHA,
    ci_method: str = "t",
    execute: bool = True,
    upload: bool = True,
    ui_url: str = DEFAULT_UI_URL,
    timeout: int = 600,
    target: float | None = None,
) -> ReportResult:
    """Load, analyse, build and execute the notebook, export HTML, attach both to the
    parent run. Raises AnalysisError for bad requests, ReportError if execution fails
    (the partial notebook is still written, for debugging)."""
    from analysis import notebook as nbk

    uri = tracking_uri or default_tracking_uri()
    info, runs = load_sweep(sweep, parent_run=parent_run, tracking_uri=uri)
    if metric is not None:
        require_metric(runs, metric)
    history = load_history(runs, history_metrics(runs, metric or info.objective), uri)
    a = analyse(info, runs, history, metric=metric, mode=mode, alpha=alpha, ci_method=ci_method, target=target)
    out_dir = Path(out) if out else default_out_dir(info)
    nb_path, html_path = out_dir / "report.ipynb", out_dir / "report.html"
    params = {"TRACKING_URI": uri, "PARENT_RUN_ID": info.parent_run_id, "METRIC": metric, "MODE": mode,
              "ALPHA": alpha, "CI_METHOD": ci_method, "UI_URL": ui_url, "TARGET": target}
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"{'Search' if a.kind == 'search' else 'Ablation'} report: {info.sweep}"
    text = a.conclusion + f"\n\n<small>Written {stamp} from {len(runs)} MLflow runs of parent run `{info.parent_run_id}`.</small>"
    nb = nbk.build_notebook(title, text, params, a)
    try:
        if execute:
            nbk.execute(nb, timeout=timeout)
    finally:
        nbk.write(nb, nb_path)
        html_path.write_text(nbk.to_html(nb), encoding="utf-8")
    uploaded = False
    if upload and info.parent_run_id:
        client = open_client(uri)
        client.log_artifact(info.parent_run_id, str(nb_path), ARTIFACT_DIR)
        client.log_artifact(info.parent_run_id, str(html_path), ARTIFACT_DIR)
        uploaded = True
    return ReportResult(nb_path, html_path, info.parent_run_id or "", a.conclusion, uploaded)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other bad request
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m analysis.report", description="Report an ablation or search sweep from MLflow.")
    p.add_argument("sweep", nargs="?", help="sweep name (its latest invocation with trials)")
    p.add_argument("--parent-run", help="the parent run id of one sweep invocation")
    p.add_argument("--out", help="output directory (default reports/<sweep>/<parent_run_id>/)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--metric", help="primary metric (default: the sweep's objective)")
    p.add_argument("--mode", choices=["max", "min"], help="direction of the primary metric")
    p.add_argument("--alpha", type=float, default=stats.ALPHA)
    p.add_argument("--ci", choices=["t", "bca"], default="t", help="CI method (BCa only for n >= 10)")
    p.add_argument("--ui-url", default=DEFAULT_UI_URL, help="MLflow UI base URL for run links")
    p.add_argument("--target", type=float, help="value of the primary metric the compute-to-target table counts FLOPs to reach "
                   "(default: 0.9 x the best arm's final mean; searches: the best trial's)")
    p.add_argument("--no-execute", action="store_true", help="write the notebook without running it")
    p.add_argument("--no-upload", action="store_true", help="do not attach the files to the parent run")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    try:
        args = p.parse_args(argv)
        if (args.sweep is None) == (args.parent_run is None):
            p.error("give a sweep name or --parent-run ID (exactly one)")
        if not 0 < args.alpha < 1:
            p.error("--alpha must be between 0 and 1")
    except SystemExit as e:  # usage errors (2) and --help (0) as return codes
        return int(e.code or 0)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.exceptions import MlflowException

    from analysis.notebook import ReportError

    try:
        res = build_report(
            args.sweep, parent_run=args.parent_run, tracking_uri=args.tracking_uri, out=args.out, metric=args.metric,
            mode=args.mode, alpha=args.alpha, ci_method=args.ci, execute=not args.no_execute, upload=not args.no_upload,
            ui_url=args.ui_url, timeout=args.timeout, target=args.target,
        )
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ReportError, MlflowException, OSError) as e:
        print(f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        return 1
    print(res.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
