"""The descriptions MLflow's UI shows (``mlflow.note.content``, markdown).

- An experiment's: what its sweep studies, taken from the sweep file's header comment (and
  its ``description``), so the experiment page says why its runs exist.
- A sweep's parent run's: the report's conclusion and where the report is, so the verdict
  shows on the run's page without opening an artifact.

Torch-free and mlflow-free (the client is passed in): the analysis layer writes the
parent run's description when it attaches a report.
"""

from __future__ import annotations

import os

from hrm_core import names

__all__ = ["describe_experiment", "describe_run", "file_header", "report_note", "sweep_note"]

NOTE_MAX = 5000  # characters: MLflow keeps a tag value of up to 8000; a note is for reading


def file_header(path: str | os.PathLike[str]) -> str:
    """The comment lines a YAML file opens with, without their ``#`` ("" when it has none)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() and not lines:
                continue  # blank lines before the header
            if not line.lstrip().startswith("#"):
                break
            text = line.lstrip()[1:]
            lines.append(text[1:] if text.startswith(" ") else text)
    return "\n".join(lines).strip()


def sweep_note(path: str | os.PathLike[str], description: str = "") -> str:
    """An experiment's description: the sweep file's header (its example commands as code)
    and its ``description``, then which file it is."""
    lines: list[str] = []
    was_command = False
    for line in file_header(path).splitlines():
        command = _is_command(line)
        if lines and command != was_command:
            lines.append("")  # markdown: a code block starts after a blank line
        lines.append(f"    {line.strip()}" if command else line)
        was_command = command
    parts = ["\n".join(lines), description.strip(), f"Sweep file: `{_shown(path)}`"]
    return _cut("\n\n".join(p for p in parts if p))


def _shown(path: str | os.PathLike[str]) -> str:
    """A path inside the project relative to it, else as it is."""
    from hrm_core.paths import project_root

    path = os.path.abspath(path)
    root = project_root()
    return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def _is_command(line: str) -> bool:
    """An example command in a header (``#   make sweep-x   # ...``): shown as code."""
    return line.startswith("  ") and line.strip().startswith(("make ", "python ", "hrm-"))


def report_note(conclusion: str, artifact_path: str, local_path: str | None = None) -> str:
    """A parent run's description: the report's conclusion, then the report's artifact path
    (and its local copy)."""
    where = f"Report: `{artifact_path}` (this run's artifacts)"
    if local_path:
        where += f"; local copy `{local_path}`"
    return _cut(f"{conclusion.strip()}\n\n{where}", keep_tail=where)


def describe_experiment(client, experiment_id: str, note: str) -> None:
    """Set an experiment's description (an empty note leaves it as it is)."""
    if note:
        client.set_experiment_tag(experiment_id, names.TAG_MLFLOW_NOTE, note)


def describe_run(client, run_id: str, note: str) -> None:
    """Set a run's description (what its page shows under its name)."""
    client.set_tag(run_id, names.TAG_MLFLOW_NOTE, note)


def _cut(text: str, keep_tail: str = "") -> str:
    """At most ``NOTE_MAX`` characters; ``keep_tail`` (the report's path) survives the cut."""
    if len(text) <= NOTE_MAX:
        return text
    marker = "\n\n[... cut: see the report]\n\n"
    head = NOTE_MAX - len(marker) - len(keep_tail)
    return text[:head] + marker + keep_tail
