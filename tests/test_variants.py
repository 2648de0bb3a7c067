"""Research variants: each a single-factor change, off by default, with honest gradients."""

from __future__ import annotations

import math

import pytest
import torch

from hrm_core.config.compose import compose_config, compose_raw
from hrm_core.config.schema import ArchConfig, SubgoalHeadConfig
from hrm_core.errors import ConfigError
from hrm_core.model.hrm import ModelDims, build_model
from hrm_core.train.losses import backward_all

DIMS = ModelDims(vocab_size=11, seq_len=16, num_puzzle_identifiers=3)


def arch(**kw) -> ArchConfig:
    base = dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=2, H_cycles=2, L_cycles=2,
                puzzle_emb_ndim=32, halt_max_steps=4, forward_dtype="float32")
    return ArchConfig(**{**base, **kw})


def batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 11, (B, 16), generator=g, dtype=torch.int32),
        "labels": torch.randint(1, 11, (B, 16), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, 3, (B,), generator=g, dtype=torch.int32),
    }


def seeded(cfg: ArchConfig, weights=None):
    torch.manual_seed(0)
    return build_model(cfg, DIMS, loss_weights=weights)


def run(model, b, carry=None, gen_seed=0):
    carry = carry or model.initial_carry(b)
    return model(carry, b, generator=torch.Generator().manual_seed(gen_seed))


# --- disabled variants are the vanilla model, bit for bit ---------------------------------------
def test_disabled_variants_are_bit_for_bit_vanilla():
    vanilla = seeded(arch())
    knobs = arch(gate_hidden_ratio=3.0, gate_init_bias=1.5,
                 subgoal_head=SubgoalHeadConfig(manager_period=7, goal_dim=8))
    disabled = seeded(knobs)
    a, b_ = vanilla.state_dict(), disabled.state_dict()
    assert a.keys() == b_.keys()
    assert all(torch.equal(a[k], b_[k]) for k in a)
    b = batch()
    for m in (vanilla, disabled):
        m.train()
    c1, l1, s1, o1, _ = run(vanilla, b)
    c2, l2, s2, o2, _ = run(disabled, b)
    assert torch.equal(o1["logits"], o2["logits"]) and torch.equal(l1, l2) and torch.equal(s1, s2)
    assert "variant_metrics" not in o2


def test_enabling_a_variant_keeps_the_baseline_initialisation():
    vanilla = seeded(arch()).state_dict()
    gated = seeded(arch(use_gating=True)).state_dict()
    feudal = seeded(arch(subgoal_head=SubgoalHeadConfig(enabled=True))).state_dict()
    for other in (gated, feudal):
        for k, v in vanilla.items():
            assert torch.equal(other[k], v), k


# --- gating ----------------------------------------------------------------------------------------
def test_gates_start_at_sigmoid_of_init_bias():
    model = seeded(arch(use_gating=True, gate_init_bias=-2.2)).train()
    _, _, _, out, _ = run(model, batch())
    metrics = out["variant_metrics"]
    expected = 1 / (1 + math.exp(2.2))
    for key in ("gate/L/self_mean", "gate/L/H_mean", "gate/L/x_mean", "gate/H/self_mean", "gate/H/L_mean"):
        assert abs(metrics[key].item() - expected) < 1e-6, key
    gate = model.model.inner.L_level.gate
    h = torch.nn.functional.silu(gate.up(torch.randn(5, 96)))
    assert torch.allclose(torch.sigmoid(gate.down(h)), torch.full((5, 96), expected), atol=1e-6, rtol=0)


def test_gradient_reaches_every_gate_parameter_within_two_steps():
    from hrm_core.train.optim import AdamATan2

    model = seeded(arch(use_gating=True)).train()
    gate_params = {n: p for n, p in model.named_parameters() if ".gate." in n}
    assert len(gate_params) == 8  # up/down weight and bias, for L and H
    opt = AdamATan2(model.parameters(), lr=1e-2)
    reached = set()
    carry = None
    for step in range(2):
        carry, loss, *_ = run(model, batch(seed=step), carry, gen_seed=step)
        loss.backward()
        reached |= {n for n, p in gate_params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
        opt.zero_grad()
    assert reached == set(gate_params)


def test_gate_regularisers_add_to_the_loss_only_when_weighted():
    b = batch()
    plain = seeded(arch(use_gating=True)).train()
    weights = {"gate_saturation_weight": 1.0, "gate_stability_weight": 1.0}
    weighted = seeded(arch(use_gating=True), weights).train()
    _, l_plain, *_ = run(plain, b)
    _, l_weighted, *_ = run(weighted, b)
    # gates at sigmoid(-2.2) = 0.1: saturation term 1 - 4 * 0.1 * 0.9 = 0.64 per row, per module
    assert (l_weighted - l_plain).item() == pytest.approx(6 * 2 * (1 - 4 * 0.0998 * 0.9002), rel=1e-3)


# --- feudal subgoal head ---------------------------------------------------------------------------
FEUDAL = dict(subgoal_head=SubgoalHeadConfig(enabled=True, manager_period=2))


def _feudal_grads(weights, **arch_kw):
    model = seeded(arch(**{**FEUDAL, **arch_kw}), weights).train()
    _, loss, _, out, _ = run(model, batch())
    # only the feudal terms, each applied to its own parameters
    backward_all(torch.zeros((), requires_grad=True), out["side_losses"], 1.0)
    grads = {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0)
             for n, p in model.named_parameters()}
    return model, grads


def test_feudal_worker_term_trains_the_L_path_only():
    _, grads = _feudal_grads({"feudal_loss_weight": 1.0}, use_gating=True)
    assert any(v > 0 for n, v in grads.items() if n.startswith("model.inner.L_level.layers."))
    for name, value in grads.items():
        if "subgoal" in name or ".gate." in name or name.startswith("model.inner.H_level"):
            assert value == 0.0, f"{name} got gradient from the worker term"


def test_feudal_manager_term_trains_the_manager():
    _, grads = _feudal_grads({"feudal_manager_weight": 1.0}, use_gating=True)
    assert grads["model.inner.subgoal.manager.weight"] > 0
    assert all(v == 0.0 for n, v in grads.items() if ".gate." in n or n.startswith("model.inner.L_level"))


def test_manager_learns_from_the_task_loss_through_the_injection():
    model = seeded(arch(**FEUDAL)).train()
    _, loss, *_ = run(model, batch())
    loss.backward()
    head = model.model.inner.subgoal
    assert head.manager.weight.grad.abs().sum() > 0
    assert head.gate.weight.grad.abs().sum() > 0


def test_closing_the_goal_gate_cannot_lower_the_feudal_loss():
    b = batch()
    m_open = seeded(arch(**FEUDAL), {"feudal_loss_weight": 1.0}).train()
    m_closed = seeded(arch(**FEUDAL), {"feudal_loss_weight": 1.0}).train()
    with torch.no_grad():
        m_closed.model.inner.subgoal.gate.bias.fill_(-30.0)  # gate ~ 0
    for m in (m_open, m_closed):
        _, _, _, out, _ = run(m, b)
        term = out["side_losses"][0][0]
        assert term.item() == pytest.approx(out["variant_metrics"]["feudal/loss"].item() * 6, rel=1e-5)
    # the term is 1 - cos(displacement, goal): a number in [0, 2] per row, never scaled by the gate
    assert 0 <= out["variant_metrics"]["feudal/loss"].item() <= 2


@pytest.mark.parametrize("period", [1, 2, 4])
def test_goal_refreshes_follow_manager_period(period):
    cfg = arch(subgoal_head=SubgoalHeadConfig(enabled=True, manager_period=period), halt_max_steps=8,
               halt_exploration_prob=0.0)
    model = seeded(cfg).train()
    b = batch()
    carry, refreshes = None, 0
    for step in range(8):
        carry, _, _, out, _ = run(model, b, carry, gen_seed=step)
        refreshes += int(out["variant_metrics"]["feudal/goal_updates"].item() * 6 + 0.5)
    assert refreshes == 6 * (8 // period)


def test_goal_state_resets_when_a_row_halts():
    model = seeded(arch(**FEUDAL, halt_exploration_prob=0.0)).train()
    b = batch()
    carry, *_ = run(model, b)
    assert carry.inner.variants["feudal"]["age"].tolist() == [1] * 6
    carry.halted = torch.tensor([True, False, True, False, False, False])
    carry, _, _, out, _ = run(model, b, carry)
    assert carry.inner.variants["feudal"]["age"].tolist() == [1, 2, 1, 2, 2, 2]


def test_random_goals_arm_uses_no_manager():
    model = seeded(arch(subgoal_head=SubgoalHeadConfig(enabled=True, random_goals=True))).train()
    _, loss, *_ = run(model, batch())
    loss.backward()
    assert model.model.inner.subgoal.manager.weight.grad is None


# --- configs and validation ------------------------------------------------------------------------
def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hrm_v1_gated", {"arch.name", "arch.use_gating"}),
        ("hrm_v1_feudal", {"arch.name", "arch.subgoal_head.enabled", "loss.feudal_loss_weight"}),
        ("hrm_v1_balanced", {"arch.name", "arch.halt_max_steps"}),
    ],
)
def test_variant_configs_differ_from_hrm_v1_only_in_their_name(name, expected):
    base = _flat(compose_raw(["arch=hrm_v1"]))
    variant = _flat(compose_raw([f"arch={name}"]))
    vanilla = _flat(compose_config(["arch=hrm_v1"]).model_dump())
    composed = _flat(compose_config([f"arch={name}"]).model_dump())
    assert composed == {**vanilla, **{k: variant[k] for k in expected}}
    assert base.keys() == variant.keys()
    assert {k for k in base if base[k] != variant[k]} == expected


@pytest.mark.parametrize(
    "override, needle",
    [
        ("arch.gate_hidden_ratio=-0.5", "arch.gate_hidden_ratio"),
        ("arch.subgoal_head.manager_period=0", "arch.subgoal_head.manager_period"),
        ("arch.subgoal_head.goal_dim=0", "arch.subgoal_head.goal_dim"),
        ("arch.subgoal_head.goal_dim=1024", "goal_dim"),
        ("curriculum.stages=[]", "curriculum.stages is empty"),
        ("loss.feudal_loss_weight=0.1", "arch.subgoal_head.enabled=true (or arch=hrm_v1_feudal)"),
    ],
)
def test_out_of_range_variant_keys_are_rejected(override, needle):
    with pytest.raises(ConfigError) as err:
        compose_config(["arch=hrm_v1", override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
