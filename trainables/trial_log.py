"""Each trial's own log: ``trial.log`` in the trial's folder of the invocation's Tune storage.

It holds the trial's overrides and where it runs, the trainer's own messages (hardware,
resume, curriculum stages, alerts, divergence), a line per eval and checkpoint, a progress
line at most every ``PROGRESS_EVERY_S``, the log records of the trial's process while it runs,
and how the attempt ended (with the traceback of an error). A retried or resumed trial
appends to the same file. On a remote storage (``s3://``) the file is written in the trial's
local folder and uploaded when the attempt ends.

The driver prints where each trial's log is and attaches it to the trial's MLflow run when
the trial ends (``sweeps/trial_logs.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from hrm_core import names
from hrm_core.observe.callbacks import Callback

LOG_NAME = "trial.log"
PROGRESS_EVERY_S = 30.0
# metrics a progress line shows, when the step has them
# "val/", "eval/": the eval lines show these (val: every eval; eval, the test split: the last), not diag/*
EVAL = (names.metric(names.VAL, ""), names.metric(names.EVAL, ""))
PROGRESS_KEYS = (names.TRAIN_LM_LOSS, names.metric(names.TRAIN, names.EXACT_ACCURACY))


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _fmt(metrics: dict[str, float], keys=None) -> str:
    keys = [k for k in (keys or sorted(metrics)) if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys)


class TrialLog(Callback):
    """The log file of one attempt of a trial, and a callback that writes the train loop's events."""

    def __init__(self, path: str, every_s: float = PROGRESS_EVERY_S, clock=time.monotonic):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.file = open(path, "a", buffering=1)
        self.handler = logging.StreamHandler(self.file)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                                    "%Y-%m-%d %H:%M:%S"))
        self.every_s, self.clock = every_s, clock
        self.last = clock()
        self.step = 0
        self.total = 0

    def line(self, message: str) -> None:
        if not self.file.closed:
            self.file.write(f"{_stamp()} {message}\n")

    def on_run_start(self, info) -> None:
        self.step, self.total = info.start_step, info.total_steps
        start = f"resumes at step {info.start_step}" if info.start_step else "starts"
        self.line(f"run {start} of {info.total_steps}")

    def on_train_metrics(self, step, metrics) -> None:
        self.step = step
        if self.clock() - self.last >= self.every_s:
            self.last = self.clock()
            self.line(f"step {step}/{self.total} {_fmt(metrics, PROGRESS_KEYS)}")

    def on_eval(self, step, metrics) -> None:
        self.line(f"eval at step {step}: {_fmt(metrics, sorted(k for k in metrics if k.startswith(EVAL)))}")

    def on_checkpoint(self, step, path, is_best) -> None:
        self.line(f"checkpoint at step {step}{' (best so far)' if is_best else ''}")

    def on_alert(self, step, rule, message) -> None:
        self.line(f"alert {rule} at step {step}: {message}")

    def on_run_end(self, step, outcome, error=None) -> None:
        self.step = step
        self.line(f"run ends at step {step}/{self.total}: {outcome}{f' ({error})' if error else ''}")

    def close(self) -> None:
        self.handler.close()
        self.file.close()


def _where(storage, local_dir: str) -> tuple[str, str | None]:
    """(the file to write, the remote path to upload it to, if any). An existing remote log
    (an earlier attempt's) is fetched first, so the attempt appends to it."""
    from pyarrow import fs as pafs

    remote = f"{storage.trial_fs_path}/{LOG_NAME}"
    if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
        return remote, None
    local = os.path.join(local_dir, LOG_NAME)
    try:
        if storage.storage_filesystem.get_file_info(remote).type == pafs.FileType.File:
            pafs.copy_files(remote, local, source_filesystem=storage.storage_filesystem)
    except OSError:
        pass  # no earlier log: this attempt starts it
    return local, remote


@contextmanager
def trial_log(header: str) -> Iterator[TrialLog]:
    """The running Tune trial's log: opened with ``header``, fed the process's log records
    while the block runs, closed (and uploaded to a remote storage) however the block ends."""
    from pyarrow import fs as pafs
    from ray import tune

    ctx = tune.get_context()
    storage = ctx.get_storage()
    path, remote = _where(storage, ctx.get_trial_dir())
    log = TrialLog(path)
    log.line(f"trial {ctx.get_trial_name()} on {socket.gethostname()} (pid {os.getpid()}): {header}")
    root = logging.getLogger()
    root.addHandler(log.handler)
    try:
        yield log
        log.line("trial ends")
    except SystemExit:  # Tune stopped it (a scheduler's early stop, or the sweep's end)
        log.line(f"stopped by Tune at step {log.step}/{log.total}")
        raise
    except BaseException as err:
        log.line(f"trial fails at step {log.step}/{log.total}: {type(err).__name__}: {err}\n"
                 + "".join(traceback.format_exception(err)))
        raise
    finally:
        root.removeHandler(log.handler)
        log.close()
        if remote is not None:
            try:
                pafs.copy_files(path, remote, destination_filesystem=storage.storage_filesystem)
            except OSError as err:
                logging.getLogger(__name__).warning("could not upload %s to %s: %s", path, remote, err)
