"""Research variants, each switched by config and off by default, each in its own module
(``gating.py``, ``feudal.py``) with its parameters, hook, carry state, loss terms, metrics
and FLOPs; ``base.py`` holds the hooks they attach through.

With every variant off the model is the reference HRM bit for bit: no parameter is created
and no random number is drawn.
"""

from __future__ import annotations

from torch import nn

from hrm_core.config.schema import ArchConfig
from hrm_core.model.variants.base import Flops, LevelInput, Segment, State, Variant, Variants
from hrm_core.model.variants.feudal import Feudal, SubgoalHead
from hrm_core.model.variants.gating import Gating, InputGate

__all__ = ["VARIANTS", "Feudal", "Flops", "Gating", "InputGate", "LevelInput", "Segment", "State",
           "SubgoalHead", "Variant", "Variants", "attach_variants", "variant_flops"]

# In the order they are attached: it is the order their parameters are initialised in.
VARIANTS: tuple[type[Variant], ...] = (Gating, Feudal)


def attach_variants(inner: nn.Module, cfg: ArchConfig) -> Variants:
    """Attach the variants ``cfg`` enables to ``inner`` (after its baseline is initialised)."""
    return Variants([variant(inner, cfg) for variant in VARIANTS if variant.enabled(cfg)])


def variant_flops(arch: ArchConfig, batch_size: int, tokens: int) -> Flops:
    """The FLOPs the variants ``arch`` enables add (none: zero)."""
    parts = [variant.flops(arch, batch_size, tokens) for variant in VARIANTS if variant.enabled(arch)]
    return Flops(*(sum(getattr(p, k) for p in parts) for k in ("L_call", "H_call", "segment")))
