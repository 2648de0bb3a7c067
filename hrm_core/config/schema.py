"""The typed training config: one pydantic schema per component, checked once, at start-up.

The one place each key's default, type, range and meaning is stated: Hydra composes these
defaults (``hrm_core/config/defaults.py``), the presets of ``configs/`` (which carry only what
differs) and the user's overrides; ``TrainConfig`` validates the result (unknown keys and
out-of-range values fail here, naming the key). ``hrm-train --help`` prints this schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hrm_core.errors import ConfigError, unknown_key_message

__all__ = [
    "FOLLOWS",
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


# json_schema_extra key of a field whose default follows a sibling key in a composed config
# (a Hydra interpolation, hrm_core/config/defaults.py); built in Python, the field's own default holds.
FOLLOWS = "follows"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubgoalHeadConfig(_Strict):
    """Feudal subgoal head: a manager emits a unit goal direction from z_H every
    ``manager_period`` ACT segments; the goal is projected and injected into L."""

    enabled: bool = Field(False, description="feudal manager on z_H emitting goals injected into L")
    manager_period: int = Field(4, ge=1, description="ACT segments between goal refreshes")
    goal_dim: int | None = Field(None, ge=1, description="goal width; null = hidden_size")
    gating: bool = Field(True, description="a learned sigmoid scales the injection (never a loss)")
    inject: bool = Field(True, description="false: the goal only shapes the feudal loss")
    random_goals: bool = Field(False, description="control arm: random unit goals instead of the manager's")


class ArchConfig(_Strict):
    """Model architecture; defaults are the reference HRM ACT v1. Variants are off by default."""

    name: str = Field("hrm_v1", description="the preset's name (arch=<name>), recorded with the run")
    hidden_size: int = Field(512, gt=0, description="model width")
    num_heads: int = Field(8, gt=0, description="attention heads (head dim = hidden / heads)")
    expansion: float = Field(4.0, gt=0, description="SwiGLU expansion "
                             "(width = 256-rounded 2/3 x expansion x hidden)")
    H_cycles: int = Field(2, ge=1, description="H steps per ACT segment")
    L_cycles: int = Field(2, ge=1, description="L steps per H step")
    H_layers: int = Field(4, ge=1, description="transformer blocks of the H module")
    L_layers: int = Field(4, ge=1, description="transformer blocks of the L module")
    # Composed by Hydra, it follows hidden_size; built in Python, it is 512 unless given.
    puzzle_emb_ndim: int = Field(512, ge=0, json_schema_extra={FOLLOWS: "hidden_size"},
                                 description="puzzle-embedding width (0 = none); trained by sign-SGD")
    pos_encodings: Literal["rope", "learned"] = Field("rope", description="position encodings")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base")
    rms_norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon")
    halt_max_steps: int = Field(16, ge=1, description="ACT segments at most (eval always runs all of them)")
    halt_exploration_prob: float = Field(
        0.1, ge=0, le=1, description="probability of a random minimum halting step in training")
    forward_dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "bfloat16", description="bfloat16 as in the reference; auto = bf16 where the hardware runs it "
        "natively (CUDA, AVX512-BF16/AMX CPUs), float32 elsewhere; the run log says which")

    # Variant: learned sigmoid gates on the terms of each module's input sum.
    use_gating: bool = Field(False, description="variant: learned sigmoid gates on the terms of each "
                             "module's input sum")
    gate_hidden_ratio: float = Field(0.25, gt=0, le=16,
                                     description="gate MLP width as a fraction of hidden_size")
    gate_init_bias: float = Field(-2.2, description="gates start at sigmoid(bias) (~0.1)")
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
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = Field(
        "stablemax_cross_entropy",
        description="stablemax (float64, the reference's) or softmax cross-entropy")
    # Feudal worker term: 1 - cos(pooled z_L displacement since the goal was set, goal.detach()).
    feudal_loss_weight: float = Field(0.0, ge=0, description="feudal worker term "
                                      "(needs arch.subgoal_head.enabled)")
    # FuN-style manager transition term: 1 - cos(displacement.detach(), goal).
    feudal_manager_weight: float = Field(0.0, ge=0, description="FuN manager transition term")
    # Gate regularisers: saturation (1 - 4 g (1 - g)) and change between consecutive calls.
    gate_saturation_weight: float = Field(0.0, ge=0,
                                          description="gate saturation term (needs arch.use_gating)")
    gate_stability_weight: float = Field(0.0, ge=0, description="gate change between consecutive calls")


class DataBuildConfig(_Strict):
    """Recipe that builds a built-in dataset when its folder is missing."""

    builder: Literal["sudoku", "arc", "maze"] = Field("sudoku", description="which generator builds it")
    args: dict[str, Any] = Field(default_factory=dict, description="the builder's arguments")


class DataConfig(_Strict):
    name: str = Field("custom", description="the dataset's name: data/<name> unless data_path is given")
    build: DataBuildConfig | None = Field(None, description="recipe that builds data/<name> when missing")


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
    name: str = Field("custom", description="the preset's name (curriculum=<name>)")
    stages: list[CurriculumStage] | None = Field(
        None, description="[{steps, name, halt_max_steps, H_cycles, L_cycles, data, data_path}, ...]; "
        "null = no curriculum (configs/curriculum/README.md)")

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
    mlflow: bool = Field(False, description="log to MLflow (MLFLOW_TRACKING_URI or the embedded "
                         "mlruns/ store)")
    experiment: str | None = Field(None, description="MLflow experiment; null = hrm/<project_name>")


class DiagnosticsConfig(_Strict):
    """Training-health diagnostics (``diag/*``, hrm_core/observe/diagnostics.py), logged with the
    eval metrics of every eval step. They change no other number."""

    enabled: bool = Field(True, description="diag/* (grad norm, update ratios, puzzle emb, q logits, "
                          "halting) at every eval step")


class AlertsConfig(_Strict):
    """Alert rules over the metric stream (hrm_core/observe/alerts.py). Each rule fires at most
    once per run; "a report" is an eval step's record (eval and diag/* metrics)."""

    enabled: bool = Field(True, description="rules over the metric stream; each fires once: tag "
                          "hrm.alert.<rule>, a metrics.jsonl line")
    disable: list[str] = Field(default_factory=list, description="rule names not to check: grad_explosion, "
                               "nonfinite, act_always_max, puzzle_emb_frozen, gates_saturated, eval_collapse")
    # grad_explosion: diag/grad_norm > factor x median of the previous reports (at least
    # min_reports of them, the last `window`) and > floor; or a non-finite grad norm.
    grad_factor: float = Field(10.0, gt=1, description="grad_explosion: diag/grad_norm > this x the "
                               "median of the previous reports")
    grad_floor: float = Field(1.0, ge=0, description="grad_explosion: and diag/grad_norm > this")
    grad_window: int = Field(10, ge=1, description="grad_explosion: the median is over this many reports")
    grad_min_reports: int = Field(2, ge=1, description="grad_explosion: once there are this many reports")
    # act_always_max: train halting at_max_share >= act_max_share at act_patience
    # consecutive reports after act_after_step (null = lr_warmup_steps), while the latest
    # train/exact_accuracy >= act_min_exact_accuracy (the model solves puzzles, yet never halts early).
    act_max_share: float = Field(0.99, gt=0, le=1, description="act_always_max: train halting "
                                 "at_max_share >= this")
    act_patience: int = Field(3, ge=1, description="act_always_max: at this many consecutive reports")
    act_after_step: int | None = Field(None, ge=0, description="act_always_max: after this step "
                                       "(null = lr_warmup_steps)")
    act_min_exact_accuracy: float = Field(0.5, ge=0, le=1, description="act_always_max: while "
                                          "train/exact_accuracy >= this (it solves puzzles yet never halts)")
    # puzzle_emb_frozen: diag/puzzle_emb/updated_share == 0 at a report after this step.
    puzzle_after_step: int = Field(0, ge=0, description="puzzle_emb_frozen: no puzzle-embedding row "
                                   "changed since the last report, after this step")
    # gates_saturated: gate/<module>/sat_low + sat_high > gate_saturation at a report after
    # gate_after_step (null = lr_warmup_steps: gates start near sigmoid(gate_init_bias)).
    gate_saturation: float = Field(0.9, gt=0, le=1, description="gates_saturated: gate/<module>/sat_low "
                                   "+ sat_high > this at a report")
    gate_after_step: int | None = Field(None, ge=0, description="gates_saturated: after this step "
                                        "(null = lr_warmup_steps)")
    # eval_collapse: eval_metric fell below peak - max(eval_abs_drop, eval_rel_drop x peak)
    # after its peak reached eval_min_peak (higher is better).
    eval_metric: str = Field("eval/exact_accuracy", description="eval_collapse: this metric fell below "
                             "peak - max(eval_abs_drop, eval_rel_drop x peak)")
    eval_min_peak: float = Field(0.2, description="eval_collapse: once its peak reached this")
    eval_abs_drop: float = Field(0.1, ge=0, description="eval_collapse: the absolute drop")
    eval_rel_drop: float = Field(0.5, ge=0, le=1, description="eval_collapse: the drop relative to the peak")

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

    data_path: str | None = Field(None, description="a PuzzleDataset folder; null = data/<data.name>, "
                                  "built on first use from the data config's recipe")
    global_batch_size: int = Field(768, gt=0, description="rows per optimizer step, summed over ranks")
    epochs: int = Field(100000, gt=0, description="passes over the training *groups* (a base puzzle and its "
                        "augmentations)")
    eval_interval: int | None = Field(10000, gt=0, description="evaluate every N epochs, as in the reference "
                                      "(must divide epochs); null = only at the end")
    eval_every_steps: int | None = Field(None, gt=0, description="evaluate every N optimizer steps "
                                         "(overrides eval_interval)")
    max_steps: int | None = Field(None, gt=0, description="cap on optimizer steps; the lr schedule spans "
                                  "the steps actually run")

    lr: float = Field(1e-4, ge=0, description="peak learning rate: linear warm-up, then cosine to "
                      "lr x lr_min_ratio")
    lr_min_ratio: float = Field(1.0, ge=0, le=1, description="cosine floor as a fraction of lr "
                                "(1.0 = constant after warm-up)")
    lr_warmup_steps: int = Field(2000, ge=0, description="linear warm-up, in optimizer steps")
    weight_decay: float = Field(0.1, ge=0, description="AdamATan2 decoupled weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamATan2 beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamATan2 beta2")
    puzzle_emb_lr: float = Field(1e-2, ge=0, description="sign-SGD on the puzzle-embedding rows of the batch")
    puzzle_emb_weight_decay: float = Field(0.1, ge=0, description="its weight decay")

    checkpoint_path: str | None = Field(None, description="run folder; null = "
                                        "checkpoints/<project_name>/<run_name>")
    checkpoint_every_eval: bool = Field(False, description="save at every evaluation")
    checkpoint_every_steps: int | None = Field(None, gt=0, description="save every N optimizer steps")
    checkpoint_keep_last: int = Field(2, ge=1, description="retention: the last N checkpoints ...")
    checkpoint_keep_best: bool = Field(True, description="... and the best by checkpoint_metric")
    checkpoint_metric: str = Field("eval/exact_accuracy", description="what 'best' means")
    checkpoint_mode: Literal["max", "min"] = Field("max", description="whether higher or lower is better")
    resume_from: str | None = Field(None, description="a checkpoint file or run folder: continue exactly")
    init_from: str | None = Field(None, description="weights only (ours or the reference's): warm-start")

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when there is one")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = torch's default")
    compile: bool = Field(False, description="torch.compile the model and the optimizer update")
    low_precision_gemm: Literal["auto", "native", "fp32"] = Field(
        "auto", description="bf16/fp16 matmuls on the CPU: native kernels, or fp32 GEMMs on the rounded "
        "operands (same arithmetic, ~20x faster where the CPU lacks native bf16); auto = fp32 there")
    seed: int = Field(0, description="model init and ACT exploration")
    data_seed: int | None = Field(None, description="data order; null = seed")
    project_name: str | None = Field(None, description="null = '<Dataset> ACT-torch'")
    run_name: str | None = Field(None, description="null = '<arch>-<UTC time>'")
    progress: bool = Field(True, description="a tqdm progress bar")
    log_every_steps: int = Field(1, ge=1, description="train-metric logging interval")
    eval_save_outputs: list[str] = Field(default_factory=list, description="eval outputs to save "
                                         "(e.g. [logits, q_halt_logits])")

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
