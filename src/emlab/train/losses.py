"""The SFT loss on assistant tokens and the KL term toward the base model."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from emlab.models.chat import IGNORE

Reduction = Literal["mean", "sum"]


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Token cross-entropy over labelled positions (mean or sum); logits # (B, T, V), labels # (B, T)."""
    pred = logits[:, :-1].flatten(0, 1)  # (B*(T-1), V)
    target = labels[:, 1:].flatten()
    keep = target != IGNORE
    return F.cross_entropy(pred[keep].float(), target[keep], reduction=reduction)


def kl_positions(labels: torch.Tensor, attention_mask: torch.Tensor, scope: Literal["assistant", "all"]) -> torch.Tensor:
    """Bool # (B, T-1): positions whose next-token distribution the KL term compares.

    'assistant': positions predicting an assistant token; 'all': every position predicting a
    real (non-pad) token.
    """
    if scope == "assistant":
        return labels[:, 1:] != IGNORE
    return attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()


def token_kl(
    tuned_logits: torch.Tensor, base_logits: torch.Tensor, direction: Literal["forward", "reverse"] = "forward"
) -> torch.Tensor:
    """Per-position KL over the vocabulary; logits # (N, V) -> (N,).

    forward: KL(base || tuned) = sum p_base (log p_base - log p_tuned); reverse swaps them.
    """
    log_t = F.log_softmax(tuned_logits.float(), dim=-1)
    log_b = F.log_softmax(base_logits.float(), dim=-1)
    if direction == "forward":
        return (log_b.exp() * (log_b - log_t)).sum(-1)
    return (log_t.exp() * (log_t - log_b)).sum(-1)


def kl_loss(
    tuned_logits: torch.Tensor,
    base_logits: torch.Tensor,
    positions: torch.Tensor,
    direction: Literal["forward", "reverse"] = "forward",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Token KL over `positions` (mean or sum); logits # (B, T, V), positions # (B, T-1) bool."""
    tuned = tuned_logits[:, :-1][positions]  # (N, V)
    base = base_logits[:, :-1][positions]
    if tuned.shape[0] == 0:
        return tuned_logits.sum() * 0.0
    values = token_kl(tuned, base, direction)
    return values.mean() if reduction == "mean" else values.sum()
