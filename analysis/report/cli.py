"""``python -m analysis.report SWEEP|--parent-run ID [--out DIR] ...``: bad requests
(unknown sweep, parent run without children, a metric never logged) print one
``error: ...`` line and exit 2; a notebook that fails to run exits 1."""

from __future__ import annotations

import argparse
import logging
import sys

from analysis import stats
from analysis.cli_args import OneLineParser
from analysis.loading import AnalysisError
from analysis.report.build import build_report
from analysis.report.links import DEFAULT_UI_URL


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m analysis.report",
                description="Report an ablation or search sweep from MLflow.")
    p.add_argument("sweep", nargs="?", help="sweep name (its latest invocation with trials)")
    p.add_argument("--parent-run", help="the parent run id of one sweep invocation")
    p.add_argument("--out", help="output directory (default reports/<sweep>/<parent_run_id>/)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--metric", help="primary metric (default: the sweep's objective)")
    p.add_argument("--mode", choices=["max", "min"], help="direction of the primary metric")
    p.add_argument("--alpha", type=float, default=stats.ALPHA)
    p.add_argument("--ci", choices=["t", "bca"], default="t", help="CI method (BCa only for n >= 10)")
    p.add_argument("--ui-url", default=DEFAULT_UI_URL, help="MLflow UI base URL for run links")
    p.add_argument("--target", type=float,
                   help="value of the primary metric the compute-to-target table counts FLOPs to reach "
                        "(default: 0.9 x the best arm's final mean; searches: the best trial's)")
    p.add_argument("--min-seeds", type=int,
                   help="paired seeds a verdict needs at least (default: the sweep's min_seeds, 3)")
    p.add_argument("--max-seeds", type=int,
                   help="N_max of the alpha spending (default: the sweep's max_seeds, 10)")
    p.add_argument("--no-execute", action="store_true", help="write the notebook without running it")
    p.add_argument("--no-upload", action="store_true", help="do not attach the files to the parent run")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    if (args.sweep is None) == (args.parent_run is None):
        p.error("give a sweep name or --parent-run ID (exactly one)")
    if not 0 < args.alpha < 1:
        p.error("--alpha must be between 0 and 1")
    for flag in ("min_seeds", "max_seeds"):
        if getattr(args, flag) is not None and getattr(args, flag) < 2:
            p.error(f"--{flag.replace('_', '-')} must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as e:  # usage errors (2) and --help (0) as return codes
        return int(e.code or 0)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.exceptions import MlflowException

    from analysis.notebook import ReportError

    try:
        res = build_report(
            args.sweep, parent_run=args.parent_run, tracking_uri=args.tracking_uri, out=args.out,
            metric=args.metric, mode=args.mode, alpha=args.alpha, ci_method=args.ci,
            execute=not args.no_execute, upload=not args.no_upload, ui_url=args.ui_url, timeout=args.timeout,
            target=args.target, min_seeds=args.min_seeds, max_seeds=args.max_seeds,
        )
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ReportError, MlflowException, OSError) as e:
        text = str(e).strip()
        print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
        return 1
    print(res.summary())
    return 0
