"""A run's dataset as an MLflow dataset input: what fills the runs table's Dataset column.

One input per run, made from the run context's ``dataset`` entry
(``hrm_core/observe/run_context.py``): the name (``data.name``, e.g. ``sudoku4``), the
content fingerprint as the digest (``hrm.dataset_fingerprint``), the folder as a local
source, and a profile of the split sizes read from the dataset's own files (examples,
puzzles and groups per split, sequence length, vocabulary). Logging it again is harmless:
MLflow keeps one dataset per (name, digest) in an experiment and one input per run.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from hrm_core import names

__all__ = ["dataset_input", "split_profile"]

DATA_CONTEXT = "train"  # the input's role: the runs train on it (and evaluate on its test split)


@lru_cache(maxsize=16)
def _profile(path: str, fingerprint: str) -> tuple[tuple[str, int], ...]:
    """Cached per (folder, fingerprint): a rebuilt dataset has another fingerprint."""
    import numpy as np

    from hrm_core.data.format import array_path, list_splits, load_metadata

    def rows(split: str, set_name: str, field: str) -> int:  # only the .npy header is read (mmap)
        return int(np.load(array_path(path, split, set_name, field), mmap_mode="r").shape[0])

    out: dict[str, int] = {}
    shape: dict[str, int] = {}
    for split in sorted(list_splits(path), key=lambda s: (s != "train", s)):  # train first
        meta = load_metadata(path, split)
        out[f"{split}_examples"] = sum(rows(split, s, "inputs") for s in meta.sets)
        out[f"{split}_puzzles"] = sum(rows(split, s, "puzzle_indices") - 1 for s in meta.sets)
        out[f"{split}_groups"] = meta.total_groups
        shape = {"seq_len": meta.seq_len, "vocab_size": meta.vocab_size}
    return tuple({**out, **shape}.items())


def split_profile(path: str, fingerprint: str = "") -> dict[str, int]:
    """``{"train_examples": ..., "train_puzzles": ..., "train_groups": ..., "test_...": ...,
    "seq_len": ..., "vocab_size": ...}`` of the dataset at ``path`` ({} when unreadable)."""
    try:
        return dict(_profile(os.path.abspath(path), fingerprint))
    except Exception:  # noqa: BLE001 - the input is logged without sizes rather than not at all
        return {}


def dataset_input(dataset: dict[str, Any] | None):
    """The ``mlflow.entities.DatasetInput`` of a run context's ``dataset`` entry, or None when
    there is none or its fingerprint could not be taken."""
    if not dataset:
        return None
    fingerprint, path = str(dataset.get("fingerprint") or ""), str(dataset.get("path") or "")
    if not fingerprint or fingerprint.startswith("unavailable") or not path:
        return None
    from mlflow.entities import Dataset, DatasetInput, InputTag

    name = str(dataset.get("name") or os.path.basename(path.rstrip(os.sep)) or "dataset")
    profile = split_profile(path, fingerprint)
    entity = Dataset(
        name=name,
        digest=fingerprint,
        source_type="local",
        source=json.dumps({"uri": path}),
        profile=json.dumps(profile) if profile else None,
    )
    return DatasetInput(entity, tags=[InputTag(names.TAG_MLFLOW_DATA_CONTEXT, DATA_CONTEXT)])
