"""Training checkpoints: the files (atomic writes, old module paths still load), when the
trainer writes one and which it keeps (the last N and the best), and the state a resume or a
warm start reads back. What a checkpoint holds is the trainer's ``state_dict()``."""

from __future__ import annotations

import json
import os
import pickle
import re
import types
from typing import TYPE_CHECKING, Any

import torch

from hrm_core import names
from hrm_core.config.schema import TrainConfig
from hrm_core.errors import UserError
from hrm_core.model.reference import strip_compile_prefix
from hrm_core.train.distributed import DistContext

if TYPE_CHECKING:
    from hrm_core.train.schedule import Schedule

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
        path = checkpoint_file(self.run_dir, step)
        self.best = {"step": step, "value": value, "metric": metric, "path": path}
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


def load_weights_into(model: torch.nn.Module, path: str) -> None:
    """Warm start (``init_from``): the weights of ``path`` must fit ``model`` exactly."""
    result = model.load_state_dict(load_weights(path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"init_from {path}: weights do not fit this model "
                        f"(missing {result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]})")


class Checkpoints:
    """When and where a run checkpoints. Rank 0 writes ``step_<n>.pt``; with several ranks,
    each other rank writes its own carry and random stream to ``step_<n>.rank<r>.pt``."""

    def __init__(self, run_dir: str, cfg: TrainConfig, ctx: DistContext):
        self.run_dir, self.cfg, self.ctx = run_dir, cfg, ctx
        self.retention = Retention(run_dir, cfg.checkpoint_keep_last, cfg.checkpoint_keep_best,
                                   cfg.checkpoint_mode)

    def due(self, step: int, schedule: Schedule, eval_metrics: dict[str, float] | None,
            stop_at: int | None) -> bool:
        """At the last step (of the schedule, or of this ``fit``), every ``checkpoint_every``
        steps, at every eval with ``checkpoint_every_eval``, and at a new best eval."""
        cfg = self.cfg
        if step == schedule.total_steps or step == stop_at:
            return True
        if schedule.checkpoint_every and step % schedule.checkpoint_every == 0:
            return True
        if eval_metrics is not None and cfg.checkpoint_every_eval:
            return True
        # The best eval so far is kept even when periodic checkpoints are off.
        return bool(eval_metrics) and cfg.checkpoint_keep_best and self.retention.is_better(
            eval_metrics.get(names.watched(eval_metrics, cfg.checkpoint_metric)))  # val/*: never test

    def save(self, step: int, state: dict, eval_metrics: dict[str, float] | None) -> tuple[str, bool]:
        """Write this rank's file; note a new best and prune (rank 0). -> (path, is it the best)."""
        path = checkpoint_file(self.run_dir, step)
        if self.ctx.rank:
            path = path.replace(".pt", f".rank{self.ctx.rank}.pt")
        save(path, state)
        metric = names.watched(eval_metrics or {}, self.cfg.checkpoint_metric)  # val/* when there is one
        value = (eval_metrics or {}).get(metric)
        is_best = self.retention.is_better(value)
        if is_best:
            self.retention.record_best(step, value, metric, write=self.ctx.is_main)
        if self.ctx.is_main:
            self.retention.prune()
        return path, is_best

    def resume_state(self, state: dict) -> dict:
        """The state this rank resumes from: rank 0's file, or the rank's own next to it."""
        if self.ctx.rank > 0:
            state = load(state["path"].replace(".pt", f".rank{self.ctx.rank}.pt"))
        if "optimizer" not in state:
            raise UserError(f"{state['path']} holds weights only; use init_from to warm-start from it")
        return state
