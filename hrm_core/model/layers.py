"""Building blocks of the HRM transformer: casted linear/embedding, RMSNorm, RoPE,
attention (flash-attn when installed, torch SDPA otherwise) and SwiGLU.

Parameters live in fp32 and are cast to the forward dtype at use, as in the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

try:  # CUDA-only kernels; the GPU image installs them (extra "gpu").
    from flash_attn_interface import flash_attn_func as _flash_attn_func  # FA3

    FLASH_ATTN = "flash-attn-3"
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn_func  # FA2

        FLASH_ATTN = "flash-attn-2"
    except ImportError:
        _flash_attn_func = None
        FLASH_ATTN = None

CosSin = tuple[torch.Tensor, torch.Tensor]

# std of a standard normal truncated to [-2, 2]; dividing by it makes the truncated
# draw have exactly the requested std (the JAX/LeCun convention the reference uses).
_TRUNC2_STD = math.sqrt(
    1 - (2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi)) / math.erf(2 / math.sqrt(2))
)


def trunc_normal_(
    tensor: torch.Tensor, std: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Truncated normal (±2 sigma) whose actual std is ``std``; ``std=0`` gives zeros."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
        return tensor.mul_(std / _TRUNC2_STD)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without gain, computed in fp32 and cast back."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding (rotate-half layout) in fp32. q, k: (B, T, H, Dh); cos, sin: (T, Dh)."""
    dtype = q.dtype
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


def _upcast(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


class CastedLinear(nn.Module):
    """Linear layer with fp32 weights cast to the input dtype; LeCun truncated-normal init.

    ``upcast`` (CPUs without native bf16): the bf16-rounded operands are multiplied by an
    fp32 GEMM and the result rounded back to bf16. Products of bf16 numbers are exact in
    fp32, so this is the bf16 kernel's arithmetic (fp32 accumulation, bf16 output) at fp32
    speed, instead of an emulated bf16 GEMM that is ~20x slower.
    """

    upcast = False

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        weight = trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        if self.upcast and x.dtype != torch.float32:
            return F.linear(x.float(), weight.float(), _upcast(bias)).to(x.dtype)
        return F.linear(x, weight, bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, Dh)
        self.cos_cached = nn.Buffer(emb.cos(), persistent=False)
        self.sin_cached = nn.Buffer(emb.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_flash: bool, upcast: bool = False
) -> torch.Tensor:
    """Bidirectional multi-head attention. q, k, v: (B, T, H, Dh) -> (B, T, H, Dh)."""
    if use_flash:
        out = _flash_attn_func(q, k, v, causal=False)
        return out[0] if isinstance(out, tuple) else out
    dtype = q.dtype
    if upcast and dtype != torch.float32:  # see CastedLinear.upcast
        q, k, v = q.float(), k.float(), v.float()
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).to(dtype)


class Attention(nn.Module):
    """Fused bias-free QKV projection, RoPE, attention, output projection."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)
        self.use_flash = False  # set by the model: flash-attn only on CUDA tensors
        self.upcast = False  # set by the model: see CastedLinear.upcast

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv_proj(x).view(B, T, 3 * self.num_heads, self.head_dim)
        q, k, v = qkv.split(self.num_heads, dim=2)  # (B, T, H, Dh) each
        if cos_sin is not None:
            q, k = apply_rope(q, k, *cos_sin)
        out = attention(q, k, v, self.use_flash, self.upcast)
        return self.o_proj(out.reshape(B, T, D))


def swiglu_width(hidden_size: int, expansion: float) -> int:
    """Intermediate width: 2/3 * expansion * hidden, rounded up to a multiple of 256."""
    return 256 * math.ceil(round(expansion * hidden_size * 2 / 3) / 256)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
