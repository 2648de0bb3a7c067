"""Compute accounting: the train-step FLOPs of the model summary times the steps taken,
and the wall and device seconds of the train loop.

What the ``ComputeMeter`` counts (logged under ``compute/*``, see ``hrm_core.names``):

- ``compute/train_flops``: for every optimizer step taken, the summary's
  ``count_flops(arch, vocab_size, seq_len, global_batch_size, training=True).train_step``
  of the architecture of the curriculum stage that ran that step (stages change
  ``halt_max_steps`` / ``H_cycles`` / ``L_cycles``), summed. Exact integer arithmetic: a
  logged value is always the sum of the per-step figures of the steps up to that step
  (MLflow stores float64, so above 2**53 ~ 9e15 the logged value is rounded to 16
  significant digits). Evaluation FLOPs are not counted: the figure is training compute.
- ``compute/flops_per_step``: the per-step figure of the stage of the logged step.
- ``compute/wall_seconds``: time spent inside ``Trainer.fit``'s loop (training and
  evaluation, checkpoints included); ``compute/device_seconds`` = that x the trial's
  number of devices (the world size: one per DDP rank).
- ``compute/planned_steps`` / ``compute/planned_train_flops``: the schedule's total
  steps and the FLOPs of running all of them, logged once, with the run's first logged
  step; the sweep uses them for the compute early stopping saved.

``Throughput`` gives ``perf/samples_per_s``: the samples trained since the last logged step,
per second (a timing too).

Resume: the totals are part of the checkpoint, so a resumed trial continues its counts.
Work done after the last checkpoint and lost in a crash is not counted at all (it is
redone, and counted once, after the resume); the counts measure the run as recorded, not
every cycle the hardware burnt.

Wall and device seconds are timings: they are never compared bitwise (``names.is_timing``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hrm_core import names

__all__ = ["ComputeMeter", "Throughput", "steps_per_stage", "sweep_totals"]

if TYPE_CHECKING:  # the meter needs the model summary (torch); sweep_totals does not
    from hrm_core.config.schema import ArchConfig


def steps_per_stage(stage_ends: tuple[int, ...] | list[int]) -> list[int]:
    """Optimizer steps each stage runs, from the schedule's stage ends."""
    out, prev = [], 0
    for end in stage_ends:
        out.append(max(0, end - prev))
        prev = max(prev, end)
    return out


class Throughput:
    """``perf/samples_per_s``: the samples trained since the last logged step, per second."""

    def __init__(self, global_batch_size: int):
        self.batch = global_batch_size
        self.start()

    def start(self) -> None:
        self._t0, self._samples = time.perf_counter(), 0

    def add_step(self) -> None:
        self._samples += self.batch

    def metrics(self) -> dict[str, float]:
        """The rate since the last call (or ``start``); restarts the count."""
        rate = self._samples / max(time.perf_counter() - self._t0, 1e-9)
        self.start()
        return {names.PERF_SAMPLES_PER_S: rate}


class ComputeMeter:
    """Counts training FLOPs and train-loop seconds; checkpointed with the trainer."""

    def __init__(self, vocab_size: int, seq_len: int, global_batch_size: int, world_size: int = 1):
        self.vocab_size, self.seq_len, self.batch = vocab_size, seq_len, global_batch_size
        self.world_size = world_size
        self.train_flops = 0  # exact: Python int
        self.steps = 0
        self.flops_per_step = 0
        self._wall_base = 0.0  # seconds from earlier attempts (restored from the checkpoint)
        self._device_base = 0.0  # their device-seconds (an attempt may have had another world size)
        self._t0: float | None = None
        self._per_stage: dict[Any, int] = {}
        self.planned_steps = 0
        self.planned_flops = 0
        self._planned_sent = False
        self._plan: tuple[list, list] = ([], [])  # each stage's arch and last step (see plan)

    # --- figures ----------------------------------------------------------------------
    def step_flops(self, arch: ArchConfig, key: Any = None) -> int:
        """The summary's train-step FLOPs of ``arch`` (cached under ``key``, e.g. the stage)."""
        key = key if key is not None else arch.model_dump_json()
        if key not in self._per_stage:
            from hrm_core.observe.flops import count_flops

            flops = count_flops(arch, self.vocab_size, self.seq_len, self.batch, training=True)
            self._per_stage[key] = flops.train_step
        return self._per_stage[key]

    def plan(self, archs: list[ArchConfig], stage_ends: tuple[int, ...] | list[int]) -> None:
        """The schedule: each stage's arch and last step. Sets the planned steps and FLOPs."""
        counts = steps_per_stage(stage_ends)
        self.planned_steps = sum(counts)
        self.planned_flops = sum(n * self.step_flops(a, ("stage", i))
                                 for i, (a, n) in enumerate(zip(archs, counts, strict=True)))
        self._plan = (list(archs), list(stage_ends))

    def flops_upto(self, step: int) -> int:
        """FLOPs of steps 1..step by the plan (rebuilds the count from a checkpoint without one)."""
        archs, ends = self._plan
        total, prev = 0, 0
        for i, (arch, end) in enumerate(zip(archs, ends, strict=True)):
            n = max(0, min(step, end) - prev)
            total += n * self.step_flops(arch, ("stage", i))
            prev = max(prev, end)
        return total

    # --- counting ---------------------------------------------------------------------
    def start(self) -> None:
        """The train loop starts (or resumes): wall time counts from now."""
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._wall_base, self._device_base = self.wall_seconds, self.device_seconds
        self._t0 = None

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0 if self._t0 is not None else 0.0

    @property
    def wall_seconds(self) -> float:
        return self._wall_base + self._elapsed()

    @property
    def device_seconds(self) -> float:
        return self._device_base + self._elapsed() * self.world_size

    def add_step(self, arch: ArchConfig, key: Any = None) -> dict[str, float]:
        """Count one optimizer step of ``arch``; returns the compute metrics after it."""
        self.flops_per_step = self.step_flops(arch, ("run", key) if key is not None else None)
        self.train_flops += self.flops_per_step
        self.steps += 1
        return self.metrics()

    def metrics(self) -> dict[str, float]:
        """``compute/*`` at this moment (the planned figures: ``planned_metrics``)."""
        elapsed = self._elapsed()
        return {
            names.COMPUTE_TRAIN_FLOPS: float(self.train_flops),
            names.COMPUTE_FLOPS_PER_STEP: float(self.flops_per_step),
            names.COMPUTE_WALL_SECONDS: self._wall_base + elapsed,
            names.COMPUTE_DEVICE_SECONDS: self._device_base + elapsed * self.world_size,
        }

    def planned_metrics(self) -> dict[str, float]:
        """The planned figures, once per run: with its first logged step (the flag is in the
        checkpoint, so a resumed run does not log them again; a run restarted from scratch does)."""
        if self._planned_sent or not self.planned_steps:
            return {}
        self._planned_sent = True
        return {names.COMPUTE_PLANNED_STEPS: float(self.planned_steps),
                names.COMPUTE_PLANNED_FLOPS: float(self.planned_flops)}

    # --- checkpoint -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"train_flops": self.train_flops, "steps": self.steps, "flops_per_step": self.flops_per_step,
                "wall_seconds": self.wall_seconds, "device_seconds": self.device_seconds,
                "planned_logged": self._planned_sent}

    def load_state_dict(self, state: dict[str, Any] | None, step: int) -> None:
        """Continue the counts of a checkpoint. A checkpoint written before compute
        accounting existed holds none: the FLOPs of its ``step`` steps are rebuilt from the
        plan, its seconds are unknown (counted from zero)."""
        if state is None:
            self.train_flops, self.steps = self.flops_upto(step), step
            self._wall_base, self._device_base = 0.0, 0.0
            return
        self.train_flops, self.steps = int(state["train_flops"]), int(state["steps"])
        self.flops_per_step = int(state.get("flops_per_step", 0))
        self._wall_base = float(state["wall_seconds"])
        self._device_base = float(state.get("device_seconds", self._wall_base * self.world_size))
        self._planned_sent = bool(state.get("planned_logged", False))


def sweep_totals(runs: Iterable[tuple[Mapping[str, float], Mapping[str, str]]]) -> dict[str, float]:
    """The parent run's compute totals from its trials' (last metrics, tags).

    ``compute/sweep_train_flops`` and ``compute/sweep_device_seconds``: sums of the trials'
    last (= cumulative) ``compute/train_flops`` and ``compute/device_seconds``;
    ``compute/early_stopping_saved_flops``: for trials with outcome early_stopped, the
    planned FLOPs (``compute/planned_train_flops``, else planned steps x flops per step)
    minus the FLOPs taken. Empty when no trial logged compute/* (runs from before it).
    """
    flops = device = saved = 0.0
    seen = False
    for metrics, tags in runs:
        if names.COMPUTE_TRAIN_FLOPS not in metrics:
            continue
        seen = True
        taken = float(metrics[names.COMPUTE_TRAIN_FLOPS])
        flops += taken
        device += float(metrics.get(names.COMPUTE_DEVICE_SECONDS, 0.0))
        if tags.get(names.TAG_OUTCOME) == names.OUTCOME_EARLY_STOPPED:
            planned = metrics.get(names.COMPUTE_PLANNED_FLOPS)
            if planned is None and names.COMPUTE_PLANNED_STEPS in metrics:
                per_step = metrics.get(names.COMPUTE_FLOPS_PER_STEP, 0.0)
                planned = metrics[names.COMPUTE_PLANNED_STEPS] * per_step
            saved += max(0.0, float(planned) - taken) if planned is not None else 0.0
    if not seen:
        return {}
    return {names.COMPUTE_SWEEP_FLOPS: flops, names.COMPUTE_SWEEP_DEVICE_SECONDS: device,
            names.COMPUTE_SAVED_FLOPS: saved}
