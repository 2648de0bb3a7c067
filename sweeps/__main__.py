"""``python -m sweeps run|resume|list|validate|reproduce``."""

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
    res = sub.add_parser("resume", help="finish an interrupted sweep")
    res.add_argument("sweep")
    # refused in one line: resume re-applies the overrides the invocation ran with
    res.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    res.add_argument("--invocation", help="parent run id (default: the latest unfinished)")
    res.add_argument("--no-report", action="store_true", help="skip the report at the end")
    res.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sub.add_parser("list", help="sweeps and their invocations")
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
        if args.cmd == "run":
            from sweeps.runner import run_sweep, write_report
            from sweeps.watch import watching

            with watching(args.quiet):  # live progress, then the summary
                if args.extend:
                    from sweeps.extend import extend_sweep

                    parent = extend_sweep(args.sweep, args.scale, args.overrides)
                else:
                    parent = run_sweep(args.sweep, args.scale, args.overrides)
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
                if not args.no_report:
                    write_report(parent)
            return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
