"""Build a maze dataset (shortest-path labelling) in the reference HRM on-disk format.

Two sources:

* generated (default): seeded N x N mazes (30 x 30 by default) with a start, a goal and
  their unique shortest path; ``--min-path-len`` is the difficulty knob (steps from S to G;
  the reference's Maze-Hard uses paths longer than 110 on 30 x 30);
* CSV import of the reference's maze files (columns ``source,question,answer,rating``,
  question/answer N*N-character strings in the charset ``"# SGo"``).

Every maze is its own puzzle and group (one example), or, with ``--aug``, a group of its 8
dihedral transforms (train only), as in the reference builder. Tokens: ``# SGo`` -> 1..5,
PAD 0, ``vocab_size`` 6, labels cover every cell.

    python -m hrm_core.data.build_maze --output-dir data/maze-30x30-hard-1k \\
        --size 30 --subsample-size 1000 --test-size 1000 --min-path-len 110
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrm_core.data import maze
from hrm_core.data.arc import dihedral
from hrm_core.data.builder import (
    BuildError,
    add_source_csv_args,
    add_val_size_arg,
    carve_val,
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

BUILDER = "hrm_core.data.build_maze"
KIND = "maze"
_STREAM_TRAIN, _STREAM_TEST = 1, 2


@dataclass
class MazeBuildParams:
    """Everything that determines the dataset (the recipe stored in build_info.json)."""

    output_dir: str
    size: int = 30
    subsample_size: int = 1000
    test_size: int | None = None
    min_path_len: int = 0
    open_fraction: float = 0.05
    aug: bool = False
    seed: int = 0
    source_csv: str | None = None
    source_csv_test: str | None = None
    val_size: int = 0  # train mazes carved off as the validation split (0: no val split)

    def __post_init__(self) -> None:
        self.open_fraction = float(self.open_fraction)  # 0 and 0.0 are one recipe

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option) for an impossible recipe."""
        check_val_size(self.val_size, None if self.source_csv else self.subsample_size, "train mazes")
        if not 2 <= self.size <= 64:
            raise ValueError(f"--size must be in [2, 64], got {self.size}")
        if self.subsample_size < 1:
            raise ValueError(f"--subsample-size must be >= 1, got {self.subsample_size}")
        if self.test_size is not None and self.test_size < 0:
            raise ValueError(f"--test-size must be >= 0, got {self.test_size}")
        if self.min_path_len < 0:
            raise ValueError(f"--min-path-len must be >= 0, got {self.min_path_len}")
        if not 0.0 <= self.open_fraction < 1.0:
            raise ValueError(f"--open-fraction must be in [0, 1), got {self.open_fraction}")
        if (self.source_csv is None) != (self.source_csv_test is None):
            raise ValueError("--source-csv and --source-csv-test must be given together")

    def resolved_test_size(self) -> int | None:
        """Test mazes to make (None = every eligible row of the test CSV)."""
        if self.test_size is not None:
            return self.test_size
        return None if self.source_csv is not None else 1000

    def to_argv(self) -> list[str]:
        """Fully explicit CLI arguments reproducing this build."""
        argv = [
            "--output-dir", str(self.output_dir),
            "--size", str(self.size),
            "--subsample-size", str(self.subsample_size),
            "--min-path-len", str(self.min_path_len),
            "--open-fraction", repr(self.open_fraction),
            "--seed", str(self.seed),
        ]  # fmt: skip
        if self.test_size is not None:
            argv += ["--test-size", str(self.test_size)]
        if self.aug:
            argv.append("--aug")
        if self.source_csv is not None:
            argv += ["--source-csv", str(self.source_csv), "--source-csv-test", str(self.source_csv_test)]
        if self.val_size:
            argv += ["--val-size", str(self.val_size)]
        return argv


# ----- sources ---------------------------------------------------------------------------------
def _generate(
    params: MazeBuildParams, count: int, rng: np.random.Generator, seen: set[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct generated mazes, none of them in ``seen`` (which is updated)."""
    n = params.size
    questions = np.empty((count, n, n), dtype=np.uint8)
    answers = np.empty((count, n, n), dtype=np.uint8)
    made = attempts = 0
    while made < count:
        attempts += 1
        if attempts > 10 * count + 100:
            raise BuildError(f"only {made} of {count} distinct {n}x{n} mazes after {attempts} attempts")
        try:
            q, a = maze.generate_maze(n, rng, params.min_path_len, params.open_fraction)
        except maze.GenerationError as e:
            raise BuildError(str(e)) from None
        key = q.tobytes()
        if key in seen:
            continue
        seen.add(key)
        questions[made], answers[made] = q, a
        made += 1
    return questions, answers


def _read_csv(
    path: str, size: int | None, min_path_len: int, keep: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a reference maze CSV whose path has >= min_path_len steps; a seeded subset of ``keep``."""
    questions: list[np.ndarray] = []
    answers: list[np.ndarray] = []
    for line_no, row in csv_rows(path):
        try:
            q, a = maze.from_string(row[1].strip("\r\n")), maze.from_string(row[2].strip("\r\n"))
        except ValueError as e:
            raise BuildError(f"{path}:{line_no}: {e}") from None
        if q.shape != a.shape:
            raise BuildError(
                f"{path}:{line_no}: question is {q.shape[0]}x{q.shape[0]}, answer {a.shape[0]}x{a.shape[0]}"
            )
        if size is None:
            size = q.shape[0]
        elif q.shape[0] != size:
            raise BuildError(f"{path}:{line_no}: maze is {q.shape[0]}x{q.shape[0]}, expected {size}x{size}")
        path_cells = a == maze.PATH
        if ((q != a) & ~(path_cells & (q == maze.OPEN))).any():
            raise BuildError(
                f"{path}:{line_no}: answer differs from the question outside open cells marked 'o'"
            )
        if maze.path_length(a) >= min_path_len:
            questions.append(q)
            answers.append(a)
    if size is None:
        raise BuildError(f"{path}: no mazes")
    chosen = subsample(len(questions), keep, rng)
    empty = np.zeros((0, size, size), dtype=np.uint8)
    if not len(chosen):
        return empty, empty.copy()
    return np.stack([questions[i] for i in chosen]), np.stack([answers[i] for i in chosen])


# ----- assembly --------------------------------------------------------------------------------
def _assemble(questions: np.ndarray, answers: np.ndarray, aug: bool) -> dict[str, np.ndarray]:
    """One group per maze; with ``aug`` its 8 dihedral transforms are the group's puzzles."""
    per = 8 if aug else 1
    n, size = questions.shape[0], questions.shape[1]
    inputs = np.empty((n * per, size * size), dtype=np.uint8)
    labels = np.empty_like(inputs)
    for i in range(n):
        for t in range(per):
            inputs[i * per + t] = dihedral(questions[i], t).reshape(-1)
            labels[i * per + t] = dihedral(answers[i], t).reshape(-1)
    return {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.zeros(n * per, dtype=np.int32),
        "puzzle_indices": np.arange(n * per + 1, dtype=np.int32),
        "group_indices": np.arange(0, n * per + 1, per, dtype=np.int32),
    }


def _metadata(seq_len: int, arrays: dict[str, np.ndarray]) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(
        pad_id=maze.PAD,
        ignore_label_id=maze.PAD,
        blank_identifier_id=0,
        vocab_size=maze.VOCAB_SIZE,
        seq_len=seq_len,
        num_puzzle_identifiers=1,
        total_groups=len(arrays["group_indices"]) - 1,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )


Split = dict[str, np.ndarray]


def _collect(params: MazeBuildParams) -> tuple[Split, Split, Split | None, int]:
    """Train, test and val (None without ``val_size``) arrays and seq_len for the recipe. Val
    mazes are carved from the train mazes before ``--aug``, so none of their transforms is in train."""
    rng_train = np.random.default_rng([params.seed, _STREAM_TRAIN])
    rng_test = np.random.default_rng([params.seed, _STREAM_TEST])
    test_size = params.resolved_test_size()
    if params.source_csv is not None:
        train_q, train_a = _read_csv(
            params.source_csv, None, params.min_path_len, params.subsample_size, rng_train
        )
        if not len(train_q):
            raise BuildError(f"{params.source_csv}: no mazes with a path of >= {params.min_path_len} steps")
        size = train_q.shape[1]
        test_q, test_a = _read_csv(params.source_csv_test, size, params.min_path_len, test_size, rng_test)
    else:
        size = params.size
        seen: set[bytes] = set()
        train_q, train_a = _generate(params, params.subsample_size, rng_train, seen)
        if params.aug:  # augmented train mazes must not reappear in test either
            seen.update(np.ascontiguousarray(dihedral(q, t)).tobytes() for q in train_q for t in range(8))
        assert test_size is not None
        test_q, test_a = _generate(params, test_size, rng_test, seen)
    keep, val = carve_val(len(train_q), params.val_size, params.seed)
    val_split = _assemble(train_q[val], train_a[val], False) if params.val_size else None
    train = _assemble(train_q[keep], train_a[keep], params.aug)
    return train, _assemble(test_q, test_a, False), val_split, size * size


def _build(params: MazeBuildParams, cli_argv: list[str] | None) -> dict:
    params.validate()
    train, test, val, seq_len = _collect(params)
    return write_train_test(params, train, test, lambda split: _metadata(seq_len, split), builder=BUILDER,
                            kind=KIND, cli_argv=cli_argv, counts={"grid_size": int(round(seq_len**0.5))},
                            val=val)


def build_maze_dataset(output_dir: str | os.PathLike[str], **options: Any) -> str:
    """Build (or rebuild, replacing) a maze dataset at ``output_dir``; returns its path.
    ``options`` are ``MazeBuildParams``' fields.

    Raises ValueError for an invalid recipe and BuildError when it cannot be fulfilled.
    """
    _build(recipe(MazeBuildParams, output_dir, options), cli_argv=None)
    return str(output_dir)


def _parser() -> argparse.ArgumentParser:
    p = new_parser(BUILDER, "Build a maze (shortest path) dataset in the HRM puzzle format.")
    p.add_argument("--size", type=int, default=30, help="maze side N (generated mode; default 30)")
    p.add_argument("--subsample-size", type=int, default=1000, help="train mazes")
    p.add_argument("--test-size", type=int, default=None, help="test mazes (default 1000; all with CSVs)")
    p.add_argument("--min-path-len", type=int, default=0, help="keep mazes whose S->G path is >= this long")
    p.add_argument("--open-fraction", type=float, default=0.05, help="share of walls knocked out (loops)")
    p.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each train maze")
    add_source_csv_args(p, "reference maze train CSV (source,question,answer,rating)")
    add_val_size_arg(p, "mazes")
    return p


def _summary(info: dict, params: MazeBuildParams, seconds: float) -> str:
    c = info["counts"]
    return (
        f"built maze {c['grid_size']}x{c['grid_size']}: train {c['train_groups']} mazes -> "
        f"{c['train_examples']} examples, test {c['test_examples']} examples"
        + (f", val {c['val_examples']} examples" if "val_examples" in c else "") + f" -> {params.output_dir} "
        f"in {seconds:.1f} s"
    )


# CLI entry point: one-line errors, one-line summary.
main = cli_main("build_maze", _parser, MazeBuildParams, cli_build(_build), _summary)

if __name__ == "__main__":
    sys.exit(main())
