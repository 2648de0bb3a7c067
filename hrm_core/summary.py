"""Model summary: parameters per module and FLOPs of one segment and one training step.

``python -m hrm_core.summary [overrides]``. With no dataset it assumes the reference
Sudoku shape (vocab 11, seq_len 81, one puzzle identifier).
"""

from __future__ import annotations

import sys

from hrm_core.observe.flops import count_flops


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
    from hrm_core.config.compose import compose_config
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

        from hrm_core.model.hrm import ModelDims, build_model, count_parameters

        vocab, seq_len, n_ids = 11, 81, 1
        if cfg.data_path:
            from hrm_core.data.format import load_metadata

            meta = load_metadata(cfg.data_path, "train")
            vocab, seq_len, n_ids = meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers
        arch = (
            cfg.arch.model_copy(update={"forward_dtype": "float32"})
            if cfg.arch.forward_dtype == "auto"
            else cfg.arch
        )
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
    print(
        f"FLOPs per training step     {_human(f.train_step)} (forward {_human(f.segment_forward)} + Q "
        f"target {_human(f.q_target_forward)} + backward {_human(f.backward)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
