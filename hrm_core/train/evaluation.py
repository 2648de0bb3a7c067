"""Evaluation: one split of the current stage's data through every ACT segment, as the reference
evaluates. Gives the split's metrics (``eval/*`` for test, ``val/*`` for the validation split;
per set too, when there are several), and on test the dataset's own metrics (its evaluator,
e.g. ARC's) on the predictions of all ranks."""

from __future__ import annotations

import os

import torch
from torch import nn

from hrm_core import names
from hrm_core.config.schema import TrainConfig
from hrm_core.data.sampler import eval_batches
from hrm_core.observe.diagnostics import Diagnostics
from hrm_core.train.curriculum import StageData
from hrm_core.train.distributed import DistContext, all_reduce_sum
from hrm_core.train.losses import METRIC_KEYS, metrics_dict, normalise


def _interleave(
    preds: list[torch.Tensor], q: list[torch.Tensor], local: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild dataset order from per-rank lists of local-batch slices."""
    out_p, out_q = [], []
    offsets = [0] * len(preds)
    while any(offsets[r] < len(preds[r]) for r in range(len(preds))):
        for r in range(len(preds)):
            out_p.append(preds[r][offsets[r] : offsets[r] + local])
            out_q.append(q[r][offsets[r] : offsets[r] + local])
            offsets[r] += local
    return torch.cat(out_p), torch.cat(out_q)


class Evaluation:
    """Evaluates the model of a run (``run``) at a step; every rank takes part."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, device: torch.device, run_dir: str):
        self.cfg, self.ctx, self.device, self.run_dir = cfg, ctx, device, run_dir

    @torch.inference_mode()
    def run(self, model: nn.Module, data: StageData, step: int, diagnostics: Diagnostics | None,
            split: str = names.EVAL) -> dict[str, float]:
        """``<split>/*`` of ``model`` (the loss head) on ``data``'s ``split``: ``names.EVAL`` is
        the test split, ``names.VAL`` the validation split ({} without that split)."""
        evaluated = data.split(split)
        if evaluated is None:
            return {}
        evaluator = data.evaluator if split == names.EVAL else None  # the dataset's own metrics: test
        cfg, ctx, device = self.cfg, self.ctx, self.device
        model.eval()
        halt_max_steps = model.model.cfg.halt_max_steps
        sets = evaluated.metadata.sets
        totals = torch.zeros(len(sets), len(METRIC_KEYS), dtype=torch.float64, device=device)
        saved: dict[str, list[torch.Tensor]] = {}
        preds: list[torch.Tensor] = []
        q_halts: list[torch.Tensor] = []
        halt_counts = diagnostics.eval_counts(device) if diagnostics is not None else None
        batches = eval_batches(evaluated, cfg.global_batch_size, ctx.rank, ctx.world_size)
        for set_name, batch, n_valid in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            carry, halt_at = model.initial_carry(batch), None
            for segment in range(1, halt_max_steps + 1):  # eval runs every segment
                carry, _, sums, outputs, all_halted = model(carry, batch)
                if halt_counts is not None:  # diag: the first segment at which the row would halt
                    halt_at = Diagnostics.eval_segment(halt_at, segment, outputs)
            if halt_counts is not None:
                Diagnostics.add_eval_rows(halt_counts, halt_at, n_valid, halt_max_steps)
            assert bool(all_halted), "eval rows must all halt at halt_max_steps"
            totals[sets.index(set_name)] += sums
            if evaluator is not None:
                preds.append(outputs["logits"][:n_valid].argmax(-1).to(torch.int32).cpu())
                q_halts.append(outputs["q_halt_logits"][:n_valid].float().cpu())
            for key in cfg.eval_save_outputs:
                source = outputs if key in outputs else batch
                if key in source:
                    saved.setdefault(key, []).append(source[key].cpu())
        all_reduce_sum(totals, ctx)
        if halt_counts is not None:
            diagnostics.set_eval_counts(all_reduce_sum(halt_counts, ctx), split)
        model.train()
        if saved:
            tail = "" if split == names.EVAL else f"_{split}"  # test keeps the reference's file name
            path = os.path.join(self.run_dir, f"step_{step}_all_preds{tail}.{ctx.rank}")
            torch.save({k: torch.cat(v) for k, v in saved.items()}, path)
        metrics = normalise(metrics_dict(totals.sum(0)), split, cfg.global_batch_size)
        if evaluator is not None:
            metrics.update(self._dataset_eval(data, preds, q_halts, step))
        if len(sets) > 1:
            for i, s in enumerate(sets):
                for k, v in normalise(metrics_dict(totals[i]), split, cfg.global_batch_size).items():
                    metrics[k.replace(f"{split}/", f"{split}/{s}/", 1)] = v
        return metrics

    def _dataset_eval(self, data: StageData, preds: list[torch.Tensor], q_halts: list[torch.Tensor],
                      step: int) -> dict[str, float]:
        """Gather every rank's predictions in dataset order and run the dataset's evaluator."""
        seq_len = data.eval_split.metadata.seq_len
        p = torch.cat(preds) if preds else torch.zeros(0, seq_len, dtype=torch.int32)
        q = torch.cat(q_halts) if q_halts else torch.zeros(0)
        if self.ctx.world_size > 1:
            import torch.distributed as dist

            gathered: list = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, (p, q))
            if not self.ctx.is_main:
                return {}
            # eval_batches gives rank r the r-th slice of each global batch: interleave back
            local = self.cfg.global_batch_size // self.ctx.world_size
            p, q = _interleave([g[0] for g in gathered], [g[1] for g in gathered], local)
        return data.evaluator(data.path, p.numpy(), q.numpy(), self.run_dir, step)
