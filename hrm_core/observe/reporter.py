"""The trainer's one way out. Its records go to the callbacks (rank 0's: the other ranks
report nothing but the run's start and end), then past the alert monitor, whose first
firing of each rule is logged and goes to the callbacks once, as ``on_alert``."""

from __future__ import annotations

from collections.abc import Callable

from hrm_core import names
from hrm_core.config.schema import AlertsConfig
from hrm_core.observe.alerts import AlertMonitor
from hrm_core.observe.callbacks import CallbackList, RunInfo


class Reporter:
    def __init__(self, callbacks: CallbackList, alerts: AlertsConfig, warmup_steps: int, is_main: bool,
                 log: Callable[[str], None]):
        self.callbacks, self.is_main, self.log = callbacks, is_main, log
        self.alerts = AlertMonitor(alerts, warmup_steps, emit=self._alert) if alerts.enabled else None

    def run_start(self, info: RunInfo, resumed: bool) -> None:
        self.callbacks.on_run_start(info)
        if resumed:  # the marker of a resume, at the step it resumed from
            self.train(info.start_step, {names.RESUMED_FROM_STEP: float(info.start_step)})

    def train(self, step: int, metrics: dict[str, float]) -> None:
        if self.is_main:
            self.callbacks.on_train_metrics(step, metrics)
            self._observe(step, metrics)

    def eval(self, step: int, metrics: dict[str, float]) -> None:
        """An eval step's record (eval/* and diag/*); nothing when it is empty."""
        if self.is_main and metrics:
            self.callbacks.on_eval(step, metrics)
            self._observe(step, metrics)

    def checkpoint(self, step: int, path: str, is_best: bool) -> None:
        if self.is_main:
            self.callbacks.on_checkpoint(step, path, is_best)

    def run_end(self, step: int, outcome: str, error: str | None = None) -> None:
        self.callbacks.on_run_end(step, outcome, error)

    def _observe(self, step: int, metrics: dict[str, float]) -> None:
        if self.alerts is not None:
            self.alerts.observe(step, metrics)

    def _alert(self, step: int, rule: str, message: str) -> None:
        self.log(f"alert {rule} at step {step}: {message}")
        self.callbacks.on_alert(step, rule, message)
