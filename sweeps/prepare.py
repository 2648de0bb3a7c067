"""Everything about a sweep that can fail on bad input, checked before Ray or MLflow start:
the sweep file and every trial's config (``sweeps/validate.py``), and the datasets the trials
train on, built here once per sweep (not once per trial) and fingerprinted."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeps.spec import SweepSpec, load_spec
from sweeps.validate import validate


@dataclass
class Prepared:
    spec: SweepSpec
    path: str
    planned_steps: int
    fingerprints: dict[str, str]  # dataset path -> content fingerprint, for each dataset the trials train on
    overrides: list[str] = field(default_factory=list)  # the command line, as typed (the parent records it)


def prepare(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None,
            log=print) -> Prepared:
    """The validated sweep, its datasets built, and the most steps any of its trials plans."""
    from hrm_core.data.format import dataset_fingerprint, load_metadata
    from hrm_core.data.resolve import require_val_split, resolve_data_path, stage_data_paths
    from hrm_core.data.sampler import total_train_steps
    from hrm_core.train.compiled import check_compiler

    spec, path = load_spec(name_or_path, scale, overrides)
    configs = validate(spec, path)
    compiled = next((cfg for cfg in configs if cfg.compile), None)
    if compiled is not None:  # the trials' machines are this one's kind (a cluster's nodes share an image)
        check_compiler("cuda" if compiled.device == "cuda" else "cpu")
    planned, fingerprints = 0, {}
    search = spec.kind == "search"
    for cfg in configs if search else ():  # searches select on val/*: a recipe without one fails first
        require_val_split(cfg)
    for cfg in configs:
        data_path = resolve_data_path(cfg, log=log)
        for stage_path in {data_path, *stage_data_paths(cfg, data_path, log=log)}:
            if search:
                require_val_split(cfg, stage_path)
        if data_path not in fingerprints:  # arms may train on different datasets
            fingerprints[data_path] = dataset_fingerprint(data_path)
        meta = load_metadata(data_path, "train")
        if cfg.curriculum.enabled:
            steps = cfg.curriculum.total_steps
        else:
            steps = total_train_steps(meta, cfg.epochs, cfg.global_batch_size)
        planned = max(planned, min(steps, cfg.max_steps) if cfg.max_steps else steps)
    return Prepared(spec, path, planned, fingerprints, list(overrides or []))
