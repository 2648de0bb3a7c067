"""Training throughput of the HRM trainer: s/step, samples/s and GFLOP/s.

GFLOP/s is the step's matmul FLOPs as `python -m hrm_core.summary` counts them, per second
of the median step: set beside the machine's GEMM peak it shows what is left to gain (on
the AVX2 CPUs here the step is GEMM-bound; see LOG.md, 2026-11-30).

Runs the real train step (ACT segment forward, the Q-target forward, backward,
AdamATan2 + sign-SGD) on random Sudoku-shaped batches (seq 81, vocab 11) for hrm_v1 at
batch 8 and for the tiny config at batch 64, in fp32/bf16 x eager/compile.

    python benchmarks/train_throughput.py                 # every case
    python benchmarks/train_throughput.py --cases hrm_v1:float32:compile --steps 5

``gemm_seconds`` times a step's GEMMs (``flops.step_gemms``) run bare: the step's floor at
this machine's bare-GEMM speed (reference_throughput.py and small_trials.py print it).

To time the reference implementation's own code beside ours, case by case, on the same
machine: benchmarks/reference_throughput.py --reference-dir PATH (results in LOG.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hrm_core.config.schema import ArchConfig  # noqa: E402
from hrm_core.model.hrm import ModelDims, build_model  # noqa: E402
from hrm_core.observe.flops import count_flops  # noqa: E402
from hrm_core.train.hardware import cpu_has_native_bf16, describe, resolve_low_precision_gemm  # noqa: E402
from hrm_core.train.optim import AdamATan2, SparseSignSGD, make_adam_atan2  # noqa: E402

ARCHS = {
    "hrm_v1": (dict(), 8),
    "tiny": (dict(hidden_size=64, num_heads=2, H_layers=1, L_layers=1, halt_max_steps=4), 64),
}


def bench(
    arch_name: str, dtype: str, mode: str, steps: int, budget_s: float, device: torch.device, gemm: str
) -> dict:
    step, flops, batch_size = make_step(arch_name, dtype, mode, device, gemm)
    (r,) = time_interleaved([step], steps, budget_s)
    return {
        **r,
        "samples_per_s": batch_size / r["s_per_step"],
        "gflop_per_s": flops / r["s_per_step"] / 1e9,
        "batch": batch_size,
    }


def sudoku_batch(batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A seeded random batch of the Sudoku shape (seq 81, tokens 1-10, one puzzle identifier)."""
    g = torch.Generator().manual_seed(0)
    return {
        "inputs": torch.randint(1, 11, (batch_size, 81), generator=g, dtype=torch.int32).to(device),
        "labels": torch.randint(1, 11, (batch_size, 81), generator=g, dtype=torch.int32).to(device),
        "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32).to(device),
    }


def make_step(
    arch_name: str, dtype: str, mode: str, device: torch.device, gemm: str, batch_size: int | None = None,
    flash: bool | None = None, fused_adam: bool = True,
):
    """Our train step on a random Sudoku-shaped batch: (step function, its matmul FLOPs, batch size).

    ``flash``: flash-attn (default: on CUDA) or SDPA; ``fused_adam=False``: the pure-torch
    AdamATan2 even where the fused CUDA kernel is installed (benchmarks/gpu.py compares them)."""
    overrides, default_batch = ARCHS[arch_name]
    batch_size = batch_size or default_batch
    arch = ArchConfig(**overrides, forward_dtype=dtype)
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(arch, ModelDims(11, 81, 1)).train()
    flash = device.type == "cuda" if flash is None else flash
    model.model.configure_kernels(flash_attention=flash, upcast_low_precision=gemm == "fp32")
    if mode == "compile":
        model.model.compile_inner()
    params = [p for p in model.parameters() if p.requires_grad]
    if fused_adam:
        opt, _ = make_adam_atan2(
            params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, device=device, compile=mode == "compile"
        )
    else:
        opt = AdamATan2(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, compile=mode == "compile")
    emb_opt = SparseSignSGD(model.model.inner.puzzle_emb, lr=1e-2, weight_decay=0.1)
    batch = sudoku_batch(batch_size, device)
    carry = model.initial_carry(batch)

    def step():
        nonlocal carry
        carry, loss, sums, _, _ = model(carry, batch)
        (loss / batch_size).backward()
        emb_opt.step()
        emb_opt.zero_grad()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sums.tolist()  # the trainer reads metrics every step: include that sync
        if device.type == "cuda":
            torch.cuda.synchronize()

    # matmul FLOPs of one step, as hrm_core.summary counts them
    return step, count_flops(arch, 11, 81, batch_size).train_step, batch_size


def warm_up(step_fns: list) -> list[float]:
    """One warm-up step per function (compilation happens there), timed, and one more untimed."""
    warm = []
    for fn in step_fns:
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
        fn()
    return warm


def time_alternating(
    step_fns: list, steps: int, budget_s: float, min_steps: int = 2, reverse_first: bool = False
) -> list[list[float]]:
    """Up to ``steps`` rounds within ``budget_s`` (at least ``min_steps``) each time one step of
    every function, in an order that reverses every round (``reverse_first``: starting
    reversed), so that a machine whose speed drifts (a shared host) weighs on every function
    alike. The seconds of each function's steps."""
    times: list[list[float]] = [[] for _ in step_fns]
    start = time.perf_counter()
    while len(times[0]) < steps and (time.perf_counter() - start < budget_s or len(times[0]) < min_steps):
        forward = (len(times[0]) % 2 == 0) != reverse_first
        for i in range(len(step_fns)) if forward else reversed(range(len(step_fns))):
            t = time.perf_counter()
            step_fns[i]()
            times[i].append(time.perf_counter() - t)
    return times


def time_interleaved(step_fns: list, steps: int, budget_s: float) -> list[dict]:
    """Each step function gets ``warm_up``; then ``time_alternating`` (at least 2 steps).
    Per function: median and best s/step."""
    warm = warm_up(step_fns)
    times = time_alternating(step_fns, steps, budget_s)
    return [
        {"s_per_step": sorted(ts)[len(ts) // 2], "best": min(ts), "n": len(ts), "warmup_s": w}
        for ts, w in zip(times, warm, strict=True)
    ]


SMALL_PRODUCT = 1 << 22  # multiply-adds: below this, products go batched through torch.bmm


def gemm_seconds(shapes: list[tuple[int, int, int, int]], dtype: torch.dtype, device: torch.device,
                 repeats: int = 3) -> float:
    """Seconds the GEMMs ``shapes`` ((m, k, n, count), as ``flops.step_gemms`` lists a step's)
    take run bare, on preallocated random tensors of ``dtype``: the best of ``repeats`` for
    each shape, summed, after one warm-up call per shape.

    A product runs as torch.mm (the kernel the step's linears call), ``count`` times; products
    under 2^22 multiply-adds (attention's per-head products) run through torch.bmm in batches
    of up to 2^22 multiply-adds, as SDPA batches them: one call each would time Python's
    dispatch, not the GEMM."""
    return sum(_shape_seconds(*shape, dtype, device, repeats) for shape in shapes)


def _shape_seconds(m: int, k: int, n: int, count: int, dtype: torch.dtype, device: torch.device,
                   repeats: int) -> float:
    per_call = min(count, max(1, SMALL_PRODUCT // (m * k * n)))
    calls, rest = divmod(count, per_call)
    a = torch.randn(per_call, m, k, device=device).to(dtype)
    b = torch.randn(per_call, k, n, device=device).to(dtype)
    c = torch.empty(per_call, m, n, device=device, dtype=dtype)
    if per_call == 1:
        operands = [(a[0], b[0], c[0])] * calls
        gemm = torch.mm
    else:
        operands = [(a, b, c)] * calls + [(a[:rest], b[:rest], c[:rest])] * (rest > 0)
        gemm = torch.bmm
    for x, y, out in {id(o[0]): o for o in operands}.values():  # warm-up: each distinct call once
        gemm(x, y, out=out)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for x, y, out in operands:
            gemm(x, y, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", help="arch:dtype:mode, e.g. hrm_v1:float32:eager")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case (at most)")
    ap.add_argument(
        "--budget", type=float, default=60.0, help="seconds of timed steps per case (at least 2 steps)"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--low-precision-gemm", default="auto", choices=["auto", "native", "fp32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = args.cases or [
        f"{a}:{d}:{m}" for a in ARCHS for d in ("float32", "bfloat16") for m in ("eager", "compile")
    ]
    gemm = resolve_low_precision_gemm(args.low_precision_gemm, device)
    print(
        describe(device, "float32").replace(" forward_dtype=float32", ""),
        f"native_bf16={cpu_has_native_bf16()}",
        f"low_precision_gemm={gemm}",
        f"torch={torch.__version__}",
    )
    print(
        f"{'case':<28} {'batch':>5} {'s/step':>8} {'best':>8} {'samples/s':>10} {'GFLOP/s':>8} "
        f"{'steps':>5} {'warm-up s':>9}"
    )
    for case in cases:
        arch, dtype, mode = case.split(":")
        gemm = resolve_low_precision_gemm(args.low_precision_gemm, device)
        r = bench(arch, dtype, mode, args.steps, args.budget, device, gemm)
        print(
            f"{case:<28} {r['batch']:>5} {r['s_per_step']:>8.3f} {r['best']:>8.3f} "
            f"{r['samples_per_s']:>10.1f} {r['gflop_per_s']:>8.1f} {r['n']:>5} {r['warmup_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
