"""The reference-throughput harness: its CPU stand-in for flash-attn computes attention on
flash-attn's [batch, seq, heads, dim] layout, and a wrong checkout path is one clear line."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def _harness():
    spec = importlib.util.spec_from_file_location(
        "reference_throughput", os.path.join(ROOT, "benchmarks", "reference_throughput.py")
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)  # its dataclasses resolve their annotations through it
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


# --- the step's GEMMs, the GEMM floor and the verdict of reference_throughput ---------------------


def _tiny_arch():
    from hrm_core.config.schema import ArchConfig

    return ArchConfig(**_harness().ARCHS["tiny"][0])


@pytest.mark.parametrize("name", ["hrm_v1", "tiny", "tiny_one_segment", "tiny_learned"])
def test_step_gemms_are_exactly_count_flops_train_step(name):
    from hrm_core.config.schema import ArchConfig
    from hrm_core.observe.flops import count_flops, step_gemms

    arch, batch = {
        "hrm_v1": (ArchConfig(), 8),
        "tiny": (_tiny_arch(), 64),
        "tiny_one_segment": (_tiny_arch().model_copy(update={"halt_max_steps": 1}), 3),  # no Q-target pass
        "tiny_learned": (ArchConfig(hidden_size=64, num_heads=2, H_layers=1, L_layers=2, H_cycles=3,
                                    L_cycles=2, pos_encodings="learned", puzzle_emb_ndim=96), 5),
    }[name]
    shapes = step_gemms(arch, 11, 81, batch)
    assert len({s[:3] for s in shapes}) == len(shapes) and all(c > 0 for *_, c in shapes)
    assert sum(2 * m * k * n * c for m, k, n, c in shapes) == count_flops(arch, 11, 81, batch).train_step


def test_step_gemms_leave_out_the_variants_products():
    from hrm_core.observe.flops import count_flops, step_gemms

    base, gated = _tiny_arch(), _tiny_arch().model_copy(update={"use_gating": True})
    assert step_gemms(gated, 11, 81, 4) == step_gemms(base, 11, 81, 4)
    assert count_flops(gated, 11, 81, 4).train_step > count_flops(base, 11, 81, 4).train_step


def test_gemm_seconds_times_mm_and_batched_products():
    h = _harness()
    cpu = torch.device("cpu")
    # (64, 256, 1024) is large enough for torch.mm; (17, 32, 17) goes batched through torch.bmm: 4000
    # products in batches of 2^22 // 9248 = 453 (8 full calls + 1 of the rest)
    for shapes, dtype in (([(64, 256, 1024, 2)], torch.float32), ([(17, 32, 17, 4000)], torch.float32),
                          ([(3, 4, 5, 7), (64, 256, 1024, 1)], torch.bfloat16)):
        seconds = h.gemm_seconds(shapes, dtype, cpu, repeats=2)
        assert 0 < seconds < 10, (shapes, dtype, seconds)


def test_alternating_order_reverses_every_step_and_round():
    h = _harness()
    calls = []
    fns = [lambda: calls.append("ref"), lambda: calls.append("ours")]
    times = h.time_alternating(fns, steps=2, budget_s=0.0, min_steps=2, reverse_first=True)
    assert calls == ["ours", "ref", "ref", "ours"] and [len(t) for t in times] == [2, 2]
    calls.clear()
    h.time_alternating(fns, steps=3, budget_s=0.0, min_steps=1)  # past the budget: one step, no more
    assert calls == ["ref", "ours"]


def test_summary_is_the_median_of_per_round_ratios():
    h = _harness()
    s = h.summarize([1.0, 2.0, 3.0], [1.0, 3.0, 1.0])
    assert (s.ref, s.ours, s.rounds) == (2.0, 1.0, 3)
    assert s.ratio == 1.0 and s.ratio_range == (2 / 3, 3.0)  # not the ratio of the medians (2.0)
    alone = h.summarize([1.0, 3.0], None)
    assert (alone.ref, alone.ours, alone.ratio) == (2.0, None, None)


def test_verdict_per_machine_class():
    h = _harness()
    assert [h.machine_class(True), h.machine_class(False), h.machine_class(False, cuda=True)] == [
        "AVX512-BF16", "AVX2", "GPU"]
    assert (h.verdict(0.97), h.verdict(0.9699)) == ("met", "not met")

    def case(ref, ratio, rounds=5):
        return h.CaseSummary(ref, ref / ratio, ratio, (ratio, ratio), rounds)

    # AVX2: the reference's faster fp32 path (compile here) is the one ours must match
    summaries = {"float32:eager": case(3.0, 1.2), "float32:compile": case(2.5, 0.95),
                 "bfloat16:compile": case(1.0, 1.0)}
    v = h.class_verdicts("AVX2", summaries)
    assert v["AVX2"].startswith("not met: the reference's float32:compile 2.500 s/step")
    assert v["AVX512-BF16"] == v["GPU"] == "not measured (this machine is AVX2)"
    assert h.fastest_reference_case(summaries) == "bfloat16:compile"
    v = h.class_verdicts("AVX512-BF16", summaries)
    assert v["AVX512-BF16"].startswith("met: ") and v["AVX512-BF16"].endswith("over 5 rounds")
    assert h.class_verdicts("AVX512-BF16", {"bfloat16:compile": case(1.0, 1.0, rounds=2)})[
        "AVX512-BF16"].endswith("(fewer than 5 rounds: indicative only)")
    assert h.class_verdicts("AVX512-BF16", {"float32:eager": case(1.0, 1.0)})["AVX512-BF16"] == (
        "not measured (bfloat16:compile not among the cases)")
    no_ours = {"bfloat16:compile": h.summarize([1.0], None)}
    assert h.class_verdicts("AVX512-BF16", no_ours)["AVX512-BF16"] == "not measured (ours not timed)"


def test_reference_config_follows_the_arch():
    h = _harness()
    tiny, v1 = h.reference_config("tiny", 64, "float32"), h.reference_config("hrm_v1", 8, "bfloat16")
    assert (tiny["hidden_size"], tiny["num_heads"], tiny["H_layers"], tiny["L_layers"]) == (64, 2, 1, 1)
    assert (tiny["halt_max_steps"], tiny["batch_size"], tiny["forward_dtype"]) == (4, 64, "float32")
    assert (v1["hidden_size"], v1["H_layers"], v1["halt_max_steps"], v1["seq_len"]) == (512, 4, 16, 81)
