"""The disk an invocation holds, and freeing it: ``python -m sweeps list`` shows each
invocation's footprint; ``python -m sweeps prune NAME [--keep none|last|best]`` deletes a
finished invocation's checkpoints and records that on its parent run (``hrm.pruned``).

An invocation's Tune folders sit side by side under its storage path: the experiment
(``<sweep>-<parent id[:12]>``), its extensions (``...-ext<n>``) and confirmation stage
(``...-confirm``), and a search's Optuna study file. Every trial folder's ``checkpoint_*``
folders are its checkpoints; ``--keep last`` keeps each trial's newest, ``--keep best`` the
one whose result scored best on the invocation's objective (read from the trial's
``result.json``), ``--keep none`` none. The trainer's own copies that older invocations
left in ``hrm/`` always go. Nothing else is touched: results, logs and MLflow stay, and
``reproduce`` reruns from the recorded config and data recipe, never from a checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.storage import (
    CHECKPOINT_DIR,
    LEGACY_TRAINER_FILES,
    Location,
    Usage,
    children_named,
    human_bytes,
    locate,
    usage,
)

KEEP = ("none", "last", "best")


def invocation_folders(parent) -> list[Location]:
    """The Tune folders (and study file) of an invocation, from its parent run's tags."""
    from sweeps.tuner import experiment_name

    tags = parent.data.tags
    if names.TAG_TUNE_PATH not in tags or names.TAG_SWEEP not in tags:
        return []
    storage = locate(tags[names.TAG_TUNE_PATH]).parent()
    return children_named(storage, experiment_name(tags[names.TAG_SWEEP], parent.info.run_id))


def footprint(parent) -> str:
    """``12.3 MB (checkpoints 11.0 MB)``, or ``n/a`` when the storage cannot be read (or the
    invocation recorded none)."""
    if names.TAG_TUNE_PATH not in parent.data.tags:
        return "n/a"
    try:
        total = sum((usage(f) for f in invocation_folders(parent)), Usage())
    except OSError:
        return "n/a"
    return f"{human_bytes(total.total)} (checkpoints {human_bytes(total.checkpoints)})"


@dataclass
class Pruned:
    trials: int = 0  # trial folders visited
    checkpoints_removed: int = 0
    checkpoints_kept: int = 0
    freed: int = 0  # bytes


def pick_invocation(client, sweep: str, invocation: str | None):
    """The parent run to prune: the given one, else the sweep's latest; finished, or refused."""
    exp = client.get_experiment_by_name(names.experiment_name(sweep))
    if exp is None:
        raise UserError(f"no sweep '{sweep}' in the MLflow store (experiment {names.experiment_name(sweep)})")
    if invocation:
        try:
            parent = client.get_run(invocation)
        except Exception:  # noqa: BLE001 - MlflowException for an unknown or malformed id
            raise UserError(f"unknown invocation '{invocation}' of sweep '{sweep}'") from None
        if parent.data.tags.get(names.TAG_SWEEP) != sweep or names.TAG_SWEEP_STATUS not in parent.data.tags:
            raise UserError(f"run {invocation} is not an invocation of sweep '{sweep}'")
    else:
        runs = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise UserError(f"sweep '{sweep}' has no invocation to prune")
        parent = runs[0]
    status = parent.data.tags.get(names.TAG_SWEEP_STATUS, "?")
    if status != "finished":
        raise UserError(f"invocation {parent.info.run_id} of sweep '{sweep}' is {status}: prune takes only a "
                        "finished invocation (its trials resume from these checkpoints)")
    return parent


def best_checkpoint(result_json: str, metric: str, mode: str) -> str | None:
    """The checkpoint folder whose result scored best on ``metric`` (ties: the later)."""
    best: tuple[float, str] | None = None
    for line in result_json.splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        name, value = result.get("checkpoint_dir_name"), result.get(metric)
        if not name or not isinstance(value, (int, float)) or value != value:
            continue
        score = value if mode == "max" else -value
        if best is None or score >= best[0]:
            best = (score, name)
    return best[1] if best else None


def kept_checkpoints(trial: Location, checkpoints: list[str], keep: str, metric: str, mode: str) -> set[str]:
    if keep == "none" or not checkpoints:
        return set()
    if keep == "last":
        return {max(checkpoints)}
    try:
        with trial.fs.open_input_stream(trial.child("result.json").path) as f:
            text = f.read().decode()
    except OSError:
        text = ""
    best = best_checkpoint(text, metric, mode)
    return {best if best in checkpoints else max(checkpoints)}  # no scored result: the last


def prune_trial(trial: Location, keep: str, metric: str, mode: str, out: Pruned) -> None:
    from pyarrow.fs import FileSelector, FileType

    entries = trial.fs.get_file_info(FileSelector(trial.path, recursive=True))
    root = trial.path.rstrip("/") + "/"
    checkpoints = sorted(e.base_name for e in entries
                         if e.type == FileType.Directory and CHECKPOINT_DIR.match(e.base_name)
                         and e.path[len(root):] == e.base_name)
    kept = kept_checkpoints(trial, checkpoints, keep, metric, mode)
    out.trials += 1
    out.checkpoints_kept += len(kept)
    for name in checkpoints:
        if name in kept:
            continue
        folder = trial.child(name)
        out.freed += usage(folder).total
        trial.fs.delete_dir(folder.path)
        out.checkpoints_removed += 1
    for e in entries:  # the trainer's own copies that older trials left on storage
        if e.type == FileType.File and LEGACY_TRAINER_FILES.search(e.path[len(root):]):
            out.freed += e.size or 0
            trial.fs.delete_file(e.path)


def prune_invocation(client, parent, keep: str) -> Pruned:
    """Delete the invocation's checkpoints but those ``keep`` names; tag the parent run."""
    from pyarrow.fs import FileSelector, FileType

    if keep not in KEEP:
        raise UserError(f"--keep: choose one of {', '.join(KEEP)} (got {keep!r})")
    tags = parent.data.tags
    metric = tags.get(names.TAG_OBJECTIVE, names.DEFAULT_OBJECTIVE)
    mode = tags.get(names.TAG_OBJECTIVE_MODE, "max")
    out = Pruned()
    for folder in invocation_folders(parent):
        if folder.fs.get_file_info(folder.path).type != FileType.Directory:
            continue  # the Optuna study file
        for entry in folder.fs.get_file_info(FileSelector(folder.path)):
            if entry.type == FileType.Directory:
                prune_trial(folder.child(entry.base_name), keep, metric, mode, out)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    client.set_tag(parent.info.run_id, names.TAG_PRUNED,
                   f"keep={keep}; freed {human_bytes(out.freed)}; at {when}")
    return out


def pruned_note(client, run_tags: dict[str, str]) -> str | None:
    """For reproduce: what a trial run's invocation pruned, in a line (None: nothing)."""
    parent_id = run_tags.get(names.TAG_INVOCATION)
    if not parent_id:
        return None
    try:
        pruned = client.get_run(parent_id).data.tags.get(names.TAG_PRUNED)
    except Exception:  # noqa: BLE001 - the parent run may be gone; nothing to say then
        return None
    if not pruned:
        return None
    return (f"the checkpoints of invocation {parent_id} were pruned ({pruned}); reproduce does not need "
            "them: it reruns from the recorded config and data recipe")


def main(sweep: str, keep: str, invocation: str | None, log=print) -> int:
    from hrm_core.tracking.client import get_client

    client = get_client()
    parent = pick_invocation(client, sweep, invocation)
    before = footprint(parent)
    out = prune_invocation(client, parent, keep)
    log(f"pruned invocation {parent.info.run_id} of '{sweep}' (keep={keep}): {out.checkpoints_removed} "
        f"checkpoint(s) removed, {out.checkpoints_kept} kept in {out.trials} trial(s), "
        f"{human_bytes(out.freed)} freed; {before} -> {footprint(parent)}")
    return 0
