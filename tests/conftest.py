"""Shared fixtures. Tests run on the CPU with small models and few steps."""

from __future__ import annotations

import os
import sys

import pytest
import torch

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.environ.get(
    "HRM_REFERENCE_FIXTURE", os.path.join(os.path.dirname(PROJECT), "shared", "fixtures", "hrm_reference_tiny.pt")
)

# Two cores: keep torch from oversubscribing them when pytest runs subprocesses too.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sudoku4_dataset(tmp_path_factory) -> str:
    """A small 4x4 Sudoku dataset, built once per session by the real builder."""
    from hrm_core.data.build_sudoku import build_sudoku_dataset

    path = str(tmp_path_factory.mktemp("data") / "sudoku4")
    build_sudoku_dataset(path, size=4, blanks=8, subsample_size=200, num_aug=1, test_size=40, seed=0)
    return path


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]
