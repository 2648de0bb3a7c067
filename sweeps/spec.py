"""Sweep files (``configs/sweep/*.yaml``): schema, scale presets and validation.

A sweep resolves in layers, each over the one before: the scale preset
(``configs/scale/<scale>.yaml``) < the file < its ``scales.<scale>`` block < the command line
(``sweeps/overrides.py``). Everything is checked before anything starts: no Ray, no MLflow
run, no file written. Each fault is one line that names the file and the key.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hrm_core import names
from hrm_core.errors import UserError, unknown_key_message
from hrm_core.paths import project_root
from sweeps.overrides import CommandLine, check_not_shadowed, parse_command_line
from sweeps.yaml_io import SweepFileError, load_mapping

SWEEP_DIR = os.path.join(project_root(), "configs", "sweep")
SCALE_DIR = os.path.join(project_root(), "configs", "scale")
CONFIG_GROUPS = ("arch", "data", "loss", "curriculum")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Strict):
    """One search dimension. ``choice``/``grid`` take ``values``; the others ``low``/``high``."""

    type: Literal["choice", "grid", "uniform", "loguniform", "int"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"'{self.type}' needs a non-empty 'values' list")
            if self.low is not None or self.high is not None:
                raise ValueError(f"'{self.type}' takes 'values', not low/high")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"'{self.type}' needs 'low' and 'high'")
            if self.values is not None:
                raise ValueError(f"'{self.type}' takes low/high, not 'values'")
            if not self.low < self.high:
                raise ValueError(f"empty or inverted range: low ({self.low}) must be < high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0 (got {self.low})")
            if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("'int' needs whole-number low and high")
        return self


class Objective(_Strict):
    metric: str | list[str] = names.DEFAULT_OBJECTIVE
    mode: Literal["max", "min"] | list[Literal["max", "min"]] = "max"

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @model_validator(mode="after")
    def _same_length(self) -> Objective:
        if len(self.metrics) != len(self.modes):
            raise ValueError(f"objective has {len(self.metrics)} metrics but {len(self.modes)} modes")
        return self


class Scheduler(_Strict):
    """ASHA on the global optimizer step (``time_attr: step``), or no early stopping."""

    type: Literal["asha", "none"] = "asha"
    time_attr: Literal["step"] = "step"
    grace_period: int = Field(50, gt=0)
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, gt=0)  # default: the trial's planned steps
    rung_metric: str | None = None  # multi-objective search: the one metric ASHA compares

    @model_validator(mode="after")
    def _check(self) -> Scheduler:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class Sampler(_Strict):
    type: Literal["tpe", "random"] = "tpe"
    seed: int = 0


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    # > 1: Ray Train's TorchTrainer (DDP) inside the trial; cpu/gpu are then per worker
    workers: int = Field(1, ge=1)


class Comparison(_Strict):
    """One declared comparison of an ablation: ``arm`` against ``reference`` (both arms)."""

    arm: str
    reference: str
    label: str | None = None  # the question it answers, e.g. "does the loss help"


class Confirm(_Strict):
    """A search's confirmation stage: its ``top_k`` configurations (two objectives: the
    Pareto set, up to ``top_k``) and the base configuration, re-run with fresh seeds."""

    top_k: int = Field(3, ge=1)
    seeds: list[int] | None = None  # default: min_seeds seeds after the search's largest


class ScaleOverrides(_Strict):
    """What a scale preset (smoke | cpu | gpu) changes in a sweep."""

    base: list[str] = Field(default_factory=list)  # extra training overrides
    num_samples: int | None = Field(None, gt=0)
    seeds: list[int] | None = None
    max_concurrent: int | None = Field(None, gt=0)
    resources: Resources | None = None
    time_budget_s: float | None = Field(None, gt=0)
    scheduler: Scheduler | None = None
    confirm: Confirm | None = None


# Keys issue 15 added: an older sweep_resolved.json lacks them, and compares as these defaults
# (``comparisons``: every arm against the control, filled in by ``default_comparisons``).
VERDICT_DEFAULTS: dict[str, Any] = {"failure_value": None, "min_seeds": 3, "max_seeds": 10,
                                    "equivalence_margin": None, "confirm": None}


def default_comparisons(arms, control: str | None) -> list[dict]:
    """Every arm against the control: the family when a sweep declares none."""
    return [{"arm": arm, "reference": control, "label": None} for arm in arms if arm != control]


KEEP_CHOICES = ("best", "last", "all")


def check_keep_checkpoints(value):
    """``keep_checkpoints``: best | last | all, or a whole number of checkpoints >= 1."""
    if value in KEEP_CHOICES or (type(value) is int and value >= 1):
        return value
    raise ValueError(f"give best, last, all or a number of checkpoints >= 1 (got {value!r})")


class SweepSpec(_Strict):
    name: str
    description: str = ""
    kind: Literal["search", "ablation"]
    base: list[str] = Field(default_factory=list)  # training overrides shared by every trial
    objective: Objective = Field(default_factory=Objective)
    space: dict[str, Param] = Field(default_factory=dict)  # search
    arms: dict[str, list[str]] = Field(default_factory=dict)  # ablation: name -> overrides
    control: str | None = None  # ablation: the arm every other is compared with
    seeds: list[int] = Field(default_factory=lambda: [0])
    num_samples: int = Field(8, gt=0)  # search
    max_concurrent: int = Field(2, gt=0)
    scheduler: Scheduler | None = None
    sampler: Sampler = Field(default_factory=Sampler)
    resources: Resources = Field(default_factory=Resources)
    time_budget_s: float | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0)
    storage_path: str | None = None  # Tune results (shared FS or s3://); default ray_results/
    # what a trial keeps of its Tune checkpoints: best (the last, plus the best by the objective when
    # they differ), last, all, or N (the last N); `python -m sweeps prune` frees more afterwards
    keep_checkpoints: str | int = "best"
    _keep = field_validator("keep_checkpoints", mode="before")(lambda v: check_keep_checkpoints(v))
    scale: Literal["smoke", "cpu", "gpu"] = "cpu"
    scales: dict[Literal["smoke", "cpu", "gpu"], ScaleOverrides] = Field(default_factory=dict)
    # verdicts (analysis/): the declared family (default: every arm against control), the
    # value a diverged run takes, the seeds a verdict needs and may use, equivalence margin
    comparisons: list[Comparison] | None = None
    failure_value: float | None = None
    min_seeds: int = Field(3, ge=2)
    max_seeds: int = Field(10, ge=2)
    equivalence_margin: float | None = Field(None, gt=0)
    confirm: Confirm | None = None  # search: the confirmation stage (default: Confirm())

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: duplicates in {self.seeds}")
        if self.kind == "ablation":
            if not self.arms:
                raise ValueError("an ablation needs 'arms' (name: [overrides])")
            if self.space:
                raise ValueError("an ablation takes 'arms', not a search 'space'")
            if self.control is None or self.control not in self.arms:
                raise ValueError(f"control: name one of the arms {sorted(self.arms)} (got {self.control!r})")
            if self.scheduler is not None and self.scheduler.type != "none":
                raise ValueError("scheduler: an ablation runs every arm to its full budget; "
                                 "use scheduler: {type: none}")
        else:
            if "metric" not in self.objective.model_fields_set:  # a search selects on val/*, never on test
                self.objective = Objective(metric=names.VAL_EXACT_ACCURACY, mode=self.objective.mode)
            if not self.space:
                raise ValueError("a search needs a 'space'")
            if self.arms:
                raise ValueError("a search takes a 'space', not 'arms'")
            sched = self.scheduler
            if self.objective.multi and sched is not None and sched.type == "asha" and not sched.rung_metric:
                raise ValueError("scheduler: ASHA with several objectives needs rung_metric (one of them), "
                                 "or type: none")
            if sched is not None and sched.rung_metric and sched.rung_metric not in self.objective.metrics:
                raise ValueError(f"scheduler.rung_metric must be one of the objective metrics "
                                 f"{self.objective.metrics}")
        self._check_verdict_keys()
        return self

    def _check_verdict_keys(self) -> None:
        if self.max_seeds < self.min_seeds:
            raise ValueError(f"max_seeds ({self.max_seeds}) must be >= min_seeds ({self.min_seeds})")
        if self.objective.modes[0] == "min" and self.failure_value is None:
            raise ValueError(f"failure_value: required for a 'min' objective ({self.objective.metrics[0]}): "
                             "the value a diverged run counts as (e.g. the loss at initialisation)")
        if self.kind == "search":
            if self.comparisons is not None:
                raise ValueError("comparisons: only an ablation declares comparisons (a search's "
                                 "confirmation stage compares each configuration with the base)")
            if self.confirm is not None and self.confirm.seeds is not None:
                self._check_confirm_seeds(self.confirm.seeds)
            return
        if self.confirm is not None:
            raise ValueError("confirm: only a search has a confirmation stage")
        for i, c in enumerate(self.comparisons or []):
            for key in ("arm", "reference"):
                if getattr(c, key) not in self.arms:
                    raise ValueError(f"comparisons.{i}.{key}: no arm '{getattr(c, key)}' "
                                     f"(the arms are {sorted(self.arms)})")
            if c.arm == c.reference:
                raise ValueError(f"comparisons.{i}: arm '{c.arm}' is compared with itself")
        pairs = [(c.arm, c.reference) for c in self.comparisons or []]
        if len(set(pairs)) != len(pairs):
            raise ValueError("comparisons: a pair (arm, reference) is declared twice")

    def _check_confirm_seeds(self, seeds: list[int]) -> None:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"confirm.seeds: duplicates in {seeds}")
        if set(seeds) & set(self.seeds):
            raise ValueError(f"confirm.seeds: {sorted(set(seeds) & set(self.seeds))} the search uses "
                             "already; confirmation needs fresh seeds")
        if len(seeds) < self.min_seeds:
            raise ValueError(f"confirm.seeds: {len(seeds)} seeds, fewer than min_seeds ({self.min_seeds})")

    @property
    def declared_comparisons(self) -> list[dict]:
        """The ablation's comparison family: as declared, or every arm against the control."""
        if self.comparisons is not None:
            return [c.model_dump() for c in self.comparisons]
        return default_comparisons(self.arms, self.control)

    @property
    def confirm_or_default(self) -> Confirm:
        return self.confirm if self.confirm is not None else Confirm()

    def resolved(self) -> dict:
        """What sweep_resolved.json records: every key, with the comparison family spelled out."""
        out = self.model_dump()
        if self.kind == "ablation":
            out["comparisons"] = self.declared_comparisons
        return out

    @property
    def scheduler_or_default(self) -> Scheduler:
        if self.scheduler is not None:
            return self.scheduler
        return Scheduler(type="none") if self.kind == "ablation" or self.objective.multi else Scheduler()


# --- metric names the trainer reports -------------------------------------------------------------
KNOWN_PREFIXES = (names.GATE_PREFIX, names.FEUDAL_PREFIX)
_SPLITS = (names.TRAIN, names.EVAL, names.VAL)  # val/*: the validation split (searches select on it)
KNOWN_METRICS = {names.metric(s, m) for s in _SPLITS for m in names.SPLIT_METRICS} | {
    names.TRAIN_LR, names.CURRICULUM_STAGE,
}


def check_metric(metric: str, where: str) -> None:
    if metric in KNOWN_METRICS or metric.startswith(KNOWN_PREFIXES) or metric.startswith("eval/arc_"):
        return
    message = unknown_key_message(metric, sorted(KNOWN_METRICS), where=f"metric in {where}")
    raise UserError(message.replace("key ", "", 1))


# --- loading ------------------------------------------------------------------------------------
def resolve_path(name_or_path: str) -> str:
    if os.path.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return os.path.abspath(name_or_path)
    path = os.path.join(SWEEP_DIR, f"{name_or_path}.yaml")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(SWEEP_DIR) if f.endswith(".yaml"))
        raise UserError(f"unknown sweep '{name_or_path}'; choose one of: {', '.join(known)} (or give a path)")
    return path


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _format(err: ValidationError, path: str, cmd: CommandLine | None = None) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    typed = cmd.source_of(str(e["loc"][0])) if cmd is not None and e["loc"] else None
    where = f"{path}: override '{typed}'" if typed else path
    if e["type"] == "extra_forbidden":
        fields = _all_keys(SweepSpec)
        return f"{where}: " + unknown_key_message(key, fields, where="sweep")
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where}: {key + ': ' if key else ''}{msg}"


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        ann = field.annotation
        for t in (ann, *getattr(ann, "__args__", ())):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out.extend(_all_keys(t, f"{prefix}{name}."))
    return out


def _scale_layer(layer: dict, path: str, scale: str) -> dict:
    try:
        ScaleOverrides.model_validate(layer)
    except ValidationError as err:
        raise SweepFileError(_format(err, f"{path} (scale {scale})")) from None
    return layer


MERGED_KEYS = ("resources", "scheduler")  # the mappings a scale layer may set part of


def merge_layer(low: dict, high: dict) -> dict:
    """``high`` over ``low``: later wins per key, mappings merge key by key, and ``base``
    lists concatenate (Hydra applies them in order, so the later override of a key wins)."""
    out = dict(low)
    for key, value in high.items():
        if key == "base":
            out["base"] = [*(out.get("base") or []), *(value or [])]
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key in MERGED_KEYS:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def apply_scale(raw: dict, scale: str | None, path: str) -> dict:
    """The sweep at ``scale``: configs/scale/<scale>.yaml < the file < the file's scales.<scale>."""
    scale = scale or raw.get("scale", "cpu")
    if not isinstance(scale, str):  # the schema names the fault
        return raw
    layers = []
    preset = os.path.join(SCALE_DIR, f"{scale}.yaml")
    if os.path.exists(preset):
        layers.append(_scale_layer(load_mapping(preset), preset, scale))
    layers.append(raw)
    own = (raw.get("scales") or {}).get(scale) if isinstance(raw.get("scales"), dict) else None
    if own:
        layers.append(_scale_layer(own, path, scale))
    merged: dict = {}
    for layer in layers:
        merged = merge_layer(merged, layer)
    merged["scale"] = scale
    return merged


def without_dropped_arms(before: dict, after: dict) -> dict:
    """An arm the command line dropped (``~arms.<name>``) takes its declared comparisons along
    (all of them gone: the default family, every arm against the control)."""
    arms_before, arms_after = before.get("arms"), after.get("arms")
    comps = after.get("comparisons")
    if not (isinstance(arms_before, dict) and isinstance(arms_after, dict) and isinstance(comps, list)):
        return after
    dropped = set(arms_before) - set(arms_after)
    kept = [c for c in comps if not (isinstance(c, dict) and {c.get("arm"), c.get("reference")} & dropped)]
    if not dropped:
        return after
    return {**after, "comparisons": kept or None}  # none left: every arm against the control


def load_spec(name_or_path: str, scale: str | None = None,
              overrides: list[str] | None = None) -> tuple[SweepSpec, str]:
    """Parse and validate a sweep file (schema only). -> (spec, absolute path).

    Precedence, lowest first: the scale preset, the file, its ``scales.<scale>`` block, then
    ``overrides`` (the command line; ``sweeps/overrides.py`` says how they are routed)."""
    path = resolve_path(name_or_path)
    raw = load_mapping(path)
    try:
        cmd = parse_command_line(overrides or [], SweepSpec.model_fields)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    if scale is None and isinstance(raw.get("scale"), str):
        scale = raw["scale"]
    try:
        scaled = apply_scale(raw, scale, path)
        raw = without_dropped_arms(scaled, cmd.apply(scaled))
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepFileError(_format(err, path, cmd)) from None
    check_not_shadowed(cmd, spec.arms, spec.space, path)
    return spec, path
