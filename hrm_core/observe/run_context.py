"""The run context: everything needed to rerun a run and to explain why a rerun differs.

Every run records it (``run_context.json``, ``names.RUN_CONTEXT_ARTIFACT``): the standalone
CLI through ``MlflowSink``, sweep trials through the ``TuneSink`` payload the driver logs.
``python -m sweeps reproduce RUN_ID`` reads it back (``sweeps/reproduce/``).

Layout (a JSON object; version ``CONTEXT_VERSION``)::

    config     the resolved config as the trainer runs it (cfg.model_dump(): data_path,
               threads, device, low_precision_gemm, arch.forward_dtype, ... all concrete)
    seeds      seed, data_seed (effective: the data sampler's seed), streams: the seeds of
               the random streams (init and explore via hrm_core.train.seeds.stream_seed; the
               explore stream of rank r is stream_seed(seed, "explore", r))
    git        commit, dirty, diff (``git diff HEAD`` when dirty; also logged as
               ``git_diff.patch``), diff_sha256
    dataset    path, fingerprint, recipe (the config's data.build), build_info
               (the dataset's build_info.json, when present), stage_paths (curriculum)
    hardware   device, torch_threads, forward_dtype, low_precision_gemm, dtype_path,
               compile, world_size, torch, cuda, cpu_capability, cpu_native_bf16,
               cpu_model, cpu_flags, gpu
    software   python, pip_freeze (sorted "name==version", from importlib.metadata)
    host       hostname, platform

Only light modules are imported at module level; torch is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import threading
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

__all__ = ["build_run_context", "dataset_fingerprint", "note_fingerprint", "to_json"]

CONTEXT_VERSION = 1
MAX_EMBEDDED_DIFF = 500_000  # characters of the diff kept inside the JSON (the patch artifact has all)


# --- dataset fingerprint (cached: it hashes every array) --------------------------------------
_fingerprints: dict[tuple, str] = {}
_fp_lock = threading.Lock()


def _stat_key(path: str) -> tuple:
    """Sizes and mtimes of every file of the dataset: a rebuilt or edited dataset changes it."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return (os.path.abspath(path), tuple(entries))


def dataset_fingerprint(path: str) -> str:
    """``hrm_core.data.format.dataset_fingerprint``, cached per process while no file changes."""
    from hrm_core.data.format import dataset_fingerprint as compute

    key = _stat_key(path)
    with _fp_lock:
        if key in _fingerprints:
            return _fingerprints[key]
    fp = compute(path)
    with _fp_lock:
        _fingerprints[key] = fp
    return fp


def note_fingerprint(path: str, fingerprint: str) -> None:
    """Seed the cache with a fingerprint just computed elsewhere (the sweep driver's)."""
    if fingerprint and os.path.isdir(path):
        with _fp_lock:
            _fingerprints[_stat_key(path)] = fingerprint


def read_build_info(path: str) -> dict | None:
    try:
        with open(os.path.join(path, "build_info.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --- software and hardware -------------------------------------------------------------------
@lru_cache(maxsize=1)
def pip_freeze() -> tuple[str, ...]:
    """Installed distributions as sorted ``name==version`` lines (no subprocess).

    Vendored folders put on ``sys.path`` by a runtime (Ray workers add
    ``ray/thirdparty_files``) are left out: they are not what was installed."""
    from importlib import metadata

    paths = [p for p in sys.path if "thirdparty_files" not in p and "_vendor" not in p]
    seen: dict[str, str] = {}
    for dist in metadata.distributions(path=paths):
        name = dist.metadata["Name"] if dist.metadata else None
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return tuple(seen[k] for k in sorted(seen))


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_context(cfg, device, world_size: int = 1) -> dict[str, Any]:
    import torch

    from hrm_core.train.hardware import cpu_flags, cpu_has_native_bf16, describe

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else None
    line = describe(device, cfg.arch.forward_dtype, cfg.low_precision_gemm)
    dtype_path = line.split("forward_dtype=", 1)[1]
    return {
        "device": device.type,
        "torch_threads": torch.get_num_threads(),
        "forward_dtype": cfg.arch.forward_dtype,
        "low_precision_gemm": cfg.low_precision_gemm,
        "dtype_path": dtype_path,
        "compile": bool(cfg.compile),
        "world_size": int(world_size),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(cpu_flags()),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
    }


def git_context() -> dict[str, Any]:
    from hrm_core.observe.provenance import git_commit, git_diff, git_dirty

    dirty = git_dirty()
    diff = git_diff() if dirty else ""
    digest = hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else ""
    out: dict[str, Any] = {"commit": git_commit(), "dirty": dirty, "diff_sha256": digest}
    truncated = diff[:MAX_EMBEDDED_DIFF] + "\n[truncated: see git_diff.patch]\n"
    out["diff"] = diff if len(diff) <= MAX_EMBEDDED_DIFF else truncated
    return out


def seeds_context(cfg, world_size: int = 1) -> dict[str, Any]:
    from hrm_core.train.seeds import stream_seed

    return {
        "seed": cfg.seed,
        "data_seed": cfg.effective_data_seed,
        "streams": {
            "init": stream_seed(cfg.seed, "init"),
            "data": cfg.effective_data_seed,  # the sampler draws from default_rng([data_seed, ...])
            "explore": [stream_seed(cfg.seed, "explore", r) for r in range(max(1, world_size))],
        },
    }


def dataset_context(cfg, data_path: str, stage_paths: list[str] | None = None) -> dict[str, Any]:
    try:
        fingerprint = dataset_fingerprint(data_path)
    except Exception as err:  # noqa: BLE001 - the context records what it can
        fingerprint = f"unavailable: {err}"
    recipe = cfg.data.build.model_dump() if cfg.data.build is not None else None
    out = {
        "name": cfg.data.name,
        "path": os.path.abspath(data_path),
        "fingerprint": fingerprint,
        "recipe": recipe,
        "build_info": read_build_info(data_path),
    }
    if stage_paths and len(stage_paths) > 1:
        out["stage_paths"] = [os.path.abspath(p) for p in stage_paths]
    return out


def build_run_context(
    cfg, data_path: str, device, world_size: int = 1, stage_paths: list[str] | None = None
) -> dict[str, Any]:
    """The JSON-able run context of a run about to train ``cfg`` on ``data_path``."""
    return {
        "version": CONTEXT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "seeds": seeds_context(cfg, world_size),
        "git": git_context(),
        "dataset": dataset_context(cfg, data_path, stage_paths),
        "hardware": hardware_context(cfg, device, world_size),
        "software": {"python": sys.version.split()[0], "pip_freeze": list(pip_freeze())},
        "host": {"hostname": socket.gethostname(), "platform": platform.platform()},
    }


def to_json(context: dict[str, Any]) -> str:
    return json.dumps(context, indent=1, sort_keys=False, default=str)
