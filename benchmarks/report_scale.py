"""Report a sweep of 1,000 runs x 200 logged steps from an MLflow SQLite store.

Creates the store itself in a temp dir (experiment and parent run through MlflowClient,
the child runs bulk-inserted in one transaction), then times loading and the full report:
analysis, notebook execution on the project kernel, HTML export and the upload to the
parent run. Target: load + report <= 60 s.

    python benchmarks/report_scale.py [--runs 1000] [--steps 200] [--arms 10] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_S = 60.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=200, help="logged optimizer steps per run")
    p.add_argument("--arms", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (store and report)")
    args = p.parse_args()

    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from analysis import loading, report
    from analysis.notebook import ensure_kernel
    from tests.support import synthetic

    tmp = tempfile.mkdtemp(prefix="report-scale-")
    try:
        seeds = range(args.runs // args.arms)
        arms = {f"arm{i:02d}": 0.01 * i for i in range(1, args.arms)}
        t0 = time.perf_counter()
        sweep = synthetic.make_ablation(
            "scale", arms, control="control", seeds=seeds, budget=args.steps, eval_every=args.eval_every,
            variants={"arm01": ["gate"], "arm02": ["feudal"]}, rng=0,
        )
        rows = sum(len(t.metrics) for t in sweep.trials)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        uri = synthetic.new_store(tmp)
        t_store = time.perf_counter() - t0
        t0 = time.perf_counter()
        parent = synthetic.write_sweep_bulk(uri, sweep, artifact_root=os.path.join(tmp, "artifacts"))
        t_write = time.perf_counter() - t0
        ensure_kernel()  # once per venv; not part of a report's cost
        print(f"store: {len(sweep.trials)} runs x {args.steps} steps, {rows:,} metric rows "
              f"(generated {t_gen:.1f} s, empty store {t_store:.1f} s, bulk write {t_write:.1f} s)")

        t0 = time.perf_counter()
        info, runs = loading.load_sweep("scale", tracking_uri=uri)
        t_runs = time.perf_counter() - t0
        t0 = time.perf_counter()
        history = loading.load_history(runs, report.history_metrics(runs, info.objective))
        t_hist = time.perf_counter() - t0
        t0 = time.perf_counter()
        a = report.analyse(info, runs, history)
        t_analyse = time.perf_counter() - t0
        print(f"load_runs: {len(runs)} runs in {t_runs:.2f} s; load_history: {len(history):,} rows "
              f"({history['key'].nunique()} metrics) in {t_hist:.2f} s; analyse: {t_analyse:.2f} s")

        t0 = time.perf_counter()
        res = report.build_report(parent_run=parent, tracking_uri=uri, out=os.path.join(tmp, "report"))
        t_report = time.perf_counter() - t0
        size = os.path.getsize(res.html) / 1e6
        print(f"report (load + analyse + execute notebook + HTML + upload): {t_report:.1f} s; "
              f"HTML {size:.1f} MB")
        total = t_runs + t_hist + t_report
        verdict = "OK" if total <= TARGET_S else "OVER TARGET"
        print(f"load + report: {total:.1f} s (target <= {TARGET_S:.0f} s): {verdict}")
        print(a.conclusion.splitlines()[0])
        if args.keep:
            print(f"kept: {tmp}")
        return 0 if total <= TARGET_S else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
