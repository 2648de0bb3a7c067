"""The hooks a research variant attaches through, and the set of variants a model carries.

A segment of the recurrence gives every level one hook, its input (``LevelInput``): the
paper's ``z + injection``. A variant may replace that sum by its own mix of the terms
(gating) or add a term to it (the feudal goal). Around the segment a variant may read and
write its own state in the carry, and report what its loss term and metrics need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hrm_core.config.schema import ArchConfig

State = dict[str, torch.Tensor]
Mix = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor]]


class LevelInput:
    """One level's input in one segment: ``z + (s_1 + ... + s_k)``.

    ``mix``: a variant's replacement for the sum, ``(z, s_1, ..., s_k) -> (input, record)``;
    the records of its last two calls are kept (``last``, ``previous``). ``extra``: a term a
    variant adds to the injection (after the mix, when there is one).
    """

    def __init__(self) -> None:
        self.mix: Mix | None = None
        self.extra: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None

    def __call__(self, z: torch.Tensor, sources: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.mix is None:
            injection = sources[0]
            for source in sources[1:]:
                injection = injection + source
            if self.extra is not None:
                injection = injection + self.extra
            return z + injection
        z, record = self.mix((z, *sources))
        self.previous, self.last = self.last, record
        return z if self.extra is None else z + self.extra


class Segment:
    """The hooks of one segment: the L and H inputs, and what each variant keeps until its end."""

    def __init__(self) -> None:
        self.L, self.H = LevelInput(), LevelInput()
        self.kept: list = []


@dataclass(frozen=True)
class Flops:
    """FLOPs a variant adds: per L call, per H call, and once per segment."""

    L_call: int = 0
    H_call: int = 0
    segment: int = 0


class Variant:
    """A research variant, switched by config. ``Variant(inner, arch)`` attaches it to the model:
    it creates its modules where their parameter names belong, after the baseline is
    initialised. Every hook below is optional.

    ``name`` keys its state in the carry (``InnerCarry.variants``) and its entry in ``aux``.
    """

    name = ""

    @staticmethod
    def enabled(arch: ArchConfig) -> bool:
        """Whether ``arch`` switches it on."""
        return False

    @staticmethod
    def flops(arch: ArchConfig, batch_size: int, tokens: int) -> Flops:
        """Matmul FLOPs it adds to an ``arch`` that enables it (no model built)."""
        return Flops()

    def empty_state(self, batch_size: int, device: torch.device | None) -> State | None:
        return None

    def reset_state(self, reset: torch.Tensor, state: State) -> State:
        """The state of a batch whose rows ``reset`` (B,) halted and take a new example."""
        return state

    def begin(self, segment: Segment, carry, generator: torch.Generator | None):
        """Before the cycles: hook the levels' inputs; returns what ``end`` needs."""

    def end(self, kept, z_L: torch.Tensor) -> tuple[State | None, dict | None]:
        """After the one-step gradient: -> (its new carry state, its aux entry)."""
        return None, None

    def terms(self, aux, weights: dict[str, float]) -> tuple[torch.Tensor | None, list, dict]:
        """Its aux entry -> (term added to the loss, [(term, params)] applied to those params
        only, per-step metrics as 0-d tensors). Terms are summed over rows, like lm_loss."""
        return None, [], {}


class Variants:
    """The variants a model carries, in the order they were attached; each hook is called on all."""

    def __init__(self, variants: list[Variant]):
        self.variants = tuple(variants)
        self.by_name = {v.name: v for v in self.variants}

    def empty_state(self, batch_size: int, device: torch.device | None) -> dict[str, State]:
        return {v.name: s for v in self.variants if (s := v.empty_state(batch_size, device)) is not None}

    def reset_state(self, reset: torch.Tensor, states: dict[str, State]) -> dict[str, State]:
        return {name: self.by_name[name].reset_state(reset, s) for name, s in states.items()}

    def begin(self, carry, generator: torch.Generator | None) -> Segment:
        segment = Segment()
        segment.kept = [v.begin(segment, carry, generator) for v in self.variants]
        return segment

    def end(self, segment: Segment, z_L: torch.Tensor) -> tuple[dict[str, State], dict]:
        states, aux = {}, {}
        for variant, kept in zip(self.variants, segment.kept, strict=True):
            state, out = variant.end(kept, z_L)
            if state is not None:
                states[variant.name] = state
            if out is not None:
                aux[variant.name] = out
        return states, aux

    def terms(self, aux: dict, weights: dict[str, float]) -> tuple[torch.Tensor | None, list, dict]:
        """All variants' ``terms``: their loss terms summed, side terms and metrics gathered."""
        total, side, metrics = None, [], {}
        for variant in self.variants:
            if variant.name in aux:
                term, more, stats = variant.terms(aux[variant.name], weights)
                if term is not None:
                    total = term if total is None else total + term
                side += more
                metrics.update(stats)
        return total, side, metrics
