"""A search's trials as Optuna saw them, for the report's optimisation history,
intermediate values and Pareto front.

``load_study`` is the only code in ``analysis`` that opens the sweep engine's Optuna
storage (its SQLite file); it imports optuna when called. ``from_study`` reads the
persisted study; ``from_mlflow`` builds the same frames from the MLflow runs and
histories when the study cannot be read (one objective then: the primary metric).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hrm_core import names

# Trial states, as Optuna names them (lower case); MLflow outcomes map onto them.
COMPLETE, PRUNED, FAIL, RUNNING = "complete", "pruned", "fail", "running"
_FROM_OUTCOME = {
    names.OUTCOME_COMPLETED: COMPLETE, names.OUTCOME_EARLY_STOPPED: PRUNED, names.OUTCOME_ERROR: FAIL,
    names.OUTCOME_DIVERGED: FAIL, names.OUTCOME_KILLED: FAIL,
}
TRIAL_COLUMNS = ["number", "state", "label"]
STEP_COLUMNS = ["number", "state", "step", "value"]


@dataclass
class StudyTrials:
    """Per trial (``trials``: number, state, label and one ``obj<i>`` column per
    objective, NaN unless complete) and per reported step (``steps``: number, state, step,
    value): the intermediate values ASHA compared (pruned trials stop at their rung)."""

    objectives: list[str]
    modes: list[str]  # "max" | "min", one per objective
    trials: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRIAL_COLUMNS))
    steps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STEP_COLUMNS))
    source: str = ""

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


def load_study(storage: str, study_name: str):
    """The persisted Optuna study; ``LookupError`` (one line) when it cannot be read."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None
    if path is not None and not os.path.exists(path):  # Optuna would create an empty one
        raise LookupError(f"Optuna storage {storage} does not exist")
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, ValueError, RuntimeError, ImportError, SQLAlchemyError) as e:
        raise LookupError(f"cannot load Optuna study '{study_name}' from {storage}: {e}") from None


def from_study(study, objective: str) -> StudyTrials:
    """The study's trials and intermediate values. Objectives are named by the study
    (``set_metric_names``), else the first is ``objective`` (the sweep's primary metric)
    and the others are numbered."""
    k = len(study.directions)
    given = list(study.metric_names or [])
    objectives = given if len(given) == k else [objective, *(f"objective {i + 1}" for i in range(1, k))]
    modes = ["max" if d.name == "MAXIMIZE" else "min" for d in study.directions]
    rows, steps = [], []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        values = t.values if t.values is not None and state == COMPLETE else [np.nan] * k
        rows.append({"number": t.number, "state": state, "label": f"#{t.number}",
                     **{f"obj{i}": float(v) for i, v in enumerate(values)}})
        steps += [(t.number, state, int(s), float(v)) for s, v in sorted(t.intermediate_values.items())]
    return StudyTrials(objectives, modes, _trials_frame(rows, k), pd.DataFrame(steps, columns=STEP_COLUMNS),
                       f"Optuna study {study.study_name}")


def from_mlflow(runs: pd.DataFrame, history: pd.DataFrame, metric: str, mode: str) -> StudyTrials:
    """The same frames from MLflow: trials in start order, their final ``metric`` (complete
    trials only) and its history as the intermediate values."""
    order = runs.sort_values(["start_time", "run_name"], na_position="last").reset_index(drop=True)
    state = order["outcome"].map(_FROM_OUTCOME).fillna(RUNNING)
    col = f"metrics.{metric}"
    missing = pd.Series(np.nan, order.index, dtype=float)
    final = pd.to_numeric(order[col], errors="coerce") if col in order.columns else missing
    labels = order["trial_id"].where(order["trial_id"].astype(bool), order["run_name"])
    trials = pd.DataFrame({"number": order.index, "state": state, "label": labels,
                           "obj0": final.where(state == COMPLETE)})
    number = dict(zip(order["run_id"], order.index, strict=True))
    h = history.loc[history["key"] == metric, ["run_id", "step", "value"]]
    steps = pd.DataFrame({"number": h["run_id"].map(number), "step": h["step"], "value": h["value"]})
    steps = steps.dropna(subset=["number"]).astype({"number": int})
    steps.insert(1, "state", steps["number"].map(trials.set_index("number")["state"]))
    return StudyTrials([metric], [mode], trials, steps.sort_values(["number", "step"]).reset_index(drop=True),
                       "MLflow runs (the Optuna study could not be read)")


def _trials_frame(rows: list[dict], k: int) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *(f"obj{i}" for i in range(k))])


def pareto_mask(values: np.ndarray, modes: list[str]) -> np.ndarray:
    """Which rows of ``values`` (trials x objectives, finite) no other row dominates: at
    least as good in every objective and better in one."""
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    v = values * sign  # lower is better in every column now
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    return ~(le & lt).any(axis=0)
