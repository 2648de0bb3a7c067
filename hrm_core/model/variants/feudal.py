"""Feudal: a manager emits a unit goal direction from z_H every ``manager_period`` ACT
segments; the goal is projected and injected into L, and the worker (the L module) may be
trained to move its pooled state along it.

Owns the subgoal head (``inner.subgoal``), its state in the carry (``feudal``: the
manager's input ``src`` (B, D), the worker's ``anchor`` and the ``rand`` goal (B, G), the
goal's ``age`` (B,)), its hook (the goal term added to L's input), its loss terms
(worker and manager), the ``feudal/*`` metrics and its FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrm_core import names
from hrm_core.config.schema import ArchConfig
from hrm_core.model.layers import CastedLinear
from hrm_core.model.variants.base import Flops, Segment, State, Variant


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

    def injection(
        self, goal: torch.Tensor, source: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, 1, D) term added to L's input, and the gate (B,) (1 without gating)."""
        ones = torch.ones(goal.shape[0], device=goal.device)
        if self.inject is None:
            return None, ones
        gate = torch.sigmoid(self.gate(source.float())).squeeze(-1) if self.gate is not None else ones
        term = self.inject(goal) * gate.unsqueeze(-1)
        return term.unsqueeze(1).to(dtype), gate


class Feudal(Variant):
    """``arch.subgoal_head.enabled``: the goal is injected into L; the worker and manager terms
    (``loss.feudal_loss_weight``, ``loss.feudal_manager_weight``) each train their own part."""

    name = "feudal"

    def __init__(self, inner: nn.Module, cfg: ArchConfig):
        inner.subgoal = SubgoalHead(cfg)
        self.head = inner.subgoal
        self.worker = inner.L_level.layers  # the worker term trains these blocks only (not the gates)
        self.dtype = inner.forward_dtype
        self.hidden, self.goal_dim = cfg.hidden_size, cfg.goal_dim

    @staticmethod
    def enabled(arch: ArchConfig) -> bool:
        return arch.subgoal_head.enabled

    @staticmethod
    def flops(arch: ArchConfig, batch_size: int, tokens: int) -> Flops:
        head = arch.subgoal_head
        D, G = arch.hidden_size, arch.goal_dim
        return Flops(segment=2 * batch_size * (D * G * (not head.random_goals) + (G * D + D) * head.inject))

    def empty_state(self, batch_size: int, device: torch.device | None) -> State:
        return {
            "src": torch.zeros(batch_size, self.hidden, device=device),
            "anchor": torch.zeros(batch_size, self.goal_dim, device=device),
            "rand": torch.zeros(batch_size, self.goal_dim, device=device),
            "age": torch.zeros(batch_size, dtype=torch.int32, device=device),
        }

    def reset_state(self, reset: torch.Tensor, state: State) -> State:
        """A halted row starts with a fresh goal."""
        return dict(state, age=torch.where(reset, 0, state["age"]))

    def begin(self, segment: Segment, carry, generator: torch.Generator | None):
        """Refresh the goal of rows whose period is up, and inject it into L."""
        st, head = carry.variants[self.name], self.head
        refresh = st["age"] % head.cfg.manager_period == 0  # (B,)
        r = refresh.unsqueeze(-1)
        src = torch.where(r, carry.z_H.float().mean(dim=1), st["src"])
        anchor = torch.where(r, head.state(carry.z_L), st["anchor"])
        rand = st["rand"]
        if head.cfg.random_goals:  # drawn only in that arm: other arms' random streams are untouched
            fresh = torch.randn(rand.shape, generator=generator, device=rand.device)
            rand = torch.where(r, F.normalize(fresh, dim=-1), rand)
        goal = head.goal(src, rand)
        segment.L.extra, gate = head.injection(goal, src, self.dtype)
        return {"src": src, "anchor": anchor, "rand": rand, "age": st["age"] + 1}, goal, gate, refresh

    def end(self, kept, z_L: torch.Tensor):
        state, goal, gate, refreshed = kept
        displacement = self.head.state(z_L) - state["anchor"]  # (B, G), grad to the L path
        aux = {
            "worker": 1 - F.cosine_similarity(displacement, goal.detach(), dim=-1),
            "manager": 1 - F.cosine_similarity(displacement.detach(), goal, dim=-1),
            "refreshed": refreshed,
            "gate": gate.detach(),
        }
        return {k: v.detach() for k, v in state.items()}, aux

    def terms(self, f, weights):
        """The worker term trains the L module's blocks (not the manager, not any gate), the
        manager term only the manager."""
        side = []
        worker, manager = weights.get("feudal_loss_weight", 0.0), weights.get("feudal_manager_weight", 0.0)
        if worker > 0:
            side.append((worker * f["worker"].sum(), list(self.worker.parameters())))
        if manager > 0 and not self.head.cfg.random_goals:
            side.append((manager * f["manager"].sum(), list(self.head.manager.parameters())))
        metrics = {
            names.FEUDAL_LOSS: f["worker"].detach().mean(),
            names.FEUDAL_MANAGER_LOSS: f["manager"].detach().mean(),
            names.FEUDAL_ALIGNMENT: 1 - f["worker"].detach().mean(),
            names.FEUDAL_GOAL_UPDATES: f["refreshed"].float().mean(),
            names.FEUDAL_GATE_MEAN: f["gate"].float().mean(),
        }
        return None, side, metrics
