"""Synthetic sweeps written into a real MLflow store, in the sweep engine's layout.

Test support: used by the tests (known true effects, known failures), by the scale
benchmark (``benchmarks/report_scale.py``) and for demos of the report without training
anything. Two writers: ``write_sweep`` goes
through MlflowClient like the engine does; ``write_sweep_bulk`` writes the child runs of
a SQLite store with one ``executemany`` per table (thousands of runs in seconds) and
creates the experiment and parent run through MlflowClient.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hrm_core import names

TRAIN_KEYS = (names.TRAIN_LM_LOSS, names.metric(names.TRAIN, names.EXACT_ACCURACY), names.TRAIN_LR)
EVAL_KEYS = (names.EVAL_EXACT_ACCURACY, names.EVAL_ACCURACY, names.EVAL_STEPS, names.EVAL_LM_LOSS)


@dataclass
class Trial:
    """One synthetic child run: tags, params and metric rows (key, value, step)."""

    trial_id: str
    arm: str
    seed: int
    outcome: str
    params: dict[str, str]
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # extra tags, e.g. hrm.alerts / hrm.alert.<rule>


@dataclass
class Sweep:
    """A synthetic sweep invocation: the parent run's tags and its trials."""

    name: str
    kind: str
    parent_tags: dict[str, str]
    trials: list[Trial]
    study: list[dict[str, Any]] | None = None  # search: params + value per trial (Optuna)
    parent_metrics: dict[str, float] = field(default_factory=dict)  # e.g. compute/sweep_* totals


def _curve(final: float, start: float, steps: np.ndarray, budget: int, rate: float = 4.0) -> np.ndarray:
    """A saturating curve from ``start`` that reaches ``final`` exactly at ``budget``."""
    shape = (1 - np.exp(-rate * steps / budget)) / (1 - math.exp(-rate))
    return start + (final - start) * shape


def _trial_metrics(
    rng: np.random.Generator,
    final_acc: float,
    steps_mean: float,
    budget: int,
    last_step: int,
    eval_every: int,
    variants: Sequence[str] = (),
    diverge: bool = False,
    stages: Sequence[int] = (),
) -> list[tuple[str, float, int]]:
    """Per-step train/* and eval/* (and variant) rows of one run, up to ``last_step``."""
    rows: list[tuple[str, float, int]] = []
    steps = np.arange(1, last_step + 1)
    acc = np.clip(_curve(final_acc, 0.02, steps, budget) + rng.normal(0, 0.01, steps.size), 0, 1)
    loss = 2.3 * (1 - 0.8 * _curve(1.0, 0.0, steps, budget)) + rng.normal(0, 0.02, steps.size)
    if diverge:
        loss[-max(1, steps.size // 10) :] = np.nan
    for s, a, lo in zip(steps.tolist(), acc.tolist(), loss.tolist(), strict=True):
        rows += [(TRAIN_KEYS[0], lo, s), (TRAIN_KEYS[1], a, s), (TRAIN_KEYS[2], 1e-3, s)]
    evals = [s for s in range(eval_every, last_step + 1, eval_every)]
    if evals and evals[-1] != last_step and not diverge:
        evals.append(last_step)
    ev = np.array(evals, dtype=float)
    eval_acc = np.clip(_curve(final_acc, 0.0, ev, budget), 0, 1)
    if ev.size and last_step == budget:
        eval_acc[-1] = final_acc  # the value at the end of the budget is the planted one
    for s, a in zip(evals, eval_acc.tolist(), strict=True):
        tok = min(1.0, 0.5 + 0.5 * a)
        rows += [
            (names.EVAL_EXACT_ACCURACY, a, s),
            (names.EVAL_ACCURACY, tok, s),
            (names.EVAL_STEPS, steps_mean + rng.normal(0, 0.05), s),
            (names.EVAL_LM_LOSS, 2.0 * (1 - tok) + 0.05, s),
        ]
    every = max(1, eval_every // 2)
    for s in range(every, last_step + 1, every):
        frac = s / budget
        if "gate" in variants:
            for key, base in (
                ("gate/L/self_mean", 0.5),
                ("gate/L/H_mean", 0.6),
                ("gate/L/x_mean", 0.7),
                ("gate/H/self_mean", 0.5),
                ("gate/H/L_mean", 0.55),
            ):
                rows.append((key, base + 0.2 * frac + rng.normal(0, 0.01), s))
            for key in ("gate/L/sat_low", "gate/H/sat_low"):
                rows.append((key, 0.05 * frac, s))
            for key in ("gate/L/sat_high", "gate/H/sat_high"):
                rows.append((key, 0.3 * frac, s))
        if "feudal" in variants:
            align = 0.2 + 0.6 * frac + rng.normal(0, 0.02)
            rows += [
                (names.FEUDAL_LOSS, 1 - align, s),
                (names.FEUDAL_ALIGNMENT, align, s),
                (names.FEUDAL_MANAGER_LOSS, 0.5 - 0.3 * frac, s),
                (names.FEUDAL_GOAL_UPDATES, 0.25, s),
                (names.FEUDAL_GATE_MEAN, 0.5 + 0.1 * frac, s),
            ]
    if stages:
        for s in range(1, last_step + 1, every):
            rows.append((names.CURRICULUM_STAGE, float(sum(s >= b for b in stages)), s))
    return rows


def compute_rows(
    flops_per_step: float,
    budget: int,
    last_step: int,
    eval_every: int,
    seconds_per_step: float = 0.01,
    devices: int = 1,
) -> list[tuple[str, float, int]]:
    """compute/* rows as the trainer logs them: cumulative FLOPs = flops_per_step x step at
    every eval step, every eval_every/2 steps and the last step; the planned figures once."""
    every = max(1, eval_every // 2)
    steps = sorted(
        {*range(every, last_step + 1, every), *range(eval_every, last_step + 1, eval_every), last_step}
    )
    rows = [
        (names.COMPUTE_PLANNED_STEPS, float(budget), steps[0]),
        (names.COMPUTE_PLANNED_FLOPS, float(flops_per_step * budget), steps[0]),
    ]
    for s in steps:
        rows += [
            (names.COMPUTE_TRAIN_FLOPS, float(flops_per_step * s), s),
            (names.COMPUTE_FLOPS_PER_STEP, float(flops_per_step), s),
            (names.COMPUTE_WALL_SECONDS, seconds_per_step * s, s),
            (names.COMPUTE_DEVICE_SECONDS, seconds_per_step * s * devices, s),
        ]
    return rows


def diag_rows(
    rng: np.random.Generator, last_step: int, eval_every: int, explode_at: int | None = None
) -> list[tuple[str, float, int]]:
    """diag/grad_norm and the ACT at-max shares at each eval step (a spike from ``explode_at``)."""
    rows = []
    for s in range(eval_every, last_step + 1, eval_every):
        g = 1.0 + rng.normal(0, 0.05) if explode_at is None or s < explode_at else 1e3
        rows += [
            (names.DIAG_GRAD_NORM, g, s),
            (names.DIAG_HALT_AT_MAX.format(split=names.TRAIN), 0.3 + 0.1 * s / last_step, s),
            (names.DIAG_HALT_AT_MAX.format(split=names.EVAL), 0.25 + 0.1 * s / last_step, s),
        ]
    return rows


def health_tags(alerts: dict[str, str] | None) -> dict[str, str]:
    """hrm.alerts and hrm.alert.<rule> tags as the alert rules write them ({} = healthy)."""
    alerts = alerts or {}
    rules = {f"{names.TAG_ALERT_PREFIX}{k}": v for k, v in alerts.items()}
    return {names.TAG_ALERTS: ",".join(alerts), **rules}


def sweep_compute_totals(sweep: Sweep) -> dict[str, float]:
    """The parent-run totals the engine logs (compute/sweep_*), from the trials' rows."""
    flops = device = saved = 0.0
    seen = False
    for t in sweep.trials:
        last: dict[str, tuple[int, float]] = {}
        for k, v, st in t.metrics:
            if k.startswith(names.COMPUTE_PREFIX) and (k not in last or st >= last[k][0]):
                last[k] = (st, v)
        if names.COMPUTE_TRAIN_FLOPS not in last:
            continue
        seen = True
        flops += last[names.COMPUTE_TRAIN_FLOPS][1]
        device += last.get(names.COMPUTE_DEVICE_SECONDS, (0, 0.0))[1]
        if t.outcome == names.OUTCOME_EARLY_STOPPED and names.COMPUTE_PLANNED_FLOPS in last:
            saved += max(0.0, last[names.COMPUTE_PLANNED_FLOPS][1] - last[names.COMPUTE_TRAIN_FLOPS][1])
    if not seen:
        return {}
    return {
        names.COMPUTE_SWEEP_FLOPS: flops,
        names.COMPUTE_SWEEP_DEVICE_SECONDS: device,
        names.COMPUTE_SAVED_FLOPS: saved,
    }


def make_ablation(
    name: str,
    effects: dict[str, float],
    control: str = "control",
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    outcomes: dict[tuple[str, int], str] | None = None,
    budget: int = 200,
    eval_every: int = 20,
    base: float = 0.55,
    seed_sd: float = 0.05,
    noise_sd: float = 0.01,
    variants: dict[str, Sequence[str]] | None = None,
    stages: dict[str, Sequence[int]] | None = None,
    rng: int = 0,
    flops_per_step: dict[str, float] | None = None,
    alerts: dict[tuple[str, int], dict[str, str]] | None = None,
    health_checked: bool = False,
    diag: bool = False,
) -> Sweep:
    """Arms x seeds with planted effects on eval/exact_accuracy (``effects`` maps every
    non-control arm to its true difference; seeds shift all arms alike, so they pair).

    ``outcomes`` marks (arm, seed) runs as error / diverged / early_stopped / killed.
    ``flops_per_step`` (per arm) adds compute/* rows and the parent's compute totals;
    ``alerts`` ((arm, seed) -> {rule: "step n: message"}) and ``health_checked`` add the
    health tags (every run checked: hrm.alerts "" when healthy); ``diag`` adds diag/* rows.
    """
    r = np.random.default_rng(rng)
    outcomes = outcomes or {}
    variants = variants or {}
    stages = stages or {}
    seed_shift = {s: r.normal(0, seed_sd) for s in seeds}
    trials = []
    arms = [control, *[a for a in effects if a != control]]
    for seed in seeds:
        for arm in arms:
            outcome = outcomes.get((arm, seed), names.OUTCOME_COMPLETED)
            planted = base + effects.get(arm, 0.0) + seed_shift[seed]
            final = float(np.clip(planted + r.normal(0, noise_sd), 0, 1))
            last = budget if outcome == names.OUTCOME_COMPLETED else budget // 2
            steps_mean = 8.0 - 2.0 * effects.get(arm, 0.0) / max(abs(v) for v in [*effects.values(), 1e-9])
            rows = _trial_metrics(
                r,
                final,
                steps_mean,
                budget,
                last,
                eval_every,
                variants.get(arm, ()),
                diverge=outcome == names.OUTCOME_DIVERGED,
                stages=stages.get(arm, ()),
            )
            if outcome in (names.OUTCOME_ERROR, names.OUTCOME_KILLED):
                rows = [row for row in rows if row[0].startswith(names.TRAIN + "/")][: 3 * 10]  # died early
            died = outcome in (names.OUTCOME_ERROR, names.OUTCOME_KILLED)
            if flops_per_step and arm in flops_per_step and not died:
                rows += compute_rows(flops_per_step[arm], budget, last, eval_every)
            fired = (alerts or {}).get((arm, seed))
            if diag:
                explode = None
                if fired and "grad_explosion" in fired:
                    explode = int(fired["grad_explosion"].split(":")[0].split()[1])
                rows += diag_rows(r, last, eval_every, explode)
            params = {
                "seed": str(seed),
                "lr": "0.001",
                "arch.hidden_size": "64",
                "arch.use_gating": str("gate" in variants.get(arm, ())),
                "loss.feudal_loss_weight": "0.0",
            }
            extra = health_tags(fired) if health_checked or fired else {}
            trials.append(Trial(f"{arm}_s{seed}", arm, seed, outcome, params, rows, extra))
    tags = {
        names.TAG_SWEEP_KIND: "ablation",
        names.TAG_CONTROL: control,
        names.TAG_OBJECTIVE: names.EVAL_EXACT_ACCURACY,
        names.TAG_OBJECTIVE_MODE: "max",
    }
    sweep = Sweep(name, "ablation", tags, trials)
    sweep.parent_metrics = sweep_compute_totals(sweep)
    return sweep


def make_search(
    name: str,
    n_trials: int = 24,
    budget: int = 200,
    eval_every: int = 25,
    grace: int = 50,
    reduction: int = 2,
    rng: int = 0,
    flops_per_step: float | None = None,
    parent_totals: bool = True,
) -> Sweep:
    """An Optuna-style search: lr matters most, hidden size a little, dropout not at all;
    ASHA-like halving at rungs grace * reduction^k stops the worse half early.
    ``flops_per_step`` adds compute/* rows (x hidden/64 per trial) and, with
    ``parent_totals``, the parent's compute totals (without: the report computes them)."""
    r = np.random.default_rng(rng)
    trials, study = [], []
    rungs = []
    rung = grace
    while rung < budget:
        rungs.append(rung)
        rung *= reduction
    specs = []
    for i in range(n_trials):
        lr = float(10 ** r.uniform(-4, -2))
        hidden = int(r.choice([64, 128, 256]))
        dropout = float(r.uniform(0, 0.3))
        planted = 0.8 - 0.5 * (math.log10(lr) + 3) ** 2 + 0.02 * math.log2(hidden / 64)
        final = float(np.clip(planted + r.normal(0, 0.01), 0, 1))
        specs.append((i, lr, hidden, dropout, final))
    alive = list(range(n_trials))
    last_step = {i: budget for i in alive}
    for rung in rungs:  # keep the better half at each rung (early curve value ~ final)
        keep = sorted(alive, key=lambda i: -specs[i][4])[: max(1, len(alive) // reduction)]
        for i in set(alive) - set(keep):
            last_step[i] = rung
        alive = keep
    for i, lr, hidden, dropout, final in specs:
        stopped = last_step[i] < budget
        outcome = names.OUTCOME_EARLY_STOPPED if stopped else names.OUTCOME_COMPLETED
        rows = _trial_metrics(r, final, 6.0, budget, last_step[i], eval_every)
        if flops_per_step:
            rows += compute_rows(flops_per_step * hidden / 64, budget, last_step[i], eval_every)
        params = {
            "seed": "0",
            "lr": f"{lr:.6g}",
            "arch.hidden_size": str(hidden),
            "arch.dropout": f"{dropout:.4g}",
        }
        arm = f"lr={lr:.3g},arch.hidden_size={hidden},arch.dropout={dropout:.3g}"
        trials.append(Trial(f"t{i:03d}", arm, 0, outcome, params, rows))
        evals = [row for row in rows if row[0] == names.EVAL_EXACT_ACCURACY]
        study.append(
            {
                "params": {"lr": lr, "arch.hidden_size": hidden, "arch.dropout": dropout},
                "value": evals[-1][1] if evals else None,
                "pruned": stopped,
                "intermediate": {s: v for _, v, s in evals},
            }
        )
    tags = {
        names.TAG_SWEEP_KIND: "search",
        names.TAG_OBJECTIVE: names.EVAL_EXACT_ACCURACY,
        names.TAG_OBJECTIVE_MODE: "max",
    }
    sweep = Sweep(name, "search", tags, trials, study)
    if parent_totals:
        sweep.parent_metrics = sweep_compute_totals(sweep)
    return sweep


def write_optuna_study(sweep: Sweep, storage: str, study_name: str) -> None:
    """Persist the search's trials as an Optuna study (what the engine's searcher keeps)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "arch.hidden_size": optuna.distributions.CategoricalDistribution([64, 128, 256]),
        "arch.dropout": optuna.distributions.FloatDistribution(0.0, 0.3),
    }
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize", load_if_exists=True
    )
    state = optuna.trial.TrialState
    study.add_trials(
        [
            optuna.trial.create_trial(
                params=t["params"],
                distributions=dists,
                value=None if t["pruned"] else t["value"],
                state=state.PRUNED if t["pruned"] else state.COMPLETE,
                intermediate_values=t["intermediate"],
            )
            for t in sweep.study or []
        ]
    )


# --------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------
_TEMPLATE: dict[str, str] = {}


def new_store(directory: str) -> str:
    """A fresh MLflow SQLite store in ``directory``; the schema migration runs once per
    process and later stores are copies of that empty template."""
    from mlflow.tracking import MlflowClient

    if "path" not in _TEMPLATE:
        tmp = tempfile.mkdtemp(prefix="mlflow-template-")
        atexit.register(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "mlflow.db")
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates + migrates
        _TEMPLATE["path"] = path
    os.makedirs(directory, exist_ok=True)
    dest = os.path.join(os.path.abspath(directory), "mlflow.db")
    shutil.copyfile(_TEMPLATE["path"], dest)
    return f"sqlite:///{dest}"


def _experiment(client, sweep: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(names.experiment_name(sweep))
    if exp is not None:
        return exp.experiment_id
    location = f"file://{os.path.join(artifact_root, names.safe_name(sweep))}" if artifact_root else None
    kind = {names.TAG_MLFLOW_EXPERIMENT_KIND: names.EXPERIMENT_KIND}  # as the engine's ensure_experiment
    return client.create_experiment(names.experiment_name(sweep), artifact_location=location, tags=kind)


def _parent(client, exp_id: str, sweep: Sweep, status: str = "finished") -> str:
    tags = {
        names.TAG_RUN_KIND: names.RUN_KIND_SWEEP,
        names.TAG_SWEEP: sweep.name,
        names.TAG_SWEEP_STATUS: status,
        names.TAG_GIT_COMMIT: "0" * 40,
        names.TAG_SWEEP_HASH: "synthetic",
        **sweep.parent_tags,
    }
    run = client.create_run(exp_id, run_name=names.parent_run_name(sweep.name), tags=tags)
    return run.info.run_id


def _run_name(sweep: Sweep, trial: Trial) -> str:
    """As the engine names a trial's run: ``<arm>/seed<k>``, or a search trial's params."""
    return names.ablation_run_name(trial.arm, trial.seed) if sweep.kind == "ablation" else trial.arm


def _child_tags(sweep: Sweep, trial: Trial, parent_id: str) -> dict[str, str]:
    return {
        names.TAG_RUN_KIND: names.RUN_KIND_TRIAL,
        names.TAG_SWEEP: sweep.name,
        names.TAG_INVOCATION: parent_id,
        names.TAG_MLFLOW_PARENT: parent_id,
        names.TAG_TRIAL_ID: trial.trial_id,
        names.TAG_ARM: trial.arm,
        names.TAG_SEED: str(trial.seed),
        names.TAG_GIT_COMMIT: "0" * 40,
        names.TAG_GIT_DIRTY: "false",
        names.TAG_CONFIG_HASH: hashlib.sha256(f"{trial.arm}|{trial.seed}".encode()).hexdigest()[:16],
        names.TAG_DATASET_FINGERPRINT: "synthetic0000000",
    }


def write_sweep(
    tracking_uri: str, sweep: Sweep, artifact_root: str | None = None, optuna_dir: str | None = None
) -> str:
    """Write a sweep through MlflowClient (as the engine does). Returns the parent run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = _experiment(client, sweep.name, artifact_root)
    parent_id = _parent(client, exp_id, sweep)
    _attach_study(client, sweep, parent_id, optuna_dir)
    ts = int(time.time() * 1000)
    for trial in sweep.trials:
        run = client.create_run(
            exp_id,
            run_name=_run_name(sweep, trial),
            tags=_child_tags(sweep, trial, parent_id),
        )
        rid = run.info.run_id
        params = [Param(k, v) for k, v in trial.params.items()]
        metrics = [Metric(k, v, ts + s, s) for k, v, s in trial.metrics]
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[i : i + 1000])
        client.set_tag(rid, names.TAG_OUTCOME, trial.outcome)
        for k, v in trial.tags.items():
            client.set_tag(rid, k, v)
        if trial.outcome == names.OUTCOME_ERROR:
            client.set_tag(rid, names.TAG_ERROR, "RuntimeError: synthetic failure")
        client.set_terminated(rid, status=names.OUTCOME_STATUS[trial.outcome])
    for k, v in sweep.parent_metrics.items():
        client.log_metric(parent_id, k, v)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def _attach_study(client, sweep: Sweep, parent_id: str, optuna_dir: str | None) -> None:
    if sweep.study is None or optuna_dir is None:
        return
    os.makedirs(optuna_dir, exist_ok=True)
    db = f"{names.safe_name(sweep.name)}-{parent_id[:12]}.optuna.db"
    storage = f"sqlite:///{os.path.join(os.path.abspath(optuna_dir), db)}"
    write_optuna_study(sweep, storage, parent_id)
    client.set_tag(parent_id, names.TAG_OPTUNA_STORAGE, storage)
    client.set_tag(parent_id, names.TAG_OPTUNA_STUDY, parent_id)


def write_sweep_bulk(tracking_uri: str, sweep: Sweep, artifact_root: str | None = None) -> str:
    """Write a sweep into a SQLite store fast: experiment and parent run via MlflowClient,
    child runs with one ``executemany`` per MLflow table in a single transaction."""
    from mlflow.tracking import MlflowClient

    path = tracking_uri.removeprefix("sqlite:///")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = _experiment(client, sweep.name, artifact_root)
    location = client.get_experiment(exp_id).artifact_location
    parent_id = _parent(client, exp_id, sweep)
    now = int(time.time() * 1000)
    runs, tags, params, metrics, latest = [], [], [], [], []
    for trial in sweep.trials:
        rid = uuid.uuid4().hex
        run_name = _run_name(sweep, trial)
        status = names.OUTCOME_STATUS[trial.outcome]
        runs.append(
            (
                rid,
                run_name,
                "UNKNOWN",
                "",
                "",
                "synthetic",
                status,
                now,
                now + 60_000,
                "",
                "active",
                f"{location}/{rid}/artifacts",
                int(exp_id),
            )
        )
        run_tags = {
            **_child_tags(sweep, trial, parent_id),
            names.TAG_OUTCOME: trial.outcome,
            "mlflow.runName": run_name,
            **trial.tags,
        }
        tags += [(k, v, rid) for k, v in run_tags.items()]
        params += [(k, v, rid) for k, v in trial.params.items()]
        last: dict[str, tuple] = {}
        for k, v, s in trial.metrics:
            nan = v != v
            row = (k, 0.0 if nan else v, now + s, rid, s, int(nan))
            metrics.append(row)
            if k not in last or s >= last[k][4]:
                last[k] = row
        latest += [(k, row[1], row[2], row[4], row[5], rid) for k, row in last.items()]
    con = sqlite3.connect(path)
    try:
        with con:
            con.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                runs,
            )
            con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
            con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
            con.executemany(
                "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                metrics,
            )
            con.executemany(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?,?,?,?,?,?)",
                latest,
            )
    finally:
        con.close()
    for k, v in sweep.parent_metrics.items():
        client.log_metric(parent_id, k, v)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id
