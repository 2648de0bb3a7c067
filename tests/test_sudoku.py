"""Sudoku solver, generator, augmentation and the dataset builder (API and CLI)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm_core.data import sudoku
from hrm_core.data.build_sudoku import BuildError, build_sudoku_dataset, main
from hrm_core.data.format import dataset_fingerprint, open_split

REPO = Path(__file__).resolve().parents[1]

EASY = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
EASY_SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
HARD = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"


def test_solves_known_puzzle() -> None:
    result = sudoku.solve(sudoku.from_string(EASY))
    assert result.count == 1
    assert sudoku.to_string(result.solutions[0]) == EASY_SOLUTION
    assert sudoku.rating(sudoku.from_string(EASY)) == 0  # singles are enough


def test_hard_puzzle_needs_guesses() -> None:
    puzzle = sudoku.from_string(HARD)
    result = sudoku.solve(puzzle)
    assert result.count == 1
    assert sudoku.is_valid_solution(result.solutions[0])
    assert sudoku.is_consistent(puzzle, result.solutions[0])
    assert result.guesses > 0 and result.nodes > 1
    assert result.nodes < 800  # most-constrained-cell branching (~320 nodes; ~1500 without it)
    assert sudoku.rating(puzzle) == result.guesses


def test_counts_multiple_solutions() -> None:
    assert sudoku.count_solutions(np.zeros(16, dtype=np.uint8), limit=1000) == 288  # all 4x4 grids
    assert sudoku.count_solutions(np.zeros(81, dtype=np.uint8), limit=2) == 2
    # Blank a "deadly rectangle" of the known solution: two rows of one band, two columns of
    # two boxes holding a,b / b,a. Swapping gives a second solution.
    grid = sudoku.from_string(EASY_SOLUTION).reshape(9, 9)
    found = False
    for r1 in range(9):
        for r2 in range(r1 + 1, (r1 // 3 + 1) * 3):
            for c1 in range(9):
                for c2 in range((c1 // 3 + 1) * 3, 9):
                    if grid[r1, c1] == grid[r2, c2] and grid[r1, c2] == grid[r2, c1]:
                        puzzle = grid.copy()
                        puzzle[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
                        assert sudoku.count_solutions(puzzle.reshape(-1), limit=5) == 2
                        found = True
    assert found


def test_contradictory_puzzle_has_no_solution() -> None:
    puzzle = sudoku.from_string(EASY)
    puzzle[2] = 5  # a second 5 in row 0
    assert sudoku.count_solutions(puzzle) == 0


@pytest.mark.parametrize("size", [4, 6, 9])
def test_generated_puzzles_are_unique_and_minimal(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(3 if size == 9 else 10):
        puzzle, solution = sudoku.generate_puzzle(size, rng)
        assert puzzle.dtype == np.uint8 and puzzle.shape == (size * size,)
        assert sudoku.is_valid_solution(solution)
        assert sudoku.is_consistent(puzzle, solution)
        result = sudoku.solve(puzzle, limit=2)
        assert result.count == 1 and np.array_equal(result.solutions[0], solution)
        if size < 9:  # minimal: no given can be dropped
            for cell in np.flatnonzero(puzzle):
                weaker = puzzle.copy()
                weaker[cell] = 0
                assert sudoku.count_solutions(weaker) == 2


@pytest.mark.parametrize(("size", "blanks"), [(4, 8), (6, 15), (9, 40)])
def test_generate_exact_blanks(size: int, blanks: int) -> None:
    rng = np.random.default_rng(0)
    puzzle, solution = sudoku.generate_puzzle(size, rng, blanks=blanks)
    assert int((puzzle == 0).sum()) == blanks
    assert sudoku.count_solutions(puzzle) == 1 and sudoku.is_consistent(puzzle, solution)


def test_generator_is_seeded() -> None:
    a = sudoku.generate_puzzle(6, np.random.default_rng(7))
    b = sudoku.generate_puzzle(6, np.random.default_rng(7))
    c = sudoku.generate_puzzle(6, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_generator_gives_up_clearly() -> None:
    with pytest.raises(sudoku.GenerationError, match="could not blank 64 cells"):
        sudoku.generate_puzzle(9, np.random.default_rng(0), blanks=64, max_tries=2)
    with pytest.raises(ValueError, match="blanks"):
        sudoku.generate_puzzle(4, np.random.default_rng(0), blanks=13)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_augmentation_keeps_validity(size: int) -> None:
    rng = np.random.default_rng(100 + size)
    puzzle, solution = sudoku.generate_puzzle(size, rng)
    ps, ss = sudoku.augment_many(puzzle, solution, rng, 200)
    assert ps.shape == ss.shape == (200, size * size) and ps.dtype == np.uint8
    for p, s in zip(ps, ss, strict=True):
        assert sudoku.is_valid_solution(s)
        assert sudoku.is_consistent(p, s)
        assert int((p == 0).sum()) == int((puzzle == 0).sum())
    assert len({s.tobytes() for s in ss}) > 20  # really random
    for p, s in zip(ps[:5], ss[:5], strict=True):
        result = sudoku.solve(p)
        assert result.count == 1 and np.array_equal(result.solutions[0], s)
    single_p, single_s = sudoku.augment(puzzle, solution, rng)
    assert sudoku.is_valid_solution(single_s) and sudoku.is_consistent(single_p, single_s)


def test_augmentation_transposes_only_square_boxes() -> None:
    """The blank pattern's row counts become column counts under a transpose; never for 6x6."""
    rng = np.random.default_rng(3)
    for size, expect_transpose in [(4, True), (9, True), (6, False)]:
        puzzle = np.zeros(size * size, dtype=np.uint8)
        solution = sudoku.random_solution(size, rng)
        puzzle[:size] = solution[:size]  # only row 0 given
        ps, _ = sudoku.augment_many(puzzle, solution, rng, 200)
        given_in_one_column = [(p.reshape(size, size) != 0).sum(axis=0).max() == size for p in ps]
        assert any(given_in_one_column) == expect_transpose


# ----- builder -------------------------------------------------------------------------------
def _decode(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    ps = open_split(path, split)
    arrays = ps.sets["all"]
    return np.asarray(arrays["inputs"]) - 1, np.asarray(arrays["labels"]) - 1, arrays


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "build_info.json"
    }


def test_build_structure_and_encoding(tmp_path: Path) -> None:
    out = build_sudoku_dataset(
        tmp_path / "d", size=4, subsample_size=30, num_aug=2, blanks=8, test_size=12, seed=1
    )
    assert out == str(tmp_path / "d")
    train = open_split(out, "train")
    md = train.metadata
    expected = dict(
        vocab_size=6, seq_len=16, pad_id=0, ignore_label_id=0, blank_identifier_id=0,
        num_puzzle_identifiers=1, total_groups=30, mean_puzzle_examples=1.0, sets=["all"],
    )  # fmt: skip
    assert md.model_dump() == expected
    arrays = train.sets["all"]
    assert arrays["inputs"].dtype == np.uint8 and arrays["inputs"].shape == (90, 16)
    np.testing.assert_array_equal(arrays["puzzle_indices"], np.arange(91))
    np.testing.assert_array_equal(arrays["group_indices"], np.arange(0, 91, 3))
    assert not np.asarray(arrays["puzzle_identifiers"]).any()
    puzzles, solutions, _ = _decode(Path(out), "train")
    assert puzzles.min() >= 0 and puzzles.max() <= 4 and solutions.min() >= 1
    for p, s in zip(puzzles, solutions, strict=True):
        assert sudoku.is_valid_solution(s) and sudoku.is_consistent(p, s) and int((p == 0).sum()) == 8
    test_puzzles, _, test_arrays = _decode(Path(out), "test")
    assert len(test_puzzles) == 12 and open_split(out, "test").metadata.total_groups == 12
    np.testing.assert_array_equal(test_arrays["group_indices"], np.arange(13))
    assert json.loads((Path(out) / "identifiers.json").read_text()) == ["<blank>"]


def test_build_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    kwargs = dict(size=4, subsample_size=40, num_aug=3, blanks=6, test_size=40, seed=5)
    a = build_sudoku_dataset(tmp_path / "a", **kwargs)
    b = build_sudoku_dataset(tmp_path / "b", **kwargs)
    c = build_sudoku_dataset(tmp_path / "c", **{**kwargs, "seed": 6})
    assert _files(Path(a)) == _files(Path(b))
    assert dataset_fingerprint(a) == dataset_fingerprint(b) != dataset_fingerprint(c)
    train, _, _ = _decode(Path(a), "train")
    test, _, _ = _decode(Path(a), "test")
    train_keys = {row.tobytes() for row in train}
    test_keys = [row.tobytes() for row in test]
    assert not train_keys & set(test_keys)
    assert len(set(test_keys)) == len(test_keys)
    base = [row.tobytes() for row in train[::4]]
    assert len(set(base)) == len(base)


def test_build_info_recipe_rebuilds_same_data(tmp_path: Path) -> None:
    out = build_sudoku_dataset(tmp_path / "d", size=6, subsample_size=5, num_aug=1, test_size=3, seed=2)
    info = json.loads((Path(out) / "build_info.json").read_text())
    assert info["builder"] == "hrm_core.data.build_sudoku" and info["seed"] == 2
    argv = list(info["argv"])
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "rebuilt")
    assert main(argv) == 0
    assert info["fingerprint"] == dataset_fingerprint(out) == dataset_fingerprint(tmp_path / "rebuilt")


def test_rebuild_replaces_existing_dataset_but_not_other_dirs(tmp_path: Path) -> None:
    out = tmp_path / "d"
    build_sudoku_dataset(out, size=4, subsample_size=5, test_size=2, seed=0)
    build_sudoku_dataset(out, size=4, subsample_size=7, test_size=2, seed=0)
    assert open_split(out, "train").metadata.total_groups == 7
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not a dataset directory"):
        build_sudoku_dataset(precious, size=4, subsample_size=5, test_size=2)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_min_difficulty_filter(tmp_path: Path) -> None:
    out = build_sudoku_dataset(
        tmp_path / "d", size=6, subsample_size=6, test_size=4, min_difficulty=2, seed=0
    )
    for split, n in (("train", 6), ("test", 4)):
        puzzles, _, _ = _decode(Path(out), split)
        assert len(puzzles) == n
        assert all(sudoku.rating(p) >= 2 for p in puzzles)
    with pytest.raises(BuildError, match="lower --min-difficulty"):
        build_sudoku_dataset(tmp_path / "e", size=4, subsample_size=1, test_size=0, min_difficulty=50)


def _write_csv(path: Path, rows: list[tuple[str, str, str, int]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "q", "a", "rating"])
        writer.writerows(rows)


def _csv_rows(rng: np.random.Generator, n: int, blank_char: str) -> list[tuple[str, str, str, int]]:
    rows = []
    for i in range(n):
        puzzle, solution = sudoku.generate_puzzle(9, rng, blanks=45)
        q = sudoku.to_string(puzzle).replace(".", blank_char)
        rows.append((f"src{i}", q, sudoku.to_string(solution), i))
    return rows


def test_csv_import(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_rows = _csv_rows(rng, 8, ".")  # ratings 0..7
    test_rows = _csv_rows(rng, 4, "0")  # ratings 0..3
    _write_csv(tmp_path / "train.csv", train_rows)
    _write_csv(tmp_path / "test.csv", test_rows)
    out = build_sudoku_dataset(
        tmp_path / "d", subsample_size=3, num_aug=2, min_difficulty=2, seed=0,
        source_csv=str(tmp_path / "train.csv"), source_csv_test=str(tmp_path / "test.csv"),
    )  # fmt: skip
    train_p, train_s, train_arrays = _decode(Path(out), "train")
    assert train_p.shape == (9, 81) and open_split(out, "train").metadata.total_groups == 3
    originals = {(q.replace(".", "0"), a) for _, q, a, rating in train_rows if rating >= 2}
    for i in range(0, 9, 3):  # each group starts with the original CSV row
        key = ("".join(map(str, train_p[i])), "".join(map(str, train_s[i])))
        assert key in originals
    for p, s in zip(train_p, train_s, strict=True):
        assert sudoku.is_valid_solution(s) and sudoku.is_consistent(p, s)
    test_p, test_s, _ = _decode(Path(out), "test")
    expected = [(q, a) for _, q, a, rating in test_rows if rating >= 2]
    assert [
        ("".join(map(str, p)), "".join(map(str, s))) for p, s in zip(test_p, test_s, strict=True)
    ] == expected


def test_csv_import_rejects_bad_answer(tmp_path: Path) -> None:
    rows = _csv_rows(np.random.default_rng(1), 2, ".")
    bad = list(rows[1])
    bad[2] = bad[2][1:] + bad[2][0]  # rotate the answer: no longer a valid grid
    _write_csv(tmp_path / "train.csv", [rows[0], tuple(bad)])
    _write_csv(tmp_path / "test.csv", rows[:1])
    with pytest.raises(BuildError, match=r"train.csv:3: answer is not a valid solved grid"):
        build_sudoku_dataset(
            tmp_path / "d", source_csv=str(tmp_path / "train.csv"), source_csv_test=str(tmp_path / "test.csv")
        )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hrm_core.data.build_sudoku", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "5"], "--size"),
        (["--size", "4", "--blanks", "13"], "--blanks"),
        (["--num-aug", "-1"], "--num-aug"),
        (["--subsample-size", "-5"], "--subsample-size"),
        (["--source-csv", "x.csv"], "--source-csv-test"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = _cli("--output-dir", str(tmp_path / "d"), *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and needle in error_lines[0]
    assert not (tmp_path / "d").exists()


def test_cli_builds_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "d"
    proc = _cli("--output-dir", str(out), "--size", "4", "--subsample-size", "10", "--num-aug", "1",
                "--min-difficulty", "0", "--blanks", "6", "--test-size", "5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "20 examples" in lines[0] and str(out) in lines[0]
    info = json.loads((out / "build_info.json").read_text())
    assert info["cli_argv"][:2] == ["--output-dir", str(out)]
    unreachable = _cli("--output-dir", str(tmp_path / "e"), "--size", "4", "--subsample-size", "1",
                       "--test-size", "0", "--min-difficulty", "99")  # fmt: skip
    assert unreachable.returncode != 0 and "Traceback" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_csv_import_rejects_bad_characters(tmp_path: Path) -> None:
    rows = _csv_rows(np.random.default_rng(2), 2, ".")
    _write_csv(tmp_path / "train.csv", rows)
    _write_csv(tmp_path / "test.csv", [(rows[0][0], "x" + rows[0][1][1:], rows[0][2], 5)])
    with pytest.raises(BuildError, match=r"test.csv:2: grid .* has characters other than"):
        build_sudoku_dataset(
            tmp_path / "d", source_csv=str(tmp_path / "train.csv"), source_csv_test=str(tmp_path / "test.csv")
        )


def test_test_split_avoids_augmented_train_puzzles(tmp_path: Path) -> None:
    """Tiny puzzle space (4x4, one blank): augmentations cover much of it, test must still be disjoint."""
    out = build_sudoku_dataset(tmp_path / "d", size=4, subsample_size=30, num_aug=100, blanks=1, test_size=30)
    train, _, _ = _decode(Path(out), "train")
    test, _, _ = _decode(Path(out), "test")
    assert len(test) == 30
    assert not {row.tobytes() for row in train} & {row.tobytes() for row in test}
