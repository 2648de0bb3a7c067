"""Small-trial throughput: one small sweep on a base commit and on this tree, side by side.

    python benchmarks/small_trials.py                      # base 93409eb, 8 trials x 300 steps, 2 slots
    python benchmarks/small_trials.py --rounds 2 --trials 6 --steps 300 --base HEAD~5

The sweep is the cpu-scale trial of each tree (``configs/scale/cpu.yaml``: hidden 64, 1+1
layers, halt 4, batch 64, 4x4 Sudoku, one thread) with ``max_steps`` set to ``--steps`` and an
eval every 100 steps, ``--trials`` trials, ``--slots`` at a time, run as a user runs one:
``python -m sweeps run FILE --no-report`` in a fresh process, Ray's start-up, data loading,
every trial's MLflow run, evaluations and checkpoints included. The base side is the base
commit checked out with ``git worktree`` into a temporary folder (removed after); the sweep runs
there with that tree first on ``PYTHONPATH``, on the same virtual environment.

The two trees' cpu scales may differ in what makes them fast (today's compiles the model; see
``hrm_core/train/compiled.py``) but must not differ in the work a step does: the script refuses
to compare them when hidden size, layers, heads, halt steps or batch differ.

This tree runs twice per round: with a cold compile cache (a new, empty
``TORCHINDUCTOR_CACHE_DIR``: the first sweep on a machine pays the compile) and then warm (the
same folder again: every later sweep). Rounds alternate base, cold, warm. Figures: the sweep's
wall time, steps per core-second (trials x steps / (wall x slots)) and the ratio to the base,
and the step FLOPs per core-second against the GEMM peak measured here at the step's GEMM
shapes (one thread, fp32), so the share of the core a sweep gets is visible.

Each round takes about ``2 x trials x steps x 0.1 s / slots`` plus a minute (8 x 300: ~5 min).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

BASE_COMMIT = "93409eb"  # the last commit before issue 17's round (2026-11-30)
SAME_WORK = ("arch.hidden_size", "arch.num_heads", "arch.H_layers", "arch.L_layers", "arch.halt_max_steps",
             "arch.forward_dtype", "arch.puzzle_emb_ndim", "global_batch_size", "threads")
SCALE_FILE = "configs/scale/cpu.yaml"


def scale_overrides(text: str, steps: int) -> list[str]:
    """A scale file's ``base`` overrides with ``max_steps`` and the eval cadence set for the benchmark."""
    dropped = ("max_steps", "eval_every_steps")
    keep = [o for o in yaml.safe_load(text)["base"] if o.split("=")[0] not in dropped]
    return [*keep, f"max_steps={steps}", "eval_every_steps=100"]


def work_settings(overrides: list[str]) -> dict[str, str]:
    """The overrides that set a step's work (model shape, batch, dtype, threads)."""
    pairs = dict(o.split("=", 1) for o in overrides)
    return {k: pairs.get(k, "") for k in SAME_WORK}


def sweep_yaml(overrides: list[str], trials: int, slots: int, storage: str) -> str:
    """An ablation of ``trials`` identical arms, one seed each: the sweep both trees can read."""
    arms = "".join(f"  a{i}: [lr_warmup_steps=50]\n" for i in range(trials))
    return (f"name: small_trials\nkind: ablation\ncontrol: a0\nbase: [data=sudoku4, {', '.join(overrides)}]\n"
            f"arms:\n{arms}seeds: [0]\nmax_concurrent: {slots}\nresources: {{cpu: 1}}\n"
            f"storage_path: {storage}\n")


def run_sweep(tree: str, overrides: list[str], args, env_extra: dict[str, str]) -> float:
    """One sweep from ``tree`` in a fresh process; its wall time (start-up included)."""
    with tempfile.TemporaryDirectory(prefix="small-trials-") as tmp:
        path = os.path.join(tmp, "small_trials.yaml")
        with open(path, "w") as f:
            f.write(sweep_yaml(overrides, args.trials, args.slots, os.path.join(tmp, "ray")))
        env = {**os.environ, "PYTHONPATH": tree, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               **env_extra}
        env.pop("RAY_ADDRESS", None)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sweeps", "run", path, "--no-report"], cwd=tree, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"error: the sweep in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def prepare(tree: str, overrides: list[str]) -> None:
    """Build the tree's dataset and warm the page cache with a 1-step eager run (not timed)."""
    with tempfile.TemporaryDirectory(prefix="small-trials-prep-") as tmp:
        env = {**os.environ, "PYTHONPATH": tree, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        cmd = [sys.executable, "-m", "hrm_core.pretrain", "data=sudoku4", *overrides, "max_steps=1",
               "compile=false", f"checkpoint_path={tmp}/run"]
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: preparing {tree} failed:\n{done.stderr[-3000:]}")


def step_profile(overrides: list[str], steps: int = 60) -> dict[str, float]:
    """This tree's train step in this process (one thread): eager and compiled ms per step, the
    step's GFLOP, and its GEMMs' time at this core's bare-GEMM speed (fp32, the step's shapes)."""
    import torch
    from train_throughput import gemm_seconds

    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import resolve_data_path
    from hrm_core.observe.flops import count_flops, step_gemms
    from hrm_core.train.runtime import resolve_runtime
    from hrm_core.train.trainer import Trainer

    torch.set_num_threads(1)
    cpu, out = torch.device("cpu"), {}
    for mode in ("eager", "compiled"):
        cfg = compose_config(["data=sudoku4", *overrides, f"compile={mode == 'compiled'}"])
        cfg = resolve_runtime(cfg, cpu)
        data = resolve_data_path(cfg, log=lambda *_: None)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(cfg, data, run_dir, cpu, [], log=lambda *_: None)
            for _ in range(10):  # warm-up (and the compile)
                trainer.train_step(trainer.sampler.next_batch())
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer._log_train(trainer.train_step(trainer.sampler.next_batch()))
            out[mode] = (time.perf_counter() - t0) / steps
    dims = trainer.dims
    shapes = step_gemms(cfg.arch, dims.vocab_size, dims.seq_len, cfg.global_batch_size)
    gemm_flops = sum(2 * m * k * n * c for m, k, n, c in shapes)
    floor = gemm_seconds(shapes, torch.float32, cpu, repeats=5)
    flops = count_flops(cfg.arch, dims.vocab_size, dims.seq_len, cfg.global_batch_size).train_step
    return {**out, "gemm_floor": floor, "gflop": flops / 1e9, "peak": gemm_flops / floor / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=BASE_COMMIT, help="the commit to compare with (default: %(default)s)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--slots", type=int, default=2, help="trials at a time, one CPU each")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    base_text = subprocess.run(["git", "show", f"{args.base}:{SCALE_FILE}"], cwd=ROOT, capture_output=True,
                               text=True)
    if base_text.returncode:
        sys.exit(f"error: --base {args.base}: no {SCALE_FILE} there ({base_text.stderr.strip()})")
    base_ov = scale_overrides(base_text.stdout, args.steps)
    with open(os.path.join(ROOT, SCALE_FILE)) as f:
        ours_ov = scale_overrides(f.read(), args.steps)
    if work_settings(base_ov) != work_settings(ours_ov):
        sys.exit(f"error: the cpu scales differ in a step's work: {work_settings(base_ov)} vs "
                 f"{work_settings(ours_ov)}")
    worktree = tempfile.mkdtemp(prefix="small-trials-base-")
    subprocess.run(["git", "worktree", "add", "--detach", "--force", worktree, args.base], cwd=ROOT,
                   check=True, capture_output=True)
    walls: dict[str, list[float]] = {"base": [], "cold": [], "warm": []}
    try:
        prepare(worktree, base_ov)
        prepare(ROOT, ours_ov)
        for r in range(args.rounds):
            cache = tempfile.mkdtemp(prefix="small-trials-inductor-")
            walls["base"].append(run_sweep(worktree, base_ov, args, {}))
            walls["cold"].append(run_sweep(ROOT, ours_ov, args, {"TORCHINDUCTOR_CACHE_DIR": cache}))
            walls["warm"].append(run_sweep(ROOT, ours_ov, args, {"TORCHINDUCTOR_CACHE_DIR": cache}))
            shutil.rmtree(cache, ignore_errors=True)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items()), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT, capture_output=True)
        shutil.rmtree(worktree, ignore_errors=True)
    print_table(walls, args, step_profile(ours_ov))


def print_table(walls: dict[str, list[float]], args, prof: dict[str, float]) -> None:
    steps, base = args.trials * args.steps, statistics.median(walls["base"])
    print(f"\n{args.trials} trials x {args.steps} steps, {args.slots} at a time, 1 thread each; base "
          f"{args.base}; median of {args.rounds} round(s)")
    head = ("side", "wall s", "steps/core-s", "vs base", "GFLOP/core-s", "of peak")
    print(f"{head[0]:<34} {head[1]:>8} {head[2]:>13} {head[3]:>8} {head[4]:>13} {head[5]:>8}")
    labels = {"base": f"base ({args.base}), eager", "cold": "this tree, compile cache cold",
              "warm": "this tree, compile cache warm"}
    for key, label in labels.items():
        wall = statistics.median(walls[key])
        rate = steps / (wall * args.slots)
        gflops = rate * prof["gflop"]
        print(f"{label:<34} {wall:>8.1f} {rate:>13.2f} {base / wall:>7.2f}x {gflops:>13.1f} "
              f"{gflops / prof['peak']:>7.0%}")
    floor = prof["gemm_floor"]
    print(f"\nthis tree's step alone (one thread, {prof['gflop']:.2f} GFLOP): eager "
          f"{prof['eager'] * 1e3:.1f} ms, compiled {prof['compiled'] * 1e3:.1f} ms; its GEMMs at this core's "
          f"bare fp32 speed at the step's shapes ({prof['peak']:.1f} GFLOP/s): {floor * 1e3:.1f} ms, so "
          f"no step of this work can beat {prof['eager'] / floor:.2f}x eager on this core")


if __name__ == "__main__":
    main()
