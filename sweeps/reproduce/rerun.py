"""Step 3 of reproduce: train the plan again, standalone (no Ray), through the CLI's entry
point ``hrm_core.pretrain.train``, to the original's last step, into a new MLflow run in
the original's experiment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hrm_core import names
from hrm_core.errors import UserError
from hrm_core.pretrain import MlflowRun, Trained, train
from sweeps.reproduce.load import Original
from sweeps.reproduce.plan import Plan

MARKER = ".hrm_reproduce"  # marks an output folder reproduce may empty


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op torch threads (the original's), then restore the count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def clear_out_dir(run_dir: str) -> None:
    """An empty ``run_dir`` marked as reproduce's; a folder reproduce did not make is refused."""
    if os.path.exists(run_dir) and os.listdir(run_dir) and not os.path.exists(os.path.join(run_dir, MARKER)):
        raise UserError(f"--out {run_dir} exists and is not a reproduce folder; choose another --out")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    open(os.path.join(run_dir, MARKER), "w").close()


def rerun(original: Original, plan: Plan, now: dict, tracking_uri: str,
          log: Callable[[str], None]) -> Trained:
    """Train ``plan`` (whose context is ``now``) to the original's last step."""
    from hrm_core.observe.provenance import provenance_tags

    clear_out_dir(plan.run_dir)
    tags = {
        names.TAG_RUN_KIND: names.RUN_KIND_REPRODUCE,
        names.TAG_REPRODUCES: original.run_id,
        names.TAG_SEED: str(plan.cfg.seed),
        **provenance_tags(str((now.get("dataset") or {}).get("fingerprint", ""))),
    }
    for key in (names.TAG_ARM, names.TAG_SWEEP, names.TAG_TRIAL_ID):
        if original.tags.get(key):
            tags[key] = original.tags[key]
    mlflow = MlflowRun(original.experiment, f"reproduce/{original.run.info.run_name}", tags, uri=tracking_uri,
                       upload_best_checkpoint=False)
    log(f"rerunning on {plan.device.type} with {plan.threads} torch thread(s) to step {original.last_step}; "
        f"checkpoints in {plan.run_dir}")
    return train(plan.cfg, plan.data_path, plan.run_dir, plan.device, mlflow=mlflow,
                 stop_at=original.last_step, log=log)
