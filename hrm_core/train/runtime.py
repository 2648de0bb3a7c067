"""A composed config made concrete for the device it runs on: what ``auto`` and null mean here.

Used by every launcher (the CLI, sweep trials and their DDP ranks), so that the config a run
saves and logs is the one it trained with.
"""

from __future__ import annotations

import torch

from hrm_core.config.schema import TrainConfig
from hrm_core.train.hardware import resolve_forward_dtype, resolve_low_precision_gemm

__all__ = ["resolve_runtime"]


def resolve_runtime(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """The config with its device, forward dtype and low-precision GEMM path resolved."""
    dtype = resolve_forward_dtype(cfg.arch.forward_dtype, device)
    arch = cfg.arch.model_copy(update={"forward_dtype": dtype})
    gemm = resolve_low_precision_gemm(cfg.low_precision_gemm, device)
    return cfg.model_copy(update={"device": device.type, "low_precision_gemm": gemm, "arch": arch})
