"""The driver's MLflow writer: one child run per trial under the sweep's parent run.

Runs in the driver process only, so the SQLite store has a single writer. A retried or
resumed trial is found again by its tags and continues its own run. A run is named for a
person: ``<arm>/seed<k>`` in an ablation, its sampled params (shortened) in a search, made
unique within the invocation (``#2`` for a pair an extension reruns); the Tune trial id is
its ``hrm.trial_id`` tag. It carries MLflow's source tags, its dataset as an input, and
every metric the trial sent (``perf/*`` and ``system/*`` too). Every write goes through
a ``RunWriter`` (hrm_core/tracking/writer.py); with a tracking server, through a
``SpoolingClient`` (hrm_core/tracking/spool.py): a server restart mid-sweep spools the writes
to disk and replays them in order, so nothing is lost or logged twice.
"""

from __future__ import annotations

import json
import logging
import time

from ray.tune import Callback

from hrm_core import names
from hrm_core.tracking.client import get_client
from hrm_core.tracking.probe import bound_http_retries
from hrm_core.tracking.source import source_tags
from hrm_core.tracking.spool import SpoolingClient, spool_file
from hrm_core.tracking.uris import is_http
from hrm_core.tracking.writer import RunWriter
from sweeps.storage import DEFAULT_STORAGE
from sweeps.trial_logs import attach_trial_log
from trainables.trial_log import LOG_NAME
from trainables.tune_sink import ALERTS, HISTORY, OUTCOME, RUN_INFO, STEP, TOTAL_STEPS

logger = logging.getLogger(__name__)


def find_child_run(client, experiment_id: str, parent_id: str, trial_id: str):
    invocation = f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'"
    trial = f"tags.`{names.TAG_TRIAL_ID}` = '{trial_id}'"
    runs = client.search_runs([experiment_id], filter_string=f"{invocation} and {trial}", max_results=5)
    return runs[0] if runs else None


class MlflowTrialLogger(Callback):
    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_id: str,
        sweep: str,
        common_tags: dict[str, str],
        spool_dir: str | None = None,
    ):
        self.uri, self.experiment_id, self.parent_id, self.sweep = uri, experiment_id, parent_id, sweep
        self.common_tags = common_tags
        # where writes wait while the tracking server is away: next to the Tune results (a
        # local folder; the default one when the Tune storage is remote)
        self.spool_dir = spool_dir
        self._client = None
        self._runs: dict[str, str] = {}
        self._params_logged: set[str] = set()
        self._ended: set[str] = set()
        self._logged_upto: dict[str, int] = {}
        self._names: set[str] | None = None  # run names the invocation holds (read once)
        self._source: dict[str, str] | None = None  # MLflow's source tags of this driver

    def __getstate__(self):  # Tune checkpoints its callbacks: keep the client out of the pickle
        state = dict(self.__dict__)
        # a restored logger reads the names again and tags the driver that resumes
        state.update(_client=None, _names=None, _source=None)
        return state

    @property
    def client(self):
        if self._client is None:
            if is_http(self.uri):
                bound_http_retries()  # a down server costs seconds, then the spool takes over
            # (getattr: callbacks pickled by an older version have no spool_dir)
            folder = getattr(self, "spool_dir", None) or DEFAULT_STORAGE
            spool = spool_file(folder, self.sweep, self.parent_id)
            self._client = SpoolingClient(get_client(self.uri), spool)
        return self._client

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        # look up, then create: repeated as a whole while the server is away, so a create whose
        # answer was lost is found by the next lookup instead of made twice
        run_id = self.client.retrying(lambda: self._find_or_create(trial))
        self._runs[trial.trial_id] = run_id
        return run_id

    def _writer(self, trial) -> RunWriter:
        return RunWriter(self.client, self.run_id(trial))

    def _find_or_create(self, trial) -> str:
        existing = find_child_run(self.client, self.experiment_id, self.parent_id, trial.trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            if existing.info.status != "RUNNING" and not existing.data.tags.get(names.TAG_OUTCOME):
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        trial_cfg = trial.config.get("__trial") or {}
        tags = {
            **self.common_tags,
            names.TAG_RUN_KIND: names.RUN_KIND_TRIAL,
            names.TAG_SWEEP: self.sweep,
            names.TAG_INVOCATION: self.parent_id,
            names.TAG_MLFLOW_PARENT: self.parent_id,
            names.TAG_TRIAL_ID: trial.trial_id,
            names.TAG_ARM: str(trial_cfg.get("arm") or _describe(trial.config)),
        }
        stage = (trial.config.get("__hrm") or {}).get("stage")  # a search's confirmation stage
        if stage:
            tags[names.TAG_STAGE] = stage
        if getattr(self, "_source", None) is None:  # (getattr: a logger pickled by an older version)
            self._source = source_tags()
        tags = {**self._source, **tags}
        run_name = self._unique_name(_run_name(trial.config))
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def _unique_name(self, name: str) -> str:
        """``name``, unless a run of the invocation holds it already (then ``name #2``, ...)."""
        if getattr(self, "_names", None) is None:
            invocation = f"tags.`{names.TAG_INVOCATION}` = '{self.parent_id}'"
            runs = self.client.search_runs([self.experiment_id], filter_string=invocation, max_results=50000)
            self._names = {r.info.run_name for r in runs}
        name = names.unique_run_name(name, self._names)
        self._names.add(name)
        return name

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)
        self._logged_upto.pop(trial.trial_id, None)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.run_id(trial)
        self._logged_upto.pop(trial.trial_id, None)

    def _last_logged_step(self, trial) -> int:
        """After a (re)start, the last step this run already holds: Tune may restore an
        older checkpoint than the last one whose metrics reached MLflow (its state is
        snapshotted periodically), and the replayed steps must not be logged twice."""
        if trial.trial_id not in self._logged_upto:
            history = self.client.get_metric_history(self.run_id(trial), names.TRAIN_LM_LOSS)
            self._logged_upto[trial.trial_id] = max((m.step for m in history), default=0)
        return self._logged_upto[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        writer = self._writer(trial)
        run_info = result.get(RUN_INFO)
        if isinstance(run_info, str):  # sent as JSON text (see TuneSink._payload)
            run_info = json.loads(run_info)
        if run_info:
            self._log_run_info(trial, writer, run_info)
        ts = int(time.time() * 1000)
        upto = self._last_logged_step(trial)
        # resumed_from_step marks the restart itself, at the restored step: always new
        history = [(step, values) for step, values in result.get(HISTORY) or []
                   if step > upto or names.RESUMED_FROM_STEP in values]
        for step, values in history:  # perf/* and system/* too: timings, never compared bitwise
            writer.add_metrics(step, values, ts)
        writer.flush()
        if history:
            self._logged_upto[trial.trial_id] = max(upto, *(step for step, _ in history))
        if alerts := result.get(ALERTS):  # each rule once per run: see hrm_core/observe/alerts.py
            writer.set_alerts(alerts)
        if result.get(OUTCOME):
            self._end(trial, result[OUTCOME])
        # Logged: Tune's own records of the trial (last_result, experiment snapshots,
        # result.json) need not carry the step history and the run info.
        for key in (HISTORY, RUN_INFO, ALERTS):
            result.pop(key, None)

    def _log_run_info(self, trial, writer: RunWriter, run_info: dict) -> None:
        """Tags each attempt; params the run does not hold yet; the attempt's run context."""
        params = {}
        if trial.trial_id not in self._params_logged:
            existing = self.client.get_run(writer.run_id).data.params
            params = {k: v for k, v in {**run_info["params"], "num_params": run_info["num_params"]}.items()
                      if k not in existing}
            self._params_logged.add(trial.trial_id)
        writer.log_params(params, {k: v for k, v in run_info["tags"].items() if v != ""})
        if run_info.get("context"):  # once per attempt: run_context.json (+ git_diff.patch)
            context = run_info["context"]
            context = json.loads(context) if isinstance(context, str) else context
            self._best_effort(lambda: writer.log_context(context), names.RUN_CONTEXT_ARTIFACT, writer)
            # the dataset input (the runs table's Dataset column): MLflow keeps one per run
            self._best_effort(lambda: writer.log_dataset(context.get("dataset")), "the dataset input", writer)

    def _best_effort(self, write, what: str, writer: RunWriter) -> None:
        """Artifacts and inputs are not spooled: retried briefly while a server is away, then
        skipped with a warning (the run's metrics and tags do not depend on them)."""
        try:
            self.client.retrying(write, wait_s=60)
        except Exception as err:  # noqa: BLE001 - never fail the sweep for a missing artifact
            logger.warning("could not log %s for run %s: %s", what, writer.run_id, err)

    def _end(self, trial, outcome: str) -> None:
        if trial.trial_id in self._ended:
            return
        writer = self._writer(trial)
        run = self.client.get_run(writer.run_id)
        if run.info.status != "RUNNING" and run.data.tags.get(names.TAG_OUTCOME):
            # Ended before a driver restart that Tune's last snapshot did not see: keep it.
            self._ended.add(trial.trial_id)
            return
        # alerts.enabled: the rules were checked, so "" = healthy
        writer.end(outcome, alerts_checked=run.data.params.get("alerts.enabled") == "True")
        self._ended.add(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # Tune registers a checkpoint only after the trial's save task returns; a worker lost
        # before that restarts from the previous one. The tag names the one it would resume from.
        self._writer(trial).set_tag(names.TAG_CHECKPOINT, checkpoint.path)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # A trial that ends without reporting its outcome was stopped by the scheduler:
        # early if before its budget (ASHA also stops a trial that reached max_t).
        last = trial.last_result or {}
        done = last.get(STEP, 0) >= last.get(TOTAL_STEPS, float("inf"))
        self._end(trial, names.OUTCOME_COMPLETED if done else names.OUTCOME_EARLY_STOPPED)
        self._attach_log(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.error_file:
            self._writer(trial).set_tag(names.TAG_ERROR_FILE, trial.error_file)
        self._end(trial, names.OUTCOME_ERROR)
        self._attach_log(trial)

    def _attach_log(self, trial) -> None:
        """The trial's own log, from Tune's storage (sweeps/trial_logs.py)."""
        writer = self._writer(trial)
        self._best_effort(lambda: attach_trial_log(self.client, writer.run_id, trial), LOG_NAME, writer)

    def on_experiment_end(self, trials, **info):
        # writes spooled during an outage reach the server before the sweep is summarised
        if self._client is not None:
            self._client.flush()


def _run_name(config: dict) -> str:
    """``<arm>/seed<k>`` for an ablation trial, its sampled params (shortened) for a search's."""
    trial_cfg = config.get("__trial") or {}
    if trial_cfg.get("arm"):
        return names.ablation_run_name(trial_cfg["arm"], trial_cfg.get("seed", ""))
    return names.search_run_name({k: v for k, v in config.items() if not k.startswith("__")})


def _describe(config: dict) -> str:
    parts = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in sorted(config.items()) if not k.startswith("__")]
    return ",".join(parts) or "default"
