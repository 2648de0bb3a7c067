"""ARC evaluation: undo augmentations, vote across variants, pass@k, ARC Prize submission file.

Each test example of an ARC dataset is one test input of one task under one augmentation
(read from the puzzle name in ``identifiers.json``: ``<task>`` or ``<task>_t<k>_<perm>``,
the reference's naming, so reference-built datasets work too). For every (task, test
input) the predictions of all variants are cropped at EOS/PAD, mapped back through the
inverse augmentation and voted on; candidates rank by vote count, then by mean
sigmoid(q_halt), then by first appearance.

Metrics (the ARC convention the paper uses, and the ARC Prize's):

* ``eval/arc_pass@k`` (k = 1, 2, 10): share of tasks whose test inputs are *all* answered
  by one of their top-k candidates;
* ``eval/arc_pass@2_per_input``: per task, the share of its test inputs answered within
  the top 2, averaged over tasks.

``arc_predictions.json`` (ARC Prize layout, ``{task_id: [{"attempt_1": grid, "attempt_2":
grid}, ...]}``) holds the top-2 candidates, so scoring the file gives ``arc_pass@2`` (and
the attempt_1 column gives ``arc_pass@1``). An input without any readable prediction gets
``[[0]]`` in the file and is scored the same way in the metrics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_core.data import arc
from hrm_core.data.format import DatasetError, open_split

PASS_KS = (1, 2, 10)
PREDICTIONS_FILE = "arc_predictions.json"
PER_INPUT_METRIC = "eval/arc_pass@2_per_input"
FALLBACK_GRID = np.zeros((1, 1), dtype=np.uint8)
_CHUNK = 1 << 14


def pass_metric(k: int) -> str:
    return f"eval/arc_pass@{k}"


@dataclass
class TestLayout:
    """Where each test example comes from: task, test input index and augmentation."""

    task_ids: list[str]  # in dataset order
    truths: list[list[np.ndarray]]  # per task, per test input: the ground-truth grid
    example_task: np.ndarray  # (N,) index into task_ids
    example_input: np.ndarray  # (N,) test input index within the task
    example_puzzle: np.ndarray  # (N,) index into puzzle_augs
    puzzle_augs: list[arc.Augmentation]

    @property
    def num_examples(self) -> int:
        return int(self.example_task.shape[0])


_LAYOUTS: dict[tuple, TestLayout] = {}


def _cache_key(data_path: str) -> tuple:
    root = Path(data_path)
    stamps = []
    for p in (root / "identifiers.json", root / "test" / "dataset.json"):
        try:
            st = p.stat()
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return (str(root.resolve()), *stamps)


def load_layout(data_path: str | os.PathLike[str]) -> TestLayout:
    """Read (and cache per dataset version) the test split's ARC layout and ground truth.

    The truth of a test input is its label in the task's untransformed puzzle (or any
    variant's label mapped back); the label canvases are untranslated, so cropping is exact.
    """
    key = _cache_key(str(data_path))
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    root = Path(data_path)
    ids_path = root / "identifiers.json"
    try:
        names = json.loads(ids_path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(ids_path, f"cannot read puzzle names for ARC evaluation: {e}") from None
    split = open_split(root, "test")
    task_index: dict[str, int] = {}
    num_inputs: list[int] = []
    truth_source: list[tuple[int, int]] = []  # per task: (first example, puzzle index) to read truth from
    puzzle_augs: list[arc.Augmentation] = []
    ex_task, ex_input, ex_puzzle = [], [], []
    offset = 0
    label_parts = []
    for set_name in split.metadata.sets:
        arrays = split.sets[set_name]
        label_parts.append(arrays["labels"])
        starts = arrays["puzzle_indices"].astype(np.int64)
        for p, pid in enumerate(arrays["puzzle_identifiers"].tolist()):
            if not 0 <= pid < len(names):
                raise DatasetError(ids_path, f"has no name for puzzle identifier {pid}")
            task_id, aug = arc.parse_name(str(names[pid]))
            n = int(starts[p + 1] - starts[p])
            t = task_index.setdefault(task_id, len(task_index))
            source = (offset + int(starts[p]), len(puzzle_augs))
            if t == len(num_inputs):
                num_inputs.append(n)
                truth_source.append(source)
            elif num_inputs[t] != n:
                raise DatasetError(
                    ids_path,
                    f"task {task_id}: variant {names[pid]} has {n} test inputs, another has {num_inputs[t]}",
                )
            elif aug.is_identity and not puzzle_augs[truth_source[t][1]].is_identity:
                truth_source[t] = source  # prefer the untransformed labels
            ex_task.append(np.full(n, t, dtype=np.int32))
            ex_input.append(np.arange(n, dtype=np.int32))
            ex_puzzle.append(np.full(n, len(puzzle_augs), dtype=np.int32))
            puzzle_augs.append(aug)
        offset += int(arrays["inputs"].shape[0])
    labels = label_parts[0] if len(label_parts) == 1 else np.concatenate(label_parts)
    truths = []
    for t, (first, puzzle) in enumerate(truth_source):
        aug = puzzle_augs[puzzle]
        truths.append([aug.invert(arc.crop(labels[first + k])) for k in range(num_inputs[t])])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    layout = TestLayout(list(task_index), truths, cat(ex_task), cat(ex_input), cat(ex_puzzle), puzzle_augs)
    _LAYOUTS.clear()  # keep one dataset: a sweep worker evaluates one at a time
    _LAYOUTS[key] = layout
    return layout


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -60, 60)))


def _grid_key(grid: np.ndarray) -> tuple[int, int, bytes]:
    return (grid.shape[0], grid.shape[1], np.ascontiguousarray(grid, dtype=np.uint8).tobytes())


def rank_candidates(
    layout: TestLayout, predictions: np.ndarray, q_halt: np.ndarray
) -> list[list[list[np.ndarray]]]:
    """Per task, per test input: candidate grids (original colours and orientation), best first."""
    if predictions.shape[0] != layout.num_examples or q_halt.shape[0] != layout.num_examples:
        raise ValueError(
            f"ARC evaluation needs one prediction per test example ({layout.num_examples}), "
            f"got {predictions.shape[0]} predictions and {q_halt.shape[0]} q_halt values"
        )
    preds = np.asarray(predictions).reshape(-1, arc.GRID_SIZE, arc.GRID_SIZE)
    # In chunks: the full ARC-AGI-1 x1000 test split has ~420k predictions.
    sizes = np.concatenate(
        [arc.crop_sizes(preds[i : i + _CHUNK]) for i in range(0, len(preds), _CHUNK)]
        or [np.zeros((0, 2), np.int64)]
    )
    conf = _sigmoid(q_halt)
    # votes[task][input]: key -> [count, sum of confidence, first example, grid]
    votes: list[list[dict]] = [[{} for _ in truths] for truths in layout.truths]
    for i in range(layout.num_examples):
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        if h == 0:
            continue  # nothing readable at the corner: no vote
        grid = (preds[i, :h, :w].astype(np.int16) - arc.COLOUR_OFFSET).astype(np.uint8)
        grid = layout.puzzle_augs[layout.example_puzzle[i]].invert(grid)
        bucket = votes[layout.example_task[i]][layout.example_input[i]]
        key = _grid_key(grid)
        if key in bucket:
            bucket[key][0] += 1
            bucket[key][1] += float(conf[i])
        else:
            bucket[key] = [1, float(conf[i]), i, grid]
    ranked = []
    for task_votes in votes:
        per_input = []
        for bucket in task_votes:
            order = sorted(bucket.values(), key=lambda v: (-v[0], -v[1] / v[0], v[2]))
            per_input.append([v[3] for v in order] or [FALLBACK_GRID])
        ranked.append(per_input)
    return ranked


def score(layout: TestLayout, ranked: list[list[list[np.ndarray]]]) -> dict[str, float]:
    """pass@k over tasks (all inputs right) and pass@2 per input averaged per task."""
    n_tasks = len(layout.task_ids)
    if n_tasks == 0:
        return {}
    hits = {k: 0.0 for k in PASS_KS}
    per_input = 0.0
    for truths, candidates in zip(layout.truths, ranked, strict=True):
        # rank of the truth among each input's candidates (inf = absent)
        ranks = []
        for truth, cands in zip(truths, candidates, strict=True):
            key = _grid_key(truth)
            ranks.append(next((r for r, c in enumerate(cands) if _grid_key(c) == key), np.inf))
        for k in PASS_KS:
            hits[k] += float(all(r < k for r in ranks))
        per_input += sum(r < 2 for r in ranks) / len(ranks)
    out = {pass_metric(k): hits[k] / n_tasks for k in PASS_KS}
    out[PER_INPUT_METRIC] = per_input / n_tasks
    return out


def submission(layout: TestLayout, ranked: list[list[list[np.ndarray]]]) -> dict[str, list[dict[str, list]]]:
    """ARC Prize layout: per task, per test input, the top two candidates (repeated if only one)."""
    out: dict[str, list[dict[str, list]]] = {}
    for task_id, candidates in zip(layout.task_ids, ranked, strict=True):
        out[task_id] = [
            {"attempt_1": cands[0].tolist(), "attempt_2": cands[min(1, len(cands) - 1)].tolist()}
            for cands in candidates
        ]
    return out


def write_submission(path: str | os.PathLike[str], sub: dict) -> None:
    """Atomic write, so a reader (or the scorer) never sees a half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(sub, separators=(",", ":")))
    os.replace(tmp, path)


def evaluate_arc(
    data_path: str, predictions: np.ndarray, q_halt: np.ndarray, out_dir: str | None, step: int
) -> dict[str, float]:
    """The trainer's evaluator hook for ARC datasets: metrics, and arc_predictions.json in ``out_dir``."""
    layout = load_layout(data_path)
    ranked = rank_candidates(layout, np.asarray(predictions), np.asarray(q_halt))
    metrics = score(layout, ranked)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_submission(os.path.join(out_dir, PREDICTIONS_FILE), submission(layout, ranked))
    return metrics
