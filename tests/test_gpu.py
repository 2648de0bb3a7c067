"""GPU parity: the fused AdamATan2 kernel and flash-attn against their pure-torch paths.

Skipped on machines without CUDA (``make test-gpu`` runs them on a GPU box).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_fused_adam_atan2_matches_pure_torch():
    from hrm_core.train.optim import AdamATan2, FusedAdamATan2

    if FusedAdamATan2 is None:
        pytest.skip("adam-atan2 (fused) is not installed: pip install -e '.[gpu]'")
    torch.manual_seed(0)
    p_ref = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    p_fused = torch.nn.Parameter(p_ref.detach().clone())
    ref = AdamATan2([p_ref], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    fused = FusedAdamATan2([p_fused], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    for lr in (0.0, 1e-3, 3e-3):
        for opt in (ref, fused):
            for g in opt.param_groups:
                g["lr"] = lr
        grad = torch.randn(4096, device="cuda")
        p_ref.grad, p_fused.grad = grad.clone(), grad.clone()
        ref.step()
        fused.step()
    torch.testing.assert_close(p_fused, p_ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_attention_matches_sdpa(dtype):
    from hrm_core.model.layers import FLASH_ATTN, attention

    if FLASH_ATTN is None:
        pytest.skip("flash-attn is not installed: pip install -e '.[gpu]'")
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 97, 8, 64, device="cuda", dtype=dtype) for _ in range(3))
    torch.testing.assert_close(
        attention(q, k, v, use_flash=True), attention(q, k, v, use_flash=False), atol=2e-2, rtol=2e-2
    )


def test_model_trains_a_step_on_gpu():
    from hrm_core.config.schema import ArchConfig
    from hrm_core.model.hrm import ModelDims, build_model

    with torch.device("cuda"):
        model = build_model(
            ArchConfig(hidden_size=64, num_heads=2, H_layers=1, L_layers=1, halt_max_steps=2),
            ModelDims(11, 16, 2),
        )
        model.model.configure_kernels(flash_attention=True)
        batch = {
            "inputs": torch.randint(1, 11, (4, 16), dtype=torch.int32),
            "labels": torch.randint(1, 11, (4, 16)),
            "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
        }
        carry, loss, *_ = model(model.initial_carry(batch), batch)
        loss.backward()
    assert torch.isfinite(loss)
