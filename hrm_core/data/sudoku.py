"""Sudoku of sizes 4, 6 and 9: solver, difficulty rating, seeded generator, augmentation.

Grids are flat ``np.uint8`` arrays of ``size * size`` cells, 0 = blank, digits 1..size.
Small sizes let the platform run fast, fully offline smoke/ablation datasets; 9x9 matches the
reference HRM Sudoku-Extreme task.

The solver keeps one candidate bitmask per cell (bit d-1 = digit d), propagates naked and
hidden singles, then branches on the cell with the fewest candidates. Pure Python on small
ints beats numpy here: the work is many tiny, branchy updates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import numpy as np

BOX_SHAPES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
"""size -> (box rows, box cols)."""

# Fewest givens a uniquely solvable puzzle can have, per size (9x9: the proven 17).
MIN_GIVENS: dict[int, int] = {4: 4, 6: 8, 9: 17}


@dataclass(frozen=True)
class Geometry:
    """Cell/unit structure of one board size, precomputed once per size."""

    size: int
    box_rows: int
    box_cols: int
    units: tuple[tuple[int, ...], ...]  # rows, columns, boxes
    peers: tuple[tuple[int, ...], ...]  # per cell: the other cells sharing a unit

    @property
    def cells(self) -> int:
        return self.size * self.size

    @property
    def full_mask(self) -> int:
        return (1 << self.size) - 1


@cache
def geometry(size: int) -> Geometry:
    """Geometry for ``size`` (4, 6 or 9)."""
    if size not in BOX_SHAPES:
        raise ValueError(f"unsupported sudoku size {size}; choose from {sorted(BOX_SHAPES)}")
    br, bc = BOX_SHAPES[size]
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = []
    for r0 in range(0, size, br):
        for c0 in range(0, size, bc):
            boxes.append(tuple((r0 + dr) * size + c0 + dc for dr in range(br) for dc in range(bc)))
    units = tuple(rows + cols + boxes)
    peers = []
    for cell in range(size * size):
        p: set[int] = set()
        for unit in units:
            if cell in unit:
                p.update(unit)
        p.discard(cell)
        peers.append(tuple(sorted(p)))
    return Geometry(size, br, bc, units, tuple(peers))


# Popcount and bit -> digit tables for masks of up to 9 bits.
_POPCOUNT = [bin(m).count("1") for m in range(1 << 9)]
_DIGIT_OF_BIT = {1 << d: d + 1 for d in range(9)}


def size_of(grid: np.ndarray) -> int:
    """Board size from a flat grid's length."""
    n = int(round(len(grid) ** 0.5))
    if n * n != len(grid) or n not in BOX_SHAPES:
        raise ValueError(f"grid of {len(grid)} cells is not a supported sudoku (4x4, 6x6, 9x9)")
    return n


@dataclass
class SolveResult:
    """Outcome of a (possibly truncated) solution count."""

    solutions: list[np.ndarray]
    nodes: int  # propagation calls (search-tree nodes)
    guesses: int  # candidate values tried at branching cells; 0 = propagation alone sufficed

    @property
    def count(self) -> int:
        return len(self.solutions)


class _Search:
    """One depth-first search; counts effort and stops at ``limit`` solutions."""

    def __init__(self, geo: Geometry, limit: int, rand: random.Random | None = None) -> None:
        self.geo = geo
        self.limit = limit
        self.rand = rand
        self.nodes = 0
        self.guesses = 0
        self.solutions: list[list[int]] = []

    def propagate(self, cands: list[int], todo: list[int]) -> bool:
        """Naked + hidden singles to a fixpoint; False on contradiction. Mutates ``cands``."""
        peers = self.geo.peers
        units = self.geo.units
        full = self.geo.full_mask
        while True:
            while todo:
                cell = todo.pop()
                bit = cands[cell]
                for p in peers[cell]:
                    m = cands[p]
                    if m & bit:
                        m ^= bit
                        if not m:
                            return False
                        cands[p] = m
                        if not m & (m - 1):
                            todo.append(p)
            for unit in units:
                once = twice = 0
                for cell in unit:
                    m = cands[cell]
                    twice |= once & m
                    once |= m
                if once != full:
                    return False  # some digit has no place left in this unit
                singles = once & ~twice
                if singles:
                    for cell in unit:
                        m = cands[cell]
                        s = m & singles
                        if s and m != s:
                            if s & (s - 1):
                                return False  # two digits both need this cell
                            cands[cell] = s
                            todo.append(cell)
            if not todo:
                return True

    def run(self, cands: list[int], todo: list[int]) -> None:
        """Search below this node; appends complete grids to ``solutions``."""
        self.nodes += 1
        if not self.propagate(cands, todo):
            return
        best, best_n = -1, 99
        for i, m in enumerate(cands):
            if m & (m - 1):
                k = _POPCOUNT[m]
                if k < best_n:
                    best, best_n = i, k
                    if k == 2:
                        break
        if best < 0:
            self.solutions.append(cands)
            return
        m = cands[best]
        bits = [b for b in _DIGIT_OF_BIT if m & b]
        if self.rand is not None:
            self.rand.shuffle(bits)
        for bit in bits:
            self.guesses += 1
            child = cands.copy()
            child[best] = bit
            self.run(child, [best])
            if len(self.solutions) >= self.limit:
                return


def _candidates(grid: np.ndarray | list[int], geo: Geometry) -> tuple[list[int], list[int]]:
    """Initial masks and the list of fixed cells to propagate from."""
    full = geo.full_mask
    cands = []
    todo = []
    for i, v in enumerate(grid):
        v = int(v)
        if v:
            if not 1 <= v <= geo.size:
                raise ValueError(f"cell {i} holds {v}, outside 0..{geo.size}")
            cands.append(1 << (v - 1))
            todo.append(i)
        else:
            cands.append(full)
    return cands, todo


def _to_grid(cands: list[int]) -> np.ndarray:
    return np.fromiter((_DIGIT_OF_BIT[m] for m in cands), dtype=np.uint8, count=len(cands))


def solve(puzzle: np.ndarray, limit: int = 2) -> SolveResult:
    """Find up to ``limit`` solutions (limit=2 proves or disproves uniqueness), with effort counts."""
    geo = geometry(size_of(puzzle))
    search = _Search(geo, max(1, limit))
    cands, todo = _candidates(puzzle, geo)
    search.run(cands, todo)
    return SolveResult([_to_grid(s) for s in search.solutions], search.nodes, search.guesses)


def count_solutions(puzzle: np.ndarray, limit: int = 2) -> int:
    """Number of solutions, capped at ``limit``."""
    return solve(puzzle, limit).count


def rating(puzzle: np.ndarray) -> int:
    """Difficulty = guesses needed to find the solution and prove it unique (0 = no guessing)."""
    return solve(puzzle, limit=2).guesses


def is_valid_solution(grid: np.ndarray) -> bool:
    """True if ``grid`` is a complete grid with every digit once per row, column and box."""
    geo = geometry(size_of(grid))
    g = np.asarray(grid)
    want = set(range(1, geo.size + 1))
    return all({int(g[c]) for c in unit} == want for unit in geo.units)


def is_consistent(puzzle: np.ndarray, solution: np.ndarray) -> bool:
    """True if every given of ``puzzle`` equals the solution's digit there."""
    p, s = np.asarray(puzzle), np.asarray(solution)
    given = p != 0
    return p.shape == s.shape and bool(np.all(p[given] == s[given]))


def _python_rng(rng: np.random.Generator) -> random.Random:
    """A fast stdlib RNG seeded from ``rng``: tiny shuffles in the search are hot."""
    return random.Random(int(rng.integers(0, 2**63)))


def random_solution(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random complete grid (randomised backtracking from an empty board)."""
    return _random_solution(geometry(size), _python_rng(rng))


def _random_solution(geo: Geometry, rand: random.Random) -> np.ndarray:
    search = _Search(geo, 1, rand)
    search.run([geo.full_mask] * geo.cells, [])
    return _to_grid(search.solutions[0])


def _has_other_solution(puzzle: list[int], cell: int, value: int, geo: Geometry) -> bool:
    """Does ``puzzle`` (cell blank) have a solution with ``cell`` != ``value``?

    Given that the puzzle with the cell filled is unique, this is exactly the uniqueness test
    for removing it, and an existence query is much cheaper than counting to 2.
    """
    cands, todo = _candidates(puzzle, geo)
    cands[cell] &= ~(1 << (value - 1))
    if not cands[cell] & (cands[cell] - 1):
        todo.append(cell)
    search = _Search(geo, 1)
    search.run(cands, todo)
    return bool(search.solutions)


class GenerationError(RuntimeError):
    """The generator could not meet the request within its retry budget."""


def generate_puzzle(
    size: int,
    rng: np.random.Generator,
    blanks: int | None = None,
    max_tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """A uniquely solvable ``(puzzle, solution)``.

    Cells are blanked in random order, skipping any whose removal breaks uniqueness.
    ``blanks=None`` goes on until no cell can be removed (a minimal puzzle); ``blanks=k`` stops
    at k blanks, retrying with a fresh grid (at most ``max_tries``) if uniqueness blocks it.
    """
    geo = geometry(size)
    if blanks is not None and not 0 <= blanks <= geo.cells - MIN_GIVENS[size]:
        raise ValueError(
            f"blanks must be in [0, {geo.cells - MIN_GIVENS[size]}] for size {size}, got {blanks}"
        )
    rand = _python_rng(rng)
    best = 0
    for _ in range(max_tries):
        solution = _random_solution(geo, rand)
        puzzle = [int(v) for v in solution]
        order = list(range(geo.cells))
        rand.shuffle(order)
        removed = 0
        for cell in order:
            if blanks is not None and removed >= blanks:
                break
            value = puzzle[cell]
            puzzle[cell] = 0
            if _has_other_solution(puzzle, cell, value, geo):
                puzzle[cell] = value
            else:
                removed += 1
        best = max(best, removed)
        if blanks is not None and removed < blanks:
            continue
        result = np.asarray(puzzle, dtype=np.uint8)
        check = solve(result, limit=2)
        if check.count != 1 or not np.array_equal(check.solutions[0], solution):
            raise AssertionError("generator produced a puzzle that is not uniquely solvable")  # a bug
        return result, solution
    raise GenerationError(
        f"could not blank {blanks} cells of a {size}x{size} sudoku while keeping the solution unique "
        f"in {max_tries} tries (best: {best}); ask for fewer blanks"
    )


def augment_many(
    puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random validity-preserving symmetries of one puzzle, as (count, cells) arrays.

    Each is a digit relabelling (0 stays blank), a permutation of bands and of rows within
    each band, of stacks and of columns within each stack, and a transpose with probability
    1/2 when boxes are square (for 6x6 a transpose would turn 2x3 boxes into 3x2 ones, so it
    is skipped). Puzzle and solution get the same map, so givens stay consistent.
    Vectorised over ``count`` because builders make up to ~1000 augmentations per puzzle.
    """
    size = size_of(puzzle)
    br, bc = BOX_SHAPES[size]
    nb, ns = size // br, size // bc
    k = int(count)
    digit_map = np.zeros((k, size + 1), dtype=np.uint8)
    digit_map[:, 1:] = np.argsort(rng.random((k, size)), axis=1) + 1
    transpose = rng.random(k) < 0.5 if br == bc else np.zeros(k, dtype=bool)
    bands = np.argsort(rng.random((k, nb)), axis=1)
    rows_in_band = np.argsort(rng.random((k, nb, br)), axis=2)
    row_order = (bands[:, :, None] * br + rows_in_band).reshape(k, size)
    stacks = np.argsort(rng.random((k, ns)), axis=1)
    cols_in_stack = np.argsort(rng.random((k, ns, bc)), axis=2)
    col_order = (stacks[:, :, None] * bc + cols_in_stack).reshape(k, size)
    r, c = row_order[:, :, None], col_order[:, None, :]
    # New cell (i, j) reads old cell (row_order[i], col_order[j]) of the (maybe transposed) board.
    source = np.where(transpose[:, None, None], c * size + r, r * size + c).reshape(k, size * size)

    def apply(grid: np.ndarray) -> np.ndarray:
        cells = np.asarray(grid, dtype=np.uint8)[source].astype(np.intp)
        return np.take_along_axis(digit_map, cells, axis=1)

    return apply(puzzle), apply(solution)


def augment(
    puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One random validity-preserving symmetry applied to puzzle and solution alike."""
    p, s = augment_many(puzzle, solution, rng, 1)
    return p[0], s[0]


def to_string(grid: np.ndarray) -> str:
    """Compact text form ('.' for blank), as in the reference CSVs."""
    return "".join("." if v == 0 else str(int(v)) for v in grid)


def from_string(text: str) -> np.ndarray:
    """Parse a grid string where '.' or '0' is blank."""
    text = text.strip()
    if not all(ch == "." or ch.isdigit() for ch in text):
        raise ValueError(f"grid string has characters other than digits and '.': {text!r}")
    grid = (np.frombuffer(text.replace(".", "0").encode(), dtype=np.uint8) - ord("0")).astype(np.uint8)
    size = size_of(grid)
    if int(grid.max()) > size:
        raise ValueError(f"grid string has a digit above {size}: {text!r}")
    return grid
