"""Gated vs ungated HRM with paired seeds, plus gate-bias arms; then the report.

    python sweeps/ablate_gating.py                      # the sweep file's seeds, cpu scale
    python sweeps/ablate_gating.py --seeds 5 --scale gpu
    python sweeps/ablate_gating.py --seeds 2 --scale smoke --validate-only
    python sweeps/ablate_gating.py --scale smoke max_steps=48 max_concurrent=1   # + sweep overrides

Trailing ``key=value`` overrides are those of ``python -m sweeps run`` (make's SWEEP_ARGS):
sweep keys (``seeds=[0,1]``) or training keys for every trial (``max_steps=48``), applied
over the sweep file and its scale. ``--seeds N`` is ``seeds=[0,...,N-1]``; ``--arms`` drops
the other arms (``~arms.<name>``). RAY_ADDRESS / MLFLOW_TRACKING_URI switch to a cluster
and a tracking server.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SWEEP = "ablate_gating"


def flag_overrides(args, given: list[str]) -> list[str]:
    """The overrides the flags stand for; a flag and an override of the same key are refused."""
    from hrm_core.config.overrides import parse_overrides
    from hrm_core.errors import UserError

    typed = {o.key for o in parse_overrides(given, where="sweep override")}
    out = []
    for flag, key, value in (("--seeds", "seeds", args.seeds), ("--max-concurrent", "max_concurrent",
                                                                 args.max_concurrent)):
        if value is None:
            continue
        if key in typed:
            raise UserError(f"{flag} and {key}=... both given; give one")
        if value < 1:
            raise UserError(f"{flag} must be >= 1 (got {value})")
        listed = f"[{','.join(str(s) for s in range(value))}]" if key == "seeds" else value
        out.append(f"{key}={listed}")
    return out


def drop_arms(keep: list[str], given: list[str], scale: str | None) -> list[str]:
    """``~arms.<name>`` for every arm not in ``keep`` (the control is always kept)."""
    from hrm_core.errors import UserError
    from sweeps.spec import load_spec

    spec, _ = load_spec(SWEEP, scale, given)
    unknown = sorted(set(keep) - set(spec.arms))
    if unknown:
        raise UserError(f"unknown arm(s) {unknown}; the sweep has {sorted(spec.arms)}")
    kept = set(keep) | {spec.control}
    return [f"~arms.{arm}" for arm in spec.arms if arm not in kept]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="sweep overrides, as for python -m sweeps run")
    ap.add_argument("--seeds", type=int, help="number of paired seeds (0..N-1); default: the sweep file's")
    ap.add_argument("--scale", choices=["smoke", "cpu", "gpu"], default=None)
    ap.add_argument("--max-concurrent", type=int, help="trials at once")
    ap.add_argument("--arms", nargs="+", help="only these arms (the control is always kept)")
    ap.add_argument("--validate-only", action="store_true", help="check the sweep and exit")
    ap.add_argument("--no-report", action="store_true", help="skip the report at the end")
    ap.add_argument("--quiet", action="store_true", help="no live progress: one start line, then the finish")
    args = ap.parse_intermixed_args(argv)
    if args.arms:  # `--arms a b max_steps=8`: what follows the names is overrides
        args.overrides += [a for a in args.arms if "=" in a or a.startswith(("~", "+"))]
        args.arms = [a for a in args.arms if a not in args.overrides]

    from hrm_core.errors import UserError

    try:
        overrides = [*flag_overrides(args, args.overrides), *args.overrides]
        if args.arms:
            overrides += drop_arms(args.arms, overrides, args.scale)
        if args.validate_only:
            from sweeps.spec import load_spec
            from sweeps.validate import validate

            spec, path = load_spec(SWEEP, args.scale, overrides)
            validate(spec, path)
            print(f"ok: {path} ({len(spec.arms)} arms x {len(spec.seeds)} seeds {spec.seeds}, "
                  f"scale {spec.scale}, max_concurrent {spec.max_concurrent})")
            return 0
        from sweeps.runner import run_sweep, write_report
        from sweeps.watch import watching

        with watching(args.quiet):  # live progress, then the summary
            parent = run_sweep(SWEEP, args.scale, overrides)
            if not args.no_report:
                write_report(parent)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
