"""The training CLI: a real run, Hydra's --help and --cfg job, and one-line errors for bad input
(no traceback)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import PROJECT

TINY = ["arch=hrm_tiny", "global_batch_size=16", "epochs=1", "eval_interval=1", "progress=false", "threads=1"]


def pretrain(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hrm_core.pretrain", *args], cwd=PROJECT, capture_output=True, text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_cli_trains_and_writes_run_dir(sudoku4_dataset, tmp_path):
    run = tmp_path / "run"
    typed = [*TINY, f"data_path={sudoku4_dataset}", f"checkpoint_path={run}", "max_steps=5"]
    proc = pretrain(*typed)
    assert proc.returncode == 0, proc.stderr
    assert "completed: step 5" in proc.stdout
    assert "forward_dtype=float32" in proc.stdout  # the run log names the dtype path
    lines = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in lines if "train/lm_loss" in r] == [1, 2, 3, 4, 5]
    assert any("eval/exact_accuracy" in r for r in lines)
    cfg = (run / "config.yaml").read_text()
    assert "hidden_size: 64" in cfg and f"data_path: {sudoku4_dataset}" in cfg
    assert yaml.safe_load((run / "overrides.yaml").read_text()) == typed  # as typed, beside the config
    assert (run / "step_5.pt").exists()


def test_help_lists_every_group_option_and_key(capsys):
    from hrm_core.config.compose import group_options
    from hrm_core.config.schema import VALID_KEYS
    from hrm_core.pretrain import main

    assert main(["arch=hrm_tiny", "--help"]) == 0
    out = capsys.readouterr().out
    for group in ("arch", "data", "loss", "curriculum"):
        assert re.search(rf"^  {group}\b", out, re.M), group
        for option in group_options(group):
            assert re.search(rf"^    {option} +[* ] \S", out, re.M), f"{group}={option} and what it is"
    assert re.search(r"^    hrm_v1 +\* ", out, re.M) and re.search(r"^    sudoku9_1k +\* ", out, re.M)
    leaves = [k for k in VALID_KEYS if not any(o.startswith(k + ".") for o in VALID_KEYS)]
    listed = re.findall(r"^  ([\w.]+): ", out, re.M)
    assert sorted(listed) == sorted(leaves)
    for line in ("  global_batch_size: int = 768, > 0", "  eval_interval: int | null = 10000, > 0",
                 "  arch.halt_exploration_prob: float = 0.1, >= 0, <= 1",
                 "  arch.pos_encodings: rope | learned = rope", "  alerts.grad_factor: float = 10.0, > 1",
                 "  arch.puzzle_emb_ndim: int = hidden_size (512), >= 0", "  data.name: str = sudoku9_1k"):
        assert line + "\n" in out, line  # type, default (as composed) and range
    assert "rows per optimizer step" in out  # and what it means


def test_cfg_job_prints_the_composed_config_and_exits(tmp_path):
    from hrm_core.config.compose import compose_config
    from hrm_core.config.schema import validate_config

    typed = ["arch=hrm_tiny", "data=sudoku4", "lr=3e-3", "~eval_interval", f"checkpoint_path={tmp_path}/run"]
    script = os.path.join(os.path.dirname(sys.executable), "hrm-train")  # the console script
    proc = subprocess.run([script, *typed, "--cfg", "job"], cwd=PROJECT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = validate_config(yaml.safe_load(proc.stdout))
    assert printed == compose_config(typed) and printed.lr == 3e-3 and printed.eval_interval == 10000
    assert not (tmp_path / "run").exists()  # nothing ran


def test_cfg_takes_job(capsys):
    from hrm_core.pretrain import main

    assert main(["--cfg", "hydra"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --cfg takes job") and "\n" not in err


def test_missing_dataset(tmp_path):
    proc = pretrain(*TINY, f"data_path={tmp_path / 'nope'}")
    assert_one_line_error(proc, "dataset not found", str(tmp_path / "nope"))


def test_corrupt_dataset(sudoku4_dataset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sudoku4_dataset, bad)
    (bad / "train" / "dataset.json").write_text("{not json")
    assert_one_line_error(pretrain(*TINY, f"data_path={bad}"), "dataset.json")
    shutil.copy(os.path.join(sudoku4_dataset, "train", "dataset.json"), bad / "train" / "dataset.json")
    inputs = bad / "train" / "all__inputs.npy"
    inputs.write_bytes(inputs.read_bytes()[:-100])  # truncated array
    assert_one_line_error(pretrain(*TINY, f"data_path={bad}"), "all__inputs.npy")


def test_unknown_key_suggests_closest(sudoku4_dataset):
    proc = pretrain(*TINY, f"data_path={sudoku4_dataset}", "arch.hiden_size=8")
    assert_one_line_error(proc, "arch.hiden_size", "did you mean 'arch.hidden_size'")
    proc = pretrain(*TINY, f"data_path={sudoku4_dataset}", "global_batchsize=8")
    assert_one_line_error(proc, "did you mean 'global_batch_size'")


def test_unknown_arch_lists_choices():
    assert_one_line_error(pretrain("arch=hrm_v9"), "hrm_v9", "hrm_v1", "hrm_tiny")


def test_out_of_range_value_names_key(sudoku4_dataset):
    proc = pretrain(*TINY, f"data_path={sudoku4_dataset}", "arch.halt_max_steps=0")
    assert_one_line_error(proc, "arch.halt_max_steps")


def test_cuda_without_gpu(sudoku4_dataset):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = pretrain(*TINY, f"data_path={sudoku4_dataset}", "device=cuda")
    assert_one_line_error(proc, "device=cuda", "no CUDA GPU")


def test_eval_interval_must_divide_epochs(sudoku4_dataset):
    proc = pretrain(*TINY, f"data_path={sudoku4_dataset}", "epochs=10", "eval_interval=3")
    assert_one_line_error(proc, "eval_interval (3) must divide epochs (10)")


def test_summary_prints_reference_parameter_count():
    proc = subprocess.run([sys.executable, "-m", "hrm_core.summary"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "27,275,266" in proc.stdout
    assert "FLOPs per training step" in proc.stdout
