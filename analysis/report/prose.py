"""The report in words: the conclusion (the notebook's first cell), the health line, the
compute summary and the headings that carry numbers. Formats an ``Analysis``; computes
nothing new."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis import compute, stats
from analysis.report import fmt
from hrm_core import names

if TYPE_CHECKING:
    from analysis.report.sweep_analysis import Analysis

NO_COMPUTE = "No run logged compute/* (runs from before compute accounting): no compute figures."


def _comparison_sentence(row: pd.Series, metric: str, alpha: float) -> str:
    ctrl, arm = row["control"], row["arm"]
    if row["verdict"] == "no test":
        return (f"**{arm} vs {ctrl}**: {fmt.value(metric, row['mean_arm'])} vs "
                f"{fmt.value(metric, row['mean_control'])} — {row['note']}.")
    ci = f"95% CI {fmt.diff_interval(metric, row['ci_low'], row['ci_high'])}"
    if row["test"] == "paired t":
        n = f"{row['n_pairs']} paired seeds"
    else:
        n = f"{row['n_arm']} vs {row['n_control']} runs (unpaired)"
    head = {"better": f"**{arm} beats {ctrl}** by",
            "worse": f"**{arm} is worse than {ctrl}** by"}.get(row["verdict"], f"**{arm} vs {ctrl}**:")
    test = f"{row['test']}-test p {fmt.p_value(row['p'])}, Holm-adjusted p {fmt.p_value(row['p_holm'])}"
    verdict = f"significant at α = {alpha:g}" if row["significant"] else "no detectable difference"
    eff = fmt.effect(row["effect"], row["effect_kind"]) if np.isfinite(row["effect"]) else ""
    wil = f"; Wilcoxon p {fmt.p_value(row['wilcoxon_p'])}" if np.isfinite(row["wilcoxon_p"]) else ""
    return f"{head} {fmt.diff(metric, row['diff'])} ({ci}) across {n}: {test}{wil} — {verdict}" + (
        f" ({eff})." if eff else ".")


def _verdict_sentence(row: pd.Series, a: Analysis) -> str:
    """One declared comparison: its verdict, the ITT difference with its family-level
    interval and d_z, and the reason."""
    m, step = a.metric, a.decision.step if a.decision else None
    arm, ref, verdict = row["arm"], row["control"], row["verdict"]
    label = f" ({row['label']})" if row.get("label") else ""
    head = {"beats": f"**{arm} beats {ref}**{label} by", "worse": f"**{arm} is worse than {ref}**{label} by"}
    diff = fmt.diff(m, fmt.on_step(row["diff"], step))
    if np.isfinite(row["ci_low"]):
        ci = fmt.diff_interval(m, fmt.on_step(row["ci_low"], step), fmt.on_step(row["ci_high"], step))
        lo_hi = (row.get("dz_low", np.nan), row.get("dz_high", np.nan))
        dz_ci = f" ({lo_hi[0]:.2f} to {lo_hi[1]:.2f})" if np.isfinite(lo_hi[0]) else ""
        eff = (f"; d_z {row['effect']:.2f}" if np.isfinite(row["effect"]) else "") + dz_ci
        numbers = f"{diff} ({row['ci_method']} 95% CI {ci}{eff}) across {row['n_pairs']} paired seeds"
    else:
        numbers = f"{diff} across {row['n_pairs']} paired seeds, no interval"
    if verdict in head:
        return f"{head[verdict]} {numbers}: {row['note']}."
    return f"**{arm} vs {ref}**{label}: **{verdict}** — {row['note']}. Difference {numbers}."


def plan_lines(a: Analysis) -> list[str]:
    """How the verdicts were reached: intention to treat, the family, the spending rule,
    the looks, the smallest decisive n, the quantisation step, power and the stop reason."""
    d = a.decision
    if d is None or d.table.empty:
        return []
    plan, m, t = d.plan, len(d.table), d.table
    looks = "; ".join(f"{lk['pairs']} pairs at {lk.get('time', '?')}" for lk in d.looks)
    diverged = (f"a diverged run takes {d.failure_how}" if d.failure_value is not None
                else f"but diverged runs are left out: {d.failure_how}")
    out = [f"How to read these verdicts: intention to treat (every planned run counts; {diverged}; error, "
           "killed and never-started runs are missing). Holm step-down over "
           f"the declared family of {m} comparison(s), with α = {plan.alpha:g} split Bonferroni-wise "
           "across it and "
           f"spent per comparison by a Lan–DeMets O'Brien–Fleming rule over n / N_max (N_max = "
           f"{plan.max_seeds}); a verdict needs the paired t-test and the exact sign-flip test to cross this "
           f"look's boundary and the completed-runs-only analysis to agree. Intervals are family-level "
           f"(Bonferroni-simultaneous{', repeated over the looks' if len(d.looks) > 1 else ''}).",
           f"Looks ({len(d.looks)}): {looks}."]
    n_min = f"n = {d.smallest_n}" if d.smallest_n else "no n up to 64"
    mde_fixed, mde_look = float(t["mde_dz_fixed"].min()), float(t["mde_dz_look"].min())
    at_look = (f"d_z ≥ {mde_look:.2f} at this look's sequential boundary" if np.isfinite(mde_look)
               else "no effect size reaches it at this look's sequential boundary")
    power = f"With {d.n_pairs} pairs no power can be stated."
    if np.isfinite(mde_fixed):
        power = (f"With {d.n_pairs} pairs, 80% power needs d_z ≥ {mde_fixed:.2f} at α/m = "
                 f"{plan.alpha / m:.3g}, and {at_look}.")
    out.append(f"The smallest n at which any verdict is possible under this plan: {n_min} "
               f"(min_seeds {plan.min_seeds}). {power}")
    if (t["n_pairs"] > plan.max_seeds).any():
        out.append(f"**Beyond plan**: more than N_max = {plan.max_seeds} pairs; no alpha is left once a look "
                   "at N_max was made.")
    scale, unit = stats.display_scale(a.metric)
    step = (f"Quantisation step {d.step_how} = {d.step * scale:.3g}{unit}: differences are rounded to it."
            if d.step else f"Quantisation: {d.step_how}.")
    out.append(step)
    out += _divergence_lines(a)
    stop = a.info.parent_tags.get(names.TAG_STOP_REASON)
    if stop:
        why = {names.STOP_DECIDED: "every declared comparison was decided",
               names.STOP_MAX_SEEDS: f"N_max = {plan.max_seeds} seeds reached, not every comparison decided",
               names.STOP_INTERRUPTED: "the run was interrupted (resume it with `python -m sweeps resume`)"}
        out.append(f"**Stopped adding seeds** (`--until-decided`): {why.get(stop, stop)}.")
    if d.plan_defaults_note:
        out.append(d.plan_defaults_note)
    return out


def _divergence_lines(a: Analysis) -> list[str]:
    """Divergence per comparison (exact test) and the completed-only sensitivity check."""
    t, out = a.decision.table, []
    for r in t.itertuples():
        if r.diverged_arm or r.diverged_reference:
            out.append(f"Divergence, {r.arm} vs {r.reference}: {r.diverged_arm} vs {r.diverged_reference} of "
                       f"{r.n_pairs} paired seeds ({r.divergence_test} p {fmt.p_value(r.divergence_p)}).")
    sens = "; ".join(f"{r.arm} − {r.reference} {fmt.diff(a.metric, r.diff_cc)} (n = {r.n_cc}, "
                     f"t-test p {fmt.p_value(r.p_cc)})" for r in t.itertuples() if r.n_cc >= 2)
    if sens:
        out.append(f"Sensitivity check, completed runs only: {sens}.")
    early = int(t["early_stopped"].sum())
    if early:
        out.append(f"{early} run(s) stopped early by ASHA are left out: early stopping belongs to searches.")
    return out


def _excluded_sentence(a: Analysis) -> str:
    total = len(a.values)
    if a.excluded.empty:
        return f"All {total} runs completed and are in the statistics."
    parts = []
    for reason, g in a.excluded.groupby("reason", sort=True):
        who = ", ".join(f"{r.arm} seed {r.seed}" if pd.notna(r.seed) else str(r.run_name)
                        for r in g.head(6).itertuples())
        more = f" and {len(g) - 6} more" if len(g) > 6 else ""
        parts.append(f"{len(g)} {reason} ({who}{more})")
    where = "the statistics" if a.decision is None else "the per-arm summaries"
    text = f"Not in {where}: {len(a.excluded)} of {total} runs — " + "; ".join(parts) + "."
    d = a.decision
    if d is not None and d.failure_value is not None and (a.excluded["reason"] == "diverged").any():
        text += f" Diverged runs count in the verdicts (intention to treat), at {d.failure_how}."
    return text


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
        shown = [f"{r.who} at step {int(r.step)}" if np.isfinite(r.step) else r.who
                 for r in g.head(4).itertuples()]
        more = f" and {len(g) - 4} more" if len(g) > 4 else ""
        parts.append(f"{rule} ({', '.join(shown)}{more})")
    return (f"**Health: {len(sick)} of {n} runs raised alerts**: " + "; ".join(parts)
            + f"{tail}. See the Health section.")


def _search_lines(a: Analysis) -> list[str]:
    """A search: the best trial at the top rung, the most important parameter, outcomes."""
    info, n_runs = a.info, len(a.runs)
    lines = [f"Search **{info.sweep}** ({info.parent_run_name or 'all invocations'}, "
             f"status {info.status or '?'}): {n_runs} trials, primary metric `{a.metric}` ({a.mode})."]
    if a.leaderboard.empty or a.leaderboard["value_at_rung"].isna().all():
        lines.append(f"No trial has logged `{a.metric}` yet: nothing to rank.")
    else:
        top = a.leaderboard.iloc[0]
        top_rung = int(top["rung"])
        at_top = a.leaderboard[a.leaderboard["rung"] == top_rung]
        lines.append(
            f"Best trial at the top rung (step {top_rung}, reached by {len(at_top)} of {n_runs} trials): "
            f"**{top['trial_id'] or top['run_name']}** ({top['arm']}) with {a.metric} = "
            f"{fmt.value(a.metric, top['value_at_rung'])}; "
            f"median at that rung {fmt.value(a.metric, float(at_top['value_at_rung'].median()))}. "
            "Trials are ranked at the same rung, never by their best eval."
        )
    if a.importances:
        k, v = next(iter(sorted(a.importances.items(), key=lambda kv: -kv[1])))
        lines.append(f"Most important parameter: **{k}** ({v:.2f}; {a.importance_method}).")
    counts = a.runs["outcome"].value_counts()
    lines.append("Outcomes: " + ", ".join(f"{c} {o.replace('_', '-')}" for o, c in counts.items()) + ".")
    return lines


def _power_line(a: Analysis, prim: pd.DataFrame) -> list[str]:
    """What the fewest paired seeds can detect (none without a paired test)."""
    tested = prim[prim["test"] == "paired t"]
    if not len(tested):
        return []
    n = int(tested["n_pairs"].min())
    mde = stats.min_detectable_dz(n, a.alpha)
    sd = float(np.nanmedian(tested["sd_diff"]))
    units = ""
    if np.isfinite(sd) and sd > 0:
        units = f", about {fmt.diff(a.metric, mde * sd, False)} at the observed spread of paired differences"
    return [f"With {n} paired seeds a paired t-test at α = {a.alpha:g} has 80% power only for effects of "
            f"d_z ≥ {mde:.2f}{units}. Holm correction is across the {len(prim)} arm(s); "
            "other metrics are exploratory."]


def _ablation_lines(a: Analysis) -> list[str]:
    """An ablation: every arm against the control in a sentence, power, what was left out."""
    info = a.info
    lines = [f"Ablation **{info.sweep}** ({info.parent_run_name or 'all invocations'}, "
             f"status {info.status or '?'}): {len(a.runs)} runs, "
             f"{a.runs['arm'].nunique()} arms × {a.runs['seed'].nunique()} seeds; "
             f"primary metric `{a.metric}` ({a.mode}imised) at the end of the fixed budget; "
             f"control **{a.control or '-'}**."]
    if not a.metric_logged:
        counts = a.runs["outcome"].value_counts()
        outcomes = ", ".join(f"{c} {o}" for o, c in counts.items())
        lines.append(f"No run has logged `{a.metric}` yet ({outcomes}): "
                     "nothing to compare. Training curves are in the Curves section.")
    elif a.comparisons.empty:
        lines.append("Only one arm: no comparison. " + "; ".join(
            f"{r.arm}: {fmt.value(a.metric, r.mean)} (n = {r.n})" for r in a.summary.itertuples()))
    else:
        prim = a.comparisons[a.comparisons["role"] == "primary"]
        if a.decision is not None and not a.decision.table.empty:
            extra = a.decision.table[["dz_low", "dz_high"]].set_index(a.decision.table.index)
            prim = prim.reset_index(drop=True).join(extra.reset_index(drop=True))
            lines += [f"- {_verdict_sentence(r, a)}" for _, r in prim.iterrows()]
            lines += plan_lines(a)
        else:
            prim = prim.sort_values(["significant", "p"], ascending=[False, True])
            lines += [f"- {_comparison_sentence(r, a.metric, a.alpha)}" for _, r in prim.iterrows()]
            lines += _power_line(a, prim)
    lines.append(_excluded_sentence(a))
    return lines


SMOKE = "smoke"
SMOKE_NOTE = ("**Smoke scale: a check that the pipeline runs, not an experiment. These results are "
              "not findings.**")


def conclusion(a: Analysis) -> str:
    """The report's first cell: what the sweep shows, in plain words with its numbers."""
    lines = _search_lines(a) if a.kind == "search" else _ablation_lines(a)
    if a.info.parent_tags.get(names.TAG_SCALE) == SMOKE:
        lines.insert(0, SMOKE_NOTE)
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


def interval_note(a: Analysis) -> str:
    """Where a 95% interval of the bounded primary metric was clipped to its bounds, and
    why that is sound; '' when none was."""
    limits = stats.bounds(a.metric)
    if limits is None:
        return ""
    where = []
    if "ci_clipped" in a.summary.columns:
        where += [f"{arm} (mean)" for arm in a.summary.loc[a.summary["ci_clipped"], "arm"]]
    if "ci_clipped" in a.comparisons.columns:
        c = a.comparisons[a.comparisons["ci_clipped"] & (a.comparisons["metric"] == a.metric)]
        where += [f"{arm} − {ctrl} (difference)" for arm, ctrl in zip(c["arm"], c["control"], strict=True)]
    if not where:
        return ""
    lo, hi = (fmt.value(a.metric, x) for x in limits)
    diffs = f"{fmt.diff(a.metric, -1.0)} to {fmt.diff(a.metric, 1.0)}"
    return (f"*95% intervals that crossed the bounds of {a.metric} ({lo} to {hi}; differences "
            f"{diffs}) are clipped to them (marked \\* in the tables): "
            f"{', '.join(where)}. The true value lies within the bounds, so clipping removes only "
            "impossible values and keeps the coverage.*")


def compute_summary(a: Analysis) -> str:
    """The sweep's compute in words (and, for searches, what early stopping saved)."""
    if not a.compute_logged:
        return f"*{NO_COMPUTE}*"
    flops, device, source = compute.sweep_totals(a.info.parent_metrics, a.runs)
    n = len(a.runs)
    text = [f"The sweep's {n} runs used **{fmt.flops(flops)} training FLOPs** and "
            f"**{fmt.seconds(device)} device-seconds** ({source})."]
    logged = a.runs.get(f"metrics.{names.COMPUTE_TRAIN_FLOPS}", pd.Series(np.nan, index=a.runs.index))
    missing = int(logged.isna().sum())
    if missing:
        text.append(f"{missing} run(s) logged no compute/* and are not in these totals.")
    if a.kind == "search":
        text.append(_savings_sentence(a))
    text.append("FLOPs are the model summary's train-step figure (forward, Q target, one-step backward; "
                "evaluation not counted) × the steps taken, per curriculum stage.")
    return " ".join(text)


def _savings_sentence(a: Analysis) -> str:
    stopped = int((a.runs["outcome"] == names.OUTCOME_EARLY_STOPPED).sum())
    saved, full, src = compute.sweep_savings(a.info.parent_metrics, a.runs)
    if not np.isfinite(saved):
        return (f"{stopped} trials were stopped early; their planned compute was not logged, "
                "so the saving is unknown.")
    share = saved / full if full > 0 else math.nan
    return (f"Early stopping ({stopped} of {len(a.runs)} trials stopped) saved **{fmt.flops(saved)} FLOPs**, "
            f"**{share:.0%}** of the {fmt.flops(full)} FLOPs that running every trial to the end "
            f"would have cost ({src}).")


def target_heading(a: Analysis) -> str:
    """The compute-to-target table's heading, with the target and how it was chosen."""
    if not np.isfinite(a.target):
        why = a.target_how or "the metric was not logged"
        return f"Compute to reach a target {a.metric}: no target ({why})"
    op = "≥" if a.mode == "max" else "≤"
    return (f"Compute to reach {a.metric} {op} {fmt.value(a.metric, a.target)} (target = {a.target_how}; "
            "set TARGET to change it)")


def health_summary(a: Analysis) -> str:
    """The Health section's lead: alerts in a line, or that all is well / unchecked."""
    h = a.health
    if h.empty:
        return "*No runs.*"
    if not h["checked"].any():
        return (f"*Not checked: no run carries the {names.TAG_ALERTS} tag "
                "(runs from before the health alerts, or still running).*")
    line = health_line(a)
    return line if (h["alerts"] > 0).any() else f"No alerts: {line.removeprefix('Health: ')}"
