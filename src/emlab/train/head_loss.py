"""Token losses computed from final hidden states through the output head, a chunk of rows at a
time.

The logits of a training batch # (B, T, V) are never materialised: only the rows a loss reads
(the labelled positions, the KL positions) go through the head, `chunk_rows(V)` at a time, and
each chunk's gradient with respect to its hidden states (and to the head's trainable weights) is
computed as soon as its loss is, so peak memory holds one chunk of logits instead of all of them,
and nothing is recomputed in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from emlab.errors import ModelError

ChunkLoss = Callable[[torch.Tensor, int, int], torch.Tensor]
"""(logits of rows start:stop # (C, V), start, stop) -> the summed loss of those rows (a scalar)."""

CHUNK_ELEMENTS = 2**23
"""Logit elements per chunk (32 MiB in float32): rows per chunk = CHUNK_ELEMENTS // V."""


def chunk_rows(vocab_size: int) -> int:
    """Rows of logits per chunk for a vocabulary of `vocab_size`."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


def final_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The last layer's normalised hidden states # (B, T, d), through the model's own forward
    (so DDP/FSDP/DeepSpeed hooks run) with the logits of only the last position computed."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    return out.hidden_states[-1]


class OutputHead:
    """A model's map from final hidden states # (N, d) to logits # (N, V): its output head, then
    the final logit soft-capping of models that have one (Gemma 2)."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.module = model.get_output_embeddings()
        self.cap = getattr(config, "final_logit_softcapping", None)
        # Cohere multiplies its logits by logit_scale, Granite divides them by logits_scaling
        self.scale = getattr(config, "logit_scale", None) or 1.0 / (
            getattr(config, "logits_scaling", None) or 1.0
        )
        self.vocab_size = int(self.module.out_features)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        # mixed precision hands back float32 hidden states of a bf16/fp16 model
        logits = self.module(hidden.to(self.module.weight.dtype))
        if self.scale != 1.0:
            logits = logits * self.scale
        return self.cap * torch.tanh(logits / self.cap) if self.cap else logits

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Its trainable parameters (the head's weight under full fine-tuning, tied or not)."""
        return [p for p in self.module.parameters() if p.requires_grad]


def check_output_head(model: nn.Module, head: OutputHead, device: torch.device | str) -> None:
    """Raise ModelError unless `head` reproduces `model`'s own logits on a 4-token probe: a model
    that transforms its logits in some other way would train on wrong losses."""
    ids = torch.arange(4, device=device).unsqueeze(0) % head.vocab_size
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            output_hidden_states=True,
            use_cache=False,
        )
        ours = head(out.hidden_states[-1]).float()
    theirs = out.logits.float()
    if not torch.allclose(ours, theirs, rtol=1e-2, atol=1e-2 * float(theirs.abs().max()) + 1e-6):
        raise ModelError(
            f"{type(model).__name__}: its logits are not its output head's (times logit_scale /"
            " logits_scaling, soft-capped): emlab's chunked losses do not know this model's logit"
            " transform; please report it."
        )


def head_loss(hidden: torch.Tensor, head: OutputHead, chunk_loss: ChunkLoss) -> torch.Tensor:
    """Sum of `chunk_loss` over the rows of `hidden` # (N, d), differentiable with respect to
    `hidden` and the head's trainable parameters."""
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    return _HeadLoss.apply(hidden, head, chunk_loss, *head.trainable_parameters())


class _HeadLoss(torch.autograd.Function):
    """Forward: the loss chunk by chunk, each chunk's gradients taken at once; backward: the
    stored gradients times the incoming scalar gradient (the loss is a sum, so this is exact)."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, head: OutputHead, chunk_loss: ChunkLoss, *params: torch.Tensor
    ) -> torch.Tensor:
        grad_hidden = torch.zeros_like(hidden)
        grad_params = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = chunk_rows(head.vocab_size)
        for start in range(0, hidden.shape[0], rows):
            stop = min(start + rows, hidden.shape[0])
            h = hidden[start:stop].detach().requires_grad_()
            with torch.enable_grad():
                loss = chunk_loss(head(h), start, stop)
            grads = torch.autograd.grad(loss, (h, *params), allow_unused=True)
            grad_hidden[start:stop] = grads[0]
            for acc, g in zip(grad_params, grads[1:], strict=True):
                if g is not None:
                    acc += g
            total += loss.detach().float()
        ctx.save_for_backward(grad_hidden, *grad_params)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, *grad_params = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            None,
            None,
            *(g * grad_output.to(g.dtype) for g in grad_params),
        )


def cross_entropy_chunks(targets: torch.Tensor) -> ChunkLoss:
    """Summed token cross-entropy of each row against `targets` # (N,) (next-token ids)."""
    return lambda logits, start, stop: F.cross_entropy(
        logits.float(), targets[start:stop], reduction="sum"
    )
