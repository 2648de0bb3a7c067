"""FLOPs of the HRM: one block, one ACT segment and one training step, counted from the
architecture alone (no model is built). ``python -m hrm_core.summary`` prints them; the
compute accounting (``observe/compute.py``) turns them into compute/* metrics; the tests
check them against torch.utils.flop_counter."""

from __future__ import annotations

from dataclasses import dataclass

from hrm_core.config.schema import ArchConfig
from hrm_core.model.layers import swiglu_width
from hrm_core.model.variants import variant_flops


@dataclass
class Flops:
    block: int  # one transformer block, forward
    segment_forward: int  # one ACT segment: all H/L cycles + lm and Q heads
    q_target_forward: int  # the extra no-grad segment for the Q-continue target (no lm head)
    backward: int  # the one-step gradient: last L and H calls + heads, ~2x their forward
    train_step: int  # segment + Q target + backward

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def count_flops(
    arch: ArchConfig, vocab_size: int, seq_len: int, batch_size: int, training: bool = True
) -> Flops:
    """Matmul FLOPs (2 per multiply-add), the convention of torch.utils.flop_counter."""
    D, H = arch.hidden_size, arch.num_heads
    T = seq_len + -(arch.puzzle_emb_ndim // -D)
    M = batch_size * T  # tokens
    inter = swiglu_width(D, arch.expansion)
    linear = 2 * M * (D * 3 * D + D * D + D * 2 * inter + inter * D)
    attn = 2 * 2 * batch_size * H * T * T * (D // H)  # QK^T and AV
    block = linear + attn
    L_calls, H_calls = arch.H_cycles * arch.L_cycles, arch.H_cycles
    variants = variant_flops(arch, batch_size, M)  # each variant counts its own
    L_call, H_call = block * arch.L_layers + variants.L_call, block * arch.H_layers + variants.H_call
    cycles = L_calls * L_call + H_calls * H_call + variants.segment
    lm_head = 2 * batch_size * seq_len * D * vocab_size
    q_head = 2 * batch_size * D * 2
    segment = cycles + lm_head + q_head
    grad_part = L_call + H_call + variants.segment + lm_head + q_head
    backward = 2 * grad_part
    q_target = cycles + q_head if training and arch.halt_max_steps > 1 else 0
    return Flops(block, segment, q_target, backward, segment + q_target + backward)


Gemm = tuple[int, int, int, int]  # (m, k, n, count): `count` products of an [m, k] by a [k, n] matrix


def step_gemms(arch: ArchConfig, vocab_size: int, seq_len: int, batch_size: int) -> list[Gemm]:
    """Every matmul of one training step as (m, k, n, count), identical shapes merged, in the
    layout torch computes them: a linear y = x W^T of [m, k] -> [m, n] is (m, k, n) forward,
    and (m, n, k) for dx = dy W plus (n, m, k) for dW = dy^T x in the backward; attention's
    QK^T and AV are per-head products (count = batch x heads x calls), with their four backward
    products (dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q).

    The step is the one ``count_flops`` counts: the segment's H/L cycles and heads, the
    Q-target forward (no lm head), the one-step gradient's last L and H calls and heads.
    sum(2 * m * k * n * count) == count_flops(...).train_step for an arch without variants;
    the variants' own products (gates, subgoal head) are not listed, so with a variant on the
    sum falls short of count_flops by their share."""
    D, H = arch.hidden_size, arch.num_heads
    T = seq_len + -(arch.puzzle_emb_ndim // -D)
    M, inter, hd = batch_size * T, swiglu_width(D, arch.expansion), D // H
    out: dict[tuple[int, int, int], int] = {}

    def add(m: int, k: int, n: int, count: int) -> None:
        if count:
            out[(m, k, n)] = out.get((m, k, n), 0) + count

    def linear(m: int, k: int, n: int, forward: int, backward: int) -> None:
        add(m, k, n, forward)
        add(m, n, k, backward)
        add(n, m, k, backward)

    cycles = arch.H_cycles * arch.L_cycles * arch.L_layers + arch.H_cycles * arch.H_layers  # blocks
    q_target = arch.halt_max_steps > 1
    blocks_fwd, blocks_bwd = cycles * (1 + q_target), arch.L_layers + arch.H_layers
    for k, n in ((D, 3 * D), (D, D), (D, 2 * inter), (inter, D)):  # qkv, o, gate_up, down
        linear(M, k, n, blocks_fwd, blocks_bwd)
    heads = batch_size * H
    add(T, hd, T, heads * (blocks_fwd + blocks_bwd))  # QK^T; backward dP = dO V^T
    add(T, T, hd, heads * (blocks_fwd + 3 * blocks_bwd))  # AV; backward dV, dQ, dK
    linear(batch_size * seq_len, D, vocab_size, 1, 1)  # lm head (segment only)
    linear(batch_size, D, 2, 1 + q_target, 1)  # Q head
    return [(m, k, n, c) for (m, k, n), c in out.items()]
