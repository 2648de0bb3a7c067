"""MLflow's standard source tags, set as its fluent API (``mlflow.start_run``) sets them.

Runs here are made through ``MlflowClient.create_run``, which sets none of them, so the runs
table's Source and User columns would stay empty. ``source_tags`` gives what the fluent
API's default and git context providers give: ``mlflow.user`` (``MLFLOW_TRACKING_USERNAME``,
else the login name), ``mlflow.source.name`` (the entry point), ``mlflow.source.type``
(``LOCAL``) and ``mlflow.source.git.commit`` (of the project tree, the commit every run's
provenance tags name; omitted without git). One difference, on purpose: under
``python -m pkg`` the fluent API names ``pkg/__main__.py``, which the UI shows as
``__main__.py``; here the source is the module (``python -m sweeps``), so the column says
what was run. Pass them to ``create_run``: MLflow reads the run's user from its creation tags.
"""

from __future__ import annotations

import getpass
import os
import sys

from hrm_core import names

__all__ = ["entry_point", "source_tags"]

SOURCE_TYPE_LOCAL = "LOCAL"  # mlflow.entities.SourceType.LOCAL, as a tag value


def _module(orig_argv: list[str]) -> str | None:
    """The module of ``python [options] -m <module> ...``, else None (a script, ``-c``, a console)."""
    i = 1
    while i < len(orig_argv):
        arg = orig_argv[i]
        if arg == "-m":
            return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-W", "-X", "--check-hash-based-pycs"):  # options that take a value
            i += 2
        elif arg.startswith("-") and arg not in ("-", "-c"):
            i += 1
        else:
            return None
    return None


def entry_point(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str:
    """``python -m <module>`` when the process was started with ``-m``, else the main script's
    path (the fluent API's ``sys.argv[0]``), else ``<console>``."""
    module = _module(list(sys.orig_argv if orig_argv is None else orig_argv))
    if module:
        return f"python -m {module}"
    argv = sys.argv if argv is None else argv
    return argv[0] if argv and argv[0] else "<console>"


def _user() -> str:
    try:
        return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    except (ImportError, KeyError, OSError):  # no login name (e.g. a uid without passwd entry)
        return "unknown"


def source_tags() -> dict[str, str]:
    """``mlflow.user``, ``mlflow.source.name`` / ``.type`` / ``.git.commit``."""
    from hrm_core.observe.provenance import git_commit

    tags = {
        names.TAG_MLFLOW_USER: _user(),
        names.TAG_MLFLOW_SOURCE_NAME: entry_point(),
        names.TAG_MLFLOW_SOURCE_TYPE: SOURCE_TYPE_LOCAL,
    }
    commit = git_commit()
    if commit != "unknown":
        tags[names.TAG_MLFLOW_GIT_COMMIT] = commit
    return tags
