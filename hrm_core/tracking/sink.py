"""The MLflow sink: the training callback that logs a standalone run (the CLI's, and
reproduce's rerun) through one ``RunWriter``.

The run is created with MLflow's source tags (``hrm_core/tracking/source.py``) and gets its
dataset as an input (``datasets.py``) and ``system/*`` metrics now and then
(``hrm_core/observe/system.py``). Metrics are buffered and written in batches; a checkpoint
flushes the buffer first, so what MLflow holds never runs ahead of the last checkpoint by
more than one buffer.
"""

from __future__ import annotations

import os

from hrm_core import names
from hrm_core.config.schema import flatten
from hrm_core.observe.callbacks import Callback, RunInfo
from hrm_core.observe.system import SystemSampler, visible_gpus
from hrm_core.tracking.client import ensure_experiment, get_client
from hrm_core.tracking.writer import RunWriter

__all__ = ["MlflowSink"]


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
        self.writer: RunWriter | None = None
        self._best_path: str | None = None
        self._alerts_checked = False
        self.system: SystemSampler | None = None

    # The run id is kept in the run dir so that a resumed run continues its own run.
    @staticmethod
    def _id_file(run_dir: str) -> str:
        return os.path.join(run_dir, "mlflow_run_id")

    def on_run_start(self, info: RunInfo) -> None:
        client = get_client(self.uri)
        self._alerts_checked = bool((info.config.get("alerts") or {}).get("enabled"))
        id_file = self._id_file(info.run_dir)
        if self.run_id is None and os.path.exists(id_file):
            with open(id_file) as f:
                self.run_id = f.read().strip() or None
        if self.run_id is None:
            from hrm_core.tracking.source import source_tags

            exp_id = ensure_experiment(client, self.experiment)
            tags = {**source_tags(), **self.tags}
            self.run_id = client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
            self.writer = RunWriter(client, self.run_id)
            self.writer.log_params({**flatten(info.config), "num_params": info.num_params})
            os.makedirs(info.run_dir, exist_ok=True)
            with open(id_file, "w") as f:
                f.write(self.run_id)
        else:
            self.writer = RunWriter(client, self.run_id)
            client.update_run(self.run_id, status="RUNNING")
        tags = {names.TAG_CONFIG_HASH: info.config_hash, names.TAG_HARDWARE: info.hardware, **self.tags}
        self.writer.set_tags(tags)
        for name in ("config.yaml", "overrides.yaml"):  # the resolved config, the overrides as typed
            config_file = os.path.join(info.run_dir, name)
            if os.path.exists(config_file):
                self.writer.log_artifact(config_file)
        self.writer.log_context(info.context)
        self.writer.log_dataset(info.context.get("dataset"))
        self.system = SystemSampler(visible_gpus((info.context.get("hardware") or {}).get("device", "")))

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        self.writer.add_metrics(step, metrics)
        if self.writer.buffered >= self.flush_every * 8:
            self.writer.flush()

    def on_train_metrics(self, step, metrics):
        self._log(step, {**metrics, **self.system.poll()} if self.system is not None else metrics)

    def on_eval(self, step, metrics):
        self._log(step, metrics)

    def on_checkpoint(self, step, path, is_best):
        if self.writer is not None:
            self.writer.flush()
        if is_best:
            self._best_path = path

    def on_alert(self, step, rule, message):
        if self.writer is not None:
            self.writer.set_alerts([(step, rule, message)])

    def on_run_end(self, step, outcome, error=None):
        if self.writer is None:
            return
        self.writer.flush()
        if self.upload_best_checkpoint and self._best_path and os.path.exists(self._best_path):
            self.writer.log_artifact(self._best_path, artifact_path="checkpoints/best")
        self.writer.end(outcome, alerts_checked=self._alerts_checked, error=error)
