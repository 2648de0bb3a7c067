"""On-disk puzzle dataset format, byte-compatible with the reference HRM ``PuzzleDataset``.

Layout of a dataset directory ``DIR``::

    DIR/identifiers.json            JSON list, index = puzzle identifier id ("<blank>" at 0)
    DIR/<split>/dataset.json        PuzzleDatasetMetadata
    DIR/<split>/<set>__inputs.npy             (N_examples, seq_len) integer tokens
    DIR/<split>/<set>__labels.npy             (N_examples, seq_len) integer tokens
    DIR/<split>/<set>__puzzle_identifiers.npy (N_puzzles,)
    DIR/<split>/<set>__puzzle_indices.npy     (N_puzzles + 1,) offsets into examples
    DIR/<split>/<set>__group_indices.npy      (N_groups + 1,) offsets into puzzles

Readers accept any integer dtype (the reference writes int64 tokens); we write tokens as
uint8 when they fit (4-8x less disk and page cache) and offsets/identifiers as int32.
This module deliberately does not import torch so dataset builders stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic

__all__ = [
    "IGNORE_LABEL_ID", "FIELDS", "DatasetError", "PuzzleDatasetMetadata", "PuzzleSplit", "array_path",
    "write_split", "write_identifiers", "load_metadata", "open_split", "list_splits", "dataset_fingerprint",
    "describe",
]

IGNORE_LABEL_ID = -100

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")

# Token arrays are the big ones: memory-map them so a multi-GB dataset costs no RAM up front.
_TOKEN_FIELDS = ("inputs", "labels")
_IDENTIFIERS_FILE = "identifiers.json"
_METADATA_FILE = "dataset.json"
_HASH_CHUNK = 1 << 20
_NPY_MAGIC = b"\x93NUMPY"


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed.

    The message is a single line naming the offending file, so logs and CLI errors point
    straight at what to fix or rebuild.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"dataset error: {self.path}: {self.problem}")


class PuzzleDatasetMetadata(pydantic.BaseModel):
    """Contents of ``dataset.json``; unknown keys are ignored so newer writers stay readable."""

    model_config = pydantic.ConfigDict(extra="ignore")

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int = pydantic.Field(ge=1)
    seq_len: int = pydantic.Field(ge=1)
    num_puzzle_identifiers: int = pydantic.Field(ge=0)
    total_groups: int = pydantic.Field(ge=0)
    mean_puzzle_examples: float = pydantic.Field(ge=0)
    sets: list[str]


@dataclass
class PuzzleSplit:
    """One opened split: metadata plus, per set name, the five arrays of ``FIELDS``."""

    path: str
    split: str
    metadata: PuzzleDatasetMetadata
    sets: dict[str, dict[str, np.ndarray]]

    def num_examples(self, set_name: str | None = None) -> int:
        """Examples in one set, or in all sets when ``set_name`` is None."""
        names = self.metadata.sets if set_name is None else [set_name]
        return sum(int(self.sets[s]["inputs"].shape[0]) for s in names)


def array_path(data_path: str | os.PathLike[str], split: str, set_name: str, field: str) -> Path:
    """Path of one array file; one place for the ``<set>__<field>.npy`` naming rule."""
    return Path(data_path) / split / f"{set_name}__{field}.npy"


def _token_dtype(values: np.ndarray) -> np.dtype:
    """uint8 when every value fits, else int32 (tokens never need 64 bits)."""
    if values.size == 0 or (int(values.min()) >= 0 and int(values.max()) < 256):
        return np.dtype(np.uint8)
    if int(values.min()) < np.iinfo(np.int32).min or int(values.max()) > np.iinfo(np.int32).max:
        raise ValueError("token values do not fit in int32")
    return np.dtype(np.int32)


def _atomic_write_bytes(path: Path, writer) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writer(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_split(
    out_dir: str | os.PathLike[str],
    split: str,
    metadata: PuzzleDatasetMetadata,
    sets: dict[str, dict[str, np.ndarray]],
) -> None:
    """Write ``dataset.json`` and every set's arrays for one split (creating directories)."""
    if sorted(sets) != sorted(metadata.sets):
        raise ValueError(f"sets {sorted(sets)} do not match metadata.sets {sorted(metadata.sets)}")
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    for set_name in metadata.sets:
        arrays = sets[set_name]
        missing = [f for f in FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"set {set_name!r} lacks arrays {missing}")
        for field in FIELDS:
            values = np.asarray(arrays[field])
            if not np.issubdtype(values.dtype, np.integer):
                raise ValueError(f"{set_name}__{field}: expected integers, got dtype {values.dtype}")
            dtype = _token_dtype(values) if field in _TOKEN_FIELDS else np.dtype(np.int32)
            out = np.ascontiguousarray(values, dtype=dtype)
            _atomic_write_bytes(
                array_path(out_dir, split, set_name, field),
                lambda f, out=out: np.save(f, out, allow_pickle=False),
            )
    text = json.dumps(metadata.model_dump()).encode()
    _atomic_write_bytes(split_dir / _METADATA_FILE, lambda f: f.write(text))


def write_identifiers(out_dir: str | os.PathLike[str], names: list[str]) -> None:
    """Write ``identifiers.json`` (id -> name; id 0 is conventionally "<blank>")."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    text = json.dumps(list(names)).encode()
    _atomic_write_bytes(Path(out_dir) / _IDENTIFIERS_FILE, lambda f: f.write(text))


def _validation_summary(err: pydantic.ValidationError) -> str:
    """Pydantic's multi-line report squeezed into one line."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def load_metadata(data_path: str | os.PathLike[str], split: str) -> PuzzleDatasetMetadata:
    """Read and validate ``<data_path>/<split>/dataset.json``."""
    split_dir = Path(data_path) / split
    if not split_dir.is_dir():
        raise DatasetError(split_dir, "split directory not found")
    meta_path = split_dir / _METADATA_FILE
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        raise DatasetError(meta_path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(meta_path, f"cannot read: {e}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(meta_path, f"corrupt JSON: {e}") from None
    try:
        metadata = PuzzleDatasetMetadata.model_validate(raw)
    except pydantic.ValidationError as e:
        raise DatasetError(meta_path, f"invalid metadata: {_validation_summary(e)}") from None
    if not metadata.sets:
        raise DatasetError(meta_path, "invalid metadata: 'sets' is empty")
    return metadata


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """np.load with every failure (missing, truncated, pickled, non-integer) as DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise DatasetError(path, f"cannot read: {e.strerror or e}") from None
    if magic != _NPY_MAGIC:
        # np.load would otherwise treat it as a pickle and blame allow_pickle.
        raise DatasetError(path, "not a .npy file (bad magic bytes; corrupt or wrong format)")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(path, f"cannot load .npy (truncated or corrupt?): {e}") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(path, f"expected an integer array, found dtype {getattr(arr, 'dtype', '?')}")
    return arr


def _check_offsets(path: Path, offsets: np.ndarray, end: int, what: str) -> None:
    """Offsets must be 1-D, start at 0, never decrease and end at ``end``."""
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise DatasetError(path, f"expected a non-empty 1-D array, found shape {offsets.shape}")
    if int(offsets[0]) != 0:
        raise DatasetError(path, f"must start at 0, found {int(offsets[0])}")
    if offsets.shape[0] > 1:
        steps = np.diff(offsets.astype(np.int64))
        bad = np.flatnonzero(steps < 0)
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                path,
                f"not non-decreasing: entry {i + 1} ({int(offsets[i + 1])}) < entry {i} ({int(offsets[i])})",
            )
    if int(offsets[-1]) != end:
        raise DatasetError(path, f"must end at {end} ({what}), found {int(offsets[-1])}")


def open_split(data_path: str | os.PathLike[str], split: str, mmap: bool = True) -> PuzzleSplit:
    """Open one split with cheap structural validation (no full token scan).

    Token arrays are memory-mapped read-only when ``mmap``; offsets and identifiers are small
    and are loaded fully.
    """
    metadata = load_metadata(data_path, split)
    meta_path = Path(data_path) / split / _METADATA_FILE
    sets: dict[str, dict[str, np.ndarray]] = {}
    total_groups = 0
    for set_name in metadata.sets:
        paths = {f: array_path(data_path, split, set_name, f) for f in FIELDS}
        arrays = {f: _load_array(p, mmap=mmap and f in _TOKEN_FIELDS) for f, p in paths.items()}
        inputs, labels = arrays["inputs"], arrays["labels"]
        for field in _TOKEN_FIELDS:
            arr = arrays[field]
            if arr.ndim != 2:
                raise DatasetError(paths[field], f"expected a 2-D array, found shape {arr.shape}")
            if arr.shape[1] != metadata.seq_len:
                raise DatasetError(
                    paths[field],
                    f"expected {metadata.seq_len} columns (seq_len in dataset.json), found {arr.shape[1]}",
                )
        if labels.shape[0] != inputs.shape[0]:
            raise DatasetError(
                paths["labels"], f"has {labels.shape[0]} rows but inputs has {inputs.shape[0]}"
            )
        n_examples = int(inputs.shape[0])
        _check_offsets(paths["puzzle_indices"], arrays["puzzle_indices"], n_examples, "number of examples")
        n_puzzles = int(arrays["puzzle_indices"].shape[0]) - 1
        ids = arrays["puzzle_identifiers"]
        if ids.ndim != 1 or ids.shape[0] != n_puzzles:
            raise DatasetError(
                paths["puzzle_identifiers"],
                f"expected shape ({n_puzzles},) (one per puzzle), found {ids.shape}",
            )
        if n_puzzles and (int(ids.min()) < 0 or int(ids.max()) >= metadata.num_puzzle_identifiers):
            raise DatasetError(
                paths["puzzle_identifiers"],
                f"identifiers must lie in [0, {metadata.num_puzzle_identifiers}) "
                f"(num_puzzle_identifiers), found range [{int(ids.min())}, {int(ids.max())}]",
            )
        _check_offsets(paths["group_indices"], arrays["group_indices"], n_puzzles, "number of puzzles")
        total_groups += int(arrays["group_indices"].shape[0]) - 1
        sets[set_name] = arrays
    if total_groups != metadata.total_groups:
        raise DatasetError(
            meta_path,
            f"total_groups is {metadata.total_groups} but the group_indices arrays hold {total_groups}",
        )
    return PuzzleSplit(path=str(data_path), split=split, metadata=metadata, sets=sets)


def list_splits(data_path: str | os.PathLike[str]) -> list[str]:
    """Names of the split subdirectories (those holding a dataset.json), sorted."""
    root = Path(data_path)
    if not root.is_dir():
        raise DatasetError(root, "dataset directory not found")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / _METADATA_FILE).is_file())


def _hash_file(h: hashlib._Hash, root: Path, path: Path) -> None:
    """Feed name, size and content so file boundaries cannot alias."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    rel = path.relative_to(root).as_posix()
    h.update(f"{rel}\0{path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)


def dataset_fingerprint(data_path: str | os.PathLike[str]) -> str:
    """Content hash (16 hex chars of sha256) of identifiers, metadata and arrays of every split.

    Used to tie runs and checkpoints to the exact bytes they trained on. Stray files that are
    not part of the format (e.g. build_info.json) do not contribute.
    """
    root = Path(data_path)
    splits = list_splits(root)
    if not splits:
        raise DatasetError(root, "no split directories with dataset.json found")
    h = hashlib.sha256(b"hrm-puzzle-dataset-v1\0")
    if (root / _IDENTIFIERS_FILE).is_file():
        _hash_file(h, root, root / _IDENTIFIERS_FILE)
    for split in splits:
        metadata = load_metadata(root, split)
        _hash_file(h, root, root / split / _METADATA_FILE)
        for set_name in metadata.sets:
            for field in FIELDS:
                _hash_file(h, root, array_path(root, split, set_name, field))
    return h.hexdigest()[:16]


def describe(data_path: str | os.PathLike[str]) -> str:
    """One-line human summary: per split examples/puzzles/groups, then seq_len and vocab."""
    parts = []
    metadata = None
    for split in list_splits(data_path):
        ps = open_split(data_path, split)
        metadata = ps.metadata
        n_puzzles = sum(int(a["puzzle_indices"].shape[0]) - 1 for a in ps.sets.values())
        parts.append(
            f"{split}: {ps.num_examples()} examples / {n_puzzles} puzzles / {metadata.total_groups} groups"
        )
    if metadata is None:
        raise DatasetError(data_path, "no split directories with dataset.json found")
    return (
        f"{data_path}: "
        + "; ".join(parts)
        + f"; seq_len={metadata.seq_len} vocab_size={metadata.vocab_size} sets={','.join(metadata.sets)}"
    )
