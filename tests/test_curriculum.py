"""Progressive curricula: stages inside one run, one lr schedule, exact resume mid-stage."""

from __future__ import annotations

import pytest
import torch

from hrm_core import names
from hrm_core.errors import UserError
from hrm_core.train.optim import cosine_schedule
from tests.test_trainer import crashed_and_resumed, make_trainer, read_metrics, resumed_metrics

STAGES = ("curriculum.stages=[{name: a, steps: 3, halt_max_steps: 2}, "
          "{name: b, steps: 4, halt_max_steps: 3}, {name: c, steps: 5, halt_max_steps: 4, L_cycles: 1}]")
CURRICULUM = (STAGES, "eval_every_steps=null", "checkpoint_every_steps=2", "lr_warmup_steps=2")


def test_stage_boundaries_budgets_and_schedule(sudoku4_dataset, tmp_path):
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "run"), *CURRICULUM)
    assert tr.schedule.total_steps == 12 and tr.schedule.stage_ends == (3, 7, 12)
    tr.fit()
    rows = read_metrics(str(tmp_path / "run"))
    train = {r["step"]: r for r in rows if "train/lm_loss" in r}
    assert [train[s][names.CURRICULUM_STAGE] for s in range(1, 13)] == [0] * 3 + [1] * 4 + [2] * 5
    evals = {r["step"]: r for r in rows if "eval/steps" in r}
    assert sorted(evals) == [3, 7, 12], "every stage ends with an evaluation"
    # eval runs every ACT segment: its mean step count is the stage's halt_max_steps
    assert [evals[s]["eval/steps"] for s in (3, 7, 12)] == [2.0, 3.0, 4.0]
    assert [evals[s][names.CURRICULUM_STAGE] for s in (3, 7, 12)] == [0.0, 1.0, 2.0]
    # one learning-rate schedule spans all stages
    for s, r in train.items():
        lr = cosine_schedule(s, base_lr=3e-3, warmup_steps=2, total_steps=12, min_ratio=0.1)
        assert r["train/lr"] == pytest.approx(lr)
    # weights and optimizer state carry over: one optimizer saw all 12 steps
    assert {st["step"] for st in tr.optimizer.state.values()} == {12}
    assert tr.hrm.cfg.halt_max_steps == 4 and tr.hrm.cfg.L_cycles == 1


def test_resume_in_the_middle_of_stage_two(sudoku4_dataset, tmp_path):
    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), *CURRICULUM)
    full.fit()
    resumed = crashed_and_resumed(sudoku4_dataset, str(tmp_path / "part"), 6, *CURRICULUM)
    assert resumed.step == 6 and resumed.stage_index == 1 and resumed.hrm.cfg.halt_max_steps == 3
    resumed.fit()
    assert resumed_metrics(str(tmp_path / "part")) == read_metrics(str(tmp_path / "full"))
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_at_a_stage_boundary_starts_the_next_stage(sudoku4_dataset, tmp_path):
    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), *CURRICULUM, "checkpoint_every_steps=1",
                        "checkpoint_keep_last=20")
    full.fit()
    resumed = make_trainer(sudoku4_dataset, str(tmp_path / "r"), *CURRICULUM,
                           f"resume_from={tmp_path / 'full' / 'step_7.pt'}")
    assert resumed.stage_index == 2 and resumed.carry is None
    resumed.fit()
    tail = [r for r in read_metrics(str(tmp_path / "r")) if names.RESUMED_FROM_STEP not in r]
    assert tail == [r for r in read_metrics(str(tmp_path / "full")) if r["step"] > 7]


def test_stage_datasets_must_share_shapes(sudoku4_dataset, tmp_path):
    from hrm_core.data.build_sudoku import build_sudoku_dataset

    six = build_sudoku_dataset(str(tmp_path / "six"), size=6, blanks=10, subsample_size=20, test_size=10,
                               seed=0)
    with pytest.raises(UserError) as err:
        make_trainer(sudoku4_dataset, str(tmp_path / "run"),
                     f"curriculum.stages=[{{steps: 2}}, {{steps: 2, data_path: {six}}}]")
    assert "curriculum.stages[1]" in str(err.value) and "seq_len" in str(err.value)


def test_curriculum_presets_compose():
    from hrm_core.config.compose import compose_config

    for preset, total in (("halt_4_8_16", 10000), ("flat_halt16", 10000), ("sudoku_easy_hard", 10000),
                          ("sudoku_hard_flat", 10000)):
        cfg = compose_config([f"curriculum={preset}"])
        assert cfg.curriculum.total_steps == total, preset
    stages = compose_config(["curriculum=halt_4_8_16"]).curriculum.stages
    assert [s.halt_max_steps for s in stages] == [4, 8, 16]
