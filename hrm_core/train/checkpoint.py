"""Training checkpoints: everything an exact resume needs, and a retention policy
(keep the last N and the best)."""

from __future__ import annotations

import json
import os
import pickle
import re
import types
from typing import Any

import torch

from hrm_core.errors import UserError
from hrm_core.model.reference import strip_compile_prefix

FORMAT_VERSION = 1

# Modules that moved when hrm_core was split into rooms: a checkpoint pickled before names
# them by their old paths, and still loads.
MOVED_MODULES = {
    "hrm_core.model": "hrm_core.model.hrm",
    "hrm_core.layers": "hrm_core.model.layers",
    "hrm_core.variants": "hrm_core.model.variants",
    "hrm_core.reference": "hrm_core.model.reference",
    "hrm_core.trainer": "hrm_core.train.trainer",
    "hrm_core.checkpoint": "hrm_core.train.checkpoint",
    "hrm_core.optim": "hrm_core.train.optim",
    "hrm_core.losses": "hrm_core.train.losses",
    "hrm_core.distributed": "hrm_core.train.distributed",
    "hrm_core.hardware": "hrm_core.train.hardware",
    "hrm_core.callbacks": "hrm_core.observe.callbacks",
    "hrm_core.diagnostics": "hrm_core.observe.diagnostics",
    "hrm_core.alerts": "hrm_core.observe.alerts",
    "hrm_core.compute": "hrm_core.observe.compute",
    "hrm_core.run_context": "hrm_core.observe.run_context",
    "hrm_core.provenance": "hrm_core.observe.provenance",
    "hrm_core.tracking": "hrm_core.tracking.sink",
    "hrm_core.config": "hrm_core.config.schema",
    "hrm_core.compose": "hrm_core.config.compose",
    "hrm_core.datasets": "hrm_core.data.resolve",
    "hrm_core.evaluators": "hrm_core.data.evaluators",
    "hrm_core.arc_eval": "hrm_core.data.arc_eval",
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return super().find_class(MOVED_MODULES.get(module, module), name)


_moved_names_pickle = types.SimpleNamespace(**{**vars(pickle), "Unpickler": _Unpickler})
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_ANY_STEP_FILE = re.compile(r"^step_(\d+)(\.rank\d+)?\.pt$")


def checkpoint_file(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, f"step_{step}.pt")


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the training checkpoints in ``run_dir``, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in os.listdir(run_dir):
        m = _STEP_FILE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(run_dir, name)))
    return sorted(found)


def save(path: str, state: dict[str, Any]) -> None:
    """Atomic write: a crash mid-save never leaves a truncated checkpoint behind."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load(path: str) -> dict[str, Any]:
    """Load a training checkpoint (file, or a run directory: its latest checkpoint)."""
    if os.path.isdir(path):
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise UserError(f"no checkpoint (step_*.pt) in {path}")
        path = ckpts[-1][1]
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_moved_names_pickle)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise UserError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a training checkpoint")
    if "format_version" not in state:  # a bare state dict: the reference's format
        return {"model": strip_compile_prefix(state), "path": path}
    state["path"] = path
    return state


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """Just the model weights (for init_from): ours or a reference checkpoint."""
    return load(path)["model"]


class Retention:
    """Keep the last ``keep_last`` checkpoints and the best one by the checkpoint metric.

    The best value is held in memory (every rank takes the same decisions) and mirrored
    to ``best.json`` by rank 0.
    """

    def __init__(self, run_dir: str, keep_last: int = 2, keep_best: bool = True, mode: str = "max"):
        self.run_dir, self.keep_last, self.keep_best, self.mode = run_dir, keep_last, keep_best, mode
        self.best: dict[str, Any] | None = None
        if os.path.exists(self._best_file):
            with open(self._best_file) as f:
                self.best = json.load(f)

    @property
    def _best_file(self) -> str:
        return os.path.join(self.run_dir, "best.json")

    def is_better(self, value: float | None) -> bool:
        if value is None or value != value:  # NaN never wins
            return False
        if self.best is None:
            return True
        return value > self.best["value"] if self.mode == "max" else value < self.best["value"]

    def record_best(self, step: int, value: float, metric: str, write: bool = True) -> None:
        self.best = {"step": step, "value": value, "metric": metric, "path": checkpoint_file(self.run_dir, step)}
        if write:
            with open(self._best_file, "w") as f:
                json.dump(self.best, f)

    def prune(self) -> list[str]:
        """Delete checkpoints (and their per-rank files) that are neither among the last N nor the best."""
        ckpts = list_checkpoints(self.run_dir)
        keep = {step for step, _ in ckpts[-self.keep_last :]}
        if self.keep_best and self.best is not None:
            keep.add(self.best["step"])
        removed = []
        for name in os.listdir(self.run_dir):
            m = _ANY_STEP_FILE.match(name)
            if m and int(m.group(1)) not in keep:
                os.remove(os.path.join(self.run_dir, name))
                removed.append(name)
        return removed
