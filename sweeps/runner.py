"""Run and resume sweeps: validation, datasets, the MLflow parent run, Ray Tune.

``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` are the only environment switches: without
them a private local Ray and the project's SQLite MLflow store are used.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.spec import PROJECT, SweepSpec, file_hash, load_spec
from sweeps.validate import validate

DEFAULT_STORAGE = os.path.join(PROJECT, "ray_results")
TAG_TUNE_PATH = "hrm.tune_path"
TAG_SWEEP_FILE = "hrm.sweep_file"
TAG_SCALE = "hrm.scale"


@dataclass
class Prepared:
    spec: SweepSpec
    path: str
    planned_steps: int
    fingerprints: dict[str, str]  # dataset path -> content fingerprint, for each dataset the trials train on


def prepare(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None, log=print) -> Prepared:
    """Everything that can fail on bad input, before Ray or MLflow: validation, datasets."""
    from hrm_core.data.format import dataset_fingerprint, load_metadata
    from hrm_core.data.resolve import resolve_data_path, stage_data_paths
    from hrm_core.data.sampler import total_train_steps

    spec, path = load_spec(name_or_path, scale, overrides)
    configs = validate(spec, path)
    planned, fingerprints = 0, {}
    for cfg in configs:  # datasets are built once per sweep, here, not once per trial
        data_path = resolve_data_path(cfg, log=log)
        stage_data_paths(cfg, data_path, log=log)
        if data_path not in fingerprints:  # arms may train on different datasets
            fingerprints[data_path] = dataset_fingerprint(data_path)
        meta = load_metadata(data_path, "train")
        steps = cfg.curriculum.total_steps if cfg.curriculum.enabled else total_train_steps(meta, cfg.epochs, cfg.global_batch_size)
        planned = max(planned, min(steps, cfg.max_steps) if cfg.max_steps else steps)
    return Prepared(spec, path, planned, fingerprints)


def _init_ray(spec: SweepSpec) -> None:
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's CSV/TensorBoard loggers choke on the metric history in each result; MLflow is
    # the record, and a JSON logger (added in the run config) keeps Tune's own view.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A trial restored at its very last checkpoint reports its outcome without new metrics.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # a private local Ray: never attach to whatever else runs here
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)


def _tuner_parts(prep: Prepared, parent_id: str, storage: str, uri: str, experiment_id: str, common_tags: dict):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweeps.mlflow_callback import MlflowTrialLogger
    from trainables.hrm_trainable import SWEEP_KEY, train_hrm
    from trainables.resources import trial_resources

    spec = prep.spec
    ctx = {
        "base": list(spec.base),
        "cpus_per_trial": spec.resources.cpu,
        "gpus_per_trial": spec.resources.gpu,
        "workers_per_trial": spec.resources.workers,
        "dataset_fingerprints": prep.fingerprints,
        "name": spec.name,
        **spec.test_hooks.model_dump(),
    }
    trainable = tune.with_resources(train_hrm, trial_resources(spec.resources))
    spool_dir = storage if "://" not in storage else DEFAULT_STORAGE
    callback = MlflowTrialLogger(uri, experiment_id, parent_id, spec.name, common_tags, spool_dir=spool_dir)
    run_config = tune.RunConfig(
        name=f"{spec.name}-{parent_id[:12]}",
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[callback, JsonLoggerCallback()],
        verbose=0,
    )
    return ctx, trainable, run_config, SWEEP_KEY


def _concurrency(spec: SweepSpec) -> int:
    """Never more trials at once than the cluster can hold (a DDP trial holds its workers)."""
    import ray

    from trainables.resources import max_concurrent_trials

    return max_concurrent_trials(spec.resources, spec.max_concurrent, ray.cluster_resources())


def _tune_config_and_space(prep: Prepared, ctx: dict, sweep_key: str, study_storage: str, study_name: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = prep.spec
    metrics, modes = spec.objective.metrics, spec.objective.modes
    # reuse_actors: a finished trial's worker process takes the next trial (no new process,
    # no second torch import); every trial sets its own threads, seeds and data anyway.
    if spec.kind == "ablation":
        trials = [
            {"arm": arm, "seed": seed, "overrides": [*overrides, f"seed={seed}"]}
            for seed in spec.seeds
            for arm, overrides in spec.arms.items()
        ]
        space = {sweep_key: ctx, "__trial": tune.grid_search(trials)}
        cfg = tune.TuneConfig(num_samples=1, max_concurrent_trials=_concurrency(spec), time_budget_s=spec.time_budget_s, reuse_actors=True)
        return cfg, space
    import optuna
    from optuna.storages import RDBStorage

    from sweeps.optuna_search import HRMOptunaSearch, distributions

    sampler = (optuna.samplers.TPESampler if spec.sampler.type == "tpe" else optuna.samplers.RandomSampler)(seed=spec.sampler.seed)
    searcher = HRMOptunaSearch(
        space=distributions(spec.space),
        metric=metrics if spec.objective.multi else metrics[0],
        mode=modes if spec.objective.multi else modes[0],
        sampler=sampler,
        storage=RDBStorage(study_storage),
        study_name=study_name,
    )
    sched = spec.scheduler_or_default
    scheduler = None
    if sched.type == "asha":
        rung = sched.rung_metric or metrics[0]
        scheduler = ASHAScheduler(
            time_attr=sched.time_attr, metric=rung, mode=modes[metrics.index(rung)],
            max_t=sched.max_t or prep.planned_steps, grace_period=sched.grace_period, reduction_factor=sched.reduction_factor,
        )
    seed = spec.seeds[0]
    ctx = {**ctx, "base": [*ctx["base"], f"seed={seed}"]}
    cfg = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
        max_concurrent_trials=_concurrency(spec), time_budget_s=spec.time_budget_s, reuse_actors=True,
    )
    return cfg, {sweep_key: ctx}


def run_sweep(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None, log=print) -> str:
    """Run a sweep to the end. Returns the parent run id."""
    from hrm_core.observe.provenance import git_commit, git_dirty
    from hrm_core.tracking.sink import ensure_experiment, get_client, tracking_uri
    from sweeps.tracking_health import probe

    probe(tracking_uri())  # an unreachable server fails in seconds, before anything starts
    prep = prepare(name_or_path, scale, overrides, log=log)
    spec = prep.spec
    uri = tracking_uri()
    client = get_client(uri)
    experiment_id = ensure_experiment(client, names.experiment_name(spec.name))
    storage = os.path.abspath(spec.storage_path) if spec.storage_path and "://" not in spec.storage_path else (spec.storage_path or DEFAULT_STORAGE)
    commit, dirty = git_commit(), str(git_dirty()).lower()
    parent = client.create_run(
        experiment_id,
        run_name=names.parent_run_name(spec.name),
        tags={
            names.TAG_RUN_KIND: names.RUN_KIND_SWEEP, names.TAG_SWEEP: spec.name, names.TAG_SWEEP_KIND: spec.kind,
            names.TAG_OBJECTIVE: spec.objective.metrics[0], names.TAG_OBJECTIVE_MODE: spec.objective.modes[0],
            names.TAG_SWEEP_HASH: file_hash(prep.path), names.TAG_GIT_COMMIT: commit, names.TAG_GIT_DIRTY: dirty,
            names.TAG_SWEEP_STATUS: "running", TAG_SWEEP_FILE: prep.path, TAG_SCALE: spec.scale,
            **({names.TAG_CONTROL: spec.control} if spec.control else {}),
        },
    )
    parent_id = parent.info.run_id
    client.log_artifact(parent_id, prep.path)
    client.log_text(parent_id, json.dumps(spec.model_dump(), indent=2, default=str), "sweep_resolved.json")
    tune_path = os.path.join(storage, f"{spec.name}-{parent_id[:12]}") if "://" not in storage else f"{storage.rstrip('/')}/{spec.name}-{parent_id[:12]}"
    study_dir = storage if "://" not in storage else DEFAULT_STORAGE  # the Optuna study is a local SQLite file
    os.makedirs(study_dir, exist_ok=True)
    study_storage = f"sqlite:///{os.path.join(study_dir, f'{spec.name}-{parent_id[:12]}.optuna.db')}"
    client.set_tag(parent_id, TAG_TUNE_PATH, tune_path)
    if spec.kind == "search":
        client.set_tag(parent_id, names.TAG_OPTUNA_STORAGE, study_storage)
        client.set_tag(parent_id, names.TAG_OPTUNA_STUDY, parent_id)
    common = {names.TAG_GIT_COMMIT: commit, names.TAG_GIT_DIRTY: dirty}
    log(f"sweep {spec.name} ({spec.kind}, scale {spec.scale}): parent run {parent_id}, MLflow {uri}, Tune {tune_path}")
    from ray import tune

    _init_ray(spec)
    ctx, trainable, run_config, key = _tuner_parts(prep, parent_id, storage, uri, experiment_id, common)
    tune_config, space = _tune_config_and_space(prep, ctx, key, study_storage, parent_id)
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)
    return _finish(tuner, client, parent_id, prep, log)


def _finish(tuner, client, parent_id: str, prep: Prepared, log) -> str:
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "interrupted")
        raise
    summary = summarise(client, parent_id, prep.spec)
    client.log_text(parent_id, json.dumps(summary, indent=2), "summary.json")
    for key, value in summary["outcomes"].items():
        client.log_metric(parent_id, f"sweep/{key}", value)
    for key, value in summary.get("compute", {}).items():  # compute/sweep_* totals (hrm_core/observe/compute.py)
        client.log_metric(parent_id, key, value)
    client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "finished")
    client.set_terminated(parent_id, "FINISHED")
    del results
    log(f"sweep {prep.spec.name} finished: {summary['outcomes']}; parent run {parent_id}")
    log(f"MLflow UI: make mlflow-ui (experiment {names.experiment_name(prep.spec.name)})")
    return parent_id


def summarise(client, parent_id: str, spec: SweepSpec) -> dict:
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'", max_results=10000)
    outcomes: dict[str, int] = {}
    for r in runs:
        o = r.data.tags.get(names.TAG_OUTCOME, "running")
        outcomes[o] = outcomes.get(o, 0) + 1
    metric = spec.objective.metrics[0]
    scored = [(r.data.metrics.get(metric), r.data.tags.get(names.TAG_ARM)) for r in runs if r.data.metrics.get(metric) is not None]
    best = (max if spec.objective.modes[0] == "max" else min)(scored, default=(None, None), key=lambda x: x[0])
    from hrm_core.observe.compute import sweep_totals

    compute = sweep_totals((r.data.metrics, r.data.tags) for r in runs)
    return {"trials": len(runs), "outcomes": outcomes, "objective": metric, "best_value": best[0], "best_arm": best[1],
            "compute": compute}


def find_invocation(name: str, invocation: str | None = None):
    """The parent run to resume: the given one, or the latest that did not finish."""
    from hrm_core.tracking.sink import get_client

    client = get_client()
    exp = client.get_experiment_by_name(names.experiment_name(name))
    if exp is None:
        raise UserError(f"no sweep '{name}' in the MLflow store (experiment {names.experiment_name(name)})")
    if invocation:
        return client, client.get_run(invocation)
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}'", order_by=["attributes.start_time DESC"]
    )
    for run in runs:
        if run.data.tags.get(names.TAG_SWEEP_STATUS) != "finished":
            return client, run
    raise UserError(f"sweep '{name}' has no unfinished invocation to resume")


def resume_sweep(name_or_path: str, invocation: str | None = None, log=print) -> str:
    """Finish an interrupted sweep: finished trials are kept, interrupted ones continue."""
    from ray import tune

    from hrm_core.tracking.sink import tracking_uri
    from sweeps.tracking_health import probe
    from trainables.hrm_trainable import train_hrm

    probe(tracking_uri())
    spec0, path = load_spec(name_or_path)
    client, parent = find_invocation(spec0.name, invocation)
    tags = parent.data.tags
    if tags.get(names.TAG_SWEEP_HASH) != file_hash(path):
        raise UserError(f"{path} changed since invocation {parent.info.run_id} started; resume refuses (run it anew)")
    prep = prepare(path, tags.get(TAG_SCALE), log=log)
    tune_path = tags[TAG_TUNE_PATH]
    if not tune.Tuner.can_restore(tune_path):
        raise UserError(f"no Tune state to restore at {tune_path}")
    parent_id = parent.info.run_id
    client.update_run(parent_id, status="RUNNING")
    client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "running")
    _init_ray(prep.spec)
    from trainables.resources import trial_resources

    trainable = tune.with_resources(train_hrm, trial_resources(prep.spec.resources))
    # The run config, with the MLflow logger, is restored from the Tune state; the logger
    # finds each trial's own MLflow run again by its tags.
    tuner = tune.Tuner.restore(tune_path, trainable, resume_unfinished=True, restart_errored=True)
    log(f"resuming sweep {prep.spec.name}: parent run {parent_id}, Tune {tune_path}")
    return _finish(tuner, client, parent_id, prep, log)


def write_report(parent_id: str, log=print) -> None:
    """Write the sweep's report (notebook + HTML, attached to the parent run)."""
    try:
        from analysis.report import build_report
    except ImportError as err:
        log(f"report skipped ({err}); install the 'report' extra and run: python -m analysis.report --parent-run {parent_id}")
        return
    from hrm_core.tracking.sink import tracking_uri

    try:
        res = build_report(parent_run=parent_id, tracking_uri=tracking_uri())
    except Exception as err:  # noqa: BLE001 - the sweep's results stand; say how to retry
        log(f"report failed: {type(err).__name__}: {err}; retry with: python -m analysis.report --parent-run {parent_id}")
        return
    log(res.summary())


def list_sweeps(out=sys.stdout) -> None:
    from hrm_core.tracking.sink import get_client

    client = get_client()
    for exp in client.search_experiments():
        if not exp.name.startswith(names.EXPERIMENT_PREFIX):
            continue
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}'",
                                  order_by=["attributes.start_time DESC"])
        for r in runs:
            kids = client.search_runs([exp.experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{r.info.run_id}'", max_results=10000)
            counts: dict[str, int] = {}
            for k in kids:
                o = k.data.tags.get(names.TAG_OUTCOME, "running")
                counts[o] = counts.get(o, 0) + 1
            print(f"{exp.name[len(names.EXPERIMENT_PREFIX):]:<20} {r.info.run_id}  {r.info.run_name:<36} "
                  f"{r.data.tags.get(names.TAG_SWEEP_STATUS, '?'):<11} {counts}", file=out)
