"""Where the project's own folders are: the one place that works out the project root."""

from __future__ import annotations

import os

__all__ = [
    "project_root",
]


def project_root() -> str:
    """The folder that holds ``hrm_core/`` and ``configs/`` (a checkout or an editable install)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
