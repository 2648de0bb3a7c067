"""benchmarks/calibrate_scale.py: the verdict rules, and a real calibration of a tiny sweep's
control arm at the smoke scale (its curve read back from the trainer's own metrics.jsonl)."""

from __future__ import annotations

import importlib

import pytest
import torch


def _calibrate():
    return importlib.import_module("benchmarks.calibrate_scale")


@pytest.mark.parametrize("metric, mode, final, first, expected", [
    ("eval/exact_accuracy", "max", 0.29, 0.0, "floor"),
    ("val/exact_accuracy", "max", 0.3, 0.0, "informative"),
    ("val/exact_accuracy", "max", 0.9, 0.0, "informative"),
    ("val/exact_accuracy", "max", 0.91, 0.0, "ceiling"),
    ("val/exact_accuracy", "max", None, None, "floor"),
    ("val/lm_loss", "min", 1.5, 2.0, "informative"),  # 25 % below its first eval
    ("val/lm_loss", "min", 1.9, 2.0, "floor"),  # 5 %: never left its start
    ("val/lm_loss", "min", float("nan"), 2.0, "floor"),
])
def test_verdict_rules(metric, mode, final, first, expected):
    assert _calibrate().verdict(metric, mode, final, first) == expected


def test_calibrates_a_control_arm_on_real_training(tmp_path, capsys):
    cal_mod = _calibrate()
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text("""\
name: tiny_calibration
kind: ablation
base: [data=sudoku4, max_steps=8, eval_every_steps=4]
objective: {metric: val/exact_accuracy, mode: max}
control: plain
arms:
  plain: [arch=hrm_v1]
  gated: [arch=hrm_v1_gated]
seeds: [0]
scale: smoke
""")
    threads = torch.get_num_threads()
    try:
        cal = cal_mod.calibrate(str(sweep), None, [], seeds=[0], workers=1, out_dir=str(tmp_path / "runs"))
    finally:
        torch.set_num_threads(threads)
    assert cal.reference == "control arm plain" and cal.overrides[-1] == "arch=hrm_v1"
    (run,) = cal.runs
    assert run.outcome == "completed" and [s for s, _ in run.curve] == [4, 8]
    assert run.curve == cal_mod.read_curve(str(tmp_path / "runs" / "seed0"), "val/exact_accuracy")
    assert cal.mean_final == run.curve[-1][1]
    # 8 steps of the tiny model: the control has not left the floor
    assert cal.mean_final < 0.3 and cal.verdict == "floor"
    cal_mod.report(cal)
    out = capsys.readouterr().out
    assert "learning curve of val/exact_accuracy:" in out and out.rstrip().endswith(
        "verdict: floor (mean final in [0.3, 0.9] is informative)")
