"""``python -m sweeps run|resume|list|validate|reproduce``."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps", description="HRM ablation sweeps")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a sweep (a name in configs/sweep/ or a path)")
    run.add_argument("sweep")
    run.add_argument("overrides", nargs="*", help="sweep-file overrides, e.g. num_samples=4 seeds=[0,1]")
    run.add_argument("--scale", choices=["smoke", "cpu", "gpu"])
    run.add_argument("--extend", action="store_true",
                     help="add seeds/arms to the latest finished invocation of an ablation "
                     "(runs only the new (arm, seed) pairs, under the same parent run)")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    res = sub.add_parser("resume", help="finish an interrupted sweep")
    res.add_argument("sweep")
    res.add_argument("--invocation", help="parent run id (default: the latest unfinished)")
    res.add_argument("--no-report", action="store_true", help="skip the report at the end")
    sub.add_parser("list", help="sweeps and their invocations")
    val = sub.add_parser("validate", help="only validate a sweep file")
    val.add_argument("sweep")
    val.add_argument("--scale", choices=["smoke", "cpu", "gpu"])
    from sweeps.reproduce.command import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    args, extra = ap.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or args.cmd != "run"]
    if stray:
        ap.error(f"unrecognized arguments: {' '.join(stray)}")
    if args.cmd == "run":
        args.overrides = [*args.overrides, *extra]

    from hrm_core.errors import UserError

    try:
        if args.cmd == "validate":
            from sweeps.spec import load_spec
            from sweeps.validate import trial_overrides, validate

            spec, path = load_spec(args.sweep, args.scale)
            validate(spec, path)
            n = len(trial_overrides(spec))
            print(f"ok: {path} ({spec.kind}, {n} configurations, scale {spec.scale})")
            return 0
        if args.cmd == "list":
            from sweeps.runner import list_sweeps

            list_sweeps()
            return 0
        if args.cmd == "run":
            from sweeps.runner import run_sweep, write_report

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
            from sweeps.runner import resume_sweep, write_report

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
