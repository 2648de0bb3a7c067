"""Multi-process data parallelism: torchrun with gloo on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hrm_core import names
from tests.conftest import PROJECT

pytestmark = pytest.mark.slow

# Exploration is off: each rank draws its own exploration stream, so with it on the
# 1-rank and 2-rank runs would halt different rows (a different, equally valid run).
COMMON = [
    "arch=hrm_tiny", "global_batch_size=16", "epochs=1", "eval_interval=null", "max_steps=6", "lr=1e-3",
    "lr_warmup_steps=2", "arch.halt_exploration_prob=0.0", "progress=false", "threads=1",
]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "hrm_core.pretrain", *args]
    return subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600)


def test_one_and_two_ranks_agree(sudoku4_dataset, tmp_path):
    for n in (1, 2):
        proc = torchrun(n, *COMMON, f"data_path={sudoku4_dataset}", f"checkpoint_path={tmp_path / f'r{n}'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "completed: step 6" in proc.stdout
    one = torch.load(tmp_path / "r1" / "step_6.pt", weights_only=False)
    two = torch.load(tmp_path / "r2" / "step_6.pt", weights_only=False)
    assert (tmp_path / "r2" / "step_6.rank1.pt").exists(), "each rank keeps its own carry"
    worst = 0.0
    for key, a in one["model"].items():
        b = two["model"][key]
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    # Only the order of floating-point sums differs (all-reduce of two halves vs one batch):
    # after 6 AdamATan2 steps of lr 1e-3 every parameter agrees to within 1e-4.
    assert worst < 1e-4, worst
    # diag/* are reduced over ranks: the same figures as one rank's (halting counts exactly)
    diag = {}
    for n in (1, 2):
        rows = [json.loads(line) for line in open(tmp_path / f"r{n}" / "metrics.jsonl")]
        diag[n] = {k: v for r in rows for k, v in r.items() if k.startswith(names.DIAG_PREFIX)}
    assert names.DIAG_GRAD_NORM in diag[1] and sorted(diag[1]) == sorted(diag[2])
    for key, value in diag[1].items():
        assert diag[2][key] == pytest.approx(value, rel=1e-3, abs=1e-6), key


def test_global_batch_must_divide_world_size(sudoku4_dataset, tmp_path):
    proc = torchrun(2, *COMMON, "global_batch_size=15", f"data_path={sudoku4_dataset}",
                    f"checkpoint_path={tmp_path / 'x'}")
    assert proc.returncode != 0
    assert "hrm_core/" not in proc.stderr, (
        "our processes exit with one line, no traceback (torchrun adds its own report)")
    assert "global_batch_size (15) is not divisible by the world size (2)" in proc.stderr
