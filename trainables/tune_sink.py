"""The train loop's callbacks adapted to Ray Tune.

Per-step metrics are buffered and travel with each checkpoint in one ``tune.report``;
the driver writes them to MLflow (one writer, so SQLite never sees two). A trial
restarted from its last checkpoint re-sends only what came after it: no (step, key) is
logged twice.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hrm_core import names
from hrm_core.callbacks import Callback, RunInfo
from hrm_core.config import flatten

# Keys of the dict each tune.report carries, besides the flat latest metrics.
HISTORY = "hrm_history"  # [(step, {metric: value})] since the last report
RUN_INFO = "hrm_run_info"  # params and tags, sent with the first report of an attempt
TOTAL_STEPS = "hrm_total_steps"
OUTCOME = "hrm_outcome"
STEP = "step"  # ASHA's time attribute: the global optimizer step


class TuneSink(Callback):
    def __init__(self, extra_tags: dict[str, str]):
        self.extra_tags = extra_tags
        self.history: list[tuple[int, dict[str, float]]] = []
        self.latest: dict[str, float] = {}
        self.info: dict | None = None
        self.total_steps = 0
        self.pending_eval: dict[str, float] | None = None

    def on_run_start(self, info: RunInfo) -> None:
        self.total_steps = info.total_steps
        self.info = {
            "params": {k: str(v) for k, v in flatten(info.config).items()},
            "tags": {names.TAG_CONFIG_HASH: info.config_hash, "hrm.hardware": info.hardware, **self.extra_tags},
            "num_params": info.num_params,
        }

    def on_train_metrics(self, step, metrics):
        self.history.append((step, dict(metrics)))
        self.latest.update(metrics)

    def on_eval(self, step, metrics):
        self.history.append((step, dict(metrics)))
        self.latest.update(metrics)
        self.pending_eval = metrics

    def _payload(self, step: int, outcome: str | None = None) -> dict:
        payload = {k: v for k, v in self.latest.items() if not k.startswith(names.PERF_PREFIX)}
        payload[STEP] = step
        payload[TOTAL_STEPS] = self.total_steps
        payload[HISTORY] = self.history
        if self.info is not None:
            payload[RUN_INFO] = self.info
            self.info = None
        if outcome:
            payload[OUTCOME] = outcome
        self.history = []
        return payload

    def on_checkpoint(self, step, path, is_best):
        from ray import tune

        tmp = tempfile.mkdtemp(prefix="hrm-ckpt-")
        try:
            shutil.copy2(path, os.path.join(tmp, "state.pt"))
            tune.report(self._payload(step), checkpoint=tune.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.pending_eval = None

    def on_run_end(self, step, outcome, error=None):
        from ray import tune

        if outcome in (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED):
            tune.report(self._payload(step, outcome))
