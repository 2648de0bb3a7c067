"""Train one HRM: ``hrm-train [hydra overrides]`` (or ``python -m hrm_core.pretrain ...``).

Examples::

    hrm-train arch=hrm_tiny data=sudoku4 epochs=200 eval_interval=20
    hrm-train --help                                   # groups, options, every key
    hrm-train arch=hrm_tiny data=sudoku4 --cfg job     # the composed config; nothing runs
    torchrun --nproc_per_node=2 -m hrm_core.pretrain arch=hrm_tiny data=sudoku4 global_batch_size=64

``train()`` is the one way a composed config is trained outside a sweep trial: the CLI
below and ``python -m sweeps reproduce`` both run through it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hrm_core import names
from hrm_core.errors import UserError

if TYPE_CHECKING:
    from hrm_core.train.trainer import Trainer

__all__ = ["MlflowRun", "Trained", "train", "main"]


@dataclass
class MlflowRun:
    """Where a run's MLflow record goes: experiment, run name, tags, store."""

    experiment: str
    run_name: str | None
    tags: dict[str, str] = field(default_factory=dict)
    uri: str | None = None  # None: MLFLOW_TRACKING_URI or the embedded store
    upload_best_checkpoint: bool = True


@dataclass
class Trained:
    """What ``train`` leaves: the trainer (its step, last eval), the outcome, the MLflow run."""

    trainer: Trainer
    outcome: str
    mlflow_run_id: str | None


def default_names(cfg, data_path: str):
    project = cfg.project_name or f"{os.path.basename(data_path).capitalize()} ACT-torch"
    run = cfg.run_name or f"{cfg.arch.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    if cfg.checkpoint_path:
        run_dir = cfg.checkpoint_path
    elif cfg.resume_from:  # continue in the run folder we resume from
        run_dir = cfg.resume_from if os.path.isdir(cfg.resume_from) else os.path.dirname(cfg.resume_from)
    else:
        run_dir = os.path.join("checkpoints", names.safe_name(project), names.safe_name(run))
    return project, run, os.path.abspath(run_dir)


def standalone_mlflow_run(cfg, data_path: str) -> MlflowRun | None:
    """The CLI's MLflow run (``tracking.mlflow=true``), or None."""
    if not cfg.tracking.mlflow:
        return None
    from hrm_core.data.format import dataset_fingerprint
    from hrm_core.observe.provenance import provenance_tags

    tags = {
        names.TAG_RUN_KIND: names.RUN_KIND_STANDALONE,
        names.TAG_SEED: str(cfg.seed),
        **provenance_tags(dataset_fingerprint(data_path)),
    }
    project = names.safe_name(cfg.project_name or "standalone")
    experiment = cfg.tracking.experiment or names.experiment_name(project)
    return MlflowRun(experiment, cfg.run_name, tags)


def train(cfg, data_path: str, run_dir: str, device, *, mlflow: MlflowRun | None = None, dist_ctx=None,
          stop_at: int | None = None, log=print, overrides: list[str] | None = None) -> Trained:
    """Train a composed, resolved config in ``run_dir``: its ``config.yaml`` (and the user's
    ``overrides`` beside it, ``overrides.yaml``), the callbacks (metrics.jsonl, a progress bar with
    ``progress``, MLflow with ``mlflow``) and the ``Trainer``, to the end of its schedule or to
    ``stop_at``. Ranks other than the main one only train."""
    from hrm_core.config.cli_flags import write_overrides
    from hrm_core.config.compose import to_yaml
    from hrm_core.observe.callbacks import JsonlSink, ProgressBar
    from hrm_core.train.trainer import Trainer

    callbacks, sink = [], None
    if dist_ctx is None or dist_ctx.is_main:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            f.write(to_yaml(cfg))
        if overrides is not None:
            write_overrides(run_dir, overrides)
        callbacks.append(JsonlSink(run_dir))
        if cfg.progress:
            callbacks.append(ProgressBar())
        if mlflow is not None:
            from hrm_core.tracking.sink import MlflowSink

            sink = MlflowSink(mlflow.experiment, mlflow.run_name, tags=mlflow.tags, uri=mlflow.uri,
                              upload_best_checkpoint=mlflow.upload_best_checkpoint)
            callbacks.append(sink)
    trainer = Trainer(cfg, data_path, run_dir, device, callbacks, dist_ctx=dist_ctx, log=log)
    outcome = trainer.fit(stop_at=stop_at)
    return Trained(trainer, outcome, sink.run_id if sink is not None else None)


def main(argv: list[str] | None = None) -> int:
    """``hrm-train``: ``--help`` (groups, options, every key), ``--cfg job`` (print the composed
    config and exit), else train the composed config."""
    from hrm_core.config.cli_flags import parse_cli

    try:
        args = parse_cli(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.help:
        from hrm_core.config.help import help_text

        print(help_text())
        return 0
    argv = args.overrides
    from hrm_core.data.format import DatasetError

    try:
        from hrm_core.config.compose import compose_config, to_yaml

        cfg = compose_config(argv)
        if args.show_cfg:  # before torch is imported: nothing is trained
            print(to_yaml(cfg), end="")
            return 0
        import torch

        from hrm_core.data.resolve import resolve_data_path
        from hrm_core.train.distributed import destroy, init_distributed
        from hrm_core.train.hardware import resolve_device
        from hrm_core.train.runtime import resolve_runtime

        device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cfg = resolve_runtime(cfg, device)
        ctx = init_distributed(device)
        if ctx.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        log = print if ctx.is_main else (lambda *_: None)
        data_path = resolve_data_path(cfg, log=log)
        project, run, run_dir = default_names(cfg, data_path)
        cfg = cfg.model_copy(update={"data_path": data_path, "project_name": project, "run_name": run,
                                     "checkpoint_path": run_dir})
        mlflow = standalone_mlflow_run(cfg, data_path) if ctx.is_main else None
        done = train(cfg, data_path, run_dir, device, mlflow=mlflow, dist_ctx=ctx, log=log, overrides=argv)
        if ctx.is_main:
            final = {k: round(v, 4) for k, v in (done.trainer.last_eval or {}).items() if k.count("/") == 1}
            print(f"{done.outcome}: step {done.trainer.step}, {final}, run dir {run_dir}")
        destroy(ctx)
        return 0
    except (UserError, DatasetError) as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0 only
            print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
