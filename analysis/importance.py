"""Parameter importance for searches: a seeded fANOVA (PED-ANOVA without scikit-learn)
on the sweep's persisted Optuna study (opened by ``analysis.study.load_study``), or, when
the study cannot be read, |Spearman rho| between each parameter and the trials' values at
one rung.
"""

from __future__ import annotations

import importlib.util

import pandas as pd
from scipy import stats as sps


def _evaluator():
    """fANOVA's forest when scikit-learn is there (mlflow brings it), else PED-ANOVA."""
    import optuna

    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"


def study_importances(study, objective_index: int = 0) -> tuple[dict[str, float], str]:
    """Parameter importances (seeded fANOVA; PED-ANOVA without scikit-learn) from the
    sweep's persisted Optuna study, and how they were computed.

    With early stopping, the completed trials are the survivors only, so trials are
    compared at one rung instead: each trial's intermediate value at the largest step
    every trial reached. Without pruned trials, the final values are used. Raises
    ``LookupError`` when the study has too few trials.
    """
    import optuna

    state = optuna.trial.TrialState
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(state.PRUNED,))
    evaluator, method = _evaluator()
    multi = len(study.directions) > 1
    if not pruned or multi:
        if len(done) < 2:
            raise LookupError(f"Optuna study has {len(done)} completed trial(s): too few for importances")
        target = (lambda t: t.values[objective_index]) if multi else None
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
        how = f"{method} on the final values of {len(done)} completed trials (Optuna study)"
        return {k: float(v) for k, v in imp.items()}, how
    trials = [t for t in (*done, *pruned) if t.intermediate_values]
    if len(trials) < 2:
        raise LookupError("Optuna study has too few trials with intermediate values for importances")
    rung = min(max(t.intermediate_values) for t in trials)
    same_rung = optuna.create_study(direction=study.direction)
    same_rung.add_trials([
        optuna.trial.create_trial(
            params=t.params, distributions=t.distributions,
            value=t.intermediate_values[max(s for s in t.intermediate_values if s <= rung)],
        )
        for t in trials
    ])
    imp = optuna.importance.get_param_importances(same_rung, evaluator=evaluator)
    how = f"{method} on {len(trials)} trials of the Optuna study, all compared at step {rung}"
    return {k: float(v) for k, v in imp.items()}, how


def guard(n_params: int, n_trials: int) -> str:
    """Why importances would mislead here ('' when they would not): one searched parameter
    gets all of the variance, noise included (fANOVA gives 1.0 on pure noise), and fewer
    than 2 trials per parameter cannot separate them."""
    if n_params < 2:
        return (f"{n_params} searched parameter{'s' if n_params != 1 else ''}: importance needs at least two "
                "(with one, it is 1.0 even on pure noise)")
    if n_trials < 2 * n_params:
        return (f"{n_trials} trials with a value for {n_params} searched parameters: importance needs at "
                f"least {2 * n_params} (2 per parameter)")
    return ""


def rank_importances(params: pd.DataFrame, values: pd.Series) -> dict[str, float]:
    """Fallback importance: |Spearman rho| between each parameter and the value (trials
    compared at one rung). Categorical parameters use their category codes."""
    out = {}
    v = pd.to_numeric(values, errors="coerce")
    for col in params.columns:
        x = pd.to_numeric(params[col], errors="coerce")
        if x.isna().any():
            x = params[col].astype("category").cat.codes.astype(float)
        ok = x.notna() & v.notna()
        if ok.sum() >= 3 and x[ok].nunique() > 1 and v[ok].nunique() > 1:
            out[col.removeprefix("params.")] = float(abs(sps.spearmanr(x[ok], v[ok]).statistic))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
