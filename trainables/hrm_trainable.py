"""``train_hrm``: one sweep trial. Composes the trial's config, restores from Tune's last
checkpoint, and runs the same ``Trainer`` as the CLI; Tune gets metrics and checkpoints
through ``TuneSink``."""

from __future__ import annotations

import os

import torch

from hrm_core import names
from trainables.tune_sink import TuneSink

SWEEP_KEY = "__hrm"  # constant per-sweep context inside the Tune config


def trial_overrides(config: dict) -> tuple[list[str], dict]:
    """Training overrides of this trial: the sweep's base, the arm or sampled params, the seed."""
    ctx = config[SWEEP_KEY]
    trial = config.get("__trial") or {}
    overrides = list(ctx["base"]) + list(trial.get("overrides", []))
    for key, value in sorted(config.items()):
        if not key.startswith("__"):
            overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return overrides, trial


def train_hrm(config: dict) -> None:
    from ray import tune

    from hrm_core.compose import compose_config
    from hrm_core.datasets import resolve_data_path
    from hrm_core.hardware import resolve_device
    from hrm_core.pretrain import resolve_runtime
    from hrm_core.trainer import Trainer

    ctx = config[SWEEP_KEY]
    overrides, trial = trial_overrides(config)
    cpus = max(1, int(ctx.get("cpus_per_trial", 1)))
    torch.set_num_threads(cpus)  # torch threads follow the trial's CPUs
    cfg = compose_config([*overrides, f"threads={cpus}", "progress=false", "checkpoint_every_eval=true"])
    device = resolve_device("cuda" if ctx.get("gpus_per_trial", 0) > 0 else cfg.device if cfg.device != "auto" else "cpu")
    cfg = resolve_runtime(cfg, device)
    run_dir = os.path.join(tune.get_context().get_trial_dir(), "hrm")
    os.makedirs(run_dir, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retried or resumed trial continues exactly
        local = checkpoint.to_directory(os.path.join(run_dir, "restore"))
        cfg = cfg.model_copy(update={"resume_from": os.path.join(local, "state.pt")})
    data_path = resolve_data_path(cfg, log=lambda *_: None)  # built by the driver already
    cfg = cfg.model_copy(update={"data_path": data_path, "checkpoint_path": run_dir, "run_name": ctx.get("name")})
    tags = {
        names.TAG_ARM: str(trial.get("arm", "")),
        names.TAG_SEED: str(cfg.seed),
        names.TAG_DATASET_FINGERPRINT: ctx.get("dataset_fingerprint", ""),
    }
    trainer = Trainer(cfg, data_path, run_dir, device, [TuneSink(tags)], log=lambda *_: None)
    if ctx.get("pid_dir"):  # tests: lets a test SIGKILL this trial's worker
        with open(os.path.join(ctx["pid_dir"], f"{trial.get('arm', 'trial')}-{cfg.seed}.pid"), "w") as f:
            f.write(f"{os.getpid()} {trainer.step}")
    if ctx.get("inject_nan_at") and trial.get("arm") == ctx.get("inject_nan_arm"):
        _inject_nan(trainer, int(ctx["inject_nan_at"]))
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
