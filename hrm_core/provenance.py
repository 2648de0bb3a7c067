"""Where a run came from: git commit and dirtiness of the project tree."""

from __future__ import annotations

import subprocess

from hrm_core.datasets import project_root


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown"


def git_dirty() -> bool:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return bool(status)
