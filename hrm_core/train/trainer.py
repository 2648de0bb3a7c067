"""The HRM train loop, on one screen: step, log, evaluate, checkpoint.

It emits metrics and checkpoints through callbacks and knows nothing of Ray or MLflow; the
CLI and the Ray trainable both drive this ``Trainer``. Its parts sit beside it: the stages
and their data (``curriculum.py``), the schedule (``schedule.py``), evaluation
(``evaluation.py``), checkpoint files and policy (``checkpoint.py``), optimizers
(``optim.py``) and random streams (``seeds.py``); what it reports leaves through
``hrm_core.observe`` (the reporter, diagnostics, compute accounting).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from hrm_core import names
from hrm_core.config.schema import TrainConfig, config_hash
from hrm_core.data.sampler import TrainSampler
from hrm_core.errors import UserError
from hrm_core.model.hrm import Carry, ModelDims, build_model, count_parameters
from hrm_core.observe.callbacks import Callback, CallbackList, RunInfo
from hrm_core.observe.compute import ComputeMeter, Throughput
from hrm_core.observe.diagnostics import Diagnostics
from hrm_core.observe.reporter import Reporter
from hrm_core.observe.run_context import build_run_context
from hrm_core.train import checkpoint as ckpt
from hrm_core.train.compiled import prepare_compile
from hrm_core.train.curriculum import Curriculum
from hrm_core.train.distributed import (
    DistContext,
    all_reduce_grads,
    all_reduce_sum,
    broadcast_module,
    mean_over_ranks,
)
from hrm_core.train.evaluation import Evaluation
from hrm_core.train.hardware import describe
from hrm_core.train.losses import backward_all, metrics_dict, normalise
from hrm_core.train.optim import make_optimizers
from hrm_core.train.schedule import make_schedule
from hrm_core.train.seeds import explore_generator, stream_seed

__all__ = ["Diverged", "Trainer", "build_trainable_model"]

_TRAIN_LOSSES = (names.TRAIN_LM_LOSS, names.metric(names.TRAIN, names.Q_HALT_LOSS))


class Diverged(Exception):
    """A non-finite training loss: the run ends with the outcome diverged."""


def build_trainable_model(
    cfg: TrainConfig, dims: ModelDims, device: torch.device, ctx: DistContext
) -> nn.Module:
    """The loss head around the HRM: initialised from the run's init stream (or ``init_from``'s
    weights), the same on every rank, with the kernels ``device`` runs best."""
    torch.manual_seed(stream_seed(cfg.seed, "init"))
    with torch.device(device):
        model = build_model(cfg.arch, dims, cfg.loss.loss_type, cfg.loss.model_dump(exclude={"loss_type"}))
    if cfg.init_from:
        ckpt.load_weights_into(model, cfg.init_from)
    broadcast_module(model, ctx)
    model.model.configure_kernels(flash_attention=device.type == "cuda",
                                  upcast_low_precision=cfg.low_precision_gemm == "fp32")
    if cfg.compile:  # cached per process and on disk (train/compiled.py)
        prepare_compile(device.type)
        model.model.compile_inner()
    return model


class Trainer:
    """One run: its parts built from the config (and resumed from ``cfg.resume_from``), then ``fit``."""

    def __init__(self, cfg: TrainConfig, data_path: str, run_dir: str, device: torch.device,
                 callbacks: list[Callback] | None = None, dist_ctx: DistContext | None = None, log=print):
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.ctx = ctx = dist_ctx or DistContext()
        self.log = log if ctx.is_main else (lambda *_: None)
        if cfg.global_batch_size % ctx.world_size:
            raise UserError(f"global_batch_size ({cfg.global_batch_size}) is not divisible by the world size "
                            f"({ctx.world_size})")
        self.curriculum = Curriculum(cfg, data_path, ctx, self.log)
        self.dims = self.curriculum.dims
        self.schedule = make_schedule(cfg, self.curriculum.data.train_split.metadata)
        self.model = build_trainable_model(cfg, self.dims, device, ctx)
        self.hrm = self.model.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.optimizer_name, self.puzzle_optimizer = make_optimizers(
            self.params, getattr(self.hrm.inner, "puzzle_emb", None), cfg, device, ctx.world_size)
        self.explore_gen = explore_generator(cfg.seed, ctx.rank, device)
        self.carry: Carry | None = None
        self.step = self.resumed_from_step = 0
        self.lr, self.last_eval, self._variant_metrics = 0.0, None, {}
        self.checkpoints = ckpt.Checkpoints(run_dir, cfg, ctx)
        self.evaluation = Evaluation(cfg, ctx, device, run_dir)
        self.compute = ComputeMeter(self.dims.vocab_size, self.dims.seq_len, cfg.global_batch_size,
                                    ctx.world_size)
        self.compute.plan(self.curriculum.archs, self.schedule.stage_ends)
        self.throughput = Throughput(cfg.global_batch_size)
        max_halt, self.diagnostics = max(a.halt_max_steps for a in self.curriculum.archs), None
        if cfg.diagnostics.enabled:  # training health (observe/diagnostics.py): observes, changes nothing
            puzzle = self.puzzle_optimizer
            self.diagnostics = Diagnostics(self.model, self.params, puzzle, max_halt, ctx, device)
        self.callbacks = CallbackList(callbacks or [])
        self.report = Reporter(self.callbacks, cfg.alerts, cfg.lr_warmup_steps, ctx.is_main, self.log)
        self.alerts = self.report.alerts
        self._enter_stage(0)
        if cfg.resume_from:
            self._restore(ckpt.load(cfg.resume_from))

    @property
    def sampler(self) -> TrainSampler:
        return self.curriculum.sampler

    @property
    def stage_index(self) -> int:
        return self.curriculum.index

    def _enter_stage(self, index: int) -> None:
        """Switch to curriculum stage ``index`` (its arch and data); every row starts afresh."""
        if self.curriculum.enter(index, self.step):
            self.hrm.cfg = self.hrm.inner.cfg = self.curriculum.arch
            self.carry = None

    # --- the loop ------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> str:
        """Train to the end of the schedule. Returns the outcome (see ``hrm_core.names``).

        ``stop_at``: end the loop after that step (with a checkpoint there) without changing
        the schedule (total steps, LR), e.g. to rerun a run only as far as it went."""
        end = min(self.schedule.total_steps, stop_at) if stop_at else self.schedule.total_steps
        self._start_run()
        outcome = names.OUTCOME_COMPLETED
        try:
            self.throughput.start()
            self.compute.start()
            while self.step < end:
                self._enter_stage(self.schedule.stage_at(self.step + 1))
                self._log_train(self.train_step(self.sampler.next_batch()))
                eval_metrics = self._evaluate() if self.schedule.is_eval_step(self.step) else None
                if self.checkpoints.due(self.step, self.schedule, eval_metrics, stop_at):
                    self.save_checkpoint(eval_metrics)
        except Diverged as err:
            outcome = names.OUTCOME_DIVERGED
            self.log(f"diverged: {err}")
        except KeyboardInterrupt:
            self.report.run_end(self.step, names.OUTCOME_KILLED, "interrupted")
            raise
        except Exception as err:
            self.report.run_end(self.step, names.OUTCOME_ERROR, f"{type(err).__name__}: {err}")
            raise
        self.compute.stop()
        self.report.run_end(self.step, outcome)
        return outcome

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward one ACT segment, backward, update. Returns the raw metric sums (all ranks)."""
        self.model.train()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        self.carry, loss, sums, outputs, _ = self.model(self.carry, batch, generator=self.explore_gen)
        backward_all(loss, outputs.get("side_losses", []), 1 / self.cfg.global_batch_size)
        self._variant_metrics = outputs.get("variant_metrics", {})
        all_reduce_grads(self.params, self.ctx)
        if self.diagnostics is not None:  # halting sums; grad norm + weight snapshot before an eval step
            report = self.schedule.is_eval_step(self.step + 1)
            self.diagnostics.before_update(self.carry, outputs, report=report)
        self.step += 1
        self._update()
        return all_reduce_sum(sums, self.ctx)

    def _update(self) -> None:
        """Both optimizers step at the schedule's learning rates."""
        self.lr = self.schedule.lr(self.step, self.cfg.lr)
        if self.puzzle_optimizer is not None:
            self.puzzle_optimizer.lr = self.schedule.lr(self.step, self.cfg.puzzle_emb_lr)
            self.puzzle_optimizer.step()
            self.puzzle_optimizer.zero_grad()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.step()
        if self.diagnostics is not None:
            self.diagnostics.after_update()
        self.optimizer.zero_grad(set_to_none=True)

    def _log_train(self, sums: torch.Tensor) -> None:
        """The step's train/* record (with lr, the variants', stage, epoch and compute/*), logged
        at log steps. A non-finite loss is logged, and ends the run."""
        metrics = normalise(metrics_dict(sums), names.TRAIN, self.cfg.global_batch_size)
        self.throughput.add_step()
        metrics[names.TRAIN_LR] = self.lr
        metrics.update(mean_over_ranks(self._variant_metrics, self.ctx))
        if self.cfg.curriculum.enabled:
            metrics[names.CURRICULUM_STAGE] = float(self.stage_index)
        metrics[names.TRAIN_EPOCH] = self.sampler.epoch_float
        metrics.update(self.compute.add_step(self.hrm.cfg, self.stage_index))  # compute/*: observe/compute.py
        if not all(math.isfinite(metrics[k]) for k in _TRAIN_LOSSES):
            self.report.train(self.step, metrics)
            raise Diverged(f"non-finite loss at step {self.step}")
        if self.ctx.is_main and self.schedule.is_log_step(self.step):
            metrics.update(self.throughput.metrics())
            metrics.update(self.compute.planned_metrics())
            self.report.train(self.step, metrics)

    def _evaluate(self) -> dict[str, float]:
        """An eval step: the periodic split's metrics (val/* with a val split, else eval/*) and at the
        final step eval/* too: test is read only there. Returned (the checkpoint policy reads it),
        reported with diag/*."""
        periodic = self.curriculum.data.periodic
        metrics = self.last_eval = self.evaluate(periodic)
        if periodic != names.EVAL and self.step == self.schedule.total_steps:
            metrics.update(self.evaluate(names.EVAL))
        if self.cfg.curriculum.enabled and metrics:
            metrics[names.CURRICULUM_STAGE] = float(self.stage_index)
        if metrics and not self.schedule.is_log_step(self.step):
            metrics.update(self.compute.metrics())  # every eval step has compute/* (once)
        diag = self.diagnostics.report(self.hrm.cfg.halt_max_steps) if self.diagnostics is not None else {}
        self.report.eval(self.step, {**metrics, **diag})  # diag/*: observe/diagnostics.py
        return metrics

    def evaluate(self, split: str = names.EVAL) -> dict[str, float]:
        """``<split>/*`` of the model now, on the current stage's test (``names.EVAL``) or val
        (``names.VAL``) split (every rank takes part)."""
        return self.evaluation.run(self.model, self.curriculum.data, self.step, self.diagnostics, split)

    def _start_run(self) -> None:
        hardware = describe(self.device, self.cfg.arch.forward_dtype, self.cfg.low_precision_gemm)
        info = self.run_info(hardware)
        self.log(f"{hardware} optimizer={self.optimizer_name} compile={self.cfg.compile} "
                 f"params={info.num_params:,} steps={self.schedule.total_steps} run_dir={self.run_dir}")
        self.report.run_start(info, resumed=bool(self.resumed_from_step))

    def run_info(self, hardware: str) -> RunInfo:
        paths = self.curriculum.paths  # the run context: what ``python -m sweeps reproduce`` needs
        context = partial(build_run_context, self.cfg, paths[0], self.device, self.ctx.world_size, paths)
        return RunInfo(
            run_dir=self.run_dir, config=self.cfg.model_dump(), config_hash=config_hash(self.cfg),
            total_steps=self.schedule.total_steps, start_step=self.step,
            num_params=count_parameters(self.model),
            world_size=self.ctx.world_size, hardware=hardware,
            extra={"optimizer": self.optimizer_name, "compile": self.cfg.compile,
                   names.RESUMED_FROM_STEP: self.resumed_from_step},
            context_fn=context if self.ctx.is_main else None,
        )

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything an exact resume needs (``save_checkpoint`` writes it)."""
        return {
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(), "explore_rng": self.explore_gen.get_state(),
            "carry": self.carry.state() if self.carry is not None else None,
            "config": self.cfg.model_dump(), "rank": self.ctx.rank, "stage": self.stage_index,
            "compute": self.compute.state_dict(),
            "diagnostics": self.diagnostics.state_dict() if self.diagnostics is not None else None,
            "alerts": self.alerts.state_dict() if self.alerts is not None else None,
        }

    def save_checkpoint(self, eval_metrics: dict[str, float] | None = None) -> str | None:
        """Write this rank's checkpoint; returns its path on rank 0 (None on the others)."""
        path, is_best = self.checkpoints.save(self.step, self.state_dict(), eval_metrics)
        self.report.checkpoint(self.step, path, is_best)
        return path if self.ctx.is_main else None

    def _restore(self, state: dict) -> None:
        state = self.checkpoints.resume_state(state)  # each rank resumes its own carry and exploration stream
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.explore_gen.set_state(state["explore_rng"])
        self.step = self.resumed_from_step = int(state["step"])
        self.compute.load_state_dict(state.get("compute"), self.step)
        if self.diagnostics is not None:
            self.diagnostics.load_state_dict(state.get("diagnostics"))
        if self.alerts is not None:  # rules that fired stay fired; streaks and peaks carry on
            self.alerts.load_state_dict(state.get("alerts"))
        saved_stage, next_stage = state.get("stage", 0), self.schedule.stage_at(self.step + 1)
        self._enter_stage(saved_stage)
        if next_stage != saved_stage:  # saved at a stage's end: the next stage starts afresh
            self._enter_stage(next_stage)
        else:
            self.sampler.load_state_dict(state["sampler"])
            self.carry = Carry.load_state(state["carry"], self.device) if state["carry"] is not None else None
        self.log(f"resumed_from_step={self.step} ({state['path']})")
