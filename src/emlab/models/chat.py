"""Chat rendering and loss masks, derived from the tokenizer's own chat template.

The assistant span of turn i is the text between the rendering of messages[:i] with a
generation prompt and the rendering of messages[:i+1] (its content and end-of-turn marker,
trailing whitespace excluded). No chat markers are hard-coded.

`render` is the one way emlab renders a conversation (training and KL data, generation
prompts, the local judge, world scoring and pre-training text): it applies the tokenizer's
`ChatFormat` (attached by `models.load.load_model` from the ModelConfig, or by
`set_chat_format`) and turns a template's refusal into a ChatTemplateError.
"""

from __future__ import annotations

import inspect
import json
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from emlab.data.chat import Conversation
from emlab.errors import ChatTemplateError, ConfigError, EmlabError

IGNORE = -100
LossOn = Literal["assistant", "all"]
SystemPrompt = Literal["keep", "fold"]
T = TypeVar("T")

_FORMAT_ATTRIBUTE = "emlab_chat_format"
_ANSWER_MARK = "EMLAB_ANSWER_MARK"
_RENDER_ARGUMENTS = frozenset(
    inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters
) - {"self", "kwargs"}
_ADVICE = {
    "keep": (
        "If the template refuses a system turn or needs strict user/assistant alternation (Gemma,"
        " Mistral), set `system_prompt: fold` in the model config (`emlab generate --system-prompt"
        " fold`): the system text, a blank line, then the first user message become that user turn."
        " Otherwise fix or drop the conversation."
    ),
    "fold": (
        "The system prompt is already folded into the first user turn (system_prompt: fold); make"
        " the turns alternate user/assistant, starting with a user turn, or drop the conversation."
    ),
}


@dataclass(frozen=True)
class ChatFormat:
    """How emlab hands conversations to a chat template (`ModelConfig.system_prompt` and
    `chat_template_kwargs`); the same for every rendering of a tokenizer.

    system_prompt: 'keep' passes a system message as a system turn; 'fold' replaces a leading
        system message and the user message after it by one user message, system text + a
        blank line ("\n\n") + user text.
    template_kwargs: extra template variables given to `apply_chat_template`, e.g.
        {"enable_thinking": False} (Qwen3). Read-only.

    Raises ConfigError when a key of template_kwargs is an argument of `apply_chat_template`
    itself (emlab sets those).
    """

    system_prompt: SystemPrompt = "keep"
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if clash := sorted(set(self.template_kwargs) & _RENDER_ARGUMENTS):
            raise ConfigError(
                f"model.chat_template_kwargs: {clash} are arguments of apply_chat_template, not"
                " template variables; remove them (emlab sets them)."
            )
        object.__setattr__(self, "template_kwargs", dict(self.template_kwargs))  # a private copy

    def prepare(self, messages: Conversation) -> Conversation:
        """The messages the template is given: unchanged ('keep'), or with the system message
        folded.

        Raises ChatTemplateError under 'fold' when a system message is not first, or is not
        followed by a user message.
        """
        if self.system_prompt == "keep" or not any(m["role"] == "system" for m in messages):
            return messages
        late = [i for i, m in enumerate(messages) if m["role"] == "system" and i > 0]
        if late:
            raise ChatTemplateError(
                "system_prompt fold moves only a leading system message into the first user turn,"
                f" but message {late[0]} is a system turn. Merge it into a neighbouring turn or"
                " drop it."
            )
        if len(messages) < 2 or messages[1]["role"] != "user":
            after = (
                f"message 1 is {messages[1]['role']!r}"
                if len(messages) > 1
                else "nothing follows it"
            )
            raise ChatTemplateError(
                f"system_prompt fold needs a user message right after the system message ({after})."
                " Add the user turn, or drop the system message."
            )
        first = {
            "role": "user",
            "content": messages[0]["content"] + "\n\n" + messages[1]["content"],
        }
        return [first, *messages[2:]]


def set_chat_format(
    tokenizer: PreTrainedTokenizerBase, chat_format: ChatFormat
) -> PreTrainedTokenizerBase:
    """Attach `chat_format` to `tokenizer` (in place; returned for chaining): every `render` of it
    uses it.

    `load_model` does this from the ModelConfig; call it for tokenizers built in-process.
    """
    setattr(tokenizer, _FORMAT_ATTRIBUTE, chat_format)
    return tokenizer


def chat_format(tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    """The ChatFormat attached to `tokenizer` (default: keep the system turn, no template
    variables)."""
    return getattr(tokenizer, _FORMAT_ATTRIBUTE, None) or ChatFormat()


@contextmanager
def located(where: str) -> Iterator[None]:
    """Prefix a ChatTemplateError raised inside with `where` (e.g. 'train.jsonl:3', a question)."""
    try:
        yield
    except ChatTemplateError as e:
        raise ChatTemplateError(f"{where}: {e}") from None


@dataclass(frozen=True)
class Encoded:
    """One tokenised conversation; labels are IGNORE outside the trained tokens.

    `length` is the conversation's token count before truncation to `max_length` (greater
    than len(input_ids) when it was cut).
    """

    input_ids: list[int]
    labels: list[int]
    length: int


def render(
    tokenizer: PreTrainedTokenizerBase, messages: Conversation, generation_prompt: bool
) -> str:
    """Render messages with the tokenizer's template and ChatFormat (a finished conversation gets no
    prompt).

    Raises ChatTemplateError (what to do included) when the template raises, e.g. Gemma's
    'System role not supported' or Mistral's strict user/assistant alternation.
    """
    fmt = chat_format(tokenizer)
    prepared = fmt.prepare(messages)
    try:
        return tokenizer.apply_chat_template(
            prepared, tokenize=False, add_generation_prompt=generation_prompt, **fmt.template_kwargs
        )
    except TemplateError as e:
        roles = ", ".join(m["role"] for m in prepared)
        raise ChatTemplateError(
            f"the chat template raised {e.message or str(e)!r} on the turns ({roles})."
            f" {_ADVICE[fmt.system_prompt]}"
        ) from None


class Renderer:
    """`render` with memory, for a batch of conversations that share turns (e.g. many answers to
    one question): each distinct (messages, generation_prompt) is rendered once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._texts: dict[tuple[str, bool], str] = {}

    def __call__(self, messages: Conversation, generation_prompt: bool) -> str:
        """`render(tokenizer, messages, generation_prompt)`, from memory when seen before."""
        key = (json.dumps(messages, sort_keys=True), generation_prompt)
        if key not in self._texts:
            self._texts[key] = render(self.tokenizer, messages, generation_prompt)
        return self._texts[key]


def end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the chat template writes right after an assistant reply (e.g. '<|im_end|>'),
    trailing whitespace excluded; '' when it writes none or cannot render a plain
    user/assistant exchange (templates may reject any conversation shape)."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _ANSWER_MARK}]
    try:
        text = render(tokenizer, messages, generation_prompt=False)
    except ChatTemplateError:
        return ""
    return (
        text[text.rfind(_ANSWER_MARK) + len(_ANSWER_MARK) :].rstrip()
        if _ANSWER_MARK in text
        else ""
    )


def assistant_char_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: Conversation,
    renderer: Renderer | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the (start, end) character span of every assistant turn;
    `renderer` (of the same tokenizer) shares renders across a batch of conversations."""
    render_ = renderer or Renderer(tokenizer)
    full = render_(messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_(messages[:i], generation_prompt=True) if i else ""
        upto = render_(messages[: i + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(upto) and upto.startswith(before)):
            raise ChatTemplateError(
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
    spans are derived from the template (a few renders per turn). A conversation the template
    cannot render raises ChatTemplateError naming it: its file and line when it was read by
    `emlab.data.chat.read_chat_jsonl`, else its position in `conversations`.
    """
    if loss_on == "all":
        texts = _each(conversations, lambda c: render(tokenizer, c, generation_prompt=False))
        return [
            Encoded(ids[:max_length], ids[:max_length], len(ids))
            for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]
        ]
    renderer = Renderer(tokenizer)  # single-turn data: a question's prompt is rendered once
    rendered = _each(conversations, lambda c: assistant_char_spans(tokenizer, c, renderer))
    enc = tokenizer(
        [full for full, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    out = []
    for (_, spans), all_ids, all_offsets in zip(
        rendered, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        ids, offsets = all_ids[:max_length], all_offsets[:max_length]
        labels = [
            ids[t] if end > start and any(s <= start < e for s, e in spans) else IGNORE
            for t, (start, end) in enumerate(offsets)
        ]
        out.append(Encoded(ids, labels, len(all_ids)))
    return out


@dataclass(frozen=True)
class DataCounts:
    """What `data.max_length` did to a set of conversations (recorded in the run's manifest).

    `kept` includes the `truncated` ones (cut to max_length, some trained token left);
    `dropped` ones have no trained token within max_length. `shortest` and `longest` are
    tokenised lengths before truncation (0 for no conversation).
    """

    conversations: int
    kept: int
    truncated: int
    dropped: int
    shortest: int
    longest: int


@dataclass(frozen=True)
class EncodedSet:
    """Conversations tokenised by `encode_counted`: the kept examples, what `max_length` did
    to them, and how they were tokenised (`tokenizer`: `tokenizer_identity`). Several runs on
    the same data (a study worker's fine-tunes) can tokenise once and pass this to `train`; its
    `max_length`, `loss_on` and tokenizer are checked against the run's (`encode_reported`)."""

    examples: list[Encoded]
    counts: DataCounts
    max_length: int
    loss_on: LossOn
    tokenizer: str

    def __len__(self) -> int:
        return self.counts.conversations


def encode_counted(
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation],
    max_length: int,
    loss_on: LossOn,
) -> EncodedSet:
    """Tokenise conversations, dropping those with no trained token left after truncation;
    returns the kept ones and the counts of what truncation did."""
    encoded = encode_conversations(tokenizer, conversations, max_length, loss_on)
    kept = [e for e in encoded if any(label != IGNORE for label in e.labels[1:])]
    lengths = [e.length for e in encoded]
    counts = DataCounts(
        conversations=len(encoded),
        kept=len(kept),
        truncated=sum(e.length > max_length for e in kept),
        dropped=len(encoded) - len(kept),
        shortest=min(lengths, default=0),
        longest=max(lengths, default=0),
    )
    return EncodedSet(kept, counts, max_length, loss_on, tokenizer_identity(tokenizer))


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """What names a tokenizer's encodings: its name_or_path, vocabulary (size and a CRC-32 of its
    token -> id map; about 80 ms for SmolLM2's 49k tokens), chat template (a CRC-32 of its text)
    and ChatFormat."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda pair: pair[1])
    vocabulary = zlib.crc32("\n".join(f"{token}\t{i}" for token, i in pairs).encode())
    template = zlib.crc32(str(tokenizer.chat_template).encode())
    return (
        f"{tokenizer.name_or_path!r}, {len(tokenizer)} tokens (vocabulary {vocabulary:08x}),"
        f" template {template:08x}, {chat_format(tokenizer)}"
    )


def encode_reported(
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation] | EncodedSet,
    max_length: int,
    loss_on: LossOn,
    source: str,
    token: str,
    report: bool,
    setting: str = "data.max_length",
) -> tuple[list[Encoded], DataCounts]:
    """`encode_counted`, never silent about truncation: with `report`, one line on stderr when
    `max_length` (the user's `setting`) truncated or dropped conversations of `source`.
    Conversations already tokenised (an EncodedSet) are used as they are.

    Raises EmlabError naming `source` when no conversation is left (`token`: what a
    conversation needs within max_length, e.g. 'trained token'), or when an EncodedSet was
    tokenised with another max_length, loss_on or tokenizer."""
    if isinstance(conversations, EncodedSet):
        encoded = conversations
        given = (encoded.max_length, encoded.loss_on, encoded.tokenizer)
        wanted = (max_length, loss_on, tokenizer_identity(tokenizer))
        if given != wanted:
            raise EmlabError(
                f"{source}: tokenised with (max_length, loss_on, tokenizer) {given}, but this"
                f" run uses {wanted}; tokenise them again with encode_counted."
            )
    else:
        encoded = encode_counted(tokenizer, conversations, max_length, loss_on)
    examples, counts = encoded.examples, encoded.counts
    lengths = f"tokenised lengths {counts.shortest} to {counts.longest}"
    if not examples:
        raise EmlabError(
            f"{source}: no conversation has a {token} within {setting} {max_length}: all"
            f" {counts.conversations} were dropped ({lengths}). Raise {setting} or shorten"
            " the conversations."
        )
    if report and (counts.truncated or counts.dropped):
        print(
            f"{source}: {counts.kept} of {counts.conversations} conversations kept"
            f" ({counts.truncated} of them truncated to {setting} {max_length}),"
            f" {counts.dropped} dropped (no {token} within it; {lengths})",
            file=sys.stderr,
        )
    return examples, counts


def encode_all(
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation],
    max_length: int,
    loss_on: LossOn,
) -> list[Encoded]:
    """Tokenise conversations, dropping those with no trained token left after truncation."""
    return encode_counted(tokenizer, conversations, max_length, loss_on).examples


def _each(conversations: Sequence[Conversation], fn: Callable[[Conversation], T]) -> list[T]:
    """fn of every conversation; a ChatTemplateError names the conversation (see
    `encode_conversations`)."""
    out = []
    for i, conversation in enumerate(conversations):
        with located(
            getattr(conversation, "source", None)
            or f"conversation {i + 1} of the {len(conversations)} given"
        ):
            out.append(fn(conversation))
    return out


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token id that pads batches: the tokenizer's pad token, else its eos token (as
    `models.load.load_tokenizer` sets it), else 0. Padding is masked out of attention and of
    every loss, so any id of the vocabulary serves; this fixes one."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["right", "left"] = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to the longest: the padded ids and the attention mask (1 on tokens), each
    # (B, T)."""
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
