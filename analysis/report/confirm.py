"""A search's confirmation stage in the report: the confirmed effect on the test split.

A search selects its winner on one seed (and, with a validation split, on ``val/*``): the
winner's own value is the best of many noisy draws and overstates it. The stage
(``sweeps/confirm.py``) re-ran the top configurations and the base configuration with fresh
seeds; its runs carry ``hrm.stage=confirm`` and its plan is the parent's ``confirm.json``.
Here each ``top<k>`` is compared with ``base`` on the test metric, as an ablation with the
same verdict rule as any other (``analysis.verdicts.evaluate``: intention to treat, Holm
over the confirmed configurations, family-level intervals, the sign-flip check), at one
look with N_max = the stage's seeds. The headline is the confirmed effect with its
interval; the search's own value is shown beside it as "selected on validation, optimistic".
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import stats, verdicts
from analysis.loading import SweepInfo
from analysis.report import fmt
from hrm_core import names

STAGE_COL = f"tags.{names.TAG_STAGE}"


@dataclass
class Confirmation:
    """The stage's plan, its verdicts and the rows a report shows, one per confirmed configuration."""

    plan: dict
    metric: str
    mode: str
    decision: verdicts.Decision | None
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: str = ""


def split_stage(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the search's own runs, the confirmation stage's runs)."""
    if runs.empty or STAGE_COL not in runs.columns:
        return runs, runs.iloc[0:0]
    mask = runs[STAGE_COL] == names.STAGE_CONFIRM
    return runs[~mask].reset_index(drop=True), runs[mask].reset_index(drop=True)


def read_plan(info: SweepInfo) -> dict | None:
    """The parent's confirm.json, or None (no stage ran, or the store cannot give it)."""
    from analysis.loading import open_client
    from hrm_core.tracking.client import read_text_artifact

    if not info.parent_run_id:
        return None
    try:
        return json.loads(read_text_artifact(open_client(info.tracking_uri), info.parent_run_id,
                                             names.CONFIRM_ARTIFACT))
    except Exception:  # noqa: BLE001 - no stage: the report says nothing about it
        return None


def _label(arm: str, spec: dict) -> str:
    """A configuration by its searched values: ``gate_init_bias=-1.14, lr=0.001``."""
    params = spec.get("params") or {}
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in params.items()) or arm


def _short(value: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() else f"{number:.3g}"


def analyse_confirm(info: SweepInfo, stage: pd.DataFrame, alpha: float = stats.ALPHA,
                    plan: dict | None = None) -> Confirmation | None:
    """The confirmed effects of a search, or None when it has no confirmation stage."""
    plan = plan if plan is not None else read_plan(info)
    if plan is None:
        return None
    metric, mode = plan["metrics"][0], plan["modes"][0]
    tops = [a for a in plan["arms"] if a != plan["control"]]
    comps = [{"arm": a, "reference": plan["control"], "label": _label(a, plan["arms"][a])} for a in tops]
    out = Confirmation(plan=plan, metric=metric, mode=mode, decision=None)
    if stage.empty or f"metrics.{metric}" not in stage.columns:
        out.headline = (f"The confirmation stage ({len(tops)} configuration(s) and the base, fresh seeds "
                        f"{plan['seeds']}) has no results on {metric} yet: resume the sweep.")
        return out
    n_max = max(len(plan["seeds"]), int(plan.get("min_seeds") or 2))
    sub = dataclasses.replace(info, kind="ablation", control=plan["control"], objective=metric, mode=mode,
                              comparisons=comps, failure_value=plan.get("failure_value"),
                              min_seeds=int(plan.get("min_seeds") or 3), max_seeds=n_max,
                              equivalence_margin=plan.get("equivalence_margin"),
                              parent_tags={})  # one look: the stage has a fixed number of seeds
    values = stats.run_values(stage, metric)
    d = verdicts.evaluate(sub, stage, values, metric, mode, plan["control"], alpha,
                          sub.min_seeds, n_max)
    out.decision = d
    out.table = _table(plan, d)
    out.headline = _headline(out)
    return out


def _table(plan: dict, d: verdicts.Decision) -> pd.DataFrame:
    rows = []
    for r in d.table.to_dict("records"):
        spec = plan["arms"].get(r["arm"], {})
        selected = spec.get("search_values") or {}
        rows.append({
            "configuration": r["arm"], "params": _label(r["arm"], spec), "n_pairs": r["n_pairs"],
            "confirmed_diff": r["diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "verdict": r["verdict"], "reason": r["reason"],
            "selected_on": ", ".join(selected), "selected_value": next(iter(selected.values()), math.nan),
            "search_run": spec.get("search_run_name", ""),
        })
    return pd.DataFrame(rows)


def _headline(c: Confirmation) -> str:
    """The confirmed effect of the search's best configuration, with its interval, and the
    value it was selected on, labelled as optimistic."""
    if c.table.empty:
        return ""
    top = c.table.iloc[0]
    n, seeds = int(top["n_pairs"]), c.plan["seeds"]
    alpha = c.decision.plan.alpha if c.decision else stats.ALPHA
    ci = ("no interval" if not math.isfinite(top["ci_low"])
          else f"family {100 * (1 - alpha):.0f}% CI "
               f"{fmt.diff_interval(c.metric, top['ci_low'], top['ci_high'])}")
    selected = ""
    if top["selected_on"] and math.isfinite(top["selected_value"]):
        on = top["selected_on"].split(", ")[0]
        selected = (f" Its search value, {on} {fmt.value(on, top['selected_value'])}, is *selected on "
                    "validation, optimistic*: the best of the search's draws, on one seed.")
    return (f"**Confirmed on the test split** ({c.metric}, {n} fresh paired seed{'s' if n != 1 else ''} "
            f"{seeds}): the search's best configuration ({top['params']}) vs the base: "
            f"{fmt.diff(c.metric, top['confirmed_diff'])} ({ci}); verdict: {top['verdict']} "
            f"({top['reason']}).{selected}")
