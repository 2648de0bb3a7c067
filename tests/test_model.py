"""Facts of the reference model that the fixture cannot see."""

from __future__ import annotations

import pytest
import torch

from hrm_core.config.schema import ArchConfig
from hrm_core.model.hrm import ModelDims, build_model

DIMS = ModelDims(vocab_size=11, seq_len=16, num_puzzle_identifiers=5)


def tiny(**kw) -> ArchConfig:
    base = dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=3,
                puzzle_emb_ndim=32, halt_max_steps=4, forward_dtype="float32")
    return ArchConfig(**{**base, **kw})


def batch(B=6, seed=0, offset=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 11, (B, 16), generator=g, dtype=torch.int32),
        "labels": torch.randint(1, 11, (B, 16), generator=g, dtype=torch.int32),
        "puzzle_identifiers": (torch.arange(B, dtype=torch.int32) + offset) % 5,
    }


def test_q_head_starts_at_zero_weights_and_bias_minus_5():
    model = build_model(tiny(), DIMS)
    q = model.model.inner.q_head
    assert torch.count_nonzero(q.weight) == 0
    assert torch.equal(q.bias, torch.full((2,), -5.0))


def test_puzzle_embedding_is_zero_initialised_buffer():
    inner = build_model(tiny(), DIMS).model.inner
    assert torch.count_nonzero(inner.puzzle_emb.weights) == 0
    assert not any(p is inner.puzzle_emb.weights for p in inner.parameters())


def test_gradient_reaches_only_the_last_L_and_H_calls():
    arch = tiny(H_cycles=3, L_cycles=2)
    model = build_model(arch, DIMS).train()
    calls = {"L": [], "H": []}
    inner = model.model.inner
    inner.L_level.register_forward_hook(lambda m, i, o: calls["L"].append(o[0].requires_grad))
    inner.H_level.register_forward_hook(lambda m, i, o: calls["H"].append(o[0].requires_grad))
    b = batch()
    carry = model.initial_carry(b)
    new_carry, loss, *_ = model(carry, b)
    # first 3*2 L calls and 3 H calls form the segment; the rest is the no-grad Q-target segment
    n_l, n_h = arch.H_cycles * arch.L_cycles, arch.H_cycles
    assert calls["L"][:n_l] == [False] * (n_l - 1) + [True]
    assert calls["H"][:n_h] == [False] * (n_h - 1) + [True]
    assert not any(calls["L"][n_l:]) and not any(calls["H"][n_h:])
    assert not new_carry.inner.z_H.requires_grad and not new_carry.inner.z_L.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _force_q(model, halt: float, cont: float):
    with torch.no_grad():
        model.model.inner.q_head.bias.copy_(torch.tensor([halt, cont]))


def test_exploration_happens_in_training_and_never_in_eval():
    model = build_model(tiny(halt_exploration_prob=1.0, halt_max_steps=6), DIMS)
    _force_q(model, 5.0, -5.0)  # q_halt > q_continue: halt at once unless exploring
    b = batch(B=64)
    model.train()
    carry, *_ = model(model.initial_carry(b), b, generator=torch.Generator().manual_seed(0))
    assert not carry.halted.any(), "exploration draws a minimum of >= 2 steps for every row"
    model.eval()
    carry = model.initial_carry(b)
    with torch.no_grad():
        for step in range(1, 7):
            carry, *_ = model(carry, b)
            assert bool(carry.halted.all()) == (step == 6), "eval halts only at halt_max_steps"
    model.train()
    model.model.cfg = model.model.cfg.model_copy(update={"halt_exploration_prob": 0.0})
    carry, *_ = model(model.initial_carry(b), b)
    assert carry.halted.all(), "without exploration the Q head halts every row at step 1"


def test_exploration_minimum_steps_are_random_in_range():
    model = build_model(tiny(halt_exploration_prob=1.0, halt_max_steps=5), DIMS).train()
    _force_q(model, 5.0, -5.0)
    b = batch(B=200)
    carry = model.initial_carry(b)
    halted_at = torch.zeros(200, dtype=torch.int32)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 6):
        carry, *_ = model(carry, b, generator=g)
        halted_at = torch.where((halted_at == 0) & carry.halted, step, halted_at)
        carry.halted = torch.zeros_like(carry.halted)  # keep every row on its example
    assert set(halted_at.unique().tolist()) == {2, 3, 4, 5}


def test_halted_rows_reset_and_take_new_data():
    model = build_model(tiny(halt_exploration_prob=0.0, halt_max_steps=3), DIMS).train()
    inner = model.model.inner
    b1, b2 = batch(seed=1), batch(seed=2, offset=1)
    carry, *_ = model(model.initial_carry(b1), b1)
    assert not carry.halted.any()  # q_halt == q_continue at init: no early halt
    carry.halted = torch.tensor([True, False, True, False, False, True])
    seen = {}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0].clone())  # first call of the segment only

        return hook

    inner.L_level.register_forward_pre_hook(record("z_L"))
    before = carry
    carry, *_ = model(before, b2)
    halted = before.halted
    for k in ("inputs", "labels", "puzzle_identifiers"):
        assert torch.equal(carry.current_data[k][halted], b2[k][halted])
        assert torch.equal(carry.current_data[k][~halted], before.current_data[k][~halted])
    assert torch.equal(carry.steps, torch.where(halted, 1, 2).to(torch.int32))
    # the first L call sees the reset state for halted rows and the carried state for the others
    assert torch.equal(seen["z_L"][halted], inner.L_init.expand_as(seen["z_L"][halted]))
    assert torch.equal(seen["z_L"][~halted], before.inner.z_L[~halted])


def test_rows_halt_at_max_steps_in_training():
    model = build_model(tiny(halt_exploration_prob=0.0, halt_max_steps=3), DIMS).train()
    b = batch()
    carry = model.initial_carry(b)
    for step in range(1, 4):
        carry, *_ = model(carry, b)
        assert bool(carry.halted.all()) == (step == 3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_forward_dtype_is_honoured(dtype):
    model = build_model(tiny(forward_dtype=dtype), DIMS).train()
    b = batch()
    carry, loss, sums, outputs, _ = model(model.initial_carry(b), b)
    assert carry.inner.z_H.dtype == getattr(torch, dtype)
    assert outputs["logits"].dtype == getattr(torch, dtype)
    assert outputs["q_halt_logits"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters()), "parameters stay fp32"
    assert torch.isfinite(loss)


def test_learned_positions_and_multi_token_puzzle_prefix():
    arch = tiny(pos_encodings="learned", puzzle_emb_ndim=48)  # 48 > 32: two prefix tokens, zero-padded
    model = build_model(arch, DIMS).train()
    assert model.model.inner.puzzle_emb_len == 2
    b = batch()
    carry, loss, *_ = model(model.initial_carry(b), b)
    assert carry.inner.z_H.shape == (6, 18, 32)
    loss.backward()
    assert model.model.inner.puzzle_emb.local_weights.grad.shape == (6, 48)


def test_bf16_via_fp32_gemms_matches_native_bf16_kernels():
    """The fp32-GEMM path for bf16 (CPUs without native bf16) does the bf16 kernels'
    arithmetic: bf16 operands, fp32 accumulation, bf16 output."""
    from hrm_core.model.layers import CastedLinear, attention

    torch.manual_seed(0)
    lin = CastedLinear(256, 384, bias=True)
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(4, 50, 256).to(torch.bfloat16)
    native = lin(x)
    lin.upcast = True
    upcast = lin(x)
    assert upcast.dtype == torch.bfloat16
    # only the summation order differs: at most a bf16 rounding step on a few elements. The
    # step is relative to the sum's terms (|x| @ |W|^T + |b|), not to the sum, which can cancel
    # to near zero: there a different order moves the last bits by more than 2^-7 of the sum.
    assert (upcast != native).float().mean().item() < 0.01
    scale = x.float().abs() @ lin.weight.float().abs().T + lin.bias.float().abs()
    assert ((upcast.float() - native.float()).abs() <= 2**-7 * scale).all()

    q, k, v = (torch.randn(2, 50, 4, 32).to(torch.bfloat16) for _ in range(3))
    exact = attention(q.double(), k.double(), v.double(), use_flash=False)
    ours = attention(q, k, v, use_flash=False, upcast=True)
    theirs = attention(q, k, v, use_flash=False, upcast=False)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    err_ours = (ours.double() - exact).abs().max().item()
    err_native = (theirs.double() - exact).abs().max().item()
    assert err_ours <= err_native + 1e-12, "never less precise than the native bf16 kernel"
    torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=2e-2)
