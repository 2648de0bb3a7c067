"""``python -m sweeps run NAME --extend``: add seeds or arms to a finished ablation.

Only the (arm, seed) pairs the finished invocation does not already hold run, as a new
Tune experiment whose child runs go under the *same* MLflow parent run (reopened, then
marked finished again), so every report sees one sweep with all its seeds. Finished
trials are never rerun: their runs keep their end time and metrics.

An extension must be comparable with what it extends: the training configuration of
every arm the sweep already has, the base overrides, the objective, the control and the
dataset must be unchanged; only seeds, new arms and how to run (resources, concurrency,
budgets) may differ. Anything else is refused in one line, naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.spec import SweepSpec, file_hash, load_spec

TAG_EXTENSIONS = "hrm.extensions"  # how many times the invocation was extended
# Outcomes that are results of the experiment: such a pair is never run again. A pair
# whose earlier trials all failed (error/killed) is run by the extension.
DONE_OUTCOMES = (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED)
# Spec keys that say how to run, not what is measured: they may change in an extension.
FREE_KEYS = {"seeds", "arms", "description", "max_concurrent", "resources", "time_budget_s", "max_failures",
             "storage_path", "test_hooks", "scales", "num_samples", "sampler"}


def find_finished_invocation(name: str):
    """(client, parent run) of the latest finished invocation of sweep ``name``."""
    from hrm_core.tracking.sink import get_client

    client = get_client()
    exp = client.get_experiment_by_name(names.experiment_name(name))
    if exp is None:
        raise UserError(f"no sweep '{name}' in the MLflow store (experiment {names.experiment_name(name)}): run it before extending it")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}' and tags.`{names.TAG_SWEEP_STATUS}` = 'finished'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise UserError(f"sweep '{name}' has no finished invocation to extend (resume an unfinished one with: python -m sweeps resume {name})")
    return client, runs[0]


def child_runs(client, parent) -> list:
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{parent.info.run_id}'", max_results=10000
    )


def done_pairs(children) -> set[tuple[str, str]]:
    """(arm, seed) pairs the invocation already has a result for."""
    return {
        (c.data.tags.get(names.TAG_ARM, ""), c.data.tags.get(names.TAG_SEED, ""))
        for c in children
        if c.data.tags.get(names.TAG_OUTCOME) in DONE_OUTCOMES
    }


def check_comparable(old: dict, spec: SweepSpec, where: str) -> None:
    """Refuse an extension whose trials would not be comparable with the finished ones."""
    new = spec.model_dump()
    for key in sorted(set(old) | set(new)):
        if key in FREE_KEYS or old.get(key) == new.get(key):
            continue
        raise UserError(f"{where}: '{key}' changed since the invocation ran ({old.get(key)!r} -> {new.get(key)!r}); "
                        "an extension may only add seeds or arms: run a new sweep instead")
    for arm, overrides in (old.get("arms") or {}).items():
        if arm in spec.arms and list(spec.arms[arm]) != list(overrides):
            raise UserError(f"{where}: arms.{arm} changed since the invocation ran ({overrides} -> {spec.arms[arm]}); "
                            "give the changed arm a new name, or run a new sweep")


def _resolved_spec(client, parent_id: str) -> dict | None:
    import mlflow

    try:
        return json.loads(mlflow.artifacts.load_text(f"runs:/{parent_id}/sweep_resolved.json"))
    except Exception:  # noqa: BLE001 - an older invocation without the artifact
        return None


def extend_sweep(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None, log=print) -> str:
    """Run the sweep's (arm, seed) pairs that its latest finished invocation lacks, under
    that invocation's parent run. Returns the parent run id."""
    from ray import tune

    from hrm_core.observe.provenance import git_commit, git_dirty
    from hrm_core.tracking.sink import tracking_uri
    from sweeps import runner

    spec0, path = load_spec(name_or_path, scale, overrides)
    client, parent = find_finished_invocation(spec0.name)
    parent_id, tags = parent.info.run_id, parent.data.tags
    if spec0.kind != "ablation" or tags.get(names.TAG_SWEEP_KIND, "ablation") != "ablation":
        raise UserError(f"--extend adds seeds or arms to an ablation; '{spec0.name}' is a search: run a new search instead")
    # The scale the invocation ran at, unless told otherwise (a different one is refused below).
    prep = runner.prepare(path, scale or tags.get(runner.TAG_SCALE), overrides, log=log)
    spec = prep.spec
    old = _resolved_spec(client, parent_id)
    if old is not None:
        check_comparable(old, spec, path)
    else:
        log(f"invocation {parent_id} has no sweep_resolved.json: comparability of the configs is not checked")
    children = child_runs(client, parent)
    prints = {c.data.tags.get(names.TAG_DATASET_FINGERPRINT) for c in children} - {None, ""}
    now = set(prep.fingerprints.values())
    if prints and not prints <= now:
        raise UserError(f"{path}: the dataset changed since invocation {parent_id} ran (fingerprint {', '.join(sorted(now))}, "
                        f"was {', '.join(sorted(prints))}); run a new sweep instead")
    done = done_pairs(children)
    new_pairs = [(arm, seed) for seed in spec.seeds for arm in spec.arms if (arm, str(seed)) not in done]
    if not new_pairs:
        log(f"sweep {spec.name}: invocation {parent_id} already has every (arm, seed) of {path}; nothing to run")
        return parent_id
    retried = [p for p in new_pairs if any((c.data.tags.get(names.TAG_ARM), c.data.tags.get(names.TAG_SEED)) == (p[0], str(p[1]))
                                           for c in children)]
    if retried:
        log(f"these pairs' earlier trials failed and run again: {retried}")

    storage = os.path.abspath(spec.storage_path) if spec.storage_path and "://" not in spec.storage_path else (spec.storage_path or runner.DEFAULT_STORAGE)
    n = int(tags.get(TAG_EXTENSIONS, "0")) + 1
    uri = tracking_uri()
    common = {names.TAG_GIT_COMMIT: git_commit(), names.TAG_GIT_DIRTY: str(git_dirty()).lower()}
    runner._init_ray(spec)
    ctx, trainable, run_config, key = runner._tuner_parts(prep, parent_id, storage, uri, parent.info.experiment_id, common)
    # A Tune experiment of its own: the invocation's earlier one stays as it was.
    run_config = dataclasses.replace(run_config, name=f"{run_config.name}-ext{n}")
    tune_path = os.path.join(storage, run_config.name)
    tune_config, space = runner._tune_config_and_space(prep, ctx, key, "", parent_id)
    wanted = {(arm, seed) for arm, seed in new_pairs}
    space["__trial"] = tune.grid_search([t for t in space["__trial"]["grid_search"] if (t["arm"], t["seed"]) in wanted])

    # Reopen the parent: `resume` finds it unfinished (and this extension's Tune state)
    # if the extension is interrupted.
    client.update_run(parent_id, status="RUNNING")
    for k, v in {
        names.TAG_SWEEP_STATUS: "running", TAG_EXTENSIONS: str(n), runner.TAG_TUNE_PATH: tune_path,
        names.TAG_SWEEP_HASH: file_hash(path), runner.TAG_SWEEP_FILE: path,
    }.items():
        client.set_tag(parent_id, k, v)
    # What the invocation now holds: every arm it ever ran (so a later extension is still
    # checked against their definitions), every seed.
    resolved = spec.model_dump()
    if old is not None:
        resolved["arms"] = {**old.get("arms", {}), **resolved["arms"]}
        resolved["seeds"] = sorted(set(old.get("seeds", [])) | set(resolved["seeds"]))
    client.log_text(parent_id, json.dumps(resolved, indent=2, default=str), "sweep_resolved.json")
    client.log_text(parent_id, json.dumps({"extension": n, "time": time.time(), "tune_path": tune_path, "sweep_file": path,
                                           "added": [list(p) for p in new_pairs], "git_commit": common[names.TAG_GIT_COMMIT]},
                                          indent=2), f"extensions/ext{n}.json")
    log(f"extending sweep {spec.name}: parent run {parent_id}, {len(new_pairs)} new trial(s) {new_pairs}, Tune {tune_path}")
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)
    return runner._finish(tuner, client, parent_id, prep, log)
