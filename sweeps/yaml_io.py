"""Strict YAML for sweep files: a mapping at the top, no duplicate keys, no aliases.

PyYAML silently keeps the last of two duplicate keys, and aliases allow "billion laughs"
expansion; a sweep file needs neither, so both are errors that name the file and line.
"""

from __future__ import annotations

import os

import yaml

from hrm_core.errors import UserError


class SweepFileError(UserError):
    pass


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # noqa: D102
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            message = "aliases (*name) are not allowed in sweep files"
            raise yaml.constructor.ConstructorError(None, None, message, event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: D102
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_mapping(path: str) -> dict:
    """Read a sweep file; every fault is one line that names the file."""
    if not os.path.isfile(path):
        raise SweepFileError(f"{path}: no such sweep file")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw:
        raise SweepFileError(f"{path}: binary file, not YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SweepFileError(f"{path}: not UTF-8 (byte {err.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepFileError(f"{path}:{where}: {problem}") from None
    if data is None:
        raise SweepFileError(f"{path}: empty sweep file (only comments or whitespace)")
    if not isinstance(data, dict):
        raise SweepFileError(f"{path}: the top level must be a mapping of keys, not a {type(data).__name__}")
    return data
