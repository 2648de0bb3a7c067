"""Model summary: parameters per module and FLOPs of one segment and one training step.

``python -m hrm_core.summary [overrides]``. With no dataset it assumes the reference
Sudoku shape (vocab 11, seq_len 81, one puzzle identifier).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from hrm_core.config import ArchConfig
from hrm_core.layers import swiglu_width


@dataclass
class Flops:
    block: int  # one transformer block, forward
    segment_forward: int  # one ACT segment: all H/L cycles + lm and Q heads
    q_target_forward: int  # the extra no-grad segment for the Q-continue target (no lm head)
    backward: int  # the one-step gradient: last L and H calls + heads, ~2x their forward
    train_step: int  # segment + Q target + backward

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def count_flops(arch: ArchConfig, vocab_size: int, seq_len: int, batch_size: int, training: bool = True) -> Flops:
    """Matmul FLOPs (2 per multiply-add), the convention of torch.utils.flop_counter."""
    D, H = arch.hidden_size, arch.num_heads
    T = seq_len + -(arch.puzzle_emb_ndim // -D)
    M = batch_size * T  # tokens
    inter = swiglu_width(D, arch.expansion)
    linear = 2 * M * (D * 3 * D + D * D + D * 2 * inter + inter * D)
    attn = 2 * 2 * batch_size * H * T * T * (D // H)  # QK^T and AV
    block = linear + attn
    L_calls, H_calls = arch.H_cycles * arch.L_cycles, arch.H_cycles
    # Variants: the input gates' MLP on every module call; the feudal head per row.
    gate_L = gate_H = 0
    if arch.use_gating:
        width = max(1, round(arch.gate_hidden_ratio * D))
        gate_L, gate_H = (2 * M * 2 * (k * D * width) for k in (3, 2))
    feudal = 0
    if arch.subgoal_head.enabled:
        G = arch.goal_dim
        head = arch.subgoal_head
        feudal = 2 * batch_size * (D * G * (not head.random_goals) + (G * D + D) * head.inject)
    L_call, H_call = block * arch.L_layers + gate_L, block * arch.H_layers + gate_H
    cycles = L_calls * L_call + H_calls * H_call + feudal
    lm_head = 2 * batch_size * seq_len * D * vocab_size
    q_head = 2 * batch_size * D * 2
    segment = cycles + lm_head + q_head
    grad_part = L_call + H_call + feudal + lm_head + q_head
    backward = 2 * grad_part
    q_target = cycles + q_head if training and arch.halt_max_steps > 1 else 0
    return Flops(block, segment, q_target, backward, segment + q_target + backward)


def parameter_table(model) -> list[tuple[str, int, str]]:
    """(module, count, kind) rows; the puzzle embedding is a buffer and is not trainable."""
    inner = model.model.inner
    rows = []
    for name, module in inner.named_children():
        n_params = sum(p.numel() for p in module.parameters())
        n_buffers = sum(b.numel() for n, b in module.named_buffers() if "weights" in n)
        if n_params:
            rows.append((name, n_params, "trainable"))
        if n_buffers:
            rows.append((name, n_buffers, "buffer (sign-SGD)"))
    for name in ("H_init", "L_init"):
        rows.append((name, getattr(inner, name).numel(), "buffer (fixed)"))
    return rows


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}E"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from hrm_core.compose import compose_config
    from hrm_core.errors import UserError

    try:
        batch = 1
        rest = []
        for a in argv:
            if a.startswith("batch_size="):
                batch = int(a.split("=", 1)[1])
            else:
                rest.append(a)
        cfg = compose_config(rest)
        import torch

        from hrm_core.model import ModelDims, build_model, count_parameters

        vocab, seq_len, n_ids = 11, 81, 1
        if cfg.data_path:
            from hrm_core.data.format import load_metadata

            meta = load_metadata(cfg.data_path, "train")
            vocab, seq_len, n_ids = meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers
        arch = cfg.arch.model_copy(update={"forward_dtype": "float32"}) if cfg.arch.forward_dtype == "auto" else cfg.arch
        with torch.device("meta"):
            model = build_model(arch, ModelDims(vocab, seq_len, n_ids), cfg.loss.loss_type)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{arch.name}: vocab {vocab}, seq_len {seq_len}, puzzle ids {n_ids}, batch {batch}")
    for name, n, kind in parameter_table(model):
        print(f"  {name:<14} {n:>14,}  {kind}")
    print(f"  {'total':<14} {count_parameters(model):>14,}  trainable")
    f = count_flops(arch, vocab, seq_len, batch)
    print(f"FLOPs per block forward     {_human(f.block)}")
    print(f"FLOPs per segment forward   {_human(f.segment_forward)}")
    print(f"FLOPs per training step     {_human(f.train_step)} (forward {_human(f.segment_forward)} + Q target {_human(f.q_target_forward)} + backward {_human(f.backward)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
