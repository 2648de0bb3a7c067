"""The train loop's callbacks adapted to Ray Tune.

Per-step metrics are buffered and travel with each checkpoint in one ``tune.report``;
the driver writes them to MLflow (one writer, so SQLite never sees two). A trial
restarted from its last checkpoint re-sends only what came after it: no (step, key) is
logged twice.

Tune's function API blocks the thread that calls ``tune.report`` until the driver has
processed the result and asks for the next one (MLflow writes, scheduler, checkpoint
registration). ``TuneSink(background=True)`` makes those calls from a reporter thread,
in order, so the train loop goes on meanwhile; the run's end waits for every report.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading

from hrm_core import names
from hrm_core.config.schema import flatten
from hrm_core.observe.callbacks import Callback, RunInfo
from hrm_core.observe.run_context import to_json
from hrm_core.observe.system import SystemSampler

# Keys of the dict each tune.report carries, besides the flat latest metrics.
HISTORY = "hrm_history"  # [(step, {metric: value})] since the last report
RUN_INFO = "hrm_run_info"  # params, tags and the run context, sent with the first report of an attempt
TOTAL_STEPS = "hrm_total_steps"
OUTCOME = "hrm_outcome"
# [(step, rule, message)] alerts fired since the last report (hrm_core/observe/alerts.py)
ALERTS = "hrm_alerts"
STEP = "step"  # ASHA's time attribute: the global optimizer step
# The sweep objective's latest value (NaN before it is first logged): which checkpoints Tune keeps
# as the best (sweeps/tuner.py: checkpoint_config)
SCORE = "hrm_checkpoint_score"


class _Reporter:
    """One thread that makes the ``tune.report`` calls, in the order they were submitted.

    When Tune stops the trial (e.g. ASHA), ``tune.report`` raises ``SystemExit`` in the
    reporting thread; the train loop learns it at its next ``check`` and exits the same way."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="hrm-tune-report", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from ray import tune

        while True:
            item = self.queue.get()
            if item is None:  # the sink is done with this thread
                self.queue.task_done()
                return
            payload, ckpt_dir = item
            try:
                if not (self.stopped or self.error):
                    checkpoint = tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
                    tune.report(payload, checkpoint=checkpoint)
            except SystemExit:
                self.stopped = True
            except BaseException as err:  # noqa: BLE001 - re-raised in the train loop
                self.error = err
            finally:
                if ckpt_dir:
                    shutil.rmtree(ckpt_dir, ignore_errors=True)
                self.queue.task_done()

    def check(self) -> None:
        if self.stopped:
            self.queue.put(None)
            raise SystemExit(0)
        if self.error is not None:
            raise self.error

    def submit(self, payload: dict, ckpt_dir: str | None = None) -> None:
        self.check()
        self.queue.put((payload, ckpt_dir))

    def drain(self) -> None:
        """Wait for every submitted report, then end the thread."""
        self.queue.join()
        self.queue.put(None)


def _snapshot(path: str) -> str:
    """A folder holding the checkpoint as ``state.pt``: a hard link (instant; the trainer
    may prune its own name meanwhile) or, across file systems, a copy."""
    tmp = tempfile.mkdtemp(prefix="hrm-ckpt-")
    try:
        os.link(path, os.path.join(tmp, "state.pt"))
    except OSError:
        shutil.copy2(path, os.path.join(tmp, "state.pt"))
    return tmp


class TuneSink(Callback):
    def __init__(self, extra_tags: dict[str, str], background: bool = False, score_metric: str | None = None):
        self.reporter = _Reporter() if background else None
        self.score_metric = score_metric
        # system/* now and then (the trial's GPUs: hrm.gpu_ids), in the history the driver logs
        self.system = SystemSampler(extra_tags.get(names.TAG_GPU_IDS))
        self.extra_tags = extra_tags
        self.history: list[tuple[int, dict[str, float]]] = []
        self.latest: dict[str, float] = {}
        self.info: dict | None = None
        self.total_steps = 0
        self.pending_eval: dict[str, float] | None = None
        self.alerts: list[tuple[int, str, str]] = []

    def on_run_start(self, info: RunInfo) -> None:
        self.total_steps = info.total_steps
        self.info = {
            "params": {k: str(v) for k, v in flatten(info.config).items()},
            "tags": {
                names.TAG_CONFIG_HASH: info.config_hash, names.TAG_HARDWARE: info.hardware, **self.extra_tags,
            },
            "num_params": info.num_params,
            # the run context (hrm_core/observe/run_context.py) as JSON text: Tune never flattens it
            "context": to_json(info.context) if info.context else "",
        }

    def on_train_metrics(self, step, metrics):
        if self.reporter is not None:
            self.reporter.check()  # stopped by Tune, or a report failed
        self.history.append((step, {**metrics, **self.system.poll()}))
        self.latest.update(metrics)

    def on_eval(self, step, metrics):
        self.history.append((step, dict(metrics)))
        self.latest.update(metrics)
        self.pending_eval = metrics

    def _payload(self, step: int, outcome: str | None = None) -> dict:
        payload = {k: v for k, v in self.latest.items() if not k.startswith(names.PERF_PREFIX)}
        payload[STEP] = step
        payload[TOTAL_STEPS] = self.total_steps
        if self.score_metric:
            score = names.watched(self.latest, self.score_metric)  # its val/* twin when logged: never test
            payload[SCORE] = float(self.latest.get(score, float("nan")))
        payload[HISTORY] = self.history
        payload[ALERTS] = self.alerts
        self.alerts = []
        if self.info is not None:  # JSON text: Tune would flatten hundreds of params into its result
            payload[RUN_INFO] = json.dumps(self.info)
            self.info = None
        if outcome:
            payload[OUTCOME] = outcome
        self.history = []
        return payload

    def on_alert(self, step, rule, message):
        self.alerts.append((step, rule, message))  # travels with the next report (diverged: the last)

    def on_checkpoint(self, step, path, is_best):
        from ray import tune

        tmp = _snapshot(path)
        self.pending_eval = None
        if self.reporter is not None:
            self.reporter.submit(self._payload(step), tmp)  # the reporter removes tmp
            return
        try:
            tune.report(self._payload(step), checkpoint=tune.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def on_run_end(self, step, outcome, error=None):
        from ray import tune

        finished = outcome in (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED)
        final = self._payload(step, outcome) if finished else None
        if self.reporter is None:
            if final is not None:
                tune.report(final)
            return
        if final is not None and not (self.reporter.stopped or self.reporter.error):
            self.reporter.queue.put((final, None))
        self.reporter.drain()  # every report reaches Tune before the trial function returns
        if error is None:
            self.reporter.check()
