"""A trial with several workers: Ray Train's ``TorchTrainer`` inside the Tune function.

This is the pattern Ray 2.60 supports (Train V2): the Tune function is a driver that
launches a TorchTrainer; Ray Train starts N worker actors and the torch process group
(NCCL on GPUs, gloo on CPUs); each worker builds the same ``Trainer`` as a 1-process
trial, with a ``DistContext`` taken from that process group, so gradients are all-reduced
exactly as under torchrun.

How results reach Tune (and MLflow) unchanged:

- At every checkpoint, *every* rank calls ``ray.train.report`` (in V2 it is collective:
  the ranks agree on one checkpoint directory and each uploads its own file into it:
  ``state.pt`` from rank 0, ``state.rank<r>.pt`` from rank r - the files
  ``Trainer._restore`` reads back). Rank 0's report carries the ``TuneSink`` payload
  (metric history, run info); the others send ``{}``.
- A Train callback in the controller puts (payload, checkpoint) on a Ray queue; the Tune
  function's own thread takes them in order and calls ``tune.report(payload,
  checkpoint)``. The driver's MLflow logger thus sees exactly what a 1-process trial
  sends, and ``tune.get_checkpoint()`` of a retried trial holds every rank's file: the
  new attempt's workers restore from it (each rank its own carry and random stream).
- One layer of retries: Train's own ``max_failures`` is 0, a failed worker fails the
  trial, and Tune retries it from its last checkpoint. Every attempt is a fresh Train
  run (unique name), so Train never resumes from its own storage behind Tune's back;
  Train's copy of each checkpoint is deleted once Tune has persisted it.
- Killing the trial (Tune stopping it, or its process dying) takes the controller and
  the workers with it: Ray actors share the fate of the process that created them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid

from hrm_core import names
from hrm_core.train import checkpoint as ckpt
from hrm_core.train.trainer import Trainer
from trainables.trial import (
    SCORE_KEY,
    SWEEP_KEY,
    arm_faults,
    in_run_dir,
    remove_scratch,
    scratch_run_dir,
    trial_setup,
)
from trainables.tune_sink import TuneSink

logger = logging.getLogger(__name__)


class RelaySink(TuneSink):
    """``TuneSink`` for rank 0 of a DDP trial: builds the same payloads but holds them
    until the rank's collective ``ray.train.report`` (see ``DDPTrainer``) sends them."""

    def __init__(self, extra_tags: dict[str, str], score_metric: str | None = None):
        super().__init__(extra_tags, score_metric=score_metric)
        self.pending: dict | None = None
        self.final: dict | None = None

    def on_checkpoint(self, step, path, is_best):
        self.pending = self._payload(step)
        self.pending_eval = None

    def on_run_end(self, step, outcome, error=None):
        if outcome in (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED):
            self.final = self._payload(step, outcome)

    def take(self) -> dict:
        out, self.pending = self.pending or {}, None
        return out


class DDPTrainer(Trainer):
    """The ``Trainer`` of one rank: every checkpoint also becomes a collective Train report."""

    def __init__(self, *args, sink: RelaySink | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sink = sink

    def save_checkpoint(self, eval_metrics=None):
        # Every rank checkpoints at the same steps (checkpoint_every_eval and the base
        # metrics are all-reduced), so every rank reaches this report.
        path = super().save_checkpoint(eval_metrics)
        own = ckpt.checkpoint_file(self.run_dir, self.step)
        name = "state.pt"
        if not self.ctx.is_main:
            own, name = own.replace(".pt", f".rank{self.ctx.rank}.pt"), f"state.rank{self.ctx.rank}.pt"
        metrics = self.sink.take() if self.sink is not None else {}
        report_file(metrics, own, name, self.run_dir, f"step_{self.step:08d}")
        return path


def report_file(metrics: dict, path: str, name: str, scratch: str, dir_name: str) -> None:
    """``ray.train.report`` with a checkpoint made of one file (linked, not copied)."""
    import ray.train

    tmp = tempfile.mkdtemp(prefix="hrm-report-", dir=scratch)
    try:
        try:
            os.link(path, os.path.join(tmp, name))
        except OSError:
            shutil.copy2(path, os.path.join(tmp, name))
        checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=dir_name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _worker_loop(loop_config: dict) -> None:
    """One Ray Train worker (one DDP rank) of the trial."""
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    from hrm_core.train.distributed import DistContext

    config = loop_config["config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if not dist.is_initialized() or dist.get_world_size() != world:
        raise RuntimeError("Ray Train did not set up the torch process group")
    cfg, device, tags, trial = trial_setup(config, ray.get_gpu_ids(), cpus=loop_config["cpus"])
    if device.type == "cuda":
        import ray.train.torch

        device = ray.train.torch.get_device()  # this rank's own GPU
        torch.cuda.set_device(device)
    dist_ctx = DistContext(rank, world, context.get_local_rank())
    gathered: list = [None] * world
    dist.all_gather_object(gathered, tags[names.TAG_GPU_IDS])
    gpu_ids = ";".join(gathered) if any(gathered) else ""
    tags = {**tags, names.TAG_GPU_IDS: gpu_ids, names.TAG_WORKERS: str(world)}

    run_dir = loop_config["run_dir"]  # local to each node; ranks write distinct files
    # the trial's last Tune checkpoint holds every rank's own file
    cfg = in_run_dir(cfg, run_dir, loop_config.get("checkpoint"), f"restore.rank{rank}")
    sink = RelaySink(tags, config[SWEEP_KEY].get(SCORE_KEY)) if rank == 0 else None
    trainer = DDPTrainer(cfg, cfg.data_path, run_dir, device, [sink] if sink else [], dist_ctx=dist_ctx,
                         log=lambda *_: None, sink=sink)
    arm_faults(trainer, config, trial, write_pid=rank == 0)  # tests kill rank 0's worker
    trainer.fit()
    # The outcome (completed or diverged) is the same on every rank (an error raises):
    # every rank reaches this last, collective report; rank 0's carries the outcome.
    ray.train.report((sink.final or {}) if sink is not None else {})


def _relay_callback(queue):
    """A Train callback (runs in the controller) that hands rank 0's reports to the driver."""
    from ray.train import UserCallback

    class Relay(UserCallback):
        def __init__(self, q):
            self.queue = q

        def after_report(self, run_context, metrics, checkpoint):
            payload = next((m for m in metrics if m), {})  # rank 0's; the others send {}
            if payload or checkpoint is not None:
                self.queue.put((payload, checkpoint))

    return Relay(queue)


def train_hrm_ddp(config: dict) -> None:
    """The Tune function of a multi-worker trial: drive a TorchTrainer, relay its reports."""
    import ray.train
    from ray import tune
    from ray.train._internal.session import get_session
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue

    from trainables.resources import worker_scaling

    ctx = config[SWEEP_KEY]
    res = _Res(ctx.get("cpus_per_trial", 1), ctx.get("gpus_per_trial", 0), ctx["workers_per_trial"])
    scaling = worker_scaling(res)
    storage = get_session().storage  # the trial's storage (local dir, NFS or s3://)
    context = tune.get_context()  # ranks on this node write under the same local scratch folder
    run_dir = scratch_run_dir(context.get_experiment_name(), context.get_trial_id())
    queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config,
            "checkpoint": tune.get_checkpoint(),
            "run_dir": run_dir,
            "cpus": max(1, int(res.cpu)),
        },
        scaling_config=ray.train.ScalingConfig(**scaling),
        torch_config=TorchConfig(backend="nccl" if scaling["use_gpu"] else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"ddp-{uuid.uuid4().hex[:12]}",  # a fresh Train run per attempt: Tune owns restores
            storage_path=f"{storage.trial_fs_path}/ddp",
            storage_filesystem=storage.storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=[_relay_callback(queue)],
        ),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - re-raised in the Tune thread below
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="hrm-ddp-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not queue.empty():
            try:
                payload, checkpoint = queue.get(timeout=0.5)
            except Empty:
                continue
            _forward(payload, checkpoint)
        thread.join()
    finally:
        queue.shutdown()
        remove_scratch(run_dir)  # this node's ranks' scratch (Tune's checkpoints stay)
    if "error" in outcome:
        raise outcome["error"]


def _forward(payload: dict, checkpoint) -> None:
    """``tune.report`` one relayed result; drop Train's copy once Tune has its own."""
    from ray import tune

    if checkpoint is None:
        tune.report(payload)
        return
    # Tune persists its own copy before report returns.
    tune.report(payload, checkpoint=tune.Checkpoint(path=checkpoint.path, filesystem=checkpoint.filesystem))
    try:
        checkpoint.filesystem.delete_dir(checkpoint.path)
    except OSError as err:  # only disk space is at stake
        logger.warning("could not delete Train's copy of %s: %s", checkpoint.path, err)


class _Res:
    """The trial's resources as the sweep context carries them."""

    def __init__(self, cpu: float, gpu: float, workers: int):
        self.cpu, self.gpu, self.workers = float(cpu), float(gpu), int(workers)
