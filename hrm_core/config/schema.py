"""The typed training config: one pydantic schema per component, checked once, at start-up.

Hydra composes ``configs/pretrain.yaml`` with the user's overrides; ``TrainConfig``
validates the result (unknown keys and out-of-range values fail here, naming the key).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hrm_core.errors import ConfigError, unknown_key_message

__all__ = [
    "SubgoalHeadConfig",
    "ArchConfig",
    "LossConfig",
    "DataBuildConfig",
    "DataConfig",
    "CurriculumStage",
    "CurriculumConfig",
    "TrackingConfig",
    "DiagnosticsConfig",
    "AlertsConfig",
    "TrainConfig",
    "VALID_KEYS",
    "validate_config",
    "config_hash",
    "flatten",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubgoalHeadConfig(_Strict):
    """Feudal subgoal head: a manager emits a unit goal direction from z_H every
    ``manager_period`` ACT segments; the goal is projected and injected into L."""

    enabled: bool = False
    manager_period: int = Field(4, ge=1)
    goal_dim: int | None = Field(None, ge=1)  # null = hidden_size
    gating: bool = True  # a learned sigmoid scales the injection (never a loss)
    inject: bool = True  # false: the goal only shapes the feudal loss
    random_goals: bool = False  # control arm: random unit goals instead of the manager's


class ArchConfig(_Strict):
    """Model architecture; defaults are the reference HRM ACT v1. Variants are off by default."""

    name: str = "hrm_v1"
    hidden_size: int = Field(512, gt=0)
    num_heads: int = Field(8, gt=0)
    expansion: float = Field(4.0, gt=0)
    H_cycles: int = Field(2, ge=1)
    L_cycles: int = Field(2, ge=1)
    H_layers: int = Field(4, ge=1)
    L_layers: int = Field(4, ge=1)
    puzzle_emb_ndim: int = Field(512, ge=0)
    pos_encodings: Literal["rope", "learned"] = "rope"
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    halt_max_steps: int = Field(16, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0, le=1)
    forward_dtype: Literal["auto", "bfloat16", "float32", "float16"] = "bfloat16"

    # Variant: learned sigmoid gates on the terms of each module's input sum.
    use_gating: bool = False
    gate_hidden_ratio: float = Field(0.25, gt=0, le=16)
    gate_init_bias: float = -2.2
    # Variant: feudal subgoal head.
    subgoal_head: SubgoalHeadConfig = Field(default_factory=SubgoalHeadConfig)

    @property
    def goal_dim(self) -> int:
        return self.subgoal_head.goal_dim or self.hidden_size

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"arch.hidden_size ({self.hidden_size}) must be divisible by arch.num_heads "
                f"({self.num_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("arch.hidden_size / arch.num_heads must be even (RoPE rotates pairs)")
        if self.subgoal_head.goal_dim is not None and self.subgoal_head.goal_dim > self.hidden_size:
            raise ValueError(
                f"arch.subgoal_head.goal_dim ({self.subgoal_head.goal_dim}) must be <= arch.hidden_size "
                f"({self.hidden_size})"
            )
        return self


class LossConfig(_Strict):
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = "stablemax_cross_entropy"
    # Feudal worker term: 1 - cos(pooled z_L displacement since the goal was set, goal.detach()).
    feudal_loss_weight: float = Field(0.0, ge=0)
    # FuN-style manager transition term: 1 - cos(displacement.detach(), goal).
    feudal_manager_weight: float = Field(0.0, ge=0)
    # Gate regularisers: saturation (1 - 4 g (1 - g)) and change between consecutive calls.
    gate_saturation_weight: float = Field(0.0, ge=0)
    gate_stability_weight: float = Field(0.0, ge=0)


class DataBuildConfig(_Strict):
    """Recipe that builds a built-in dataset when its folder is missing."""

    builder: Literal["sudoku", "arc", "maze"] = "sudoku"
    args: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    name: str = "custom"
    build: DataBuildConfig | None = None


class CurriculumStage(_Strict):
    """One stage: a budget in optimizer steps and what changes (unset = the run's value)."""

    steps: int = Field(gt=0)
    name: str | None = None
    halt_max_steps: int | None = Field(None, ge=1)
    H_cycles: int | None = Field(None, ge=1)
    L_cycles: int | None = Field(None, ge=1)
    data: str | None = None  # a data config name (configs/data/<name>.yaml)
    data_path: str | None = None

    @property
    def arch_overrides(self) -> dict[str, int]:
        keys = ("halt_max_steps", "H_cycles", "L_cycles")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class CurriculumConfig(_Strict):
    name: str = "custom"
    stages: list[CurriculumStage] | None = None  # None: no curriculum

    @model_validator(mode="after")
    def _not_empty(self) -> CurriculumConfig:
        if self.stages is not None and not self.stages:
            raise ValueError(
                "curriculum.stages is empty: give at least one stage (or curriculum.stages=null for none)"
            )
        for i, stage in enumerate(self.stages or []):
            if stage.data and stage.data_path:
                raise ValueError(f"curriculum.stages[{i}]: give data or data_path, not both")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.stages)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages or [])


class TrackingConfig(_Strict):
    mlflow: bool = False
    experiment: str | None = None  # default: hrm/<project_name>


class DiagnosticsConfig(_Strict):
    """Training-health diagnostics (``diag/*``, hrm_core/observe/diagnostics.py), logged with the
    eval metrics of every eval step. They change no other number."""

    enabled: bool = True


class AlertsConfig(_Strict):
    """Alert rules over the metric stream (hrm_core/observe/alerts.py). Each rule fires at most
    once per run; "a report" is an eval step's record (eval and diag/* metrics)."""

    enabled: bool = True
    disable: list[str] = Field(default_factory=list)  # rule names (names.ALERT_RULES) not to check
    # grad_explosion: diag/grad_norm > factor x median of the previous reports (at least
    # min_reports of them, the last `window`) and > floor; or a non-finite grad norm.
    grad_factor: float = Field(10.0, gt=1)
    grad_floor: float = Field(1.0, ge=0)
    grad_window: int = Field(10, ge=1)
    grad_min_reports: int = Field(2, ge=1)
    # act_always_max: train halting at_max_share >= act_max_share at act_patience
    # consecutive reports after act_after_step (null = lr_warmup_steps), while the latest
    # train/exact_accuracy >= act_min_exact_accuracy (the model solves puzzles, yet never halts early).
    act_max_share: float = Field(0.99, gt=0, le=1)
    act_patience: int = Field(3, ge=1)
    act_after_step: int | None = Field(None, ge=0)
    act_min_exact_accuracy: float = Field(0.5, ge=0, le=1)
    # puzzle_emb_frozen: diag/puzzle_emb/updated_share == 0 at a report after this step.
    puzzle_after_step: int = Field(0, ge=0)
    # gates_saturated: gate/<module>/sat_low + sat_high > gate_saturation at a report after
    # gate_after_step (null = lr_warmup_steps: gates start near sigmoid(gate_init_bias)).
    gate_saturation: float = Field(0.9, gt=0, le=1)
    gate_after_step: int | None = Field(None, ge=0)
    # eval_collapse: eval_metric fell below peak - max(eval_abs_drop, eval_rel_drop x peak)
    # after its peak reached eval_min_peak (higher is better).
    eval_metric: str = "eval/exact_accuracy"
    eval_min_peak: float = 0.2
    eval_abs_drop: float = Field(0.1, ge=0)
    eval_rel_drop: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _known_rules(self) -> AlertsConfig:
        from hrm_core.names import ALERT_RULES

        unknown = [r for r in self.disable if r not in ALERT_RULES]
        if unknown:
            raise ValueError(f"alerts.disable: unknown rule(s) {unknown}; rules are {list(ALERT_RULES)}")
        return self


class TrainConfig(_Strict):
    arch: ArchConfig = Field(default_factory=ArchConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    data_path: str | None = None
    global_batch_size: int = Field(768, gt=0)
    epochs: int = Field(100000, gt=0)
    eval_interval: int | None = Field(None, gt=0)  # in epochs, as in the reference
    eval_every_steps: int | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)

    lr: float = Field(1e-4, ge=0)
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    lr_warmup_steps: int = Field(2000, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    puzzle_emb_lr: float = Field(1e-2, ge=0)
    puzzle_emb_weight_decay: float = Field(0.1, ge=0)

    checkpoint_path: str | None = None
    checkpoint_every_eval: bool = False
    checkpoint_every_steps: int | None = Field(None, gt=0)
    checkpoint_keep_last: int = Field(2, ge=1)
    checkpoint_keep_best: bool = True
    checkpoint_metric: str = "eval/exact_accuracy"
    checkpoint_mode: Literal["max", "min"] = "max"
    resume_from: str | None = None
    init_from: str | None = None

    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    compile: bool = False
    # bf16/fp16 matmuls on the CPU: native kernels, or fp32 GEMMs on the rounded operands
    # (same arithmetic, ~20x faster where the CPU lacks native bf16). auto = fp32 there.
    low_precision_gemm: Literal["auto", "native", "fp32"] = "auto"
    seed: int = 0
    data_seed: int | None = None
    project_name: str | None = None
    run_name: str | None = None
    progress: bool = True
    log_every_steps: int = Field(1, ge=1)
    eval_save_outputs: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        if self.eval_interval is not None and self.epochs % self.eval_interval:
            hint = next(d for d in range(max(1, self.epochs // 10), 0, -1) if self.epochs % d == 0)
            raise ValueError(
                f"eval_interval ({self.eval_interval}) must divide epochs ({self.epochs}); e.g. "
                f"eval_interval={hint}, or eval_interval=null to evaluate only at the end"
            )
        head = self.arch.subgoal_head.enabled
        for key in ("feudal_loss_weight", "feudal_manager_weight"):
            if getattr(self.loss, key) > 0 and not head:
                raise ValueError(
                    f"loss.{key} > 0 needs the feudal subgoal head: set arch.subgoal_head.enabled=true (or "
                    "arch=hrm_v1_feudal)"
                )
        for key in ("gate_saturation_weight", "gate_stability_weight"):
            if getattr(self.loss, key) > 0 and not self.arch.use_gating:
                raise ValueError(
                    f"loss.{key} > 0 needs gates: set arch.use_gating=true (or arch=hrm_v1_gated)"
                )
        if self.resume_from and self.init_from:
            raise ValueError(
                "resume_from and init_from are exclusive: resume continues a run, init_from only loads "
                "weights"
            )
        return self

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed


def _flat_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is None:
            for arg in getattr(ann, "__args__", ()) or ():
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    sub = arg
        keys.append(prefix + name)
        if sub is not None:
            keys.extend(_flat_keys(sub, prefix + name + "."))
    return keys


VALID_KEYS = _flat_keys(TrainConfig)


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return unknown_key_message(key, VALID_KEYS)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"].startswith("value_error") and not key:
        return f"invalid config: {msg}"
    value = first.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"invalid value for '{key}'{shown}: {msg}"


def validate_config(raw: dict[str, Any]) -> TrainConfig:
    """Validate a plain dict (e.g. a resolved Hydra config) into a TrainConfig."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def config_hash(cfg: TrainConfig) -> str:
    """Stable hash of the resolved config (run names and output paths excluded)."""
    payload = cfg.model_dump(
        exclude={
            "run_name",
            "project_name",
            "checkpoint_path",
            "resume_from",
            "progress",
            "tracking",
            "diagnostics",
            "alerts",  # observe the run, change no number
        }
    )
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"arch": {"hidden_size": 8}} -> {"arch.hidden_size": 8}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
