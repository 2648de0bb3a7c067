"""The reference HRM's own train step timed on this machine's CPU, beside ours, case by case,
over alternating rounds, with the verdict per machine class and each step against its GEMM floor.

    python benchmarks/reference_throughput.py --reference-dir PATH/TO/HRM        # the official figure
    python benchmarks/reference_throughput.py --reference-dir PATH --arch tiny --rounds 2 --steps 1

PATH is a checkout of the reference implementation (sapientinc/HRM). Nothing of it is
copied into this project: its ``models`` package is imported from that folder as it is.
Two of its dependencies build only against CUDA, so on a CPU this script stands in for
them, in ``sys.modules``, without touching the checkout:

- ``flash_attn.flash_attn_func``: torch's SDPA on the same [batch, seq, heads, dim] layout;
- ``adam_atan2.AdamATan2``: hrm_core's pure-torch AdamATan2 (the same update rule).

The timed step is the reference's training step: its ACT loss head over one segment (with
its Q-target forward), backward of loss / global batch, its sign-SGD on the puzzle
embedding then AdamATan2, and the metrics copied to the host. ``compile`` wraps the loss
head in ``torch.compile(model, dynamic=False)`` as its pretrain.py does. The shape is
``--arch`` (train_throughput's ARCHS: hrm_v1, the reference's own config, or tiny) on Sudoku:
vocab 11, seq 81, one puzzle identifier, stablemax cross-entropy; the reference gets the
same config. Each case also runs our trainer's step on the same shape.

Rounds: every step function is built and warmed up first (compilation happens there). Then
the whole set of cases is timed ``--rounds`` times; in each round each case times up to
``--steps`` steps of each side (within ``--budget`` s, at least one), the two alternating
step by step, in an order that reverses every step and every round, so both see the same
machine state. Each round also times the step's GEMMs run bare (``flops.step_gemms`` through
``train_throughput.gemm_seconds``): the "GEMM floor", the time the step would take if it were
only its GEMMs at this machine's bare-GEMM speed. Per case: the medians over rounds of each
side's s/step (a round's value is the median of its steps), the median of the per-round
ratios reference / ours, and step / floor for both sides.

The verdict: ours >= the reference's best path on the same machine, met at a median ratio
>= 0.97 over at least 5 rounds, per machine class (AVX2: fp32, eager or compile whichever is
faster for the reference; AVX512-BF16: bf16 + compile; GPU: bf16 + compile + flash-attn).
Only this CPU's class can be measured here; the others print "not measured". The line after
it names the reference's fastest case here, to show whether the class's best path held.

Expected runtime at the defaults (hrm_v1, batch 8, 4 cases, 5 rounds of at most 2 steps or
15 s per case, 2 threads of this 2-core EPYC, idle): ~10-12 minutes -- ~6 to build the 8 step
functions (4 torch.compile runs of hrm_v1, ~1-1.5 min each, and 2 warm-up steps per function),
then ~1 minute per round (the floors included). The lines print their elapsed time as they go;
a loaded host (load average 4-6) takes 2-3x longer. ``--arch tiny``: ~3-4 minutes, mostly the
4 compiles (~40-60 s each on a loaded host).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from dataclasses import dataclass, field
from statistics import median

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import (  # noqa: E402
    ARCHS,
    gemm_seconds,
    make_step,
    sudoku_batch,
    time_alternating,
    warm_up,
)

from hrm_core.config.schema import ArchConfig  # noqa: E402
from hrm_core.observe.flops import step_gemms  # noqa: E402
from hrm_core.train.hardware import cpu_has_native_bf16, describe, resolve_low_precision_gemm  # noqa: E402
from hrm_core.train.optim import AdamATan2  # noqa: E402

SEQ_LEN, VOCAB = 81, 11  # the Sudoku shape of train_throughput.sudoku_batch


def _sdpa_flash_attn_func(q, k, v, causal=False, **_):
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )
    return out.transpose(1, 2).contiguous()


def install_cpu_stand_ins() -> None:
    """flash_attn and adam_atan2 for a CPU, unless the real packages import."""
    for name, attrs in (
        ("flash_attn", {"flash_attn_func": _sdpa_flash_attn_func}),
        ("adam_atan2", {"AdamATan2": AdamATan2}),
    ):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.SimpleNamespace(**attrs)  # type: ignore[assignment]
    sys.modules.setdefault("flash_attn_interface", None)  # type: ignore[arg-type]  # FA3 absent: take the FA2 path


def import_reference(reference_dir: str):
    if not os.path.isfile(os.path.join(reference_dir, "models", "hrm", "hrm_act_v1.py")):
        raise SystemExit(
            f"error: --reference-dir {reference_dir}: no models/hrm/hrm_act_v1.py (a checkout of "
            "sapientinc/HRM?)"
        )
    install_cpu_stand_ins()
    sys.path.insert(0, os.path.abspath(reference_dir))
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
    from models.losses import ACTLossHead
    from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed

    return HierarchicalReasoningModel_ACTV1, ACTLossHead, CastedSparseEmbeddingSignSGD_Distributed


def reference_config(arch_name: str, batch_size: int, dtype: str) -> dict:
    """The reference's model config for ``arch_name`` (train_throughput's ARCHS), Sudoku-shaped."""
    a = arch_config(arch_name)
    return dict(
        batch_size=batch_size,
        seq_len=SEQ_LEN,
        puzzle_emb_ndim=a.puzzle_emb_ndim,
        num_puzzle_identifiers=1,
        vocab_size=VOCAB,
        H_cycles=a.H_cycles,
        L_cycles=a.L_cycles,
        H_layers=a.H_layers,
        L_layers=a.L_layers,
        hidden_size=a.hidden_size,
        expansion=a.expansion,
        num_heads=a.num_heads,
        pos_encodings=a.pos_encodings,
        rope_theta=a.rope_theta,
        rms_norm_eps=a.rms_norm_eps,
        halt_max_steps=a.halt_max_steps,
        halt_exploration_prob=a.halt_exploration_prob,
        forward_dtype=dtype,
    )


def arch_config(arch_name: str) -> ArchConfig:
    return ArchConfig(**ARCHS[arch_name][0])


def make_reference_step(classes, arch_name: str, dtype: str, mode: str, batch_size: int):
    """The reference's train step on a random Sudoku-shaped batch, as its pretrain.py runs it."""
    model_cls, loss_head_cls, sign_sgd_cls = classes
    torch.manual_seed(0)
    config = reference_config(arch_name, batch_size, dtype)
    model = loss_head_cls(model_cls(config), loss_type="stablemax_cross_entropy")
    if mode == "compile":
        model = torch.compile(model, dynamic=False)
    optimizers = [
        sign_sgd_cls(model.model.puzzle_emb.buffers(), lr=1e-2, weight_decay=0.1, world_size=1),
        sys.modules["adam_atan2"].AdamATan2(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95)),
    ]
    batch = sudoku_batch(batch_size, torch.device("cpu"))
    carry = model.initial_carry(batch)

    def step():
        nonlocal carry
        carry, loss, metrics, _, _ = model(carry=carry, batch=batch, return_keys=[])
        ((1 / batch_size) * loss).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        torch.stack([metrics[k] for k in sorted(metrics)]).cpu().numpy()

    return step


# --- the verdict: pure functions of the measured medians -------------------------------------------

TARGET_RATIO = 0.97  # reference / ours: ours at most ~3 % slower than the reference's best path
MIN_ROUNDS = 5
CLASSES = ("AVX2", "AVX512-BF16", "GPU")
# The reference's best path per machine class: the cases it may be (the faster one counts).
BEST_PATHS = {
    "AVX2": ("float32:eager", "float32:compile"),
    "AVX512-BF16": ("bfloat16:compile",),
    "GPU": ("bfloat16:compile+flash",),
}
PATH_NAMES = {"AVX2": "fp32, eager or compile", "AVX512-BF16": "bf16 + compile",
              "GPU": "bf16 + compile + flash-attn"}


@dataclass
class CaseSummary:
    ref: float  # median over rounds of the reference's s/step
    ours: float | None  # the same for ours (None: not timed)
    ratio: float | None  # median over rounds of the per-round ratio reference / ours
    ratio_range: tuple[float, float] | None
    rounds: int


def summarize(ref_rounds: list[float], ours_rounds: list[float] | None) -> CaseSummary:
    """One case from its per-round s/step (each a round's median): medians over rounds, and the
    median of the per-round ratios (not the ratio of the medians)."""
    if not ours_rounds:
        return CaseSummary(median(ref_rounds), None, None, None, len(ref_rounds))
    ratios = [r / o for r, o in zip(ref_rounds, ours_rounds, strict=True)]
    return CaseSummary(median(ref_rounds), median(ours_rounds), median(ratios), (min(ratios), max(ratios)),
                       len(ref_rounds))


def machine_class(native_bf16: bool, cuda: bool = False) -> str:
    return "GPU" if cuda else "AVX512-BF16" if native_bf16 else "AVX2"


def verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET_RATIO else "not met"


def fastest_reference_case(summaries: dict[str, CaseSummary]) -> str:
    return min(summaries, key=lambda case: summaries[case].ref)


def class_verdicts(this_class: str, summaries: dict[str, CaseSummary]) -> dict[str, str]:
    """Per machine class, one line: "met", "not met" (with the figures) or "not measured"."""
    out = {}
    for cls in CLASSES:
        if cls != this_class:
            out[cls] = f"not measured (this machine is {this_class})"
            continue
        timed = [c for c in BEST_PATHS[cls] if c in summaries]
        if not timed:
            out[cls] = f"not measured ({' / '.join(BEST_PATHS[cls])} not among the cases)"
            continue
        best = min(timed, key=lambda c: summaries[c].ref)
        s = summaries[best]
        if s.ratio is None:
            out[cls] = "not measured (ours not timed)"
            continue
        out[cls] = (f"{verdict(s.ratio)}: the reference's {best} {s.ref:.3f} s/step vs ours {s.ours:.3f}, "
                    f"median ratio {s.ratio:.3f} over {s.rounds} rounds")
        if s.rounds < MIN_ROUNDS:
            out[cls] += f" (fewer than {MIN_ROUNDS} rounds: indicative only)"
    return out


# --- the run ------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    fns: list  # [reference step, ours] or [reference step]
    warmup_s: list[float]
    floor_dtypes: list[torch.dtype]  # the GEMM floor's dtype, per side
    round_s: list[list[float]] = field(default_factory=list)  # per side, per round: median s/step


def build_cases(args, classes, gemm: str) -> list[Case]:
    cpu = torch.device("cpu")
    cases = []
    for name in args.cases:
        dtype, mode = name.split(":")
        fns = [make_reference_step(classes, args.arch, dtype, mode, args.batch)]
        floor = [getattr(torch, dtype)]
        if not args.no_ours:
            fns.append(make_step(args.arch, dtype, mode, cpu, gemm, args.batch)[0])
            floor.append(torch.float32 if gemm == "fp32" else getattr(torch, dtype))  # fp32 GEMMs on bf16
        warm = warm_up(fns)
        shown = " / ".join(f"{w:.1f}" for w in warm)
        at = time.perf_counter() - args.start
        print(f"built {name} at {at:.0f} s: warm-up {shown} s (reference / ours)", flush=True)
        cases.append(Case(name, fns, warm, floor, [[] for _ in fns]))
    return cases


def run_rounds(cases: list[Case], args, shapes) -> dict[torch.dtype, float]:
    """Times every case ``args.rounds`` times; the GEMM floors' medians over rounds, per dtype."""
    floors: dict[torch.dtype, list[float]] = {d: [] for c in cases for d in c.floor_dtypes}
    for r in range(args.rounds):
        cells = []
        for case in cases:
            times = time_alternating(case.fns, args.steps, args.budget, min_steps=1, reverse_first=r % 2 == 1)
            for side, ts in enumerate(times):
                case.round_s[side].append(median(ts))
            cells.append(f"{case.name} {' / '.join(f'{s[-1]:.3f}' for s in case.round_s)}")
        for dtype, got in floors.items():
            got.append(gemm_seconds(shapes, dtype, torch.device("cpu"), repeats=1))
        at = time.perf_counter() - args.start
        print(f"round {r + 1}/{args.rounds} at {at:.0f} s (s/step, reference / ours): {'; '.join(cells)}",
              flush=True)
    return {d: median(v) for d, v in floors.items()}


def report(cases: list[Case], floors: dict[torch.dtype, float], args) -> None:
    summaries = {c.name: summarize(c.round_s[0], c.round_s[1] if len(c.round_s) > 1 else None) for c in cases}
    print(f"\n{'case (' + args.arch + ', batch ' + str(args.batch) + ')':<28} {'reference s/step':>16} "
          f"{'ours s/step':>12} {'ref/ours':>9} {'(range)':>13} {'GEMM floor s':>12} "
          f"{'step / floor':>16}")
    for c in cases:
        s = summaries[c.name]
        floor = [floors[d] for d in c.floor_dtypes]
        ours = f"{s.ours:>12.3f}" if s.ours is not None else f"{'-':>12}"
        ratio = f"{s.ratio:>8.3f}x" if s.ratio is not None else f"{'-':>9}"
        spread = f"({s.ratio_range[0]:.2f}-{s.ratio_range[1]:.2f})" if s.ratio_range else "-"
        sides = [s.ref, s.ours][: len(floor)]
        over = " / ".join(f"{t / f:.2f}" for t, f in zip(sides, floor, strict=True))
        over += "*" * (floor[-1] != floor[0])
        print(f"{c.name:<28} {s.ref:>16.3f} {ours} {ratio} {spread:>13} {floor[0]:>12.3f} {over:>16}")
    if any(len(c.floor_dtypes) > 1 and c.floor_dtypes[0] != c.floor_dtypes[1] for c in cases):
        print("* ours runs bf16 on fp32 GEMMs here (low_precision_gemm=fp32): its floor is the fp32 one")
    print("(step / floor: reference / ours; the floor is the step's GEMMs run bare, median over rounds)")
    this = machine_class(cpu_has_native_bf16())
    print(f"\nmachine class: {this}")
    fastest = fastest_reference_case(summaries)
    assumed = [c for c in BEST_PATHS[this] if c in summaries]
    held = "held" if fastest in BEST_PATHS[this] else "did not hold"
    print(f"the reference's fastest case here: {fastest} ({summaries[fastest].ref:.3f} s/step); "
          f"the class's best path ({PATH_NAMES[this]}) {held if assumed else 'was not timed'}")
    print(f"target: ours >= the reference's best path (median ratio >= {TARGET_RATIO} over >= {MIN_ROUNDS} "
          "alternating rounds)")
    for cls, line in class_verdicts(this, summaries).items():
        print(f"  {cls:<12} ({PATH_NAMES[cls]}): {line}")
    if fastest not in BEST_PATHS[this] and summaries[fastest].ratio is not None:
        s = summaries[fastest]
        print(f"  on the reference's fastest case here instead ({fastest}): {verdict(s.ratio)}, median ratio "
              f"{s.ratio:.3f} over {s.rounds} rounds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-dir", required=True, help="a checkout of the reference implementation")
    ap.add_argument("--arch", default="hrm_v1", choices=sorted(ARCHS), help="the config both sides run")
    ap.add_argument(
        "--cases",
        nargs="*",
        default=["float32:eager", "float32:compile", "bfloat16:eager", "bfloat16:compile"],
        help="dtype:mode pairs",
    )
    ap.add_argument("--batch", type=int, default=None, help="default: the arch's (hrm_v1 8, tiny 64)")
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="times the whole set of cases is timed")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per side, per case and round (at most)")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds of timed steps per case and round (at least 1 step)")
    ap.add_argument("--no-ours", action="store_true", help="time the reference only")
    args = ap.parse_args()
    for case in args.cases:
        dtype, _, mode = case.partition(":")
        if dtype not in ("float32", "bfloat16") or mode not in ("eager", "compile"):
            ap.error(f"--cases {case}: expected dtype:mode with dtype float32|bfloat16, mode eager|compile")
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be >= 1")
    args.batch = args.batch or ARCHS[args.arch][1]
    args.start = time.perf_counter()
    classes = import_reference(args.reference_dir)
    cpu = torch.device("cpu")
    gemm = resolve_low_precision_gemm("auto", cpu)  # ours: native bf16 GEMMs only where the CPU has them
    print(describe(cpu, "float32").replace(" forward_dtype=float32", ""), f"torch={torch.__version__}",
          f"arch={args.arch} batch={args.batch} rounds={args.rounds} steps={args.steps}")
    shapes = step_gemms(arch_config(args.arch), VOCAB, SEQ_LEN, args.batch)
    cases = build_cases(args, classes, gemm)
    floors = run_rounds(cases, args, shapes)
    report(cases, floors, args)
    print(f"total {time.perf_counter() - args.start:.0f} s")


if __name__ == "__main__":
    main()
