"""Live progress of a running sweep, as the driver knows it: per trial its label (arm and
seed, or a search's sampled params shortened), step / total, latest objective, outcome and log
file; for the sweep its counts, elapsed time and ETA.

Pure (no Ray, no terminal): ``sweeps/watch.py`` feeds it from Tune's events and the trials'
step posts, ``sweeps/progress_view.py`` shows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hrm_core import names

PENDING, RUNNING, RETRYING = "pending", "running", "retrying"
OUTCOMES = (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED, names.OUTCOME_EARLY_STOPPED,
            names.OUTCOME_ERROR)


def trial_label(config: dict) -> str:
    """How a person tells trials apart: ``<arm>/seed<k>``, or a search's sampled params, shortened."""
    entry = config.get("__trial") or {}
    if entry.get("arm"):
        return names.ablation_run_name(entry["arm"], entry.get("seed", ""))
    return names.search_run_name({k: v for k, v in config.items() if not k.startswith("__")})


@dataclass
class TrialRow:
    label: str
    log: str = ""  # where the trial's own log is (``trainables/trial_log.py``)
    status: str = PENDING  # pending, running, retrying, or an outcome
    step: int = 0
    total: int = 0
    objective: float | None = None
    first_step: int | None = None  # the step it was first seen at (a resumed trial's restore point)
    started: float | None = None
    ended: float | None = None

    @property
    def done(self) -> bool:
        return self.status in OUTCOMES


@dataclass
class SweepProgress:
    """An invocation's trials as the driver sees them, in the order Tune made them."""

    name: str
    objective: str  # the metric shown (the sweep's first objective)
    planned: int = 0  # trials the invocation will run (0: as many as Tune knows)
    default_total: int = 0  # a trial's steps before it says (the sweep's planned steps)
    clock: Callable[[], float] = time.monotonic
    rows: dict[str, TrialRow] = field(default_factory=dict)
    began: float = 0.0
    first_start: float | None = None

    def __post_init__(self):
        self.began = self.clock()

    def add(self, trial_id: str, label: str, log: str = "") -> TrialRow:
        if trial_id not in self.rows:
            self.rows[trial_id] = TrialRow(label, log, total=self.default_total)
        return self.rows[trial_id]

    def start(self, trial_id: str) -> None:
        row = self.rows[trial_id]
        row.status, row.ended = RUNNING, None
        if row.started is None:
            row.started, row.first_step = self.clock(), row.step
        if self.first_start is None:
            self.first_start = row.started

    def advance(self, trial_id: str, step: int, total: int | None = None) -> None:
        """A trial's step (and total), from a report or a post: only forward (a post between
        checkpoints may be newer than the next report's step is old)."""
        row = self.rows.get(trial_id)
        if row is not None:
            row.step, row.total = max(step, row.step), total or row.total

    def restart(self, trial_id: str, step: int) -> None:
        """A retried or resumed trial starts again at its checkpoint's ``step``."""
        self.rows[trial_id].step = step

    def score(self, trial_id: str, value) -> None:
        if trial_id in self.rows and isinstance(value, int | float):
            self.rows[trial_id].objective = float(value)

    def end(self, trial_id: str, status: str) -> None:
        row = self.rows[trial_id]
        row.status = status
        row.ended = self.clock() if status in OUTCOMES else None

    # --- the sweep as a whole ---------------------------------------------------------------
    def count(self) -> dict[str, int]:
        done = sum(r.done for r in self.rows.values())
        running = sum(r.status in (RUNNING, RETRYING) for r in self.rows.values())
        return {"done": done, "running": running, "planned": max(self.planned, len(self.rows))}

    def elapsed(self) -> float:
        return self.clock() - self.began

    def eta(self) -> float | None:
        """Seconds to go: the steps left (trials not yet made count a known trial's steps) at the
        rate steps were done since the first trial started; None before a step is done."""
        rows = list(self.rows.values())
        done = sum(max(0, r.step - r.first_step) for r in rows if r.first_step is not None)
        if self.first_start is None or done <= 0:
            return None
        totals = [r.total for r in rows if r.total] or [self.default_total]
        left = sum(max(0, (r.total or totals[0]) - r.step) for r in rows if not r.done)
        left += max(0, self.planned - len(rows)) * max(totals)
        return left * (self.clock() - self.first_start) / done


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
