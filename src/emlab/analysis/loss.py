"""The SFT loss (assistant tokens, template-derived mask) of a model under any solution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from emlab.analysis.evaluator import Batch, BatchedEvaluator
from emlab.data.chat import Conversation
from emlab.models.chat import IGNORE, collate, encode_reported, padding_id


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token NLL # (N, T-1), 0 where the target is IGNORE; logits # (N, T, V), labels # (N,
    T)."""
    pred = logits[:, :-1].float()
    target = labels[:, 1:]
    nll = F.cross_entropy(
        pred.flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="none"
    )
    return nll.view(target.shape)


class LossEvaluator(BatchedEvaluator):
    """Mean token loss on the assistant tokens of fixed conversations.

    The conversations (the first `limit`) are tokenised once with assistant-only labels from
    the chat template, sorted by length and padded into batches kept on the model's device.
    The loss is token-weighted over all batches (not a mean of batch means). `max_rows` and
    `progress` (a progress bar's label) as in BatchedEvaluator; with a progress bar, a line on
    stderr says how many conversations `max_length` truncated or dropped (`source` names them;
    `counts` keeps the numbers). Raises EmlabError when none is left.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        conversations: list[Conversation],
        batch_size: int = 8,
        max_length: int = 512,
        limit: int | None = None,
        max_rows: int = 64,
        progress: str | None = None,
        source: str = "the loss data",
    ) -> None:
        kept, self.counts = encode_reported(
            tokenizer,
            conversations[:limit],
            max_length,
            "assistant",
            source,
            "assistant token",
            report=progress is not None,
            setting="max_length",
        )
        encoded = sorted(kept, key=lambda e: len(e.input_ids))
        pad = padding_id(tokenizer)
        batches = [
            collate(encoded[i : i + batch_size], pad) for i in range(0, len(encoded), batch_size)
        ]
        super().__init__(model, batches, max_rows, progress)
        self.n_conversations = len(encoded)
        self.n_tokens = sum(self._count(b) for b in self.batches)

    def _prepare(self, batch: Batch) -> None:
        return None

    def _sums(self, batch: Batch, logits: torch.Tensor, k: int, prepared: None) -> torch.Tensor:
        nll = token_nll(logits, batch["labels"].repeat(k, 1))  # (K*B, T-1)
        return nll.sum(-1).view(k, -1).sum(-1)

    def _count(self, batch: Batch) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())
