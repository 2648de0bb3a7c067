"""The summary's FLOPs agree with torch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hrm_core.config.schema import ArchConfig
from hrm_core.model.hrm import ModelDims, build_model
from hrm_core.observe.flops import count_flops

CASES = {
    "hrm_v1": ArchConfig(forward_dtype="float32"),
    "hrm_v1_gated": ArchConfig(forward_dtype="float32", use_gating=True),
    "hrm_v1_feudal": ArchConfig(forward_dtype="float32", subgoal_head={"enabled": True, "goal_dim": 256}),
    "tiny_learned": ArchConfig(hidden_size=64, num_heads=2, H_layers=1, L_layers=2, H_cycles=3, L_cycles=2,
                               pos_encodings="learned", puzzle_emb_ndim=96, halt_max_steps=4,
                               forward_dtype="float32"),
}


def counted_train_step(arch: ArchConfig, batch_size: int) -> int:
    dims = ModelDims(vocab_size=11, seq_len=81, num_puzzle_identifiers=1)
    with torch.device("meta"):  # shapes only: counts FLOPs without computing them
        model = build_model(arch, dims).train()
        batch = {
            "inputs": torch.zeros(batch_size, 81, dtype=torch.int32),
            "labels": torch.zeros(batch_size, 81, dtype=torch.int32),
            "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32),
        }
        carry = model.initial_carry(batch)
    # The CPU flash kernel is not registered with the counter; SDPA's math path is (bmm).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss, *_ = model(carry, batch)
        loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_flops_match_flop_counter(name):
    arch = CASES[name]
    counted = counted_train_step(arch, batch_size=2)
    ours = count_flops(arch, vocab_size=11, seq_len=81, batch_size=2).train_step
    assert abs(ours - counted) / counted < 0.05, (ours, counted)
