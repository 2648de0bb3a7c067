"""User-facing errors: one line, naming the offending key or file, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "UserError", "ConfigError", "closest", "unknown_key_message",
]


class UserError(Exception):
    """Bad input from the user. The CLI prints ``str(err)`` on one line and exits 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    pass


def closest(key: str, candidates: Iterable[str]) -> str | None:
    """The closest valid key to a mistyped one, for 'did you mean' hints."""
    candidates = list(candidates)
    leaf = key.rsplit(".", 1)[-1]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not match:  # compare leaves too: 'arch.hiden_size' vs 'arch.hidden_size'
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        leaf_match = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        match = [leaves[leaf_match[0]]] if leaf_match else []
    return match[0] if match else None


def unknown_key_message(key: str, candidates: Iterable[str], where: str = "config") -> str:
    hint = closest(key, candidates)
    suffix = f"; did you mean '{hint}'?" if hint else ""
    return f"unknown {where} key '{key}'{suffix}"
