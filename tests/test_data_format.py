"""On-disk format: round trips, dtypes, cheap validation faults, fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm_core.data.format import (
    FIELDS,
    IGNORE_LABEL_ID,
    DatasetError,
    PuzzleDatasetMetadata,
    dataset_fingerprint,
    describe,
    load_metadata,
    open_split,
    write_identifiers,
    write_split,
)

SEQ_LEN = 6


def _arrays(n_groups: int = 3, max_value: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """A set with groups of 1-2 puzzles of 1-3 examples each."""
    rng = np.random.default_rng(seed)
    puzzles_per_group = rng.integers(1, 3, size=n_groups)
    n_puzzles = int(puzzles_per_group.sum())
    examples_per_puzzle = rng.integers(1, 4, size=n_puzzles)
    n_examples = int(examples_per_puzzle.sum())
    return {
        "inputs": rng.integers(0, max_value + 1, size=(n_examples, SEQ_LEN)),
        "labels": rng.integers(0, max_value + 1, size=(n_examples, SEQ_LEN)),
        "puzzle_identifiers": rng.integers(0, 3, size=n_puzzles),
        "puzzle_indices": np.concatenate([[0], np.cumsum(examples_per_puzzle)]),
        "group_indices": np.concatenate([[0], np.cumsum(puzzles_per_group)]),
    }


def _metadata(sets: dict[str, dict[str, np.ndarray]], **overrides) -> PuzzleDatasetMetadata:
    fields = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=300,
        seq_len=SEQ_LEN,
        num_puzzle_identifiers=3,
        total_groups=sum(len(a["group_indices"]) - 1 for a in sets.values()),
        mean_puzzle_examples=1.5,
        sets=list(sets),
    )
    fields.update(overrides)
    return PuzzleDatasetMetadata(**fields)


def _write(
    root: Path, sets: dict[str, dict[str, np.ndarray]] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    sets = sets or {"all": _arrays()}
    for split in ("train", "test"):
        write_split(root, split, _metadata(sets), sets)
    write_identifiers(root, ["<blank>", "a", "b"])
    return sets


def test_round_trip(tmp_path: Path) -> None:
    sets = _write(tmp_path, {"a": _arrays(seed=1), "b": _arrays(n_groups=4, seed=2)})
    split = open_split(tmp_path, "train")
    assert split.metadata == _metadata(sets)
    assert split.metadata.total_groups == 7
    for name in ("a", "b"):
        for field in FIELDS:
            np.testing.assert_array_equal(split.sets[name][field], sets[name][field])
    assert isinstance(split.sets["a"]["inputs"], np.memmap)
    assert not isinstance(split.sets["a"]["puzzle_indices"], np.memmap)
    assert not isinstance(open_split(tmp_path, "train", mmap=False).sets["a"]["inputs"], np.memmap)
    assert json.loads((tmp_path / "identifiers.json").read_text()) == ["<blank>", "a", "b"]


def test_dtypes_written(tmp_path: Path) -> None:
    small = _arrays(max_value=255)
    big = _arrays(max_value=1000, seed=3)
    _write(tmp_path / "small", {"all": small})
    _write(tmp_path / "big", {"all": big})
    assert np.load(tmp_path / "small/train/all__inputs.npy").dtype == np.uint8
    assert np.load(tmp_path / "small/train/all__labels.npy").dtype == np.uint8
    assert np.load(tmp_path / "big/train/all__inputs.npy").dtype == np.int32
    for field in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        assert np.load(tmp_path / f"small/train/all__{field}.npy").dtype == np.int32
    np.testing.assert_array_equal(open_split(tmp_path / "big", "train").sets["all"]["inputs"], big["inputs"])


def test_extra_metadata_fields_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path)
    meta_path = tmp_path / "train" / "dataset.json"
    raw = json.loads(meta_path.read_text())
    raw["some_future_field"] = [1, 2]
    meta_path.write_text(json.dumps(raw))
    assert load_metadata(tmp_path, "train").seq_len == SEQ_LEN


def test_reference_dtypes_load_unchanged(tmp_path: Path) -> None:
    """Files as the reference builders write them: int64 tokens, int32 offsets, plain json.dump."""
    arrays = _arrays()
    split_dir = tmp_path / "train"
    split_dir.mkdir()
    reference = {
        "inputs": arrays["inputs"].astype(np.int64),
        "labels": arrays["labels"].astype(np.int64),
        "puzzle_identifiers": arrays["puzzle_identifiers"].astype(np.int32),
        "puzzle_indices": arrays["puzzle_indices"].astype(np.int32),
        "group_indices": arrays["group_indices"].astype(np.int32),
    }
    for field, values in reference.items():
        np.save(split_dir / f"all__{field}.npy", values)
    meta = {
        "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": SEQ_LEN,
        "num_puzzle_identifiers": 3, "total_groups": 3, "mean_puzzle_examples": 1, "sets": ["all"],
    }  # fmt: skip
    (split_dir / "dataset.json").write_text(json.dumps(meta))
    split = open_split(tmp_path, "train")
    for field, values in reference.items():
        loaded = split.sets["all"][field]
        assert loaded.dtype == values.dtype
        np.testing.assert_array_equal(loaded, values)
    assert split.metadata.mean_puzzle_examples == 1.0


def test_ignore_label_is_mapped_to_minus_100(tmp_path: Path) -> None:
    from hrm_core.data.sampler import TrainSampler, eval_batches

    arrays = _arrays()
    arrays["labels"][:, 0] = 0
    sets = _write(tmp_path, {"all": arrays})
    split = open_split(tmp_path, "train")
    _, batch, n_valid = next(iter(eval_batches(split, global_batch_size=64)))
    assert n_valid == len(arrays["labels"])
    raw = np.asarray(sets["all"]["labels"])
    labels = batch["labels"][:n_valid].numpy()
    np.testing.assert_array_equal(labels == IGNORE_LABEL_ID, raw == 0)
    np.testing.assert_array_equal(labels[raw != 0], raw[raw != 0])
    assert (raw == 0).any()
    assert not (TrainSampler(split, 8).next_batch()["labels"] == 0).any()


def test_null_ignore_label_keeps_labels(tmp_path: Path) -> None:
    from hrm_core.data.sampler import eval_batches

    arrays = _arrays()
    write_split(tmp_path, "test", _metadata({"all": arrays}, ignore_label_id=None), {"all": arrays})
    _, batch, n_valid = next(iter(eval_batches(open_split(tmp_path, "test"), global_batch_size=4)))
    np.testing.assert_array_equal(batch["labels"][:n_valid].numpy(), arrays["labels"][:n_valid])


def _set_json(path: Path, **changes) -> None:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def _save(path: Path, values: np.ndarray) -> None:
    np.save(path, values)


FAULTS = {
    "missing_dataset_json": ("train/dataset.json", lambda p: p.unlink()),
    "corrupt_json": ("train/dataset.json", lambda p: p.write_text('{"pad_id": 0,')),
    "json_missing_field": ("train/dataset.json", lambda p: p.write_text(json.dumps({"pad_id": 0}))),
    "truncated_inputs": ("train/all__inputs.npy", _truncate),
    "truncated_indices": ("train/all__puzzle_indices.npy", _truncate),
    "garbage_npy": ("train/all__labels.npy", lambda p: p.write_bytes(b"not a numpy file")),
    "missing_array": ("train/all__group_indices.npy", lambda p: p.unlink()),
    "wrong_seq_len": (
        "train/all__inputs.npy",
        lambda p: _save(p, np.zeros((np.load(p).shape[0], SEQ_LEN - 1), dtype=np.uint8)),
    ),
    "labels_rows_differ": ("train/all__labels.npy", lambda p: _save(p, np.load(p)[:-1])),
    "non_monotonic_puzzle_indices": (
        "train/all__puzzle_indices.npy",
        lambda p: _save(p, np.load(p)[[0, 2, 1, *range(3, len(np.load(p)))]]),
    ),
    "puzzle_indices_not_starting_at_0": (
        "train/all__puzzle_indices.npy",
        lambda p: _save(p, np.load(p) + 1),
    ),
    "group_indices_wrong_end": (
        "train/all__group_indices.npy",
        lambda p: _save(p, np.append(np.load(p)[:-1], np.load(p)[-1] - 1)),
    ),
    "identifiers_wrong_length": ("train/all__puzzle_identifiers.npy", lambda p: _save(p, np.load(p)[:-1])),
    "total_groups_mismatch": ("train/dataset.json", lambda p: _set_json(p, total_groups=99)),
    "seq_len_mismatch_in_json": ("train/dataset.json", lambda p: _set_json(p, seq_len=SEQ_LEN + 1)),
}

# Where the error must point when it is not the file that was damaged.
BLAMED = {"seq_len_mismatch_in_json": "train/all__inputs.npy"}


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_validation_faults(tmp_path: Path, fault: str, mmap: bool) -> None:
    _write(tmp_path)
    rel, damage = FAULTS[fault]
    damage(tmp_path / rel)
    with pytest.raises(DatasetError) as info:
        open_split(tmp_path, "train", mmap=mmap)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset error: ")
    assert str(tmp_path / BLAMED.get(fault, rel)) in message
    assert isinstance(info.value, ValueError)


def test_wrong_seq_len_message(tmp_path: Path) -> None:
    _write(tmp_path)
    path = tmp_path / "train" / "all__inputs.npy"
    _save(path, np.zeros((np.load(path).shape[0], SEQ_LEN - 1), dtype=np.uint8))
    with pytest.raises(
        DatasetError, match=rf"expected {SEQ_LEN} columns \(seq_len in dataset.json\), found {SEQ_LEN - 1}"
    ):
        open_split(tmp_path, "train")


def test_missing_split_dir(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(DatasetError, match="split directory not found") as info:
        open_split(tmp_path, "validation")
    assert str(tmp_path / "validation") in str(info.value)


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    sets = _write(tmp_path / "a")
    _write(tmp_path / "b", sets)
    fp = dataset_fingerprint(tmp_path / "a")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == dataset_fingerprint(tmp_path / "b") == dataset_fingerprint(tmp_path / "a")
    (tmp_path / "a" / "build_info.json").write_text("{}")  # not part of the data
    assert dataset_fingerprint(tmp_path / "a") == fp

    target = tmp_path / "b" / "test" / "all__labels.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    assert dataset_fingerprint(tmp_path / "b") != fp

    _write(tmp_path / "c", sets)
    (tmp_path / "c" / "identifiers.json").write_text('["<blank>", "a", "c"]')
    assert dataset_fingerprint(tmp_path / "c") != fp


def test_describe_is_one_line(tmp_path: Path) -> None:
    sets = _write(tmp_path)
    text = describe(tmp_path)
    n = len(sets["all"]["inputs"])
    assert "\n" not in text
    assert f"train: {n} examples" in text and f"seq_len={SEQ_LEN}" in text and "vocab_size=300" in text


def test_write_split_rejects_mismatched_sets(tmp_path: Path) -> None:
    arrays = _arrays()
    with pytest.raises(ValueError, match="do not match"):
        write_split(tmp_path, "train", _metadata({"all": arrays}), {"other": arrays})
