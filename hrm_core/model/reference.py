"""Load checkpoints saved by the reference HRM code (``pretrain.py`` saves the loss head's
state_dict; ``torch.compile`` prefixes keys with ``_orig_mod.``)."""

from __future__ import annotations

import os
from typing import Any

import torch

from hrm_core.config.schema import ArchConfig
from hrm_core.errors import UserError
from hrm_core.model.hrm import ModelDims, build_model

# Reference model-config fields that are not architecture (they come from the data / loop).
_DIM_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")
_IGNORED_FIELDS = ("batch_size", "causal", "name", "loss")
COMPILE_PREFIX = "_orig_mod."


def strip_compile_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``_orig_mod.`` segments torch.compile adds to parameter names."""
    return {k.replace(COMPILE_PREFIX, ""): v for k, v in state_dict.items()}


def arch_from_reference(config: dict[str, Any]) -> tuple[ArchConfig, ModelDims, str]:
    """Split a reference model config dict into our ArchConfig, ModelDims and loss type."""
    cfg = dict(config)
    loss = cfg.get("loss") or {}
    loss_type = "stablemax_cross_entropy"
    if isinstance(loss, dict):
        loss_type = loss.get("loss_type", loss_type)
    missing = [k for k in _DIM_FIELDS if k not in cfg]
    if missing:
        raise UserError(f"reference config lacks {', '.join(missing)} (needed to size the model)")
    dims = ModelDims(**{k: int(cfg.pop(k)) for k in _DIM_FIELDS})
    for k in _IGNORED_FIELDS:
        cfg.pop(k, None)
    return ArchConfig(**cfg), dims, loss_type


def load_reference_checkpoint(
    path_or_state_dict: str | os.PathLike | dict, config: dict[str, Any]
) -> torch.nn.Module:
    """Build our model (the loss head around HRM, same key layout) and load reference weights.

    ``config`` is the reference's model config (``arch`` fields plus ``vocab_size``,
    ``seq_len``, ``num_puzzle_identifiers``; ``batch_size`` and ``causal`` are ignored).
    Missing or unexpected keys are an error: a silent partial load would be a wrong model.
    """
    if isinstance(path_or_state_dict, dict):
        state_dict = path_or_state_dict
    else:
        if not os.path.exists(path_or_state_dict):
            raise UserError(f"checkpoint not found: {path_or_state_dict}")
        state_dict = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
        if isinstance(state_dict, dict) and "model" in state_dict and isinstance(state_dict["model"], dict):
            state_dict = state_dict["model"]  # one of our own training checkpoints
    arch, dims, loss_type = arch_from_reference(config)
    model = build_model(arch, dims, loss_type)
    try:
        result = model.load_state_dict(strip_compile_prefix(state_dict), strict=False)
    except RuntimeError as err:  # shape mismatches
        lines = str(err).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[0])
        raise UserError(f"checkpoint does not match the config: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"checkpoint does not match the config: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model
