"""Training sampler (group-wise, resumable, rank-sliced) and eval batching."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_core.data.format import IGNORE_LABEL_ID, PuzzleDatasetMetadata, PuzzleSplit, open_split, write_split
from hrm_core.data.sampler import TrainSampler, eval_batches, total_train_steps

SEQ_LEN = 5
PAD, BLANK_ID = 7, 0


def _set_arrays(
    puzzles_per_group: list[int], examples_per_puzzle: list[int], row_offset: int = 0, seq_len: int = SEQ_LEN
) -> dict[str, np.ndarray]:
    """Column 0 of inputs holds a globally unique row id so batches can be traced back."""
    assert sum(puzzles_per_group) == len(examples_per_puzzle)
    n = sum(examples_per_puzzle)
    inputs = np.full((n, seq_len), 3, dtype=np.int64)
    inputs[:, 0] = row_offset + np.arange(n)
    labels = np.tile(np.arange(seq_len), (n, 1))  # label 0 is the ignore label
    return {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": 1 + np.arange(len(examples_per_puzzle)) % 5,
        "puzzle_indices": np.concatenate([[0], np.cumsum(examples_per_puzzle)]),
        "group_indices": np.concatenate([[0], np.cumsum(puzzles_per_group)]),
    }


def _write(root: Path, sets: dict[str, dict[str, np.ndarray]], split: str = "train") -> PuzzleSplit:
    n_puzzles = sum(len(a["puzzle_identifiers"]) for a in sets.values())
    n_examples = sum(len(a["inputs"]) for a in sets.values())
    meta = PuzzleDatasetMetadata(
        pad_id=PAD,
        ignore_label_id=0,
        blank_identifier_id=BLANK_ID,
        vocab_size=100_000,
        seq_len=next(iter(sets.values()))["inputs"].shape[1],
        num_puzzle_identifiers=6,
        total_groups=sum(len(a["group_indices"]) - 1 for a in sets.values()),
        mean_puzzle_examples=n_examples / n_puzzles,
        sets=list(sets),
    )
    write_split(root, split, meta, sets)
    return open_split(root, split)


@pytest.fixture
def grouped(tmp_path: Path) -> PuzzleSplit:
    """9 groups of 1-3 puzzles with 1-4 examples each."""
    rng = np.random.default_rng(5)
    ppg = [int(x) for x in rng.integers(1, 4, size=9)]
    epp = [int(x) for x in rng.integers(1, 5, size=sum(ppg))]
    return _write(tmp_path, {"all": _set_arrays(ppg, epp)})


def _row_ids(batch: dict[str, torch.Tensor]) -> np.ndarray:
    return batch["inputs"][:, 0].numpy().astype(np.int64)


def _check_pick_structure(split: PuzzleSplit, rows: np.ndarray, ids: np.ndarray) -> None:
    """Rows form consecutive picks; a pick is min(size, room) distinct examples of one puzzle."""
    arrays = split.sets["all"]
    pi = np.asarray(arrays["puzzle_indices"])
    puzzle_of_row = np.searchsorted(pi, rows, side="right") - 1
    np.testing.assert_array_equal(ids, np.asarray(arrays["puzzle_identifiers"])[puzzle_of_row])
    i = 0
    while i < len(rows):
        p = puzzle_of_row[i]
        size = int(pi[p + 1] - pi[p])
        pick = rows[i : i + size]
        assert np.all(puzzle_of_row[i : i + size] == p), "a pick mixes puzzles"
        assert len(set(pick.tolist())) == len(pick), "examples drawn with replacement"
        assert len(pick) == size or i + len(pick) == len(rows), "short pick before the end of the batch"
        i += size


def test_shapes_dtypes_and_labels(grouped: PuzzleSplit) -> None:
    batch = TrainSampler(grouped, global_batch_size=6).next_batch()
    assert set(batch) == {"inputs", "labels", "puzzle_identifiers"}
    assert batch["inputs"].shape == (6, SEQ_LEN) and batch["inputs"].dtype == torch.int32
    assert batch["labels"].shape == (6, SEQ_LEN) and batch["labels"].dtype == torch.int32
    assert batch["puzzle_identifiers"].shape == (6,) and batch["puzzle_identifiers"].dtype == torch.int32
    expected = torch.tensor([IGNORE_LABEL_ID, *range(1, SEQ_LEN)], dtype=torch.int32)
    assert torch.equal(batch["labels"], expected.expand(6, SEQ_LEN))


def test_draws_whole_puzzles_by_group(grouped: PuzzleSplit) -> None:
    sampler = TrainSampler(grouped, global_batch_size=7, seed=3)
    for _ in range(30):
        batch = sampler.next_batch()
        _check_pick_structure(grouped, _row_ids(batch), batch["puzzle_identifiers"].numpy())


def test_truncated_pick_is_random_subset(tmp_path: Path) -> None:
    """A puzzle larger than the batch contributes a random subset, not always the first rows."""
    split = _write(tmp_path, {"all": _set_arrays([1, 1], [10, 10])})
    sampler = TrainSampler(split, global_batch_size=4, seed=0)
    seen = set()
    for _ in range(20):
        rows = _row_ids(sampler.next_batch())
        assert len(set(rows.tolist())) == 4 and len(set((rows // 10).tolist())) == 1
        seen.update((rows % 10).tolist())
    assert seen == set(range(10))


def test_each_group_once_per_chunk(tmp_path: Path) -> None:
    """With one example per group, an epoch of batches is exactly one permutation of groups."""
    n_groups, batch_size = 60, 12
    split = _write(tmp_path, {"all": _set_arrays([1] * n_groups, [1] * n_groups)})
    sampler = TrainSampler(split, global_batch_size=batch_size, seed=11)
    epochs = []
    for _ in range(2):
        rows = np.concatenate([_row_ids(sampler.next_batch()) for _ in range(n_groups // batch_size)])
        assert sorted(rows.tolist()) == list(range(n_groups))
        epochs.append(rows)
    assert sampler.epoch_float == pytest.approx(2.0)
    assert not np.array_equal(epochs[0], epochs[1])


def test_group_frequency_with_multi_puzzle_groups(tmp_path: Path) -> None:
    """Groups are drawn uniformly, whatever their number of puzzles (each puzzle one example)."""
    ppg = [1, 5, 2, 8, 1, 3]
    split = _write(tmp_path, {"all": _set_arrays(ppg, [1] * sum(ppg))})
    group_of_puzzle = np.repeat(np.arange(len(ppg)), ppg)
    sampler = TrainSampler(split, global_batch_size=6, seed=1)
    counts = np.zeros(len(ppg), dtype=int)
    for _ in range(20):
        counts += np.bincount(group_of_puzzle[_row_ids(sampler.next_batch())], minlength=len(ppg))
    np.testing.assert_array_equal(counts, np.full(len(ppg), 20))  # 20 whole chunks
    assert sampler.epoch_float == pytest.approx(20.0)


def test_epoch_float_counts_groups(grouped: PuzzleSplit) -> None:
    sampler = TrainSampler(grouped, global_batch_size=5)
    assert sampler.epoch_float == 0.0
    consumed = 0.0
    for _ in range(12):
        before = sampler.epoch_float
        sampler.next_batch()
        step = sampler.epoch_float - before
        assert 0 < step <= 5 / sampler.total_groups + 1e-9
        consumed += step
    assert consumed == pytest.approx(sampler.epoch_float)


def test_resume_gives_identical_batches(grouped: PuzzleSplit) -> None:
    a = TrainSampler(grouped, global_batch_size=7, seed=9)
    for _ in range(5):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.next_batch() for _ in range(6)]
    b = TrainSampler(grouped, global_batch_size=7, seed=9)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        for key in want:
            assert torch.equal(got[key], want[key])
    assert b.state_dict() == a.state_dict()
    fresh = TrainSampler(grouped, global_batch_size=7, seed=9).next_batch()
    assert not all(torch.equal(fresh[k], expected[0][k]) for k in fresh)


def test_load_state_rejects_other_seed_or_dataset(grouped: PuzzleSplit) -> None:
    state = TrainSampler(grouped, global_batch_size=4, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        TrainSampler(grouped, global_batch_size=4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="groups"):
        TrainSampler(grouped, global_batch_size=4, seed=1).load_state_dict({**state, "total_groups": 1})


def test_seeds_differ(grouped: PuzzleSplit) -> None:
    a = np.concatenate([_row_ids(b) for b in itertools.islice(TrainSampler(grouped, 8, seed=0), 3)])
    b = np.concatenate([_row_ids(b) for b in itertools.islice(TrainSampler(grouped, 8, seed=1), 3)])
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_concatenate_to_global_batch(grouped: PuzzleSplit, world_size: int) -> None:
    full = TrainSampler(grouped, global_batch_size=8, seed=4)
    ranks = [TrainSampler(grouped, 8, rank=r, world_size=world_size, seed=4) for r in range(world_size)]
    for _ in range(5):
        want = full.next_batch()
        parts = [s.next_batch() for s in ranks]
        for key in want:
            assert torch.equal(torch.cat([p[key] for p in parts]), want[key])


def test_batch_size_must_divide(grouped: PuzzleSplit) -> None:
    with pytest.raises(ValueError, match="global_batch_size"):
        TrainSampler(grouped, global_batch_size=7, rank=0, world_size=2)
    with pytest.raises(ValueError, match="global_batch_size"):
        next(eval_batches(grouped, global_batch_size=7, rank=0, world_size=2))


def test_multiple_sets_are_flattened(tmp_path: Path) -> None:
    sets = {"a": _set_arrays([1, 2], [2, 1, 3]), "b": _set_arrays([1, 1], [2, 2], row_offset=1000)}
    split = _write(tmp_path, sets)
    sampler = TrainSampler(split, global_batch_size=4, seed=2)
    assert sampler.total_groups == 4
    rows = np.concatenate([_row_ids(sampler.next_batch()) for _ in range(20)])
    assert (rows < 1000).any() and (rows >= 1000).any()
    assert set(rows.tolist()) <= set(range(6)) | set(range(1000, 1004))


@pytest.mark.parametrize("world_size", [1, 2])
def test_eval_batches_cover_everything_in_order(tmp_path: Path, world_size: int) -> None:
    sets = {"a": _set_arrays([2, 1], [3, 2, 4]), "b": _set_arrays([1], [3], row_offset=1000)}
    split = _write(tmp_path, sets, split="test")
    global_bs = 4
    local = global_bs // world_size
    streams = [list(eval_batches(split, global_bs, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(s) for s in streams}) == 1  # every rank yields the same number of batches
    seen: dict[str, list[int]] = {"a": [], "b": []}
    seen_ids: dict[str, list[int]] = {"a": [], "b": []}
    for step in zip(*streams, strict=True):
        names = {name for name, _, _ in step}
        assert len(names) == 1
        name = names.pop()
        for _, batch, n_valid in step:
            assert batch["inputs"].shape == (local, SEQ_LEN) and batch["inputs"].dtype == torch.int32
            assert 0 <= n_valid <= local
            seen[name] += _row_ids(batch)[:n_valid].tolist()
            seen_ids[name] += batch["puzzle_identifiers"][:n_valid].tolist()
            assert (batch["inputs"][n_valid:] == PAD).all()
            assert (batch["labels"][n_valid:] == IGNORE_LABEL_ID).all()
            assert (batch["puzzle_identifiers"][n_valid:] == BLANK_ID).all()
            assert (batch["labels"][:n_valid, 0] == IGNORE_LABEL_ID).all()
    assert seen["a"] == list(range(9)) and seen["b"] == [1000, 1001, 1002]
    # puzzle sizes 3,2,4 -> identifiers 1,2,3 ; set b has one puzzle -> 1
    assert seen_ids["a"] == [1, 1, 1, 2, 2, 3, 3, 3, 3] and seen_ids["b"] == [1, 1, 1]
    n_batches = len(streams[0])
    assert n_batches == 3 + 1  # ceil(9 / 4) + ceil(3 / 4)


def test_eval_n_valid_on_last_batch(tmp_path: Path) -> None:
    split = _write(tmp_path, {"all": _set_arrays([1] * 5, [2] * 5)}, split="test")  # 10 examples
    out = [(n, b["inputs"][:, 0].tolist()) for _, b, n in eval_batches(split, 8, rank=1, world_size=2)]
    assert [n for n, _ in out] == [4, 0]
    assert out[0][1] == [4, 5, 6, 7] and out[1][1] == [PAD] * 4
    out0 = [n for _, _, n in eval_batches(split, 8, rank=0, world_size=2)]
    assert out0 == [4, 2]


def test_eval_handles_empty_puzzles(tmp_path: Path) -> None:
    """A puzzle with no examples must not shift the identifiers of the following rows."""
    arrays = _set_arrays([3], [2, 0, 1])
    arrays["puzzle_identifiers"] = np.array([1, 2, 3])
    split = _write(tmp_path, {"all": arrays}, split="test")
    ((_, batch, n_valid),) = list(eval_batches(split, 4))
    assert n_valid == 3 and batch["puzzle_identifiers"].tolist() == [1, 1, 3, BLANK_ID]


def test_total_train_steps() -> None:
    meta = PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
        num_puzzle_identifiers=1, total_groups=1000, mean_puzzle_examples=1.0, sets=["all"],
    )  # fmt: skip
    assert total_train_steps(meta, 20000, 384) == int(20000 * 1000 / 384) == 52083
    assert total_train_steps(meta, 1, 384) == 2


def test_batch_build_is_fast(tmp_path: Path) -> None:
    """Hot path: a 768-row batch from 20k single-example groups (Sudoku-shaped), well under 1 ms."""
    n = 20_000
    arrays = _set_arrays([1] * n, [1] * n, seq_len=81)
    arrays["inputs"] = arrays["labels"] = np.random.default_rng(0).integers(1, 11, size=(n, 81))
    split = _write(tmp_path, {"all": arrays})
    sampler = TrainSampler(split, global_batch_size=768)
    sampler.next_batch()
    start = time.perf_counter()
    for _ in range(50):
        sampler.next_batch()
    per_batch = (time.perf_counter() - start) / 50
    assert per_batch < 0.005, f"{per_batch * 1e3:.2f} ms per batch"  # generous for a loaded CI box
