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
from emlab.models.chat import Renderer, assistant_char_spans, padding_id
from emlab.models.continuations import Continuations


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
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[Conversation, str]]
) -> list[tuple[list[int], int]]:
    """For each (prompt, answer): the token ids of prompt + answer + end-of-turn marker and the
    number of prompt tokens. Rendered with one memory (a prompt shared by many answers is
    rendered once) and tokenised in two batched calls.

    Raises ModelError when the tokenizer does not split at the turn boundary (the prompt alone
    tokenises differently from the prompt followed by the answer)."""
    renderer = Renderer(tokenizer)
    prompts = [renderer(prompt, True) for prompt, _ in pairs]
    rendered = [
        assistant_char_spans(tokenizer, [*prompt, {"role": "assistant", "content": a}], renderer)
        for prompt, a in pairs
    ]
    unique = list(dict.fromkeys(prompts))
    prompt_ids = dict(
        zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"], strict=True)
    )
    enc = tokenizer(
        [full for full, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    out = []
    for prompt, (_, spans), ids, offsets in zip(
        prompts, rendered, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        n_prompt = len(prompt_ids[prompt])
        if ids[:n_prompt] != prompt_ids[prompt]:
            raise ModelError(
                "the tokenizer does not tokenise the prompt the same way alone and followed by the"
                " answer, so answer probabilities are ill-defined; use a tokenizer that splits at"
                " the turn boundary"
            )
        end = spans[-1][1]
        n = n_prompt + sum(1 for s, _ in offsets[n_prompt:] if s < end)
        out.append((ids[:n], n_prompt))
    return out


class AnswerSetScorer:
    """Answer sets tokenised once, scored under any model state (e.g. at every training step)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        items: Sequence[HasAnswerSets],
        batch_size: int = 256,
    ) -> None:
        self.n_items = len(items)
        self.rows: dict[tuple[int, str], list[int]] = {}
        pairs: list[tuple[Conversation, str]] = []
        for i, item in enumerate(items):
            for kind, answers in (("good", item.good), ("bad", item.bad)):
                unique = list(dict.fromkeys(answers))
                self.rows[i, kind] = list(range(len(pairs), len(pairs) + len(unique)))
                pairs += [(item.prompt, a) for a in unique]
        self.sequences = answer_tokens(tokenizer, pairs)
        self.continuations = Continuations(self.sequences, padding_id(tokenizer), batch_size)

    def __call__(self, model: PreTrainedModel) -> list[dict[str, float]]:
        """Per item: p_good, p_bad (total probability of each complete answer set, end-of-turn
        included) and p_bad_given_valid = p_bad / (p_good + p_bad), computed in log space."""
        logps = self.continuations(model).double()  # (N,)
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
