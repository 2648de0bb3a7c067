"""The reference-throughput harness: its CPU stand-in for flash-attn computes attention on
flash-attn's [batch, seq, heads, dim] layout, and a wrong checkout path is one clear line."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _harness():
    spec = importlib.util.spec_from_file_location(
        "reference_throughput", os.path.join(ROOT, "benchmarks", "reference_throughput.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_stand_in_is_attention_on_the_flash_layout(causal):
    h = _harness()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))  # [B, S, H, D]
    scores = torch.einsum("bshd,bthd->bhst", q, k) / 4**0.5
    if causal:
        scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    expected = torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)
    out = h._sdpa_flash_attn_func(q, k, v, causal=causal)
    assert out.shape == q.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected)


def test_wrong_reference_dir_is_one_line(tmp_path):
    h = _harness()
    with pytest.raises(SystemExit) as e:
        h.import_reference(str(tmp_path))
    assert str(e.value).startswith(f"error: --reference-dir {tmp_path}: no models/hrm/hrm_act_v1.py")
