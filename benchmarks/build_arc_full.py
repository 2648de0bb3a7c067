"""Build the full ARC preset once and print wall time and peak RSS (a benchmark, never run in CI).

    python benchmarks/build_arc_full.py                       # ARC-AGI-1 x 1000 into data/arc1_aug1000
    python benchmarks/build_arc_full.py --max-tasks 20 --output-dir /tmp/arc_bench   # a quick trial

Each phase runs in its own process so its peak RSS is its own: the build, the full dataset
check (token scan + fingerprint) and, unless --no-eval, the ARC evaluator scoring oracle
predictions on the whole test split (what every eval of a full-size run pays).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_EVAL_SNIPPET = """
import sys, time, numpy as np
from hrm_core.data import arc_eval
from hrm_core.data.format import open_split
path, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
labels = open_split(path, "test").sets["all"]["labels"]  # uint8 memmap (the trainer passes int32)
metrics = arc_eval.evaluate_arc(path, labels, np.zeros(len(labels), np.float32), out, 0)
assert metrics["eval/arc_pass@1"] == 1.0, metrics
print(f"{len(labels)} test examples, oracle {metrics}")
"""


def run_phase(name: str, cmd: list[str]) -> tuple[float, float]:
    """Run one phase as a child process; return (seconds, peak RSS in GiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=PROJECT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    peak_gib = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    if proc.returncode != 0:
        sys.exit(f"{name} failed with exit code {proc.returncode}")
    print(f"[{name}] {seconds:.1f} s, peak RSS {peak_gib:.2f} GiB", flush=True)
    return seconds, peak_gib


def du_gib(path: str) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**30


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", default="arc1")
    p.add_argument("--num-aug", type=int, default=1000)
    p.add_argument("--max-tasks", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output-dir", default=None, help="default: data/<version>_aug<num_aug> under the project"
    )
    p.add_argument("--no-eval", action="store_true", help="skip timing the evaluator on oracle predictions")
    args = p.parse_args()
    out = os.path.abspath(
        args.output_dir or os.path.join(PROJECT, "data", f"{args.version}_aug{args.num_aug}")
    )
    py = sys.executable
    build = [py, "-m", "hrm_core.data.build_arc", "--version", args.version, "--output-dir", out,
             "--num-aug", str(args.num_aug), "--seed", str(args.seed), "--quiet"]  # fmt: skip
    if args.max_tasks:
        build += ["--max-tasks", str(args.max_tasks)]
    results = {"build": run_phase("build", build)}
    print(f"[dataset] {du_gib(out):.2f} GiB on disk at {out}", flush=True)
    results["check"] = run_phase("check", [py, "-m", "hrm_core.data.check", out, "--no-cache"])
    if not args.no_eval:
        with tempfile.TemporaryDirectory() as run_dir:
            results["eval"] = run_phase("oracle eval", [py, "-c", _EVAL_SNIPPET, out, run_dir])
    summary = ", ".join(f"{k} {s:.1f} s / {m:.2f} GiB" for k, (s, m) in results.items())
    print(f"build_arc_full {args.version} x{args.num_aug}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
