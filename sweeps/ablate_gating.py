"""Gated vs ungated HRM with paired seeds, plus gate-bias arms; then the report.

    python sweeps/ablate_gating.py                      # 3 seeds, cpu scale
    python sweeps/ablate_gating.py --seeds 5 --scale gpu
    python sweeps/ablate_gating.py --seeds 2 --scale smoke --validate-only

RAY_ADDRESS / MLFLOW_TRACKING_URI switch to a cluster and a tracking server.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, help="number of paired seeds (0..N-1); default: the sweep file's")
    ap.add_argument("--scale", choices=["smoke", "cpu", "gpu"], default=None)
    ap.add_argument("--max-concurrent", type=int, help="trials at once")
    ap.add_argument("--arms", nargs="+", help="only these arms (the control is always kept)")
    ap.add_argument("--validate-only", action="store_true", help="check the sweep and exit")
    ap.add_argument("--no-report", action="store_true", help="skip the report at the end")
    args = ap.parse_args(argv)

    from hrm_core.errors import UserError

    overrides = []
    if args.seeds is not None:
        if args.seeds < 1:
            ap.error("--seeds must be >= 1")
        overrides.append(f"seeds=[{', '.join(str(s) for s in range(args.seeds))}]")
    if args.max_concurrent:
        overrides.append(f"max_concurrent={args.max_concurrent}")
    try:
        from sweeps.spec import load_spec

        spec, path = load_spec("ablate_gating", args.scale, overrides)
        if args.arms:
            unknown = sorted(set(args.arms) - set(spec.arms))
            if unknown:
                raise UserError(f"unknown arm(s) {unknown}; the sweep has {sorted(spec.arms)}")
            keep = set(args.arms) | {spec.control}
            kept = ", ".join(f"'{a}': {spec.arms[a]}" for a in spec.arms if a in keep)
            overrides.append("arms={" + kept + "}")
        if args.validate_only:
            from sweeps.validate import validate

            spec, path = load_spec("ablate_gating", args.scale, overrides)
            validate(spec, path)
            print(f"ok: {path} ({len(spec.arms)} arms x {len(spec.seeds)} seeds, scale {spec.scale})")
            return 0
        from sweeps.runner import run_sweep

        parent = run_sweep("ablate_gating", args.scale, overrides)
        if not args.no_report:
            from sweeps.runner import write_report

            write_report(parent)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
