"""Chat datasets: JSONL files with one `{"messages": [{"role": ..., "content": ...}, ...]}` per
line.

Every line is checked; a bad one raises a DataError naming the file, the 1-based line
number and what to do. Lines are split on b"\\n" and decoded one at a time, so the line of
a non-UTF-8 byte is right too. Blank lines are skipped (they still count as lines).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emlab.errors import DataError
from emlab.io import write_text_atomic

Conversation = list[dict[str, str]]
"""A chat: messages {"role": "system" | "user" | "assistant", "content": text}, in order."""


class SourcedConversation(list):
    """A conversation read from a file: a list of messages with `source`, its 'path:line'
    (rendering errors name it, see `emlab.models.chat.encode_conversations`)."""

    def __init__(self, messages: Conversation, source: str) -> None:
        super().__init__(messages)
        self.source = source


ROLES = ("system", "user", "assistant")
_EXAMPLE = (
    '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
)


def read_chat_jsonl(path: str | Path) -> list[Conversation]:
    """Read and validate a chat JSONL file; each conversation is a list of {role, content}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "chat file not found", f"Check the path (cwd: {Path.cwd()}).")
    conversations = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark written by some editors
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                path,
                number,
                f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
                "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
            ) from None
        if text.strip():
            conversations.append(parse_chat_line(text, path, number))
    if not conversations:
        raise DataError(
            path,
            None,
            "no conversations in the file",
            f"Write one JSON object per line: {_EXAMPLE}",
        )
    return conversations


def parse_chat_line(text: str, path: str | Path, line: int) -> SourcedConversation:
    """Validate one JSONL line and return its messages (only role and content kept), sourced
    'path:line'."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            path,
            line,
            f"not valid JSON ({e.msg} at column {e.colno})",
            f"Fix the line; expected {_EXAMPLE}",
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            path,
            line,
            f"expected a JSON object, got {type(obj).__name__}",
            f"Write lines like {_EXAMPLE}",
        )
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(
            path,
            line,
            'no "messages" list (or it is empty)',
            f"Put the turns in a non-empty list: {_EXAMPLE}",
        )
    conversation = [_message(m, i, path, line) for i, m in enumerate(messages)]
    if not any(m["role"] == "assistant" for m in conversation):
        raise DataError(
            path,
            line,
            "the conversation has no assistant turn",
            "Add the assistant answer to train on, or drop the line.",
        )
    return SourcedConversation(conversation, f"{path}:{line}")


def _message(m: Any, index: int, path: str | Path, line: int) -> dict[str, str]:
    where = f"message {index}"
    if not isinstance(m, dict):
        raise DataError(
            path,
            line,
            f"{where} is a {type(m).__name__}, not an object",
            'Write each turn as {"role": ..., "content": ...}.',
        )
    unknown = sorted(set(m) - {"role", "content"})
    if unknown:
        raise DataError(
            path,
            line,
            f"{where} has unknown key(s) {_short(unknown)}",
            "Keep only `role` and `content` in each turn.",
        )
    role = m.get("role")
    if role not in ROLES:
        raise DataError(
            path, line, f"{where} has role {_short(role)}", f"Use one of {list(ROLES)}."
        )
    if "content" not in m:
        raise DataError(path, line, f"{where} ({role}) has no content", 'Add a "content" string.')
    content = m["content"]
    if not isinstance(content, str):
        raise DataError(
            path,
            line,
            f"{where} ({role}) has {type(content).__name__} content",
            "Make `content` a plain string (no lists of parts).",
        )
    if not content.strip():
        raise DataError(
            path, line, f"{where} ({role}) has empty content", "Fill the turn or drop it."
        )
    return {"role": role, "content": content}


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters (a message must not quote a 10 MB field)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_chat_jsonl(path: str | Path, conversations: Sequence[Conversation]) -> None:
    """Write conversations as chat JSONL (UTF-8, one `{"messages": [...]}` per line), atomically."""
    lines = [
        json.dumps(
            {"messages": [{"role": m["role"], "content": m["content"]} for m in c]},
            ensure_ascii=False,
        )
        for c in conversations
    ]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def split_heldout(
    conversations: Sequence[Conversation], fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Split off round(fraction * n) conversations chosen by `seed`; both parts keep file order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    n_heldout = round(fraction * len(conversations))
    chosen = set(random.Random(seed).sample(range(len(conversations)), n_heldout))
    train = [c for i, c in enumerate(conversations) if i not in chosen]
    heldout = [c for i, c in enumerate(conversations) if i in chosen]
    return train, heldout
