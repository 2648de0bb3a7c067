"""``python -m sweeps run NAME --extend``: add seeds or arms to a finished ablation.

Only the (arm, seed) pairs the finished invocation does not already hold run, as a new
Tune experiment whose child runs go under the *same* MLflow parent run (reopened, then
marked finished again), so every report sees one sweep with all its seeds. Finished
trials are never rerun: their runs keep their end time and metrics.

An extension must be comparable with what it extends: the training configuration of
every arm the sweep already has, the base overrides, the objective, the control and the
dataset must be unchanged; only seeds, new arms and how to run (resources, concurrency,
budgets) may differ. Anything else is refused in one line, naming the key.

Seeds and arms are added in the sweep file. An extension takes no command-line overrides:
it re-applies the invocation's recorded ones (``hrm.sweep_overrides``), except ``seeds``.
"""

from __future__ import annotations

import json
import time

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.overrides import recorded, refuse_new_overrides
from sweeps.prepare import Prepared, prepare
from sweeps.runner import child_runs, fit_and_summarise
from sweeps.spec import VERDICT_DEFAULTS, SweepSpec, default_comparisons, file_hash, load_spec
from sweeps.storage import locate
from sweeps.tuner import Invocation, build_tuner, experiment_name

# Outcomes that are results of the experiment: such a pair is never run again. A pair
# whose earlier trials all failed (error/killed) is run by the extension.
DONE_OUTCOMES = (names.OUTCOME_COMPLETED, names.OUTCOME_DIVERGED)
# Spec keys that say how to run, not what is measured: they may change in an extension.
# (test_hooks: invocations before fault injection left the sweep file recorded it.)
FREE_KEYS = {"seeds", "arms", "description", "max_concurrent", "resources", "time_budget_s", "max_failures",
             "storage_path", "test_hooks", "scales", "num_samples", "sampler", "keep_checkpoints"}


def find_finished_invocation(name: str, invocation: str | None = None):
    """(client, parent run) of the latest finished invocation of sweep ``name`` (or the one given)."""
    from hrm_core.tracking.client import get_client

    client = get_client()
    if invocation is not None:
        parent = client.get_run(invocation)
        if parent.data.tags.get(names.TAG_SWEEP_STATUS) != "finished":
            raise UserError(f"invocation {invocation} of '{name}' did not finish: "
                            f"resume it first (python -m sweeps resume {name} --invocation {invocation})")
        return client, parent
    experiment = names.experiment_name(name)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no sweep '{name}' in the MLflow store (experiment {experiment}): "
                        "run it before extending it")
    finished = (f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}' "
                f"and tags.`{names.TAG_SWEEP_STATUS}` = 'finished'")
    runs = client.search_runs([exp.experiment_id], filter_string=finished,
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UserError(f"sweep '{name}' has no finished invocation to extend "
                        f"(resume an unfinished one with: python -m sweeps resume {name})")
    return client, runs[0]


def done_pairs(children) -> set[tuple[str, str]]:
    """(arm, seed) pairs the invocation already has a result for."""
    return {
        (c.data.tags.get(names.TAG_ARM, ""), c.data.tags.get(names.TAG_SEED, ""))
        for c in children
        if c.data.tags.get(names.TAG_OUTCOME) in DONE_OUTCOMES
    }


def with_defaults(old: dict) -> dict:
    """An invocation's resolved spec, with the keys it predates at their defaults: an older
    invocation extends as if it had declared them."""
    out = {**VERDICT_DEFAULTS, **old}
    if out.get("kind", "ablation") == "ablation" and out.get("comparisons") is None:
        out["comparisons"] = default_comparisons(out.get("arms") or {}, out.get("control"))
    return out


def check_comparisons(old: list[dict], spec: SweepSpec, old_arms, where: str) -> None:
    """The declared family may grow by comparisons of new arms only; none may go or change."""
    def key(c: dict) -> tuple:
        return c["arm"], c["reference"], c.get("label")

    new = {key(c) for c in spec.declared_comparisons}
    # (an arm the file no longer has keeps its comparisons, as the invocation keeps its runs)
    gone = [c for c in old if key(c) not in new and c["arm"] in spec.arms and c["reference"] in spec.arms]
    added = [c for c in new - {key(c) for c in old} if c[0] in old_arms and c[1] in old_arms]
    if gone or added:
        what = gone[0] if gone else dict(zip(("arm", "reference", "label"), added[0], strict=True))
        raise UserError(f"{where}: 'comparisons' changed since the invocation ran "
                        f"({'dropped' if gone else 'added'} {what['arm']} vs {what['reference']}); "
                        "an extension may only add comparisons of new arms: run a new sweep instead")


def check_comparable(old: dict, spec: SweepSpec, where: str) -> None:
    """Refuse an extension whose trials would not be comparable with the finished ones."""
    old = with_defaults(old)
    new = spec.resolved()
    check_comparisons(old["comparisons"], spec, set(old.get("arms") or {}), where)
    for key in sorted(set(old) | set(new)):
        if key in FREE_KEYS or key == "comparisons" or old.get(key) == new.get(key):
            continue
        raise UserError(f"{where}: '{key}' changed since the invocation ran "
                        f"({old.get(key)!r} -> {new.get(key)!r}); "
                        "an extension may only add seeds or arms: run a new sweep instead")
    for arm, overrides in (old.get("arms") or {}).items():
        if arm in spec.arms and list(spec.arms[arm]) != list(overrides):
            raise UserError(f"{where}: arms.{arm} changed since the invocation ran "
                            f"({overrides} -> {spec.arms[arm]}); "
                            "give the changed arm a new name, or run a new sweep")


def _resolved_spec(client, parent_id: str) -> dict | None:
    from hrm_core.tracking.client import read_text_artifact

    try:
        return json.loads(read_text_artifact(client, parent_id, "sweep_resolved.json"))
    except Exception:  # noqa: BLE001 - an older invocation without the artifact
        return None


def extend_sweep(name_or_path: str, scale: str | None = None, overrides: list[str] | None = None,
                 log=print, *, invocation: str | None = None, seeds: list[int] | None = None) -> str:
    """Run the sweep's (arm, seed) pairs that its latest finished invocation (or
    ``invocation``) lacks, under that invocation's parent run. Returns the parent run id.

    It takes no new ``overrides`` (refused in one line): the invocation's own are re-applied,
    except ``seeds``, which come from the sweep file, so that seeds added there run (or from
    ``seeds``: a round of ``--until-decided``)."""
    refuse_new_overrides(overrides, "--extend")
    spec0, path = load_spec(name_or_path, scale)
    client, parent = find_finished_invocation(spec0.name, invocation)
    parent_id, tags = parent.info.run_id, parent.data.tags
    if spec0.kind != "ablation" or tags.get(names.TAG_SWEEP_KIND, "ablation") != "ablation":
        raise UserError(f"--extend adds seeds or arms to an ablation; '{spec0.name}' is a search: "
                        "run a new search instead")
    # The scale and overrides the invocation ran with (a different scale is refused below).
    again = recorded(tags, drop=("seeds",))
    if again:
        where = "this round's" if seeds is not None else f"from {path}"
        log(f"re-applying the invocation's overrides: {' '.join(again)} (seeds: {where})")
    if seeds is not None:
        again = [*again, f"seeds=[{','.join(str(s) for s in seeds)}]"]
    prep = prepare(path, scale or tags.get(names.TAG_SCALE), again, log=log)
    old = _resolved_spec(client, parent_id)
    if old is not None:
        check_comparable(old, prep.spec, path)
    else:
        log(f"invocation {parent_id} has no sweep_resolved.json: comparability of the configs is not checked")
    children = child_runs(client, parent.info.experiment_id, parent_id)
    check_same_data(children, prep, parent_id)
    new_pairs = pairs_to_run(prep.spec, children, log)
    if not new_pairs:
        log(f"sweep {prep.spec.name}: invocation {parent_id} already has every (arm, seed) of {path}; "
            "nothing to run")
        return parent_id
    return _run_extension(client, parent, prep, old, new_pairs, log)


def check_same_data(children, prep: Prepared, parent_id: str) -> None:
    """Refuse an extension whose trials would train on other data than the finished ones."""
    prints = {c.data.tags.get(names.TAG_DATASET_FINGERPRINT) for c in children} - {None, ""}
    now = set(prep.fingerprints.values())
    if prints and not prints <= now:
        raise UserError(f"{prep.path}: the dataset changed since invocation {parent_id} ran "
                        f"(fingerprint {', '.join(sorted(now))}, was {', '.join(sorted(prints))}); "
                        "run a new sweep instead")


def pairs_to_run(spec: SweepSpec, children, log=print) -> list[tuple[str, int]]:
    """The sweep's (arm, seed) pairs without a result yet, seed by seed."""
    done = done_pairs(children)
    new_pairs = [(arm, seed) for seed in spec.seeds for arm in spec.arms if (arm, str(seed)) not in done]
    tried = {(c.data.tags.get(names.TAG_ARM), c.data.tags.get(names.TAG_SEED)) for c in children}
    retried = [p for p in new_pairs if (p[0], str(p[1])) in tried]
    if retried:
        log(f"these pairs' earlier trials failed and run again: {retried}")
    return new_pairs


def _run_extension(client, parent, prep: Prepared, old: dict | None, new_pairs: list, log) -> str:
    """Reopen the parent run, record the extension, and fit a Tune experiment of the new pairs."""
    from hrm_core.observe.provenance import provenance_tags
    from hrm_core.tracking.uris import tracking_uri

    spec, path, parent_id = prep.spec, prep.path, parent.info.run_id
    n = int(parent.data.tags.get(names.TAG_EXTENSIONS, "0")) + 1
    common = provenance_tags()
    # A Tune experiment of its own: the invocation's earlier one stays as it was.
    experiment = locate(spec.storage_path).child(f"{experiment_name(spec.name, parent_id)}-ext{n}")
    invocation = Invocation(tracking_uri(), parent.info.experiment_id, parent_id, common)
    tuner = build_tuner(prep, experiment, invocation=invocation, only=set(new_pairs))
    # Reopen the parent: `resume` finds it unfinished (and this extension's Tune state)
    # if the extension is interrupted.
    client.update_run(parent_id, status="RUNNING")
    for k, v in {
        names.TAG_SWEEP_STATUS: "running", names.TAG_EXTENSIONS: str(n), names.TAG_TUNE_PATH: experiment.uri,
        names.TAG_SWEEP_HASH: file_hash(path), names.TAG_SWEEP_FILE: path,
    }.items():
        client.set_tag(parent_id, k, v)
    # What the invocation now holds: every arm it ever ran (so a later extension is still
    # checked against their definitions), every seed.
    resolved = spec.resolved()
    if old is not None:
        old = with_defaults(old)
        resolved["arms"] = {**old.get("arms", {}), **resolved["arms"]}
        known = {(c["arm"], c["reference"]) for c in resolved["comparisons"]}
        kept = [c for c in old["comparisons"] if (c["arm"], c["reference"]) not in known]
        resolved["comparisons"] = [*resolved["comparisons"], *kept]
        resolved["seeds"] = sorted(set(old.get("seeds", [])) | set(resolved["seeds"]))
    client.log_text(parent_id, json.dumps(resolved, indent=2, default=str), "sweep_resolved.json")
    record = {"extension": n, "time": time.time(), "tune_path": experiment.uri, "sweep_file": path,
              "added": [list(p) for p in new_pairs], "git_commit": common[names.TAG_GIT_COMMIT],
              "overrides": prep.overrides}
    client.log_text(parent_id, json.dumps(record, indent=2), f"extensions/ext{n}.json")
    log(f"extending sweep {spec.name}: parent run {parent_id}, {len(new_pairs)} new trial(s) {new_pairs}, "
        f"Tune {experiment.uri}")
    return fit_and_summarise(tuner, client, parent_id, spec, log)
