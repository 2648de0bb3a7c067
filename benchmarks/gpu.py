"""hrm_v1 on one CUDA GPU: s/step and MFU with every kernel, each kernel's gain, the largest
batch that fits, and small trials sharing the GPU. One command, under 5 minutes, figures in JSON.

    python benchmarks/gpu.py                      # on a CUDA machine; writes gpu.json
    python benchmarks/gpu.py --out figures.json --budget 240 --peak-tflops 312

Parts (each prints its lines; without a GPU each prints one ``skip:`` line and the JSON says why):

1. kernels: hrm_v1, bf16, at the reference's batch 768: every kernel (flash-attn, the fused
   AdamATan2, torch.compile), then one fallback at a time (SDPA for flash-attn, the pure-torch
   AdamATan2, eager), timed interleaved (``train_throughput.time_interleaved``), so each
   kernel's gain is the ratio to its fallback.
2. largest batch: doubling from 768 until a step runs out of memory (halving when 768 itself
   does not fit), then bisection (multiples of 64), probed eagerly; the largest batch that fits
   is then timed with every kernel.
3. sharing: N small trials (the tiny config, batch 64) as N processes on the one GPU at once
   (what fractional ``resources.gpu`` does) against the same N one at a time; steps/s of each.

MFU is the step's matmul FLOPs (``hrm_core.observe.flops``, as ``python -m hrm_core.summary``
counts them) per second over the GPU's dense bf16 peak: its datasheet figure when the name is
known (or ``--peak-tflops``), and over the bare bf16 GEMM speed measured in the same run.
A global time budget (``--budget``) keeps the whole run under 5 minutes: a part that would
start after it is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_throughput import make_step, time_interleaved  # noqa: E402
from hrm_core.config.schema import ArchConfig  # noqa: E402
from hrm_core.observe.flops import count_flops  # noqa: E402

REFERENCE_BATCH = 768
BATCH_MULTIPLE = 64
SEQ, VOCAB = 81, 11  # the Sudoku shape train_throughput's batches have
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a substring of torch's device name.
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0, "H200": 989.0,
    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
    "RTX 4090": 165.0, "RTX 3090": 71.0, "A6000": 155.0, "V100": 125.0, "T4": 65.0,
}
# (name, flash-attn, fused AdamATan2, compile): every kernel first, then one fallback each
KERNEL_CASES = [
    ("all kernels", True, True, True),
    ("SDPA (no flash-attn)", False, True, True),
    ("pure-torch AdamATan2", True, False, True),
    ("eager (no compile)", True, True, False),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu.json", help="where the figures go (JSON)")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run (default 270)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case (at most)")
    ap.add_argument("--max-batch", type=int, default=16384, help="the largest batch the search tries")
    ap.add_argument("--trials", type=int, default=4, help="small trials sharing the GPU (part 3)")
    ap.add_argument("--trial-steps", type=int, default=60, help="steps of each small trial")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: by its name)")
    ap.add_argument("--small-trial-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key in ("budget", "steps", "max_batch", "trials", "trial_steps", "peak_tflops"):
        value = getattr(args, key)
        if value is not None and value <= 0:
            ap.error(f"--{key.replace('_', '-')} must be > 0 (got {value})")
    if args.max_batch < REFERENCE_BATCH:
        ap.error(f"--max-batch must be >= the reference batch {REFERENCE_BATCH} (got {args.max_batch})")
    return args


# --- arithmetic and search: no GPU needed -------------------------------------------------------
def flops_per_step(arch_name: str, batch: int) -> int:
    """hrm_v1 (or the tiny config) at ``batch``: matmul FLOPs of one train step."""
    from benchmarks.train_throughput import ARCHS

    return count_flops(ArchConfig(**ARCHS[arch_name][0]), VOCAB, SEQ, batch).train_step


def mfu(flops: float, s_per_step: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (None without a peak)."""
    if not peak_tflops or s_per_step <= 0:
        return None
    return flops / s_per_step / (peak_tflops * 1e12)


def datasheet_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (the longest matching entry), or None."""
    hits = [k for k in PEAK_BF16_TFLOPS if k.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def largest_batch(fits: Callable[[int], bool], start: int, limit: int,
                  multiple: int = BATCH_MULTIPLE) -> tuple[int, list[tuple[int, bool]]]:
    """The largest batch (a multiple of ``multiple``, <= ``limit``) for which ``fits`` holds,
    assuming it holds below some threshold: double from ``start`` until a batch fails (halve
    when ``start`` itself fails), then bisect between the last that fit and the first that
    failed. -> (the batch, 0 when not even ``multiple`` fits; the probes in order)."""
    probes: list[tuple[int, bool]] = []

    def probe(b: int) -> bool:
        ok = fits(b)
        probes.append((b, ok))
        return ok

    good, bad = start, None
    if not probe(start):
        good, bad = 0, start
        while good == 0 and bad > multiple:
            half = bad // 2 // multiple * multiple
            if half < multiple:
                break
            if probe(half):
                good = half
            else:
                bad = half
        if good == 0:
            return 0, probes
    while bad is None and good < limit:
        nxt = min(good * 2, limit)
        if probe(nxt):
            good = nxt
        else:
            bad = nxt
    if bad is None:
        return good, probes
    while bad - good > multiple:
        mid = (good + bad) // 2 // multiple * multiple
        if mid <= good:
            break
        if probe(mid):
            good = mid
        else:
            bad = mid
    return good, probes


class Budget:
    """The run's deadline: parts ask what is left before they start."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# --- the GPU parts ------------------------------------------------------------------------------
def release() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def kernels_part(device, batch: int, steps: int, budget: Budget, peak: float | None, gemm_tflops: float,
                 log=print) -> dict:
    """Every kernel, then each fallback, at ``batch``: s/step, MFU, each kernel's gain."""
    fns, names = [], []
    for name, flash, fused, compile_ in KERNEL_CASES:
        step, _, _ = make_step("hrm_v1", "bfloat16", "compile" if compile_ else "eager", device, "native",
                               batch_size=batch, flash=flash, fused_adam=fused)
        fns.append(step)
        names.append(name)
    rows = time_interleaved(fns, steps, max(10.0, budget.left() / 3))
    flops = flops_per_step("hrm_v1", batch)
    out = {"batch": batch, "flops_per_step": flops, "cases": {}}
    base = rows[0]["s_per_step"]
    for name, row in zip(names, rows, strict=True):
        case = {**row, "mfu": mfu(flops, row["s_per_step"], peak),
                "of_gemm_peak": mfu(flops, row["s_per_step"], gemm_tflops),
                "gain_of_the_kernel": row["s_per_step"] / base}
        out["cases"][name] = case
        log(f"  {name:<24} batch {batch:>5}  {row['s_per_step']:.4f} s/step  MFU {_pct(case['mfu'])}  "
            f"of GEMM peak {_pct(case['of_gemm_peak'])}  x{case['gain_of_the_kernel']:.2f} the time of all "
            f"kernels (warm-up {row['warmup_s']:.0f} s)")
    del fns, step
    release()
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fits_on_gpu(device) -> Callable[[int], bool]:
    import torch

    def probe(batch: int) -> bool:
        try:
            step, _, _ = make_step("hrm_v1", "bfloat16", "eager", device, "native", batch_size=batch)
            step()
            return True
        except torch.cuda.OutOfMemoryError:
            return False

    def fits(batch: int) -> bool:
        ok = probe(batch)  # its frame, and the model and activations it held, are gone here
        release()
        return ok

    return fits


def gemm_peak_tflops(device, n: int = 8192, reps: int = 10) -> float:
    """The bare bf16 GEMM speed of this GPU (n x n x n), TFLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def small_trial_worker(steps: int) -> None:
    """One small trial's steps on the GPU; prints its loop's start, end (epoch seconds) and steps."""
    import torch

    step, _, _ = make_step("tiny", "float32", "eager", torch.device("cuda"), "native")
    step()  # warm-up, untimed
    start = time.time()
    for _ in range(steps):
        step()
    print(json.dumps({"start": start, "end": time.time(), "steps": steps}), flush=True)


def sharing_part(trials: int, steps: int, log=print) -> dict:
    """N small-trial processes at once on the GPU vs one at a time: steps per second."""
    cmd = [sys.executable, os.path.abspath(__file__), "--small-trial-worker", "--trial-steps", str(steps)]

    def run(n: int) -> list[dict]:
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone = [run(1)[0] for _ in range(trials)]
    together = run(trials)
    seq = sum(r["steps"] for r in alone) / sum(r["end"] - r["start"] for r in alone)
    span = max(r["end"] for r in together) - min(r["start"] for r in together)
    par = sum(r["steps"] for r in together) / span
    log(f"  {trials} tiny trials (batch 64): one at a time {seq:.1f} steps/s, sharing the GPU {par:.1f} "
        f"steps/s (x{par / seq:.2f})")
    return {"trials": trials, "steps_each": steps, "sequential_steps_per_s": seq,
            "shared_steps_per_s": par, "speedup": par / seq}


# --- the command --------------------------------------------------------------------------------
def skip(part: str, why: str, log=print) -> dict:
    log(f"skip: {part}: {why}")
    return {"skipped": why}


def run(args: argparse.Namespace, log=print) -> dict:
    import torch

    budget = Budget(args.budget)
    figures: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__, "budget_s": args.budget,
                     "flops_per_step_at_reference_batch": flops_per_step("hrm_v1", REFERENCE_BATCH)}
    parts = ("kernels at batch 768", "largest batch", "small trials sharing the GPU")
    if not torch.cuda.is_available():
        for part in parts:
            figures[part] = skip(part, "no CUDA device (torch.cuda.is_available() is False)", log)
        return figures
    from hrm_core.model.layers import FLASH_ATTN
    from hrm_core.train.optim import FusedAdamATan2

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops or datasheet_peak(name)
    gemm = gemm_peak_tflops(device)
    figures.update({"device": name, "peak_bf16_tflops": peak, "measured_gemm_tflops": gemm,
                    "flash_attn": FLASH_ATTN, "fused_adam_atan2": FusedAdamATan2 is not None})
    fused = "installed" if FusedAdamATan2 is not None else "not installed"
    log(f"{name}: bf16 peak {peak or 'unknown (give --peak-tflops)'} TFLOP/s, bare GEMM {gemm:.0f} "
        f"TFLOP/s; flash-attn {FLASH_ATTN or 'not installed'}, fused AdamATan2 {fused}")
    try:
        figures[parts[0]] = kernels_part(device, REFERENCE_BATCH, args.steps, budget, peak, gemm, log)
    except torch.cuda.OutOfMemoryError:  # a small GPU: the largest batch below still says what fits
        release()
        figures[parts[0]] = skip(parts[0], f"batch {REFERENCE_BATCH} does not fit on this GPU (OOM)", log)
    if budget.left() > 60:
        figures[parts[1]] = largest_part(device, args, budget, peak, gemm, log)
    else:
        figures[parts[1]] = skip(parts[1], f"time budget spent ({args.budget:.0f} s)", log)
    if budget.left() > 30:
        figures[parts[2]] = sharing_part(args.trials, args.trial_steps, log)
    else:
        figures[parts[2]] = skip(parts[2], f"time budget spent ({args.budget:.0f} s)", log)
    return figures


def largest_part(device, args, budget: Budget, peak, gemm, log) -> dict:
    """The largest batch that fits (probed eagerly), then timed with every kernel."""
    batch, probes = largest_batch(fits_on_gpu(device), REFERENCE_BATCH, args.max_batch)
    log(f"  largest batch that fits: {batch} (probes: "
        + ", ".join(f"{b} {'fits' if ok else 'OOM'}" for b, ok in probes) + ")")
    out: dict = {"batch": batch, "probes": probes}
    if not batch or budget.left() < 45:
        return out
    step, flops, _ = make_step("hrm_v1", "bfloat16", "compile", device, "native", batch_size=batch)
    (row,) = time_interleaved([step], args.steps, max(10.0, budget.left() / 3))
    del step
    release()
    case = {**row, "flops_per_step": flops, "mfu": mfu(flops, row["s_per_step"], peak),
            "of_gemm_peak": mfu(flops, row["s_per_step"], gemm)}
    log(f"  {'all kernels':<24} batch {batch:>5}  {row['s_per_step']:.4f} s/step  MFU {_pct(case['mfu'])}  "
        f"of GEMM peak {_pct(case['of_gemm_peak'])}")
    return {**out, **case}


def write_json(figures: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(figures, f, indent=2, default=str)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.small_trial_worker:
        small_trial_worker(args.trial_steps)
        return 0
    t0 = time.monotonic()
    figures = run(args)
    figures["wall_s"] = time.monotonic() - t0
    write_json(figures, args.out)
    print(f"figures: {args.out} ({figures['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
