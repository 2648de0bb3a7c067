"""Research variants the model calls, each switched by config and off by default:

* ``InputGate``: learned sigmoid gates on the terms of a module's input sum.
* ``SubgoalHead``: a feudal manager that emits unit goal directions from z_H every
  ``manager_period`` ACT segments; the goal is projected and injected into L.

With both off the model is the reference HRM bit for bit: no parameter is created and
no random number is drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrm_core.config.schema import ArchConfig
from hrm_core.model.layers import CastedLinear


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


def gate_stats(gates: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Mean per source and the share of saturated gates (< 0.1, > 0.9)."""
    g = gates.detach()
    out = {}
    for i, name in enumerate(names):
        out[f"{name}_mean"] = g[..., i, :].mean()
    out["sat_low"] = (g < 0.1).float().mean()
    out["sat_high"] = (g > 0.9).float().mean()
    return out


def gate_regularisers(gates: torch.Tensor, previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(saturation, stability) per row, summed over the row's gates' means.

    saturation: 1 - 4 g (1 - g): 0 at g = 0.5, 1 at g in {0, 1}.
    stability: squared change from the previous call's gates (held fixed).
    """
    sat = (1 - 4 * gates * (1 - gates)).flatten(1).mean(-1)
    if previous is None:
        return sat, torch.zeros_like(sat)
    return sat, (gates - previous.detach()).square().flatten(1).mean(-1)


class SubgoalHead(nn.Module):
    """The feudal manager and the goal's injection into the L module.

    The manager's input (pooled z_H when the goal was set) is kept in the carry, and the
    goal is recomputed from it at every segment, so the task loss (through the injection)
    and the optional manager term reach the manager at every segment, while the goal's
    value stays fixed for ``manager_period`` segments.
    """

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        D, G = cfg.hidden_size, cfg.goal_dim
        self.cfg = cfg.subgoal_head
        self.goal_dim = G
        self.manager = CastedLinear(D, G, bias=False)
        self.inject = CastedLinear(G, D, bias=False) if self.cfg.inject else None
        self.gate = CastedLinear(D, 1, bias=True) if self.cfg.inject and self.cfg.gating else None
        # The worker's state space: pooled z_L, projected to goal_dim by a fixed random
        # orthonormal map (identity when goal_dim == hidden), so the worker cannot
        # satisfy the loss by learning the projection.
        if G < D:
            q, _ = torch.linalg.qr(torch.randn(D, G))
            self.state_proj = nn.Buffer(q.T.contiguous(), persistent=True)  # (G, D)
        else:
            self.state_proj = None

    def state(self, z_L: torch.Tensor) -> torch.Tensor:
        """Pooled, projected L state. (B, T, D) -> (B, G) in fp32."""
        s = z_L.float().mean(dim=1)
        return s if self.state_proj is None else s @ self.state_proj.T

    def goal(self, source: torch.Tensor, random_goal: torch.Tensor) -> torch.Tensor:
        """Unit goal direction (B, G) in fp32, with gradient to the manager."""
        if self.cfg.random_goals:
            return random_goal
        return F.normalize(self.manager(source.float()), dim=-1)

    def injection(self, goal: torch.Tensor, source: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, 1, D) term added to L's input, and the gate (B,) (1 without gating)."""
        if self.inject is None:
            return None, torch.ones(goal.shape[0], device=goal.device)
        gate = torch.sigmoid(self.gate(source.float())).squeeze(-1) if self.gate is not None else torch.ones(goal.shape[0], device=goal.device)
        term = self.inject(goal) * gate.unsqueeze(-1)
        return term.unsqueeze(1).to(dtype), gate
