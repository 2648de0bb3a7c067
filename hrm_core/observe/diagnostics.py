"""Training-health diagnostics, logged under ``diag/*`` with the eval metrics of every eval step.

What each key means (names in ``hrm_core.names``):

- ``diag/grad_norm``: global L2 norm of the dense gradients (every trainable parameter,
  after the DDP all-reduce, before the optimizer step) of the eval step's train step. The
  puzzle embedding is not in it: it is a buffer trained by sign-SGD on its own.
- ``diag/update_ratio/<group>``: ``||w_after - w_before|| / ||w_before||`` over the
  parameters of a module group for that step's optimizer update. Groups
  (``names.DIAG_GROUPS``): ``embeddings`` (token and learned position embeddings),
  ``H`` and ``L`` (the reasoning modules, their input gates included), ``heads`` (lm
  head, q head, the feudal subgoal head). A group with zero weights is left out.
- ``diag/puzzle_emb/row_norm_mean`` / ``row_norm_std``: mean and (population) std of
  the L2 norms of the puzzle-embedding rows *seen in training so far* (rows of never
  seen puzzles stay at their zero init and would only dilute the figure).
- ``diag/puzzle_emb/updated_share``: the share of all rows whose values changed since
  the last report (sign-SGD compares the batch's rows before and after its update); 0
  with ``puzzle_emb_lr=0``.
- ``diag/q_halt_mean`` / ``diag/q_continue_mean``: mean q logits over all rows of all
  train steps since the last report.
- ``diag/halt_steps/train/{mean,at_max_share,share_<k>}``: the ACT segment count of the
  rows that halted during the train steps since the last report.
- ``diag/halt_steps/eval/...``: for each eval row, the first segment at which
  ``q_halt > q_continue`` (``halt_max_steps`` if never): where the row would halt if
  evaluation halted (it runs every segment, like the reference).

Cost: between reports only a few reductions per step stay on the device (no host sync);
at a report step the gradient norm is taken and each group's weights are cloned before
the optimizer step. Nothing here draws a random number or changes a value the training
computes, so every other metric is bitwise the same with diagnostics on or off. The
accumulators are part of the checkpoint: a resumed run logs what an uninterrupted one does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hrm_core import names
from hrm_core.train.distributed import DistContext, all_reduce_sum


def param_groups(inner: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters of ``HRMInner`` by diagnostics group (``names.DIAG_GROUPS``)."""
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in names.DIAG_GROUPS}
    for name, p in inner.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        if top in ("embed_tokens", "embed_pos"):
            groups["embeddings"].append(p)
        elif top == "H_level":
            groups["H"].append(p)
        elif top == "L_level":
            groups["L"].append(p)
        else:  # lm_head, q_head, subgoal (manager, injection, its gate)
            groups["heads"].append(p)
    return {g: ps for g, ps in groups.items() if ps}


def halting_metrics(counts: list[float], halt_max_steps: int, split: str) -> dict[str, float]:
    """counts[k] = rows that halted at segment k (k = 0 unused) -> mean, at_max_share, share_k."""
    total = sum(counts[1:])
    if total <= 0:
        return {}
    H = halt_max_steps
    out = {
        names.DIAG_HALT_MEAN.format(split=split): sum(k * c for k, c in enumerate(counts)) / total,
        names.DIAG_HALT_AT_MAX.format(split=split): sum(counts[H:]) / total,
    }
    for k in range(1, H + 1):
        out[names.DIAG_HALT_SHARE.format(split=split, k=k)] = counts[k] / total
    return out


class Diagnostics:
    """Accumulates between reports; ``report()`` at every eval step (all ranks: it reduces)."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], puzzle_optimizer, max_halt_steps: int,
                 ctx: DistContext | None = None, device: torch.device | None = None):
        self.ctx = ctx or DistContext()
        self.groups = param_groups(model.model.inner)
        self.params = params
        self.puzzle = puzzle_optimizer
        if self.puzzle is not None:
            self.puzzle.track_changes()
        self.size = max_halt_steps + 1
        device = device or params[0].device
        # [sum q_halt, sum q_continue, rows, halted rows at segment 0..max]: float64 on the device
        self._acc = torch.zeros(3 + self.size, dtype=torch.float64, device=device)
        self._eval_counts: dict[str, list[float]] = {}  # split (eval, val) -> halting counts
        self._grad_norm: torch.Tensor | None = None
        self._snapshot: dict[str, list[torch.Tensor]] | None = None
        self._ratios: dict[str, torch.Tensor] = {}

    # --- every train step ------------------------------------------------------------------
    @torch.no_grad()
    def before_update(self, carry, outputs: dict, report: bool) -> None:
        """After backward (and the gradient all-reduce), before the optimizer steps."""
        acc = self._acc
        acc[0] += outputs["q_halt_logits"].detach().double().sum()
        acc[1] += outputs["q_continue_logits"].detach().double().sum()
        acc[2] += carry.halted.numel()
        steps = carry.steps.long().clamp(0, self.size - 1)
        acc[3:].index_add_(0, steps, carry.halted.double())
        if not report:
            return
        grads = [p.grad.detach() for p in self.params if p.grad is not None]
        if grads:
            norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])
            self._grad_norm = torch.linalg.vector_norm(norms)
        self._snapshot = {g: [p.detach().clone() for p in ps] for g, ps in self.groups.items()}

    @torch.no_grad()
    def after_update(self) -> None:
        """After the optimizer step: the update/weight ratio of each group (report steps only)."""
        if self._snapshot is None:
            return
        for g, before in self._snapshot.items():
            diff = torch.zeros((), dtype=torch.float64, device=self._acc.device)
            norm = torch.zeros((), dtype=torch.float64, device=self._acc.device)
            for p, w in zip(self.groups[g], before, strict=True):
                diff += torch.linalg.vector_norm(p.detach() - w, dtype=torch.float64).square()
                norm += torch.linalg.vector_norm(w, dtype=torch.float64).square()
            self._ratios[g] = torch.stack([diff, norm])
        self._snapshot = None

    # --- evaluation -------------------------------------------------------------------------
    @staticmethod
    def eval_segment(halt_at: torch.Tensor | None, segment: int, outputs: dict) -> torch.Tensor:
        """Track, per eval row, the first segment (1-based) with q_halt > q_continue (0 = none yet)."""
        wants = outputs["q_halt_logits"] > outputs["q_continue_logits"]
        if halt_at is None:
            halt_at = torch.zeros(wants.shape, dtype=torch.long, device=wants.device)
        return torch.where((halt_at == 0) & wants, segment, halt_at)

    def eval_counts(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.size, dtype=torch.float64, device=device)

    @staticmethod
    def add_eval_rows(counts: torch.Tensor, halt_at: torch.Tensor, n_valid: int, halt_max_steps: int) -> None:
        rows = torch.where(halt_at[:n_valid] == 0, halt_max_steps, halt_at[:n_valid])
        counts.index_add_(0, rows.clamp(0, counts.numel() - 1), torch.ones_like(rows, dtype=counts.dtype))

    def set_eval_counts(self, counts: torch.Tensor, split: str = names.EVAL) -> None:
        """A split's eval halting counts (already reduced over ranks), logged with the next report."""
        self._eval_counts[split] = counts.tolist()

    # --- the report ---------------------------------------------------------------------------
    @torch.no_grad()
    def report(self, halt_max_steps: int) -> dict[str, float]:
        """The diag/* metrics since the last report; resets the accumulators."""
        out: dict[str, float] = {}
        if self._grad_norm is not None:
            out[names.DIAG_GRAD_NORM] = float(self._grad_norm)  # equal on every rank after the all-reduce
        acc = all_reduce_sum(self._acc.clone(), self.ctx).tolist()
        if acc[2] > 0:
            out[names.DIAG_Q_HALT_MEAN] = acc[0] / acc[2]
            out[names.DIAG_Q_CONTINUE_MEAN] = acc[1] / acc[2]
        out.update(halting_metrics(acc[3:], halt_max_steps, names.TRAIN))
        for split, counts in self._eval_counts.items():
            out.update(halting_metrics(counts, halt_max_steps, split))
        for g, (diff, norm) in ((g, t.tolist()) for g, t in self._ratios.items()):
            if norm > 0:
                out[names.DIAG_UPDATE_RATIO.format(group=g)] = math.sqrt(diff) / math.sqrt(norm)
        if self.puzzle is not None:
            out.update(self.puzzle.change_report())  # the same on every rank: all rows are gathered
        self._acc.zero_()
        self._eval_counts, self._grad_norm, self._ratios = {}, None, {}
        return out

    # --- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "acc": self._acc.cpu(),
            "eval_counts": self._eval_counts,
            "puzzle": self.puzzle.tracking_state() if self.puzzle is not None else None,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint from before diagnostics (None) starts the accumulators afresh."""
        if not state:
            return
        acc = state["acc"].to(self._acc.device)
        n = min(acc.numel(), self._acc.numel())
        self._acc.zero_()
        self._acc[:n] = acc[:n]
        counts = state.get("eval_counts") or {}
        self._eval_counts = counts if isinstance(counts, dict) else {names.EVAL: counts}  # older: test only
        if self.puzzle is not None and state.get("puzzle") is not None:
            self.puzzle.load_tracking_state(state["puzzle"])
