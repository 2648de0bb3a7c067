"""The dataset checker: a one-line verdict naming the broken file, and its fingerprint cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm_core.data.build_maze import build_maze_dataset
from hrm_core.data.check import CACHE_FILE, check_dataset, main

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("check") / "maze"
    build_maze_dataset(path, size=6, subsample_size=30, test_size=6, seed=0)
    return path


@pytest.fixture
def dataset(clean, tmp_path) -> Path:
    path = tmp_path / "maze"
    shutil.copytree(clean, path)
    return path


def verdict(path: Path, capsys, *args: str) -> tuple[int, str]:
    code = main([str(path), *args])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one line
    return code, out.strip()


def test_clean_dataset_passes_and_is_cached(dataset, capsys) -> None:
    code, line = verdict(dataset, capsys)
    assert code == 0 and line.startswith("OK (fingerprint ") and "seq_len=36 vocab_size=6" in line
    cache = json.loads((dataset / CACHE_FILE).read_text())
    assert cache["ok"] and cache["fingerprint"] in line
    code, line = verdict(dataset, capsys)
    assert code == 0 and line.startswith("OK (cached")
    # A known fingerprint skips hashing; an unknown one forces the scan.
    assert check_dataset(dataset, fingerprint=cache["fingerprint"]).startswith("OK (cached")
    assert check_dataset(dataset, fingerprint="0" * 16).startswith("OK (fingerprint")


def test_truncated_array(dataset, capsys) -> None:
    target = dataset / "train" / "all__inputs.npy"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 50])
    code, line = verdict(dataset, capsys)
    assert code == 1 and line.startswith("FAIL") and str(target) in line and "truncated" in line


def test_truncated_small_array(dataset, capsys) -> None:
    target = dataset / "test" / "all__puzzle_indices.npy"
    target.write_bytes(target.read_bytes()[:-4])
    code, line = verdict(dataset, capsys)
    assert code == 1 and str(target) in line


def test_wrong_seq_len(dataset, capsys) -> None:
    meta_path = dataset / "train" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["seq_len"] = 49
    meta_path.write_text(json.dumps(meta))
    code, line = verdict(dataset, capsys)
    assert code == 1 and "train/all__inputs.npy" in line and "seq_len" in line and "49" in line


def test_token_out_of_range(dataset, capsys) -> None:
    assert verdict(dataset, capsys)[0] == 0  # cached as good ...
    target = dataset / "test" / "all__labels.npy"
    arr = np.load(target, mmap_mode="r+")
    arr[3, 7] = 6  # vocab_size is 6
    arr.flush()
    del arr
    code, line = verdict(dataset, capsys)  # ... but the files changed, so it scans again
    assert code == 1 and str(target) in line and "token 6 at row 3, column 7" in line and "vocab_size" in line
    code, line = verdict(dataset, capsys, "--quick")  # the cheap part cannot see it
    assert code == 0 and "structure only" in line


def test_ignore_label_is_allowed(dataset, capsys) -> None:
    meta_paths = [dataset / s / "dataset.json" for s in ("train", "test")]
    for p in meta_paths:
        meta = json.loads(p.read_text())
        meta["ignore_label_id"] = 200
        p.write_text(json.dumps(meta))
    target = dataset / "train" / "all__labels.npy"
    arr = np.load(target)
    arr[0, 0] = 200
    np.save(target, arr)
    assert verdict(dataset, capsys)[0] == 0
    arr[0, 1] = 201
    np.save(target, arr)
    code, line = verdict(dataset, capsys)
    assert code == 1 and "token 201 at row 0, column 1" in line


def test_non_monotonic_indices(dataset, capsys) -> None:
    target = dataset / "train" / "all__puzzle_indices.npy"
    idx = np.load(target)
    idx[5], idx[6] = idx[6], idx[5]
    np.save(target, idx)
    code, line = verdict(dataset, capsys)
    assert code == 1 and str(target) in line and "non-decreasing" in line


def test_empty_group(dataset, capsys) -> None:
    target = dataset / "train" / "all__group_indices.npy"
    idx = np.load(target)
    idx[2] = idx[1]
    np.save(target, idx)
    code, line = verdict(dataset, capsys)
    assert code == 1 and str(target) in line and "group 1 is empty" in line


def test_identifiers_must_match_metadata(dataset, capsys) -> None:
    (dataset / "identifiers.json").write_text(json.dumps(["<blank>", "extra"]))
    code, line = verdict(dataset, capsys)
    assert code == 1 and "identifiers.json" in line and "num_puzzle_identifiers is 1" in line


def test_cli_subprocess_on_a_missing_dir(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hrm_core.data.check", str(tmp_path / "nope")],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout.count("\n") == 1 and "nope" in proc.stdout and not proc.stderr


def test_sudoku_and_arc_datasets_pass(sudoku4_dataset, tmp_path) -> None:
    from hrm_core.data.build_arc import build_arc_dataset

    assert check_dataset(sudoku4_dataset, use_cache=False).startswith("OK")
    build_arc_dataset(tmp_path / "arc", num_aug=1, max_tasks=1)
    assert check_dataset(tmp_path / "arc").startswith("OK")
