"""Mazes: labelled paths are shortest paths (checked by an independent BFS), seeding, CSV import, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from hrm_core.data import maze
from hrm_core.data.build_maze import BuildError, build_maze_dataset, main
from hrm_core.data.format import open_split

PROJECT = Path(__file__).resolve().parents[1]


def independent_shortest(grid: list[str]) -> int:
    """Plain BFS over the question's characters: steps from S to G, -1 if unreachable."""
    n = len(grid)
    start = next((r, c) for r in range(n) for c in range(n) if grid[r][c] == "S")
    seen = {start: 0}
    todo = deque([start])
    while todo:
        r, c = todo.popleft()
        if grid[r][c] == "G":
            return seen[(r, c)]
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < n and 0 <= nc < n and grid[nr][nc] != "#" and (nr, nc) not in seen:
                seen[(nr, nc)] = seen[(r, c)] + 1
                todo.append((nr, nc))
    return -1


def assert_labelled_shortest_path(question: np.ndarray, answer: np.ndarray, min_len: int = 0) -> None:
    """The 'o' cells and S, G form one simple walk S->G whose length is the BFS distance."""
    n = question.shape[0]
    q = [maze.to_string(question)[i * n : (i + 1) * n] for i in range(n)]
    a = [maze.to_string(answer)[i * n : (i + 1) * n] for i in range(n)]
    assert sum(row.count("S") for row in q) == 1 and sum(row.count("G") for row in q) == 1
    assert not any("o" in row for row in q)
    for r in range(n):
        for c in range(n):
            assert a[r][c] == q[r][c] or (a[r][c] == "o" and q[r][c] == " ")
    on_path = {(r, c) for r in range(n) for c in range(n) if a[r][c] in "SGo"}
    start = next(p for p in on_path if a[p[0]][p[1]] == "S")
    # Walk the marked cells from S: each step has exactly one unvisited marked neighbour.
    walk, prev = [start], None
    while a[walk[-1][0]][walk[-1][1]] != "G":
        r, c = walk[-1]
        nxt = [
            p
            for p in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1))
            if p in on_path and p != prev and p not in walk
        ]
        assert len(nxt) == 1, f"path branches or breaks at {(r, c)}"
        prev = walk[-1]
        walk.append(nxt[0])
    assert len(walk) == len(on_path)
    steps = len(walk) - 1
    assert steps == independent_shortest(q) and steps >= min_len


@pytest.mark.parametrize(("size", "min_len"), [(30, 110), (12, 20), (7, 0)])
def test_generated_paths_are_shortest(size: int, min_len: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(8 if size == 30 else 30):
        question, answer = maze.generate_maze(size, rng, min_path_len=min_len)
        assert question.shape == answer.shape == (size, size) and question.dtype == np.uint8
        assert_labelled_shortest_path(question, answer, min_len)
        assert maze.path_length(answer) >= min_len


def test_string_round_trip_and_charset() -> None:
    q, a = maze.generate_maze(10, np.random.default_rng(0), 5)
    assert np.array_equal(maze.from_string(maze.to_string(a)), a)
    assert set(maze.to_string(a)) <= set(maze.CHARSET)
    assert (maze.WALL, maze.OPEN, maze.START, maze.GOAL, maze.PATH) == tuple(
        maze.from_string("# SGo" + "#" * 4).reshape(-1)[:5]
    )
    with pytest.raises(ValueError, match="charset"):
        maze.from_string("#x##")


def test_unreachable_difficulty_fails_clearly() -> None:
    with pytest.raises(maze.GenerationError, match="min_path_len"):
        maze.generate_maze(6, np.random.default_rng(0), min_path_len=200, max_tries=3)


def test_builder_is_seeded_and_labels_are_shortest(tmp_path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for path, seed in ((a, 1), (b, 1), (c, 2)):
        build_maze_dataset(path, size=12, subsample_size=40, test_size=10, min_path_len=15, seed=seed)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "build_info.json")
    assert len(files) == 13  # 10 arrays, 2 dataset.json, identifiers.json
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train/all__inputs.npy").read_bytes() != (c / "train/all__inputs.npy").read_bytes()
    train, test = open_split(a, "train"), open_split(a, "test")
    assert (train.metadata.vocab_size, train.metadata.seq_len, train.metadata.ignore_label_id) == (6, 144, 0)
    assert train.num_examples() == 40 and test.num_examples() == 10
    for ps in (train, test):
        arrays = ps.sets["all"]
        for q, ans in zip(arrays["inputs"], arrays["labels"], strict=True):
            assert_labelled_shortest_path(q.reshape(12, 12), ans.reshape(12, 12), 15)
    seen = {bytes(q) for q in train.sets["all"]["inputs"]}
    assert not any(bytes(q) in seen for q in test.sets["all"]["inputs"])
    assert json.loads((a / "build_info.json").read_text())["builder"] == "hrm_core.data.build_maze"


def test_dihedral_augmentation_groups(tmp_path) -> None:
    build_maze_dataset(tmp_path / "d", size=9, subsample_size=5, test_size=3, aug=True, seed=0)
    arrays = open_split(tmp_path / "d", "train").sets["all"]
    assert arrays["inputs"].shape == (40, 81) and list(arrays["group_indices"]) == list(range(0, 41, 8))
    for q, ans in zip(arrays["inputs"], arrays["labels"], strict=True):
        assert_labelled_shortest_path(q.reshape(9, 9), ans.reshape(9, 9))


def _write_csv(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "question", "answer", "rating"])
        for q, a in pairs:
            w.writerow(["gen", maze.to_string(q), maze.to_string(a), maze.path_length(a)])


def test_csv_import(tmp_path) -> None:
    rng = np.random.default_rng(3)
    pairs = [maze.generate_maze(8, rng) for _ in range(30)]
    _write_csv(tmp_path / "train.csv", pairs[:20])
    _write_csv(tmp_path / "test.csv", pairs[20:])
    build_maze_dataset(tmp_path / "d", source_csv=tmp_path / "train.csv",
                       source_csv_test=tmp_path / "test.csv", subsample_size=1000,
                       min_path_len=8)  # fmt: skip
    train, test = open_split(tmp_path / "d", "train"), open_split(tmp_path / "d", "test")
    keep = [(q, a) for q, a in pairs[:20] if maze.path_length(a) >= 8]
    assert 0 < len(keep) < 20
    assert np.array_equal(train.sets["all"]["inputs"], np.stack([q.reshape(-1) for q, _ in keep]))
    assert np.array_equal(train.sets["all"]["labels"], np.stack([a.reshape(-1) for _, a in keep]))
    assert test.num_examples() == sum(maze.path_length(a) >= 8 for _, a in pairs[20:])
    # A bad character names the file and line.
    (tmp_path / "bad.csv").write_text("source,question,answer,rating\nx,#S#x,#S#x,0\n")
    with pytest.raises(BuildError, match=r"bad\.csv:2: .*charset"):
        build_maze_dataset(
            tmp_path / "e", source_csv=tmp_path / "bad.csv", source_csv_test=tmp_path / "test.csv"
        )


def test_cli(tmp_path, capsys) -> None:
    assert (
        main(
            ["--output-dir", str(tmp_path / "m"), "--size", "8", "--subsample-size", "10", "--test-size", "2"]
        )
        == 0
    )
    assert "built maze 8x8: train 10 mazes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--output-dir", str(tmp_path / "n"), "--open-fraction", "1.5"])
    assert exc.value.code == 2
    assert (
        main(
            [
                "--output-dir",
                str(tmp_path / "o"),
                "--size",
                "5",
                "--min-path-len",
                "99",
                "--subsample-size",
                "1",
            ]
        )
        == 1
    )
    assert "lower min_path_len" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_trains_on_mazes(tmp_path) -> None:
    data = tmp_path / "maze"
    build_maze_dataset(data, size=8, subsample_size=24, test_size=8, min_path_len=6, seed=0)
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "hrm_core.pretrain", "arch=hrm_tiny", f"data_path={data}",
         "global_batch_size=8", "epochs=1", "eval_interval=1", "max_steps=3", "progress=false",
         f"checkpoint_path={run}", "threads=1"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/exact_accuracy" in r for r in rows) and max(r["step"] for r in rows) == 3
