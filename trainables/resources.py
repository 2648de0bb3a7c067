"""What a sweep trial reserves from Ray, and which torch device it trains on.

Two shapes of trial (``resources`` in the sweep file; ``cpu``/``gpu`` are per process):

- ``workers: 1`` - the Tune function trains in its own actor, which reserves ``cpu``
  CPUs and ``gpu`` GPUs. A fractional GPU packs trials onto one device (``gpu: 0.5``:
  two trials per GPU); Ray tells each trial which device is its own.
- ``workers: N > 1`` - the Tune function is the driver of a Ray Train ``TorchTrainer``
  (``trainables/ddp.py``) whose N workers each reserve ``cpu`` CPUs and ``gpu`` GPUs.
  In Ray 2.60 (Train V2) the TorchTrainer's controller creates its *own* placement
  group for its workers, and a placement group cannot nest inside the trial's: if the
  trial reserved the workers' bundles as well, they would be counted twice (on a cluster
  that fits one trial exactly, the workers would then wait forever for resources the
  trial holds idle: checked on Ray 2.60, a placement group created from inside a trial's
  bundle is never placed while the trial holds head + N bundles on a head + N cluster).
  So the trial reserves only what its driver uses - memory, no CPU: it just relays
  results - and the workers' gang reservation is Train's (all N or none). With no CPU
  for the driver, N workers of ``cpu: 1`` fit a machine with exactly N cores.
  ``max_concurrent_trials`` below caps the sweep so that no trial starts a driver whose
  workers cannot be placed (Ray's own advice for Train inside Tune).

This module imports neither torch nor Ray at import time: the driver uses it before Ray
starts.
"""

from __future__ import annotations

import math
import os
from typing import Protocol

from hrm_core.errors import UserError

# The Tune function of a multi-worker trial only relays results: it needs memory (a
# Python process with torch and Ray imported), not a core. A bundle must hold something
# for Tune to place the driver; memory takes no CPU from the workers.
DRIVER_MEMORY = 512 * 2**20


class ResourcesLike(Protocol):
    """``sweeps.spec.Resources`` (trainables must not import sweeps)."""

    cpu: float
    gpu: float
    workers: int


def check_resources(res: ResourcesLike) -> None:
    """Reject GPU shares Ray or NCCL cannot honour, in one line, before anything starts."""
    gpu, workers = float(res.gpu), int(res.workers)
    if gpu > 1 and gpu != int(gpu):
        raise UserError(
            f"resources.gpu: {gpu:g} GPUs; above 1 a share must be a whole number of GPUs (Ray's rule)"
        )
    if workers > 1 and gpu not in (0.0, 1.0):
        raise UserError(
            f"resources.gpu: {gpu:g} with workers: {workers}; each DDP rank drives exactly one whole GPU "
            "(NCCL cannot put two ranks on one device, and a rank uses one device): "
            "use gpu: 1, or gpu: 0 for CPU ranks"
        )


def trial_resources(res: ResourcesLike):
    """The argument of ``tune.with_resources`` for one trial.

    ``workers == 1``: ``{"cpu": c, "gpu": g}`` (fractional GPUs allowed). ``workers > 1``:
    a ``PlacementGroupFactory`` with the driver's bundle only; the workers' bundles are
    reserved by the TorchTrainer itself (see the module docstring for why not here).
    """
    check_resources(res)
    if int(res.workers) == 1:
        return {"cpu": float(res.cpu), "gpu": float(res.gpu)}
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([{"memory": DRIVER_MEMORY}])


def worker_scaling(res: ResourcesLike) -> dict:
    """``ray.train.ScalingConfig`` keyword arguments of a multi-worker trial's TorchTrainer."""
    check_resources(res)
    per_worker = {"CPU": float(res.cpu)}
    if res.gpu:
        per_worker["GPU"] = float(res.gpu)
    return {"num_workers": int(res.workers), "use_gpu": bool(res.gpu), "resources_per_worker": per_worker}


def trial_footprint(res: ResourcesLike) -> dict[str, float]:
    """The CPUs and GPUs one trial holds while it runs (a DDP driver holds none)."""
    workers = int(res.workers)
    return {"CPU": workers * float(res.cpu), "GPU": workers * float(res.gpu)}


def check_fits(res: ResourcesLike, cluster: dict[str, float], where: str = "the Ray cluster") -> None:
    """A trial that can never be placed would wait forever: say so in one line instead.

    ``cluster`` is ``ray.cluster_resources()``. Whole-cluster totals, so a multi-node
    gang that fits in total but not on the nodes as they are still waits (Ray's
    placement-group semantics); this catches the common mistakes (too many workers, a
    GPU sweep on a CPU cluster).
    """
    need = trial_footprint(res)
    for key, label in (("CPU", "CPUs"), ("GPU", "GPUs")):
        have = float(cluster.get(key, 0.0))
        if need[key] > have + 1e-9:
            raise UserError(
                f"resources: a trial needs {need[key]:g} {label} "
                f"({int(res.workers)} worker(s) x {getattr(res, key.lower()):g}), "
                f"{where} has {have:g}"
            )


def max_concurrent_trials(res: ResourcesLike, requested: int, cluster: dict[str, float]) -> int:
    """``requested``, capped at the number of trials the cluster can hold at once.

    Only multi-worker trials need it: their Tune trials reserve just the driver, so
    without a cap Tune would start drivers whose workers then queue for resources.
    """
    if int(res.workers) == 1:
        return requested
    need = trial_footprint(res)
    fits = [math.floor(float(cluster.get(k, 0.0)) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(1, min([requested, *fits]))


def pick_device(requested: str, gpu_ids: list, cuda_available: bool) -> tuple[str, str | None]:
    """The trial's torch device type and an optional warning line.

    - ``device=cpu`` is honoured even when the trial holds a GPU share (the share then
      idles, and the warning says so): it is how a sweep is tested on logical GPUs,
      and an explicit key is never overruled.
    - ``auto``/``cuda`` with a GPU share: CUDA, or one clear error if torch sees no CUDA
      device. Never a silent fall-back to the CPU: a GPU sweep that quietly trains on a
      CPU is 100x slower and its timings lie.
    - no GPU share: the CPU (``cuda`` then is an error: the trial would use a GPU that
      Ray did not give it, and share it unknowingly with another trial).
    """
    if requested == "cpu":
        if not gpu_ids:
            return "cpu", None
        return "cpu", f"device=cpu although the trial holds GPU share(s) {list(gpu_ids)}: they stay idle"
    if gpu_ids:
        if not cuda_available:
            raise UserError(
                f"the trial holds GPU(s) {list(gpu_ids)} (resources.gpu > 0) "
                "but torch sees no CUDA device here "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
                "use a CUDA build of torch on a GPU node, or set device=cpu"
            )
        return "cuda", None
    if requested == "cuda":
        raise UserError("device=cuda but the trial holds no GPU (resources.gpu is 0)")
    return "cpu", None
