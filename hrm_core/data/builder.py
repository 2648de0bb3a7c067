"""Machinery shared by the dataset builders (``build_sudoku``, ``build_maze``, ``build_arc``).

Each builder only knows how to make its puzzles; how a build is published (staged and swapped
in), recorded (``build_info.json``), read from a reference CSV and driven from the command line
is the same for all of them and lives here, so the three cannot drift apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from hrm_core import names
from hrm_core.data.format import DatasetError, dataset_fingerprint, write_identifiers, write_split

P = TypeVar("P")


class BuildError(RuntimeError):
    """The recipe is valid but cannot be fulfilled (unreachable difficulty, bad CSV, ...)."""


# ----- the validation split ----------------------------------------------------------------------
VAL_SPLIT = names.VAL  # the split's directory, val/ (its metrics are val/*)
# The val carve's own random stream ([seed, _STREAM_VAL]); the builders use 1..3 for theirs.
_STREAM_VAL = 7


def check_val_size(val_size: int, pool: int | None = None, what: str = "train puzzles") -> None:
    """Raise ValueError (one line, naming ``--val-size``) unless 0 <= val_size < pool."""
    if val_size < 0:
        raise ValueError(f"--val-size must be >= 0, got {val_size}")
    if pool is not None and val_size and val_size >= pool:
        raise ValueError(f"--val-size ({val_size}) must be smaller than the {pool} {what} it is carved from")


def carve_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of ``n`` base puzzles, each in order: a seeded ``val_size`` subset is
    the validation split, the rest stays train. Carved before augmentation, so no augmented copy
    of a val puzzle is in train; ``val_size`` 0 keeps every puzzle in train (today's bytes)."""
    if not val_size:
        return np.arange(n), np.arange(0)
    if val_size >= n:
        raise BuildError(f"--val-size {val_size} leaves none of the {n} train puzzles for training")
    val = np.sort(np.random.default_rng([seed, _STREAM_VAL]).choice(n, size=val_size, replace=False))
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def add_val_size_arg(p: argparse.ArgumentParser, unit: str = "puzzles") -> None:
    """``--val-size N``: base train puzzles carved off as the validation split (default 0: none)."""
    p.add_argument("--val-size", type=int, default=0,
                   help=f"train {unit} carved off as a validation split, before augmentation (default 0)")


# ----- publishing ------------------------------------------------------------------------------
def looks_like_dataset(path: Path) -> bool:
    """Only replace directories we could have written, never arbitrary user data."""
    if not path.is_dir():
        return False
    return (
        not any(path.iterdir())
        or (path / "build_info.json").is_file()
        or (path / "identifiers.json").is_file()
    )


def check_replaceable(output_dir: str | os.PathLike[str]) -> None:
    """Raise BuildError if ``output_dir`` exists but is not a dataset (so a rebuild would destroy user data).

    Builders may call this before any expensive work so the refusal comes first; ``staged_output``
    checks again anyway.
    """
    out = Path(output_dir)
    if out.exists() and not looks_like_dataset(out):
        raise BuildError(f"{out} exists and is not a dataset directory; refusing to replace it")


@contextmanager
def staged_output(output_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp dir beside ``output_dir``; on success swap it in, replacing an old dataset.

    Readers never see a half-written dataset, and a failed build leaves the old one intact.
    Refuses to replace a directory that does not look like a dataset (user data).
    """
    out = Path(output_dir)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_build_info(
    out: Path,
    params: Any,
    *,
    builder: str,
    kind: str,
    cli_argv: list[str] | None,
    counts: dict[str, Any],
    recipe_notes: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict:
    """Write ``out/build_info.json`` (the recipe that rebuilds the data, plus counts) and return it.

    ``builder`` is the module name (what evaluators and ``check`` key on); ``kind`` is the short
    registry key ("sudoku" | "maze" | "arc"). ``params`` is the builder's params dataclass (with
    ``to_argv()`` and ``seed``). ``recipe_notes`` go after ``params``, ``extra`` after ``counts``.
    Not part of the data format: the fingerprint is taken over ``out`` as written so far.
    """
    info = {
        "builder": builder,
        "kind": kind,
        "argv": params.to_argv(),
        "cli_argv": cli_argv,
        "seed": params.seed,
        # val_size 0 (no val split) is left out, so such a build's record stays as it always was
        "params": {k: v for k, v in asdict(params).items() if k != "val_size" or v},
        **(recipe_notes or {}),
        "fingerprint": dataset_fingerprint(out),
        "counts": counts,
        **(extra or {}),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ----- reference CSV sources -------------------------------------------------------------------
def csv_rows(path: str):
    """Yield (line number, row) after the header; the header's names are not checked (as the reference).

    The reference Sudoku and maze files share the ``source,<question>,<answer>,rating`` layout;
    every I/O or CSV problem becomes a one-line BuildError naming the file (and line).
    """
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            if next(reader, None) is None:
                raise BuildError(f"{path}: empty file, expected a 'source,q,a,rating' header")
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 4:
                    raise BuildError(
                        f"{path}:{line_no}: expected 4 columns (source,q,a,rating), found {len(row)}"
                    )
                yield line_no, row
    except OSError as e:
        raise BuildError(f"{path}: cannot read: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise BuildError(f"{path}: malformed CSV: {e}") from None


def subsample(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded random subset of size k, in file order (all rows if k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


# ----- command line ----------------------------------------------------------------------------
def write_train_test(params: Any, train: dict, test: dict, metadata: Callable[[dict], Any], *, builder: str,
                     kind: str, cli_argv: list[str] | None, counts: dict | None = None,
                     val: dict | None = None) -> dict:
    """Write a dataset of one set (``all``) with a train, a test and (``val`` given) a val split
    and no puzzle names (only the ``<blank>`` identifier), atomically (``staged_output``); returns
    its build info. ``metadata(split)`` gives a split's metadata; ``counts`` adds to the split counts."""
    with staged_output(params.output_dir) as tmp:
        write_split(tmp, "train", metadata(train), {"all": train})
        write_split(tmp, "test", metadata(test), {"all": test})
        if val is not None:
            write_split(tmp, VAL_SPLIT, metadata(val), {"all": val})
        write_identifiers(tmp, ["<blank>"])
        counts = {"train_groups": len(train["group_indices"]) - 1, "train_examples": len(train["inputs"]),
                  "test_examples": len(test["inputs"]), **(counts or {})}
        if val is not None:
            counts["val_examples"] = len(val["inputs"])
        return write_build_info(tmp, params, builder=builder, kind=kind, cli_argv=cli_argv, counts=counts)


def recipe(cls: Callable[..., P], output_dir: str | os.PathLike[str], options: dict[str, Any]) -> P:
    """The params dataclass ``cls`` from a builder function's keyword options (paths as text)."""
    text = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
    return cls(output_dir=os.fspath(output_dir), **text)


def new_parser(builder: str, description: str, usage: str = "%(prog)s --output-dir DIR [options]"):
    """A builder's argument parser with the flags every builder has, ``--output-dir`` and
    ``--seed``. The usage line is short, so that an error stays about one line."""
    p = argparse.ArgumentParser(prog=f"python -m {builder}", usage=usage, description=description)
    p.add_argument("--output-dir", required=True, help="dataset directory to (re)create")
    p.add_argument("--seed", type=int, default=0)
    return p


def cli_build(build: Callable[..., dict]) -> Callable[[Any, list[str], argparse.Namespace], dict]:
    """``run_cli``'s build step for a builder whose ``build(params, cli_argv=...)`` needs no other flag."""
    return lambda params, raw, _args: build(params, cli_argv=raw)


def add_source_csv_args(p: argparse.ArgumentParser, train_help: str) -> None:
    """``--source-csv`` (train rows in the reference's CSV format) and ``--source-csv-test``."""
    p.add_argument("--source-csv", default=None, help=train_help)
    p.add_argument("--source-csv-test", default=None, help="matching test CSV")


def params_from_args(cls: Callable[..., P], args: argparse.Namespace, **overrides: Any) -> P:
    """The params dataclass ``cls`` from parsed CLI args of the same names (``overrides`` win)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{**values, **overrides})


def cli_main(name: str, parser: Callable[[], argparse.ArgumentParser], make_params, build, summary,
             errors: tuple[type[BaseException], ...] = ()) -> Callable[[list[str] | None], int]:
    """A builder's ``main(argv=None)``: ``run_cli`` with that builder's parts."""

    def main(argv: list[str] | None = None) -> int:
        return run_cli(argv, name=name, parser=parser(), make_params=make_params, build=build,
                       summary=summary, errors=errors)

    return main


def run_cli(
    argv: list[str] | None,
    *,
    name: str,
    parser: argparse.ArgumentParser,
    make_params: Callable[[argparse.Namespace], P] | type[P],
    build: Callable[[P, list[str], argparse.Namespace], dict],
    summary: Callable[[dict, P, float], str],
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """The builders' common ``main()``: one-line errors, one-line summary, exit code 0/1/2.

    Parse ``argv`` (default ``sys.argv[1:]``), make and validate the params (``make_params``: the
    params dataclass, filled from the flags of its fields' names, or a function of the parsed
    args; a ValueError is a
    usage error: exit 2 via ``parser.error``), then time ``build(params, raw_argv, args)``. A
    BuildError, DatasetError, OSError or one of ``errors`` prints ``<name>: error: ...`` on stderr
    and returns 1; otherwise ``summary(info, params, seconds)`` is printed and 0 returned.
    """
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    params = params_from_args(make_params, args) if isinstance(make_params, type) else make_params(args)
    try:
        params.validate()  # type: ignore[attr-defined]
    except ValueError as e:
        parser.error(str(e))
    start = time.perf_counter()
    try:
        info = build(params, raw, args)
    except (BuildError, DatasetError, OSError, *errors) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    print(summary(info, params, time.perf_counter() - start))
    return 0
