"""Multi-process data parallelism (``torchrun``): NCCL on GPUs, gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_reduce_grads", "all_reduce_sum", "broadcast_module", "destroy",
           "init_distributed", "launched_by_torchrun", "mean_over_ranks"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun set up; a single process gets a trivial context."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if ctx.world_size > 1:
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t, src=0)


def all_reduce_grads(params: list[torch.Tensor], ctx: DistContext) -> None:
    """Sum gradients over ranks in one flat buffer (the loss is already / global batch)."""
    if ctx.world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.world_size > 1:
        dist.all_reduce(t)
    return t


def mean_over_ranks(values: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """0-d tensors by name -> their means over the ranks (in name order)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().double() for k in keys])
    stacked = all_reduce_sum(stacked, ctx) / ctx.world_size
    return dict(zip(keys, stacked.tolist(), strict=True))


def destroy(ctx: DistContext) -> None:
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
