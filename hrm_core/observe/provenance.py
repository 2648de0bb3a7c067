"""Where a run came from: git commit, dirtiness and uncommitted diff of the project tree, and
the provenance tags every kind of run carries (standalone, sweep parent and trials, reproduce)."""

from __future__ import annotations

import os
import subprocess

from hrm_core import names
from hrm_core.paths import project_root

__all__ = ["git_commit", "git_diff", "git_dirty", "provenance_tags"]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    # The GPU image has no .git: its build records the commit in HRM_GIT_COMMIT.
    return _git("rev-parse", "HEAD") or os.environ.get("HRM_GIT_COMMIT") or "unknown"


def git_dirty() -> bool:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return bool(status)


def git_diff() -> str:
    """``git diff HEAD``: the uncommitted changes to tracked files ("" when clean or no git)."""
    return _git("diff", "HEAD", "--no-color", "--no-ext-diff") or ""


def provenance_tags(dataset_fingerprint: str | None = None) -> dict[str, str]:
    """``hrm.git_commit``, ``hrm.git_dirty`` ("true" | "false") and, when given,
    ``hrm.dataset_fingerprint``."""
    tags = {names.TAG_GIT_COMMIT: git_commit(), names.TAG_GIT_DIRTY: str(git_dirty()).lower()}
    if dataset_fingerprint is not None:
        tags[names.TAG_DATASET_FINGERPRINT] = dataset_fingerprint
    return tags
