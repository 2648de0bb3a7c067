"""Gating: learned sigmoid gates on the terms of each level's input sum.

Owns the gates (``H_level.gate`` and ``L_level.gate``), their hook (each level's input is
the gated sum), the regularisers (saturation, stability), the ``gate/*`` metrics and the
FLOPs of the gates' MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrm_core import names
from hrm_core.config.schema import ArchConfig
from hrm_core.model.layers import CastedLinear
from hrm_core.model.variants.base import Flops, Segment, Variant

# The terms each level's input sums: its own state first.
SOURCES = {"L": ("self", "H", "x"), "H": ("self", "L")}


class InputGate(nn.Module):
    """gates = sigmoid(MLP([s_1, ..., s_k])) per source and channel; input = sum g_i * s_i.

    The last layer starts at zero weights and bias ``init_bias``, so every gate starts at
    exactly sigmoid(init_bias); its weights move at the first step, the first layer's at
    the second.
    """

    def __init__(self, hidden: int, num_sources: int, ratio: float, init_bias: float):
        super().__init__()
        self.num_sources = num_sources
        width = max(1, round(ratio * hidden))
        self.up = CastedLinear(num_sources * hidden, width, bias=True)
        self.down = CastedLinear(width, num_sources * hidden, bias=True)
        with torch.no_grad():
            self.down.weight.zero_()
            self.down.bias.fill_(init_bias)

    def forward(self, sources: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """sources: k x (B, T, D) -> (gated sum (B, T, D), gates (B, T, k, D) in fp32)."""
        h = F.silu(self.up(torch.cat(sources, dim=-1)))
        gates = torch.sigmoid(self.down(h).float()).unflatten(-1, (self.num_sources, -1))
        total = gates[..., 0, :].to(sources[0].dtype) * sources[0]
        for i in range(1, self.num_sources):
            total = total + gates[..., i, :].to(sources[i].dtype) * sources[i]
        return total, gates


def gate_stats(gates: torch.Tensor, sources: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Mean per source and the share of saturated gates (< 0.1, > 0.9)."""
    g = gates.detach()
    out = {}
    for i, name in enumerate(sources):
        out[f"{name}_mean"] = g[..., i, :].mean()
    out["sat_low"] = (g < 0.1).float().mean()
    out["sat_high"] = (g > 0.9).float().mean()
    return out


def gate_regularisers(
    gates: torch.Tensor, previous: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(saturation, stability) per row, summed over the row's gates' means.

    saturation: 1 - 4 g (1 - g): 0 at g = 0.5, 1 at g in {0, 1}.
    stability: squared change from the previous call's gates (held fixed).
    """
    sat = (1 - 4 * gates * (1 - gates)).flatten(1).mean(-1)
    if previous is None:
        return sat, torch.zeros_like(sat)
    return sat, (gates - previous.detach()).square().flatten(1).mean(-1)


class Gating(Variant):
    """``arch.use_gating``: every level's input is the gated sum of its terms."""

    name = "gates"

    def __init__(self, inner: nn.Module, cfg: ArchConfig):
        self.gates = {}
        for level in ("H", "L"):  # H first: the order the initialisation draws in
            module = getattr(inner, f"{level}_level")
            sources = len(SOURCES[level])
            module.gate = InputGate(cfg.hidden_size, sources, cfg.gate_hidden_ratio, cfg.gate_init_bias)
            self.gates[level] = module.gate

    @staticmethod
    def enabled(arch: ArchConfig) -> bool:
        return arch.use_gating

    @staticmethod
    def flops(arch: ArchConfig, batch_size: int, tokens: int) -> Flops:
        width = max(1, round(arch.gate_hidden_ratio * arch.hidden_size))
        L_call, H_call = (2 * tokens * 2 * (len(SOURCES[m]) * arch.hidden_size * width) for m in ("L", "H"))
        return Flops(L_call=L_call, H_call=H_call)

    def begin(self, segment: Segment, carry, generator):
        segment.L.mix, segment.H.mix = self.gates["L"], self.gates["H"]
        return segment

    def end(self, segment: Segment, z_L: torch.Tensor):
        """aux: each level's gates at its differentiated call, and at the call before (None if none)."""
        return None, {"L": (segment.L.last, segment.L.previous), "H": (segment.H.last, segment.H.previous)}

    def terms(self, gates, weights):
        total, metrics = None, {}
        for level in ("L", "H"):
            last, previous = gates[level]
            sat, stab = gate_regularisers(last, previous)
            for key, term in (("gate_saturation_weight", sat), ("gate_stability_weight", stab)):
                if weights.get(key, 0.0) > 0:
                    total = weights[key] * term.sum() if total is None else total + weights[key] * term.sum()
            for key, value in gate_stats(last, SOURCES[level]).items():
                metrics[f"{names.GATE_PREFIX}{level}/{key}"] = value
        return total, [], metrics
