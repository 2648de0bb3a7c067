"""Mazes with a start, a goal and the unique shortest path between them.

Tokens follow the reference HRM maze charset ``"# SGo"`` -> 1..5, PAD 0: wall ``#`` = 1,
open `` `` = 2, start ``S`` = 3, goal ``G`` = 4, path ``o`` = 5. The input shows walls, open
cells, S and G; the label is the same grid with the cells strictly between S and G on the
shortest path marked ``o``. The generator only keeps (S, G) pairs whose shortest path is
unique, so the label is a function of the input (an ambiguous label would cap accuracy).

Pure numpy + Python, no torch.
"""

from __future__ import annotations

from collections import deque

import numpy as np

CHARSET = "# SGo"
PAD = 0
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1

_CHAR_TO_TOKEN = np.zeros(256, dtype=np.uint8)  # 0 = not in the charset
_CHAR_TO_TOKEN[[ord(c) for c in CHARSET]] = np.arange(1, len(CHARSET) + 1)
_TOKEN_TO_CHAR = np.frombuffer(("\0" + CHARSET).encode(), dtype=np.uint8)
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


class GenerationError(RuntimeError):
    """No maze met the requirements within the attempt budget."""


def from_string(text: str) -> np.ndarray:
    """An N*N-character string in the charset -> (N, N) uint8 tokens."""
    n = int(round(len(text) ** 0.5))
    if n * n != len(text) or n == 0:
        raise ValueError(f"maze string of length {len(text)} is not a non-empty square")
    raw = np.frombuffer(text.encode("latin-1", "replace"), dtype=np.uint8)
    tokens = _CHAR_TO_TOKEN[raw]
    if not tokens.all():
        bad = text[int(np.argmin(tokens))]
        raise ValueError(f"character {bad!r} is not in the maze charset {CHARSET!r}")
    return tokens.reshape(n, n)


def to_string(grid: np.ndarray) -> str:
    """(N, N) tokens -> the reference's string form."""
    return _TOKEN_TO_CHAR[np.asarray(grid, dtype=np.uint8).reshape(-1)].tobytes().decode()


def bfs(passable: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (-1 = unreachable) and number of shortest paths (capped at 2) from ``start``."""
    h, w = passable.shape
    dist = np.full((h, w), -1, dtype=np.int32)
    count = np.zeros((h, w), dtype=np.int8)
    dist[start] = 0
    count[start] = 1
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        d, k = dist[r, c] + 1, count[r, c]
        for dr, dc in _STEPS:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and passable[nr, nc]:
                if dist[nr, nc] < 0:
                    dist[nr, nc] = d
                    count[nr, nc] = k
                    queue.append((nr, nc))
                elif dist[nr, nc] == d:
                    count[nr, nc] = min(2, count[nr, nc] + k)
    return dist, count


def trace_path(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells from the start to ``goal`` following decreasing BFS distance (unique when count == 1)."""
    if dist[goal] < 0:
        raise ValueError(f"goal {goal} is unreachable")
    h, w = dist.shape
    path = [goal]
    r, c = goal
    while dist[r, c] > 0:
        for dr, dc in _STEPS:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and dist[nr, nc] == dist[r, c] - 1:
                r, c = nr, nc
                break
        path.append((r, c))
    return path[::-1]


def _carve(size: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze (spanning tree) on the even-coordinate lattice; True = open."""
    passable = np.zeros((size, size), dtype=bool)
    cells = (size + 1) // 2
    visited = np.zeros((cells, cells), dtype=bool)
    start = (int(rng.integers(cells)), int(rng.integers(cells)))
    visited[start] = True
    passable[2 * start[0], 2 * start[1]] = True
    stack = [start]
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in _STEPS if 0 <= r + dr < cells and 0 <= c + dc < cells]
        options = [cell for cell in options if not visited[cell]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        visited[nr, nc] = True
        passable[2 * nr, 2 * nc] = True
        passable[r + nr, c + nc] = True  # the wall cell between the two lattice cells
        stack.append((nr, nc))
    return passable


def generate_maze(
    size: int,
    rng: np.random.Generator,
    min_path_len: int = 0,
    open_fraction: float = 0.05,
    max_tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """(input, label) as (size, size) uint8 tokens; the S->G shortest path is unique and has
    at least ``min_path_len`` steps.

    A perfect maze is carved, then ``open_fraction`` of the remaining walls are knocked out
    so there are loops and the shortest path has to be found, not just followed.
    """
    if size < 2:
        raise ValueError(f"maze size must be >= 2, got {size}")
    if not 0.0 <= open_fraction < 1.0:
        raise ValueError(f"open_fraction must be in [0, 1), got {open_fraction}")
    for _ in range(max_tries):
        passable = _carve(size, rng)
        walls = np.flatnonzero(~passable)
        knock = rng.random(walls.size) < open_fraction
        passable.reshape(-1)[walls[knock]] = True
        open_cells = np.argwhere(passable)
        if len(open_cells) < 2:
            continue
        start = tuple(int(x) for x in open_cells[int(rng.integers(len(open_cells)))])
        for _probe in range(2):
            dist, count = bfs(passable, start)
            ok = np.argwhere((dist >= max(1, min_path_len)) & (count == 1))
            if len(ok):
                goal = tuple(int(x) for x in ok[int(rng.integers(len(ok)))])
                return _render(passable, dist, start, goal)
            # Too close to everything: restart from the farthest cell (a diameter end).
            far = np.argwhere(dist == dist.max())
            start = tuple(int(x) for x in far[int(rng.integers(len(far)))])
    raise GenerationError(
        f"no {size}x{size} maze with a unique shortest path of >= {min_path_len} steps in {max_tries} "
        "tries; lower min_path_len or open_fraction"
    )


def _render(
    passable: np.ndarray, dist: np.ndarray, start: tuple[int, int], goal: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    question = np.where(passable, OPEN, WALL).astype(np.uint8)
    question[start] = START
    question[goal] = GOAL
    answer = question.copy()
    for cell in trace_path(dist, goal)[1:-1]:
        answer[cell] = PATH
    return question, answer


def path_length(answer: np.ndarray) -> int:
    """Steps from S to G in a labelled maze (path cells + 1)."""
    return int((np.asarray(answer) == PATH).sum()) + 1
