"""Compute accounting: compute/* equal the model summary's train-step FLOPs times the steps
taken (per curriculum stage), land in a real MLflow store, and survive a resume."""

from __future__ import annotations

import pytest

from hrm_core import names
from hrm_core.observe.flops import count_flops
from hrm_core.tracking.sink import MlflowSink
from tests.test_trainer import crashed_and_resumed, make_trainer, read_metrics, resumed_metrics


def _per_step(tr, **overrides) -> int:
    arch = tr.cfg.arch.model_copy(update=overrides)
    flops = count_flops(arch, tr.dims.vocab_size, tr.dims.seq_len, tr.cfg.global_batch_size, training=True)
    return flops.train_step


def _history(client, run_id: str, key: str) -> dict[int, float]:
    points = client.get_metric_history(run_id, key)
    steps = [m.step for m in points]
    assert len(steps) == len(set(steps)), f"{key} logged twice at a step"
    return {m.step: m.value for m in points}


def test_standalone_run_accounts_summary_flops_into_mlflow(sudoku4_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink("hrm/compute-test", "compute", uri=uri, upload_best_checkpoint=False)
    # train metrics every 3 steps, evals every 4: eval steps that are no log step carry compute/* too
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "run"), "max_steps=10", "log_every_steps=3",
                      callbacks=[sink])
    tr.fit()
    client = MlflowClient(uri)
    flops = _history(client, sink.run_id, names.COMPUTE_TRAIN_FLOPS)
    per_step = _per_step(tr)
    assert per_step > 0
    assert sorted(flops) == [3, 4, 6, 8, 9, 10], "every log step, every eval step and the end"
    assert all(v == per_step * s for s, v in flops.items())
    assert set(_history(client, sink.run_id, names.COMPUTE_FLOPS_PER_STEP).values()) == {float(per_step)}
    assert _history(client, sink.run_id, names.COMPUTE_PLANNED_STEPS) == {3: 10.0}
    assert _history(client, sink.run_id, names.COMPUTE_PLANNED_FLOPS) == {3: float(10 * per_step)}
    wall = _history(client, sink.run_id, names.COMPUTE_WALL_SECONDS)
    device = _history(client, sink.run_id, names.COMPUTE_DEVICE_SECONDS)
    assert list(wall.values()) == sorted(wall.values()) and wall[10] > 0
    assert device == wall  # one device
    assert tr.compute.train_flops == 10 * per_step and tr.compute.steps == 10


def test_curriculum_sums_each_stage_own_flops(sudoku4_dataset, tmp_path):
    stages = ("curriculum.stages=[{name: a, steps: 3, halt_max_steps: 1}, "
              "{name: b, steps: 4, halt_max_steps: 3, L_cycles: 1}]")
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "run"), stages, "eval_every_steps=null")
    tr.fit()
    a, b = _per_step(tr, halt_max_steps=1), _per_step(tr, halt_max_steps=3, L_cycles=1)
    assert a != b  # no Q-target segment with one ACT step; fewer L cycles
    rows = {r["step"]: r for r in read_metrics(str(tmp_path / "run")) if names.COMPUTE_TRAIN_FLOPS in r}
    assert sorted(rows) == list(range(1, 8))
    expected = [a * s for s in range(1, 4)] + [3 * a + b * (s - 3) for s in range(4, 8)]
    assert [rows[s][names.COMPUTE_TRAIN_FLOPS] for s in range(1, 8)] == expected
    assert [rows[s][names.COMPUTE_FLOPS_PER_STEP] for s in range(1, 8)] == [a] * 3 + [b] * 4
    assert rows[1][names.COMPUTE_PLANNED_FLOPS] == 3 * a + 4 * b and rows[1][names.COMPUTE_PLANNED_STEPS] == 7
    assert tr.compute.train_flops == 3 * a + 4 * b


def test_resume_continues_the_totals(sudoku4_dataset, tmp_path):
    import torch

    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), "max_steps=12")
    full.fit()
    resumed = crashed_and_resumed(sudoku4_dataset, str(tmp_path / "part"), 8, "max_steps=12")
    saved_wall = torch.load(tmp_path / "part" / "step_8.pt", weights_only=False)["compute"]["wall_seconds"]
    assert saved_wall > 0
    assert resumed.compute.train_flops == 8 * _per_step(resumed) and resumed.compute.steps == 8
    assert resumed.compute.wall_seconds == pytest.approx(saved_wall)
    resumed.fit()
    assert resumed.compute.train_flops == full.compute.train_flops == 12 * _per_step(full)
    # identical FLOPs at every step; the planned figures are logged once (not again on resume)
    assert resumed_metrics(str(tmp_path / "part")) == read_metrics(str(tmp_path / "full"))
    wall = [r[names.COMPUTE_WALL_SECONDS] for r in _rows(tmp_path / "part")
            if names.COMPUTE_WALL_SECONDS in r]
    assert wall == sorted(wall) and wall[-1] >= saved_wall


def test_checkpoint_without_compute_state_rebuilds_the_flops(sudoku4_dataset, tmp_path):
    import torch

    tr = make_trainer(sudoku4_dataset, str(tmp_path / "run"), "max_steps=8")
    tr.fit()
    path = tmp_path / "run" / "step_8.pt"
    state = torch.load(path, weights_only=False)
    del state["compute"]  # a checkpoint from before compute accounting
    torch.save(state, path)
    again = make_trainer(sudoku4_dataset, str(tmp_path / "again"), "max_steps=8", f"resume_from={path}")
    assert again.compute.train_flops == 8 * _per_step(again) and again.compute.wall_seconds == 0.0


def _rows(run_dir):
    import json

    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_sweep_totals_sum_trials_and_early_stopping_savings():
    from hrm_core.observe.compute import sweep_totals

    done = {names.COMPUTE_TRAIN_FLOPS: 100.0, names.COMPUTE_DEVICE_SECONDS: 2.0,
            names.COMPUTE_PLANNED_FLOPS: 100.0}
    stopped = {names.COMPUTE_TRAIN_FLOPS: 30.0, names.COMPUTE_DEVICE_SECONDS: 1.0,
               names.COMPUTE_PLANNED_FLOPS: 100.0}
    by_steps = {names.COMPUTE_TRAIN_FLOPS: 20.0, names.COMPUTE_DEVICE_SECONDS: 0.5,
                names.COMPUTE_PLANNED_STEPS: 10.0,
                names.COMPUTE_FLOPS_PER_STEP: 10.0}
    es = {names.TAG_OUTCOME: names.OUTCOME_EARLY_STOPPED}
    completed = {names.TAG_OUTCOME: names.OUTCOME_COMPLETED}
    totals = sweep_totals([(done, completed), (stopped, es), (by_steps, es), ({}, es)])
    assert totals == {names.COMPUTE_SWEEP_FLOPS: 150.0, names.COMPUTE_SWEEP_DEVICE_SECONDS: 3.5,
                      names.COMPUTE_SAVED_FLOPS: 70.0 + 80.0}
    assert sweep_totals([({names.EVAL_EXACT_ACCURACY: 0.5}, {})]) == {}  # runs from before compute accounting
