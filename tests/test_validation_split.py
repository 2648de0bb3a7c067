"""The validation split: builders carve it (disjoint base puzzles, recorded, default none), training
logs val/* at every eval and eval/* (test) at the final step only, and a search refuses data without it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from hrm_core import names
from hrm_core.data.build_arc import build_arc_dataset
from hrm_core.data.build_maze import build_maze_dataset
from hrm_core.data.build_maze import main as maze_main
from hrm_core.data.build_sudoku import build_sudoku_dataset
from hrm_core.data.build_sudoku import main as sudoku_main
from hrm_core.data.format import dataset_fingerprint, open_split

SUDOKU = dict(size=4, blanks=8, subsample_size=200, num_aug=1, test_size=40, seed=0)


@pytest.fixture(scope="module")
def sudoku_val(tmp_path_factory) -> str:
    """The session fixture's recipe (tests/conftest.py) with a validation split of 24 puzzles."""
    path = str(tmp_path_factory.mktemp("data") / "sudoku4_val")
    build_sudoku_dataset(path, **SUDOKU, val_size=24)
    return path


def rows(path: str, split: str) -> set[bytes]:
    """Every example of a split (its input and label rows), as bytes."""
    arrays = open_split(path, split).sets["all"]
    return {i.tobytes() + b"|" + o.tobytes() for i, o in zip(np.asarray(arrays["inputs"]),
                                                              np.asarray(arrays["labels"]), strict=True)}


def test_val_zero_rebuilds_todays_bytes(tmp_path, sudoku4_dataset):
    """val_size 0 (the default) writes the bytes the builders wrote before the flag existed:
    these fingerprints were taken from builds by the code before it (git HEAD of 2026-12-01)."""
    build_sudoku_dataset(tmp_path / "s", size=4, blanks=8, subsample_size=300, num_aug=2, test_size=50,
                         seed=3)
    build_maze_dataset(tmp_path / "m", size=8, subsample_size=50, test_size=10, min_path_len=4, seed=1,
                       aug=True)
    build_arc_dataset(tmp_path / "a", version="arc1", max_tasks=3, num_aug=2, seed=0)
    fps = {d: dataset_fingerprint(tmp_path / d) for d in "sma"}
    assert fps == {"s": "2eb3611890918b47", "m": "737f347c6848bb46", "a": "bd64dd9f33e382d9"}
    for d in "sma":
        info = json.loads((tmp_path / d / "build_info.json").read_text())
        assert not (tmp_path / d / "val").exists()
        assert "--val-size" not in info["argv"] and "val_size" not in info["params"]
    assert not os.path.exists(os.path.join(sudoku4_dataset, "val"))


def test_sudoku_val_is_carved_from_train_disjoint_and_recorded(sudoku_val, sudoku4_dataset):
    info = json.loads(open(os.path.join(sudoku_val, "build_info.json")).read())
    assert info["params"]["val_size"] == 24 and info["argv"][-2:] == ["--val-size", "24"]
    assert info["counts"]["val_examples"] == 24 and info["counts"]["train_groups"] == 176
    train, val, test = rows(sudoku_val, "train"), rows(sudoku_val, "val"), rows(sudoku_val, "test")
    assert len(val) == 24 and not val & train and not val & test
    # carved from the same 200 base puzzles, before augmentation: train + val = the val-0 build's base
    # (num_aug 1: every 2nd train row is a base puzzle)
    def inputs(path, split, step=1):
        return {r.tobytes() for r in np.asarray(open_split(path, split).sets["all"]["inputs"])[::step]}

    kept = inputs(sudoku_val, "train", 2)
    assert inputs(sudoku4_dataset, "train", 2) == kept | inputs(sudoku_val, "val") and len(kept) == 176
    assert rows(sudoku_val, "test") == rows(sudoku4_dataset, "test")  # the test split is unchanged
    assert dataset_fingerprint(sudoku_val) != dataset_fingerprint(sudoku4_dataset)


def test_maze_and_arc_val_splits(tmp_path):
    build_maze_dataset(tmp_path / "m", size=8, subsample_size=50, test_size=10, min_path_len=4, seed=1,
                       aug=True, val_size=5)
    train, val = rows(str(tmp_path / "m"), "train"), rows(str(tmp_path / "m"), "val")
    assert len(val) == 5 and len(train) == 45 * 8  # every dihedral copy of a val maze left train
    assert not val & train
    build_arc_dataset(tmp_path / "a", version="arc1", max_tasks=3, num_aug=2, seed=0, val_size=1)
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert info["counts"]["validation_tasks"] == 1 and info["counts"]["val_groups"] == 1
    val_split = open_split(tmp_path / "a", "val")
    ids = json.loads((tmp_path / "a" / "identifiers.json").read_text())
    task = ids[int(val_split.sets["all"]["puzzle_identifiers"][0])].split("_")[0]
    # the held-out task's test outputs are in no train row; its demonstrations are (as test's tasks)
    assert not rows(str(tmp_path / "a"), "val") & rows(str(tmp_path / "a"), "train")
    train_ids = set(open_split(tmp_path / "a", "train").sets["all"]["puzzle_identifiers"].tolist())
    assert set(np.asarray(val_split.sets["all"]["puzzle_identifiers"]).tolist()) <= train_ids
    assert task in {ids[i].split("_")[0] for i in train_ids}


def test_bad_val_size_is_one_line_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sudoku_main(["--output-dir", str(tmp_path / "s"), "--size", "4", "--subsample-size", "10",
                     "--val-size", "10"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--val-size (10) must be smaller than the 10 train puzzles" in err
    with pytest.raises(SystemExit):
        maze_main(["--output-dir", str(tmp_path / "m"), "--size", "8", "--val-size", "-1"])
    assert "--val-size must be >= 0, got -1" in capsys.readouterr().err


def test_recipe_with_val_builds_into_its_own_directory():
    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import default_data_dir, recipe_data_dir

    cfg = compose_config(["data=sudoku4"])
    assert cfg.data.build.args["val_size"] > 0
    assert recipe_data_dir(cfg.data) == default_data_dir("sudoku4", cfg.data.build.args["val_size"])
    assert recipe_data_dir(cfg.data) != default_data_dir("sudoku4")
    no_val = compose_config(["data=sudoku4", "data.build.args.val_size=0"])
    assert recipe_data_dir(no_val.data) == default_data_dir("sudoku4")


def test_training_logs_val_every_eval_and_test_at_the_end(sudoku_val, tmp_path):
    from tests.test_trainer import make_trainer, read_metrics

    trainer = make_trainer(sudoku_val, str(tmp_path / "run"))
    trainer.fit()
    total = trainer.schedule.total_steps
    records = read_metrics(str(tmp_path / "run"))

    def steps(key):
        return [r["step"] for r in records if key in r]

    evals = sorted(trainer.schedule.eval_steps)
    assert len(evals) >= 3 and evals[-1] == total
    assert steps(names.VAL_EXACT_ACCURACY) == steps(names.VAL_LM_LOSS) == evals
    assert steps(names.EVAL_EXACT_ACCURACY) == steps(names.EVAL_LM_LOSS) == [total]
    assert steps(names.DIAG_HALT_MEAN.format(split=names.VAL)) == evals
    assert steps(names.DIAG_HALT_MEAN.format(split=names.EVAL)) == [total]
    final = next(r for r in records if r["step"] == total and names.EVAL_EXACT_ACCURACY in r)
    assert 0 <= final[names.VAL_EXACT_ACCURACY] <= 1 and 0 <= final[names.EVAL_EXACT_ACCURACY] <= 1
    # the best checkpoint is chosen on val, never on test
    assert trainer.checkpoints.retention.best["metric"] == names.VAL_EXACT_ACCURACY
    assert torch.isfinite(torch.tensor(final[names.VAL_LM_LOSS]))


def test_eval_collapse_watches_val_when_the_record_has_it():
    from hrm_core.config.schema import AlertsConfig
    from hrm_core.observe.alerts import AlertRules

    rules = AlertRules(AlertsConfig())
    assert not rules.observe(10, {names.VAL_EXACT_ACCURACY: 0.9})
    # a final record: test is worse than val's peak would allow, but the rule watches val
    assert not rules.observe(20, {names.VAL_EXACT_ACCURACY: 0.88, names.EVAL_EXACT_ACCURACY: 0.1})
    fired = rules.observe(30, {names.VAL_EXACT_ACCURACY: 0.2})
    assert [r for r, _ in fired] == ["eval_collapse"] and fired[0][1].startswith("val/exact_accuracy fell")


def test_search_without_val_split_fails_before_compute(tmp_path, sudoku4_dataset, sudoku_val):
    from hrm_core.errors import UserError
    from sweeps.prepare import prepare

    def search(data: str, metric: str = "val/exact_accuracy") -> str:
        path = tmp_path / f"s{len(os.listdir(tmp_path))}.yaml"
        path.write_text(f"""\
name: s
kind: search
base: [data=sudoku4, {data}]
objective: {{metric: {metric}, mode: max}}
space:
  lr: {{type: loguniform, low: 1.0e-4, high: 1.0e-2}}
num_samples: 2
seeds: [0]
scale: smoke
""")
        return str(path)

    with pytest.raises(UserError) as e:
        prepare(search(f"data_path={sudoku4_dataset}"), log=lambda *_: None)
    assert "has no val/ split, so it cannot be searched" in str(e.value) and "val_size" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        prepare(search("data.build.args.val_size=0"), log=lambda *_: None)
    assert "data config 'sudoku4' builds no val split" in str(e.value)
    assert prepare(search(f"data_path={sudoku_val}"), log=lambda *_: None).spec.kind == "search"


def test_a_search_selects_on_val(tmp_path):
    """A search's default objective is val/exact_accuracy; an eval/* (test) objective is refused."""
    from hrm_core.errors import UserError
    from sweeps.spec import load_spec
    from sweeps.validate import validate

    text = ("name: s\nkind: search\nbase: [data=sudoku4]\nspace:\n"
            "  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\nseeds: [0]\nscale: smoke\n")
    (tmp_path / "default.yaml").write_text(text)
    assert load_spec(str(tmp_path / "default.yaml"))[0].objective.metrics == [names.VAL_EXACT_ACCURACY]
    (tmp_path / "test.yaml").write_text(text + "objective: {metric: eval/accuracy, mode: max}\n")
    spec, path = load_spec(str(tmp_path / "test.yaml"))
    with pytest.raises(UserError, match="on the validation split: use val/accuracy, not eval/accuracy"):
        validate(spec, path, check_cluster=False)
