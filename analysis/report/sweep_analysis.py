"""The analysis of one sweep: ``analyse`` turns its runs and histories into an
``Analysis``: primary values, outcome counts and exclusions, group summaries and
arm-vs-control statistics (ablations) or rung leaderboards and parameter importances
(searches), compute to reach a target, the runs' health alerts and the conclusion.
Everything a report shows is computed here; the tables and the prose only format it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import compute, importance, rungs, stats, study, verdicts
from analysis.loading import SweepInfo, load_history, logged_metrics, require_metric
from analysis.report import confirm, health, prose
from hrm_core import names

TRAIN_LOSS = names.TRAIN_LM_LOSS
EXPLORATORY = (
    names.EVAL_ACCURACY,
    names.EVAL_STEPS,
    names.EVAL_LM_LOSS,
    names.metric(names.EVAL, names.Q_HALT_ACCURACY),
)
VARIANT_PREFIXES = (names.GATE_PREFIX, names.FEUDAL_PREFIX, names.CURRICULUM_STAGE)
HEALTH_METRICS = (
    names.DIAG_GRAD_NORM,
    names.DIAG_HALT_AT_MAX.format(split=names.TRAIN),
    names.DIAG_HALT_AT_MAX.format(split=names.EVAL),
)


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
    # runs + rank, top rung and value at the common rung
    board_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    common_rung: int | None = None  # the largest step every trial reached
    search_params: list[str] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    importance_method: str = ""
    trials: study.StudyTrials | None = None  # searches: the trials as Optuna saw them (or MLflow's)
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
    # ablations: the declared family's verdicts at this look (analysis.verdicts)
    decision: verdicts.Decision | None = None
    min_seeds: int | None = None  # --min-seeds / --max-seeds, over the sweep's own keys
    max_seeds: int | None = None
    confirmation: confirm.Confirmation | None = None  # searches: the confirmation stage, if it ran


def history_metrics(runs: pd.DataFrame, metric: str) -> list[str]:
    """The histories a report draws: the primary metric, training loss, ACT steps and
    every variant metric the runs logged."""
    logged = logged_metrics(runs)
    # curves: val/* (every eval) where the data has a val split; eval/* (test) is then one final point
    wanted = [metric, names.on_split(metric, names.VAL), TRAIN_LOSS, names.VAL_STEPS,
              names.VAL_EXACT_ACCURACY, names.EVAL_STEPS, names.EVAL_EXACT_ACCURACY]
    wanted += [m for m in logged if m.startswith(VARIANT_PREFIXES)]
    wanted += [names.COMPUTE_TRAIN_FLOPS, *HEALTH_METRICS]
    return list(dict.fromkeys(m for m in wanted if m in logged))


def analyse(
    info: SweepInfo,
    runs: pd.DataFrame,
    history: pd.DataFrame | None = None,
    metric: str | None = None,
    mode: str | None = None,
    alpha: float = stats.ALPHA,
    ci_method: str = "t",
    target: float | None = None,
    min_seeds: int | None = None,
    max_seeds: int | None = None,
) -> Analysis:
    """Primary values, outcome counts, group summaries and arm-vs-control statistics
    (ablations) or rung leaderboards and parameter importances (searches), compute to
    reach ``target`` (default: ``compute.default_target``) and the runs' health alerts,
    plus the conclusion in words. An explicitly requested metric must have been logged;
    the sweep's own objective may not be yet (the report then says so)."""
    if metric is not None:
        require_metric(runs, metric)
    metric = metric or info.objective
    mode = mode or (info.mode if metric == info.objective else stats.metric_mode(metric))
    runs, stage = confirm.split_stage(runs)  # a search's confirmation stage: analysed on its own
    if history is None:
        history = load_history(runs, history_metrics(runs, metric), info.tracking_uri)
    elif len(stage):
        history = history[history["run_id"].isin(runs["run_id"])]
    values = stats.run_values(runs, metric, history)
    a = Analysis(
        info=info, runs=runs, history=history, metric=metric, mode=mode, alpha=alpha, ci_method=ci_method,
        kind=info.kind or ("search" if info.optuna_study else "ablation"), control="",
        metric_logged=metric in logged_metrics(runs), values=values, counts=stats.outcome_counts(runs),
        excluded=_excluded(runs, values), min_seeds=min_seeds, max_seeds=max_seeds,
    )
    steps = values.loc[values["used"], "final_step"].dropna()
    if steps.nunique() > 1:
        a.notes.append(f"Completed runs ended at different steps ({int(steps.min())} to {int(steps.max())}): "
                       "budgets differ.")
    if a.kind == "search":
        _analyse_search(a)
    else:
        _analyse_ablation(a)
    _analyse_compute(a, target)
    a.health, a.alerts = health.run_health(runs, a.kind)
    a.conclusion = prose.conclusion(a)
    if a.kind == "search":  # the headline: the confirmed effect (analysis/report/confirm.py)
        a.confirmation = confirm.analyse_confirm(info, stage, alpha)
        if a.confirmation is not None and a.confirmation.headline:
            a.conclusion = f"{a.confirmation.headline}\n\n{a.conclusion}"
    return a


def _excluded(runs: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """The runs left out of the statistics, with their reason (and error, when tagged)."""
    left_out = values.loc[~values["used"]]
    excluded = left_out[["run_name", "arm", "seed", "outcome", "reason"]].copy()
    error_col = f"tags.{names.TAG_ERROR}"
    if error_col in runs.columns:
        excluded["error"] = runs.set_index("run_id").loc[left_out["run_id"], error_col].to_numpy()
    return excluded.reset_index(drop=True)


def _analyse_ablation(a: Analysis) -> None:
    arms = sorted(a.runs["arm"].astype(str).unique())
    a.control = verdicts.pick_control(a.info, arms, a.notes)
    a.summary = stats.summarize_groups(a.values, "arm", a.ci_method)
    sign = -1.0 if a.mode == "max" else 1.0
    others = a.summary[a.summary["arm"] != a.control].assign(_k=lambda d: sign * d["mean"])
    others = others.sort_values("_k", na_position="last")
    a.arm_order = [a.control, *others["arm"].tolist()] if a.control else others["arm"].tolist()
    if a.metric_logged and len(arms) > 1:
        exploratory = [m for m in EXPLORATORY if m != a.metric]
        a.comparisons = stats.compare_metrics(
            a.runs, a.control, a.metric, a.mode, exploratory, a.alpha, a.ci_method  # type: ignore[arg-type]
        )
        a.decision = verdicts.evaluate(a.info, a.runs, a.values, a.metric, a.mode, a.control, a.alpha,
                                       a.min_seeds, a.max_seeds)
        a.comparisons = _with_verdicts(a)


def _with_verdicts(a: Analysis) -> pd.DataFrame:
    """The comparisons with the primary metric's rows replaced by the declared family's
    verdicts (intention to treat, sequential boundary, family-level intervals)."""
    t = a.decision.table if a.decision is not None else pd.DataFrame()
    rest = a.comparisons[a.comparisons["role"] != "primary"] if len(a.comparisons) else a.comparisons
    if t.empty:
        return rest.reset_index(drop=True)
    looks = len(a.decision.looks)
    method = "Bonferroni-simultaneous" + (" repeated" if looks > 1 else "")
    prim = pd.DataFrame({
        "metric": a.metric, "arm": t["arm"], "control": t["reference"], "label": t["label"],
        "role": "primary",
        "n_arm": t["n_pairs"], "n_control": t["n_pairs"], "n_pairs": t["n_pairs"],
        "test": "paired t + sign-flip", "diff": t["diff"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
        "ci_method": method, "statistic": t["t"], "df": t["n_pairs"] - 1, "p": t["p"],
        "effect": t["dz"], "effect_kind": "d_z", "wilcoxon_p": float("nan"), "sign_flip_p": t["sign_flip_p"],
        "sd_diff": t["sd_diff"], "note": t["reason"], "ci_clipped": False, "mean_arm": t["mean_arm"],
        "mean_control": t["mean_reference"], "p_holm": stats.holm(t["p"].to_numpy()),
        "significant": t["rejected"], "verdict": t["verdict"],
    })
    lo, hi, cut = stats.clip_interval(prim["ci_low"], prim["ci_high"], stats.diff_bounds(a.metric))
    prim["ci_low"], prim["ci_high"], prim["ci_clipped"] = lo, hi, cut
    return pd.concat([prim, rest], ignore_index=True)


def _analyse_search(a: Analysis) -> None:
    a.arm_order = []
    if not a.metric_logged:
        return
    a.leaderboard = rungs.search_leaderboard(a.runs, a.history, a.metric, a.mode)  # type: ignore[arg-type]
    a.rungs = rungs.rung_summary(a.history, a.runs, a.metric, a.mode)  # type: ignore[arg-type]
    a.search_params = [c for c in a.runs.columns if c.startswith("params.") and c != "params.seed"
                       and a.runs[c].nunique(dropna=True) > 1]
    board = a.leaderboard[["run_id", "rank", "rung", "value_at_rung"]]
    a.board_runs = a.runs.merge(board, on="run_id", how="left")
    rv = rungs.rung_values(a.history, a.metric, rungs.infer_rungs(a.history, a.runs, a.metric))
    if not rv.empty:
        a.common_rung = int(rv["rung"].min())
        low = rv[rv["rung"] == a.common_rung].set_index("run_id")["value"]
        a.board_runs["value_at_common_rung"] = a.board_runs["run_id"].map(low)
    persisted = _open_study(a)
    if persisted is not None:
        a.trials = study.from_study(persisted, a.info.objective)
    else:
        a.trials = study.from_mlflow(a.runs, a.history, a.metric, a.mode)
    _search_importances(a, persisted)


def _open_study(a: Analysis):
    """The sweep's persisted Optuna study, or None (with a note) when it cannot be read."""
    if not (a.info.optuna_storage and a.info.optuna_study):
        return None
    try:
        return study.load_study(a.info.optuna_storage, a.info.optuna_study)
    except LookupError as e:
        a.notes.append(f"Optuna study not used: {str(e).splitlines()[0]}")
        return None


def _search_importances(a: Analysis, persisted) -> None:
    """From the persisted Optuna study; else |Spearman rho| with every trial compared at
    the lowest rung, which every trial reached."""
    n_trials = int(a.board_runs["value_at_common_rung"].notna().sum()) if a.common_rung is not None else 0
    why = importance.guard(len(a.search_params), n_trials)
    if why:
        a.importance_method = f"no importances: {why}"
        a.notes.append(f"No parameter importances: {why}.")
        return
    if persisted is not None:
        try:
            a.importances, a.importance_method = importance.study_importances(persisted)
            return
        except (LookupError, ValueError, RuntimeError) as e:
            a.notes.append(f"Optuna study not used for importances: {str(e).splitlines()[0]}")
    if a.common_rung is not None:
        b = a.board_runs.dropna(subset=["value_at_common_rung"])
        a.importances = importance.rank_importances(b[a.search_params], b["value_at_common_rung"])
        a.importance_method = (f"|Spearman rho| at step {a.common_rung}, which every trial reached "
                               "(no Optuna study)")


def _analyse_compute(a: Analysis, target: float | None) -> None:
    """The primary metric against cumulative training FLOPs and the compute each run
    needed to reach the target (default: 0.9 x the best arm's final mean, or the best
    trial's for searches)."""
    a.compute_logged = names.COMPUTE_TRAIN_FLOPS in logged_metrics(a.runs)
    by = "run_id" if a.kind == "search" else "arm"
    # with a val split, eval/* (test) is one final point: the curve, and its default target, are val/*
    val = names.on_split(a.metric, names.VAL)
    curve_metric = val if val != a.metric and (a.history["key"] == val).any() else a.metric
    finals = a.values if curve_metric == a.metric else stats.run_values(a.runs, curve_metric)
    if target is not None:
        a.target, a.target_how = float(target), "set with the TARGET option"
    elif a.metric_logged:
        a.target, a.target_how = compute.default_target(finals, a.mode, by)  # type: ignore[arg-type]
        if curve_metric != a.metric:
            a.target_how += f" of {curve_metric} (the curves are on the validation split)"
    if not (a.compute_logged and a.metric_logged):
        return
    a.curve = compute.metric_vs_compute(a.history, curve_metric)
    a.to_target = compute.compute_to_target(a.curve, a.target, a.mode)  # type: ignore[arg-type]

