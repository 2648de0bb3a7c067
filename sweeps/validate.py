"""Deep validation of a sweep: metrics, search space, every arm's training config, resources.

Runs before any compute: it composes each trial's config (so unknown keys and bad values
fail here, naming the key), and checks resources against this machine, or against the
cluster at RAY_ADDRESS, before any MLflow run exists.
"""

from __future__ import annotations

import os
import sys

from hrm_core import names
from hrm_core.config.compose import compose_config, group_options
from hrm_core.config.schema import VALID_KEYS, TrainConfig
from hrm_core.errors import UserError, unknown_key_message
from sweeps.spec import CONFIG_GROUPS, SweepSpec, check_metric


def space_override(key: str, value) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    return f"{key}={value}"


def representative_points(spec: SweepSpec) -> list[dict]:
    """Points that exercise every categorical value and both ends of each range."""
    def low(p):
        return p.values[0] if p.values else (int(p.low) if p.type == "int" else p.low)

    lows = {k: low(p) for k, p in spec.space.items()}
    points = [lows]
    for k, p in spec.space.items():
        if p.values:
            points += [{**lows, k: v} for v in p.values[1:]]
        else:
            points.append({**lows, k: int(p.high) if p.type == "int" else p.high})
    return points


def trial_overrides(spec: SweepSpec) -> list[tuple[str, list[str]]]:
    """(label, overrides) of every configuration the sweep can run (one seed)."""
    seed = f"seed={spec.seeds[0]}"
    if spec.kind == "ablation":
        return [(f"arm '{arm}'", [*spec.base, *ov, seed]) for arm, ov in spec.arms.items()]
    return [
        (f"space point {pt}", [*spec.base, *(space_override(k, v) for k, v in pt.items()), seed])
        for pt in representative_points(spec)
    ]


def check_space(spec: SweepSpec, path: str) -> None:
    for key, param in spec.space.items():
        if key in CONFIG_GROUPS:
            if param.type not in ("choice", "grid"):
                raise UserError(f"{path}: space.{key}: a config group takes choice or grid values")
            options = group_options(key)
            for v in param.values:
                if str(v) not in options:
                    raise UserError(f"{path}: space.{key}: unknown {key} config '{v}'; "
                                    f"choose from {', '.join(options)}")
        elif key not in VALID_KEYS:
            raise UserError(f"{path}: space: " + unknown_key_message(key, VALID_KEYS, where="config"))


def compose_trials(spec: SweepSpec, path: str) -> list[TrainConfig]:
    configs = []
    for label, overrides in trial_overrides(spec):
        try:
            configs.append(compose_config(overrides))
        except UserError as err:
            raise UserError(f"{path}: {label}: {err}") from None
    return configs


def check_resources(spec: SweepSpec, path: str) -> str:
    """Per-trial resources against this machine (no Ray started), or the cluster's."""
    need_cpu = spec.resources.cpu * spec.resources.workers
    need_gpu = spec.resources.gpu * spec.resources.workers
    address = os.environ.get("RAY_ADDRESS")
    ray_mod = sys.modules.get("ray")
    if ray_mod is not None and ray_mod.is_initialized():  # a Ray this process already runs
        have = ray_mod.cluster_resources()
        have_cpu, have_gpu, where = have.get("CPU", 0), have.get("GPU", 0), "the running Ray instance"
    elif address:
        import ray

        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        try:
            have = ray.cluster_resources()
        finally:
            ray.shutdown()
        have_cpu, have_gpu, where = have.get("CPU", 0), have.get("GPU", 0), f"the cluster at {address}"
    else:
        have_cpu = os.cpu_count() or 1
        try:
            import torch

            have_gpu = torch.cuda.device_count()
        except ImportError:
            have_gpu = 0
        where = "this machine"
    if need_cpu > have_cpu:
        raise UserError(f"{path}: resources: a trial needs {need_cpu:g} CPUs, {where} has {have_cpu:g}")
    if need_gpu > have_gpu:
        raise UserError(f"{path}: resources: a trial needs {need_gpu:g} GPUs, {where} has {have_gpu:g}")
    return where


def validate(spec: SweepSpec, path: str, check_cluster: bool = True) -> list[TrainConfig]:
    """All checks; returns the composed configs of the sweep's configurations."""
    for metric in spec.objective.metrics:
        check_metric(metric, f"{path}: objective")
        if spec.kind == "search" and names.on_split(metric, names.VAL) != metric:  # selecting on test
            raise UserError(f"{path}: objective: a search selects on the validation split: use "
                            f"{names.on_split(metric, names.VAL)}, not {metric} (the test split is read "
                            "only by the final evaluation and the confirmation)")
    sched = spec.scheduler_or_default
    if sched.rung_metric:
        check_metric(sched.rung_metric, f"{path}: scheduler.rung_metric")
    check_space(spec, path)
    configs = compose_trials(spec, path)
    if spec.kind == "search":  # the confirmation stage's base configuration composes too
        from sweeps.confirm_plan import base_overrides

        try:
            base_overrides(spec)
        except UserError as err:
            raise UserError(f"{path}: the confirmation stage's base configuration: {err}") from None
    for cfg in configs:
        if spec.resources.gpu == 0 and cfg.device == "cuda":
            raise UserError(f"{path}: the training config asks for device=cuda but resources.gpu is 0")
    from trainables.resources import check_resources as check_shares

    try:
        check_shares(spec.resources)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    if check_cluster:
        check_resources(spec, path)
    return configs
