"""The MLflow sink: one small module, mlflow imported lazily, used by the standalone CLI
and by the Ray trainable alike.

Metrics are buffered and written in batches; a checkpoint flushes the buffer first, so
what MLflow holds never runs ahead of the last checkpoint by more than one buffer.
"""

from __future__ import annotations

import os
from typing import Any

from hrm_core import names
from hrm_core.config.schema import flatten
from hrm_core.observe.callbacks import Callback, RunInfo
from hrm_core.paths import project_root

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"


def embedded_tracking_uri() -> str:
    return f"sqlite:///{os.path.join(project_root(), 'mlruns', 'mlflow.db')}"


def embedded_artifact_root() -> str:
    return os.path.join(project_root(), "mlruns", "artifacts")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's embedded SQLite store."""
    return os.environ.get(ENV_TRACKING_URI) or embedded_tracking_uri()


def get_client(uri: str | None = None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")), exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:"):
        artifact_location = "file://" + os.path.join(embedded_artifact_root(), names.safe_name(name))
    return client.create_experiment(name, artifact_location=artifact_location)


def log_run_context(client, run_id: str, context: dict | str | None) -> None:
    """``run_context.json`` (and ``git_diff.patch`` when the tree was dirty) on a run;
    a resumed run overwrites them with its own attempt's context."""
    import json

    if not context:
        return
    if isinstance(context, str):
        context = json.loads(context)
    from hrm_core.observe.run_context import to_json

    client.log_text(run_id, to_json(context), names.RUN_CONTEXT_ARTIFACT)
    diff = (context.get("git") or {}).get("diff")
    if diff:
        from hrm_core.observe.provenance import git_diff

        full = git_diff() if diff.endswith("[truncated: see git_diff.patch]\n") else diff
        client.log_text(run_id, full, names.GIT_DIFF_ARTIFACT)


class MlflowSink(Callback):
    """Logs params, tags, per-step metrics, the resolved config and the best checkpoint."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        uri: str | None = None,
        flush_every: int = 50,
        upload_best_checkpoint: bool = True,
    ):
        self.experiment, self.run_name, self.tags = experiment, run_name, dict(tags or {})
        self.run_id, self.uri, self.flush_every = run_id, uri, flush_every
        self.upload_best_checkpoint = upload_best_checkpoint
        self.client = None
        self._buffer: list[Any] = []
        self._best_path: str | None = None
        self._run_dir: str | None = None
        self._alerts_checked = False

    # The run id is kept in the run dir so that a resumed run continues its own run.
    @staticmethod
    def _id_file(run_dir: str) -> str:
        return os.path.join(run_dir, "mlflow_run_id")

    def on_run_start(self, info: RunInfo) -> None:
        from mlflow.entities import Param, RunTag

        self.client = get_client(self.uri)
        self._run_dir = info.run_dir
        self._alerts_checked = bool((info.config.get("alerts") or {}).get("enabled"))
        id_file = self._id_file(info.run_dir)
        if self.run_id is None and os.path.exists(id_file):
            with open(id_file) as f:
                self.run_id = f.read().strip() or None
        if self.run_id is None:
            exp_id = ensure_experiment(self.client, self.experiment)
            run = self.client.create_run(exp_id, run_name=self.run_name, tags=self.tags)
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(info.config).items())]
            params.append(Param("num_params", str(info.num_params)))
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i : i + 100])
            os.makedirs(info.run_dir, exist_ok=True)
            with open(id_file, "w") as f:
                f.write(self.run_id)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        tags = {names.TAG_CONFIG_HASH: info.config_hash, "hrm.hardware": info.hardware, **self.tags}
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        config_file = os.path.join(info.run_dir, "config.yaml")
        if os.path.exists(config_file):
            self.client.log_artifact(self.run_id, config_file)
        log_run_context(self.client, self.run_id, info.context)

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            self._buffer.append(Metric(k, float(v) if math.isfinite(v) else float("nan"), ts, step))
        if len(self._buffer) >= self.flush_every * 8:
            self.flush()

    def flush(self) -> None:
        if self.client is None or not self._buffer:
            return
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer = []

    def on_train_metrics(self, step, metrics):
        self._log(step, metrics)

    def on_eval(self, step, metrics):
        self._log(step, metrics)

    def on_checkpoint(self, step, path, is_best):
        self.flush()
        if is_best:
            self._best_path = path

    def on_alert(self, step, rule, message):
        from hrm_core.observe.alerts import alert_tag_value

        if self.client is not None:
            self.client.set_tag(self.run_id, names.TAG_ALERT_PREFIX + rule, alert_tag_value(step, message))

    def on_run_end(self, step, outcome, error=None):
        if self.client is None:
            return
        self.flush()
        if self.upload_best_checkpoint and self._best_path and os.path.exists(self._best_path):
            self.client.log_artifact(self.run_id, self._best_path, artifact_path="checkpoints/best")
        self.client.set_tag(self.run_id, names.TAG_OUTCOME, outcome)
        if self._alerts_checked:  # every rule that fired in this run, before a resume too ("" = healthy)
            from hrm_core.observe.alerts import alerts_tag

            tags = self.client.get_run(self.run_id).data.tags
            self.client.set_tag(self.run_id, names.TAG_ALERTS, alerts_tag(r for r in names.ALERT_RULES if names.TAG_ALERT_PREFIX + r in tags))
        if error:
            self.client.set_tag(self.run_id, "hrm.error", error[:5000])
        self.client.set_terminated(self.run_id, status=names.OUTCOME_STATUS[outcome])
