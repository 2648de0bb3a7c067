"""``sweeps run --until-decided``: rounds of paired seeds until the declared comparisons are
decided, or N_max. The round and stop logic runs on a real MLflow store whose trial runs are
written through the project's own writer (``RunWriter``), with a known effect, and is judged
by the real verdict engine (``analysis.verdicts.decide``); the real end-to-end run (Ray,
training) is in ``test_until_decided_e2e.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hrm_core import names

SWEEP = "ud_synthetic"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One real MLflow SQLite store for the module (each test writes its own parent run)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('ud') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield MlflowClient(uri)


def _parent(client, max_seeds: int, seeds: list[int]) -> str:
    from hrm_core.tracking.client import ensure_experiment

    exp = ensure_experiment(client, names.experiment_name(SWEEP))
    parent = client.create_run(exp, run_name=names.parent_run_name(SWEEP), tags={
        names.TAG_RUN_KIND: names.RUN_KIND_SWEEP, names.TAG_SWEEP: SWEEP, names.TAG_SWEEP_KIND: "ablation",
        names.TAG_OBJECTIVE: names.EVAL_ACCURACY, names.TAG_OBJECTIVE_MODE: "max",
        names.TAG_CONTROL: "control", names.TAG_SWEEP_STATUS: "finished"})
    _resolved(client, parent.info.run_id, max_seeds, seeds)
    return parent.info.run_id


def _resolved(client, parent_id: str, max_seeds: int, seeds: list[int]) -> None:
    from sweeps.spec import SweepSpec

    spec = SweepSpec(name=SWEEP, kind="ablation", arms={"control": [], "arm": ["lr=0"]}, control="control",
                     seeds=seeds, max_seeds=max_seeds, objective={"metric": names.EVAL_ACCURACY})
    client.log_text(parent_id, json.dumps(spec.resolved()), "sweep_resolved.json")


def _trials(client, parent_id: str, seeds: list[int], effect: float) -> None:
    """One finished run per arm x seed, written as the engine writes them: the arm's value is
    the control's plus ``effect``, with seed-level noise shared by the pair."""
    from hrm_core.tracking.writer import RunWriter

    exp = client.get_run(parent_id).info.experiment_id
    for seed in seeds:
        rng = np.random.default_rng(seed)
        base, noise = 0.5 + 0.03 * rng.standard_normal(), 0.01 * rng.standard_normal()
        for arm, value in (("control", base), ("arm", base + effect + noise)):
            run = client.create_run(exp, run_name=names.ablation_run_name(arm, seed), tags={
                names.TAG_RUN_KIND: names.RUN_KIND_TRIAL, names.TAG_SWEEP: SWEEP,
                names.TAG_INVOCATION: parent_id, names.TAG_MLFLOW_PARENT: parent_id,
                names.TAG_ARM: arm, names.TAG_SEED: str(seed)})
            writer = RunWriter(client, run.info.run_id)
            writer.log_params({"seed": seed})
            writer.add_metrics(24, {names.EVAL_ACCURACY: float(value), names.TRAIN_LM_LOSS: 1.0})
            writer.end(names.OUTCOME_COMPLETED, alerts_checked=False)


def _loop(store, effect: float, max_seeds: int, first: list[int], round_size: int):
    from sweeps.until_decided import Look, Plan, continue_rounds, report_look

    parent_id = _parent(store, max_seeds, first)
    _trials(store, parent_id, first, effect)
    rounds: list[list[int]] = []
    lines: list[str] = []

    def extend(parent: str, seeds: list[int]) -> None:  # what extend_sweep does: new pairs, resolved seeds
        new = [s for s in seeds if s not in {x for r in rounds for x in r} | set(first)]
        rounds.append(new)
        _trials(store, parent, new, effect)
        _resolved(store, parent, max_seeds, seeds)

    def look(parent: str) -> Look:
        return report_look(parent, report=False)  # the real verdicts; the look is recorded

    reason = continue_rounds(store, parent_id, Plan(round=round_size, max_seeds=max_seeds), extend, look,
                             log=lines.append)
    return parent_id, reason, rounds, lines


def test_a_clear_effect_stops_early_by_decision(store):
    parent_id, reason, rounds, lines = _loop(store, effect=0.2, max_seeds=16, first=[0, 1, 2, 3],
                                             round_size=4)
    assert reason == names.STOP_DECIDED
    held = 4 + sum(len(r) for r in rounds)
    assert held < 16, f"stopped at N_max ({held} seeds), not by decision"
    assert rounds and all(len(r) == 4 for r in rounds), rounds
    assert rounds[0] == [4, 5, 6, 7], "each round adds the next unused seeds"
    tags = store.get_run(parent_id).data.tags
    assert tags[names.TAG_STOP_REASON] == names.STOP_DECIDED
    assert json.loads(tags[names.TAG_UNTIL_DECIDED]) == {"round": 4, "max_seeds": 16}
    # every round was a look, recorded on the parent run (the alpha spending counts them)
    looks = json.loads(tags[names.TAG_LOOKS])
    assert [lk["pairs"] for lk in looks] == list(range(4, held + 1, 4))
    assert any("arm vs control: beats" in line for line in lines), lines
    assert "every declared comparison is decided" in lines[-1]
    assert f"{names.TAG_STOP_REASON}=decided" in lines[-1]


def test_no_effect_runs_to_max_seeds_and_says_so(store):
    parent_id, reason, rounds, lines = _loop(store, effect=0.0, max_seeds=4, first=[0, 1], round_size=3)
    assert reason == names.STOP_MAX_SEEDS
    assert rounds == [[2, 3]], "the last round is cut at N_max"
    assert store.get_run(parent_id).data.tags[names.TAG_STOP_REASON] == names.STOP_MAX_SEEDS
    assert "max_seeds (4) reached" in lines[-1]


def test_an_interrupted_round_is_tagged_and_resume_goes_on(store):
    from sweeps.until_decided import Look, Plan, continue_rounds, planned_rounds

    parent_id = _parent(store, 6, [0])

    def extend(parent: str, seeds: list[int]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        continue_rounds(store, parent_id, Plan(1, 6), extend, lambda p: Look(decided=False),
                        log=lambda *_: None)
    tags = store.get_run(parent_id).data.tags
    assert tags[names.TAG_STOP_REASON] == names.STOP_INTERRUPTED
    assert tags[names.TAG_SWEEP_STATUS] == "interrupted", "`sweeps resume` finds it"
    assert planned_rounds(tags) == Plan(round=1, max_seeds=6), "resume reads the plan and goes on"
    store.set_tag(parent_id, names.TAG_STOP_REASON, names.STOP_DECIDED)
    assert planned_rounds(store.get_run(parent_id).data.tags) is None, "a stopped loop is not resumed"


def test_until_decided_is_refused_before_anything_runs(store, tmp_path, capsys):
    from sweeps.__main__ import main
    from tests.conftest import write_sweep

    search = write_sweep(tmp_path, "name: s\nkind: search\nbase: [data=sudoku4]\nspace:\n"
                                   "  lr: {type: uniform, low: 0.0001, high: 0.01}\nscale: smoke\n")
    assert main(["run", search, "--until-decided"]) == 2
    assert "--until-decided adds seeds to an ablation; 's' is a search" in capsys.readouterr().err
    ablation = write_sweep(tmp_path, "name: a\nkind: ablation\nbase: [data=sudoku4]\ncontrol: x\n"
                                     "arms: {x: [], y: [lr=0]}\nseeds: [0, 1, 2]\nscale: smoke\n", "a.yaml")
    assert main(["run", ablation, "--until-decided", "--max-seeds", "2"]) == 2
    assert "a.yaml: max_seeds (2) must be >= min_seeds (3)" in capsys.readouterr().err
    assert main(["run", ablation, "seeds=[0,1,2,3]", "--until-decided", "--max-seeds", "3"]) == 2
    assert "--max-seeds (3) is fewer than the sweep's 4 seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", ablation, "--round", "2"])
    assert "--max-seeds and --round go with --until-decided" in capsys.readouterr().err
    written = {e.name for e in store.search_experiments(filter_string="name LIKE 'hrm/%'")}
    assert written <= {names.experiment_name(SWEEP)}, "nothing was written"


# --- end to end: real Ray, real training, the CLI ---------------------------------------------
@pytest.mark.slow
def test_rounds_run_for_real_under_one_parent(ray_local, store, tmp_path, capsys):
    """Two rounds of one seed (--round 1 --max-seeds 2), extending the same parent run;
    one seed is too few for any verdict, so it stops at N_max and says so."""
    from sweeps.__main__ import main
    from tests.conftest import child_runs, write_sweep

    path = write_sweep(tmp_path, """\
name: e2e_until
kind: ablation
base: [data=sudoku4, max_steps=4, eval_every_steps=4, lr_warmup_steps=2]
control: learns
arms:
  learns: [lr=0.01]
  frozen: [lr=0.0]
seeds: [0]
min_seeds: 2
max_concurrent: 2
scale: smoke
""")
    assert main(["run", path, "--until-decided", "--round", "1", "--max-seeds", "2", "--no-report",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    exp = store.get_experiment_by_name(names.experiment_name("e2e_until"))
    (parent,) = store.search_runs([exp.experiment_id], f"tags.`{names.TAG_RUN_KIND}` = 'sweep'")
    tags = parent.data.tags
    assert tags[names.TAG_STOP_REASON] == names.STOP_MAX_SEEDS and tags[names.TAG_EXTENSIONS] == "1"
    assert tags[names.TAG_SWEEP_STATUS] == "finished" and parent.info.status == "FINISHED"
    pairs = sorted((k.data.tags[names.TAG_ARM], k.data.tags[names.TAG_SEED])
                   for k in child_runs(store, parent.info.run_id))
    assert pairs == [("frozen", "0"), ("frozen", "1"), ("learns", "0"), ("learns", "1")]
    assert [lk["pairs"] for lk in json.loads(tags[names.TAG_LOOKS])] == [1, 2], "each round was a look"
    assert "round of 1 more seeds [1]" in out and "max_seeds (2) reached" in out, out
