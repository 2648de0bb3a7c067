"""Where the MLflow store is: the tracking URI (``MLFLOW_TRACKING_URI``, else the project's
embedded SQLite store), the embedded store's artifact root, and what a URI is (SQLite file,
HTTP server) and how it is shown (without its password).

Imports neither MLflow nor torch: the analysis layer reads it too.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from hrm_core.paths import project_root

__all__ = [
    "ENV_TRACKING_URI",
    "embedded_artifact_root",
    "embedded_tracking_uri",
    "is_http",
    "redact",
    "sqlite_path",
    "tracking_uri",
]

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"


def embedded_tracking_uri() -> str:
    """``sqlite:///<project>/mlruns/mlflow.db``."""
    return f"sqlite:///{os.path.join(project_root(), 'mlruns', 'mlflow.db')}"


def embedded_artifact_root() -> str:
    """``<project>/mlruns/artifacts``: one folder per experiment of the embedded store."""
    return os.path.join(project_root(), "mlruns", "artifacts")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's embedded SQLite store."""
    return os.environ.get(ENV_TRACKING_URI) or embedded_tracking_uri()


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return path or None


def is_http(uri: str | None) -> bool:
    """A tracking server (``http(s)://``), as opposed to a store opened in-process."""
    return bool(uri) and uri.split(":", 1)[0].lower() in ("http", "https")


def redact(uri: str) -> str:
    """The URI without a password, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
