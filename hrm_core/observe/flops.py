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
