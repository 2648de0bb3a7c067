"""``train_hrm``: one sweep trial. Composes the trial's config, restores from Tune's last
checkpoint, and runs the same ``Trainer`` as the CLI; Tune gets metrics and checkpoints
through ``TuneSink``. A trial with ``resources.workers > 1`` (``workers_per_trial`` in the
sweep context) instead drives a Ray Train TorchTrainer of that many DDP ranks
(``trainables/ddp.py``), which reports to Tune exactly what a 1-process trial does."""

from __future__ import annotations

import logging
import os

import torch

from hrm_core import names
from trainables.tune_sink import TuneSink

SWEEP_KEY = "__hrm"  # constant per-sweep context inside the Tune config
TAG_GPU_IDS = "hrm.gpu_ids"  # the GPU ids Ray assigned to the trial (its workers, with DDP)
logger = logging.getLogger(__name__)


def trial_overrides(config: dict) -> tuple[list[str], dict]:
    """Training overrides of this trial: the sweep's base, the arm or sampled params, the seed."""
    ctx = config[SWEEP_KEY]
    trial = config.get("__trial") or {}
    overrides = list(ctx["base"]) + list(trial.get("overrides", []))
    for key, value in sorted(config.items()):
        if not key.startswith("__"):
            overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return overrides, trial


def trial_setup(config: dict, gpu_ids: list, cpus: int | None = None):
    """The trial's resolved config, device and MLflow tags.

    Shared by the 1-process trial and every rank of a DDP trial, so that both train
    exactly the same configuration. ``gpu_ids``: the GPUs Ray gave this process.
    """
    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import resolve_data_path
    from hrm_core.pretrain import resolve_runtime
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
        TAG_GPU_IDS: ",".join(str(g) for g in gpu_ids),  # which device(s) Ray gave the trial
    }
    return cfg, device, tags, trial


def apply_test_hooks(trainer, config: dict, trial: dict, write_pid: bool = True) -> None:
    """The sweep file's ``test_hooks`` (see ``sweeps.spec.TestHooks``); a DDP trial writes
    the pid of its rank 0 only, and poisons every rank's weights."""
    ctx = config[SWEEP_KEY]
    if ctx.get("pid_dir") and write_pid:  # tests: lets a test SIGKILL this trial's worker
        with open(os.path.join(ctx["pid_dir"], f"{trial.get('arm', 'trial')}-{trainer.cfg.seed}.pid"), "w") as f:
            f.write(f"{os.getpid()} {trainer.step}")
    if ctx.get("inject_nan_at") and trial.get("arm") == ctx.get("inject_nan_arm"):
        _inject_nan(trainer, int(ctx["inject_nan_at"]))


def train_hrm(config: dict) -> None:
    """One sweep trial: in this process, or as the driver of N DDP workers (``workers_per_trial``)."""
    import ray
    from ray import tune

    from hrm_core.train.trainer import Trainer

    if int(config[SWEEP_KEY].get("workers_per_trial", 1)) > 1:
        from trainables.ddp import train_hrm_ddp

        train_hrm_ddp(config)
        return
    cfg, device, tags, trial = trial_setup(config, ray.get_gpu_ids())
    run_dir = os.path.join(tune.get_context().get_trial_dir(), "hrm")
    os.makedirs(run_dir, exist_ok=True)
    cfg = cfg.model_copy(update={"checkpoint_path": run_dir})
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retried or resumed trial continues exactly
        local = checkpoint.to_directory(os.path.join(run_dir, "restore"))
        cfg = cfg.model_copy(update={"resume_from": os.path.join(local, "state.pt")})
    trainer = Trainer(cfg, cfg.data_path, run_dir, device, [TuneSink(tags, background=True)], log=lambda *_: None)
    apply_test_hooks(trainer, config, trial)
    trainer.fit()


def _inject_nan(trainer, at_step: int) -> None:
    """Test hook: poison the weights after ``at_step`` so the loss turns NaN."""
    original = trainer.train_step

    def step(batch):
        sums = original(batch)
        if trainer.step >= at_step:
            with torch.no_grad():
                for p in trainer.params:
                    p.fill_(float("nan"))
        return sums

    trainer.train_step = step
