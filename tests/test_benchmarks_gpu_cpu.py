"""benchmarks/gpu.py's CPU side: its arguments, the largest-batch search, the MFU arithmetic
on hrm_core's FLOP count, and the JSON it writes; without a GPU each GPU part is one skip line."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpu():
    spec = importlib.util.spec_from_file_location("gpu_bench", os.path.join(ROOT, "benchmarks", "gpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("threshold", [30, 64, 200, 700, 768, 1000, 1536, 5000, 16384, 20000])
def test_largest_batch_finds_the_threshold_in_multiples_of_64(threshold):
    g = _gpu()
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= threshold

    batch, probes = g.largest_batch(fits, 768, 16384)
    assert batch == min(16384, threshold // 64 * 64)  # 0: not even 64 fits
    assert probes == [(b, b <= threshold) for b in tried] and len(tried) <= 12
    assert all(b % 64 == 0 and b <= 16384 for b in tried)


def test_mfu_is_counted_flops_per_second_over_the_peak():
    from hrm_core.config.schema import ArchConfig
    from hrm_core.observe.flops import count_flops

    g = _gpu()
    flops = g.flops_per_step("hrm_v1", 768)
    assert flops == count_flops(ArchConfig(), 11, 81, 768).train_step
    assert g.flops_per_step("hrm_v1", 1536) == 2 * flops  # every term is linear in the batch
    assert g.mfu(flops, 0.5, 312.0) == pytest.approx(flops / 0.5 / 312e12)
    assert g.mfu(flops, 0.5, None) is None
    assert g.datasheet_peak("NVIDIA H100 80GB HBM3 H100 SXM") == 989.0
    assert g.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert g.datasheet_peak("NVIDIA L40S") == 362.0 and g.datasheet_peak("Mystery GPU") is None


def test_bad_arguments_are_one_line(capsys):
    g = _gpu()
    for argv, message in ([["--steps", "0"], "--steps must be > 0 (got 0)"],
                          [["--max-batch", "512"], "--max-batch must be >= the reference batch 768"]):
        with pytest.raises(SystemExit) as e:
            g.parse_args(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: each GPU part is skipped")
def test_without_a_gpu_each_part_is_one_skip_line_and_the_json_is_written(tmp_path, capsys):
    g = _gpu()
    out = tmp_path / "sub" / "gpu.json"
    assert g.main(["--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    skips = [x for x in lines if x.startswith("skip: ")]
    assert len(skips) == 3
    assert all(x.endswith(": no CUDA device (torch.cuda.is_available() is False)") for x in skips)
    figures = json.loads(out.read_text())
    assert figures["cuda"] is False
    assert figures["flops_per_step_at_reference_batch"] == g.flops_per_step("hrm_v1", 768)
    assert sum("skipped" in v for v in figures.values() if isinstance(v, dict)) == 3
