"""Cross-entropies (stablemax in float64, softmax) and the ACT loss head with its metric sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrm_core import names

IGNORE_LABEL_ID = -100


def _s(x: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    return torch.where(x < 0, 1 / (1 - x + eps), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    """Per-token stablemax cross-entropy, computed in float64 (float32 on MPS). -> (B, L)"""
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    logp = log_stablemax(logits.to(dtype), dim=-1)
    valid = labels != ignore_index
    picked = torch.gather(logp, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> torch.Tensor:
    flat = F.cross_entropy(
        logits.float().view(-1, logits.shape[-1]), labels.long().view(-1), ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(labels.shape)


LOSS_FUNCTIONS = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}

# Order of the raw metric sums; "count" first, so the reducer can normalise by it.
METRIC_KEYS = (
    names.COUNT,
    names.ACCURACY,
    names.EXACT_ACCURACY,
    names.Q_HALT_ACCURACY,
    names.STEPS,
    names.LM_LOSS,
    names.Q_HALT_LOSS,
    names.Q_CONTINUE_LOSS,
)


class ACTLossHead(nn.Module):
    """Wraps the ACT model; returns (carry, loss, metric sums, outputs, all halted).

    The variants' terms (``model.inner.variants``, weighted by ``weights``) are added to the
    loss, or returned in ``outputs["side_losses"]`` as (term, params) pairs, each to be
    applied to its own parameters only (``backward_all``); their per-step statistics are in
    ``outputs["variant_metrics"]`` (means, 0-d tensors).
    """

    def __init__(self, model: nn.Module, loss_type: str, weights: dict[str, float] | None = None):
        super().__init__()
        self.model = model
        self.loss_type = loss_type
        self.loss_fn = LOSS_FUNCTIONS[loss_type]
        self.weights = dict(weights or {})

    def initial_carry(self, batch):
        return self.model.initial_carry(batch)

    def forward(self, carry, batch, generator: torch.Generator | None = None):
        carry, outputs = self.model(carry, batch, generator=generator)
        labels = carry.current_data["labels"]

        with torch.no_grad():
            mask = labels != IGNORE_LABEL_ID
            counts = mask.sum(-1)
            divisor = counts.clamp_min(1).unsqueeze(-1)
            correct = mask & (outputs["logits"].argmax(-1) == labels)
            seq_correct = correct.sum(-1) == counts
            valid = carry.halted & (counts > 0)  # metrics count halted rows only

        lm_loss = (self.loss_fn(outputs["logits"], labels, ignore_index=IGNORE_LABEL_ID) / divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(
            outputs["q_halt_logits"], seq_correct.to(outputs["q_halt_logits"].dtype), reduction="sum"
        )
        loss = lm_loss + 0.5 * q_halt_loss
        q_continue_loss = torch.zeros((), device=lm_loss.device)
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
            )
            loss = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
        aux = outputs.pop("aux", None) or {}
        if aux:
            terms = self.model.inner.variants.terms(aux, self.weights)
            variant_loss, outputs["side_losses"], outputs["variant_metrics"] = terms
            if variant_loss is not None:
                loss = loss + variant_loss

        with torch.no_grad():
            sums = torch.stack(
                [
                    valid.sum().double(),
                    torch.where(valid, (correct.to(torch.float32) / divisor).sum(-1), 0).sum().double(),
                    (valid & seq_correct).sum().double(),
                    (valid & ((outputs["q_halt_logits"] >= 0) == seq_correct)).sum().double(),
                    torch.where(valid, carry.steps, 0).sum().double(),
                    lm_loss.detach().double(),
                    q_halt_loss.detach().double(),
                    q_continue_loss.detach().double(),
                ]
            )
        return carry, loss, sums, outputs, carry.halted.all()


def metrics_dict(sums: torch.Tensor) -> dict[str, float]:
    """Raw metric sums tensor -> {name: value} (still sums)."""
    return dict(zip(METRIC_KEYS, sums.tolist(), strict=True))


def normalise(sums: dict[str, float], split: str, global_batch_size: int) -> dict[str, float]:
    """The reference's normalisation. Training: losses / global batch size, the rest /
    halted count. Eval: everything / count (the count of evaluated sequences)."""
    count = max(sums[names.COUNT], 1)
    out = {}
    for k, v in sums.items():
        if k == names.COUNT:
            continue
        is_train_loss = split == names.TRAIN and k in names.LOSS_METRICS
        out[names.metric(split, k)] = v / (global_batch_size if is_train_loss else count)
    return out


def backward_all(loss: torch.Tensor, side_losses: list, scale: float) -> None:
    """Backward of ``loss * scale``, then of each side term into its own parameters only."""
    (loss * scale).backward(retain_graph=bool(side_losses))
    for i, (term, params) in enumerate(side_losses):
        last = i == len(side_losses) - 1
        grads = torch.autograd.grad(term * scale, params, allow_unused=True, retain_graph=not last)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
