"""How much compute does a search need? ASHA + TPE against random search and a grid, both at
full budget, on one real space, with the same number of trials each.

    python benchmarks/search_efficiency.py                        # gate_bias x lr, cpu scale, 8 trials
    python benchmarks/search_efficiency.py --scale smoke --trials 4   # a quick check of the plumbing
    python benchmarks/search_efficiency.py gate_bias --sampler-seeds 0,1,2,3 --json figures.json

The space is the sweep file's (a search) plus ``lr`` (log-uniform over ``--lr-range``; ``none``
keeps the file's space). Each strategy is a real sweep (``sweeps.runner.run_sweep``: Ray Tune,
Optuna, MLflow; no confirmation stage):

- ASHA + TPE: the file's scheduler (ASHA by default) and a TPE sampler, per sampler seed;
- random: a random sampler at full budget (no scheduler), per sampler seed;
- grid: the same number of points, spread over the space (cell midpoints, log-spaced for a
  log-uniform key; the counts per key multiply to ``--trials``), at full budget, run once
  (it has no sampler).

Every trial trains at the sweep's first seed and is scored on the sweep file's objective
(a search selects on the validation split, ``val/*``). The report gives, per strategy and
sampler seed, the compute spent until a trial first comes within ``--within`` (default 0.01,
one point of accuracy) of the grid's best final objective: the training FLOPs of the trials
that had ended by then (``compute/train_flops``; ASHA-stopped ones included) and the sweep's
wall time to that trial's end. A trial's value is its last logged objective (for an
ASHA-stopped trial, its value when stopped). Then the rank correlation (Spearman) between
the objective at each ASHA rung and the final objective, over the random search's
full-budget trials (pooled over sampler seeds): how well an early rung predicts the end.

Runs go to a private MLflow store and Tune folder under ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class TrialResult:
    params: dict[str, str]
    final: float | None  # the last logged objective value
    history: list[tuple[int, float]]  # (step, objective)
    flops: float
    end_s: float  # seconds from the sweep's start to the trial's end
    outcome: str


@dataclass
class StrategyRun:
    strategy: str  # "asha+tpe" | "random" | "grid"
    sampler_seed: int | None
    parent_id: str
    wall_s: float
    trials: list[TrialResult] = field(default_factory=list)

    def to_reach(self, target: float, mode: str) -> dict:
        """FLOPs and wall until the first trial reaches ``target`` (in order of trial ends)."""
        done = sorted(self.trials, key=lambda t: t.end_s)
        for i, t in enumerate(done):
            if t.final is not None and (t.final >= target if mode == "max" else t.final <= target):
                return {"reached": True, "trials": i + 1, "flops": sum(x.flops for x in done[: i + 1]),
                        "wall_s": t.end_s}
        spent = sum(x.flops for x in done)
        return {"reached": False, "trials": len(done), "flops": spent, "wall_s": self.wall_s}

    def best(self, mode: str) -> float | None:
        values = [t.final for t in self.trials if t.final is not None and not math.isnan(t.final)]
        return (max if mode == "max" else min)(values) if values else None


# --- the space, the grid and the derived sweep files ---------------------------------------------
def grid_counts(n: int, dims: int) -> list[int]:
    """Points per key, as even as the factors of ``n`` allow, multiplying to ``n``."""
    if dims == 1:
        return [n]
    best = None
    for first in range(1, n + 1):
        if n % first:
            continue
        rest = grid_counts(n // first, dims - 1)
        counts = sorted([first, *rest], reverse=True)
        if best is None or max(counts) - min(counts) < max(best) - min(best):
            best = counts
    return best


def axis(param: dict, k: int) -> list:
    """``k`` cell midpoints of one key's range (log-spaced for loguniform, rounded for int)."""
    low, high, kind = param["low"], param["high"], param["type"]
    if kind == "loguniform":
        lo, hi = math.log(low), math.log(high)
        return [float(f"{math.exp(lo + (i + 0.5) * (hi - lo) / k):.4g}") for i in range(k)]
    values = [low + (i + 0.5) * (high - low) / k for i in range(k)]
    return [round(v) for v in values] if kind == "int" else [float(f"{v:.4g}") for v in values]


def grid_points(space: dict[str, dict], n: int) -> list[dict]:
    """``n`` points spread over a space of continuous keys."""
    from hrm_core.errors import UserError

    for key, p in space.items():
        if p["type"] not in ("uniform", "loguniform", "int"):
            raise UserError(f"space.{key}: the grid spreads continuous keys only (got {p['type']})")
    counts = grid_counts(n, len(space))
    points = [{}]
    for (key, p), k in zip(space.items(), counts, strict=True):
        points = [{**pt, key: v} for pt in points for v in axis(p, k)]
    return points


def resolved_search(sweep: str, scale: str | None, lr_range: tuple[float, float] | None) -> dict:
    """The search at ``scale`` as one self-contained sweep file's mapping (+ lr in its space)."""
    from hrm_core.errors import UserError
    from sweeps.spec import load_spec

    spec, path = load_spec(sweep, scale)
    if spec.kind != "search":
        raise UserError(f"{path}: search_efficiency needs a search (kind: search), not an {spec.kind}")
    raw = spec.model_dump(exclude_none=True)
    raw["scales"] = {}
    if lr_range is not None:
        raw["space"]["lr"] = {"type": "loguniform", "low": lr_range[0], "high": lr_range[1]}
    raw["space"] = {k: {f: v for f, v in p.items() if v is not None} for k, p in raw["space"].items()}
    return raw


def write_sweep(raw: dict, folder: str, name: str) -> str:
    import yaml

    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({**raw, "name": name}, f, sort_keys=False)
    return path


def variants(raw: dict, trials: int, seeds: list[int], storage: str) -> list[tuple[str, int | None, dict]]:
    """(strategy, sampler seed, sweep mapping) of every sweep to run."""
    common = {"num_samples": trials, "storage_path": storage, "keep_checkpoints": "last",
              "time_budget_s": None}
    common = {k: v for k, v in common.items() if v is not None}
    raw = {k: v for k, v in raw.items() if k not in ("confirm", "time_budget_s")}
    sched = {**(raw.get("scheduler") or {"type": "asha"}), "type": "asha"}
    out = []
    for s in seeds:
        out.append(("asha+tpe", s, {**raw, **common, "scheduler": sched,
                                    "sampler": {"type": "tpe", "seed": s}}))
        out.append(("random", s, {**raw, **common, "scheduler": {"type": "none"},
                                  "sampler": {"type": "random", "seed": s}}))
    points = grid_points(raw["space"], trials)
    arms = {f"p{i}": [f"{k}={v}" for k, v in pt.items()] for i, pt in enumerate(points)}
    grid = {k: v for k, v in raw.items() if k not in ("space", "num_samples", "scheduler", "sampler")}
    grid.update(kind="ablation", arms=arms, control="p0", seeds=raw.get("seeds", [0])[:1],
                storage_path=storage, keep_checkpoints="last", scheduler={"type": "none"})
    out.append(("grid", None, grid))
    return out


# --- running and reading back --------------------------------------------------------------------
def read_back(client, parent_id: str, metric: str, strategy: str, seed: int | None,
              keys: list[str]) -> StrategyRun:
    from hrm_core import names
    from sweeps.runner import child_runs

    parent = client.get_run(parent_id)
    start = parent.info.start_time / 1000
    wall = (parent.info.end_time or parent.info.start_time) / 1000 - start
    run = StrategyRun(strategy, seed, parent_id, wall)
    for r in child_runs(client, parent.info.experiment_id, parent_id):
        history = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, metric))
        run.trials.append(TrialResult(
            params={k: v for k, v in r.data.params.items() if k in keys},
            final=history[-1][1] if history else None, history=history,
            flops=r.data.metrics.get(names.COMPUTE_TRAIN_FLOPS, 0.0),
            end_s=((r.info.end_time or r.info.start_time) / 1000) - start,
            outcome=r.data.tags.get(names.TAG_OUTCOME, "?"),
        ))
    return run


def rung_steps(raw: dict, planned: int) -> list[int]:
    sched = raw.get("scheduler") or {}
    grace, rf = int(sched.get("grace_period", 50)), float(sched.get("reduction_factor", 2.0))
    max_t = int(sched.get("max_t") or planned)
    rungs, r = [], grace
    while r < max_t:
        rungs.append(int(r))
        r *= rf
    return rungs


def rung_correlations(runs: list[StrategyRun], rungs: list[int]) -> dict[int, dict]:
    """Spearman's rho between the value at each rung (the last eval at or before it) and the
    final value, over full-budget trials."""
    from scipy.stats import spearmanr

    out = {}
    for rung in rungs:
        pairs = []
        for run in runs:
            for t in run.trials:
                at = [v for s, v in t.history if s <= rung]
                if at and t.final is not None:
                    pairs.append((at[-1], t.final))
        if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
            rho = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
        else:
            rho = None
        out[rung] = {"rho": rho, "trials": len(pairs)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", nargs="?", default="gate_bias", help="a search sweep (default gate_bias)")
    ap.add_argument("--scale", choices=["smoke", "cpu", "gpu"], default="cpu")
    ap.add_argument("--trials", type=int, default=8, help="trials per strategy (default 8)")
    ap.add_argument("--sampler-seeds", default="0,1,2", help="comma-separated (>= 3 for figures)")
    ap.add_argument("--lr-range", default="3e-4,3e-3", help="lr's log-uniform range in the space, or none")
    ap.add_argument("--within", type=float, default=0.01, help="how near the grid's best counts as reached")
    ap.add_argument("--out", help="folder for the runs (MLflow store, Tune results; default: a temp one)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.sampler_seeds.split(",")]
        lr = None if args.lr_range == "none" else tuple(float(x) for x in args.lr_range.split(","))
    except ValueError:
        ap.error("--sampler-seeds: whole numbers; --lr-range: LOW,HIGH or none")
    if lr is not None and (len(lr) != 2 or not 0 < lr[0] < lr[1]):
        ap.error(f"--lr-range: LOW,HIGH with 0 < LOW < HIGH (got {args.lr_range})")
    if args.trials < 2:
        ap.error(f"--trials must be >= 2 (got {args.trials})")
    from hrm_core.errors import UserError

    try:
        figures = run(args, seeds, lr)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, default=str)
    return 0


def run(args, seeds: list[int], lr) -> dict:
    import ray

    raw = resolved_search(args.sweep, args.scale, lr)  # every check before anything runs
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="search-efficiency-"))
    os.makedirs(out, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.path.join(out, 'mlflow.db')}"
    metric, mode = raw["objective"]["metric"], raw["objective"].get("mode", "max")
    if isinstance(metric, list):
        metric, mode = metric[0], mode[0]
    plan = variants(raw, args.trials, seeds, os.path.join(out, "ray"))
    print(f"{args.sweep} at scale {args.scale}: space {sorted(raw['space'])}, {args.trials} trials per "
          f"strategy, sampler seeds {seeds}; objective {metric} ({mode}); runs in {out}", flush=True)
    from hrm_core.tracking.client import get_client
    from sweeps.prepare import prepare
    from sweeps.runner import run_sweep
    from sweeps.tuner import init_ray

    init_ray()
    runs: list[StrategyRun] = []
    planned = 0
    try:
        for strategy, seed, sweep in plan:
            name = f"{raw['name']}_{strategy.replace('+', '_')}" + (f"_s{seed}" if seed is not None else "")
            path = write_sweep(sweep, out, name)
            planned = max(planned, prepare(path, log=lambda *_: None).planned_steps)
            t0 = time.perf_counter()
            parent = run_sweep(path, log=lambda *_: None)
            runs.append(read_back(get_client(), parent, metric, strategy, seed, list(raw["space"])))
            label = "-" if seed is None else seed
            print(f"  {strategy:<9} seed {label:>2}: {len(runs[-1].trials)} trials, "
                  f"best {runs[-1].best(mode)}, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        ray.shutdown()
    return summarise(runs, metric, mode, args.within, rung_steps(raw, planned))


def summarise(runs: list[StrategyRun], metric: str, mode: str, within: float, rungs: list[int]) -> dict:
    grid = next(r for r in runs if r.strategy == "grid")
    grid_best = grid.best(mode)
    if grid_best is None:
        print(f"the grid logged no {metric}: nothing to compare")
        return {"metric": metric, "grid_best": None}
    target = grid_best - within if mode == "max" else grid_best + within
    grid_cost = grid.to_reach(target, mode)
    print(f"\ngrid best final {metric}: {grid_best:.4f}; target (within {within}): {target:.4f}")
    print(f"{'strategy':<9} {'seed':>4} {'reached':>7} {'trials':>6} {'GFLOP':>10} {'x grid':>7} "
          f"{'wall s':>8} {'best':>7}")
    rows = []
    for r in runs:
        cost = r.to_reach(target, mode)
        ratio = cost["flops"] / grid_cost["flops"] if grid_cost["flops"] else float("nan")
        rows.append({"strategy": r.strategy, "sampler_seed": r.sampler_seed, **cost, "of_grid_flops": ratio,
                     "best": r.best(mode), "sweep_wall_s": r.wall_s, "parent_run": r.parent_id})
        best = r.best(mode)
        print(f"{r.strategy:<9} {r.sampler_seed if r.sampler_seed is not None else '-':>4} "
              f"{'yes' if cost['reached'] else 'no':>7} {cost['trials']:>6} {cost['flops'] / 1e9:>10.1f} "
              f"{ratio:>7.2f} {cost['wall_s']:>8.0f} {best if best is None else round(best, 4)!s:>7}")
    for strategy in ("asha+tpe", "random"):
        mine = [x for x in rows if x["strategy"] == strategy]
        reached = [x for x in mine if x["reached"]]
        mean = sum(x["of_grid_flops"] for x in mine) / len(mine) if mine else float("nan")
        print(f"{strategy}: reached in {len(reached)}/{len(mine)} sampler seeds; mean FLOPs to reach "
              f"(or spent) {mean:.2f}x the grid's")
    correlations = rung_correlations([r for r in runs if r.strategy == "random"], rungs)
    print("rank correlation (Spearman) of the value at each ASHA rung with the final value, "
          "random search's full-budget trials:")
    for rung, c in correlations.items():
        rho = "n/a" if c["rho"] is None else f"{c['rho']:.2f}"
        print(f"  step {rung:>6}: rho {rho} over {c['trials']} trials")
    return {"metric": metric, "mode": mode, "grid_best": grid_best, "target": target, "rows": rows,
            "rung_correlations": correlations,
            "trials": {f"{r.strategy}/{r.sampler_seed}": [t.__dict__ for t in r.trials] for r in runs}}


if __name__ == "__main__":
    sys.exit(main())
