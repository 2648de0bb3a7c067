"""The train loop: exact resume, warm start, retention, divergence, eval schedule."""

from __future__ import annotations

import json
import os

import pytest
import torch

from hrm_core import names
from hrm_core.config.compose import compose_config
from hrm_core.observe.callbacks import Callback, JsonlSink
from hrm_core.train.runtime import resolve_runtime
from hrm_core.train.trainer import Trainer

CPU = torch.device("cpu")


class StopAt(Callback):
    """Simulates a crash right after the checkpoint of a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, step, path, is_best):
        if step == self.step:
            raise KeyboardInterrupt(f"stopped at {step}")


def make_trainer(data: str, run_dir: str, *overrides: str, callbacks=()):
    cfg = compose_config([
        "arch=hrm_tiny", f"data_path={data}", "global_batch_size=16", "epochs=1", "eval_interval=null",
        "lr=3e-3", "lr_warmup_steps=3", "lr_min_ratio=0.1", "eval_every_steps=4", "checkpoint_every_steps=4",
        "progress=false", "arch.halt_max_steps=3", f"checkpoint_path={run_dir}", *overrides,
    ])
    cfg = resolve_runtime(cfg, CPU)
    return Trainer(cfg, data, run_dir, CPU, [JsonlSink(run_dir), *callbacks], log=lambda *_: None)


def crashed_and_resumed(data: str, run_dir: str, k: int, *overrides: str):
    """Train until a crash right after the step-``k`` checkpoint; return the trainer that
    resumes from it (not yet fitted)."""
    stopped = make_trainer(data, run_dir, *overrides, callbacks=[StopAt(k)])
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    return make_trainer(data, run_dir, *overrides, f"resume_from={os.path.join(run_dir, f'step_{k}.pt')}")


def resumed_metrics(run_dir: str) -> list[dict]:
    """A resumed run's metrics without its resumed_from_step marker: what an uninterrupted run logs."""
    return [r for r in read_metrics(run_dir) if names.RESUMED_FROM_STEP not in r]


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not names.is_timing(k)} for r in rows]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_resume_is_bitwise(sudoku4_dataset, tmp_path, dtype):
    dt = f"arch.forward_dtype={dtype}"
    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), dt)
    full.fit()
    total = full.schedule.total_steps
    assert total >= 10

    k = 8
    stopped = make_trainer(sudoku4_dataset, str(tmp_path / "resumed"), dt, callbacks=[StopAt(k)])
    with pytest.raises(KeyboardInterrupt):
        stopped.fit()
    resumed = make_trainer(sudoku4_dataset, str(tmp_path / "resumed"), dt,
                           f"resume_from={tmp_path / 'resumed'}")
    assert resumed.resumed_from_step == k
    seen_steps = []
    record = {"on_train_metrics": lambda s, step, m: seen_steps.append(step)}
    resumed.callbacks.callbacks.append(type("Rec", (Callback,), record)())
    resumed.fit()
    assert seen_steps[0] == k and seen_steps[1] == k + 1, "no step <= k is run again"

    expected = read_metrics(str(tmp_path / "full"))
    got = [r for r in read_metrics(str(tmp_path / "resumed")) if names.RESUMED_FROM_STEP not in r]
    assert got == expected  # bitwise: every metric at every step, evals included
    marker = [r for r in read_metrics(str(tmp_path / "resumed")) if names.RESUMED_FROM_STEP in r]
    assert marker == [{"step": k, names.RESUMED_FROM_STEP: float(k)}]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_eval_schedule_and_retention(sudoku4_dataset, tmp_path):
    run = str(tmp_path / "run")
    tr = make_trainer(sudoku4_dataset, run, "checkpoint_keep_last=2")
    tr.fit()
    rows = read_metrics(run)
    eval_steps = [r["step"] for r in rows if "eval/exact_accuracy" in r]
    assert eval_steps == [4, 8, 12]
    train_steps = [r["step"] for r in rows if "train/lm_loss" in r]
    assert train_steps == list(range(1, 13))
    files = sorted(f for f in os.listdir(run) if f.startswith("step_"))
    best = json.load(open(os.path.join(run, "best.json")))
    kept = {8, 12} | {best["step"]}
    assert files == sorted(f"step_{s}.pt" for s in kept)


def test_init_from_loads_weights_only(sudoku4_dataset, tmp_path):
    first = make_trainer(sudoku4_dataset, str(tmp_path / "a"))
    first.fit()
    warm = make_trainer(sudoku4_dataset, str(tmp_path / "b"), f"init_from={tmp_path / 'a'}")
    for a, b in zip(first.model.state_dict().values(), warm.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert warm.step == 0 and warm.carry is None  # a fresh run: step, optimizer and carry start anew
    assert len(warm.optimizer.state) == 0


def test_seeds_are_separate_streams(sudoku4_dataset, tmp_path):
    a = make_trainer(sudoku4_dataset, str(tmp_path / "a"), "seed=1", "data_seed=7")
    b = make_trainer(sudoku4_dataset, str(tmp_path / "b"), "seed=2", "data_seed=7")
    c = make_trainer(sudoku4_dataset, str(tmp_path / "c"), "seed=1", "data_seed=8")
    batch_a, batch_b, batch_c = (t.sampler.next_batch() for t in (a, b, c))
    assert torch.equal(batch_a["inputs"], batch_b["inputs"]), "same data_seed: same data order"
    assert not torch.equal(batch_a["inputs"], batch_c["inputs"])
    wa, wb, wc = (t.model.model.inner.L_level.layers[0].mlp.down_proj.weight for t in (a, b, c))
    assert not torch.equal(wa, wb) and torch.equal(wa, wc), "init depends on seed only"


def test_divergence_ends_the_run_as_diverged(sudoku4_dataset, tmp_path):
    ends = []
    record = {"on_run_end": lambda s, step, outcome, error=None: ends.append(outcome)}
    rec = type("Rec", (Callback,), record)()
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "nan"), "lr=1e20", "lr_warmup_steps=0", callbacks=[rec])
    assert tr.fit() == names.OUTCOME_DIVERGED
    assert ends == [names.OUTCOME_DIVERGED]
    assert tr.step < tr.schedule.total_steps
