"""The SFT loss on assistant tokens and the KL term toward the base model."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from emlab.models.chat import IGNORE

Reduction = Literal["mean", "sum"]


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Token cross-entropy over labelled positions (mean or sum); logits # (B, T, V), labels # (B,
    T)."""
    pred = logits[:, :-1].flatten(0, 1)  # (B*(T-1), V)
    target = labels[:, 1:].flatten()
    keep = target != IGNORE
    return F.cross_entropy(pred[keep].float(), target[keep], reduction=reduction)


def kl_positions(
    labels: torch.Tensor, attention_mask: torch.Tensor, scope: Literal["assistant", "all"]
) -> torch.Tensor:
    """Bool # (B, T-1): positions whose next-token distribution the KL term compares.

    'assistant': positions predicting an assistant token; 'all': every position predicting a
    real (non-pad) token.
    """
    if scope == "assistant":
        return labels[:, 1:] != IGNORE
    return attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()


def token_kl(
    tuned_logits: torch.Tensor,
    base_logits: torch.Tensor,
    direction: Literal["forward", "reverse"] = "forward",
) -> torch.Tensor:
    """Per-position KL over the vocabulary; logits # (N, V) -> (N,).

    forward: KL(base || tuned) = sum p_base (log p_base - log p_tuned); reverse swaps them.
    """
    return kl_of_log_probs(
        F.log_softmax(tuned_logits.float(), dim=-1),
        F.log_softmax(base_logits.float(), dim=-1),
        direction,
    )


def kl_of_log_probs(
    log_tuned: torch.Tensor,
    log_base: torch.Tensor,
    direction: Literal["forward", "reverse"] = "forward",
) -> torch.Tensor:
    """Per-row KL between two distributions given as log-probabilities # (N, K) -> (N,)."""
    if direction == "forward":
        return (log_base.exp() * (log_base - log_tuned)).sum(-1)
    return (log_tuned.exp() * (log_tuned - log_base)).sum(-1)


class ExactKL(torch.autograd.Function):
    """Summed token KL between tuned logits # (N, V) and base log-probabilities # (N, V), which it
    overwrites, with the gradient in closed form, computed in the forward pass: forward
    KL(base || tuned) has d/dz = softmax(z) - p_base, reverse KL(tuned || base) has
    d/dz = p_tuned * (log p_tuned - log p_base - KL). Besides the logits it holds two (N, V)
    tensors and temporaries of an eighth of the rows (autograd through log_softmax holds five)."""

    @staticmethod
    def forward(
        ctx, logits: torch.Tensor, log_base: torch.Tensor, direction: Literal["forward", "reverse"]
    ) -> torch.Tensor:
        log_tuned = F.log_softmax(logits.float(), dim=-1)
        blocks = zip(log_tuned.tensor_split(8), log_base.tensor_split(8), strict=True)
        rows = torch.cat(
            [kl_of_log_probs(tuned, base, direction) for tuned, base in blocks]
        )  # (N,)
        if direction == "forward":
            grad = log_tuned.exp_().sub_(log_base.exp_())
        else:
            centred = (
                log_base.sub_(log_tuned).neg_().sub_(rows[:, None])
            )  # log p_tuned - log p_base - KL
            grad = log_tuned.exp_().mul_(centred)
        ctx.save_for_backward(grad)
        ctx.dtype = logits.dtype
        return rows.sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors  # backward runs once: scale the saved gradient in place
        return grad.mul_(grad_output.to(grad.dtype)).to(ctx.dtype), None, None


def with_rest(log_probs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of k tokens # (N, k) -> (N, k+1): the k tokens, then the rest of the
    vocabulary as one bucket, log(1 - sum p) (floored at a tiny mass to stay finite)."""
    mass = torch.logsumexp(log_probs, dim=-1, keepdim=True).clamp(max=-1e-6)
    rest = torch.where(mass > -0.6931, torch.log(-torch.expm1(mass)), torch.log1p(-mass.exp()))
    return torch.cat([log_probs, rest], dim=-1)
