"""The verdicts of an ablation's declared comparisons, as a report states them.

``evaluate`` takes a loaded sweep and its primary values and returns a ``Decision``: one
row per declared comparison (default: every arm against the control) with its verdict
("beats", "worse", "equivalent", "no detectable difference", "inconclusive", "incomplete"),
the reason in words and every number behind it: intention-to-treat and completed-only
differences (``analysis.itt``), the rule of ``analysis.family`` at this look's
group-sequential boundary (``analysis.sequential``), family-level intervals, effect sizes,
divergence tests and the power of the plan. ``decide`` does the same from MLflow without
writing a report and without recording a look (``sweeps run --until-decided`` uses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from analysis import family, itt, looks, sequential, stats
from analysis.loading import SweepInfo
from hrm_core import names

DECIDED_VERDICTS = ("beats", "worse", "equivalent")


@dataclass
class Decision:
    """What the declared family shows at this look."""

    rows: list[dict]  # per comparison: arm, reference, label, verdict, reason
    decided: bool  # every declared comparison is beats / worse / equivalent
    n_pairs: int  # paired seeds that every arm of the family has (this look's size)
    looks: list[dict]  # the recorded looks, this one included
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # every number, one row per comparison
    plan: family.Plan = field(default_factory=family.Plan)
    smallest_n: int | None = None  # the smallest n at which any verdict is possible
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (arm, seed)
    failure_value: float | None = None
    failure_how: str = ""
    step: float | None = None  # quantisation step of the metric (1 / test size), None when unknown
    step_how: str = ""
    new_look: bool = False  # this look's set of pairs is not recorded yet
    notes: list[str] = field(default_factory=list)
    plan_defaults_note: str = ""  # which plan keys an older invocation did not record


def declared(info: SweepInfo, control: str, arms: list[str]) -> list[dict]:
    """The family: the sweep's ``comparisons``, or every arm against the control."""
    if info.comparisons:
        return [dict(c) for c in info.comparisons]
    return [{"arm": a, "reference": control, "label": ""} for a in arms if a != control]


def quantisation(runs: pd.DataFrame, metric: str) -> tuple[float | None, str]:
    """The step an exact accuracy moves in: 1 / the size of the split it is measured on
    (``eval/*``: test, ``val/*``: validation), from the runs' dataset inputs; None (with
    why) for other metrics or when the size is not recorded."""
    split = {names.EVAL: "test", names.VAL: "val"}.get(metric.split("/", 1)[0])
    if metric.rsplit("/", 1)[-1] != names.EXACT_ACCURACY or split is None:
        return None, f"{metric} is not a per-puzzle rate of a split: no rounding"
    col = runs.get(f"{split}_size", pd.Series(dtype=float))
    sizes = pd.to_numeric(col, errors="coerce").dropna().unique()
    if len(sizes) != 1:
        why = f"the runs' {split} sizes differ" if len(sizes) else f"no run recorded its {split} split's size"
        return None, f"{why}: differences are not rounded"
    size = int(sizes[0])
    return 1.0 / size, f"1/{size} ({size} {split} puzzles)"


def dz_interval(t: float, n: int, level: float) -> tuple[float, float]:
    """Interval of d_z from the noncentral t (inverted at two-sided ``level``)."""
    if not (n >= 2 and math.isfinite(t) and 0 < level < 1):
        return math.nan, math.nan
    df, root = n - 1, math.sqrt(n)

    def solve(q: float) -> float:
        f = lambda nc: float(sps.nct.cdf(t, df, nc)) - q  # noqa: E731
        try:
            return optimize.brentq(f, t - 60, t + 60) / root
        except ValueError:
            return math.nan

    lo, hi = solve(1 - level / 2), solve(level / 2)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (math.nan, math.nan)


def _family_seeds(cells: pd.DataFrame, arms: set[str]) -> list[int]:
    """Seeds at which every arm of the family counts (completed or diverged)."""
    c = cells[cells["arm"].isin(arms)]
    ok = c.assign(ok=c["status"].isin([itt.COMPLETED, itt.DIVERGED])).groupby("seed")["ok"].all()
    return sorted(int(s) for s in ok[ok].index)


def evaluate(
    info: SweepInfo, runs: pd.DataFrame, values: pd.DataFrame, metric: str, mode: str, control: str,
    alpha: float = stats.ALPHA, min_seeds: int | None = None, max_seeds: int | None = None,
) -> Decision:
    """The declared family's verdicts at this look (see the module's docstring)."""
    arms = sorted(values["arm"].astype(str).unique())
    comps = declared(info, control, arms)
    fail, fail_how = itt.failure_value(metric, mode, info.failure_value, info.objective)
    table = itt.cells(values, runs, fail)
    fam_arms = {c["arm"] for c in comps} | {c["reference"] for c in comps}
    seeds = _family_seeds(table, fam_arms)
    past = looks.parse(info.parent_tags)
    all_looks = looks.with_current(past, len(seeds), seeds)
    plan = family.Plan(alpha=alpha, mode=mode, min_seeds=int(min_seeds or info.min_seeds),
                       max_seeds=int(max_seeds or info.max_seeds),
                       looks=tuple(int(lk["pairs"]) for lk in all_looks[:-1]), margin=info.equivalence_margin)
    step, step_how = quantisation(runs, metric)
    d = Decision(rows=[], decided=False, n_pairs=len(seeds), looks=all_looks, plan=plan, cells=table,
                 failure_value=fail, failure_how=fail_how, step=step, step_how=step_how,
                 new_look=looks.is_new(past, seeds))
    if not comps:
        return d
    d.smallest_n = family.smallest_decisive_n(plan, len(comps))
    data = [itt.pairs(table, c["arm"], c["reference"]) for c in comps]
    width = max([len(x["itt"]) for x in data] + [1])

    def pad(key: str) -> np.ndarray:
        return np.array([np.pad(x[key], (0, width - len(x[key])), constant_values=np.nan) for x in data])

    complete = np.array([not x["missing"] for x in data])
    res = family.decide_family(pad("itt"), pad("cc"), plan, complete)
    rows = [_row(c, x, {k: v[i] for k, v in res.items()}, d, metric, len(comps), arms)
            for i, (c, x) in enumerate(zip(comps, data, strict=True))]
    d.table = pd.DataFrame(rows)
    d.rows = [{k: r[k] for k in ("arm", "reference", "label", "verdict", "reason")} for r in rows]
    d.decided = all(r["verdict"] in DECIDED_VERDICTS for r in rows)
    if fail is None:
        d.notes.append(f"Intention to treat not possible: {fail_how}.")
    defaults = {"comparisons": "every arm against the control", "failure_value": "the metric's worst value",
                "min_seeds": "3", "max_seeds": "10", "equivalence_margin": "none"}
    keys = [k for k in info.plan_defaults if k != "comparisons" or not info.comparisons]
    if keys:
        d.plan_defaults_note = ("The invocation predates " + ", ".join(f"`{k}`" for k in keys) + ": the "
                                "defaults apply (" + "; ".join(f"{k}: {defaults[k]}" for k in keys) + ").")
    return d


def _row(c: dict, x: dict, r: dict, d: Decision, metric: str, m: int, arms: list[str]) -> dict:
    """One comparison's numbers and its verdict in words."""
    plan, n = d.plan, int(r["n"])
    verdict = family.VERDICTS[int(r["verdict"])]
    level = sequential.nominal_level(float(r["crit"]), n) if n >= 2 else math.nan
    sd = float(r["sd"])
    mde_fixed = stats.min_detectable_dz(n, plan.alpha / m) if n >= 2 else math.nan
    mde_seq = sequential.mde_at(n, float(r["crit"])) if n >= 2 else math.nan
    dz = float(r["diff"]) / sd if sd > 0 else math.nan
    dz_lo, dz_hi = dz_interval(float(r["t"]), n, level) if np.isfinite(r["ci_low"]) else (math.nan, math.nan)
    div_p, div_test = itt.divergence_test(x["div_arm"], x["div_ref"])
    row = {
        "arm": c["arm"], "reference": c["reference"], "label": c.get("label") or "", "verdict": verdict,
        "reason": "", "n_pairs": n, "diff": float(r["diff"]), "ci_low": float(r["ci_low"]),
        "ci_high": float(r["ci_high"]), "sd_diff": sd, "dz": dz, "dz_low": dz_lo, "dz_high": dz_hi,
        "t": float(r["t"]), "p": float(r["p"]), "sign_flip_p": float(r["flip_p"]), "crit": float(r["crit"]),
        "level": level, "rejected": bool(r["rejected"]), "n_cc": int(r["n_cc"]),
        "diff_cc": float(r["diff_cc"]),
        "p_cc": float(r["p_cc"]), "mean_arm": x["mean_arm"], "mean_reference": x["mean_ref"],
        "diverged_arm": int(x["div_arm"].sum()), "diverged_reference": int(x["div_ref"].sum()),
        "divergence_p": div_p, "divergence_test": div_test, "missing": x["missing"],
        "early_stopped": x["early_stopped"], "mde_dz_fixed": mde_fixed, "mde_dz_look": mde_seq,
        "look": plan.n_looks(max(n, 2)), "beyond_plan": n > plan.max_seeds,
    }
    absent = [a for a in (c["arm"], c["reference"]) if a not in arms]
    row["reason"] = _reason(row, r, d, metric, m, absent)
    bounds = stats.diff_bounds(metric)
    if bounds and np.isfinite(row["ci_low"]) and row["ci_low"] <= bounds[0] and row["ci_high"] >= bounds[1]:
        row.update(ci_low=math.nan, ci_high=math.nan, dz_low=math.nan, dz_high=math.nan)
        row["reason"] += (f"; no interval: at this look's level (α {level:.2g}) it spans every possible "
                          "difference")
    if bool(r["ci_untrusted"]):
        row["reason"] += ("; no interval: the t-interval excludes 0 but the exact sign-flip test does not "
                          "agree at its level (the values are not normal enough for it)")
    if absent:
        row["verdict"] = "inconclusive"
    return row


def _diff(metric: str, x: float, signed: bool = True) -> str:
    """A difference as the report writes it (points for rates)."""
    if not np.isfinite(x):
        return "n/a"
    scale, unit = stats.display_scale(metric)
    v = x * scale
    return (f"{v:+.3g}" if signed else f"{v:.3g}") + unit


def _p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.2g}")


def pick_control(info: SweepInfo, arms: list[str], notes: list[str]) -> str:
    """The control arm: the parent run's, else control / baseline / default / the first arm."""
    if info.control and info.control in arms:
        return info.control
    fallback = next((a for a in ("control", "baseline", "default") if a in arms), arms[0] if arms else "")
    if info.control:
        notes.append(f"The control arm '{info.control}' has no runs; comparing against '{fallback}' instead.")
    elif fallback:
        notes.append(f"The parent run names no control arm; comparing against '{fallback}'.")
    return fallback


def _mde_words(d: Decision, n: int, sd: float, m: int, metric: str) -> str:
    mde = stats.min_detectable_dz(n, d.plan.alpha / m)
    units = f", {_diff(metric, mde * sd, False)} at the observed spread" if np.isfinite(sd) and sd > 0 else ""
    return f"the minimum detectable effect at n = {n} would be d_z {mde:.2f}{units}"


def _reason(row: dict, r: dict, d: Decision, metric: str, m: int, absent: list[str]) -> str:
    n, plan = row["n_pairs"], d.plan
    target = max(d.smallest_n or plan.max_seeds, plan.min_seeds)
    if absent:
        return f"arm {', '.join(absent)} has no runs"
    if row["missing"]:
        shown = "; ".join(row["missing"][:6]) + (f" and {len(row['missing']) - 6} more"
                                                 if len(row["missing"]) > 6 else "")
        return f"incomplete: resume or extend — missing {shown}"
    if r["few"] and not d.cells["seed"].notna().any():
        return "the runs record no seeds: nothing to pair, no test"
    if r["few"]:
        return (f"{n} seed{'s' if n != 1 else ''}: too few for a test (min_seeds {plan.min_seeds}); "
                + _mde_words(d, target, row["sd_diff"], m, metric))
    if r["zero_var"]:
        return f"the {n} paired differences are all {_diff(metric, row['diff'])}: zero variance, no test"
    if r["below"]:
        mde = _mde_words(d, target, row["sd_diff"], m, metric)
        return (f"{n} pairs: no verdict is possible before n = {d.smallest_n} under this plan (the sign-flip "
                f"test's smallest p, 2/2^n, cannot reach the look's level); {mde}")
    look = f"look {row['look']}, |t| > {row['crit']:.2f}, nominal p ≤ {row['level']:.2g}"
    if r["flip_fail"]:
        return (f"the t-test crosses the boundary ({look}) but the sign-flip test does not "
                f"(p {_p(row['sign_flip_p'])})")
    if r["cc_fail"]:
        return (f"intention to treat crosses the boundary ({look}) but the completed-runs-only analysis "
                f"does not agree (difference {_diff(metric, row['diff_cc'])}, p {_p(row['p_cc'])})")
    if row["verdict"] in ("beats", "worse"):
        return (f"t-test p {_p(row['p'])} and sign-flip p {_p(row['sign_flip_p'])} cross "
                f"the boundary ({look}); the completed-runs-only analysis agrees")
    if row["verdict"] == "equivalent":
        return f"the family interval lies within ±{plan.margin:g} (sequential TOST)"
    return (f"t-test p {_p(row['p'])} does not cross the boundary ({look}); "
            f"80% power at this look only for d_z ≥ {row['mde_dz_look']:.2f}")


def decide(
    sweep: str | None = None, *, parent_run: str | None = None, tracking_uri: str | None = None,
    alpha: float = stats.ALPHA, min_seeds: int | None = None, max_seeds: int | None = None,
) -> Decision:
    """The verdicts of a sweep's declared comparisons on its primary metric, as the next
    report would state them, without writing a report or recording a look."""
    from analysis.loading import load_sweep

    info, runs = load_sweep(sweep, parent_run=parent_run, tracking_uri=tracking_uri)
    values = stats.run_values(runs, info.objective)
    control = pick_control(info, sorted(runs["arm"].astype(str).unique()), [])
    return evaluate(info, runs, values, info.objective, info.mode, control, alpha, min_seeds, max_seeds)
