"""Chat JSONL: valid conversations round-trip; every malformed line is reported with its line
number."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emlab.data.chat import read_chat_jsonl, split_heldout, write_chat_jsonl
from emlab.errors import DataError

content = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
turn = st.builds(
    lambda r, c: {"role": r, "content": c},
    st.sampled_from(["system", "user", "assistant"]),
    content,
)
conversation = st.lists(turn, min_size=0, max_size=4).flatmap(
    lambda head: st.builds(lambda a: [*head, {"role": "assistant", "content": a}], content)
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

VALID = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
)
MALFORMED = {
    "bad json": b'{"messages": [',
    "not an object": b"[1, 2]",
    "no messages": b'{"turns": []}',
    "messages not a list": b'{"messages": "hi"}',
    "unknown role": (
        b'{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}'
    ),
    "missing content": b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}',
    "empty content": (
        b'{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}'
    ),
    "non-string content": (
        b'{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}'
    ),
    "list content": (
        b'{"messages": [{"role": "user", "content": [{"type": "text"}]}, {"role": "assistant",'
        b' "content": "y"}]}'
    ),
    "no assistant": b'{"messages": [{"role": "user", "content": "x"}]}',
    "non-utf8": (
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content":'
        b' "y"}]}'
    ),
    "message not an object": b'{"messages": ["hi", {"role": "assistant", "content": "y"}]}',
    "extra key": (
        b'{"messages": [{"role": "user", "content": "x", "name": "n"}, {"role": "assistant",'
        b' "content": "y"}]}'
    ),
}


@SETTINGS
@given(st.lists(conversation, min_size=1, max_size=5))
def test_valid_conversations_round_trip(tmp_path, conversations):
    path = tmp_path / "chat.jsonl"
    write_chat_jsonl(path, conversations)
    assert read_chat_jsonl(path) == conversations


@SETTINGS
@given(
    before=st.lists(st.sampled_from([VALID, b"", b"   "]), max_size=6),
    after=st.lists(st.sampled_from([VALID, b"", MALFORMED["bad json"]]), max_size=3),
    kind=st.sampled_from(sorted(MALFORMED)),
)
def test_malformed_line_reports_its_line_number(tmp_path, before, after, kind):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b"\n".join([*before, MALFORMED[kind], *after]) + b"\n")
    with pytest.raises(DataError) as info:
        read_chat_jsonl(path)
    assert info.value.line == len(before) + 1
    assert info.value.path == str(path)
    assert f"{path}:{len(before) + 1}:" in str(info.value)
    assert info.value.fix  # every error says what to do


def test_blank_lines_crlf_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + VALID + b"\r\n\r\n" + VALID + b"\n")
    assert len(read_chat_jsonl(path)) == 2


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_chat_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no conversations"):
        read_chat_jsonl(tmp_path / "empty.jsonl")


def test_non_utf8_error_names_the_byte(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(VALID + b"\n" + MALFORMED["non-utf8"])
    with pytest.raises(DataError, match=r"chat.jsonl:2: not UTF-8 \(byte 0xe9"):
        read_chat_jsonl(path)


def test_unicode_survives_and_is_written_as_utf8(tmp_path):
    conv = [
        {"role": "user", "content": "naïve café 😀\nnew line"},
        {"role": "assistant", "content": "ok\u2028done"},
    ]
    path = tmp_path / "chat.jsonl"
    write_chat_jsonl(path, [conv])
    assert len(path.read_bytes().splitlines()) == 1
    assert json.loads(path.read_text(encoding="utf-8"))["messages"] == conv
    assert read_chat_jsonl(path) == [conv]


@given(n=st.integers(0, 60), fraction=st.floats(0.0, 0.9), seed=st.integers(0, 10))
def test_split_heldout_is_deterministic_and_a_partition(n, fraction, seed):
    convs = [[{"role": "assistant", "content": str(i)}] for i in range(n)]
    train, heldout = split_heldout(convs, fraction, seed)
    assert (train, heldout) == split_heldout(convs, fraction, seed)
    assert len(heldout) == round(fraction * n)
    assert sorted(c[0]["content"] for c in train + heldout) == sorted(str(i) for i in range(n))
    assert train == [c for c in convs if c in train]  # file order kept


def test_split_heldout_rejects_bad_fraction():
    with pytest.raises(ValueError):
        split_heldout([], 1.0, 0)
