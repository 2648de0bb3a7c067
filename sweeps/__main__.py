"""``python -m sweeps run|resume|list|prune|validate|reproduce``."""

from __future__ import annotations

import argparse
import os
import sys

OVERRIDES_HELP = ("overrides, applied over the sweep file and its scale: sweep keys (seeds=[0,1] "
                  "num_samples=4 space.lr.high=0.01) or training keys for every trial (max_steps=800)")

QUIET_HELP = ("no live progress: one start line, then the finish (default: a table on a terminal, "
              "plain lines in a log, and a summary at the end)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps", description="HRM ablation sweeps")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a sweep (a name in configs/sweep/ or a path)")
    run.add_argument("sweep")
    run.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    run.add_argument("--scale", choices=["smoke", "cpu", "gpu"])
    run.add_argument("--extend", action="store_true",
                     help="add seeds/arms to the latest finished invocation of an ablation "
                     "(runs only the new (arm, seed) pairs, under the same parent run)")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    run.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    run.add_argument("--until-decided", action="store_true",
                     help="ablation: add paired seeds in rounds until every declared comparison is decided "
                     "(or --max-seeds is reached); a report (a look) after each round")
    run.add_argument("--max-seeds", type=int,
                     help="with --until-decided: N_max (default: the sweep's max_seeds)")
    run.add_argument("--round", type=int,
                     help="with --until-decided: seeds per round (default: the file's count)")
    run.add_argument("--no-confirm", action="store_true",
                     help="search: skip the confirmation stage (top configurations and the base re-run "
                     "with fresh seeds, compared on the test split)")
    res = sub.add_parser("resume", help="finish an interrupted sweep")
    res.add_argument("sweep")
    # refused in one line: resume re-applies the overrides the invocation ran with
    res.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    res.add_argument("--invocation", help="parent run id (default: the latest unfinished)")
    res.add_argument("--no-report", action="store_true", help="skip the report at the end")
    res.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sub.add_parser("list", help="sweeps and their invocations, with the disk each holds")
    prn = sub.add_parser("prune", help="free a finished invocation's checkpoints (tagged on its parent run)")
    prn.add_argument("sweep", help="the sweep's name")
    prn.add_argument("--keep", choices=["none", "last", "best"], default="none",
                     help="what each trial keeps: nothing (default), its last or its best checkpoint")
    prn.add_argument("--invocation", help="parent run id (default: the sweep's latest invocation)")
    val = sub.add_parser("validate", help="only validate a sweep file")
    val.add_argument("sweep")
    val.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    val.add_argument("--scale", choices=["smoke", "cpu", "gpu"])
    from sweeps.reproduce.command import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    args, extra = ap.parse_known_args(argv)
    # Overrides may follow options too (make's SWEEP_ARGS come after --scale).
    stray = [e for e in extra if e.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        ap.error(f"unrecognized arguments: {' '.join(stray)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]

    from hrm_core.errors import UserError

    try:
        if args.cmd == "validate":
            from sweeps.spec import load_spec
            from sweeps.validate import trial_overrides, validate

            spec, path = load_spec(args.sweep, args.scale, args.overrides)
            validate(spec, path)
            n = len(trial_overrides(spec))
            runs = (f"{len(spec.arms)} arms x {len(spec.seeds)} seeds" if spec.kind == "ablation"
                    else f"{spec.num_samples} samples")
            print(f"ok: {path} ({spec.kind}, {n} configurations, {runs}, "
                  f"max_concurrent {spec.max_concurrent}, scale {spec.scale})")
            return 0
        if args.cmd == "list":
            from sweeps.runner import list_sweeps

            list_sweeps()
            return 0
        if args.cmd == "prune":
            from sweeps.prune import main as prune_main

            return prune_main(args.sweep, args.keep, args.invocation)
        if args.cmd == "run":
            from sweeps.runner import run_sweep, write_report
            from sweeps.watch import watching

            check_run_flags(ap, args)
            with watching(args.quiet):  # live progress, then the summary
                if args.until_decided:
                    from sweeps.until_decided import run_until_decided

                    run_until_decided(args.sweep, args.scale, args.overrides, max_seeds=args.max_seeds,
                                      round_size=args.round, report=not args.no_report)
                    return 0  # (a report after every round)
                if args.extend:
                    from sweeps.extend import extend_sweep

                    parent = extend_sweep(args.sweep, args.scale, args.overrides)
                else:
                    from sweeps.confirm import confirm_tags

                    parent = run_sweep(args.sweep, args.scale, args.overrides,
                                       tags=confirm_tags(args.no_confirm))
                    confirm_if_due(parent)
                if not args.no_report:
                    write_report(parent)
            return 0
        if args.cmd == "reproduce":
            from sweeps.reproduce.command import main as reproduce_main

            return reproduce_main(args)
        if args.cmd == "resume":
            from sweeps.overrides import refuse_new_overrides
            from sweeps.runner import resume_sweep, write_report
            from sweeps.watch import watching

            refuse_new_overrides(args.overrides, "resume")
            with watching(args.quiet):  # live progress, then the summary
                parent = resume_sweep(args.sweep, args.invocation)
                if resume_rounds_if_planned(parent, report=not args.no_report):
                    return 0  # (--until-decided went on, a report after every round)
                confirm_if_due(parent)
                if not args.no_report:
                    write_report(parent)
            return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1


def check_run_flags(ap: argparse.ArgumentParser, args) -> None:
    """Flags of ``run`` that only go together, refused before anything starts."""
    if (args.max_seeds is not None or args.round is not None) and not args.until_decided:
        ap.error("--max-seeds and --round go with --until-decided")
    if args.until_decided and args.extend:
        ap.error("--until-decided runs the sweep and extends it itself: drop --extend")


def confirm_if_due(parent: str) -> None:
    """A search's confirmation stage, unless --no-confirm turned it off (sweeps/confirm.py)."""
    from hrm_core.tracking.client import get_client
    from sweeps.confirm import confirm_invocation, wants_confirm

    if wants_confirm(get_client().get_run(parent).data.tags):
        confirm_invocation(parent)


def resume_rounds_if_planned(parent: str, report: bool) -> bool:
    """After a resumed round of --until-decided: go on with the rounds. False: none planned."""
    from hrm_core import names
    from hrm_core.tracking.client import get_client
    from sweeps.until_decided import planned_rounds, resume_rounds

    tags = get_client().get_run(parent).data.tags
    plan = planned_rounds(tags)
    if plan is None:
        return False
    resume_rounds(tags[names.TAG_SWEEP_FILE], parent, plan, report=report)
    return True


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
