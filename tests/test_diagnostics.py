"""Training-health diagnostics (diag/*): they change no number, make sense, and resume exactly."""

from __future__ import annotations

import math

import pytest
import torch

from hrm_core import names
from hrm_core.model.hrm import PuzzleEmbedding
from hrm_core.observe.diagnostics import Diagnostics, halting_metrics, param_groups
from hrm_core.train.optim import SparseSignSGD
from tests.test_trainer import crashed_and_resumed, make_trainer, read_metrics, resumed_metrics

GATED = ("arch.use_gating=true", "arch.subgoal_head.enabled=true")


def metric_rows(run_dir: str) -> list[dict]:
    """Metric lines only (alert lines dropped)."""
    return [r for r in read_metrics(run_dir) if "alert" not in r]


def split_rows(rows: list[dict]) -> tuple[list[dict], dict[int, dict]]:
    """(rows without diag/*, {step: diag/* of that step})."""
    plain, diag = [], {}
    for r in rows:
        d = {k: v for k, v in r.items() if k.startswith(names.DIAG_PREFIX)}
        if d:
            diag.setdefault(r["step"], {}).update(d)
        rest = {k: v for k, v in r.items() if not k.startswith(names.DIAG_PREFIX)}
        if len(rest) > 1:
            plain.append(rest)
    return plain, diag


@pytest.mark.parametrize("variant", ["baseline", "gated_feudal"])
def test_diagnostics_change_no_number_and_are_sane(sudoku4_dataset, tmp_path, variant):
    extra = GATED if variant == "gated_feudal" else ()
    on = make_trainer(sudoku4_dataset, str(tmp_path / "on"), *extra)
    off = make_trainer(sudoku4_dataset, str(tmp_path / "off"), *extra, "diagnostics.enabled=false")
    assert off.diagnostics is None and on.diagnostics is not None
    on.fit()
    off.fit()
    plain_on, diag = split_rows(metric_rows(str(tmp_path / "on")))
    plain_off, diag_off = split_rows(metric_rows(str(tmp_path / "off")))
    assert not diag_off
    assert plain_on == plain_off  # bitwise: every non-diag metric at every step, evals included
    for a, b in zip(on.model.state_dict().values(), off.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(on.explore_gen.get_state(), off.explore_gen.get_state())

    assert sorted(diag) == sorted(on.schedule.eval_steps) == [4, 8, 12]
    H = on.hrm.cfg.halt_max_steps
    for step, d in diag.items():
        assert math.isfinite(d[names.DIAG_GRAD_NORM]) and d[names.DIAG_GRAD_NORM] > 0, step
        for group in names.DIAG_GROUPS:
            ratio = d[names.DIAG_UPDATE_RATIO.format(group=group)]
            assert 0 < ratio < 1, (step, group, ratio)
        for split in (names.TRAIN, names.EVAL):
            shares = [d[names.DIAG_HALT_SHARE.format(split=split, k=k)] for k in range(1, H + 1)]
            assert sum(shares) == pytest.approx(1.0) and all(0 <= s <= 1 for s in shares)
            assert d[names.DIAG_HALT_AT_MAX.format(split=split)] == shares[-1]
            assert 1 <= d[names.DIAG_HALT_MEAN.format(split=split)] <= H
        assert 0 < d[names.DIAG_PUZZLE_UPDATED_SHARE] <= 1
        assert d[names.DIAG_PUZZLE_ROW_NORM_MEAN] > 0 and d[names.DIAG_PUZZLE_ROW_NORM_STD] >= 0
        assert math.isfinite(d[names.DIAG_Q_HALT_MEAN]) and math.isfinite(d[names.DIAG_Q_CONTINUE_MEAN])


def test_param_groups_cover_every_parameter_once(sudoku4_dataset, tmp_path):
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "r"), *GATED, "arch.pos_encodings=learned")
    inner = tr.hrm.inner
    groups = param_groups(inner)
    assert sorted(groups) == sorted(names.DIAG_GROUPS)
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in tr.params}
    has = {g: {id(p) for p in ps} for g, ps in groups.items()}
    assert id(inner.embed_pos.embedding_weight) in has["embeddings"]
    assert {id(p) for p in inner.H_level.gate.parameters()} <= has["H"]  # gates live with their module
    assert {id(p) for p in inner.L_level.gate.parameters()} <= has["L"]
    assert {id(p) for p in inner.subgoal.parameters()} <= has["heads"]
    assert id(inner.q_head.weight) in has["heads"] and id(inner.lm_head.weight) in has["heads"]


def test_diag_resume_between_evals_matches_an_uninterrupted_run(sudoku4_dataset, tmp_path):
    """Checkpoints every 3 steps, evals every 4: the accumulators travel in the checkpoint."""
    every3 = ("checkpoint_every_steps=3",)
    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), *every3)
    full.fit()
    crashed_and_resumed(sudoku4_dataset, str(tmp_path / "part"), 6, *every3).fit()
    got = resumed_metrics(str(tmp_path / "part"))
    expected = read_metrics(str(tmp_path / "full"))
    assert got == expected  # diag/* and alert lines included
    assert any(names.DIAG_GRAD_NORM in r for r in got if r["step"] == 8)


def test_sign_sgd_tracks_rows_that_changed():
    emb = PuzzleEmbedding(5, 4, torch.float32)
    emb.train()

    def step(opt, ids):
        rows = emb(torch.tensor(ids))
        rows.sum().backward()
        opt.step()
        opt.zero_grad()

    frozen = SparseSignSGD(emb, lr=0.0, weight_decay=0.1)
    frozen.track_changes()
    step(frozen, [1, 1, 3])
    report = frozen.change_report()
    assert report[names.DIAG_PUZZLE_UPDATED_SHARE] == 0.0
    assert frozen.seen.tolist() == [False, True, False, True, False]
    assert report[names.DIAG_PUZZLE_ROW_NORM_MEAN] == 0.0

    opt = SparseSignSGD(emb, lr=0.5, weight_decay=0.0)
    opt.track_changes()
    step(opt, [1, 1, 3])
    report = opt.change_report()
    assert report[names.DIAG_PUZZLE_UPDATED_SHARE] == pytest.approx(2 / 5)
    assert report[names.DIAG_PUZZLE_ROW_NORM_MEAN] == pytest.approx(1.0)  # 4 x 0.5 per row: norm 1
    assert opt.change_report()[names.DIAG_PUZZLE_UPDATED_SHARE] == 0.0  # reset by each report


def test_eval_halting_is_the_first_segment_that_wants_to_halt():
    H = 4
    counts = torch.zeros(H + 1, dtype=torch.float64)
    halt_at = None
    # rows: halts at 2, at 1, never (-> H), at 3; a 5th padded row is not counted
    wants = [[0, 1, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 0, 1, 1], [0, 1, 0, 0, 1]]
    for segment, w in enumerate(wants, start=1):
        w = torch.tensor(w, dtype=torch.bool)
        outputs = {"q_halt_logits": torch.where(w, 1.0, -1.0), "q_continue_logits": torch.zeros(5)}
        halt_at = Diagnostics.eval_segment(halt_at, segment, outputs)
    Diagnostics.add_eval_rows(counts, halt_at, 4, H)
    assert counts.tolist() == [0, 1, 1, 1, 1]
    m = halting_metrics(counts.tolist(), H, names.EVAL)
    assert m[names.DIAG_HALT_MEAN.format(split="eval")] == pytest.approx((2 + 1 + 4 + 3) / 4)
    assert m[names.DIAG_HALT_AT_MAX.format(split="eval")] == 0.25
    assert halting_metrics([0.0] * (H + 1), H, names.EVAL) == {}  # nothing halted: no key (never NaN)
