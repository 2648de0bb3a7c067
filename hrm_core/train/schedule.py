"""The run's schedule, fixed before the first step: how many optimizer steps, which steps
evaluate, log and checkpoint, where each curriculum stage ends, and the learning rate."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hrm_core.config.schema import TrainConfig
from hrm_core.data.format import PuzzleDatasetMetadata
from hrm_core.data.sampler import total_train_steps
from hrm_core.errors import UserError
from hrm_core.train.optim import cosine_schedule


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    eval_steps: frozenset[int]  # always includes total_steps
    checkpoint_every: int | None
    stage_ends: tuple[int, ...] = ()  # last step of each curriculum stage
    log_every: int = 1
    warmup_steps: int = 0
    lr_min_ratio: float = 1.0

    def is_eval_step(self, step: int) -> bool:
        return step in self.eval_steps

    def is_log_step(self, step: int) -> bool:
        """Train metrics are logged every ``log_every`` steps and at the last."""
        return step % self.log_every == 0 or step == self.total_steps

    def stage_at(self, step: int) -> int:
        """The stage that runs optimizer step ``step`` (1-based)."""
        for i, end in enumerate(self.stage_ends):
            if step <= end:
                return i
        return len(self.stage_ends) - 1

    def lr(self, step: int, base_lr: float) -> float:
        """Warm-up, then cosine decay over the whole run (one schedule across stages)."""
        return cosine_schedule(step, base_lr=base_lr, warmup_steps=self.warmup_steps,
                               total_steps=self.total_steps, min_ratio=self.lr_min_ratio)


def make_schedule(cfg: TrainConfig, meta: PuzzleDatasetMetadata) -> Schedule:
    """The schedule of ``cfg`` on a training split described by ``meta`` (stage 0's)."""
    epoch_steps = total_train_steps(meta, cfg.epochs, cfg.global_batch_size)
    if cfg.curriculum.enabled:  # the stages' budgets replace epochs
        epoch_steps = cfg.curriculum.total_steps
    total = min(epoch_steps, cfg.max_steps) if cfg.max_steps else epoch_steps
    if total < 1:
        raise UserError(
            f"the run has no optimizer step: epochs={cfg.epochs} x {meta.total_groups} groups / "
            f"global_batch_size={cfg.global_batch_size} < 1"
        )
    if cfg.eval_every_steps:
        evals = set(range(cfg.eval_every_steps, total + 1, cfg.eval_every_steps))
    elif cfg.eval_interval:  # after every eval_interval epochs, as the reference's iterations
        n = cfg.epochs // cfg.eval_interval
        evals = {max(1, round(epoch_steps * k / n)) for k in range(1, n + 1)}
    else:
        evals = set()
    stage_ends = [total]
    if cfg.curriculum.enabled:
        ends = list(itertools.accumulate(s.steps for s in cfg.curriculum.stages))
        stage_ends = [min(e, total) for e in ends]
        evals |= set(stage_ends)  # every stage ends with an evaluation
    evals = {s for s in evals if s <= total} | {total}
    return Schedule(total, frozenset(evals), cfg.checkpoint_every_steps, tuple(stage_ends),
                    cfg.log_every_steps, cfg.lr_warmup_steps, cfg.lr_min_ratio)
