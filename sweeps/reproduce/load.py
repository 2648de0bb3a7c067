"""Step 1 of reproduce: the original run, its recorded context, and how far it went."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from hrm_core import names
from hrm_core.errors import UserError


@dataclass
class Original:
    run: Any  # the MLflow run
    context: dict[str, Any]  # its run_context.json
    experiment: str  # the name of its MLflow experiment
    last_step: int  # the last step of its train/lm_loss history: where the rerun stops
    resumed_at: list[int]  # the steps at which it resumed from checkpoints

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags


def short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_original(client, run_id: str) -> Original:
    """The run and what it recorded; one-line UserErrors for what is missing."""
    run, context = _run_and_context(client, run_id)
    history = client.get_metric_history(run_id, names.TRAIN_LM_LOSS)
    if not history:
        raise UserError(f"run {run_id} logged no {names.TRAIN_LM_LOSS}: nothing to rerun or compare")
    resumed = client.get_metric_history(run_id, names.RESUMED_FROM_STEP)
    experiment = client.get_experiment(run.info.experiment_id).name
    return Original(run, context, experiment, max(m.step for m in history), sorted(m.step for m in resumed))


def _run_and_context(client, run_id: str):
    from hrm_core.tracking.client import read_text_artifact
    from hrm_core.tracking.uris import redact

    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - MlflowException for unknown ids, bad formats...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        where = redact(client.tracking_uri)
        raise UserError(f"unknown run id '{run_id}' in {where} ({short(first, 120)})") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the output readable
    try:
        context = json.loads(read_text_artifact(client, run_id, names.RUN_CONTEXT_ARTIFACT))
    except Exception:  # noqa: BLE001 - not there (older run, trial that never started)
        raise UserError(f"run {run_id} has no {names.RUN_CONTEXT_ARTIFACT} "
                        "(recorded before run contexts existed, or it never started training)") from None
    if "config" not in context:
        raise UserError(f"run {run_id}: {names.RUN_CONTEXT_ARTIFACT} has no config")
    return run, context
