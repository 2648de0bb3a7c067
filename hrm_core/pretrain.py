"""Train one HRM: ``python -m hrm_core.pretrain [hydra overrides]``.

Examples::

    python -m hrm_core.pretrain arch=hrm_tiny data=sudoku4 epochs=200 eval_interval=20
    torchrun --nproc_per_node=2 -m hrm_core.pretrain arch=hrm_tiny data=sudoku4 global_batch_size=64
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from hrm_core import names
from hrm_core.errors import UserError


def resolve_runtime(cfg, device):
    """Fill in what ``auto`` and null mean on this machine, so the saved config is concrete."""
    from hrm_core.train.hardware import resolve_forward_dtype, resolve_low_precision_gemm

    updates = {"device": device.type, "low_precision_gemm": resolve_low_precision_gemm(cfg.low_precision_gemm, device)}
    arch = cfg.arch.model_copy(update={"forward_dtype": resolve_forward_dtype(cfg.arch.forward_dtype, device)})
    updates["arch"] = arch
    return cfg.model_copy(update=updates)


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


def build_callbacks(cfg, run_dir: str, is_main: bool, data_path: str):
    from hrm_core.observe.callbacks import JsonlSink, ProgressBar

    if not is_main:
        return []
    callbacks = [JsonlSink(run_dir)]
    if cfg.progress:
        callbacks.append(ProgressBar())
    if cfg.tracking.mlflow:
        from hrm_core.data.format import dataset_fingerprint
        from hrm_core.observe.provenance import git_commit, git_dirty
        from hrm_core.tracking.sink import MlflowSink

        tags = {
            names.TAG_RUN_KIND: "standalone",
            names.TAG_SEED: str(cfg.seed),
            names.TAG_GIT_COMMIT: git_commit(),
            names.TAG_GIT_DIRTY: str(git_dirty()).lower(),
            names.TAG_DATASET_FINGERPRINT: dataset_fingerprint(data_path),
        }
        experiment = cfg.tracking.experiment or names.experiment_name(names.safe_name(cfg.project_name or "standalone"))
        callbacks.append(MlflowSink(experiment, cfg.run_name, tags=tags))
    return callbacks


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Keys: see configs/pretrain.yaml and hrm_core/config/schema.py; groups: arch=, data=, loss=")
        return 0
    try:
        import torch

        from hrm_core.config.compose import compose_config, to_yaml
        from hrm_core.data.format import DatasetError
        from hrm_core.data.resolve import resolve_data_path
        from hrm_core.train.distributed import destroy, init_distributed
        from hrm_core.train.hardware import resolve_device
        from hrm_core.train.trainer import Trainer

        cfg = compose_config(argv)
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
        cfg = cfg.model_copy(update={"data_path": data_path, "project_name": project, "run_name": run, "checkpoint_path": run_dir})
        if ctx.is_main:
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, "config.yaml"), "w") as f:
                f.write(to_yaml(cfg))
        trainer = Trainer(cfg, data_path, run_dir, device, build_callbacks(cfg, run_dir, ctx.is_main, data_path), ctx, log=log)
        outcome = trainer.fit()
        if ctx.is_main:
            final = {k: round(v, 4) for k, v in (trainer.last_eval or {}).items() if k.count("/") == 1}
            print(f"{outcome}: step {trainer.step}, {final}, run dir {run_dir}")
        destroy(ctx)
        return 0
    except (UserError, DatasetError) as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0 only
            print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
