"""How the train loop talks to the outside world: a small callback interface.

The loop knows nothing of Ray or MLflow. Sinks (JSONL file, progress bar, MLflow, the
Ray Tune adapter) implement the hooks they need.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hrm_core import names

__all__ = ["Callback", "CallbackList", "JsonlSink", "ProgressBar", "RunInfo"]


@dataclass
class RunInfo:
    run_dir: str
    config: dict[str, Any]  # the resolved, validated config
    config_hash: str
    total_steps: int
    start_step: int  # > 0 when resumed
    num_params: int
    world_size: int
    hardware: str
    extra: dict[str, Any] = field(default_factory=dict)
    # Builds the run context (hrm_core/observe/run_context.py) on first use of ``context``: only
    # sinks that record it (MLflow, Tune) pay for git, the dataset hash and pip freeze.
    context_fn: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def context(self) -> dict[str, Any]:
        """config, seeds, git, dataset recipe, hardware, pip freeze ({} when not available)."""
        return self.context_fn() if self.context_fn is not None else {}


class Callback:
    """All hooks are optional. ``step`` is always the global optimizer step."""

    def on_run_start(self, info: RunInfo) -> None: ...

    def on_train_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_eval(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, path: str, is_best: bool) -> None: ...

    def on_alert(self, step: int, rule: str, message: str) -> None:
        """A training-health rule fired (``hrm_core.observe.alerts``; once per rule and run)."""

    def on_run_end(self, step: int, outcome: str, error: str | None = None) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def on_run_start(self, info):
        for c in self.callbacks:
            c.on_run_start(info)

    def on_train_metrics(self, step, metrics):
        for c in self.callbacks:
            c.on_train_metrics(step, metrics)

    def on_eval(self, step, metrics):
        for c in self.callbacks:
            c.on_eval(step, metrics)

    def on_checkpoint(self, step, path, is_best):
        for c in self.callbacks:
            c.on_checkpoint(step, path, is_best)

    def on_alert(self, step, rule, message):
        for c in self.callbacks:
            c.on_alert(step, rule, message)

    def on_run_end(self, step, outcome, error=None):
        for c in self.callbacks:
            c.on_run_end(step, outcome, error)


def _clean(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no NaN


class JsonlSink(Callback):
    """``<run_dir>/metrics.jsonl``: one line per logged step, ``{"step": s, key: value}``,
    and one per alert, ``{"step": s, "alert": rule, "message": text}`` (readers that want
    metrics only skip lines with an ``"alert"`` key)."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = None

    def on_run_start(self, info):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if info.start_step > 0 and os.path.exists(self.path):
            self._truncate_after(info.start_step)
        self._file = open(self.path, "a", buffering=1)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint: they will be logged again."""
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def _write(self, step: int, metrics: dict[str, float]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"step": step, **{k: _clean(v) for k, v in metrics.items()}}) + "\n")

    def on_train_metrics(self, step, metrics):
        self._write(step, metrics)

    def on_eval(self, step, metrics):
        self._write(step, metrics)

    def on_alert(self, step, rule, message):
        if self._file is not None:
            self._file.write(json.dumps({"step": step, "alert": rule, "message": message}) + "\n")

    def on_run_end(self, step, outcome, error=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar(Callback):
    """tqdm bar over optimizer steps, with the latest losses and eval accuracy."""

    def __init__(self):
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_run_start(self, info):
        import tqdm

        self.bar = tqdm.tqdm(total=info.total_steps, initial=info.start_step, file=sys.stderr,
                             dynamic_ncols=True)

    def on_train_metrics(self, step, metrics):
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        for key in ("train/lm_loss", "train/exact_accuracy", "train/steps"):
            if key in metrics:
                self.postfix[key.split("/")[1]] = f"{metrics[key]:.3g}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_eval(self, step, metrics):
        for split in (names.VAL, names.EVAL):
            if names.metric(split, names.EXACT_ACCURACY) in metrics:
                self.postfix[f"{split}_exact"] = f"{metrics[names.metric(split, names.EXACT_ACCURACY)]:.3f}"

    def on_run_end(self, step, outcome, error=None):
        if self.bar is not None:
            self.bar.close()
