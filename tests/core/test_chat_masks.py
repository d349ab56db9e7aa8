"""Assistant-only loss masks come from the tokenizer's own template."""

from __future__ import annotations

import pytest
from chat_templates import trained_segments

from emlab.errors import ModelError
from emlab.models.chat import IGNORE, collate, encode_conversation, render

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "the cat sat"},
    {"role": "assistant", "content": "yes the mat"},
    {"role": "user", "content": "and the dog"},
    {"role": "assistant", "content": "no the park"},
]
HAND_RENDERED = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nthe cat sat<|im_end|>\n"
    "<|im_start|>assistant\nyes the mat<|im_end|>\n"
    "<|im_start|>user\nand the dog<|im_end|>\n"
    "<|im_start|>assistant\nno the park<|im_end|>\n"
)
EXPECTED_TRAINED = ["yes the mat<|im_end|>", "no the park<|im_end|>"]


@pytest.mark.parametrize("tok_fixture", ["tiny_tokenizer", "smollm2_tokenizer"])
def test_masks_cover_exactly_assistant_tokens(request, tok_fixture):
    tokenizer = request.getfixturevalue(tok_fixture)
    assert render(tokenizer, CONV, generation_prompt=False) == HAND_RENDERED
    enc = encode_conversation(tokenizer, CONV, max_length=512)
    assert trained_segments(tokenizer, enc) == EXPECTED_TRAINED
    # the trained tokens are exactly the tokens of the hand-written assistant spans
    expected = sum(
        len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in EXPECTED_TRAINED
    )
    assert sum(label != IGNORE for label in enc.labels) == expected


def test_finished_conversation_gets_no_generation_prompt(smollm2_tokenizer):
    text = render(smollm2_tokenizer, CONV, generation_prompt=False)
    assert not text.rstrip().endswith("<|im_start|>assistant")
    enc = encode_conversation(smollm2_tokenizer, CONV, max_length=512)
    assert smollm2_tokenizer.decode(enc.input_ids).endswith("no the park<|im_end|>\n")


def test_default_system_prompt_is_never_trained(smollm2_tokenizer):
    conv = CONV[1:3]  # SmolLM2's template injects a default system prompt here
    enc = encode_conversation(smollm2_tokenizer, conv, max_length=512)
    assert "SmolLM" in smollm2_tokenizer.decode(enc.input_ids)
    assert trained_segments(smollm2_tokenizer, enc) == ["yes the mat<|im_end|>"]


def test_loss_on_all_and_truncation(tiny_tokenizer):
    full = encode_conversation(tiny_tokenizer, CONV, max_length=512, loss_on="all")
    assert full.labels == full.input_ids
    cut = encode_conversation(tiny_tokenizer, CONV, max_length=10)
    assert len(cut.input_ids) == 10


def test_collate_pads_right_and_left(tiny_tokenizer):
    a = encode_conversation(tiny_tokenizer, CONV[:3], 512)
    b = encode_conversation(tiny_tokenizer, CONV, 512)
    right = collate([a, b], pad_id=0)
    assert right["attention_mask"][0].tolist() == [1] * len(a.input_ids) + [0] * (
        len(b.input_ids) - len(a.input_ids)
    )
    assert (right["labels"][0, len(a.input_ids) :] == IGNORE).all()
    left = collate([a, b], pad_id=0, side="left")
    assert left["input_ids"][0, -len(a.input_ids) :].tolist() == a.input_ids


def test_template_that_rewrites_history_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    # a template that drops earlier assistant turns (like reasoning-stripping templates)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}{{ '<|im_start|>' +"
        " m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}{% if"
        " add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(ModelError, match="prefixes"):
        encode_conversation(tok, CONV, 512)


def test_a_batch_renders_each_shared_prompt_once_and_encodes_as_one_at_a_time(
    smollm2_tokenizer, monkeypatch
):
    from emlab.models.chat import encode_conversations

    questions = ["how do i rest ?", "what now ?"]
    convs = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q in questions
        for a in ["rest it .", "poke it .", "wait ."]
    ]
    alone = [encode_conversation(smollm2_tokenizer, c, 64) for c in convs]
    calls = []
    template = smollm2_tokenizer.apply_chat_template
    monkeypatch.setattr(
        smollm2_tokenizer,
        "apply_chat_template",
        lambda messages, **kw: calls.append(messages) or template(messages, **kw),
    )
    assert encode_conversations(smollm2_tokenizer, convs, 64) == alone
    # one render per conversation, one generation prompt per question (was 3 renders each)
    assert len(calls) == len(convs) + len(questions)
