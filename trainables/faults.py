"""Fault injection for the end-to-end tests; no sweep file can ask for it.

A test sets ``HRM_TEST_FAULTS`` to a JSON object before it starts a sweep. The sweep driver
copies it into every trial's context (Ray's workers may have started before the variable
was set), and each trial applies it to its ``Trainer`` before training:

- ``pid_dir``: the trial writes ``<arm>-<seed>.pid`` there (its pid and step), so that the
  test can SIGKILL its worker; a DDP trial writes the pid of rank 0 only.
- ``inject_nan_arm`` and ``inject_nan_at``: that arm's weights turn NaN after that step
  (on every rank), so its loss does too.
- ``step_delay_s``: every train step of every trial takes that much longer (a test that
  watches trials advance needs them to last).
"""

from __future__ import annotations

import json
import os

ENV = "HRM_TEST_FAULTS"
KEYS = ("pid_dir", "inject_nan_arm", "inject_nan_at", "step_delay_s")


def from_env() -> dict:
    """The faults ``HRM_TEST_FAULTS`` asks for ({} when it is unset)."""
    faults = json.loads(os.environ.get(ENV) or "{}")
    unknown = sorted(set(faults) - set(KEYS))
    if unknown:
        raise ValueError(f"{ENV}: unknown fault(s) {unknown}; known: {', '.join(KEYS)}")
    return faults


def apply(trainer, faults: dict, arm: str | None, write_pid: bool = True) -> None:
    """Arm ``trainer`` with the trial's faults (none: nothing changes)."""
    if faults.get("pid_dir") and write_pid:
        with open(os.path.join(faults["pid_dir"], f"{arm or 'trial'}-{trainer.cfg.seed}.pid"), "w") as f:
            f.write(f"{os.getpid()} {trainer.step}")
    if faults.get("inject_nan_at") and arm == faults.get("inject_nan_arm"):
        _poison_after(trainer, int(faults["inject_nan_at"]))
    if faults.get("step_delay_s"):
        _slow_down(trainer, float(faults["step_delay_s"]))


def _slow_down(trainer, seconds: float) -> None:
    import time

    original = trainer.train_step

    def step(batch):
        time.sleep(seconds)
        return original(batch)

    trainer.train_step = step


def _poison_after(trainer, at_step: int) -> None:
    """Fill the weights with NaN after every train step from ``at_step`` on."""
    import torch

    original = trainer.train_step

    def step(batch):
        sums = original(batch)
        if trainer.step >= at_step:
            with torch.no_grad():
                for p in trainer.params:
                    p.fill_(float("nan"))
        return sums

    trainer.train_step = step
