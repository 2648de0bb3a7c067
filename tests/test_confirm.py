"""A search's confirmation stage (``sweeps/confirm.py``, ``analysis/report/confirm.py``):
which configurations it re-runs, the base configuration, fresh seeds, and, end to end on a
real local Ray and MLflow store, its runs under the same parent and the report's headline."""

from __future__ import annotations

import json

import pytest

from hrm_core import names
from tests.conftest import child_runs as children
from tests.conftest import write_sweep

SEARCH = """\
name: conf
kind: search
base: [data=sudoku4, arch.halt_max_steps=3]
objective: {metric: [eval/accuracy, eval/steps], mode: [max, min]}
space:
  arch.halt_max_steps: {type: int, low: 2, high: 4}
  lr: {type: choice, values: [0.001, 0.003]}
scheduler: {type: none}
seeds: [0, 4]
scale: smoke
"""


def _run(i: int, params: dict, values: dict, outcome=names.OUTCOME_COMPLETED):
    """A search trial's MLflow run as the store returns it (real entities, no store needed)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    arm = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    info = RunInfo(f"r{i}", "1", "u", "FINISHED", 0, 1, "active", run_name=f"t{i}")
    data = RunData(metrics=[Metric(k, v, 0, 8) for k, v in values.items()],
                   params=[Param(k, str(v)) for k, v in params.items()],
                   tags=[RunTag(names.TAG_ARM, arm), RunTag(names.TAG_OUTCOME, outcome)])
    return Run(info, data)


def spec_of(tmp_path, text: str = SEARCH, *overrides: str):
    from sweeps.spec import load_spec

    return load_spec(write_sweep(tmp_path, text), None, list(overrides))[0]


def test_the_pareto_set_up_to_k_in_order_of_the_first_objective(tmp_path):
    from sweeps.confirm_plan import select

    spec = spec_of(tmp_path, SEARCH + "confirm: {top_k: 2}\n")
    acc, steps = "eval/accuracy", "eval/steps"
    runs = [
        _run(0, {"arch.halt_max_steps": 2, "lr": 0.001}, {acc: 0.50, steps: 2.0}),  # Pareto
        _run(1, {"arch.halt_max_steps": 4, "lr": 0.003}, {acc: 0.70, steps: 4.0}),  # Pareto, best accuracy
        _run(2, {"arch.halt_max_steps": 3, "lr": 0.001}, {acc: 0.45, steps: 3.0}),  # dominated by 0
        _run(3, {"arch.halt_max_steps": 3, "lr": 0.003}, {acc: 0.60, steps: 3.0}),  # Pareto
        _run(4, {"arch.halt_max_steps": 2, "lr": 0.003}, {acc: 0.99, steps: 1.0}, names.OUTCOME_DIVERGED),
        _run(5, {"arch.halt_max_steps": 4, "lr": 0.003}, {acc: 0.70, steps: 4.0}),  # same point as 1
    ]
    chosen = select(spec, runs)
    assert [c["run_id"] for c in chosen] == ["r1", "r3"], "Pareto set, best accuracy first, cut at k"
    assert chosen[0]["params"] == {"arch.halt_max_steps": "4", "lr": "0.003"}
    one = spec_of(tmp_path, SEARCH.replace("[eval/accuracy, eval/steps]", "eval/accuracy")
                  .replace("[max, min]", "max"))
    assert [c["run_id"] for c in select(one, runs)] == ["r1", "r3", "r0"], "one objective: the top k"


def test_the_base_arm_and_fresh_seeds(tmp_path):
    from sweeps.confirm_plan import base_overrides, confirm_seeds, plan, stage_spec

    spec = spec_of(tmp_path)
    # searched keys at their defaults: the base's own halt_max_steps=3 (and the scale's) give way
    assert base_overrides(spec) == ["arch.halt_max_steps=16", "lr=0.0001"]
    assert confirm_seeds(spec) == [5, 6, 7], "min_seeds seeds after the search's largest"
    chosen = spec_of(tmp_path, SEARCH + "confirm: {seeds: [10, 20, 30, 40]}\n")
    assert confirm_seeds(chosen) == [10, 20, 30, 40]
    stage = plan(spec, [_run(0, {"arch.halt_max_steps": 2, "lr": 0.001}, {"eval/accuracy": 0.5,
                                                                           "eval/steps": 2.0})])
    assert stage["arms"]["top1"]["overrides"] == ["arch.halt_max_steps=2", "lr=0.001"]
    assert stage["metrics"] == ["eval/accuracy", "eval/steps"]
    sub = stage_spec(spec, stage)
    assert sub.kind == "ablation" and sub.control == "base" and sub.seeds == [5, 6, 7]
    assert sub.declared_comparisons == [{"arm": "top1", "reference": "base", "label": None}]


def test_selection_on_val_is_confirmed_on_test(tmp_path):
    from sweeps.confirm_plan import test_metrics

    spec = spec_of(tmp_path, SEARCH.replace("[eval/accuracy, eval/steps]", "[val/accuracy, val/steps]"))
    assert test_metrics(spec) == ["eval/accuracy", "eval/steps"]


def test_no_confirm_is_recorded_and_resume_honours_it():
    from sweeps.confirm import confirm_tags, wants_confirm

    search = {names.TAG_SWEEP_KIND: "search"}
    assert wants_confirm(search) and wants_confirm({**search, **confirm_tags(False)})
    assert not wants_confirm({**search, **confirm_tags(True)}), "--no-confirm: resume runs no stage"
    assert wants_confirm({**search, names.TAG_CONFIRM_STATUS: "running"}), "an interrupted stage resumes"
    assert not wants_confirm({**search, names.TAG_CONFIRM_STATUS: "finished"})
    assert not wants_confirm({names.TAG_SWEEP_KIND: "ablation"})


# --- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_search_ends_with_its_confirmation_stage(ray_local, store, tmp_path, capsys):
    from analysis.loading import load_sweep
    from analysis.report.sweep_analysis import analyse
    from hrm_core.config.schema import TrainConfig
    from sweeps.__main__ import main

    path = write_sweep(tmp_path, """\
name: e2e_confirm
kind: search
base: [data=sudoku4, max_steps=4, eval_every_steps=4, lr_warmup_steps=2]
objective: {metric: val/accuracy, mode: max}
space:
  lr: {type: choice, values: [0.0, 0.01]}
num_samples: 2
max_concurrent: 2
scheduler: {type: none}
sampler: {type: random, seed: 0}
min_seeds: 2
confirm: {top_k: 1}
scale: smoke
""")
    assert main(["run", path, "--no-report", "--quiet"]) == 0
    exp = store.get_experiment_by_name(names.experiment_name("e2e_confirm"))
    (parent,) = store.search_runs([exp.experiment_id], f"tags.`{names.TAG_RUN_KIND}` = 'sweep'")
    parent_id = parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags[names.TAG_SWEEP_STATUS] == "finished"
    assert parent.data.tags[names.TAG_CONFIRM_STATUS] == "finished"
    kids = children(store, parent_id)
    stage = [k for k in kids if k.data.tags.get(names.TAG_STAGE) == names.STAGE_CONFIRM]
    searched = [k for k in kids if names.TAG_STAGE not in k.data.tags]
    assert len(searched) == 2 and all(k.data.tags[names.TAG_SEED] == "0" for k in searched)
    pairs = sorted((k.data.tags[names.TAG_ARM], k.data.tags[names.TAG_SEED]) for k in stage)
    assert pairs == [("base", "1"), ("base", "2"), ("top1", "1"), ("top1", "2")], "fresh seeds, every arm"
    assert all(k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED for k in stage)
    from hrm_core.tracking.client import read_text_artifact

    planned = json.loads(read_text_artifact(store, parent_id, names.CONFIRM_ARTIFACT))
    best = max(k.data.metrics["val/accuracy"] for k in searched)
    picked = planned["arms"]["top1"]
    chosen = next(k for k in searched if k.info.run_id == picked["search_run_id"])
    assert chosen.data.metrics["val/accuracy"] == best == picked["search_values"]["val/accuracy"]
    top1 = next(k for k in stage if k.data.tags[names.TAG_ARM] == "top1")
    assert top1.data.params["lr"] == chosen.data.params["lr"], "top1 re-runs the search's best point"
    base = next(k for k in stage if k.data.tags[names.TAG_ARM] == "base")
    assert float(base.data.params["lr"]) == TrainConfig().lr, "base: the searched key at its schema default"
    # the summary's best is the search's own, not the stage's
    summary = json.loads(read_text_artifact(store, parent_id, "summary.json"))
    assert summary["best_run"]["run_id"] in {k.info.run_id for k in searched}

    # the report: the search analysed without the stage, and the confirmed effect as its headline
    info, runs = load_sweep(parent_run=parent_id, tracking_uri=store.tracking_uri)
    a = analyse(info, runs)
    assert set(a.runs["run_id"]) == {k.info.run_id for k in searched}
    assert a.confirmation is not None and len(a.confirmation.table) == 1
    assert a.conclusion.startswith("**Confirmed on the test split** (eval/accuracy, 2 fresh paired seeds")
    assert "selected on validation, optimistic" in a.conclusion
    # resumed or run again, the stage runs nothing twice
    from sweeps.confirm import confirm_invocation

    confirm_invocation(parent_id, log=lambda *_: None)
    assert len(children(store, parent_id)) == 6
