"""Declared dependencies: every third-party import of the package is declared in pyproject.toml
(in the dependencies, or in an extra when it is optional), the training core imports at module
level only what the runtime dependencies install, nothing is declared that nothing imports, and
the console scripts and install lines name what they should."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import PROJECT

PACKAGES = ("hrm_core", "trainables", "sweeps", "analysis")
# Optional GPU kernels, not installed on a CPU machine, so importlib.metadata cannot name their
# distributions: import name -> distribution (FlashAttention-3 is built from the flash-attention
# repository's hopper/ folder, not from PyPI; the gpu extra's flash-attn is its fallback).
NOT_INSTALLED_HERE = {"flash_attn": "flash-attn", "adam_atan2": "adam-atan2",
                      "flash_attn_interface": "flash-attn"}
# Runtime dependencies that no module imports by that name (torch's dependency pins aside).
IMPORTED_AS = {"hydra-core": "hydra", "pyyaml": "yaml"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(reqs: list[str]) -> set[str]:
    return {norm(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0)) for r in reqs}


@pytest.fixture(scope="module")
def project() -> dict:
    with open(os.path.join(PROJECT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


@pytest.fixture(scope="module")
def declared(project) -> dict[str, set[str]]:
    """Requirement group ("runtime" or an extra) -> normalised distribution names."""
    groups = {"runtime": requirement_names(project["dependencies"])}
    for extra, reqs in project["optional-dependencies"].items():
        groups[extra] = requirement_names(reqs)
    return groups


class Import:
    def __init__(self, module: str, path: str, line: int, top_level: bool, guarded: bool):
        self.module, self.path, self.line = module, path, line
        self.top_level, self.guarded = top_level, guarded  # at module level; in a try/except ImportError

    def __repr__(self) -> str:
        return f"{self.module} ({self.path}:{self.line})"


def _catches_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        if handler.type is None:
            return True
        for t in handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]:
            names.add(getattr(t, "id", getattr(t, "attr", "")))
    return bool(names & {"ImportError", "ModuleNotFoundError", "Exception"})


def _walk(node, path, in_function, guarded, out):
    for child in ast.iter_child_nodes(node):
        fn = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(child, ast.Try):
            for stmt in child.body:
                _walk_stmt(stmt, path, fn, guarded or _catches_import_error(child), out)
            for part in (*child.handlers, *child.orelse, *child.finalbody):
                _walk_stmt(part, path, fn, guarded, out)
            continue
        _walk_stmt(child, path, fn, guarded, out)


def _walk_stmt(node, path, in_function, guarded, out):
    mods = []
    if isinstance(node, ast.Import):
        mods = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        mods = [node.module]
    for m in mods:
        out.append(Import(m.split(".")[0], path, node.lineno, not in_function, guarded))
    _walk(node, path, in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef), guarded, out)


def type_checking_only(tree: ast.Module) -> set[int]:
    """Lines of imports under ``if TYPE_CHECKING:`` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING":
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")}
    return lines


@pytest.fixture(scope="module")
def third_party_imports() -> list[Import]:
    out: list[Import] = []
    for pkg in PACKAGES:
        for root, _, files in os.walk(os.path.join(PROJECT, pkg)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                found: list[Import] = []
                _walk(tree, os.path.relpath(path, PROJECT), False, False, found)
                skip = type_checking_only(tree)
                out += [i for i in found if i.line not in skip]
    first_party = set(PACKAGES)
    return [i for i in out if i.module not in sys.stdlib_module_names and i.module not in first_party]


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution once


def distributions(module: str) -> set[str]:
    names = _packages_distributions().get(module)
    if names:
        return {norm(n) for n in names}
    return {norm(NOT_INSTALLED_HERE[module])} if module in NOT_INSTALLED_HERE else set()


def test_the_scan_sees_function_level_and_optional_imports(third_party_imports):
    by_module = {i.module: i for i in third_party_imports}
    assert by_module["requests"].top_level is False  # hrm_core/tracking imports it inside a function
    assert by_module["flash_attn"].guarded and by_module["adam_atan2"].guarded
    assert {"torch", "mlflow", "ray", "optuna", "pandas"} <= set(by_module)


def test_every_third_party_import_is_declared(third_party_imports, declared):
    everything = set().union(*declared.values())
    missing, unknown = [], []
    for imp in third_party_imports:
        dists = distributions(imp.module)
        if not dists:
            unknown.append(imp)
        elif not dists & everything:
            missing.append(f"{imp} -> {sorted(dists)}")
    assert not unknown, f"imports of modules no installed distribution provides: {unknown}"
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(set(missing))}"


def test_optional_imports_are_guarded_and_in_an_extra(third_party_imports, declared):
    """What is not installed here (the GPU kernels) is imported under try/except ImportError,
    and declared in an extra, never in the dependencies."""
    extras = set().union(*(v for k, v in declared.items() if k != "runtime"))
    for imp in third_party_imports:
        if imp.module in NOT_INSTALLED_HERE:
            assert imp.guarded, f"{imp}: an optional kernel must be imported under try/except ImportError"
            dist = norm(NOT_INSTALLED_HERE[imp.module])
            assert dist in extras and dist not in declared["runtime"], imp


def test_training_core_needs_only_the_runtime_dependencies(third_party_imports, declared):
    """``hrm-train`` works on ``pip install .``: hrm_core's module-level, unguarded imports (its
    MLflow tracking aside, the ``track`` extra) are all runtime dependencies."""
    core = [i for i in third_party_imports if i.path.startswith("hrm_core" + os.sep)
            and not i.path.startswith(os.path.join("hrm_core", "tracking")) and i.top_level and not i.guarded]
    assert core, "the scan found no module-level import in hrm_core"
    outside = [f"{i} -> {sorted(distributions(i.module))}" for i in core
               if not distributions(i.module) & declared["runtime"]]
    assert not outside, f"hrm_core imports at module level what only an extra installs: {outside}"


def test_every_runtime_dependency_is_imported(third_party_imports, declared):
    """A runtime dependency nothing imports (as einops was) is not declared."""
    imported = {d for i in third_party_imports for d in distributions(i.module)}
    unused = sorted(d for d in declared["runtime"] if d not in imported)
    assert not unused, f"runtime dependencies that no module of {PACKAGES} imports: {unused}"


def test_server_packages_are_the_server_extra_and_installed_where_needed(declared):
    assert {"psycopg2-binary", "boto3"} <= declared["server"]
    assert not {"psycopg2-binary", "boto3"} & (declared["runtime"] | declared["dev"])
    with open(os.path.join(PROJECT, "Makefile")) as f:
        extras = re.search(r"^EXTRAS\s*\?=\s*(\S+)", f.read(), re.M).group(1).split(",")
    assert {"server", "dev", "track", "sweep", "report"} <= set(extras), "make test's install"
    with open(os.path.join(PROJECT, "docker", "Dockerfile")) as f:
        installs = re.findall(r'pip install[^\n]*-e "\.\[([a-z,]+)\]"', f.read())
    assert any("server" in i.split(",") for i in installs), installs


def test_console_scripts_run_the_python_m_entry_points(project):
    assert project["scripts"] == {"hrm-train": "hrm_core.pretrain:main", "hrm-sweeps": "sweeps.__main__:main"}
    bin_dir = os.path.dirname(sys.executable)
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    for name, target in project["scripts"].items():
        assert installed.get(name) == target, f"{name}: reinstall the project (pip install -e .)"
    proc = subprocess.run([os.path.join(bin_dir, "hrm-sweeps"), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT)
    assert proc.returncode == 0 and "run" in proc.stdout and "validate" in proc.stdout, proc.stderr
