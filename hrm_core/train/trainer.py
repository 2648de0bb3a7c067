"""The HRM train loop. It emits metrics and checkpoints through callbacks and knows
nothing of Ray or MLflow; the CLI and the Ray trainable both drive this ``Trainer``."""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from hrm_core import names
from hrm_core.config.schema import TrainConfig, config_hash
from hrm_core.data.evaluators import evaluator_for
from hrm_core.data.format import PuzzleSplit, load_metadata, open_split
from hrm_core.data.resolve import stage_data_paths
from hrm_core.data.sampler import TrainSampler, eval_batches, total_train_steps
from hrm_core.errors import UserError
from hrm_core.model.hrm import ModelDims, build_model, count_parameters
from hrm_core.observe.alerts import AlertMonitor
from hrm_core.observe.callbacks import Callback, CallbackList, RunInfo
from hrm_core.observe.compute import ComputeMeter, stage_archs
from hrm_core.observe.diagnostics import Diagnostics
from hrm_core.train import checkpoint as ckpt
from hrm_core.train.distributed import DistContext, all_reduce_grads, all_reduce_sum, broadcast_module
from hrm_core.train.hardware import describe
from hrm_core.train.losses import METRIC_KEYS, backward_all, metrics_dict, normalise
from hrm_core.train.optim import SparseSignSGD, cosine_schedule, make_adam_atan2


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """Independent, reproducible seeds per random stream (init, data, exploration)."""
    key = {"init": 0, "data": 1, "explore": 2}[stream]
    return int(np.random.SeedSequence([seed, key, rank]).generate_state(1)[0])


@dataclass
class Schedule:
    total_steps: int
    eval_steps: frozenset[int]  # always includes total_steps
    checkpoint_every: int | None
    stage_ends: tuple[int, ...] = ()  # last step of each curriculum stage

    def is_eval_step(self, step: int) -> bool:
        return step in self.eval_steps


def _interleave(preds: list[torch.Tensor], q: list[torch.Tensor], local: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild dataset order from per-rank lists of local-batch slices."""
    out_p, out_q = [], []
    offsets = [0] * len(preds)
    while any(offsets[r] < len(preds[r]) for r in range(len(preds))):
        for r in range(len(preds)):
            out_p.append(preds[r][offsets[r] : offsets[r] + local])
            out_q.append(q[r][offsets[r] : offsets[r] + local])
            offsets[r] += local
    return torch.cat(out_p), torch.cat(out_q)


class Diverged(Exception):
    pass


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        data_path: str,
        run_dir: str,
        device: torch.device,
        callbacks: list[Callback] | None = None,
        dist_ctx: DistContext | None = None,
        log=print,
    ):
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.ctx = dist_ctx or DistContext()
        self.callbacks = CallbackList(callbacks or [])
        self.log = log if self.ctx.is_main else (lambda *_: None)
        if cfg.global_batch_size % self.ctx.world_size:
            raise UserError(
                f"global_batch_size ({cfg.global_batch_size}) is not divisible by the world size ({self.ctx.world_size})"
            )
        self.local_batch_size = cfg.global_batch_size // self.ctx.world_size

        # Curriculum stages (one implicit stage without a curriculum), checked up front.
        self.stages = list(cfg.curriculum.stages or [None])
        self.stage_paths = stage_data_paths(cfg, data_path, log=self.log) if cfg.curriculum.enabled else [data_path]
        self.stage_index = -1
        self._open_stage_data(0)
        meta = self.train_split.metadata
        self.dims = ModelDims(meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
        self._check_stage_data()
        self.schedule = self._make_schedule()

        # Random streams: model init, data order, ACT exploration are seeded separately.
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        with torch.device(device):
            self.model = build_model(cfg.arch, self.dims, cfg.loss.loss_type, cfg.loss.model_dump(exclude={"loss_type"}))
        if cfg.init_from:
            self._load_weights(cfg.init_from)
        broadcast_module(self.model, self.ctx)
        self.hrm = self.model.model
        self.hrm.configure_kernels(flash_attention=device.type == "cuda", upcast_low_precision=cfg.low_precision_gemm == "fp32")
        if cfg.compile:
            self.hrm.compile_inner()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.optimizer_name = make_adam_atan2(
            self.params, lr=0.0, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, device=device, compile=cfg.compile
        )
        self.puzzle_optimizer = (
            SparseSignSGD(self.hrm.inner.puzzle_emb, cfg.puzzle_emb_lr, cfg.puzzle_emb_weight_decay, self.ctx.world_size)
            if cfg.arch.puzzle_emb_ndim > 0
            else None
        )
        self.base_arch = cfg.arch
        self._enter_stage(0)
        self.explore_gen = torch.Generator(device=device)
        self.explore_gen.manual_seed(stream_seed(cfg.seed, "explore", self.ctx.rank))
        self.carry = None
        self._variant_metrics: dict[str, torch.Tensor] = {}
        self.step = 0
        self.resumed_from_step = 0
        self.retention = ckpt.Retention(run_dir, cfg.checkpoint_keep_last, cfg.checkpoint_keep_best, cfg.checkpoint_mode)
        self._stop_at: int | None = None  # fit(stop_at=...): the last step of this call
        self.compute = ComputeMeter(self.dims.vocab_size, self.dims.seq_len, cfg.global_batch_size, self.ctx.world_size)
        self.compute.plan(stage_archs(self.base_arch, self.stages), self.schedule.stage_ends)
        # Training health (hrm_core/observe/diagnostics.py, hrm_core/observe/alerts.py): they observe, change nothing.
        self.diagnostics = (
            Diagnostics(self.model, self.params, self.puzzle_optimizer,
                        max(a.halt_max_steps for a in stage_archs(self.base_arch, self.stages)), self.ctx, device)
            if cfg.diagnostics.enabled else None
        )
        self.alerts = AlertMonitor(cfg.alerts, cfg.lr_warmup_steps, emit=self._alert) if cfg.alerts.enabled else None
        if self.alerts is not None:
            self.callbacks.callbacks.append(self.alerts)  # last: it sees each record after the sinks
        if cfg.resume_from:
            self._restore(ckpt.load(cfg.resume_from))

    # --- data and curriculum stages -------------------------------------------------
    def _open_stage_data(self, index: int) -> None:
        path = self.stage_paths[index]
        self.data_path = path
        self.train_split: PuzzleSplit = open_split(path, "train")
        self.eval_split: PuzzleSplit | None = open_split(path, "test") if os.path.isdir(os.path.join(path, "test")) else None
        meta = self.train_split.metadata
        if self.eval_split is not None:
            em = self.eval_split.metadata
            if (em.seq_len, em.vocab_size) != (meta.seq_len, meta.vocab_size):
                raise UserError(f"{path}: test split has seq_len/vocab {em.seq_len}/{em.vocab_size}, train has {meta.seq_len}/{meta.vocab_size}")
        self.evaluator = evaluator_for(path) if self.eval_split is not None else None

    def _check_stage_data(self) -> None:
        """Stage datasets must fit one model: same vocab, seq_len and puzzle identifiers."""
        first = (self.dims.vocab_size, self.dims.seq_len, self.dims.num_puzzle_identifiers)
        for i, path in enumerate(self.stage_paths[1:], start=1):
            m = load_metadata(path, "train")
            if (m.vocab_size, m.seq_len, m.num_puzzle_identifiers) != first:
                raise UserError(
                    f"curriculum.stages[{i}] dataset {path} has vocab/seq_len/puzzle ids "
                    f"{m.vocab_size}/{m.seq_len}/{m.num_puzzle_identifiers}, stage 0 has {'/'.join(map(str, first))}"
                )

    def stage_at(self, step: int) -> int:
        """The stage that runs optimizer step ``step`` (1-based)."""
        for i, end in enumerate(self.schedule.stage_ends):
            if step <= end:
                return i
        return len(self.schedule.stage_ends) - 1

    def _enter_stage(self, index: int) -> None:
        """Switch arch overrides and data; weights and optimizer state carry over."""
        if index == self.stage_index:
            return
        stage = self.stages[index]
        if self.stage_index >= 0:  # stage 0's data was opened by the constructor
            self._open_stage_data(index)
        arch = self.base_arch.model_copy(update=stage.arch_overrides) if stage is not None else self.base_arch
        self.hrm.cfg = self.hrm.inner.cfg = arch
        self.sampler = TrainSampler(
            self.train_split, self.cfg.global_batch_size, self.ctx.rank, self.ctx.world_size, seed=self.cfg.effective_data_seed
        )
        self.carry = None  # new data and budget: every row starts afresh
        if self.stage_index >= 0:
            self.log(f"curriculum stage {index} ({stage.name or index}) from step {self.step + 1}: {stage.arch_overrides} data={self.data_path}")
        self.stage_index = index

    # --- schedule -------------------------------------------------------------------
    def _make_schedule(self) -> Schedule:
        cfg, meta = self.cfg, self.train_split.metadata
        epoch_steps = total_train_steps(meta, cfg.epochs, cfg.global_batch_size)
        if cfg.curriculum.enabled:  # the stages' budgets replace epochs
            epoch_steps = cfg.curriculum.total_steps
        total = min(epoch_steps, cfg.max_steps) if cfg.max_steps else epoch_steps
        if total < 1:
            raise UserError(
                f"the run has no optimizer step: epochs={cfg.epochs} x {meta.total_groups} groups / global_batch_size={cfg.global_batch_size} < 1"
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
        return Schedule(total, frozenset(evals), cfg.checkpoint_every_steps, tuple(stage_ends))

    def lr_at(self, step: int, base_lr: float) -> float:
        cfg = self.cfg
        return cosine_schedule(
            step, base_lr=base_lr, warmup_steps=cfg.lr_warmup_steps, total_steps=self.schedule.total_steps, min_ratio=cfg.lr_min_ratio
        )

    # --- one optimizer step ------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward one ACT segment, backward, update. Returns the raw metric sums (all ranks)."""
        self.model.train()
        batch = self._to_device(batch)
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        self.carry, loss, sums, outputs, _ = self.model(self.carry, batch, generator=self.explore_gen)
        backward_all(loss, outputs.get("side_losses", []), 1 / self.cfg.global_batch_size)
        self._variant_metrics = outputs.get("variant_metrics", {})
        all_reduce_grads(self.params, self.ctx)
        if self.diagnostics is not None:  # q logits and halting sums; grad norm + weight snapshot at eval steps
            self.diagnostics.before_update(self.carry, outputs, report=self.schedule.is_eval_step(self.step + 1))

        self.step += 1
        lr = self.lr_at(self.step, self.cfg.lr)
        if self.puzzle_optimizer is not None:
            self.puzzle_optimizer.lr = self.lr_at(self.step, self.cfg.puzzle_emb_lr)
            self.puzzle_optimizer.step()
            self.puzzle_optimizer.zero_grad()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.diagnostics is not None:
            self.diagnostics.after_update()
        self.optimizer.zero_grad(set_to_none=True)
        self._lr = lr
        return all_reduce_sum(sums, self.ctx)

    def _reduced_variant_metrics(self) -> dict[str, float]:
        """Gate and feudal statistics of the last step, averaged over ranks."""
        if not self._variant_metrics:
            return {}
        keys = sorted(self._variant_metrics)
        values = torch.stack([self._variant_metrics[k].detach().double() for k in keys])
        values = all_reduce_sum(values, self.ctx) / self.ctx.world_size
        return dict(zip(keys, values.tolist(), strict=True))

    # --- evaluation ---------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        if self.eval_split is None:
            return {}
        self.model.eval()
        sets = self.eval_split.metadata.sets
        totals = torch.zeros(len(sets), len(METRIC_KEYS), dtype=torch.float64, device=self.device)
        saved: dict[str, list[torch.Tensor]] = {}
        preds: list[torch.Tensor] = []
        q_halts: list[torch.Tensor] = []
        halt_counts = self.diagnostics.eval_counts(self.device) if self.diagnostics is not None else None
        for set_name, batch, n_valid in eval_batches(
            self.eval_split, self.cfg.global_batch_size, self.ctx.rank, self.ctx.world_size
        ):
            batch = self._to_device(batch)
            carry, halt_at = self.model.initial_carry(batch), None
            for segment in range(1, self.hrm.cfg.halt_max_steps + 1):  # eval runs every segment
                carry, _, sums, outputs, all_halted = self.model(carry, batch)
                if halt_counts is not None:  # diag: the first segment at which the row would halt
                    halt_at = Diagnostics.eval_segment(halt_at, segment, outputs)
            if halt_counts is not None:
                Diagnostics.add_eval_rows(halt_counts, halt_at, n_valid, self.hrm.cfg.halt_max_steps)
            assert bool(all_halted), "eval rows must all halt at halt_max_steps"
            totals[sets.index(set_name)] += sums
            if self.evaluator is not None:
                preds.append(outputs["logits"][:n_valid].argmax(-1).to(torch.int32).cpu())
                q_halts.append(outputs["q_halt_logits"][:n_valid].float().cpu())
            for key in self.cfg.eval_save_outputs:
                source = outputs if key in outputs else batch
                if key in source:
                    saved.setdefault(key, []).append(source[key].cpu())
        all_reduce_sum(totals, self.ctx)
        if halt_counts is not None:
            self.diagnostics.set_eval_counts(all_reduce_sum(halt_counts, self.ctx))
        self.model.train()
        if saved:
            torch.save({k: torch.cat(v) for k, v in saved.items()}, os.path.join(self.run_dir, f"step_{self.step}_all_preds.{self.ctx.rank}"))
        metrics = normalise(metrics_dict(totals.sum(0)), names.EVAL, self.cfg.global_batch_size)
        if self.evaluator is not None:
            metrics.update(self._dataset_eval(preds, q_halts))
        if len(sets) > 1:
            for i, s in enumerate(sets):
                for k, v in normalise(metrics_dict(totals[i]), names.EVAL, self.cfg.global_batch_size).items():
                    metrics[k.replace("eval/", f"eval/{s}/", 1)] = v
        return metrics

    def _dataset_eval(self, preds: list[torch.Tensor], q_halts: list[torch.Tensor]) -> dict[str, float]:
        """Gather every rank's predictions in dataset order and run the dataset's evaluator."""
        p = torch.cat(preds) if preds else torch.zeros(0, self.dims.seq_len, dtype=torch.int32)
        q = torch.cat(q_halts) if q_halts else torch.zeros(0)
        if self.ctx.world_size > 1:
            import torch.distributed as dist

            gathered: list = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, (p, q))
            if not self.ctx.is_main:
                return {}
            # eval_batches gives rank r the r-th slice of each global batch: interleave back
            p, q = _interleave([g[0] for g in gathered], [g[1] for g in gathered], self.cfg.global_batch_size // self.ctx.world_size)
        return self.evaluator(self.data_path, p.numpy(), q.numpy(), self.run_dir, self.step)

    # --- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        carry = self.carry
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "explore_rng": self.explore_gen.get_state(),
            "carry": None
            if carry is None
            else {
                "z_H": carry.inner.z_H, "z_L": carry.inner.z_L, "feudal": carry.inner.feudal,
                "steps": carry.steps, "halted": carry.halted, "current_data": carry.current_data,
            },
            "config": self.cfg.model_dump(),
            "rank": self.ctx.rank,
            "stage": self.stage_index,
            "compute": self.compute.state_dict(),
            "diagnostics": self.diagnostics.state_dict() if self.diagnostics is not None else None,
            "alerts": self.alerts.state_dict() if self.alerts is not None else None,
        }

    def _restore(self, state: dict) -> None:
        if self.ctx.rank > 0:  # each rank resumes its own carry and exploration stream
            state = ckpt.load(state["path"].replace(".pt", f".rank{self.ctx.rank}.pt"))
        if "optimizer" not in state:
            raise UserError(f"{state['path']} holds weights only; use init_from to warm-start from it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.explore_gen.set_state(state["explore_rng"])
        self.step = self.resumed_from_step = int(state["step"])
        self.compute.load_state_dict(state.get("compute"), self.step)
        if self.diagnostics is not None:
            self.diagnostics.load_state_dict(state.get("diagnostics"))
        if self.alerts is not None:  # rules that fired stay fired; streaks and peaks carry on
            self.alerts.load_state_dict(state.get("alerts"))
        saved_stage = state.get("stage", 0)
        self._enter_stage(saved_stage)
        next_stage = self.stage_at(self.step + 1)
        if next_stage != saved_stage:  # saved at a stage's end: the next stage starts afresh
            self._enter_stage(next_stage)
            self.log(f"resumed_from_step={self.step} ({state['path']})")
            return
        self.sampler.load_state_dict(state["sampler"])
        c = state["carry"]
        if c is not None:
            from hrm_core.model.hrm import Carry, InnerCarry

            dev = self.device
            feudal = {k: v.to(dev) for k, v in c["feudal"].items()} if c.get("feudal") is not None else None
            self.carry = Carry(
                InnerCarry(c["z_H"].to(dev), c["z_L"].to(dev), feudal), c["steps"].to(dev), c["halted"].to(dev),
                {k: v.to(dev) for k, v in c["current_data"].items()},
            )
        self.log(f"resumed_from_step={self.step} ({state['path']})")

    def _load_weights(self, path: str) -> None:
        result = self.model.load_state_dict(ckpt.load_weights(path), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(f"init_from {path}: weights do not fit this model (missing {result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]})")

    def save_checkpoint(self, eval_metrics: dict[str, float] | None = None) -> str | None:
        """Rank 0 writes; with several ranks, each rank's own carry is in its own file."""
        path = ckpt.checkpoint_file(self.run_dir, self.step)
        if self.ctx.world_size > 1:
            path = path.replace(".pt", f".rank{self.ctx.rank}.pt") if self.ctx.rank else path
        ckpt.save(path, self.state_dict())
        value = (eval_metrics or {}).get(self.cfg.checkpoint_metric)
        is_best = self.retention.is_better(value)
        if is_best:
            self.retention.record_best(self.step, value, self.cfg.checkpoint_metric, write=self.ctx.is_main)
        if not self.ctx.is_main:
            return None
        self.retention.prune()
        self.callbacks.on_checkpoint(self.step, path, is_best)
        return path

    # --- the loop ------------------------------------------------------------------------
    def run_info(self, hardware: str) -> RunInfo:
        return RunInfo(
            run_dir=self.run_dir, config=self.cfg.model_dump(), config_hash=config_hash(self.cfg),
            total_steps=self.schedule.total_steps, start_step=self.step, num_params=count_parameters(self.model),
            world_size=self.ctx.world_size, hardware=hardware,
            extra={"optimizer": self.optimizer_name, "compile": self.cfg.compile, names.RESUMED_FROM_STEP: self.resumed_from_step},
            context_fn=self._run_context if self.ctx.is_main else None,
        )

    def _alert(self, step: int, rule: str, message: str) -> None:
        """An alert rule fired (the ``AlertMonitor``): log it and tell every callback."""
        self.log(f"alert {rule} at step {step}: {message}")
        self.callbacks.on_alert(step, rule, message)

    def _run_context(self) -> dict:
        """What ``python -m sweeps reproduce`` needs to rerun this run (hrm_core/observe/run_context.py)."""
        from hrm_core.observe.run_context import build_run_context

        return build_run_context(self.cfg, self.stage_paths[0], self.device, self.ctx.world_size, self.stage_paths)

    def fit(self, stop_at: int | None = None) -> str:
        """Train to the end of the schedule. Returns the outcome (see ``hrm_core.names``).

        ``stop_at``: end the loop after that step (with a checkpoint there) without changing
        the schedule (total steps, LR), e.g. to rerun a run only as far as it went."""
        cfg, sched = self.cfg, self.schedule
        self._stop_at = stop_at
        end_step = min(sched.total_steps, stop_at) if stop_at else sched.total_steps
        hardware = describe(self.device, cfg.arch.forward_dtype, cfg.low_precision_gemm)
        info = self.run_info(hardware)
        self.log(f"{hardware} optimizer={self.optimizer_name} compile={cfg.compile} params={info.num_params:,} steps={sched.total_steps} run_dir={self.run_dir}")
        self.callbacks.on_run_start(info)
        if self.resumed_from_step and self.ctx.is_main:
            self.callbacks.on_train_metrics(self.step, {names.RESUMED_FROM_STEP: float(self.step)})
        outcome = names.OUTCOME_COMPLETED
        last_eval = None
        try:
            t0, samples = time.perf_counter(), 0
            self.compute.start()
            while self.step < end_step:
                self._enter_stage(self.stage_at(self.step + 1))
                sums = self.train_step(self.sampler.next_batch())
                metrics = normalise(metrics_dict(sums), names.TRAIN, cfg.global_batch_size)
                samples += cfg.global_batch_size
                metrics[names.TRAIN_LR] = self._lr
                metrics.update(self._reduced_variant_metrics())
                if cfg.curriculum.enabled:
                    metrics[names.CURRICULUM_STAGE] = float(self.stage_index)
                metrics[names.TRAIN_EPOCH] = self.sampler.epoch_float
                metrics.update(self.compute.add_step(self.hrm.cfg, self.stage_index))  # compute/*: hrm_core/observe/compute.py
                if not math.isfinite(metrics[names.TRAIN_LM_LOSS]) or not math.isfinite(metrics[names.metric(names.TRAIN, names.Q_HALT_LOSS)]):
                    if self.ctx.is_main:
                        self.callbacks.on_train_metrics(self.step, metrics)
                    raise Diverged(f"non-finite loss at step {self.step}")
                if self.ctx.is_main and (self.step % cfg.log_every_steps == 0 or self.step == sched.total_steps):
                    metrics[names.PERF_SAMPLES_PER_S] = samples / max(time.perf_counter() - t0, 1e-9)
                    t0, samples = time.perf_counter(), 0
                    metrics.update(self.compute.planned_metrics())
                    self.callbacks.on_train_metrics(self.step, metrics)
                eval_metrics = None
                if sched.is_eval_step(self.step):
                    eval_metrics = last_eval = self.evaluate()
                    if cfg.curriculum.enabled and eval_metrics:
                        eval_metrics[names.CURRICULUM_STAGE] = float(self.stage_index)
                    if eval_metrics and not (self.step % cfg.log_every_steps == 0 or self.step == sched.total_steps):
                        eval_metrics.update(self.compute.metrics())  # every eval step has compute/* (once)
                    diag = self.diagnostics.report(self.hrm.cfg.halt_max_steps) if self.diagnostics is not None else {}
                    if self.ctx.is_main and (eval_metrics or diag):
                        self.callbacks.on_eval(self.step, {**eval_metrics, **diag})  # diag/*: hrm_core/observe/diagnostics.py
                if self._should_checkpoint(eval_metrics):
                    self.save_checkpoint(eval_metrics)
        except Diverged as err:
            outcome = names.OUTCOME_DIVERGED
            self.log(f"diverged: {err}")
        except KeyboardInterrupt:
            self.callbacks.on_run_end(self.step, names.OUTCOME_KILLED, "interrupted")
            raise
        except Exception as err:
            self.callbacks.on_run_end(self.step, names.OUTCOME_ERROR, f"{type(err).__name__}: {err}")
            raise
        self.compute.stop()
        self.last_eval = last_eval
        self.callbacks.on_run_end(self.step, outcome)
        return outcome

    def _should_checkpoint(self, eval_metrics: dict[str, float] | None) -> bool:
        cfg, step = self.cfg, self.step
        if step == self.schedule.total_steps or step == self._stop_at:
            return True
        if self.schedule.checkpoint_every and step % self.schedule.checkpoint_every == 0:
            return True
        if eval_metrics is not None and cfg.checkpoint_every_eval:
            return True
        # The best eval so far is kept even when periodic checkpoints are off.
        return bool(eval_metrics) and cfg.checkpoint_keep_best and self.retention.is_better(eval_metrics.get(cfg.checkpoint_metric))
