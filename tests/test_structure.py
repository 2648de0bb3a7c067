"""The shape of the code, kept: no import cycles, tag names in one contract, the lines ruff
declares, sweeps on named public hrm_core APIs, and the recurrence and the train loop each on
one screen. Read as AST; nothing of the project is imported except where a function's length
is measured."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import PROJECT

PACKAGES = ("hrm_core", "trainables", "sweeps", "analysis")


def _modules() -> dict[str, str]:
    """Module name -> file path, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(PROJECT, package)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for filename in filenames:
                if filename.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, filename), PROJECT)[:-3].replace(os.sep, ".")
                    found[rel.removesuffix(".__init__")] = os.path.join(dirpath, filename)
    return found


def _imports(path: str, module: str, modules: dict[str, str]) -> set[str]:
    """The project modules a module imports at module level or in functions (TYPE_CHECKING left out)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{a.name}" for a in node.names]
            if any(n not in modules for n in names):  # names defined in the module itself
                names.append(base)
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, m, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring package
    __init__ edges to their own submodules' parents (a package importing itself lazily)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 60, "the scan found too few modules"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


_TAG_LITERAL = re.compile(r"""^hrm\.[a-z_]""")


def test_no_hrm_tag_literal_outside_names():
    """Every tag name (``hrm.*``) is defined once, in hrm_core/names.py."""
    found = []
    for module, path in _modules().items():
        if module == "hrm_core.names":
            continue
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _TAG_LITERAL.match(node.value)
            ):
                found.append(f"{os.path.relpath(path, PROJECT)}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.JoinedStr):
                head = node.values[0] if node.values else None
                if isinstance(head, ast.Constant) and _TAG_LITERAL.match(str(head.value)):
                    found.append(f"{os.path.relpath(path, PROJECT)}:{node.lineno}: f{str(head.value)!r}...")
    assert not found, "tag names outside hrm_core/names.py:\n" + "\n".join(found)


def test_ruff_enforces_the_line_length_it_declares():
    with open(os.path.join(PROJECT, "pyproject.toml"), "rb") as f:
        ruff = tomllib.load(f)["tool"]["ruff"]
    assert "E501" not in ruff["lint"].get("ignore", []) and "E" in ruff["lint"]["select"]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "E501", "--output-format", "concise", "."],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def _public_names(module: str) -> set[str] | None:
    path = _modules()[module]
    tree = ast.parse(open(path).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return None


@pytest.mark.parametrize("layer", ["sweeps", "trainables"])
def test_sweeps_and_trainables_use_named_public_hrm_core_apis(layer):
    """What sweeps/ and trainables/ take from hrm_core is named in the module's ``__all__``."""
    modules = _modules()
    bad = []
    for module, path in modules.items():
        if not module.startswith(layer):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrm_core"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if target in modules:  # a whole module (names, errors, ...): its own API
                        continue
                    public = _public_names(node.module)
                    if public is None or alias.name not in public:
                        bad.append(f"{module} takes {alias.name} from {node.module}")
            elif isinstance(node, ast.Import):
                bad += [f"{module} imports {a.name}" for a in node.names if a.name.startswith("hrm_core.")]
    assert not bad, "\n".join(bad)


def _lines(fn) -> int:
    """A function's lines as they stand in the file, from ``def`` to its last line."""
    return len(inspect.getsource(fn).splitlines())


def test_the_recurrence_and_the_train_loop_fit_on_one_screen():
    from hrm_core.model.hrm import HRMInner
    from hrm_core.train.trainer import Trainer

    sizes = {
        "HRMInner.forward": _lines(HRMInner.forward),
        "Trainer.fit": _lines(Trainer.fit),
        "Trainer.__init__": _lines(Trainer.__init__),
    }
    limits = {"HRMInner.forward": 35, "Trainer.fit": 40, "Trainer.__init__": 40}
    assert all(sizes[k] <= limits[k] for k in limits), f"lines: {sizes}, limits: {limits}"
