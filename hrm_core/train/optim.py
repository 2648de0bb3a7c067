"""Optimizers and schedule: AdamATan2 (fused CUDA package when installed, pure torch
otherwise), sign-SGD for the sparse puzzle embedding, warm-up + cosine learning rate."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from hrm_core.config.schema import TrainConfig

try:  # fused CUDA kernel, extra "gpu"
    from adam_atan2 import AdamATan2 as FusedAdamATan2
except ImportError:
    FusedAdamATan2 = None


def cosine_schedule(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float
) -> float:
    """Linear warm-up from 0, then cosine from base_lr to base_lr * min_ratio."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))


def adam_atan2_update(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
    *, lr: float, beta1: float, beta2: float, weight_decay: float, step: int,
) -> None:
    """One AdamATan2 update, in place: decoupled decay, then
    p -= lr / bc1 * atan2(m, sqrt(v) / sqrt(bc2)). No epsilon: atan2 is bounded."""
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    p.mul_(1 - lr * weight_decay)
    m.lerp_(g, 1 - beta1)
    v.lerp_(g * g, 1 - beta2)
    p.add_(torch.atan2(m, v.sqrt() / math.sqrt(bc2)), alpha=-lr / bc1)


def _fused_update(ps, gs, ms, vs, lr, beta1, beta2, weight_decay, bc1, bc2_sqrt):
    """All parameters in one call, scalars as 0-d tensors: torch.compile fuses each
    parameter's update into one pass over memory and never recompiles for a new lr."""
    for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
        p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.lerp_(g * g, 1 - beta2)
        p.sub_(torch.atan2(m, v.sqrt() / bc2_sqrt) * (lr / bc1))


class AdamATan2(Optimizer):
    """Pure-torch AdamATan2 (Everett et al.): scale-invariant Adam without epsilon.

    Accepts ``lr=0`` (the first warm-up step). Same maths as the fused CUDA kernel.
    ``compile=True`` fuses the update with torch.compile (same maths, one pass per tensor).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.0, compile: bool = False):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self._compiled = torch.compile(_fused_update, dynamic=False) if compile else None

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            live = [p for p in group["params"] if p.grad is not None]
            for p in live:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            if self._compiled is not None and live and len({self.state[p]["step"] for p in live}) == 1:
                step = self.state[live[0]]["step"]
                scalars = [torch.tensor(x, dtype=torch.float64) for x in (
                    group["lr"], beta1, beta2, group["weight_decay"], 1 - beta1**step,
                    math.sqrt(1 - beta2**step))]
                self._compiled(live, [p.grad for p in live], [self.state[p]["exp_avg"] for p in live],
                               [self.state[p]["exp_avg_sq"] for p in live], *scalars)
                continue
            for p in live:
                state = self.state[p]
                adam_atan2_update(
                    p, p.grad, state["exp_avg"], state["exp_avg_sq"],
                    lr=group["lr"], beta1=beta1, beta2=beta2,
                    weight_decay=group["weight_decay"], step=state["step"],
                )


def make_adam_atan2(
    params, *, lr: float, betas: tuple[float, float], weight_decay: float, device: torch.device,
    compile: bool = False,
) -> tuple[Optimizer, str]:
    """The fused kernel on CUDA when its package is installed; pure torch otherwise."""
    if FusedAdamATan2 is not None and device.type == "cuda":
        fused = FusedAdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)
        return fused, "adam_atan2 (fused CUDA)"
    name = "AdamATan2 (pure torch, compiled)" if compile else "AdamATan2 (pure torch)"
    return AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay, compile=compile), name


def make_optimizers(
    params, puzzle_emb, cfg: TrainConfig, device: torch.device, world_size: int = 1
) -> tuple[Optimizer, str, SparseSignSGD | None]:
    """A run's optimizers: AdamATan2 on ``params`` (its lr is set at every step) and its name,
    and sign-SGD on the puzzle embedding (None without one)."""
    optimizer, name = make_adam_atan2(params, lr=0.0, betas=(cfg.beta1, cfg.beta2),
                                      weight_decay=cfg.weight_decay, device=device, compile=cfg.compile)
    if puzzle_emb is None:
        return optimizer, name, None
    puzzle = SparseSignSGD(puzzle_emb, cfg.puzzle_emb_lr, cfg.puzzle_emb_weight_decay, world_size)
    return optimizer, name, puzzle


class SparseSignSGD:
    """Sign-SGD with decoupled weight decay on the rows of the puzzle embedding seen in the batch.

    Gradients of duplicated ids are summed (across ranks too); only those rows change.

    With ``track_changes()`` (training diagnostics) it also keeps two row masks on the
    device: rows seen in training, and rows whose values changed since the last
    ``change_report()`` (the batch's rows compared before and after the update: no host
    sync, and the update itself is untouched).
    """

    def __init__(self, embedding, lr: float, weight_decay: float, world_size: int = 1):
        self.embedding = embedding  # hrm_core.model.hrm.PuzzleEmbedding
        self.lr, self.weight_decay, self.world_size = lr, weight_decay, world_size
        self.seen: torch.Tensor | None = None
        self.changed: torch.Tensor | None = None

    def track_changes(self) -> None:
        rows = self.embedding.weights.shape[0]
        self.seen = torch.zeros(rows, dtype=torch.bool, device=self.embedding.weights.device)
        self.changed = torch.zeros_like(self.seen)

    @torch.no_grad()
    def change_report(self) -> dict[str, float]:
        """diag/puzzle_emb/*: row norms over the rows seen so far, the share of all rows
        changed since the last report (then reset)."""
        from hrm_core import names

        out: dict[str, float] = {}
        if self.seen is None:
            return out
        norms = torch.linalg.vector_norm(self.embedding.weights[self.seen].double(), dim=-1)
        if norms.numel():
            out[names.DIAG_PUZZLE_ROW_NORM_MEAN] = norms.mean().item()
            out[names.DIAG_PUZZLE_ROW_NORM_STD] = norms.std(correction=0).item()
        out[names.DIAG_PUZZLE_UPDATED_SHARE] = self.changed.double().mean().item()
        self.changed.zero_()
        return out

    def tracking_state(self) -> dict:
        return {"seen": self.seen.cpu(), "changed": self.changed.cpu()}

    def load_tracking_state(self, state: dict) -> None:
        if self.seen is not None and state["seen"].shape == self.seen.shape:
            self.seen.copy_(state["seen"])
            self.changed.copy_(state["changed"])

    @torch.no_grad()
    def step(self) -> None:
        local = self.embedding.local_weights
        if local is None or local.grad is None:
            return
        grad, ids = local.grad, self.embedding.local_ids
        if self.world_size > 1 and dist.is_initialized():
            grads = [torch.empty_like(grad) for _ in range(self.world_size)]
            all_ids = [torch.empty_like(ids) for _ in range(self.world_size)]
            dist.all_gather(grads, grad.contiguous())
            dist.all_gather(all_ids, ids.contiguous())
            grad, ids = torch.cat(grads), torch.cat(all_ids)
        uniq, inverse = ids.unique(return_inverse=True)
        summed = torch.zeros(uniq.shape[0], grad.shape[1], dtype=grad.dtype, device=grad.device)
        summed.index_add_(0, inverse, grad)
        weights = self.embedding.weights
        rows = weights[uniq]
        rows.mul_(1.0 - self.lr * self.weight_decay).add_(torch.sign(summed), alpha=-self.lr)
        if self.changed is not None:  # diagnostics: which rows this update really moved
            self.changed[uniq] |= (rows != weights[uniq]).any(-1)
            self.seen[uniq] = True
        weights[uniq] = rows

    def zero_grad(self) -> None:
        self.embedding.local_weights = None
        self.embedding.local_ids = None
