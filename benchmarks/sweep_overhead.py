"""Sweep overhead: the wall time of a sweep, start-up included, against the ideal.

Ideal = (one trial's time measured standalone, outside Ray) x trials / slots.
Stock Ray Tune measured 1.22x with 30-s trials on this kind of machine; the target is <= 1.05x.

The sweep runs as a user's does, with its live progress (its output is a pipe: the plain lines
of a log, and the trials' step posts between checkpoints); ``--quiet`` runs it without them.

    python benchmarks/sweep_overhead.py [--trials 8] [--steps 900] [--slots 2] [--quiet]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL = [
    "arch=hrm_tiny",
    "data=sudoku4",
    "global_batch_size=64",
    "epochs=100000",
    "eval_interval=null",
    "lr=1e-3",
    "lr_warmup_steps=20",
    "threads=1",
    "progress=false",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=900, help="steps per trial (~60 s on one core here)")
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--slots", type=int, default=2, help="trials at once (one CPU each)")
    ap.add_argument("--quiet", action="store_true", help="the sweep without its live progress")
    args = ap.parse_args()
    overrides = [*TRIAL, f"max_steps={args.steps}", f"eval_every_steps={args.eval_every}"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        env.pop("RAY_ADDRESS", None)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "hrm_core.pretrain",
                *overrides,
                f"checkpoint_path={tmp}/standalone",
                "checkpoint_every_eval=true",
            ],
            cwd=PROJECT,
            env=env,
            check=True,
            capture_output=True,
        )
        standalone = time.perf_counter() - t0
        sweep = os.path.join(tmp, "overhead.yaml")
        with open(sweep, "w") as f:
            f.write("name: overhead\nkind: ablation\ncontrol: a\n")
            f.write(f"base: [{', '.join(overrides)}]\n")
            f.write(
                "arms:\n"
                + "".join(f"  a{i}: [lr=0.001]\n" if i else "  a: [lr=0.001]\n" for i in range(args.trials))
            )
            f.write(
                f"seeds: [0]\nmax_concurrent: {args.slots}\nresources: {{cpu: 1}}\nstorage_path: {tmp}/ray\n"
            )
        quiet = ["--quiet"] if args.quiet else []
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sweeps", "run", sweep, "--no-report", *quiet],
            cwd=PROJECT,
            env=env,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
    ideal = standalone * args.trials / args.slots
    print(
        f"standalone trial (process start included): {standalone:.1f} s; {args.trials} trials on "
        f"{args.slots} slots"
    )
    print(
        f"sweep wall time (start-up included): {wall:.1f} s; ideal {ideal:.1f} s; overhead "
        f"{wall / ideal:.3f}x (target <= 1.05x){'; --quiet' if args.quiet else ''}"
    )


if __name__ == "__main__":
    main()
