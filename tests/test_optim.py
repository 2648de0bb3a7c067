"""AdamATan2, sign-SGD on the puzzle embedding, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from hrm_core.model.hrm import PuzzleEmbedding
from hrm_core.train.optim import AdamATan2, SparseSignSGD, cosine_schedule


def closed_form(p0, grads, lr, b1, b2, wd):
    """AdamATan2 written out with Python floats, step by step."""
    p, m, v = p0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        p *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr / (1 - b1**t) * math.atan2(m, math.sqrt(v) / math.sqrt(1 - b2**t))
    return p


@pytest.mark.parametrize("lr", [0.0, 1e-2, 0.3])
def test_adam_atan2_matches_closed_form(lr):
    p0 = [0.5, -1.25, 3.0, 0.0]
    grads = [[0.1, -2.0, 0.0, 1e-8], [-0.3, 0.5, 0.0, -1e-8], [2.0, 2.0, 0.0, 3.0]]
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = AdamATan2([param], lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    for i in range(len(p0)):
        expected = closed_form(p0[i], [g[i] for g in grads], lr, 0.9, 0.95, 0.1)
        assert param[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if lr == 0:
        assert param.tolist() == p0  # lr = 0 (warm-up start) changes nothing, and is accepted


def test_adam_atan2_update_is_bounded_without_epsilon():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = AdamATan2([param], lr=1.0, weight_decay=0.0)
    param.grad = torch.tensor([1e-30, 1e30, -5.0])
    opt.step()
    # first step: |update| = lr / bc1 * atan2(|m|, |g| * (1-b1)... ) stays finite and bounded by lr/bc1 * pi/2
    assert torch.isfinite(param).all()
    assert param.abs().max().item() <= 1.0 / 0.1 * math.pi / 2 + 1e-6


def test_adam_atan2_rejects_negative_lr():
    with pytest.raises(ValueError):
        AdamATan2([torch.nn.Parameter(torch.zeros(1))], lr=-1.0)


def test_sign_sgd_changes_only_the_batch_rows():
    emb = PuzzleEmbedding(num_embeddings=10, dim=4, cast_to=torch.float32).train()
    with torch.no_grad():
        emb.weights.copy_(torch.arange(40, dtype=torch.float32).view(10, 4) / 10)
    before = emb.weights.clone()
    ids = torch.tensor([3, 7, 3, 1], dtype=torch.int32)
    out = emb(ids)
    grad = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.5, 0.5, 0.5, 0.5], [-3.0, 2.0, 0.0, -1.0],
                         [0.0, 0.0, -1.0, 0.0]])
    (out * grad).sum().backward()
    opt = SparseSignSGD(emb, lr=0.1, weight_decay=0.5)
    opt.step()
    changed = (emb.weights != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [1, 3, 7]
    # duplicated id 3: gradients are summed before the sign: [-2, 1, 0, 1]
    expected3 = before[3] * (1 - 0.1 * 0.5) - 0.1 * torch.tensor([-1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(emb.weights[3], expected3)
    opt.zero_grad()
    assert emb.local_weights is None


def test_sign_sgd_no_update_in_eval():
    emb = PuzzleEmbedding(4, 2, torch.float32).eval()
    emb(torch.tensor([1, 2]))
    assert emb.local_weights is None


def test_schedule_warmup_then_cosine_to_floor():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert cosine_schedule(0, **kw) == 0.0
    assert cosine_schedule(5, **kw) == pytest.approx(0.5)
    assert cosine_schedule(10, **kw) == pytest.approx(1.0)
    assert cosine_schedule(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_schedule(110, **kw) == pytest.approx(0.1)
    lrs = [cosine_schedule(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert cosine_schedule(50, base_lr=2.0, warmup_steps=0, total_steps=100, min_ratio=1.0) == 2.0


def test_compiled_adam_atan2_matches_eager():
    torch.manual_seed(0)
    shapes = [(64, 32), (32,), (7, 3, 5)]
    eager_p = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    comp_p = [torch.nn.Parameter(p.detach().clone()) for p in eager_p]
    eager = AdamATan2(eager_p, lr=1e-2, weight_decay=0.1)
    comp = AdamATan2(comp_p, lr=1e-2, weight_decay=0.1, compile=True)
    for lr in (0.0, 1e-2, 5e-3):
        for opt in (eager, comp):
            opt.param_groups[0]["lr"] = lr
        for a, b in zip(eager_p, comp_p, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        eager.step()
        comp.step()
    for a, b in zip(eager_p, comp_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
