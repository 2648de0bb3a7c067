"""The Hierarchical Reasoning Model (ACT v1), faithful to the reference implementation.

Reads top to bottom: a post-norm transformer block, the H and L reasoning modules,
the inner model (one ACT segment: the no-grad H/L loop, then one gradient step), and
the ACT wrapper that halts, resets and feeds rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hrm_core.config.schema import ArchConfig
from hrm_core.model.layers import (
    FLASH_ATTN,
    Attention,
    CastedEmbedding,
    CastedLinear,
    CosSin,
    RotaryEmbedding,
    SwiGLU,
    rms_norm,
    trunc_normal_,
)
from hrm_core.model.variants import LevelInput, State, attach_variants

Batch = dict[str, torch.Tensor]


@dataclass
class ModelDims:
    """What the dataset fixes about the model."""

    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int


@dataclass
class InnerCarry:
    z_H: torch.Tensor  # (B, T, D)
    z_L: torch.Tensor  # (B, T, D)
    variants: dict[str, State] = field(default_factory=dict)  # each variant's own state, by its name


@dataclass
class Carry:
    inner: InnerCarry
    steps: torch.Tensor  # (B,) int32: segments run on the current example
    halted: torch.Tensor  # (B,) bool: the row takes new data at the next call
    current_data: Batch = field(default_factory=dict)

    def state(self) -> dict:
        """The carry as a checkpoint holds it: z_H, z_L, each variant's state under its name,
        steps, halted, current_data."""
        inner = self.inner
        return {"z_H": inner.z_H, "z_L": inner.z_L, **inner.variants,
                "steps": self.steps, "halted": self.halted, "current_data": self.current_data}

    @classmethod
    def load_state(cls, state: dict, device: torch.device) -> Carry:
        """The carry ``state()`` saved, on ``device``. A checkpoint without a variant's state
        may name it with None (older checkpoints hold ``"feudal": None``)."""
        core = ("z_H", "z_L", "steps", "halted", "current_data")
        variants = {name: {k: v.to(device) for k, v in s.items()}
                    for name, s in state.items() if name not in core and s is not None}
        inner = InnerCarry(state["z_H"].to(device), state["z_L"].to(device), variants)
        data = {k: v.to(device) for k, v in state["current_data"].items()}
        return cls(inner, state["steps"].to(device), state["halted"].to(device), data)


class Block(nn.Module):
    """Post-norm transformer block: x = rms(x + attn(x)); x = rms(x + mlp(x))."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_heads)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)
        self.eps = cfg.rms_norm_eps

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        x = rms_norm(x + self.self_attn(x, cos_sin), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """H or L module: add the injection (the other module's state, and the input for L) to the
    state, then run the blocks. The sum is the level's input hook, where variants attach."""

    def __init__(self, cfg: ArchConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(num_layers))

    def forward(self, z: torch.Tensor, sources: tuple[torch.Tensor, ...], cos_sin: CosSin | None,
                level_input: LevelInput) -> torch.Tensor:
        z = level_input(z, sources)
        for layer in self.layers:
            z = layer(z, cos_sin)
        return z


class PuzzleEmbedding(nn.Module):
    """Per-puzzle prefix embedding: a zero-initialised *buffer* trained by sign-SGD.

    In training, the batch's rows are gathered into a fresh leaf tensor (``local_weights``)
    whose gradient the sign-SGD optimizer applies to just those rows.
    """

    def __init__(self, num_embeddings: int, dim: int, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(torch.zeros(num_embeddings, dim), persistent=True)
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]
        if self.training and torch.is_grad_enabled():
            rows.requires_grad_(True)
            self.local_weights, self.local_ids = rows, ids
        return rows.to(self.cast_to)


class HRMInner(nn.Module):
    """One ACT segment of the hierarchical recurrence."""

    def __init__(self, cfg: ArchConfig, dims: ModelDims):
        super().__init__()
        self.cfg, self.dims = cfg, dims
        self.forward_dtype = getattr(torch, cfg.forward_dtype)
        D = cfg.hidden_size
        self.embed_scale = math.sqrt(D)
        self.puzzle_emb_len = -(cfg.puzzle_emb_ndim // -D)  # ceil
        self.seq_len = dims.seq_len + self.puzzle_emb_len

        init_std = 1 / self.embed_scale
        self.embed_tokens = CastedEmbedding(dims.vocab_size, D, init_std=init_std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(D, dims.vocab_size, bias=False)
        self.q_head = CastedLinear(D, 2, bias=True)
        if cfg.puzzle_emb_ndim > 0:
            self.puzzle_emb = PuzzleEmbedding(dims.num_puzzle_identifiers, cfg.puzzle_emb_ndim,
                                              self.forward_dtype)
        if cfg.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(D // cfg.num_heads, self.seq_len, cfg.rope_theta)
        else:
            self.embed_pos = CastedEmbedding(self.seq_len, D, init_std=init_std, cast_to=self.forward_dtype)

        self.H_level = ReasoningModule(cfg, cfg.H_layers)  # input: z_H + z_L
        self.L_level = ReasoningModule(cfg, cfg.L_layers)  # input: z_L + (z_H + x)
        self.H_init = nn.Buffer(trunc_normal_(torch.empty(D, dtype=self.forward_dtype), std=1))
        self.L_init = nn.Buffer(trunc_normal_(torch.empty(D, dtype=self.forward_dtype), std=1))
        with torch.no_grad():  # Q starts near "never halt" so ACT bootstraps from the max budget
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)
        # Variants are attached after the baseline, so its initialisation is unchanged.
        self.variants = attach_variants(self, cfg)

    def input_embeddings(self, inputs: torch.Tensor, puzzle_rows: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the puzzle prefix, scaled by sqrt(hidden). -> (B, T, D)"""
        x = self.embed_tokens(inputs.to(torch.int32))  # (B, L, D)
        if puzzle_rows is not None:
            pad = self.puzzle_emb_len * self.cfg.hidden_size - puzzle_rows.shape[-1]
            if pad > 0:
                puzzle_rows = F.pad(puzzle_rows, (0, pad))
            x = torch.cat((puzzle_rows.view(-1, self.puzzle_emb_len, self.cfg.hidden_size), x), dim=-2)
        if self.cfg.pos_encodings == "learned":  # 1/sqrt(2) keeps the forward variance
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * x

    def empty_carry(self, batch_size: int, device: torch.device | None = None) -> InnerCarry:
        shape = (batch_size, self.seq_len, self.cfg.hidden_size)
        return InnerCarry(
            z_H=torch.zeros(shape, dtype=self.forward_dtype, device=device),
            z_L=torch.zeros(shape, dtype=self.forward_dtype, device=device),
            variants=self.variants.empty_state(batch_size, device),
        )

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        variants = self.variants.reset_state(reset, carry.variants)
        reset = reset.view(-1, 1, 1)
        return InnerCarry(
            z_H=torch.where(reset, self.H_init, carry.z_H),
            z_L=torch.where(reset, self.L_init, carry.z_L),
            variants=variants,
        )

    def forward(self, carry: InnerCarry, inputs: torch.Tensor, puzzle_rows: torch.Tensor | None,
                with_outputs: bool = True, generator: torch.Generator | None = None,
                ) -> tuple[InnerCarry, torch.Tensor | None, torch.Tensor, dict]:
        """-> (new carry, logits (B, L, V) or None, q logits (B, 2) fp32 [halt, continue], aux).

        The variants hook into the levels' inputs (``seg.L``, ``seg.H``); ``aux`` holds what
        they report, by variant (empty for the baseline).
        """
        cos_sin = self.rotary_emb() if self.cfg.pos_encodings == "rope" else None
        x = self.input_embeddings(inputs, puzzle_rows)  # (B, T, D)
        seg = self.variants.begin(carry, generator)
        with torch.no_grad():  # all cycles but the last L and H step: no gradient
            z_H, z_L = carry.z_H, carry.z_L
            for h in range(self.cfg.H_cycles):
                for l_step in range(self.cfg.L_cycles):
                    if not (h == self.cfg.H_cycles - 1 and l_step == self.cfg.L_cycles - 1):
                        z_L = self.L_level(z_L, (z_H, x), cos_sin, seg.L)
                if h != self.cfg.H_cycles - 1:
                    z_H = self.H_level(z_H, (z_L,), cos_sin, seg.H)
        assert not z_H.requires_grad and not z_L.requires_grad

        # One-step gradient: only the last L and H calls are differentiated.
        z_L = self.L_level(z_L, (z_H, x), cos_sin, seg.L)
        z_H = self.H_level(z_H, (z_L,), cos_sin, seg.H)

        variant_states, aux = self.variants.end(seg, z_L)
        new_carry = InnerCarry(z_H=z_H.detach(), z_L=z_L.detach(), variants=variant_states)
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :] if with_outputs else None
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)  # (B, 2)
        return new_carry, logits, q_logits, aux


class HRM(nn.Module):
    """ACT wrapper: one call = one segment; halted rows reset and take the new batch's rows."""

    def __init__(self, cfg: ArchConfig, dims: ModelDims):
        super().__init__()
        self.cfg = cfg
        self.inner = HRMInner(cfg, dims)
        self._compiled_inner = None

    def compile_inner(self, **kwargs) -> None:
        # Kept out of the module tree so state_dict keys stay those of the eager model.
        self.__dict__["_compiled_inner"] = torch.compile(self.inner, dynamic=False, **kwargs)

    @property
    def _inner_call(self):
        return self._compiled_inner if self._compiled_inner is not None else self.inner

    def configure_kernels(self, flash_attention: bool = False, upcast_low_precision: bool = False) -> None:
        """flash-attn (CUDA only) and the fp32-GEMM path for bf16 on CPUs without native bf16."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.use_flash = flash_attention and FLASH_ATTN is not None
                module.upcast = upcast_low_precision
            if isinstance(module, CastedLinear):
                module.upcast = upcast_low_precision

    def initial_carry(self, batch: Batch) -> Carry:
        B = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return Carry(
            inner=self.inner.empty_carry(B, device),
            steps=torch.zeros(B, dtype=torch.int32, device=device),
            halted=torch.ones(B, dtype=torch.bool, device=device),  # all rows take data at the first call
            current_data={k: torch.empty_like(v) for k, v in batch.items()},
        )

    def forward(self, carry: Carry, batch: Batch,
                generator: torch.Generator | None = None) -> tuple[Carry, dict]:
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {
            k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
            for k, v in carry.current_data.items()
        }
        puzzle_rows = None
        if self.cfg.puzzle_emb_ndim > 0:
            puzzle_rows = self.inner.puzzle_emb(data["puzzle_identifiers"])

        inner_carry, logits, q, aux = self._inner_call(inner_carry, data["inputs"], puzzle_rows,
                                                       generator=generator)
        outputs = {"logits": logits, "q_halt_logits": q[:, 0], "q_continue_logits": q[:, 1], "aux": aux}

        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= self.cfg.halt_max_steps
            halted = is_last
            if self.training and self.cfg.halt_max_steps > 1:  # eval always runs every step
                halted = halted | (outputs["q_halt_logits"] > outputs["q_continue_logits"])
                draw = {"generator": generator, "device": steps.device}
                explore = torch.rand(steps.shape, **draw) < self.cfg.halt_exploration_prob
                H = self.cfg.halt_max_steps
                min_steps = torch.randint(2, H + 1, steps.shape, dtype=steps.dtype, **draw)
                halted = halted & (steps >= explore * min_steps)
                # Q-continue target: bootstrapped from one more segment on the new carry.
                rows = puzzle_rows.detach() if puzzle_rows is not None else None
                _, _, next_q, _ = self._inner_call(inner_carry, data["inputs"], rows, with_outputs=False,
                                                   generator=generator)
                outputs["target_q_continue"] = torch.sigmoid(
                    torch.where(is_last, next_q[:, 0], torch.maximum(next_q[:, 0], next_q[:, 1]))
                )
        return Carry(inner_carry, steps, halted, data), outputs


def build_model(
    cfg: ArchConfig,
    dims: ModelDims,
    loss_type: str = "stablemax_cross_entropy",
    loss_weights: dict[str, float] | None = None,
) -> nn.Module:
    """The trainable module: the ACT loss head around the model (reference state-dict layout)."""
    from hrm_core.train.losses import ACTLossHead

    return ACTLossHead(HRM(cfg, dims), loss_type, loss_weights)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
