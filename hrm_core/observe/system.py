"""System metrics of a training process, sampled at a low fixed rate: ``system/*``.

``SystemSampler.poll()`` is called at every logged train step; it returns a sample at the
first call and then at most once per ``interval_s`` (``SYSTEM_INTERVAL_S``), else ``{}``:

- ``system/cpu_utilization_percentage``: the machine's CPUs (psutil, since the last sample);
- ``system/process_cpu_percentage``: this process (100 = one core busy; threads add up);
- ``system/process_rss_megabytes``: this process's resident memory;
- ``system/gpu_<i>_utilization_percentage``, ``system/gpu_<i>_memory_usage_megabytes`` and
  ``_percentage``: the run's i-th GPU (of ``gpus``, the ids Ray gave the trial, or the
  device a standalone run trains on), read through NVML (``nvidia-ml-py``, imported only
  when there are GPUs to read; without it, or without a driver, there are no GPU metrics).

A sweep trial's samples travel in its reports (``trainables/tune_sink.py``) to the driver,
which stays the one writer of the store; a standalone run's ``MlflowSink`` logs its own.
They are timings (``names.is_timing``): never compared bitwise, and sampling them touches
no random stream and no tensor, so the training numbers stay the same.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable

from hrm_core import names

__all__ = ["SYSTEM_INTERVAL_S", "SystemSampler", "gpu_ids", "visible_gpus"]

SYSTEM_INTERVAL_S = 10.0  # MLflow's own system-metrics interval
_MB = 1024 * 1024
logger = logging.getLogger(__name__)


def gpu_ids(text: str | Iterable | None) -> list[str]:
    """GPU ids from ``hrm.gpu_ids`` ("0,1"; a DDP trial's ranks are joined by ";") or a list."""
    if not text:
        return []
    items = re.split(r"[;,]", text) if isinstance(text, str) else [str(t) for t in text]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def visible_gpus(device_type: str) -> list[str]:
    """The GPU a standalone run trains on: ``LOCAL_RANK``'s entry of ``CUDA_VISIBLE_DEVICES``
    (NVML numbers devices ignoring it), or device 0; none on a CPU."""
    if device_type != "cuda":
        return []
    rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    visible = gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible:
        return [visible[rank]] if rank < len(visible) else []
    return [str(rank)]


class _Nvml:
    """NVML handles of some GPUs; empty when nvidia-ml-py or the driver is not there."""

    def __init__(self, ids: list[str]):
        self.handles: list = []
        if not ids:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            for gid in ids:
                if gid.isdigit():
                    self.handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(gid)))
                else:  # a UUID (CUDA_VISIBLE_DEVICES=GPU-...)
                    self.handles.append(pynvml.nvmlDeviceGetHandleByUUID(gid))
            self.nvml = pynvml
        except Exception as err:  # noqa: BLE001 - ImportError, or NVMLError without a driver
            logger.info("no GPU system metrics (%s: %s)", type(err).__name__, err)
            self.handles = []

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # noqa: BLE001 - a GPU that stopped answering is skipped
                continue
            out[names.SYSTEM_GPU_UTILIZATION.format(i=i)] = float(util.gpu)
            out[names.SYSTEM_GPU_MEMORY.format(i=i)] = mem.used / _MB
            out[names.SYSTEM_GPU_MEMORY_PERCENT.format(i=i)] = 100.0 * mem.used / max(mem.total, 1)
        return out


class SystemSampler:
    """Samples ``system/*`` now and then; see the module docstring."""

    def __init__(self, gpus: str | Iterable | None = None, interval_s: float = SYSTEM_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        import psutil

        self.interval_s, self.clock = float(interval_s), clock
        self._next = float("-inf")  # the first poll samples
        self._process = psutil.Process()
        self._psutil = psutil
        self._process.cpu_percent(None)  # CPU use is measured between calls: start the count
        psutil.cpu_percent(None)
        self._gpus = _Nvml(gpu_ids(gpus))

    def poll(self) -> dict[str, float]:
        """A sample when one is due (the first call, then every ``interval_s``), else ``{}``."""
        now = self.clock()
        if now < self._next:
            return {}
        self._next = now + self.interval_s
        return self.sample()

    def sample(self) -> dict[str, float]:
        """The metrics now (CPU use since the previous sample)."""
        out = {
            names.SYSTEM_CPU: float(self._psutil.cpu_percent(None)),
            names.SYSTEM_PROCESS_CPU: float(self._process.cpu_percent(None)),
            names.SYSTEM_PROCESS_RSS: self._process.memory_info().rss / _MB,
        }
        out.update(self._gpus.sample())
        return out
