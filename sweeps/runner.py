"""Run and resume sweeps: an invocation's MLflow parent run, and the Tune experiment it fits.

``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` are the only environment switches: without
them a private local Ray and the project's SQLite MLflow store are used.
"""

from __future__ import annotations

import json
import sys

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.overrides import record as record_overrides
from sweeps.overrides import recorded as recorded_overrides
from sweeps.prepare import Prepared, prepare
from sweeps.spec import SweepSpec, file_hash, load_spec
from sweeps.storage import locate
from sweeps.tuner import Invocation, build_tuner, can_restore, experiment_name, study_storage

SWEEP_RUNS = f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}'"  # every invocation's parent run


def run_sweep(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None,
              log=print, tags: dict[str, str] | None = None) -> str:
    """Run a sweep to the end (``tags``: more tags of its parent run). Returns the parent run id."""
    from hrm_core.observe.provenance import provenance_tags
    from hrm_core.tracking.client import ensure_experiment, get_client
    from hrm_core.tracking.describe import describe_experiment, sweep_note
    from hrm_core.tracking.probe import probe
    from hrm_core.tracking.uris import tracking_uri

    probe(tracking_uri())  # an unreachable server fails in seconds, before anything starts
    prep = prepare(name_or_path, scale, overrides, log=log)
    spec = prep.spec
    uri = tracking_uri()
    client = get_client(uri)
    experiment_id = ensure_experiment(client, names.experiment_name(spec.name))
    describe_experiment(client, experiment_id, sweep_note(prep.path, spec.description))  # what it studies
    common = provenance_tags()
    parent_id = open_parent_run(client, experiment_id, prep, common)
    for key, value in (tags or {}).items():
        client.set_tag(parent_id, key, value)
    experiment = locate(spec.storage_path).child(experiment_name(spec.name, parent_id))
    client.set_tag(parent_id, names.TAG_TUNE_PATH, experiment.uri)
    study = ""
    if spec.kind == "search":
        study = study_storage(experiment)
        client.set_tag(parent_id, names.TAG_OPTUNA_STORAGE, study)
        client.set_tag(parent_id, names.TAG_OPTUNA_STUDY, parent_id)
    log(f"sweep {spec.name} ({spec.kind}, scale {spec.scale}): parent run {parent_id}, MLflow {uri}, "
        f"Tune {experiment.uri}")
    invocation = Invocation(uri, experiment_id, parent_id, common)
    tuner = build_tuner(prep, experiment, invocation=invocation, study=study)
    return fit_and_summarise(tuner, client, parent_id, spec, log)


def open_parent_run(client, experiment_id: str, prep: Prepared, provenance: dict[str, str]) -> str:
    """The invocation's parent run, with the sweep file and its resolved form attached."""
    from hrm_core.tracking.source import source_tags

    spec = prep.spec
    parent = client.create_run(
        experiment_id,
        run_name=names.parent_run_name(spec.name),
        tags={
            **source_tags(),  # MLflow's user, source and git commit, as its fluent API sets them
            names.TAG_RUN_KIND: names.RUN_KIND_SWEEP, names.TAG_SWEEP: spec.name,
            names.TAG_SWEEP_KIND: spec.kind,
            names.TAG_OBJECTIVE: spec.objective.metrics[0], names.TAG_OBJECTIVE_MODE: spec.objective.modes[0],
            names.TAG_SWEEP_HASH: file_hash(prep.path), **provenance,
            names.TAG_SWEEP_STATUS: "running", names.TAG_SWEEP_FILE: prep.path, names.TAG_SCALE: spec.scale,
            names.TAG_SWEEP_OVERRIDES: record_overrides(prep.overrides),
            **({names.TAG_CONTROL: spec.control} if spec.control else {}),
        },
    )
    parent_id = parent.info.run_id
    client.log_artifact(parent_id, prep.path)
    client.log_text(parent_id, json.dumps(spec.resolved(), indent=2, default=str), "sweep_resolved.json")
    return parent_id


def fit_and_summarise(tuner, client, parent_id: str, spec: SweepSpec, log=print) -> str:
    """Fit the Tuner, then summarise the trials on the parent run and mark it finished."""
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "interrupted")
        raise
    summary = summarise(client, parent_id, spec)
    client.log_text(parent_id, json.dumps(summary, indent=2), "summary.json")
    for key, value in summary["outcomes"].items():
        client.log_metric(parent_id, f"sweep/{key}", value)
    # the compute/sweep_* totals (hrm_core/observe/compute.py)
    for key, value in summary.get("compute", {}).items():
        client.log_metric(parent_id, key, value)
    client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "finished")
    client.set_terminated(parent_id, "FINISHED")
    del results
    watch = current_watch()
    if watch is not None:  # its summary table, once the report is written too
        from hrm_core.tracking.ui import run_url
        from hrm_core.tracking.uris import tracking_uri

        experiment_id = client.get_run(parent_id).info.experiment_id
        watch.summarised(summary, run_url(tracking_uri(), experiment_id, parent_id))
        return parent_id
    log(f"sweep {spec.name} finished: {summary['outcomes']}; parent run {parent_id}")
    log(f"MLflow UI: make mlflow-ui (experiment {names.experiment_name(spec.name)})")
    return parent_id


def child_runs(client, experiment_id: str, parent_id: str) -> list:
    """The trial runs of an invocation."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'",
                              max_results=10000)


def outcome_counts(runs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in runs:
        o = r.data.tags.get(names.TAG_OUTCOME, "running")
        counts[o] = counts.get(o, 0) + 1
    return counts


def summarise(client, parent_id: str, spec: SweepSpec) -> dict:
    from hrm_core.observe.compute import sweep_totals

    runs = child_runs(client, client.get_run(parent_id).info.experiment_id, parent_id)
    metric = spec.objective.metrics[0]
    # the best of a search is its own trials' (not the confirmation stage's: sweeps/confirm.py)
    scored = [(r.data.metrics[metric], r.data.tags.get(names.TAG_ARM), r)
              for r in runs if r.data.metrics.get(metric) is not None
              and r.data.tags.get(names.TAG_STAGE) != names.STAGE_CONFIRM]
    mode = spec.objective.modes[0]
    pick = max if mode == "max" else min
    best = pick(scored, default=(None, None, None), key=lambda x: x[0])
    compute = sweep_totals((r.data.metrics, r.data.tags) for r in runs)
    run = best[2]
    best_run = {"name": run.info.run_name, "run_id": run.info.run_id, "value": best[0]} if run else None
    return {"sweep": spec.name, "kind": spec.kind, "trials": len(runs), "outcomes": outcome_counts(runs),
            "objective": metric, "mode": mode, "best_value": best[0], "best_arm": best[1],
            "best_run": best_run, "per_arm": per_arm(runs, metric, pick), "compute": compute}


def per_arm(runs, metric: str, pick) -> dict[str, dict]:
    """Per arm (a search: per sampled point), its runs' outcomes and best ``metric``."""
    arms: dict[str, dict] = {}
    for r in runs:
        arm = arms.setdefault(r.data.tags.get(names.TAG_ARM, ""), {"outcomes": {}, "best": None})
        outcome = r.data.tags.get(names.TAG_OUTCOME, "running")
        arm["outcomes"][outcome] = arm["outcomes"].get(outcome, 0) + 1
        value = r.data.metrics.get(metric)
        if value is not None and (arm["best"] is None or pick(value, arm["best"]) == value):
            arm["best"] = value
    return arms


def current_watch():
    """The live display of this command (``sweeps/watch.py``), or None (quiet, or a library call)."""
    from sweeps.watch import current

    return current()


def find_invocation(name: str, invocation: str | None = None):
    """The parent run to resume: the given one, or the latest that did not finish."""
    from hrm_core.tracking.client import get_client

    client = get_client()
    exp = client.get_experiment_by_name(names.experiment_name(name))
    if exp is None:
        raise UserError(f"no sweep '{name}' in the MLflow store (experiment {names.experiment_name(name)})")
    if invocation:
        return client, client.get_run(invocation)
    runs = client.search_runs([exp.experiment_id], filter_string=SWEEP_RUNS,
                              order_by=["attributes.start_time DESC"])
    for run in runs:
        if run.data.tags.get(names.TAG_SWEEP_STATUS) != "finished":
            return client, run
    raise UserError(f"sweep '{name}' has no unfinished invocation to resume")


def resume_sweep(name_or_path: str, invocation: str | None = None, log=print) -> str:
    """Finish an interrupted sweep: finished trials are kept, interrupted ones continue."""
    from hrm_core.tracking.probe import probe
    from hrm_core.tracking.uris import tracking_uri

    probe(tracking_uri())
    spec0, path = load_spec(name_or_path)
    client, parent = find_invocation(spec0.name, invocation)
    tags = parent.data.tags
    if tags.get(names.TAG_SWEEP_HASH) != file_hash(path):
        raise UserError(f"{path} changed since invocation {parent.info.run_id} started; "
                        "resume refuses (run it anew)")
    prep = prepare(path, tags.get(names.TAG_SCALE), recorded_overrides(tags), log=log)  # as it ran
    experiment = locate(tags[names.TAG_TUNE_PATH])
    if not can_restore(experiment):
        raise UserError(f"no Tune state to restore at {experiment.uri}")
    parent_id = parent.info.run_id
    client.update_run(parent_id, status="RUNNING")
    client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "running")
    # The logger finds each trial's own MLflow run again by its tags.
    tuner = build_tuner(prep, experiment)
    log(f"resuming sweep {prep.spec.name}: parent run {parent_id}, Tune {experiment.uri}")
    return fit_and_summarise(tuner, client, parent_id, prep.spec, log)


def write_report(parent_id: str, log=print) -> None:
    """Write the sweep's report (notebook + HTML, attached to the parent run)."""
    retry = f"python -m analysis.report --parent-run {parent_id}"
    try:
        from analysis.report import build_report
    except ImportError as err:
        log(f"report skipped ({err}); install the 'report' extra and run: {retry}")
        return
    from hrm_core.tracking.uris import tracking_uri

    try:
        res = build_report(parent_run=parent_id, tracking_uri=tracking_uri())
    except Exception as err:  # noqa: BLE001 - the sweep's results stand; say how to retry
        log(f"report failed: {type(err).__name__}: {err}; retry with: {retry}")
        return
    log(res.summary())
    if (watch := current_watch()) is not None:  # the summary table names it
        watch.report = str(res.html)


def list_sweeps(out=None) -> None:
    from hrm_core.tracking.client import get_client
    from sweeps.prune import footprint

    out = out or sys.stdout  # the stream at call time (not at import)
    client = get_client()
    for exp in client.search_experiments():
        if not exp.name.startswith(names.EXPERIMENT_PREFIX):
            continue
        runs = client.search_runs([exp.experiment_id], filter_string=SWEEP_RUNS,
                                  order_by=["attributes.start_time DESC"])
        for r in runs:
            counts = outcome_counts(child_runs(client, exp.experiment_id, r.info.run_id))
            print(f"{exp.name[len(names.EXPERIMENT_PREFIX):]:<20} {r.info.run_id}  {r.info.run_name:<36} "
                  f"{r.data.tags.get(names.TAG_SWEEP_STATUS, '?'):<11} {counts}  disk {footprint(r)}"
                  f"{'  pruned' if names.TAG_PRUNED in r.data.tags else ''}", file=out)
