"""Batching for training (group-wise random, exactly resumable) and evaluation (in order, padded).

Batches are dicts of int32 torch tensors: ``inputs`` (B, seq_len), ``labels`` (B, seq_len) with
the dataset's ignore label mapped to ``IGNORE_LABEL_ID`` (-100, what cross-entropy skips), and
``puzzle_identifiers`` (B,).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hrm_core.data.format import (
    IGNORE_LABEL_ID,
    DatasetError,
    PuzzleDatasetMetadata,
    PuzzleSplit,
    array_path,
)

__all__ = [
    "TrainSampler", "eval_batches", "total_train_steps",
]

# Salt separating per-batch randomness from the per-chunk permutation streams.
_BATCH_SALT = 1_000_003
_STATE_VERSION = 1


def _check_ranks(global_batch_size: int, rank: int, world_size: int) -> int:
    """Validate the distributed layout and return the local batch size."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    if global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by world_size ({world_size})"
        )
    return global_batch_size // world_size


def _to_batch(
    inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, metadata: PuzzleDatasetMetadata
) -> dict[str, torch.Tensor]:
    """Convert gathered rows to the int32 tensor dict, remapping the ignore label to -100."""
    inp = np.asarray(inputs, dtype=np.int32)
    lab = np.array(labels, dtype=np.int32, copy=True)
    ignore = metadata.ignore_label_id
    if ignore is not None and ignore != IGNORE_LABEL_ID:
        lab[lab == ignore] = IGNORE_LABEL_ID
    return {
        "inputs": torch.from_numpy(np.ascontiguousarray(inp)),
        "labels": torch.from_numpy(lab),
        "puzzle_identifiers": torch.from_numpy(np.ascontiguousarray(puzzle_ids, dtype=np.int32)),
    }


class TrainSampler:
    """Endless, seeded, group-wise sampler that can be checkpointed and resumed exactly.

    Groups of all sets are flattened into one group space (sets in ``metadata.sets`` order,
    then group order), so an epoch ("chunk") is one permutation of every group of every set,
    drawn from ``default_rng([seed, chunk])``. Each global batch is filled group by group: one
    puzzle of the group chosen uniformly, then min(its examples, room left) of its examples
    without replacement; the randomness of batch ``b`` comes from
    ``default_rng([seed, 1_000_003, b])`` so it does not depend on how we got there.
    Every rank computes the same global batch and keeps its own slice of rows.
    """

    def __init__(
        self,
        split: PuzzleSplit,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.local_batch_size = _check_ranks(global_batch_size, rank, world_size)
        self.split = split
        self.metadata = split.metadata
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)

        puzzle_start, puzzle_size, group_start, group_size, idents = [], [], [], [], []
        self._set_arrays: list[tuple[np.ndarray, np.ndarray]] = []
        set_offsets = [0]
        n_puzzles_total = 0
        for set_name in self.metadata.sets:
            arrays = split.sets[set_name]
            pi = np.asarray(arrays["puzzle_indices"], dtype=np.int64)
            gi = np.asarray(arrays["group_indices"], dtype=np.int64)
            ps, gs = np.diff(pi), np.diff(gi)
            if np.any(gs == 0):
                path = array_path(split.path, split.split, set_name, "group_indices")
                raise DatasetError(path, f"group {int(np.argmax(gs == 0))} has no puzzles; cannot sample it")
            if np.any(ps == 0):
                path = array_path(split.path, split.split, set_name, "puzzle_indices")
                raise DatasetError(
                    path, f"puzzle {int(np.argmax(ps == 0))} has no examples; cannot sample it"
                )
            puzzle_start.append(pi[:-1] + set_offsets[-1])
            puzzle_size.append(ps)
            group_start.append(gi[:-1] + n_puzzles_total)
            group_size.append(gs)
            idents.append(np.asarray(arrays["puzzle_identifiers"], dtype=np.int32))
            # Plain ndarray views of the memmaps: np.take on them skips memmap subclass overhead.
            self._set_arrays.append((np.asarray(arrays["inputs"]), np.asarray(arrays["labels"])))
            set_offsets.append(set_offsets[-1] + int(pi[-1]))
            n_puzzles_total += len(ps)
        self._puzzle_start = np.concatenate(puzzle_start)
        self._puzzle_size = np.concatenate(puzzle_size)
        self._group_start = np.concatenate(group_start)
        self._group_size = np.concatenate(group_size)
        self._puzzle_ident = np.concatenate(idents)
        self._set_offsets = np.asarray(set_offsets, dtype=np.int64)
        self.total_groups = int(len(self._group_size))
        if self.total_groups == 0:
            raise DatasetError(f"{split.path}/{split.split}", "split has no groups to sample from")
        self._perm_cache: dict[int, np.ndarray] = {}
        self._batch = 0
        self._chunk = 0
        self._offset = 0

    # ----- state -----------------------------------------------------------------------
    @property
    def epoch_float(self) -> float:
        """Groups consumed so far divided by the number of groups (1.0 = one epoch)."""
        return (self._chunk * self.total_groups + self._offset) / self.total_groups

    @property
    def batch_index(self) -> int:
        """Number of batches produced so far (index of the next batch)."""
        return self._batch

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-serialisable position in the stream (plus guards against a changed dataset)."""
        return {
            "version": _STATE_VERSION,
            "batch": self._batch,
            "chunk": self._chunk,
            "offset": self._offset,
            "seed": self.seed,
            "total_groups": self.total_groups,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a position from :meth:`state_dict`; refuses a state from another dataset or seed."""
        for key in ("batch", "chunk", "offset"):
            if key not in state:
                raise ValueError(f"sampler state lacks {key!r}")
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']} but this sampler uses seed {self.seed}")
        if "total_groups" in state and int(state["total_groups"]) != self.total_groups:
            raise ValueError(
                f"sampler state was made for {state['total_groups']} groups, dataset has {self.total_groups}"
            )
        batch, chunk, offset = int(state["batch"]), int(state["chunk"]), int(state["offset"])
        if batch < 0 or chunk < 0 or not 0 <= offset < self.total_groups:
            raise ValueError(f"sampler state out of range: {state}")
        self._batch, self._chunk, self._offset = batch, chunk, offset

    # ----- sampling ----------------------------------------------------------------------
    def _permutation(self, chunk: int) -> np.ndarray:
        """Group order of one chunk (cached; old chunks are evicted as the stream moves on)."""
        perm = self._perm_cache.get(chunk)
        if perm is None:
            for old in [c for c in self._perm_cache if c < self._chunk]:
                del self._perm_cache[old]
            perm = np.random.default_rng([self.seed, chunk]).permutation(self.total_groups)
            self._perm_cache[chunk] = perm
        return perm

    def _upcoming_groups(self, count: int) -> np.ndarray:
        """The next ``count`` group ids of the stream, without consuming them."""
        parts = []
        chunk, offset = self._chunk, self._offset
        while count > 0:
            take = self._permutation(chunk)[offset : offset + count]
            parts.append(take)
            count -= len(take)
            chunk, offset = chunk + 1, 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _global_rows(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Example rows and puzzle ids of the next global batch, and how many groups it used."""
        size = self.global_batch_size
        rng = np.random.default_rng([self.seed, _BATCH_SALT, self._batch])
        # Every group yields >= 1 row, so at most `size` groups are needed.
        groups = self._upcoming_groups(size)
        gsize = self._group_size[groups]
        puzzles = self._group_start[groups] + (rng.random(size) * gsize).astype(np.int64)
        psize = self._puzzle_size[puzzles]
        csum = np.cumsum(psize)
        n_groups = int(np.searchsorted(csum, size, side="left")) + 1
        puzzles, psize = puzzles[:n_groups], psize[:n_groups]
        before_last = int(csum[n_groups - 2]) if n_groups > 1 else 0
        last_take = size - before_last
        starts = self._puzzle_start[puzzles]
        if before_last == n_groups - 1:
            # Fast path (e.g. Sudoku): every fully taken puzzle has exactly one example.
            head = starts[:-1]
        else:
            head_sizes = psize[:-1]
            excl = np.cumsum(head_sizes) - head_sizes
            head = np.repeat(starts[:-1] - excl, head_sizes) + np.arange(before_last)
        last_size = int(psize[-1])
        if last_take < last_size:
            tail = starts[-1] + rng.choice(last_size, size=last_take, replace=False)
        else:
            tail = starts[-1] + np.arange(last_size)
        rows = np.concatenate([head, tail])
        taken = psize.copy()
        taken[-1] = last_take
        ids = np.repeat(self._puzzle_ident[puzzles], taken)
        return rows, ids, n_groups

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fancy-index token rows from the (memory-mapped) arrays of whichever sets hold them."""
        if len(self._set_arrays) == 1:
            inputs, labels = self._set_arrays[0]
            return np.take(inputs, rows, axis=0), np.take(labels, rows, axis=0)
        seq_len = self.metadata.seq_len
        out_in = np.empty((len(rows), seq_len), dtype=np.int32)
        out_lab = np.empty((len(rows), seq_len), dtype=np.int32)
        owner = np.searchsorted(self._set_offsets, rows, side="right") - 1
        for s in np.unique(owner):
            mask = owner == s
            local = rows[mask] - self._set_offsets[s]
            inputs, labels = self._set_arrays[s]
            out_in[mask] = np.take(inputs, local, axis=0)
            out_lab[mask] = np.take(labels, local, axis=0)
        return out_in, out_lab

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's slice of the next global batch; advances the stream."""
        rows, ids, n_groups = self._global_rows()
        lo = self.rank * self.local_batch_size
        hi = lo + self.local_batch_size
        inputs, labels = self._gather(rows[lo:hi])
        batch = _to_batch(inputs, labels, ids[lo:hi], self.metadata)
        consumed = self._offset + n_groups
        self._chunk += consumed // self.total_groups
        self._offset = consumed % self.total_groups
        self._batch += 1
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()


def eval_batches(
    split: PuzzleSplit, global_batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[str, dict[str, torch.Tensor], int]]:
    """Every example of every set once, in order, as ``(set_name, batch, n_valid)``.

    Batches never mix sets. Each rank gets its slice of each global batch, padded to the local
    batch size (inputs=pad_id, labels=-100, identifier=blank id), so all ranks yield the same
    number of batches; ``n_valid`` counts the real rows of this rank's slice.
    """
    local = _check_ranks(global_batch_size, rank, world_size)
    md = split.metadata
    for set_name in md.sets:
        arrays = split.sets[set_name]
        inputs, labels = arrays["inputs"], arrays["labels"]
        puzzle_indices = np.asarray(arrays["puzzle_indices"], dtype=np.int64)
        idents = np.asarray(arrays["puzzle_identifiers"], dtype=np.int32)
        n = int(inputs.shape[0])
        for start in range(0, n, global_batch_size):
            lo = min(start + rank * local, n)
            hi = min(lo + local, n, start + global_batch_size)
            n_valid = hi - lo
            inp = np.full((local, md.seq_len), md.pad_id, dtype=np.int32)
            lab = np.full((local, md.seq_len), IGNORE_LABEL_ID, dtype=np.int32)
            pid = np.full((local,), md.blank_identifier_id, dtype=np.int32)
            if n_valid:
                rows = np.arange(lo, hi)
                inp[:n_valid] = inputs[lo:hi]
                real_labels = np.array(labels[lo:hi], dtype=np.int32)
                if md.ignore_label_id is not None:
                    real_labels[real_labels == md.ignore_label_id] = IGNORE_LABEL_ID
                lab[:n_valid] = real_labels
                pid[:n_valid] = idents[np.searchsorted(puzzle_indices, rows, side="right") - 1]
            batch = {
                "inputs": torch.from_numpy(inp),
                "labels": torch.from_numpy(lab),
                "puzzle_identifiers": torch.from_numpy(pid),
            }
            yield set_name, batch, n_valid


def total_train_steps(metadata: PuzzleDatasetMetadata, epochs: float, global_batch_size: int) -> int:
    """Optimizer steps for ``epochs`` passes over the groups (the reference HRM formula)."""
    return int(epochs * metadata.total_groups * metadata.mean_puzzle_examples / global_batch_size)
