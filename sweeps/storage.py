"""Where a sweep keeps its Tune results: a local (or shared) folder, or a remote URI such as
``s3://bucket/prefix``. The one place that tells the two apart, through ``pyarrow.fs``;
Tune is handed the file system resolved here, so it never resolves the URI again.

Files that must be local (the Optuna study's SQLite, the MLflow write spool) go next to the
results when they are a local folder, else into the project's ``ray_results/``.
"""

from __future__ import annotations

import os
import posixpath
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
