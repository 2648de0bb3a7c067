"""Dataset-specific evaluation beyond the loss head's metrics (e.g. ARC pass@k).

An evaluator receives the final-segment predictions for every test example, in dataset
order, and returns extra ``eval/*`` metrics; it may write files (such as
``arc_predictions.json``) into the run folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

# (data_path, predictions (N, seq_len) int tokens, q_halt logits (N,), out_dir, step) -> metrics
Evaluator = Callable[[str, np.ndarray, np.ndarray, str, int], dict[str, float]]

EVALUATORS: dict[str, Evaluator] = {}


def dataset_builder(data_path: str) -> str | None:
    """The dataset's kind ("arc", "maze", "sudoku") from its build_info.json, if any
    (older files only name the builder module)."""
    path = os.path.join(data_path, "build_info.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info.get("kind") or info.get("builder")


def evaluator_for(data_path: str) -> Evaluator | None:
    return EVALUATORS.get(dataset_builder(data_path) or "")


def _arc_evaluator(
    data_path: str, predictions: np.ndarray, q_halt: np.ndarray, out_dir: str, step: int
) -> dict[str, float]:
    """ARC pass@k and arc_predictions.json; imported lazily so non-ARC runs never load it."""
    from hrm_core.data.arc_eval import evaluate_arc

    return evaluate_arc(data_path, predictions, q_halt, out_dir, step)


# Keyed by the BUILDERS name and by the module name the ARC builder records in build_info.json.
EVALUATORS["arc"] = _arc_evaluator
EVALUATORS["hrm_core.data.build_arc"] = _arc_evaluator
