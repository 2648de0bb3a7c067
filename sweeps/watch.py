"""The driver's watch over a running sweep: Tune's events and the trials' step posts, shown live.

- ``Watch`` feeds a ``SweepProgress`` (``sweeps/progress.py``) from Tune's events (through
  ``ProgressCallback``) and from the light step posts trials make between checkpoints (the
  board, ``trainables/live.py``), and shows it through a view (``sweeps/progress_view.py``):
  a refreshing table on a terminal, one plain line per event in a log. At the end it shows
  the summary table: outcomes per arm, the best trial, the report and the MLflow page.
- ``watching()`` makes a watch the current one while a command runs (``python -m sweeps
  run|resume``); the runner finds it with ``current()``. ``--quiet`` makes none: the driver
  prints what it always did (one start line, then the finish).

``ProgressCallback`` is one of the Tune experiment's callbacks, so Tune pickles it with the
experiment and a resumed sweep gets it back: it holds nothing and forwards each event to the
current watch, if there is one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ray.tune import Callback

from hrm_core import names
from sweeps.progress import RETRYING, RUNNING, SweepProgress, TrialRow, fmt_duration, fmt_value, trial_label
from sweeps.progress_view import make_view
from trainables.trial_log import LOG_NAME
from trainables.tune_sink import OUTCOME, STEP, TOTAL_STEPS

BOARD_EVERY_S = 1.0  # how often the driver asks the board for the trials' steps


class Watch:
    """The driver's live view of one command's sweep: Tune's events and the board, on a view."""

    def __init__(self, view, clock=time.monotonic):
        self.view, self.clock = view, clock
        self.progress: SweepProgress | None = None
        self.board = None
        self.experiment_uri = ""
        self.summary: dict | None = None
        self.report: str | None = None  # the report's HTML, once written
        self.mlflow_url = ""

    # --- set up by the runner ---------------------------------------------------------------
    def begin(self, spec, experiment, planned: int = 0, planned_steps: int = 0) -> None:
        """Before ``Tuner.fit``: the sweep, its Tune experiment (a ``Location``) and its size."""
        from trainables.live import BoardReader

        objective = spec.objective.metrics[0]
        self.progress = SweepProgress(spec.name, objective, planned, planned_steps, self.clock)
        self.experiment_uri = experiment.uri
        self.board = BoardReader(experiment.name, every_s=BOARD_EVERY_S, clock=self.clock)

    def summarised(self, summary: dict, mlflow_url: str) -> None:
        """The sweep ended: the table stops refreshing (the report may take a while), and the
        summary is shown when the command ends."""
        self.summary, self.mlflow_url = summary, mlflow_url
        self.close()

    # --- Tune's events (ProgressCallback) ----------------------------------------------------
    def _log_path(self, trial) -> str:
        """The trial's log as a person finds it: under the invocation's Tune folder."""
        try:
            folder = os.path.basename(trial.path.rstrip("/"))
        except RuntimeError:  # no folder yet (a trial Tune has not set up)
            return ""
        return f"{self.experiment_uri.rstrip('/')}/{folder}/{LOG_NAME}"

    def _row(self, trial) -> TrialRow:
        """The trial's row; made when first seen, at its last reported step (a resumed sweep)."""
        if trial.trial_id not in self.progress.rows:
            self.progress.add(trial.trial_id, trial_label(trial.config))
            last = trial.last_result or {}
            if STEP in last:
                self.progress.advance(trial.trial_id, int(last[STEP]), int(last.get(TOTAL_STEPS) or 0))
                self.progress.score(trial.trial_id, last.get(self.progress.objective))
            if trial.status in ("TERMINATED", "ERROR"):  # ended before this driver (a resumed sweep)
                self.progress.end(trial.trial_id, self._outcome(trial))
        row = self.progress.rows[trial.trial_id]
        row.log = row.log or self._log_path(trial)
        return row

    def trial_started(self, trial) -> None:
        row = self._row(trial)
        if row.status == RUNNING:  # (Tune also says "restored" when a started trial restores)
            return
        restarted = row.status == RETRYING or row.step > 0
        if restarted:  # from its last checkpoint: the step of its last report
            self.progress.restart(trial.trial_id, int((trial.last_result or {}).get(STEP, row.step)))
        self.progress.start(trial.trial_id)
        n = list(self.progress.rows).index(trial.trial_id) + 1
        how = f"resumes at step {row.step}" if restarted else "started"
        self._event(f"{row.label} {how} (trial {n}/{self.progress.count()['planned']}); log: {row.log}")

    def trial_result(self, trial, result: dict) -> None:
        row = self._row(trial)
        step, total = int(result.get(STEP, row.step)), int(result.get(TOTAL_STEPS) or 0)
        self.progress.advance(trial.trial_id, step, total)
        self.progress.score(trial.trial_id, result.get(self.progress.objective))
        if result.get(OUTCOME):
            self._ended(trial, result[OUTCOME])

    def _outcome(self, trial) -> str:
        """How an ended trial ended: its reported outcome; without one, Tune stopped it (early,
        if before its budget; ASHA also stops a trial that reached max_t)."""
        if trial.status == "ERROR":
            return names.OUTCOME_ERROR
        last = trial.last_result or {}
        if last.get(OUTCOME):
            return last[OUTCOME]
        done = last.get(STEP, 0) >= last.get(TOTAL_STEPS, float("inf"))
        return names.OUTCOME_COMPLETED if done else names.OUTCOME_EARLY_STOPPED

    def trial_completed(self, trial) -> None:
        self._row(trial)
        self._ended(trial, self._outcome(trial))

    def trial_failed(self, trial) -> None:
        self._row(trial)
        self._ended(trial, names.OUTCOME_ERROR)

    def trial_retrying(self, trial) -> None:
        row = self._row(trial)
        self.progress.end(trial.trial_id, RETRYING)
        self._event(f"{row.label} failed at step {row.step}; retried from its last checkpoint "
                    f"(log: {row.log})")

    def _event(self, text: str) -> None:
        self.view.event(text, self.progress.elapsed())
        self.view.refresh(self.progress, force=True)  # the table shows what the line says

    def _ended(self, trial, outcome: str) -> None:
        row = self.progress.rows[trial.trial_id]
        if row.done:
            return
        self.progress.end(trial.trial_id, outcome)
        c = self.progress.count()
        value = f" {self.progress.objective}={fmt_value(row.objective)}" if row.objective is not None else ""
        where = f"; log: {row.log}" if outcome == names.OUTCOME_ERROR else ""
        self._event(f"{row.label} {outcome} at step {row.step}/{row.total}{value} "
                    f"({c['done']}/{c['planned']} done, ETA {fmt_duration(self.progress.eta())}){where}")

    def tick(self, trials) -> None:
        """Tune's loop turned (about ten times a second): new trials, board posts, the view."""
        for trial in trials:
            if trial.trial_id not in self.progress.rows:
                self._row(trial)
        for trial_id, (step, total) in self.board.poll().items():
            row = self.progress.rows.get(trial_id)
            if row is not None and not row.done:
                self.progress.advance(trial_id, step, total)
        self.view.refresh(self.progress)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
        self.view.close()

    def show_summary(self) -> None:
        if self.summary is not None:
            self.view.summary(self.progress, self.summary, self.report, self.mlflow_url)


_current: Watch | None = None


def current() -> Watch | None:
    """The watch of the command running in this process (None: quiet, or none asked for)."""
    return _current


@contextmanager
def watching(quiet: bool = False, out=None) -> Iterator[Watch | None]:
    """Show the progress of the sweep this block runs (none when ``quiet``), then its summary."""
    global _current
    if quiet:
        yield None
        return
    watch = Watch(make_view(out))
    _current = watch
    try:
        yield watch
    finally:
        _current = None
        watch.close()
    watch.show_summary()


class ProgressCallback(Callback):
    """Tune's events, forwarded to the current watch (none: nothing happens)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        if _current is not None and _current.progress is not None:
            _current.trial_started(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if _current is not None and _current.progress is not None:
            _current.trial_result(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _current is not None and _current.progress is not None:
            _current.trial_completed(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _current is not None and _current.progress is not None:
            _current.trial_failed(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if _current is not None and _current.progress is not None:
            _current.trial_retrying(trial)

    def on_step_end(self, iteration, trials, **info):
        if _current is not None and _current.progress is not None:
            _current.tick(trials)
