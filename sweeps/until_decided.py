"""``python -m sweeps run NAME --until-decided [--max-seeds N] [--round K]``: an ablation
that adds paired seeds, in rounds, until its declared comparisons are decided.

Round 1 is the sweep as the file gives it (its seeds); each further round adds the next K
unused seeds, every arm x seed, under the same parent run (the ``--extend`` machinery,
``sweeps/extend.py``). After every round the analysis looks at the completed pairs (a
report, or ``analysis.verdicts.decide`` with ``--no-report``); each look is recorded by the
analysis, whose alpha spending keeps the error over all looks at alpha. The loop stops when
every declared comparison is decided (beats, worse, or equivalent within the sweep's
``equivalence_margin``), or when the invocation holds ``max_seeds`` seeds. Why it stopped
is the parent's ``hrm.stop_reason`` tag. An interrupted round is finished by
``python -m sweeps resume``, which then goes on with the rounds (the plan is the parent's
``hrm.until_decided`` tag).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from hrm_core import names
from hrm_core.errors import UserError


@dataclass(frozen=True)
class Look:
    """What one look at the completed pairs says."""

    decided: bool
    summary: str = ""  # printed after the round (the report's conclusion)


@dataclass(frozen=True)
class Plan:
    round: int  # seeds added per round
    max_seeds: int  # N_max: the invocation holds at most this many seeds

    def tag(self) -> str:
        return json.dumps({"round": self.round, "max_seeds": self.max_seeds})


def next_seeds(held: list[int], plan: Plan) -> list[int]:
    """The next round's seeds: the K smallest non-negative seeds not yet held, up to N_max."""
    room = plan.max_seeds - len(held)
    out, seed, taken = [], 0, set(held)
    while len(out) < min(plan.round, room):
        if seed not in taken:
            out.append(seed)
        seed += 1
    return out


def held_seeds(client, parent_id: str) -> list[int]:
    """The seeds the invocation plans (its sweep_resolved.json), sorted."""
    from hrm_core.tracking.client import read_text_artifact

    resolved = json.loads(read_text_artifact(client, parent_id, "sweep_resolved.json"))
    return sorted(int(s) for s in resolved.get("seeds", []))


def continue_rounds(client, parent_id: str, plan: Plan, extend: Callable[[str, list[int]], None],
                    look: Callable[[str], Look], log=print) -> str:
    """Look, then add a round, until decided or N_max. Returns (and tags) the stop reason."""
    client.set_tag(parent_id, names.TAG_UNTIL_DECIDED, plan.tag())
    try:
        while True:
            seen = look(parent_id)
            held = held_seeds(client, parent_id)
            if seen.summary:
                log(seen.summary)
            if seen.decided:
                reason = names.STOP_DECIDED
                break
            new = next_seeds(held, plan)
            if not new:
                reason = names.STOP_MAX_SEEDS
                break
            log(f"not decided at {len(held)} seeds: round of {len(new)} more seeds {new} "
                f"(at most {plan.max_seeds})")
            extend(parent_id, [*held, *new])
    except KeyboardInterrupt:
        client.set_tag(parent_id, names.TAG_STOP_REASON, names.STOP_INTERRUPTED)
        if client.get_run(parent_id).data.tags.get(names.TAG_SWEEP_STATUS) == "finished":
            # stopped between rounds (while looking): `resume` still finds it and goes on
            client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "interrupted")
        log(f"interrupted: finish the round with python -m sweeps resume (parent run {parent_id})")
        raise
    client.set_tag(parent_id, names.TAG_STOP_REASON, reason)
    what = ("every declared comparison is decided" if reason == names.STOP_DECIDED
            else f"max_seeds ({plan.max_seeds}) reached; not every comparison is decided")
    log(f"stopped adding seeds at {len(held)} seeds: {what} ({names.TAG_STOP_REASON}={reason})")
    return reason


def plan_of(spec, max_seeds: int | None, round_size: int | None) -> Plan:
    """The rounds of an --until-decided run of ``spec``, checked before anything runs."""
    if spec.kind != "ablation":
        raise UserError(f"--until-decided adds seeds to an ablation; '{spec.name}' is a search")
    k = round_size if round_size is not None else len(spec.seeds)
    if k < 1:
        raise UserError(f"--round must be >= 1 (got {k})")
    n_max = max_seeds if max_seeds is not None else spec.max_seeds
    if n_max < len(spec.seeds):
        raise UserError(f"--max-seeds ({n_max}) is fewer than the sweep's {len(spec.seeds)} "
                        f"seeds {spec.seeds}")
    return Plan(round=k, max_seeds=n_max)


def report_look(parent_id: str, report: bool) -> Look:
    """A look: the report (which records it), or, without reports, the verdicts alone."""
    from hrm_core.tracking.uris import tracking_uri

    if report:
        try:
            from analysis.report.build import build_report
        except ImportError as err:  # the report extra is not installed: the verdicts alone
            print(f"report skipped ({err}): looking at the verdicts alone")
        else:
            res = build_report(parent_run=parent_id, tracking_uri=tracking_uri())
            return Look(decided=bool(res.decided), summary=res.summary())
    from analysis import looks
    from analysis.loading import open_client
    from analysis.verdicts import decide

    decision = decide(parent_run=parent_id, tracking_uri=tracking_uri())
    if decision.new_look:  # no report, still a look: the alpha spending counts it
        looks.record(open_client(tracking_uri()), parent_id, decision.looks)
    verdicts = "; ".join(f"{r['arm']} vs {r['reference']}: {r['verdict']}" for r in decision.rows)
    return Look(decided=bool(decision.decided), summary=f"{decision.n_pairs} paired seeds: {verdicts}")


def run_until_decided(name_or_path: str, scale: str | None, overrides: list[str], *,
                      max_seeds: int | None = None, round_size: int | None = None,
                      report: bool = True, log=print) -> tuple[str, str]:
    """Run the sweep, then rounds of seeds until decided. -> (parent run id, stop reason)."""
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec

    overrides = list(overrides)
    if max_seeds is not None:  # recorded with the invocation: every round re-applies it
        overrides.append(f"max_seeds={max_seeds}")
    spec, path = load_spec(name_or_path, scale, overrides)
    plan = plan_of(spec, max_seeds, round_size)
    # the plan is on the parent from the start: `resume` of an interrupted first round goes on
    parent_id = run_sweep(name_or_path, scale, overrides, log=log, tags={names.TAG_UNTIL_DECIDED: plan.tag()})
    return parent_id, resume_rounds(path, parent_id, plan, report=report, log=log)


def resume_rounds(path: str, parent_id: str, plan: Plan, *, report: bool = True, log=print) -> str:
    """The rounds after the first (or after a resumed round)."""
    from hrm_core.tracking.client import get_client
    from sweeps.extend import extend_sweep

    def extend(parent: str, seeds: list[int]) -> None:
        extend_sweep(path, log=log, invocation=parent, seeds=seeds)

    reason = continue_rounds(get_client(), parent_id, plan, extend, lambda p: report_look(p, report), log)
    if report:  # the same pairs again (no new look): the final report names the stop reason
        from sweeps.runner import write_report

        write_report(parent_id, log=lambda *_: None)
    return reason


def planned_rounds(parent_tags: dict[str, str]) -> Plan | None:
    """The plan of an --until-decided invocation that has not stopped yet (resume goes on)."""
    raw = parent_tags.get(names.TAG_UNTIL_DECIDED)
    if not raw or parent_tags.get(names.TAG_STOP_REASON) in (names.STOP_DECIDED, names.STOP_MAX_SEEDS):
        return None
    plan = json.loads(raw)
    return Plan(round=int(plan["round"]), max_seeds=int(plan["max_seeds"]))
