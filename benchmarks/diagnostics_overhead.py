"""Overhead of the training-health diagnostics (diag/*): s/step with them on vs off.

Drives the real ``Trainer.train_step`` (ACT segment, Q target, backward, AdamATan2 +
sign-SGD) of two trainers built identically but for ``diagnostics.enabled``; every
``--every``-th step is a report step (the trainer's eval schedule), where the diagnostics
take the gradient norm, clone each group's weights before the optimizer step and then
``report()``. Evaluation itself is not timed (its only diagnostic is a per-segment compare).
Blocks of ``--every`` steps alternate off, on, on, off, ... so that machine noise hits
both alike. Prints, per model: s/step off, s/step on, the overhead, and the extra seconds
of one report step (its step with snapshot + ``report()``, minus an ordinary step).

    python benchmarks/diagnostics_overhead.py                        # tiny, report every 50 steps
    python benchmarks/diagnostics_overhead.py --arch hrm_v1 --every 10 --blocks 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hrm_core.config.compose import compose_config  # noqa: E402
from hrm_core.train.runtime import resolve_runtime  # noqa: E402
from hrm_core.train.trainer import Trainer  # noqa: E402

# (data builder args, global batch size): tiny on 4x4 Sudoku; hrm_v1 on 9x9 (seq 81) at batch 8
CASES = {
    "tiny": (dict(size=4, blanks=8, subsample_size=2000, num_aug=0, test_size=32, seed=0), 64),
    "hrm_v1": (dict(size=9, blanks=45, subsample_size=256, num_aug=0, test_size=8, seed=0), 8),
}
ARCH = {"tiny": "hrm_tiny", "hrm_v1": "hrm_v1"}


def make(arch: str, data: str, batch: int, every: int, diagnostics: bool, run_dir: str) -> Trainer:
    """A trainer on ``data``; its schedule makes every ``every``-th step a report step."""
    cfg = compose_config(
        [
            f"arch={ARCH[arch]}",
            f"data_path={data}",
            f"global_batch_size={batch}",
            "epochs=100000",
            "eval_interval=null",
            f"eval_every_steps={every}",
            "lr_warmup_steps=10",
            "progress=false",
            f"checkpoint_path={run_dir}",
            f"diagnostics.enabled={str(diagnostics).lower()}",
            "alerts.enabled=false",
        ]
    )
    cfg = resolve_runtime(cfg, torch.device("cpu"))
    return Trainer(cfg, data, run_dir, torch.device("cpu"), [], log=lambda *_: None)


class Timed:
    """Wraps a bound method and sums the seconds spent in it, per call kind."""

    def __init__(self, fn, key=lambda *a, **k: "call"):
        self.fn, self.key, self.seconds, self.calls = fn, key, {}, {}

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        k = self.key(*args, **kwargs)
        self.seconds[k] = self.seconds.get(k, 0.0) + time.perf_counter() - t
        self.calls[k] = self.calls.get(k, 0) + 1
        return out

    def mean(self, k="call") -> float:
        return self.seconds.get(k, 0.0) / max(1, self.calls.get(k, 0))


def instrument(tr: Trainer) -> dict[str, Timed]:
    """Time the diagnostics' own work (and sign-SGD, whose change tracking is diagnostics)."""
    timers = {"puzzle": Timed(tr.puzzle_optimizer.step)}
    tr.puzzle_optimizer.step = timers["puzzle"]
    d = tr.diagnostics
    timers["before"] = Timed(d.before_update, key=lambda *a, report: "report" if report else "call")
    timers["after"] = Timed(d.after_update, key=lambda: "report" if d._snapshot is not None else "call")
    timers["report"] = Timed(d.report)
    d.before_update, d.after_update, d.report = timers["before"], timers["after"], timers["report"]
    return timers


def block(tr: Trainer, steps: int) -> tuple[list[float], float]:
    """Run ``steps`` train steps; -> (ordinary step times, time of the report steps incl. report())."""
    normal, report = [], 0.0
    for _ in range(steps):
        batch = tr.sampler.next_batch()
        t = time.perf_counter()
        sums = tr.train_step(batch)
        sums.tolist()  # the trainer reads the metrics every step
        if tr.schedule.is_eval_step(tr.step):
            if tr.diagnostics is not None:
                tr.diagnostics.report(tr.hrm.cfg.halt_max_steps)
            report += time.perf_counter() - t
        else:
            normal.append(time.perf_counter() - t)
    return normal, report


class Toggle:
    """Diagnostics on/off on one trainer (same weights in memory, so no layout bias between
    two trainers): off = no ``Diagnostics`` object and no row-change tracking in sign-SGD."""

    def __init__(self, tr: Trainer):
        self.tr, self.diag = tr, tr.diagnostics
        po = tr.puzzle_optimizer
        self.masks = (po.seen, po.changed)

    def set(self, on: bool) -> None:
        po = self.tr.puzzle_optimizer
        self.tr.diagnostics = self.diag if on else None
        po.seen, po.changed = self.masks if on else (None, None)


def bench(arch: str, every: int, blocks: int, threads: int) -> None:
    torch.set_num_threads(threads)
    builder_args, batch = CASES[arch]
    from hrm_core.data.build_sudoku import build_sudoku_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        build_sudoku_dataset(data, **builder_args)
        tr = make(arch, data, batch, every, True, os.path.join(tmp, "run"))
        toggle = Toggle(tr)
        block(tr, every)  # warm-up: first-call allocations, up to the first report step
        timers = instrument(tr)
        toggle.diag = tr.diagnostics
        totals = {False: 0.0, True: 0.0}
        normals = {False: [], True: []}
        reports = {False: [], True: []}
        puzzle = {False: [], True: []}
        for b in range(2 * blocks):
            on = b % 4 in (1, 2)  # off, on, on, off, ...: the same position in the pattern for both
            toggle.set(on)
            before = (timers["puzzle"].seconds.get("call", 0.0), timers["puzzle"].calls.get("call", 0))
            t = time.perf_counter()
            normal, report = block(tr, every)
            totals[on] += time.perf_counter() - t
            normals[on] += normal
            reports[on].append(report)
            puzzle[on].append(
                (timers["puzzle"].seconds["call"] - before[0]) / (timers["puzzle"].calls["call"] - before[1])
            )
        toggle.set(True)
        n = every * blocks
        off_s, on_s = totals[False] / n, totals[True] / n
        step_off, step_on = statistics.median(normals[False]), statistics.median(normals[True])
        extra = statistics.median(reports[True]) - step_on
        print(f"{arch}: batch {batch}, report every {every} steps, {n} steps each way, {threads} threads")
        print(f"  s/step  off {off_s:.4f}  on {on_s:.4f}  overhead {100 * (on_s / off_s - 1):+.2f}%")
        print(
            f"  median ordinary step  off {step_off:.4f}  on {step_on:.4f}  "
            f"({100 * (step_on / step_off - 1):+.2f}%)"
        )
        print(
            f"  report step: +{extra:.4f} s over an ordinary step (grad norm, weight snapshot, ratios, "
            "report)"
            f" = {100 * extra / (every * step_off):.2f}% of {every} steps"
        )
        # The diagnostics' own work, timed directly (robust to the noise of a shared machine).
        tracking = statistics.median(puzzle[True]) - statistics.median(puzzle[False])
        per_step = timers["before"].mean() + timers["after"].mean() + tracking
        per_report = (
            timers["before"].mean("report") + timers["after"].mean("report") + timers["report"].mean()
        )
        direct = (per_step * (every - 1) + per_report) / every
        accum = timers["before"].mean() + timers["after"].mean()
        print(
            f"  timed diag work: {1e6 * per_step:.0f} us per ordinary step (accumulators {1e6 * accum:.0f} "
            "us, "
            f"row-change tracking {1e6 * tracking:.0f} us: a difference of medians, noisy with few steps), "
            f"{1e3 * per_report:.1f} ms per report step -> {1e3 * direct:.3f} ms/step = "
            f"{100 * direct / step_off:.2f}% of a step"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(CASES), nargs="+", default=["tiny"])
    ap.add_argument("--every", type=int, default=50, help="steps between reports (the eval interval)")
    ap.add_argument("--blocks", type=int, default=4, help="blocks of --every steps per trainer")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for arch in args.arch:
        bench(arch, args.every, args.blocks, args.threads)


if __name__ == "__main__":
    main()
