"""Where a run came from: git commit, dirtiness and uncommitted diff of the project tree."""

from __future__ import annotations

import os
import subprocess

from hrm_core.paths import project_root


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
