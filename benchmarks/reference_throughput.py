"""The reference HRM's own train step timed on this machine's CPU, beside ours, case by case.

    python benchmarks/reference_throughput.py --reference-dir PATH/TO/HRM
    python benchmarks/reference_throughput.py --reference-dir PATH --cases bfloat16:compile --steps 3

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
hrm_v1 (this project's ``ArchConfig`` defaults, the reference's) on Sudoku: vocab 11,
seq 81, one puzzle identifier, stablemax cross-entropy. Each case also runs our trainer's
step on the same shape; the two alternate step by step (the order reversing every round),
so both see the same machine state.
"""

from __future__ import annotations

import argparse
import os
import sys
import types

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import make_step, sudoku_batch, time_interleaved  # noqa: E402

from hrm_core.config.schema import ArchConfig  # noqa: E402
from hrm_core.train.hardware import describe, resolve_low_precision_gemm  # noqa: E402
from hrm_core.train.optim import AdamATan2  # noqa: E402


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


def reference_config(batch_size: int, dtype: str) -> dict:
    a = ArchConfig()
    return dict(
        batch_size=batch_size,
        seq_len=81,
        puzzle_emb_ndim=a.puzzle_emb_ndim,
        num_puzzle_identifiers=1,
        vocab_size=11,
        H_cycles=a.H_cycles,
        L_cycles=a.L_cycles,
        H_layers=a.H_layers,
        L_layers=a.L_layers,
        hidden_size=a.hidden_size,
        expansion=a.expansion,
        num_heads=a.num_heads,
        pos_encodings=a.pos_encodings,
        halt_max_steps=a.halt_max_steps,
        halt_exploration_prob=a.halt_exploration_prob,
        forward_dtype=dtype,
    )


def make_reference_step(classes, dtype: str, mode: str, batch_size: int):
    """The reference's train step on a random Sudoku-shaped batch, as its pretrain.py runs it."""
    model_cls, loss_head_cls, sign_sgd_cls = classes
    torch.manual_seed(0)
    model = loss_head_cls(model_cls(reference_config(batch_size, dtype)), loss_type="stablemax_cross_entropy")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-dir", required=True, help="a checkout of the reference implementation")
    ap.add_argument(
        "--cases",
        nargs="*",
        default=["float32:eager", "float32:compile", "bfloat16:eager", "bfloat16:compile"],
        help="dtype:mode pairs",
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (at most)")
    ap.add_argument(
        "--budget", type=float, default=60.0, help="seconds of timed steps per case (at least 2 steps)"
    )
    ap.add_argument("--no-ours", action="store_true", help="time the reference only")
    args = ap.parse_args()
    classes = import_reference(args.reference_dir)
    cpu = torch.device("cpu")
    gemm = resolve_low_precision_gemm("auto", cpu)  # ours: native bf16 GEMMs only where the CPU has them
    print(describe(cpu, "float32").replace(" forward_dtype=float32", ""), f"torch={torch.__version__}")
    head = f"case (hrm_v1, batch {args.batch})"
    print(f"{head:<26} {'reference s/step':>16} {'ours s/step':>12} {'ref/ours':>9}")
    for case in args.cases:
        dtype, mode = case.split(":")
        fns = [make_reference_step(classes, dtype, mode, args.batch)]
        if not args.no_ours:
            fns.append(make_step("hrm_v1", dtype, mode, cpu, gemm, args.batch)[0])
        ref, ours = (time_interleaved(fns, args.steps, args.budget) + [None])[:2]
        ours_s = f"{ours['s_per_step']:>12.3f}" if ours else f"{'-':>12}"
        ratio = f"{ref['s_per_step'] / ours['s_per_step']:>8.2f}x" if ours else f"{'-':>9}"
        print(
            f"{case:<26} {ref['s_per_step']:>16.3f} {ours_s} {ratio}  (reference: best {ref['best']:.3f}, "
            f"{ref['n']} steps, warm-up {ref['warmup_s']:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
