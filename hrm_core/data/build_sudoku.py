"""Build a Sudoku puzzle dataset in the reference HRM on-disk format.

Two sources:

* generated (default): seeded, uniquely solvable puzzles of size 4, 6 or 9, so small
  datasets can be rebuilt offline from a recipe;
* CSV import: the reference Sudoku-Extreme files (columns ``source,q,a,rating``).

Train: one group per base puzzle holding the original plus ``num_aug`` augmentations, one
example each. Test: no augmentation, one group per puzzle. Tokens are cell value + 1 (blank
-> 1), PAD = 0, exactly like the reference builder, so the files are interchangeable.

    python -m hrm_core.data.build_sudoku --output-dir data/sudoku4 --size 4 \\
        --subsample-size 1000 --num-aug 0 --min-difficulty 0 --blanks 8
"""

from __future__ import annotations

import argparse
import os
import sys
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrm_core.data import sudoku
from hrm_core.data.builder import (
    BuildError,
    add_source_csv_args,
    add_val_size_arg,
    carve_val,
    check_replaceable,
    check_val_size,
    cli_build,
    cli_main,
    csv_rows,
    new_parser,
    recipe,
    subsample,
    write_train_test,
)
from hrm_core.data.format import PuzzleDatasetMetadata

BUILDER = "hrm_core.data.build_sudoku"
KIND = "sudoku"
# Generated mode gives up after this many candidate puzzles per puzzle wanted (plus a floor):
# enough for any reachable difficulty filter, finite for an unreachable one.
_ATTEMPTS_PER_PUZZLE = 100
_ATTEMPTS_FLOOR = 200
# Independent RNG streams, so e.g. changing the test size never changes the train puzzles.
_STREAM_TRAIN, _STREAM_TEST, _STREAM_AUG = 1, 2, 3


@dataclass
class SudokuBuildParams:
    """Everything that determines the dataset (the recipe stored in build_info.json)."""

    output_dir: str
    size: int = 9
    subsample_size: int = 1000
    num_aug: int = 0
    min_difficulty: int = 0
    blanks: int | None = None
    test_size: int | None = None
    seed: int = 0
    source_csv: str | None = None
    source_csv_test: str | None = None
    val_size: int = 0  # base train puzzles carved off as the validation split (0: no val split)

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option) for an impossible recipe."""
        check_val_size(self.val_size, None if self.source_csv else self.subsample_size)
        if self.size not in sudoku.BOX_SHAPES:
            raise ValueError(f"--size must be one of {sorted(sudoku.BOX_SHAPES)}, got {self.size}")
        if self.subsample_size < 1:
            raise ValueError(f"--subsample-size must be >= 1, got {self.subsample_size}")
        if self.num_aug < 0:
            raise ValueError(f"--num-aug must be >= 0, got {self.num_aug}")
        if self.min_difficulty < 0:
            raise ValueError(f"--min-difficulty must be >= 0, got {self.min_difficulty}")
        if self.test_size is not None and self.test_size < 0:
            raise ValueError(f"--test-size must be >= 0, got {self.test_size}")
        if (self.source_csv is None) != (self.source_csv_test is None):
            raise ValueError("--source-csv and --source-csv-test must be given together")
        if self.blanks is not None:
            if self.source_csv is not None:
                raise ValueError("--blanks only applies to generated puzzles, not to --source-csv")
            hi = self.size * self.size - sudoku.MIN_GIVENS[self.size]
            if not 1 <= self.blanks <= hi:
                raise ValueError(f"--blanks must be in [1, {hi}] for size {self.size}, got {self.blanks}")

    def resolved_test_size(self) -> int | None:
        """Test puzzles to make (None = every row of the test CSV)."""
        if self.test_size is not None:
            return self.test_size
        if self.source_csv is not None:
            return None
        return 1000 if self.size == 9 else max(100, self.subsample_size // 5)

    def to_argv(self) -> list[str]:
        """Fully explicit CLI arguments reproducing this build (defaults may change; this won't)."""
        argv = [
            "--output-dir", str(self.output_dir),
            "--size", str(self.size),
            "--subsample-size", str(self.subsample_size),
            "--num-aug", str(self.num_aug),
            "--min-difficulty", str(self.min_difficulty),
            "--seed", str(self.seed),
        ]  # fmt: skip
        if self.blanks is not None:
            argv += ["--blanks", str(self.blanks)]
        if self.test_size is not None:
            argv += ["--test-size", str(self.test_size)]
        if self.source_csv is not None:
            argv += ["--source-csv", str(self.source_csv), "--source-csv-test", str(self.source_csv_test)]
        if self.val_size:
            argv += ["--val-size", str(self.val_size)]
        return argv


# ----- sources ---------------------------------------------------------------------------------
Pair = tuple[np.ndarray, np.ndarray]


def _generate(
    params: SudokuBuildParams, count: int, rng: np.random.Generator, forbidden: set[bytes], what: str
) -> list[Pair]:
    """``count`` distinct unique puzzles with rating >= min_difficulty, none in ``forbidden``."""
    out: list[Pair] = []
    budget = _ATTEMPTS_PER_PUZZLE * count + _ATTEMPTS_FLOOR
    attempts = 0
    while len(out) < count:
        if attempts >= budget:
            raise BuildError(
                f"only found {len(out)} of {count} distinct {what} {params.size}x{params.size} puzzles with "
                f"rating >= {params.min_difficulty} after {attempts} attempts; lower --min-difficulty"
                + (" or change --blanks" if params.blanks is not None else "")
            )
        attempts += 1
        try:
            puzzle, solution = sudoku.generate_puzzle(params.size, rng, blanks=params.blanks)
        except sudoku.GenerationError as e:
            raise BuildError(str(e)) from None
        key = puzzle.tobytes()
        if key in forbidden:
            continue
        if params.min_difficulty > 0 and sudoku.rating(puzzle) < params.min_difficulty:
            continue
        forbidden.add(key)
        out.append((puzzle, solution))
    return out


def _read_csv(
    path: str, size: int, min_difficulty: int, keep: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with rating >= min_difficulty, a seeded subset of ``keep`` of them, as (N, cells) uint8.

    Two passes (ratings, then the chosen grids) so a multi-million-row file never sits in memory.
    """
    eligible = array("q")
    for line_no, row in csv_rows(path):
        try:
            rating = int(row[3])
        except ValueError:
            raise BuildError(f"{path}:{line_no}: rating {row[3]!r} is not an integer") from None
        if rating >= min_difficulty:
            eligible.append(line_no)
    chosen = np.frombuffer(eligible, dtype=np.int64)[subsample(len(eligible), keep, rng)]
    wanted = set(chosen.tolist())
    cells = size * size
    qs: list[str] = []
    answers: list[str] = []
    for line_no, row in csv_rows(path):
        if line_no not in wanted:
            continue
        q, a = row[1].strip(), row[2].strip()
        if len(q) != cells or len(a) != cells:
            raise BuildError(f"{path}:{line_no}: expected {cells}-character grids for size {size}")
        qs.append(q)
        answers.append(a)
    puzzles, solutions = _parse_grids(path, chosen, qs, size), _parse_grids(path, chosen, answers, size)
    _check_pairs(path, chosen, puzzles, solutions, size)
    return puzzles, solutions


def _parse_grids(path: str, lines: np.ndarray, grids: list[str], size: int) -> np.ndarray:
    """Strings to an (N, cells) uint8 array; '.' or '0' is blank."""
    cells = size * size
    if not grids:
        return np.zeros((0, cells), dtype=np.uint8)
    raw = np.frombuffer("".join(grids).replace(".", "0").encode("ascii", "replace"), dtype=np.uint8)
    values = raw.astype(np.int16) - ord("0")
    bad = np.flatnonzero((values < 0) | (values > size))
    if bad.size:
        row = int(bad[0]) // cells
        raise BuildError(
            f"{path}:{int(lines[row])}: grid {grids[row]!r} has characters other than '.' and 0..{size}"
        )
    return values.astype(np.uint8).reshape(-1, cells)


def _check_pairs(path: str, lines: np.ndarray, puzzles: np.ndarray, solutions: np.ndarray, size: int) -> None:
    """Every solution must be a valid grid and agree with its puzzle's givens (vectorised)."""
    if not len(puzzles):
        return
    units = np.asarray(sudoku.geometry(size).units)
    digits = np.arange(1, size + 1, dtype=np.uint8)
    valid = (np.sort(solutions[:, units], axis=2) == digits).all(axis=(1, 2))
    given = puzzles != 0
    consistent = ((puzzles == solutions) | ~given).all(axis=1)
    bad = np.flatnonzero(~(valid & consistent))
    if bad.size:
        i = int(bad[0])
        problem = "is not a valid solved grid" if not valid[i] else "disagrees with the puzzle's givens"
        raise BuildError(f"{path}:{int(lines[i])}: answer {problem}")


# ----- assembly --------------------------------------------------------------------------------
def _encode(grids: np.ndarray) -> np.ndarray:
    """Reference token encoding: value + 1 so blank -> 1 and 0 stays free for PAD."""
    return (np.asarray(grids, dtype=np.uint8) + 1).astype(np.uint8)


def _assemble(
    puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, rng: np.random.Generator | None
) -> dict[str, np.ndarray]:
    """Arrays of one set: a group per base puzzle, 1 + num_aug puzzles per group, 1 example each."""
    per = 1 + num_aug
    n_base, cells = puzzles.shape
    inputs = np.empty((n_base * per, cells), dtype=np.uint8)
    labels = np.empty((n_base * per, cells), dtype=np.uint8)
    inputs[::per] = puzzles
    labels[::per] = solutions
    if num_aug:
        assert rng is not None
        for i in range(n_base):
            p, s = sudoku.augment_many(puzzles[i], solutions[i], rng, num_aug)
            inputs[i * per + 1 : (i + 1) * per] = p
            labels[i * per + 1 : (i + 1) * per] = s
    n_puzzles = n_base * per
    return {
        "inputs": _encode(inputs),
        "labels": _encode(labels),
        "puzzle_identifiers": np.zeros(n_puzzles, dtype=np.int32),
        "puzzle_indices": np.arange(n_puzzles + 1, dtype=np.int32),
        "group_indices": np.arange(0, n_puzzles + 1, per, dtype=np.int32),
    }


def _metadata(size: int, arrays: dict[str, np.ndarray]) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=size + 2,
        seq_len=size * size,
        num_puzzle_identifiers=1,
        total_groups=len(arrays["group_indices"]) - 1,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )


def _stack(pairs: list[Pair], cells: int) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        empty = np.zeros((0, cells), dtype=np.uint8)
        return empty, empty.copy()
    return np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs])


Split = dict[str, np.ndarray]


def _train_val(puzzles: np.ndarray, solutions: np.ndarray, params: SudokuBuildParams,
               rng_aug: np.random.Generator) -> tuple[Split, Split | None]:
    """Train (augmented) and val (not, as test) arrays: val's base puzzles are carved first."""
    keep, val = carve_val(len(puzzles), params.val_size, params.seed)
    train = _assemble(puzzles[keep], solutions[keep], params.num_aug, rng_aug)
    return train, (_assemble(puzzles[val], solutions[val], 0, None) if params.val_size else None)


def _collect(params: SudokuBuildParams) -> tuple[Split, Split, Split | None]:
    """Train, test and val (None without ``val_size``) arrays for the recipe."""
    seed = params.seed
    rng_aug = np.random.default_rng([seed, _STREAM_AUG])
    cells = params.size * params.size
    test_size = params.resolved_test_size()
    if params.source_csv is not None:
        train_p, train_s = _read_csv(
            params.source_csv, params.size, params.min_difficulty, params.subsample_size,
            np.random.default_rng([seed, _STREAM_TRAIN]),
        )  # fmt: skip
        test_p, test_s = _read_csv(
            params.source_csv_test, params.size, params.min_difficulty, test_size,
            np.random.default_rng([seed, _STREAM_TEST]),
        )  # fmt: skip
        if not len(train_p):
            raise BuildError(f"{params.source_csv}: no rows with rating >= {params.min_difficulty}")
        train, val = _train_val(train_p, train_s, params, rng_aug)
        test = _assemble(test_p, test_s, 0, None)
        return train, test, val
    seen: set[bytes] = set()
    train_pairs = _generate(
        params, params.subsample_size, np.random.default_rng([seed, _STREAM_TRAIN]), seen, "train"
    )
    train, val = _train_val(*_stack(train_pairs, cells), params, rng_aug)
    # Test puzzles must not coincide with any train puzzle, augmented ones included (nor with
    # a val puzzle: every generated train puzzle is in ``seen`` already).
    decoded = np.ascontiguousarray(train["inputs"] - 1, dtype=np.uint8)
    seen.update(row.tobytes() for row in decoded)
    assert test_size is not None
    test_pairs = _generate(params, test_size, np.random.default_rng([seed, _STREAM_TEST]), seen, "test")
    test = _assemble(*_stack(test_pairs, cells), 0, None)
    return train, test, val


# ----- output ----------------------------------------------------------------------------------
def _build(params: SudokuBuildParams, cli_argv: list[str] | None) -> dict:
    """Validate, build into a temp dir, then swap it in so readers never see a half dataset."""
    params.validate()
    check_replaceable(params.output_dir)  # before the (possibly long) generation
    train, test, val = _collect(params)
    return write_train_test(params, train, test, lambda split: _metadata(params.size, split), builder=BUILDER,
                            kind=KIND, cli_argv=cli_argv, val=val)


def build_sudoku_dataset(output_dir: str | os.PathLike[str], **options: Any) -> str:
    """Build (or rebuild, replacing) a Sudoku dataset at ``output_dir``; returns its path.
    ``options`` are ``SudokuBuildParams``' fields.

    Raises ValueError for an invalid recipe and BuildError when it cannot be fulfilled.
    """
    _build(recipe(SudokuBuildParams, output_dir, options), cli_argv=None)
    return str(output_dir)


def _parser() -> argparse.ArgumentParser:
    p = new_parser(BUILDER, "Build a Sudoku dataset in the HRM puzzle format.")
    p.add_argument("--size", type=int, default=9, help="board size: 4, 6 or 9 (default 9)")
    p.add_argument("--subsample-size", type=int, default=1000, help="train base puzzles")
    p.add_argument("--num-aug", type=int, default=0, help="augmentations per train puzzle")
    p.add_argument("--min-difficulty", type=int, default=0, help="keep puzzles with rating >= this")
    p.add_argument("--blanks", type=int, default=None, help="blanks per generated puzzle (default: minimal)")
    p.add_argument("--test-size", type=int, default=None, help="test puzzles (default: see README)")
    add_source_csv_args(p, "Sudoku-Extreme style train CSV (source,q,a,rating)")
    add_val_size_arg(p)
    return p


def _summary(info: dict, params: SudokuBuildParams, seconds: float) -> str:
    counts = info["counts"]
    return (
        f"built sudoku {params.size}x{params.size}: train {counts['train_groups']} puzzles x "
        f"{1 + params.num_aug} = {counts['train_examples']} examples, test {counts['test_examples']} "
        f"examples{_val_note(counts)} -> {params.output_dir} in {seconds:.1f} s"
    )


def _val_note(counts: dict) -> str:
    return f", val {counts['val_examples']} examples" if "val_examples" in counts else ""


# CLI entry point: one-line errors, one-line summary.
main = cli_main("build_sudoku", _parser, SudokuBuildParams, cli_build(_build), _summary)

if __name__ == "__main__":
    sys.exit(main())
