"""The base model's next-token distributions that the KL term pulls toward.

Two ways (`kl.base`): 'exact' computes the base model's hidden states every step (adapter or
vector switched off, or a frozen copy under full fine-tuning) and its full-vocabulary
log-probabilities one chunk of rows at a time; 'top_k' computes the base's k most likely tokens
and their log-probabilities once, before training, for every out-of-domain example the run will
draw, so no second model is kept. With top-k the KL compares both distributions coarsened to
those k tokens plus one bucket for the rest of the vocabulary (a lower bound on the exact KL).
Both passes of the KL term, base and tuned, run `without_dropout`, so that before any update
the KL is exactly 0 on models with dropout too (two passes in train mode would draw different
dropout masks); the SFT passes keep the model's dropout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from emlab.models.chat import Encoded, collate
from emlab.train.head_loss import ChunkLoss, OutputHead, chunk_rows, final_hidden
from emlab.train.losses import ExactKL, kl_of_log_probs, kl_positions, with_rest
from emlab.train.trainable import Trainable

Direction = Literal["forward", "reverse"]


class BaseTarget(Protocol):
    """Base distributions of N rows (the KL positions of a batch, in row-major order)."""

    def kl(self, logits: torch.Tensor, start: int, stop: int, direction: Direction) -> torch.Tensor:
        """Summed token KL (see `token_kl` for the directions) between the tuned rows start:stop,
        logits # (C, V), and the base's; differentiable with respect to the logits."""


@contextmanager
def without_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, `model` and all its modules are in eval mode (no dropout, including
    peft's lora_dropout); each module's train/eval mode is restored on exit. Gradients still flow.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def kl_chunks(base: BaseTarget, direction: Direction) -> ChunkLoss:
    """Summed token KL between the tuned rows and `base`."""
    return lambda logits, start, stop: base.kl(logits, start, stop, direction)


def base_hidden(
    trainable: Trainable, model: nn.Module, batch: dict[str, torch.Tensor], positions: torch.Tensor
) -> torch.Tensor:
    """The base model's final hidden states at `positions` # (B, T-1) bool -> (N, d), no
    gradients."""
    with torch.no_grad(), trainable.as_base(model) as base:
        return final_hidden(base, batch)[:, :-1][positions]


class ExactBase:
    """Full-vocabulary base log-probabilities from base hidden states # (N, d), per chunk."""

    def __init__(self, trainable: Trainable, model: nn.Module, hidden: torch.Tensor) -> None:
        self.trainable, self.model, self.hidden = trainable, model, hidden

    def kl(self, logits: torch.Tensor, start: int, stop: int, direction: Direction) -> torch.Tensor:
        with torch.no_grad(), self.trainable.as_base(self.model) as base:
            log_base = F.log_softmax(OutputHead(base)(self.hidden[start:stop]).float(), dim=-1)
        return ExactKL.apply(logits, log_base, direction)


class TopKBase:
    """The base's top-k token ids # (N, k) and their log-probabilities # (N, k)."""

    def __init__(self, ids: torch.Tensor, log_probs: torch.Tensor) -> None:
        self.ids, self.log_probs = ids, log_probs

    def kl(self, logits: torch.Tensor, start: int, stop: int, direction: Direction) -> torch.Tensor:
        ids = self.ids[start:stop].to(logits.device, torch.long)
        tuned = with_rest(F.log_softmax(logits.float(), dim=-1).gather(-1, ids))
        base = with_rest(self.log_probs[start:stop].to(logits.device, torch.float32))
        return kl_of_log_probs(tuned, base, direction).sum()


class TopKCache:
    """Per out-of-domain example: the base's top-k ids and log-probs at each of its KL positions."""

    def __init__(self, rows: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.rows = rows

    @classmethod
    def build(
        cls,
        trainable: Trainable,
        model: nn.Module,
        examples: list[Encoded],
        indices: Iterable[int],
        scope: Literal["assistant", "all"],
        k: int,
        batch_size: int,
        pad_id: int,
        progress: bool = True,
    ) -> TopKCache:
        """Run the base model once over the examples at `indices`, on the model's device (call
        before training starts)."""
        device = next(model.parameters()).device
        wanted = sorted(set(indices))
        rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with without_dropout(model):
            for start in tqdm(
                range(0, len(wanted), batch_size), desc="base top-k", disable=not progress
            ):
                chunk = wanted[start : start + batch_size]
                batch = {
                    name: v.to(device)
                    for name, v in collate([examples[i] for i in chunk], pad_id).items()
                }
                positions = kl_positions(batch["labels"], batch["attention_mask"], scope)
                ids, values = _top_k(
                    trainable, model, base_hidden(trainable, model, batch, positions), k
                )
                counts = positions.sum(dim=1).tolist()
                for i, part_ids, part_values in zip(
                    chunk, ids.split(counts), values.split(counts), strict=True
                ):
                    rows[i] = (part_ids.to(torch.int32).cpu(), part_values.cpu())
        return cls(rows)

    def target(self, indices: list[int]) -> TopKBase:
        """The rows of a batch of examples, in the batch's order."""
        return TopKBase(
            torch.cat([self.rows[i][0] for i in indices]),
            torch.cat([self.rows[i][1] for i in indices]),
        )


def _top_k(
    trainable: Trainable, model: nn.Module, hidden: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids and log-probs of the base model at hidden states # (N, d) -> (N, k) each, chunk by
    chunk."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros((0, k), dtype=torch.long), hidden.new_zeros(
            (0, k), dtype=torch.float32
        )
    ids, values = [], []
    with torch.no_grad(), trainable.as_base(model) as base:
        head = OutputHead(base)
        for rows in hidden.split(chunk_rows(head.vocab_size)):
            top = F.log_softmax(head(rows).float(), dim=-1).topk(min(k, head.vocab_size), dim=-1)
            ids.append(top.indices)
            values.append(top.values)
    return torch.cat(ids), torch.cat(values)
