"""The suite and its scripts read nothing outside the repository unless the user names it.

A clone anywhere must pass ``make test``: no test, benchmark, Makefile target or CI script may
reach a path above the repository root (``..`` past the root, the os module's parent-folder
constant, ``dirname`` of the root, ``Path.parents`` beyond it). Python files are read as AST:
every path derived from the file's own ``__file__`` is followed through
``dirname``/``abspath``/``join``/``/``/``.parent`` and the names it is assigned to. Shell and
Makefile text is read for ``..`` components relative to the script's folder or the root. Paths
from temporary folders and installed packages (another module's ``__file__``) are not derived
from this file, and so are exempt.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

from tests.conftest import PROJECT

SCANNED_DIRS = ("tests", "benchmarks", ".ci")
SCANNED_FILES = ("Makefile",)
SELF = "tests/test_self_contained.py"
_PARENT_LITERAL = re.compile(r"(^|[/\\])\.\.([/\\]|$)")
_PATH_KEEPERS = {
    "abspath",
    "realpath",
    "normpath",
    "expanduser",
    "resolve",
    "absolute",
    "Path",
    "PurePath",
    "fspath",
    "str",
}


class _Levels(ast.NodeVisitor):
    """Folder levels below the root of the paths a file derives from its own ``__file__``."""

    def __init__(self, relpath: str):
        self.file_level = len(relpath.split("/"))  # the file itself, one below its folder
        self.names: dict[str, int] = {}
        self.accounted: set[int] = set()
        self.escapes: list[str] = []

    def level(self, node: ast.AST) -> int | None:
        if isinstance(node, ast.Name):
            return self.file_level if node.id == "__file__" else self.names.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            base = self.level(node.value)
            return None if base is None else base - 1
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
        ):
            base = self.level(node.value.value)
            index = node.slice.value if isinstance(node.slice, ast.Constant) else None
            return None if base is None or not isinstance(index, int) else base - 1 - index
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._joined(node.left, [node.right])
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            target = (
                node.func.value
                if isinstance(node.func, ast.Attribute) and name in {"resolve", "absolute"}
                else None
            )
            if target is not None:
                return self.level(target)
            if name == "dirname" and node.args:
                base = self.level(node.args[0])
                return None if base is None else base - 1
            if name in _PATH_KEEPERS and node.args:
                return self.level(node.args[0])
            if (name == "join" and node.args) or (
                name == "joinpath" and isinstance(node.func, ast.Attribute)
            ):
                base, parts = (
                    (node.args[0], node.args[1:]) if name == "join" else (node.func.value, node.args)
                )
                return self._joined(base, parts)
        return None

    def _joined(self, base: ast.AST, parts: list[ast.AST]) -> int | None:
        level = self.level(base)
        if level is None:
            if re.search(r"tmp|temp", ast.unparse(base), re.IGNORECASE):  # temporary folders are exempt
                self.accounted.update(id(p) for p in parts)
            return None
        for part in parts:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                return None  # a computed component: below wherever it starts, so no longer followed
            self.accounted.add(id(part))
            for piece in re.split(r"[/\\]", part.value):
                level += -1 if piece == ".." else (0 if piece in ("", ".") else 1)
                if level < 0:
                    self.escapes.append(
                        f"line {part.lineno}: {ast.unparse(base)} joined with {part.value!r} "
                        "passes above the root"
                    )
        return level

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        level = self.level(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name) and level is not None:
                self.names[target.id] = level

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.expr) and not isinstance(node, ast.Name):
            level = self.level(node)
            if level is not None and level < 0:
                self.escapes.append(
                    f"line {node.lineno}: {ast.unparse(node)} is {-level} level(s) above the root"
                )
        if isinstance(node, ast.Attribute) and node.attr == "pardir":
            self.escapes.append(f"line {node.lineno}: the parent-folder constant ({ast.unparse(node)})")
        super().generic_visit(node)


def python_escapes(source: str, relpath: str) -> list[str]:
    tree = ast.parse(source)
    visitor = _Levels(relpath)
    visitor.visit(tree)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef) and ast.get_docstring(n) is not None
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in visitor.accounted
            and id(node) not in docstrings
            and _PARENT_LITERAL.search(node.value)
        ):
            visitor.escapes.append(f"line {node.lineno}: the literal {node.value!r} names a parent folder")
    return sorted(set(visitor.escapes))


_SCRIPT_DIR = r'\$\(dirname\s+"?\$(?:0|\{BASH_SOURCE\[0\]\})"?\)|\$\{BASH_SOURCE\[0\]%/\*\}'
_SHELL_PARENT = re.compile(
    rf"(?P<base>{_SCRIPT_DIR}|\$\(CURDIR\)|\$\{{?\w*(?:TMP|TEMP|tmp)\w*\}}?)?"
    r"""(?P<up>(?:/?(?<![.\w])\.\.(?=[/"'\s)]|$))+)"""
)


def shell_escapes(text: str, relpath: str) -> list[str]:
    """``..`` in a shell script or Makefile: from the script's own folder, or from the root (where
    the Makefile runs and where CI scripts ``cd``). Temporary folders are exempt."""
    script_level = len(relpath.split("/")) - 1
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        for match in _SHELL_PARENT.finditer(code):
            base = match.group("base") or ""
            if re.search(r"TMP|TEMP|tmp", base):
                continue
            start = script_level if base and "CURDIR" not in base else 0
            if start - match.group("up").count("..") < 0:
                found.append(f"line {lineno}: {match.group(0).strip()} leaves the repository")
    return found


def _scanned_files():
    yield from SCANNED_FILES
    for folder in SCANNED_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(PROJECT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in sorted(filenames):
                relpath = os.path.relpath(os.path.join(dirpath, filename), PROJECT).replace(os.sep, "/")
                if relpath != SELF:  # this file's examples of what the scan finds
                    yield relpath


def test_no_test_script_or_target_reads_above_the_repository():
    scanned, escapes = 0, []
    for relpath in _scanned_files():
        with open(os.path.join(PROJECT, relpath), "rb") as fh:
            raw = fh.read()
        if b"\0" in raw:
            continue  # binary fixtures
        text = raw.decode("utf-8")
        if relpath.endswith(".py"):
            found = python_escapes(text, relpath)
        elif relpath == "Makefile" or relpath.startswith(".ci/") or relpath.endswith(".sh"):
            found = shell_escapes(text, relpath)
        else:
            continue
        scanned += 1
        escapes += [f"{relpath}: {e}" for e in found]
    assert scanned >= 20, f"only {scanned} files scanned: the scan is not looking where it should"
    assert not escapes, "paths above the repository root:\n" + "\n".join(escapes)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nPROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
        "F = os.path.join(os.path.dirname(" + "PROJECT), 'shared', 'x.pt')\n",
        "import os\nF = os.path.join(os.path.dirname(__file__), '..', '..', 'shared')\n",
        "import os\nF = os.path.join('tests', os." + "pardir, 'x')\n",
        "from pathlib import Path\nF = Path(__file__).resolve().parents[2] / 'shared'\n",
        "from pathlib import Path\nF = Path(__file__).parent.parent.parent / 'shared'\n",
        "F = open('../" + "shared/fixtures/x.pt')\n",
    ],
)
def test_the_python_scan_finds_each_way_out(source):
    assert python_escapes(source, "tests/test_x.py")


@pytest.mark.parametrize(
    "source",
    [
        "import os\nPROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
        "F = os.path.join(PROJECT, 'tests', 'fixtures', 'x.pt')\n",
        "import os\nHERE = os.path.dirname(__file__)\nF = os.path.join(HERE, '..', 'Makefile')\n",
        "from pathlib import Path\nF = Path(__file__).resolve().parents[1] / 'configs'\n",
        "import torch, os\nF = os.path.dirname(os.path.dirname(torch.__file__))\n",  # an installed package
        "def f(tmp_path):\n    return tmp_path / '..' / 'y'\n",  # not derived from this file
    ],
)
def test_the_python_scan_passes_paths_inside(source):
    assert python_escapes(source, "tests/test_x.py") == []


def test_the_shell_scan():
    assert shell_escapes('cd "$(dirname "$0")/.."\n', ".ci/run") == []
    assert shell_escapes('cd "$(dirname "$0")/../.."\n', ".ci/run")
    assert shell_escapes("\tcp ../" + "shared/fixtures/x.pt tests/\n", "Makefile")
    assert shell_escapes("\tcp $(CURDIR)/../x .\n", "Makefile")
    assert shell_escapes('cd "$TMPDIR/../x"\n', ".ci/run") == []
    assert shell_escapes("# see ../" + "shared\n", "Makefile") == []
