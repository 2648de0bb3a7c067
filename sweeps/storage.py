"""Where a sweep keeps its Tune results: a local (or shared) folder, or a remote URI such as
``s3://bucket/prefix``. The one place that tells the two apart, through ``pyarrow.fs``;
Tune is handed the file system resolved here, so it never resolves the URI again.

Files that must be local (the Optuna study's SQLite, the MLflow write spool) go next to the
results when they are a local folder, else into the project's ``ray_results/``.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from hrm_core.paths import project_root

DEFAULT_STORAGE = os.path.join(project_root(), "ray_results")


@dataclass(frozen=True)
class Location:
    """A folder on a file system: its URI as users see it (and tags record), and pyarrow's view."""

    uri: str  # an absolute local path, or scheme://...
    fs: Any  # pyarrow.fs.FileSystem
    path: str  # the folder on ``fs``

    @property
    def is_local(self) -> bool:
        from pyarrow.fs import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    @property
    def local_dir(self) -> str:
        """Where this location's local companions go: the folder itself, or ``ray_results/``."""
        return self.path if self.is_local else DEFAULT_STORAGE

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, name: str) -> Location:
        uri = os.path.join(self.uri, name) if self.is_local else f"{self.uri.rstrip('/')}/{name}"
        return Location(uri, self.fs, f"{self.path.rstrip('/')}/{name}")

    def parent(self) -> Location:
        uri = self.uri.rstrip("/").rsplit("/", 1)[0]
        return Location(uri, self.fs, posixpath.dirname(self.path.rstrip("/")))


def locate(uri_or_path: str | None) -> Location:
    """The location of a sweep file's ``storage_path`` (a relative path is taken from the
    working directory; none: ``ray_results/`` in the project) or of a recorded Tune path."""
    from pyarrow.fs import FileSystem

    uri = uri_or_path or DEFAULT_STORAGE
    if "://" not in uri:
        uri = os.path.abspath(uri)
    fs, path = FileSystem.from_uri(uri)
    return Location(uri, fs, path)


CHECKPOINT_DIR = re.compile(r"^checkpoint_\d+$")  # a Tune checkpoint folder in a trial's folder
# what trials kept before their trainer's own files moved off storage (trainables/trial.py)
LEGACY_TRAINER_FILES = re.compile(r"(^|/)hrm/(step_\d+(\.rank\d+)?\.pt|restore[^/]*/.*)$")


@dataclass(frozen=True)
class Usage:
    """Bytes under a folder: all of them, and those in checkpoints."""

    total: int = 0
    checkpoints: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.total + other.total, self.checkpoints + other.checkpoints)


def is_checkpoint_file(relative: str) -> bool:
    """A file (path relative to a Tune experiment folder) that belongs to a checkpoint."""
    parts = relative.split("/")
    return any(CHECKPOINT_DIR.match(p) for p in parts[:-1]) or bool(LEGACY_TRAINER_FILES.search(relative))


def usage(location: Location) -> Usage:
    """What ``location`` (a folder or a file) holds, on any file system pyarrow reaches."""
    from pyarrow.fs import FileSelector, FileType

    info = location.fs.get_file_info(location.path)
    if info.type == FileType.File:
        return Usage(info.size or 0, 0)
    if info.type != FileType.Directory:
        return Usage()
    total = ckpt = 0
    root = location.path.rstrip("/") + "/"
    for f in location.fs.get_file_info(FileSelector(location.path, recursive=True)):
        if f.type == FileType.File:
            total += f.size or 0
            if is_checkpoint_file(f.path[len(root):] if f.path.startswith(root) else f.path):
                ckpt += f.size or 0
    return Usage(total, ckpt)


def children_named(folder: Location, prefix: str) -> list[Location]:
    """The entries of ``folder`` named ``prefix`` or ``prefix`` followed by ``-`` or ``.``
    (an invocation's experiment, its extensions and confirmation stage, its Optuna study file)."""
    from pyarrow.fs import FileSelector

    try:
        infos = folder.fs.get_file_info(FileSelector(folder.path, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        name = info.base_name
        if name == prefix or name.startswith((f"{prefix}-", f"{prefix}.")):
            found.append(folder.child(name))
    return sorted(found, key=lambda loc: loc.name)


def human_bytes(n: int) -> str:
    """``512 B``, ``3.9 MB``, ``66.0 GB`` (decimal units, as ``du --si``)."""
    if n < 1000:
        return f"{n} B"
    size, unit = n / 1000, "kB"
    for bigger in ("MB", "GB", "TB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{size:.1f} {unit}"
