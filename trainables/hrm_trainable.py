"""``train_hrm``: the Tune function of one sweep trial.

A 1-process trial composes its config (``trainables/trial.py``), restores from Tune's last
checkpoint, and runs the same ``Trainer`` as the CLI; Tune gets metrics and checkpoints
through ``TuneSink``. A trial with ``resources.workers > 1`` (``workers_per_trial`` in the
sweep context) instead drives a Ray Train TorchTrainer of that many DDP ranks
(``trainables/ddp.py``), which reports to Tune exactly what a 1-process trial does.

Every trial writes its own log (``trainables/trial_log.py``); a 1-process trial also posts its
step to the driver's progress board between checkpoints (``trainables/live.py``).
"""

from __future__ import annotations

from trainables.live import LiveSteps
from trainables.trial import (
    SCORE_KEY,
    SWEEP_KEY,
    arm_faults,
    in_run_dir,
    scratch,
    trial_overrides,
    trial_setup,
)
from trainables.trial_log import trial_log
from trainables.tune_sink import TuneSink


def train_hrm(config: dict) -> None:
    """One sweep trial: in this process, or as the driver of N DDP workers (``workers_per_trial``)."""
    import ray
    from ray import tune

    from hrm_core.train.trainer import Trainer

    workers = int(config[SWEEP_KEY].get("workers_per_trial", 1))
    with trial_log(f"{workers} worker(s); overrides: {' '.join(trial_overrides(config)[0])}") as log:
        if workers > 1:
            from trainables.ddp import train_hrm_ddp

            train_hrm_ddp(config)
            return
        cfg, device, tags, trial = trial_setup(config, ray.get_gpu_ids())
        context = tune.get_context()
        with scratch(context.get_experiment_name(), context.get_trial_id()) as run_dir:  # kept off storage
            cfg = in_run_dir(cfg, run_dir, tune.get_checkpoint(), "restore")
            sink = TuneSink(tags, background=True, score_metric=config[SWEEP_KEY].get(SCORE_KEY))
            live = LiveSteps(context.get_experiment_name(), context.get_trial_id())
            trainer = Trainer(cfg, cfg.data_path, run_dir, device, [sink, live, log], log=log.line)
            arm_faults(trainer, config, trial)
            trainer.fit()
