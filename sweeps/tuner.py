"""The Ray Tune side of a sweep: ``build_tuner`` makes the ``Tuner`` that ``run``, ``resume``
and ``--extend`` fit, and ``init_ray`` the Ray it runs on.

An ablation is a grid of (arm, seed) trials; a search samples its space with Optuna (an
``HRMOptunaSearch`` whose study persists in SQLite) under an optional ASHA scheduler. Every
trial gets the sweep's constant context (``trainables.trial.SWEEP_KEY``); the driver's
``MlflowTrialLogger`` writes each trial's results under the invocation's parent run.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from sweeps.prepare import Prepared
from sweeps.spec import SweepSpec
from sweeps.storage import Location


@dataclass(frozen=True)
class Invocation:
    """The MLflow parent run a sweep's trials log under."""

    uri: str  # the tracking URI
    experiment_id: str
    parent_id: str
    common_tags: dict[str, str]  # tags every trial's run carries (git commit, dirty)


def init_ray() -> None:
    """Ray at ``RAY_ADDRESS``, or a private local Ray (never whatever else runs here)."""
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
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)


def experiment_name(sweep: str, parent_id: str) -> str:
    """The Tune experiment (and Optuna study file) of an invocation."""
    return f"{sweep}-{parent_id[:12]}"


def study_storage(experiment: Location) -> str:
    """The SQLite URL of a search's Optuna study: a local file named like the experiment."""
    folder = experiment.parent().local_dir
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, f'{experiment.name}.optuna.db')}"


def build_tuner(prep: Prepared, experiment: Location, *, invocation: Invocation | None = None,
                study: str = "", only: set[tuple[str, int]] | None = None, stage: str | None = None):
    """The ``Tuner`` of the Tune experiment at ``experiment``; starts Ray if needed.

    With ``invocation``: a new experiment whose trials log under that parent run (a search
    keeps its Optuna study in ``study``; ``only`` keeps just these (arm, seed) pairs of an
    ablation; ``stage``: its runs' ``hrm.stage`` tag). Without it: the experiment stored there,
    restored to finish its unfinished and errored trials (its run config, with the MLflow
    logger, is restored with it).
    """
    from ray import tune

    from sweeps.watch import current as current_watch
    from trainables.hrm_trainable import train_hrm
    from trainables.resources import trial_resources

    spec = prep.spec
    init_ray()
    trainable = tune.with_resources(train_hrm, trial_resources(spec.resources))
    watch = current_watch()
    if watch is not None:  # the trials' count: as planned, or (restored) as many as Tune holds
        planned = 0 if invocation is None else len(only) if only else _planned_trials(spec)
        watch.begin(spec, experiment, planned, prep.planned_steps)
    if invocation is None:
        return tune.Tuner.restore(experiment.path, trainable, resume_unfinished=True, restart_errored=True,
                                  storage_filesystem=experiment.fs)
    context = _trial_context(spec, prep.fingerprints)
    if stage:  # the MLflow logger tags the trial's run with it (sweeps/confirm.py)
        context["stage"] = stage
    if spec.kind == "ablation":
        tune_config, space = _ablation(spec, context, only)
    else:
        tune_config, space = _search(spec, context, study, invocation.parent_id, prep.planned_steps)
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                      run_config=_run_config(spec, experiment, invocation))


def _planned_trials(spec: SweepSpec) -> int:
    return len(spec.arms) * len(spec.seeds) if spec.kind == "ablation" else spec.num_samples


def can_restore(experiment: Location) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment.path, storage_filesystem=experiment.fs)


def _trial_context(spec: SweepSpec, fingerprints: dict[str, str]) -> dict:
    """What every trial of the sweep is told (``trainables/trial.py`` reads it)."""
    from trainables import faults
    from trainables.trial import FAULTS_KEY, SCORE_KEY

    return {
        "base": list(spec.base),
        "cpus_per_trial": spec.resources.cpu,
        "gpus_per_trial": spec.resources.gpu,
        "workers_per_trial": spec.resources.workers,
        "dataset_fingerprints": fingerprints,
        "name": spec.name,
        SCORE_KEY: spec.objective.metrics[0],  # ranks a trial's checkpoints (keep_checkpoints: best)
        FAULTS_KEY: faults.from_env(),  # tests only: {} in a real sweep
    }


def _run_config(spec: SweepSpec, experiment: Location, invocation: Invocation):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweeps.mlflow_callback import MlflowTrialLogger
    from sweeps.watch import ProgressCallback

    storage = experiment.parent()
    logger = MlflowTrialLogger(invocation.uri, invocation.experiment_id, invocation.parent_id, spec.name,
                               invocation.common_tags, spool_dir=storage.local_dir)
    return tune.RunConfig(
        name=experiment.name,
        storage_path=storage.path,
        storage_filesystem=storage.fs,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=checkpoint_config(spec),
        callbacks=[logger, JsonLoggerCallback(), ProgressCallback()],  # (the live display: sweeps/watch.py)
        verbose=0,
    )


def checkpoint_config(spec: SweepSpec):
    """What each trial keeps of its Tune checkpoints (``keep_checkpoints``). Tune always keeps
    a trial's latest, so ``best`` (one kept by the objective) is the last plus the best."""
    from ray import tune

    from trainables.tune_sink import SCORE

    keep = spec.keep_checkpoints
    if keep == "all":
        return tune.CheckpointConfig()
    if keep == "best":
        return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                     checkpoint_score_order=spec.objective.modes[0])
    return tune.CheckpointConfig(num_to_keep=1 if keep == "last" else int(keep))


def _concurrency(spec: SweepSpec) -> int:
    """Never more trials at once than the cluster can hold (a DDP trial holds its workers)."""
    import ray

    from trainables.resources import max_concurrent_trials

    return max_concurrent_trials(spec.resources, spec.max_concurrent, ray.cluster_resources())


# reuse_actors: a finished trial's worker process takes the next trial (no new process, no
# second torch import); every trial sets its own threads, seeds and data anyway.
def _ablation(spec: SweepSpec, context: dict, only: set[tuple[str, int]] | None):
    """Every (arm, seed) pair once (``only``: just these), seed by seed."""
    from ray import tune

    from trainables.trial import SWEEP_KEY, TRIAL_KEY

    trials = [
        {"arm": arm, "seed": seed, "overrides": [*overrides, f"seed={seed}"]}
        for seed in spec.seeds
        for arm, overrides in spec.arms.items()
        if only is None or (arm, seed) in only
    ]
    space = {SWEEP_KEY: context, TRIAL_KEY: tune.grid_search(trials)}
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=_concurrency(spec),
                                  time_budget_s=spec.time_budget_s, reuse_actors=True)
    return tune_config, space


def _search(spec: SweepSpec, context: dict, study: str, study_name: str, planned_steps: int):
    """``num_samples`` points of the space, drawn by Optuna, at the sweep's first seed."""
    import optuna
    from optuna.storages import RDBStorage
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.optuna_search import HRMOptunaSearch, distributions
    from trainables.trial import SWEEP_KEY

    metrics, modes = spec.objective.metrics, spec.objective.modes
    multi = spec.objective.multi
    sampler_type = optuna.samplers.TPESampler if spec.sampler.type == "tpe" else optuna.samplers.RandomSampler
    searcher = HRMOptunaSearch(
        space=distributions(spec.space),
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=sampler_type(seed=spec.sampler.seed),
        storage=RDBStorage(study),
        study_name=study_name,
    )
    with warnings.catch_warnings():  # experimental in Optuna; names the objectives in reports and dashboards
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.load_study(study_name=study_name, storage=study).set_metric_names(list(metrics))
    sched = spec.scheduler_or_default
    scheduler = None
    if sched.type == "asha":
        rung = sched.rung_metric or metrics[0]
        scheduler = ASHAScheduler(
            time_attr=sched.time_attr, metric=rung, mode=modes[metrics.index(rung)],
            max_t=sched.max_t or planned_steps, grace_period=sched.grace_period,
            reduction_factor=sched.reduction_factor,
        )
    context = {**context, "base": [*context["base"], f"seed={spec.seeds[0]}"]}
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
        max_concurrent_trials=_concurrency(spec), time_budget_s=spec.time_budget_s, reuse_actors=True,
    )
    return tune_config, {SWEEP_KEY: context}
