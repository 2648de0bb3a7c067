"""The names every layer shares: metric keys, MLflow tags, run naming, trial outcomes.

This module is the contract between the trainer, the Ray trainable, the sweep engine
and the analysis layer. It imports nothing heavy (no torch, no Ray, no MLflow).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# --- metrics ---------------------------------------------------------------------
TRAIN = "train"
EVAL = "eval"  # the test split: logged at every eval step without a val split, else at the final step only
VAL = "val"  # the validation split (a dataset built with val_size > 0): logged at every eval step

# Per-split metric names, exactly as the reference HRM reports them.
LM_LOSS = "lm_loss"
Q_HALT_LOSS = "q_halt_loss"
Q_CONTINUE_LOSS = "q_continue_loss"
ACCURACY = "accuracy"
EXACT_ACCURACY = "exact_accuracy"
Q_HALT_ACCURACY = "q_halt_accuracy"
STEPS = "steps"
COUNT = "count"
LOSS_METRICS = (LM_LOSS, Q_HALT_LOSS, Q_CONTINUE_LOSS)
RATE_METRICS = (ACCURACY, EXACT_ACCURACY, Q_HALT_ACCURACY, STEPS)
SPLIT_METRICS = LOSS_METRICS + RATE_METRICS


def metric(split: str, name: str) -> str:
    """``metric("eval", "exact_accuracy") -> "eval/exact_accuracy"``."""
    return f"{split}/{name}"


TRAIN_LR = metric(TRAIN, "lr")
TRAIN_EPOCH = metric(TRAIN, "epoch")
PERF_PREFIX = "perf/"  # timings: never compared bitwise
PERF_SAMPLES_PER_S = "perf/samples_per_s"
EVAL_EXACT_ACCURACY = metric(EVAL, EXACT_ACCURACY)
EVAL_ACCURACY = metric(EVAL, ACCURACY)
EVAL_STEPS = metric(EVAL, STEPS)
EVAL_LM_LOSS = metric(EVAL, LM_LOSS)
TRAIN_LM_LOSS = metric(TRAIN, LM_LOSS)
VAL_EXACT_ACCURACY = metric(VAL, EXACT_ACCURACY)
VAL_STEPS = metric(VAL, STEPS)
VAL_LM_LOSS = metric(VAL, LM_LOSS)
VAL_SIZE_KEY = "val_size"  # the builders' flag (--val-size) and data-recipe key that carves the val split


def on_split(key: str, split: str) -> str:
    """An ``eval/*`` or ``val/*`` metric's name on ``split``: ``on_split("eval/steps", "val")
    -> "val/steps"`` (diag halting keys too); other keys are returned unchanged."""
    for old in (EVAL, VAL):
        for prefix in (f"{old}/", f"{DIAG_PREFIX}halt_steps/{old}/"):
            if key.startswith(prefix):
                return prefix.replace(old, split, 1) + key[len(prefix):]
    return key


def watched(metrics, key: str) -> str:
    """The key training watches for ``key`` (an eval/* metric: alerts, the best checkpoint) in
    an eval record: its val/* counterpart when the record has it, else ``key`` itself."""
    val = on_split(key, VAL)
    return val if val in metrics else key

# Variant and bookkeeping namespaces.
GATE_PREFIX = "gate/"
FEUDAL_PREFIX = "feudal/"
DIAG_PREFIX = "diag/"
COMPUTE_PREFIX = "compute/"
CURRICULUM_STAGE = "curriculum/stage"
FEUDAL_LOSS = "feudal/loss"  # worker term: 1 - cos(displacement, goal), mean over rows
FEUDAL_MANAGER_LOSS = "feudal/manager_loss"
FEUDAL_ALIGNMENT = "feudal/alignment"  # cos(worker displacement, goal)
FEUDAL_GOAL_UPDATES = "feudal/goal_updates"  # share of rows that got a new goal this step
FEUDAL_GATE_MEAN = "feudal/gate_mean"
# gate/<module>/<source>_mean, gate/<module>/sat_low (< 0.1), gate/<module>/sat_high (> 0.9)
RESUMED_FROM_STEP = "resumed_from_step"

# Training-health diagnostics, logged at each eval step (cheap sums in between).
DIAG_GRAD_NORM = "diag/grad_norm"  # global L2 norm of the dense gradients (after all-reduce)
DIAG_GROUPS = ("embeddings", "H", "L", "heads")  # module groups of the update/weight ratio
DIAG_UPDATE_RATIO = "diag/update_ratio/{group}"  # ||w_after - w_before|| / ||w_before|| of that step
DIAG_PUZZLE_ROW_NORM_MEAN = "diag/puzzle_emb/row_norm_mean"  # over rows seen in training
DIAG_PUZZLE_ROW_NORM_STD = "diag/puzzle_emb/row_norm_std"  # spread across those rows
DIAG_PUZZLE_UPDATED_SHARE = "diag/puzzle_emb/updated_share"  # rows changed since the last report / all rows
DIAG_Q_HALT_MEAN = "diag/q_halt_mean"  # mean q_halt logit over the steps since the last report
DIAG_Q_CONTINUE_MEAN = "diag/q_continue_mean"
# ACT halting steps of rows that halted since the last report (train), or the segment at
# which each eval row would halt (first q_halt > q_continue, else halt_max_steps) (eval).
DIAG_HALT_MEAN = "diag/halt_steps/{split}/mean"
DIAG_HALT_AT_MAX = "diag/halt_steps/{split}/at_max_share"
DIAG_HALT_SHARE = "diag/halt_steps/{split}/share_{k}"  # share of rows halting at segment k

# Compute accounting (cumulative at the step they are logged).
COMPUTE_TRAIN_FLOPS = "compute/train_flops"  # summary's train-step FLOPs x steps taken
COMPUTE_FLOPS_PER_STEP = "compute/flops_per_step"  # the summary figure for the current stage
COMPUTE_WALL_SECONDS = "compute/wall_seconds"  # time spent in the train loop (train + eval)
COMPUTE_DEVICE_SECONDS = "compute/device_seconds"  # wall seconds x devices (ranks) of the trial
COMPUTE_PLANNED_STEPS = "compute/planned_steps"  # the schedule's total steps (logged once per attempt)
COMPUTE_PLANNED_FLOPS = "compute/planned_train_flops"  # train FLOPs of the whole schedule
# Timings: they differ between identical runs, so exact comparisons leave them out.
TIMING_METRICS = (COMPUTE_WALL_SECONDS, COMPUTE_DEVICE_SECONDS)

# System metrics of a run's process and its GPUs, sampled every few seconds
# (hrm_core/observe/system.py). Named like MLflow's own, so its UI shows them as system metrics.
SYSTEM_PREFIX = "system/"
SYSTEM_CPU = "system/cpu_utilization_percentage"  # the whole machine's CPUs
SYSTEM_PROCESS_CPU = "system/process_cpu_percentage"  # the run's process: 100 = one core busy
SYSTEM_PROCESS_RSS = "system/process_rss_megabytes"  # the run's process: resident memory
SYSTEM_GPU_UTILIZATION = "system/gpu_{i}_utilization_percentage"  # i: the run's i-th GPU (hrm.gpu_ids)
SYSTEM_GPU_MEMORY = "system/gpu_{i}_memory_usage_megabytes"  # the whole device's used memory
SYSTEM_GPU_MEMORY_PERCENT = "system/gpu_{i}_memory_usage_percentage"


def is_timing(key: str) -> bool:
    """perf/*, system/* and the compute seconds: never compared bitwise."""
    return key.startswith((PERF_PREFIX, SYSTEM_PREFIX)) or key in TIMING_METRICS


# Parent-run (sweep) totals, written when the sweep is summarised.
COMPUTE_SWEEP_FLOPS = "compute/sweep_train_flops"
COMPUTE_SWEEP_DEVICE_SECONDS = "compute/sweep_device_seconds"
COMPUTE_SAVED_FLOPS = "compute/early_stopping_saved_flops"  # planned minus taken, early-stopped trials

# The metric every run reports at each eval (the sweep default objective).
DEFAULT_OBJECTIVE = EVAL_EXACT_ACCURACY

# --- MLflow tags -------------------------------------------------------------------
TAG_SWEEP = "hrm.sweep"
TAG_INVOCATION = "hrm.invocation"
TAG_TRIAL_ID = "hrm.trial_id"
TAG_ARM = "hrm.arm"
TAG_SEED = "hrm.seed"
TAG_GIT_COMMIT = "hrm.git_commit"
TAG_GIT_DIRTY = "hrm.git_dirty"
TAG_CONFIG_HASH = "hrm.config_hash"
TAG_DATASET_FINGERPRINT = "hrm.dataset_fingerprint"
TAG_OUTCOME = "hrm.outcome"
TAG_CHECKPOINT = "hrm.checkpoint"  # a trial's latest checkpoint Tune has registered (it resumes from it)
TAG_HARDWARE = "hrm.hardware"  # the device, its kernels and the dtype path a run trained on (one line)
TAG_ERROR = "hrm.error"  # a failed run's error, cut to 5000 characters
TAG_ERROR_FILE = "hrm.error_file"  # the error file Tune wrote for a failed trial
TAG_GPU_IDS = "hrm.gpu_ids"  # the GPU ids Ray assigned to the trial (its workers, with DDP)
TAG_RAY_NODE = "hrm.ray_node"  # the Ray node id the trial ran on (its driver process, with DDP)
TAG_WORKERS = "hrm.workers"  # DDP world size of the trial
TAG_ALERT_PREFIX = "hrm.alert."  # hrm.alert.<rule> = "step <n>: <message>" (first firing)
ALERT_RULES = (
    "grad_explosion", "nonfinite", "act_always_max", "puzzle_emb_frozen", "gates_saturated", "eval_collapse",
)
TAG_ALERTS = "hrm.alerts"  # comma-separated rules that fired ("" when healthy)
TAG_REPRODUCES = "hrm.reproduces"  # on a reproduce run: the run id it reran
TAG_REPRODUCE_MATCH = "hrm.reproduce_match"  # "bitwise" | "differs" (set at its end)
RUN_CONTEXT_ARTIFACT = "run_context.json"  # config, seeds, git, dataset recipe, hardware, pip freeze
GIT_DIFF_ARTIFACT = "git_diff.patch"  # logged when the tree was dirty
TAG_RUN_KIND = "hrm.run_kind"  # "sweep" (parent), "trial" (child), "standalone"
RUN_KIND_SWEEP = "sweep"
RUN_KIND_TRIAL = "trial"
RUN_KIND_STANDALONE = "standalone"
RUN_KIND_REPRODUCE = "reproduce"
# Parent-run tags.
TAG_SWEEP_KIND = "hrm.sweep_kind"  # "search" | "ablation"
TAG_SWEEP_HASH = "hrm.sweep_hash"  # hash of the sweep file: resume refuses a changed file
TAG_CONTROL = "hrm.control"  # the control arm of an ablation
TAG_OBJECTIVE = "hrm.objective"  # primary metric, e.g. eval/exact_accuracy
TAG_OBJECTIVE_MODE = "hrm.objective_mode"  # "max" | "min"
TAG_OPTUNA_STORAGE = "hrm.optuna_storage"  # sqlite:///... of the persisted study (search)
TAG_OPTUNA_STUDY = "hrm.optuna_study"  # study name (= the invocation)
TAG_SWEEP_STATUS = "hrm.sweep_status"  # "running" | "finished" | "interrupted"
TAG_SWEEP_FILE = "hrm.sweep_file"  # path of the sweep file the invocation ran
TAG_SCALE = "hrm.scale"  # the scale preset it ran at (resume and extend reuse it)
TAG_SWEEP_OVERRIDES = "hrm.sweep_overrides"  # JSON list of the command-line overrides (re-applied)
TAG_TUNE_PATH = "hrm.tune_path"  # the Tune experiment folder that resume restores
TAG_EXTENSIONS = "hrm.extensions"  # how many times the invocation was extended
# on a parent run whose checkpoints `python -m sweeps prune` freed: "keep=<none|last|best>; freed ...; at ..."
TAG_PRUNED = "hrm.pruned"
# --until-decided: why it stopped adding seeds ("decided" | "max_seeds" | "interrupted"), and its plan
TAG_STOP_REASON = "hrm.stop_reason"
TAG_UNTIL_DECIDED = "hrm.until_decided"  # JSON {"round": K, "max_seeds": N} while rounds are planned
STOP_DECIDED, STOP_MAX_SEEDS, STOP_INTERRUPTED = "decided", "max_seeds", "interrupted"
# A search's confirmation stage: its child runs carry hrm.stage=confirm (search trials carry none);
# the parent carries hrm.confirm_status "running" | "finished" | "off" (--no-confirm)
TAG_STAGE = "hrm.stage"
STAGE_CONFIRM = "confirm"
TAG_CONFIRM_STATUS = "hrm.confirm_status"
CONFIRM_ARTIFACT = "confirm.json"  # on the parent: the confirmed configurations, their seeds and metric
TAG_LOOKS = "hrm.looks"  # JSON list of the reports' looks: {time, pairs, seeds} (analysis/looks.py)
# Child-run tag MLflow itself uses to nest runs in its UI.
TAG_MLFLOW_PARENT = "mlflow.parentRunId"
# MLflow's own tags, set as its fluent API would (hrm_core/tracking/source.py, describe.py).
TAG_MLFLOW_NOTE = "mlflow.note.content"  # the description of a run or an experiment (markdown)
TAG_MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"  # which view the UI opens an experiment on
EXPERIMENT_KIND = "custom_model_development"  # training runs (not MLflow 3's GenAI traces view)
TAG_MLFLOW_SOURCE_NAME = "mlflow.source.name"  # the entry point (the runs table's Source column)
TAG_MLFLOW_SOURCE_TYPE = "mlflow.source.type"  # "LOCAL"
TAG_MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
TAG_MLFLOW_USER = "mlflow.user"
TAG_MLFLOW_DATA_CONTEXT = "mlflow.data.context"  # a dataset input's role ("train")

# --- trial outcomes ------------------------------------------------------------------
OUTCOME_COMPLETED = "completed"
OUTCOME_EARLY_STOPPED = "early_stopped"
OUTCOME_DIVERGED = "diverged"
OUTCOME_ERROR = "error"
OUTCOME_KILLED = "killed"
OUTCOMES = (OUTCOME_COMPLETED, OUTCOME_EARLY_STOPPED, OUTCOME_DIVERGED, OUTCOME_ERROR, OUTCOME_KILLED)
# MLflow run status each outcome ends with: diverged is an experimental result, not a crash.
OUTCOME_STATUS = {
    OUTCOME_COMPLETED: "FINISHED",
    OUTCOME_EARLY_STOPPED: "FINISHED",
    OUTCOME_DIVERGED: "FINISHED",
    OUTCOME_ERROR: "FAILED",
    OUTCOME_KILLED: "KILLED",
}

# --- experiment / run naming -----------------------------------------------------------
EXPERIMENT_PREFIX = "hrm/"
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def experiment_name(sweep: str) -> str:
    """One MLflow experiment per sweep family: ``hrm/<sweep>``."""
    return f"{EXPERIMENT_PREFIX}{sweep}"


def parent_run_name(sweep: str, when: datetime | None = None) -> str:
    """``<sweep>@<UTC timestamp>``: one parent run per sweep invocation."""
    when = when or datetime.now(UTC)
    return f"{sweep}@{when.strftime('%Y%m%dT%H%M%SZ')}"


def ablation_run_name(arm: str, seed: int | str) -> str:
    """An ablation trial's run: ``<arm>/seed<k>``."""
    return f"{arm}/seed{seed}"


RUN_NAME_MAX = 80  # characters of a search trial's run name


def search_run_name(params: dict, limit: int = RUN_NAME_MAX) -> str:
    """A search trial's run, named by its sampled params, shortened: each key by its last
    dotted part (the whole key when two would read alike), floats to 3 significant digits,
    ``lr=0.000312,gate_init_bias=-2``; cut to ``limit`` characters."""
    tails = [k.rsplit(".", 1)[-1] for k in params]
    parts = []
    for key, value in sorted(params.items()):
        short = key.rsplit(".", 1)[-1]
        short = short if tails.count(short) == 1 else key
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{short}={value}")
    name = ",".join(parts) or "default"
    return name if len(name) <= limit else name[: limit - 1] + "…"


def unique_run_name(name: str, taken: set[str] | frozenset[str]) -> str:
    """``name``, or ``name #2``, ``name #3``... : the first that no run of the invocation holds
    (an extension rerunning a failed pair, two search trials that drew the same point)."""
    if name not in taken:
        return name
    n = 2
    while f"{name} #{n}" in taken:
        n += 1
    return f"{name} #{n}"


def safe_name(text: str) -> str:
    """A file-system and URL friendly version of a free-form name."""
    return _SAFE.sub("-", text).strip("-") or "run"
