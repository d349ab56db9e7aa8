"""Helpers every package shares, each defined once: hidden states of a module output, the pad id,
the template's end of turn; and the names that once had twins."""

from __future__ import annotations

import ast
import copy
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import emlab
from emlab.models.chat import end_of_turn, padding_id
from emlab.models.modules import hidden_of, map_hidden

ONCE = [
    "Conversation",
    "Question",
    "encode_all",
    "hidden_of",
    "map_hidden",
    "padding_id",
    "end_of_turn",
]


def _top_level_names(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def test_each_shared_name_is_defined_once_in_the_package():
    counts = Counter(
        n for path in Path(emlab.__file__).parent.rglob("*.py") for n in _top_level_names(path)
    )
    assert {name: counts[name] for name in ONCE} == dict.fromkeys(ONCE, 1)


def test_map_hidden_changes_the_hidden_states_of_a_tensor_or_a_tuple():
    h = torch.arange(12.0).view(2, 3, 2)  # (B, T, d)
    assert torch.equal(map_hidden(h, lambda x: x * 2), h * 2)  # every row, not row 0
    out = map_hidden((h, "cache", None), lambda x: x + 1)
    assert torch.equal(out[0], h + 1) and out[1:] == ("cache", None)
    assert hidden_of((h,)) is h
    with pytest.raises(TypeError, match="list"):
        hidden_of([h])


@pytest.mark.parametrize(
    ("pad", "eos", "expected"), [(5, 7, 5), (0, 7, 0), (None, 7, 7), (None, None, 0)]
)
def test_padding_id_falls_back_to_eos_then_zero(pad, eos, expected):
    assert padding_id(SimpleNamespace(pad_token_id=pad, eos_token_id=eos)) == expected


def test_end_of_turn_is_what_the_template_writes_after_an_answer(tiny_tokenizer, smollm2_tokenizer):
    assert end_of_turn(tiny_tokenizer) == "<|im_end|>"
    assert end_of_turn(smollm2_tokenizer) == "<|im_end|>"
    other = copy.deepcopy(tiny_tokenizer)
    other.chat_template = "{% for m in messages %}{{ m['content'] }} [end]\n{% endfor %}"
    assert end_of_turn(other) == " [end]"
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert end_of_turn(other) == ""
    other.chat_template = "{{ raise_exception('no assistant turns') }}"
    assert end_of_turn(other) == ""
