"""Does a sweep's scale answer its question? Train its reference configuration at that scale
and say whether the objective ends in the informative range.

    python benchmarks/calibrate_scale.py feudal_weight                 # its default scale
    python benchmarks/calibrate_scale.py gate_bias --scale smoke --seeds 0
    python benchmarks/calibrate_scale.py feudal_weight max_steps=1200 lr=3e-3 --json out.json

The reference configuration is an ablation's control arm, or a search's base configuration
(the space's keys at their config defaults). It trains with the seeds the sweep runs (at
least its ``min_seeds``), as a sweep trial would (the trial's overrides, threads and
checkpoints; ``max_concurrent`` at a time, each in its own process), through the trainer's
one entry (``hrm_core.pretrain.train``). Extra overrides (``key=value``) go over the sweep
file as on ``python -m sweeps run``: sweep keys or training keys for every trial.

It prints the learning curve of the sweep's objective (the mean over seeds at every eval,
and each seed's), the final values, the wall time (start-up included) and a verdict:

- an accuracy metric (its name ends in ``accuracy``): "floor" below a mean final of 0.3,
  "ceiling" above 0.9, else "informative";
- any other metric: "floor" when the mean final value improved on the mean first eval by
  less than 10 % of the first eval's magnitude (the curve never left its start), else
  "informative" (such a metric has no ceiling this script could know).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLOOR, CEILING = 0.3, 0.9  # the informative range of an accuracy (issue 17)
MIN_IMPROVEMENT = 0.10  # other metrics: how far from its start the curve must move


@dataclass
class SeedRun:
    seed: int
    curve: list[tuple[int, float]]  # (step, objective) at every eval
    final: float | None
    wall_s: float
    outcome: str
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # an eval/* objective's val/ twin


@dataclass
class Calibration:
    sweep: str
    scale: str
    metric: str
    mode: str
    reference: str  # "control arm <name>" or "base configuration"
    overrides: list[str]
    runs: list[SeedRun] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def finals(self) -> list[float]:
        return [r.final for r in self.runs if r.final is not None]

    @property
    def mean_final(self) -> float | None:
        return sum(self.finals) / len(self.finals) if self.finals else None

    @property
    def verdict(self) -> str:
        return verdict(self.metric, self.mode, self.mean_final, mean_first(self.runs))


def verdict(metric: str, mode: str, mean_final: float | None, first: float | None) -> str:
    """"informative", "floor" or "ceiling" (see the module's docstring)."""
    if mean_final is None or mean_final != mean_final:
        return "floor"
    if metric.endswith("accuracy"):
        return "floor" if mean_final < FLOOR else "ceiling" if mean_final > CEILING else "informative"
    if first is None:
        return "floor"
    gain = (mean_final - first) if mode == "max" else (first - mean_final)
    return "informative" if gain >= MIN_IMPROVEMENT * max(abs(first), 1e-12) else "floor"


def mean_first(runs: list[SeedRun]) -> float | None:
    firsts = [r.curve[0][1] for r in runs if r.curve]
    return sum(firsts) / len(firsts) if firsts else None


def reference_overrides(spec) -> tuple[str, list[str]]:
    """(what it is, the training overrides) of the sweep's reference configuration, seedless."""
    if spec.kind == "ablation":
        return f"control arm {spec.control}", [*spec.base, *spec.arms[spec.control]]
    return "base configuration", list(spec.base)


def calibration_seeds(spec, given: list[int] | None) -> list[int]:
    """The seeds given, else the sweep's, topped up to its ``min_seeds`` with the next integers."""
    if given:
        return given
    seeds = list(spec.seeds)
    extra = max(seeds) + 1
    while len(seeds) < getattr(spec, "min_seeds", 3):
        seeds.append(extra)
        extra += 1
    return seeds


def read_curve(run_dir: str, metric: str) -> list[tuple[int, float]]:
    """(step, value) of ``metric`` in a run's metrics.jsonl, in step order."""
    points = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "alert" not in row and isinstance(row.get(metric), (int, float)):
                points[row["step"]] = float(row[metric])
    return sorted(points.items())


def train_seed(overrides: list[str], seed: int, threads: int, metric: str, out_dir: str) -> SeedRun:
    """One seed of the reference configuration, as a sweep trial trains it (in this process)."""
    import torch

    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import resolve_data_path
    from hrm_core.pretrain import train
    from hrm_core.train.hardware import resolve_device
    from hrm_core.train.runtime import resolve_runtime

    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    cfg = compose_config([*overrides, f"seed={seed}", f"threads={threads}", "progress=false",
                          "checkpoint_every_eval=true"])
    device = resolve_device(cfg.device)
    cfg = resolve_runtime(cfg, device)
    data_path = resolve_data_path(cfg, log=lambda *_: None)
    run_dir = os.path.join(out_dir, f"seed{seed}")
    cfg = cfg.model_copy(update={"data_path": data_path, "checkpoint_path": run_dir})
    done = train(cfg, data_path, run_dir, device, log=lambda *_: None)
    curve = read_curve(run_dir, metric)
    twin = read_curve(run_dir, val_twin(metric)) if val_twin(metric) else []
    return SeedRun(seed, curve, curve[-1][1] if curve else None, time.perf_counter() - t0, done.outcome, twin)


def val_twin(metric: str) -> str | None:
    """``val/x`` for a test-split objective ``eval/x`` (None otherwise)."""
    return f"val/{metric[len('eval/'):]}" if metric.startswith("eval/") else None


def calibrate(sweep: str, scale: str | None, overrides: list[str], seeds: list[int] | None = None,
              workers: int | None = None, out_dir: str | None = None, log=print) -> Calibration:
    from sweeps.prepare import prepare

    t0 = time.perf_counter()
    prep = prepare(sweep, scale, overrides, log=lambda *_: None)  # every check, datasets built once
    spec = prep.spec
    what, train_overrides = reference_overrides(spec)
    cal = Calibration(spec.name, spec.scale, spec.objective.metrics[0], spec.objective.modes[0], what,
                      train_overrides)
    seeds = calibration_seeds(spec, seeds)
    threads = max(1, int(spec.resources.cpu))
    workers = workers or max(1, min(spec.max_concurrent, len(seeds), (os.cpu_count() or 1) // threads))
    log(f"{spec.name} at scale {spec.scale}: {what}, seeds {seeds}, {workers} at a time, "
        f"{threads} thread(s) each; objective {cal.metric} ({cal.mode})")
    out_dir = out_dir or tempfile.mkdtemp(prefix=f"calibrate-{spec.name}-")
    args = [(train_overrides, s, threads, cal.metric, out_dir) for s in seeds]
    if workers == 1:
        cal.runs = [train_seed(*a) for a in args]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            cal.runs = list(pool.map(train_seed, *zip(*args, strict=True)))
    cal.wall_s = time.perf_counter() - t0
    return cal


def report(cal: Calibration, log=print) -> None:
    # an eval/* objective is logged at the end only when the data has a val split: its val/ twin
    # is the curve then
    twin = any(r.val_curve for r in cal.runs) and all(len(r.curve) < 2 for r in cal.runs)
    curves = [r.val_curve if twin else r.curve for r in cal.runs]
    log(f"learning curve of {val_twin(cal.metric) if twin else cal.metric}:")
    log(f"{'step':>7} {'mean':>8}  " + " ".join(f"{'seed ' + str(r.seed):>8}" for r in cal.runs))
    for step in sorted({s for c in curves for s, _ in c}):
        values = [dict(c).get(step) for c in curves]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if known else float("nan")
        cells = " ".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in values)
        log(f"{step:>7} {mean:>8.4f}  {cells}")
    finals = ", ".join(f"seed {r.seed}: {r.final if r.final is None else round(r.final, 4)} ({r.outcome}, "
                       f"{r.wall_s:.0f} s)" for r in cal.runs)
    mean = "n/a" if cal.mean_final is None else f"{cal.mean_final:.4f}"
    log(f"final {cal.metric}: mean {mean}; {finals}")
    log(f"wall time: {cal.wall_s:.0f} s (start-up included)")
    rule = (f"mean final in [{FLOOR}, {CEILING}]" if cal.metric.endswith("accuracy")
            else f"improves on its first eval by >= {MIN_IMPROVEMENT:.0%}")
    log(f"verdict: {cal.verdict} ({rule} is informative)")


def _stop(signum: int, _frame) -> None:
    """A terminated calibration takes its training processes with it (they would run on)."""
    for child in multiprocessing.active_children():
        child.terminate()
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="a name in configs/sweep/ or a path")
    ap.add_argument("overrides", nargs="*", help="sweep keys or training keys, as on python -m sweeps run")
    ap.add_argument("--scale", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--seeds", help="comma-separated seeds (default: the sweep's, at least min_seeds)")
    ap.add_argument("--workers", type=int, help="seeds at a time (default: the sweep's max_concurrent)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    from hrm_core.errors import UserError

    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        ap.error(f"--seeds: comma-separated whole numbers (got {args.seeds!r})")
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers must be >= 1 (got {args.workers})")
    try:
        cal = calibrate(args.sweep, args.scale, args.overrides, seeds, args.workers)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report(cal)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**asdict(cal), "mean_final": cal.mean_final, "verdict": cal.verdict}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
