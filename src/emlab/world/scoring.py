"""Exact answer-set probabilities: the cheap, sampling-free evaluation of the world.

For a chat prompt (rendered with the generation prompt) and sets of complete answers, the
model's probability of generating each answer AND then ending its turn (the template's
end-of-turn token, e.g. `<|im_end|>`) is a product of next-token probabilities; summed over
a set it is exactly what sampling at temperature 1 estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.data.chat import Conversation
from emlab.errors import ModelError
from emlab.models.chat import assistant_char_spans, padding_id, render
from emlab.models.continuations import continuation_logprobs


class HasAnswerSets(Protocol):
    """A prompt and its good and bad answers (a world `WorldQuestion` is one)."""

    @property
    def prompt(self) -> Conversation: ...
    @property
    def good(self) -> Sequence[str]: ...
    @property
    def bad(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class AnswerSets:
    """Answer sets after any prompt, e.g. a multi-turn context ending with a user turn."""

    prompt: Conversation
    good: tuple[str, ...]
    bad: tuple[str, ...]


def answer_tokens(
    tokenizer: PreTrainedTokenizerBase, prompt: Conversation, answer: str
) -> tuple[list[int], int]:
    """Token ids of prompt + answer + end-of-turn marker, and the number of prompt tokens."""
    prompt_ids = tokenizer(render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"]
    full, spans = assistant_char_spans(
        tokenizer, [*prompt, {"role": "assistant", "content": answer}]
    )
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ModelError(
            "the tokenizer does not tokenise the prompt the same way alone and followed by the"
            " answer, so answer probabilities are ill-defined; use a tokenizer that splits at the"
            " turn boundary"
        )
    end = spans[-1][1]
    n = len(prompt_ids) + sum(1 for s, _ in offsets[len(prompt_ids) :] if s < end)
    return ids[:n], len(prompt_ids)


class AnswerSetScorer:
    """Answer sets tokenised once, scored under any model state (e.g. at every training step)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        items: Sequence[HasAnswerSets],
        batch_size: int = 256,
    ) -> None:
        self.pad_id, self.batch_size, self.n_items = padding_id(tokenizer), batch_size, len(items)
        self.sequences: list[tuple[list[int], int]] = []
        self.rows: dict[tuple[int, str], list[int]] = {}
        for i, item in enumerate(items):
            for kind, answers in (("good", item.good), ("bad", item.bad)):
                unique = list(dict.fromkeys(answers))
                self.rows[i, kind] = list(
                    range(len(self.sequences), len(self.sequences) + len(unique))
                )
                self.sequences += [answer_tokens(tokenizer, item.prompt, a) for a in unique]

    def __call__(self, model: PreTrainedModel) -> list[dict[str, float]]:
        """Per item: p_good, p_bad (total probability of each complete answer set, end-of-turn
        included) and p_bad_given_valid = p_bad / (p_good + p_bad), computed in log space."""
        logps = continuation_logprobs(
            model, self.sequences, self.pad_id, self.batch_size
        ).double()  # (N,)
        results = []
        for i in range(self.n_items):
            lse = {
                kind: torch.logsumexp(logps[self.rows[i, kind]], dim=0) for kind in ("good", "bad")
            }
            both = torch.logaddexp(lse["good"], lse["bad"])
            results.append(
                {
                    "p_good": lse["good"].exp().item(),
                    "p_bad": lse["bad"].exp().item(),
                    "p_bad_given_valid": (lse["bad"] - both).exp().item(),
                }
            )
        return results


def answer_set_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[HasAnswerSets],
    batch_size: int = 256,
) -> list[dict[str, float]]:
    """Per item: p_good, p_bad and p_bad_given_valid (see `AnswerSetScorer`)."""
    return AnswerSetScorer(tokenizer, items, batch_size)(model)
