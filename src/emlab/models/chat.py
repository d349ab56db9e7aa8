"""Chat rendering and loss masks, derived from the tokenizer's own chat template.

The assistant span of turn i is the text between the rendering of messages[:i] with a
generation prompt and the rendering of messages[:i+1] (its content and end-of-turn marker,
trailing whitespace excluded). No chat markers are hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from emlab.errors import ModelError

Conversation = list[dict[str, str]]
IGNORE = -100
LossOn = Literal["assistant", "all"]


@dataclass(frozen=True)
class Encoded:
    """One tokenised conversation; labels are IGNORE outside the trained tokens.

    `length` is the conversation's token count before truncation to `max_length` (greater
    than len(input_ids) when it was cut).
    """

    input_ids: list[int]
    labels: list[int]
    length: int


def render(tokenizer: PreTrainedTokenizerBase, messages: Conversation, generation_prompt: bool) -> str:
    """Render messages with the tokenizer's template (a finished conversation gets no prompt)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer: PreTrainedTokenizerBase, messages: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the (start, end) character span of every assistant turn."""
    full = render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(upto) and upto.startswith(before)):
            raise ModelError(
                "the chat template does not render conversations as prefixes of each other "
                "(e.g. it rewrites earlier turns), so assistant masks cannot be derived; use "
                "single-turn data or a template without that behaviour."
            )
        end = len(before) + len(upto[len(before) :].rstrip())
        spans.append((len(before), end))
    return full, spans


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Conversation,
    max_length: int,
    loss_on: LossOn = "assistant",
) -> Encoded:
    """Tokenise a finished conversation; labels keep assistant tokens (or all tokens)."""
    return encode_conversations(tokenizer, [messages], max_length, loss_on)[0]


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_length: int,
    loss_on: LossOn = "assistant",
) -> list[Encoded]:
    """Tokenise finished conversations in one batched tokenizer call (see `encode_conversation`).

    With `loss_on="all"` each conversation is rendered once; with "assistant" its assistant
    spans are derived from the template (a few renders per turn).
    """
    if loss_on == "all":
        texts = [render(tokenizer, c, generation_prompt=False) for c in conversations]
        return [Encoded(ids[:max_length], ids[:max_length], len(ids)) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rendered = [assistant_char_spans(tokenizer, c) for c in conversations]
    enc = tokenizer([full for full, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (_, spans), all_ids, all_offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
        ids, offsets = all_ids[:max_length], all_offsets[:max_length]
        labels = [
            ids[t] if end > start and any(s <= start < e for s, e in spans) else IGNORE
            for t, (start, end) in enumerate(offsets)
        ]
        out.append(Encoded(ids, labels, len(all_ids)))
    return out


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"] = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to the longest: the padded ids and the attention mask (1 on tokens), each # (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def collate(
    batch: Sequence[Encoded], pad_id: int, side: Literal["right", "left"] = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch: input_ids, attention_mask, labels, each # (B, T)."""
    ids, mask = pad_sequences([e.input_ids for e in batch], pad_id, side)
    labels, _ = pad_sequences([e.labels for e in batch], IGNORE, side)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
