"""The light side channel from a running trial to the driver's progress display.

Trials reach Tune (and MLflow) only at checkpoints; between them the driver would not know
how far a trial is. So the driver opens a *board*: a small named Ray actor (no CPU of its
own) per Tune experiment. Each 1-process trial looks it up once and posts ``(step, total)``
at most every ``POST_EVERY_S`` seconds, fire and forget: a post never waits for an answer,
never fails the trial, and is not sent at all when no board is open (``--quiet``). The
driver reads the board as it refreshes its display (``sweeps/watch.py``), never waiting on it.

A DDP trial's ranks run in Ray Train workers and do not post: its display advances at its
checkpoints.
"""

from __future__ import annotations

import logging
import time

from hrm_core.observe.callbacks import Callback

POST_EVERY_S = 1.0  # a trial's posts: one remote call a second at most
BOARD_PREFIX = "hrm-progress:"
logger = logging.getLogger(__name__)


def board_name(experiment: str) -> str:
    """The board of Tune experiment ``experiment`` (one name per invocation's experiment)."""
    return f"{BOARD_PREFIX}{experiment}"


class Board:
    """The latest ``(step, total)`` each trial posted; read whole by the driver."""

    def __init__(self):
        self.steps: dict[str, tuple[int, int]] = {}

    def post(self, trial_id: str, step: int, total: int) -> None:
        self.steps[trial_id] = (step, total)

    def read(self) -> dict[str, tuple[int, int]]:
        return self.steps


def open_board(experiment: str):
    """The driver's board for ``experiment`` (a Ray actor handle; Ray must be running)."""
    import ray

    actor = ray.remote(num_cpus=0)(Board)
    return actor.options(name=board_name(experiment), get_if_exists=True).remote()


def close_board(board) -> None:
    import ray

    try:
        ray.kill(board)
    except Exception as err:  # noqa: BLE001 - it dies with the driver anyway
        logger.debug("progress board not killed: %s", err)


class LiveSteps(Callback):
    """Posts the trial's step to its experiment's board (if the driver opened one)."""

    def __init__(self, experiment: str, trial_id: str, every_s: float = POST_EVERY_S, clock=time.monotonic):
        self.experiment, self.trial_id = experiment, trial_id
        self.every_s, self.clock = every_s, clock
        self.board = None
        self.total = 0
        self.last = float("-inf")

    def on_run_start(self, info) -> None:
        import ray

        self.total = info.total_steps
        try:
            self.board = ray.get_actor(board_name(self.experiment))
        except ValueError:  # no board: a quiet driver
            self.board = None
        self._post(info.start_step)

    def on_train_metrics(self, step, metrics) -> None:
        if self.board is not None and self.clock() - self.last >= self.every_s:
            self._post(step)

    def on_run_end(self, step, outcome, error=None) -> None:
        self._post(step)

    def _post(self, step: int) -> None:
        if self.board is None:
            return
        self.last = self.clock()
        try:
            self.board.post.remote(self.trial_id, int(step), int(self.total))
        except Exception as err:  # noqa: BLE001 - progress is never worth a trial
            logger.debug("progress post failed: %s", err)
            self.board = None


class BoardReader:
    """The driver's end: opens the board of ``experiment`` and reads it without ever waiting
    (a read is asked for at most every ``every_s`` and taken once it has arrived)."""

    def __init__(self, experiment: str, every_s: float = POST_EVERY_S, clock=time.monotonic):
        self.board = open_board(experiment)
        self.every_s, self.clock = every_s, clock
        self.pending = None
        self.asked = float("-inf")
        self.steps: dict[str, tuple[int, int]] = {}

    def poll(self) -> dict[str, tuple[int, int]]:
        """The latest ``{trial_id: (step, total)}`` that arrived."""
        import ray

        if self.pending is not None and ray.wait([self.pending], timeout=0)[0]:
            try:
                self.steps = ray.get(self.pending)
            except Exception as err:  # noqa: BLE001 - the display goes on with the checkpoint reports
                logger.debug("progress board unreadable: %s", err)
            self.pending = None
        if self.pending is None and self.clock() - self.asked >= self.every_s:
            self.asked = self.clock()
            self.pending = self.board.read.remote()
        return self.steps

    def close(self) -> None:
        close_board(self.board)
