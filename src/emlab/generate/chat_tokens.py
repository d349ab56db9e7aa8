"""Prompt token ids and stop tokens, both derived from the tokenizer's own chat template."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase

from emlab.data.chat import Conversation
from emlab.data.questions import Prompt
from emlab.models.chat import end_of_turn, located, render


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, messages: Conversation) -> list[int]:
    """Token ids of `messages` rendered (`models.chat.render`) with a generation prompt: the
    prefix training's assistant masks start after.

    The template's text is tokenised without adding special tokens (a template that writes
    its own BOS would otherwise get two), as `apply_chat_template(tokenize=True)` does.
    """
    text = render(tokenizer, messages, generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompts_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: Iterable[Prompt]
) -> dict[str, list[int]]:
    """`prompt_token_ids` of each prompt, by prompt_id; raises ChatTemplateError naming the
    question and prompt whose messages the template cannot render."""
    ids = {}
    for p in prompts:
        with located(f"question {p.question_id!r} (prompt {p.prompt_id})"):
            ids[p.prompt_id] = prompt_token_ids(tokenizer, p.messages)
    return ids


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the template writes right after an assistant turn (e.g. <|im_end|>),
    or None when the template writes none or cannot render a plain user/assistant exchange."""
    after = end_of_turn(tokenizer)  # '' when none: then eos alone stops
    ids = (
        tokenizer(after.lstrip(" "), add_special_tokens=False)["input_ids"] if after.strip() else []
    )
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, extra: Iterable[int] = ()) -> list[int]:
    """Ids that end an answer: eos, the template's end-of-turn token and `extra` (e.g. the
    checkpoint's generation_config.eos_token_id), sorted and de-duplicated."""
    ids = set(extra)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        ids.add(eot)
    return sorted(ids)
