"""One sweep trial's setup, the same in a 1-process trial and in every rank of a DDP trial:
its training overrides, resolved config, device, MLflow tags, restore point and faults.

The driver puts the sweep's constant context under ``SWEEP_KEY`` in every trial's Tune
config (``sweeps/tuner.py``); an ablation's arm and seed come under ``"__trial"``, a
search's sampled params as plain keys.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hrm_core import names
from trainables import faults

SWEEP_KEY = "__hrm"  # constant per-sweep context inside the Tune config
TRIAL_KEY = "__trial"  # an ablation trial's {"arm", "seed", "overrides"}
FAULTS_KEY = "faults"  # in the sweep context: the test faults (trainables/faults.py)
SCORE_KEY = "checkpoint_score_metric"  # in the sweep context: the metric that ranks checkpoints
logger = logging.getLogger(__name__)


def trial_overrides(config: dict) -> tuple[list[str], dict]:
    """Training overrides of this trial: the sweep's base, the arm or sampled params, the seed."""
    ctx = config[SWEEP_KEY]
    trial = config.get(TRIAL_KEY) or {}
    overrides = list(ctx["base"]) + list(trial.get("overrides", []))
    for key, value in sorted(config.items()):
        if not key.startswith("__"):
            overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return overrides, trial


def trial_setup(config: dict, gpu_ids: list, cpus: int | None = None):
    """The trial's resolved config, device, MLflow tags and trial entry (arm, seed).

    ``gpu_ids``: the GPUs Ray gave this process; ``cpus``: its torch threads (default: the
    trial's CPUs)."""
    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import resolve_data_path
    from hrm_core.train.runtime import resolve_runtime
    from trainables.resources import pick_device

    ctx = config[SWEEP_KEY]
    overrides, trial = trial_overrides(config)
    cpus = cpus or max(1, int(ctx.get("cpus_per_trial", 1)))
    torch.set_num_threads(cpus)  # torch threads follow the trial's CPUs
    cfg = compose_config([*overrides, f"threads={cpus}", "progress=false", "checkpoint_every_eval=true"])
    kind, warning = pick_device(cfg.device, gpu_ids, torch.cuda.is_available())
    if warning:
        logger.warning(warning)
    device = torch.device(kind)
    cfg = resolve_runtime(cfg, device)
    data_path = resolve_data_path(cfg, log=lambda *_: None)  # built by the driver already
    cfg = cfg.model_copy(update={"data_path": data_path, "run_name": ctx.get("name")})
    tags = {
        names.TAG_ARM: str(trial.get("arm", "")),
        names.TAG_SEED: str(cfg.seed),
        names.TAG_DATASET_FINGERPRINT: ctx.get("dataset_fingerprints", {}).get(data_path, ""),
        names.TAG_GPU_IDS: ",".join(str(g) for g in gpu_ids),  # which device(s) Ray gave the trial
        names.TAG_RAY_NODE: _ray_node(),
    }
    return cfg, device, tags, trial


def _ray_node() -> str:
    """The Ray node this process runs on ("" outside Ray): which machine of a cluster ran a trial."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def scratch_run_dir(experiment: str, trial_id: str) -> str:
    """Where a trial's trainer writes its own checkpoint files: a local folder outside the
    trial's Tune directory, whose files Tune copies to storage. Tune's checkpoints (kept as the
    sweep's ``keep_checkpoints`` says) are the trial's record; a restore starts from them, so
    this folder is removed when the trial's process ends."""
    return os.path.join(tempfile.gettempdir(), "hrm-trials", experiment, trial_id)


@contextmanager
def scratch(experiment: str, trial_id: str) -> Iterator[str]:
    """The trial's scratch run dir while the block runs; removed however it ends (a retry
    restores from Tune's checkpoint)."""
    run_dir = scratch_run_dir(experiment, trial_id)
    try:
        yield run_dir
    finally:
        remove_scratch(run_dir)


def remove_scratch(run_dir: str) -> None:
    """A trial's scratch run dir, and its experiment's folder once its last trial is gone."""
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(run_dir))
    except OSError:
        pass


def in_run_dir(cfg, run_dir: str, checkpoint, restore_dir: str):
    """The config training in ``run_dir``, resuming from Tune's ``checkpoint`` (if any),
    which is copied into ``run_dir/restore_dir`` first: a retried or resumed trial continues
    exactly."""
    os.makedirs(run_dir, exist_ok=True)
    cfg = cfg.model_copy(update={"checkpoint_path": run_dir})
    if checkpoint is not None:
        local = checkpoint.to_directory(os.path.join(run_dir, restore_dir))
        cfg = cfg.model_copy(update={"resume_from": os.path.join(local, "state.pt")})
    return cfg


def arm_faults(trainer, config: dict, trial: dict, write_pid: bool = True) -> None:
    """Apply the test faults the driver put in the sweep context (none in a real sweep)."""
    faults.apply(trainer, config[SWEEP_KEY].get(FAULTS_KEY) or {}, trial.get("arm"), write_pid=write_pid)
