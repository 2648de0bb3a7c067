"""Validate a dataset directory: ``python -m hrm_core.data.check DIR`` prints a one-line verdict.

Cheap part (what the trainer runs at start-up through ``format.open_split``): files present
and loadable (truncated arrays fail here), shapes against ``dataset.json`` (``seq_len``,
row counts), offsets monotonic and ending right, identifiers in range, ``total_groups``.

Full part (only here): every split agrees on vocab/seq_len/identifiers, ``identifiers.json``
matches ``num_puzzle_identifiers``, no empty puzzle or group, ``mean_puzzle_examples`` matches
the arrays, and a chunked scan of every token: inputs in ``[0, vocab_size)``, labels too or
equal to ``ignore_label_id``. A passed full check is cached in ``DIR/.check_cache.json``
keyed by the dataset fingerprint (unchanged file sizes and mtimes, older than the check,
let a re-check skip re-hashing).
Exit status 0 = ok, 1 = a problem (the line names the file), 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hrm_core.data.format import (
    FIELDS,
    DatasetError,
    PuzzleSplit,
    array_path,
    dataset_fingerprint,
    describe,
    list_splits,
    open_split,
)

CACHE_FILE = ".check_cache.json"
CHECK_VERSION = 1  # bump when the checks change so old cache entries stop counting
_ROWS_PER_CHUNK = 1 << 14
_MTIME_SLACK_NS = 2_000_000_000


def _structure(root: Path) -> dict[str, PuzzleSplit]:
    """Cheap checks of every split, plus agreement between splits."""
    splits = list_splits(root)
    if not splits:
        raise DatasetError(root, "no split directories with dataset.json found")
    opened = {s: open_split(root, s) for s in splits}
    first = opened[splits[0]].metadata
    for name, ps in opened.items():
        m = ps.metadata
        for key in ("seq_len", "vocab_size", "num_puzzle_identifiers", "pad_id", "ignore_label_id"):
            if getattr(m, key) != getattr(first, key):
                raise DatasetError(
                    root / name / "dataset.json",
                    f"{key} is {getattr(m, key)} but split {splits[0]!r} has {getattr(first, key)}",
                )
    ids_path = root / "identifiers.json"
    if ids_path.is_file():
        try:
            ids = json.loads(ids_path.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(ids_path, f"cannot read: {e}") from None
        if not isinstance(ids, list):
            raise DatasetError(ids_path, f"expected a JSON list of names, found {type(ids).__name__}")
        if len(ids) != first.num_puzzle_identifiers:
            raise DatasetError(
                ids_path, f"has {len(ids)} names but num_puzzle_identifiers is {first.num_puzzle_identifiers}"
            )
    return opened


def _contents(root: Path, ps: PuzzleSplit) -> None:
    """Full checks of one split: non-empty puzzles/groups, mean_puzzle_examples, token ranges."""
    m = ps.metadata
    n_examples = n_puzzles = 0
    for set_name in m.sets:
        arrays = ps.sets[set_name]
        for field, what in (("puzzle_indices", "puzzle"), ("group_indices", "group")):
            steps = np.diff(arrays[field].astype(np.int64))
            empty = np.flatnonzero(steps == 0)
            if empty.size:
                raise DatasetError(
                    array_path(root, ps.split, set_name, field),
                    f"not strictly increasing: {what} {int(empty[0])} is empty (entries {int(empty[0])} and "
                    f"{int(empty[0]) + 1} are both {int(arrays[field][empty[0]])})",
                )
        n_examples += int(arrays["inputs"].shape[0])
        n_puzzles += int(arrays["puzzle_identifiers"].shape[0])
        for field in ("inputs", "labels"):
            allowed = m.ignore_label_id if field == "labels" else None
            _scan_tokens(array_path(root, ps.split, set_name, field), arrays[field], m.vocab_size, allowed)
    if n_puzzles:
        actual = n_examples / n_puzzles
        if abs(actual - m.mean_puzzle_examples) > 1e-6 * max(1.0, actual):
            raise DatasetError(
                root / ps.split / "dataset.json",
                f"mean_puzzle_examples is {m.mean_puzzle_examples} but the arrays hold {actual:.6g} "
                f"({n_examples} examples / {n_puzzles} puzzles)",
            )


def _row_chunks(path: Path, tokens: np.ndarray):
    """Yield (first row, rows) blocks. Memory-mapped arrays are read with plain file reads, so
    a multi-GB scan does not leave every page mapped into (and counted in) our RSS."""
    n = tokens.shape[0]
    if not isinstance(tokens, np.memmap) or tokens.ndim != 2 or not tokens.flags.c_contiguous:
        for start in range(0, n, _ROWS_PER_CHUNK):
            yield start, np.asarray(tokens[start : start + _ROWS_PER_CHUNK])
        return
    row_bytes = tokens.shape[1] * tokens.dtype.itemsize
    with open(path, "rb") as f:
        f.seek(tokens.offset)
        for start in range(0, n, _ROWS_PER_CHUNK):
            rows = min(_ROWS_PER_CHUNK, n - start)
            buf = f.read(rows * row_bytes)
            if len(buf) != rows * row_bytes:
                raise DatasetError(path, f"truncated: rows from {start} are missing")
            yield start, np.frombuffer(buf, dtype=tokens.dtype).reshape(rows, tokens.shape[1])


def _scan_tokens(path: Path, tokens: np.ndarray, vocab_size: int, also_allowed: int | None) -> None:
    """Every token in [0, vocab_size) (or == also_allowed), scanned in chunks to bound memory."""
    for start, chunk in _row_chunks(path, tokens):
        if not chunk.size:
            continue
        if int(chunk.min()) >= 0 and int(chunk.max()) < vocab_size:
            continue
        bad = (chunk < 0) | (chunk >= vocab_size)
        if also_allowed is not None:
            bad &= chunk != also_allowed
        if bad.any():
            r, c = (int(x) for x in np.argwhere(bad)[0])
            raise DatasetError(
                path,
                f"token {int(chunk[r, c])} at row {start + r}, column {c} is outside [0, {vocab_size}) "
                "(vocab_size)",
            )


def _file_stats(root: Path, opened: dict[str, PuzzleSplit]) -> dict[str, list[int]]:
    """Size and mtime of every file the fingerprint covers: a cheap 'unchanged since' test."""
    paths = [root / "identifiers.json"] if (root / "identifiers.json").is_file() else []
    for name, ps in opened.items():
        paths.append(root / name / "dataset.json")
        paths += [array_path(root, name, s, f) for s in ps.metadata.sets for f in FIELDS]
    out = {}
    for p in paths:
        st = p.stat()
        out[p.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def _stats_trustworthy(stats: dict[str, list[int]], checked_at_ns: object) -> bool:
    """Equal sizes and mtimes prove nothing for files modified within the clock's granularity of
    the check (the "racy git" problem): then the fingerprint is recomputed instead."""
    if not isinstance(checked_at_ns, int) or not stats:
        return False
    return max(mtime for _size, mtime in stats.values()) < checked_at_ns - _MTIME_SLACK_NS


def _read_cache(root: Path) -> dict:
    try:
        data = json.loads((root / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("check_version") == CHECK_VERSION else {}


def _write_cache(root: Path, data: dict) -> None:
    """Best effort: a read-only dataset folder just means no cache."""
    tmp = root / f".{CACHE_FILE}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, root / CACHE_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)


def _arc_layout(root: Path) -> None:
    """ARC datasets also need puzzle names the evaluator can map back to tasks."""
    try:
        builder = json.loads((root / "build_info.json").read_text()).get("builder")
    except (OSError, ValueError, AttributeError):
        return
    if builder in ("hrm_core.data.build_arc", "arc") and (root / "test").is_dir():
        from hrm_core.data.arc_eval import load_layout

        try:
            load_layout(root)
        except ValueError as e:  # DatasetError included; a bad name is a ValueError from parsing
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(root / "identifiers.json", f"bad ARC puzzle name: {e}") from None


def check_dataset(
    data_path: str | os.PathLike[str],
    *,
    full: bool = True,
    use_cache: bool = True,
    fingerprint: str | None = None,
) -> str:
    """Validate a dataset; return a one-line summary or raise DatasetError (one line, naming the file).

    ``full=False`` runs only the cheap structural part. With ``use_cache``, a full check that
    passed before for the same fingerprint is not repeated; pass ``fingerprint`` when it is
    already known (e.g. computed for run provenance) to skip hashing too.
    """
    root = Path(data_path)
    opened = _structure(root)
    summary = describe(root)
    if not full:
        return f"OK (structure only) {summary}"
    started_ns = time.time_ns()
    stats = _file_stats(root, opened)
    cache = _read_cache(root) if use_cache else {}
    record = lambda fp: _write_cache(  # noqa: E731
        root,
        {
            "check_version": CHECK_VERSION,
            "ok": True,
            "fingerprint": fp,
            "files": stats,
            "checked_at_ns": started_ns,
        },
    )
    if cache.get("ok"):
        cached_fp = cache.get("fingerprint")
        if fingerprint is None and cache.get("files") == stats:
            if _stats_trustworthy(stats, cache.get("checked_at_ns")):
                fingerprint = cached_fp
            else:  # same stats but too recent to prove anything: hash to be sure
                fingerprint = dataset_fingerprint(root)
                if fingerprint == cached_fp:
                    record(fingerprint)  # now old enough to be trusted next time
        if fingerprint is not None and fingerprint == cached_fp:
            return f"OK (cached, fingerprint {fingerprint}) {summary}"
    for ps in opened.values():
        _contents(root, ps)
    _arc_layout(root)
    fingerprint = fingerprint or dataset_fingerprint(root)
    record(fingerprint)
    return f"OK (fingerprint {fingerprint}) {summary}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hrm_core.data.check",
        usage="%(prog)s DIR [--quick] [--no-cache]",
        description="Validate a PuzzleDataset directory and print a one-line verdict.",
    )
    parser.add_argument("path", metavar="DIR")
    parser.add_argument("--quick", action="store_true", help="structure only (what the trainer checks)")
    parser.add_argument("--no-cache", action="store_true", help=f"ignore and do not trust {CACHE_FILE}")
    args = parser.parse_args(argv)
    try:
        print(check_dataset(args.path, full=not args.quick, use_cache=not args.no_cache))
    except DatasetError as e:
        print(f"FAIL {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
