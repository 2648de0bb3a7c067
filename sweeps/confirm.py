"""A search's confirmation stage: its best configurations re-run with fresh seeds, as an
ablation against the base configuration, reported on the test split.

A search picks its winner on one seed and (with a validation split) on ``val/*``: the
winner's own value is optimistic. After the search, ``confirm_search`` runs

- the top ``confirm.top_k`` completed configurations (two objectives: the Pareto set, up to
  k, in order of the first objective), arms ``top1``, ``top2``, ...;
- the base configuration, arm ``base``: the sweep's ``base`` with every searched key at the
  value the configuration takes when the search does not set it (its schema or preset
  default; a searched config group stays as ``base`` gives it);

each with ``confirm.seeds`` (default: ``min_seeds`` seeds after the search's largest; never
one the search used), every arm x seed, under the same parent run. The runs carry
``hrm.stage=confirm``; the plan is the parent's ``confirm.json`` (arms, their overrides, the
search value each was selected on, the seeds, the test metric), which
``analysis/report/confirm.py`` reads. Interrupted, it resumes like any sweep
(``python -m sweeps resume``); run again, it runs only the pairs it lacks. What it runs
is decided in ``sweeps/confirm_plan.py``.
"""

from __future__ import annotations

import json

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.confirm_plan import plan, stage_runs, stage_spec
from sweeps.extend import done_pairs
from sweeps.prepare import Prepared


def _recorded_plan(client, parent_id: str) -> dict | None:
    from hrm_core.tracking.client import read_text_artifact

    try:
        return json.loads(read_text_artifact(client, parent_id, names.CONFIRM_ARTIFACT))
    except Exception:  # noqa: BLE001 - not planned yet
        return None


def confirm_search(prep: Prepared, parent_id: str, log=print) -> str:
    """Run (or finish) the confirmation stage of the search under ``parent_id``. The parent
    ends finished, its ``hrm.confirm_status`` "finished" (or "none": nothing completed)."""
    from hrm_core.observe.provenance import provenance_tags
    from hrm_core.tracking.client import get_client
    from hrm_core.tracking.uris import tracking_uri
    from sweeps.runner import child_runs, fit_and_summarise
    from sweeps.storage import locate
    from sweeps.tuner import Invocation, build_tuner, experiment_name

    spec = prep.spec
    if spec.kind != "search":
        raise UserError(f"'{spec.name}' is an ablation: only a search has a confirmation stage")
    client = get_client()
    parent = client.get_run(parent_id)
    children = child_runs(client, parent.info.experiment_id, parent_id)
    stage = _recorded_plan(client, parent_id) or plan(spec, stage_runs(children, confirm=False))
    if len(stage["arms"]) == 1:
        log(f"confirmation of {spec.name} skipped: no search trial completed with a value")
        client.set_tag(parent_id, names.TAG_CONFIRM_STATUS, "none")
        return parent_id
    client.log_text(parent_id, json.dumps(stage, indent=2), names.CONFIRM_ARTIFACT)
    sub = stage_spec(spec, stage)
    done = done_pairs(stage_runs(children, confirm=True))
    pairs = [(a, s) for s in sub.seeds for a in sub.arms if (a, str(s)) not in done]
    if not pairs:
        client.set_tag(parent_id, names.TAG_CONFIRM_STATUS, "finished")
        return parent_id
    experiment = locate(spec.storage_path).child(f"{experiment_name(spec.name, parent_id)}-confirm")
    invocation = Invocation(tracking_uri(), parent.info.experiment_id, parent_id, provenance_tags())
    sub_prep = Prepared(sub, prep.path, prep.planned_steps, prep.fingerprints, prep.overrides)
    tuner = build_tuner(sub_prep, experiment, invocation=invocation, only=set(pairs),
                        stage=names.STAGE_CONFIRM)
    client.update_run(parent_id, status="RUNNING")
    for k, v in {names.TAG_SWEEP_STATUS: "running", names.TAG_TUNE_PATH: experiment.uri,
                 names.TAG_CONFIRM_STATUS: "running"}.items():
        client.set_tag(parent_id, k, v)
    tops = ", ".join(f"{a} ({' '.join(v['overrides'])})" for a, v in stage["arms"].items())
    log(f"confirming {spec.name} on {', '.join(stage['metrics'])} with fresh seeds {stage['seeds']}: {tops}")
    fit_and_summarise(tuner, client, parent_id, spec, log)
    client.set_tag(parent_id, names.TAG_CONFIRM_STATUS, "finished")
    return parent_id


def confirm_invocation(parent_id: str, log=print) -> str:
    """The stage for a finished search invocation, prepared as it ran (scale, overrides)."""
    from hrm_core.tracking.client import get_client
    from sweeps.overrides import recorded
    from sweeps.prepare import prepare

    tags = get_client().get_run(parent_id).data.tags
    prep = prepare(tags[names.TAG_SWEEP_FILE], tags.get(names.TAG_SCALE), recorded(tags), log=log)
    return confirm_search(prep, parent_id, log)


def wants_confirm(tags: dict[str, str]) -> bool:
    """A search invocation whose stage is due: not turned off, not finished."""
    return (tags.get(names.TAG_SWEEP_KIND) == "search"
            and tags.get(names.TAG_CONFIRM_STATUS) not in ("off", "finished", "none"))


def confirm_tags(off: bool) -> dict[str, str]:
    """The parent's tags at the start of a run: --no-confirm is recorded (resume honours it)."""
    return {names.TAG_CONFIRM_STATUS: "off"} if off else {}
