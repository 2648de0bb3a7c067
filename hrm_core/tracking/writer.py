"""``RunWriter``: what is written to one MLflow run, written one way.

Used by the CLI's ``MlflowSink`` (and so by reproduce) and by the sweep driver's
``MlflowTrialLogger``. It owns MLflow's batch limits (params in batches of 100, metrics in
batches of 1000), the cleaning of values (a non-finite metric is stored as NaN, a param
value is cut to 6000 characters, an error to 5000), the alert tags, the run context
artifacts, the dataset input and the tags that end a run. The client may be an
``MlflowClient`` or the driver's ``SpoolingClient``: only ``log_batch``, ``set_tag`` and
``set_terminated`` write metrics, params and tags, so a spooled client keeps all of them
through an outage (artifacts and the dataset input are not spooled).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from hrm_core import names

__all__ = ["RunWriter"]

PARAM_BATCH = 100  # MLflow's log_batch limit for params (and for tags)
METRIC_BATCH = 1000  # MLflow's log_batch limit for metrics
PARAM_VALUE_MAX = 6000  # MLflow's longest param value
ERROR_MAX = 5000
_TRUNCATED_DIFF = "[truncated: see git_diff.patch]\n"


class RunWriter:
    """Writes to run ``run_id`` through ``client``. Metrics are buffered by ``add_metrics``
    and written by ``flush`` (which ``end`` calls too)."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id
        self._metrics: list[Any] = []

    # -- params and tags ----------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, Any] | None = None) -> None:
        """Params, sorted by name, in batches of 100; ``tags`` ride along from the first batch."""
        from mlflow.entities import Param, RunTag

        plist = [Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in sorted(params.items())]
        tlist = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(plist), len(tlist)), PARAM_BATCH):
            batch = slice(i, i + PARAM_BATCH)
            self.client.log_batch(self.run_id, params=plist[batch], tags=tlist[batch])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log_params({}, tags)

    def set_tag(self, key: str, value: Any) -> None:
        self.client.set_tag(self.run_id, key, str(value))

    def set_alerts(self, alerts: Iterable[tuple[int, str, str]]) -> None:
        """``hrm.alert.<rule> = "step <n>: <message>"`` for each (step, rule, message)."""
        from hrm_core.observe.alerts import alert_tag_value

        self.set_tags({names.TAG_ALERT_PREFIX + r: alert_tag_value(int(s), msg) for s, r, msg in alerts})

    # -- metrics -------------------------------------------------------------------------------
    def add_metrics(self, step: int, values: Mapping[str, float], timestamp: int | None = None) -> None:
        """Buffer one step's metrics (timestamp: now, in ms); inf and NaN are stored as NaN."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000) if timestamp is None else timestamp
        for key, value in values.items():
            value = float(value)
            self._metrics.append(Metric(key, value if math.isfinite(value) else math.nan, ts, int(step)))

    @property
    def buffered(self) -> int:
        return len(self._metrics)

    def flush(self) -> None:
        """Write the buffered metrics, 1000 to a batch, in the order they were added."""
        for i in range(0, len(self._metrics), METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=self._metrics[i : i + METRIC_BATCH])
        self._metrics = []

    # -- artifacts -----------------------------------------------------------------------------
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path=artifact_path)

    def log_context(self, context: dict | str | None) -> None:
        """``run_context.json`` (and ``git_diff.patch`` when the tree was dirty); a resumed run
        overwrites them with its own attempt's context."""
        if not context:
            return
        if isinstance(context, str):
            context = json.loads(context)
        from hrm_core.observe.run_context import to_json

        self.client.log_text(self.run_id, to_json(context), names.RUN_CONTEXT_ARTIFACT)
        diff = (context.get("git") or {}).get("diff")
        if diff:
            from hrm_core.observe.provenance import git_diff

            full = git_diff() if diff.endswith(_TRUNCATED_DIFF) else diff
            self.client.log_text(self.run_id, full, names.GIT_DIFF_ARTIFACT)

    def log_dataset(self, dataset: Mapping[str, Any] | None) -> bool:
        """The run context's ``dataset`` entry as the run's MLflow dataset input (name, fingerprint,
        split sizes: hrm_core/tracking/datasets.py). False when there is nothing to log."""
        from hrm_core.tracking.datasets import dataset_input

        entry = dataset_input(dict(dataset) if dataset else None)
        if entry is None:
            return False
        self.client.log_inputs(self.run_id, datasets=[entry])
        return True

    # -- the end -------------------------------------------------------------------------------
    def end(self, outcome: str, *, alerts_checked: bool, error: str | None = None) -> None:
        """Flush, then tag the outcome, the alerts that fired (``hrm.alerts``, "" = healthy,
        when the rules were checked: every rule of the run, before a resume too) and the
        error, and end the run with the outcome's status."""
        from hrm_core.observe.alerts import alerts_tag

        self.flush()
        self.set_tag(names.TAG_OUTCOME, outcome)
        if alerts_checked:
            tags = self.client.get_run(self.run_id).data.tags
            fired = (r for r in names.ALERT_RULES if names.TAG_ALERT_PREFIX + r in tags)
            self.set_tag(names.TAG_ALERTS, alerts_tag(fired))
        if error:
            self.set_tag(names.TAG_ERROR, error[:ERROR_MAX])
        self.client.set_terminated(self.run_id, status=names.OUTCOME_STATUS[outcome])
