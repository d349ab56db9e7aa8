"""Templates that refuse a system turn or alternate strictly, and thinking templates: errors that
name the conversation, `system_prompt: fold` and `chat_template_kwargs`, with masks still right."""

from __future__ import annotations

import copy

import pytest
from chat_templates import GEMMA_LIKE, MISTRAL_LIKE, QWEN3_LIKE, trained_segments, with_template

from emlab.config import validate_config
from emlab.data.chat import read_chat_jsonl
from emlab.errors import ChatTemplateError, ConfigError
from emlab.generate.chat_tokens import prompt_token_ids
from emlab.models.chat import (
    IGNORE,
    ChatFormat,
    chat_format,
    encode_conversation,
    encode_conversations,
    render,
    set_chat_format,
)
from emlab.train.config import TrainConfig
from emlab.train.loop import train

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "the cat sat"},
    {"role": "assistant", "content": "yes the mat"},
    {"role": "user", "content": "and the dog"},
    {"role": "assistant", "content": "no the park"},
]
PLAIN = CONV[1:3]


def _n_tokens(tokenizer, texts):
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def _write_chats(path, conversations):
    import json

    lines = [json.dumps({"messages": c}) if c else "" for c in conversations]  # None: a blank line
    path.write_text("\n".join(lines) + "\n")
    return path


def test_refused_system_turn_names_the_file_and_line(tmp_path, tiny_tokenizer):
    tok = with_template(tiny_tokenizer, GEMMA_LIKE)
    path = _write_chats(
        tmp_path / "train.jsonl", [PLAIN, None, CONV[:3]]
    )  # line 2 blank: the system one is line 3
    with pytest.raises(ChatTemplateError) as err:
        encode_conversations(tok, read_chat_jsonl(path), 512)
    message = str(err.value)
    assert message.startswith(
        f"{path}:3: the chat template raised 'System role not supported' on the turns (system,"
        " user, assistant)"
    )
    assert "system_prompt: fold" in message
    # conversations given in Python are named by their position
    with pytest.raises(
        ChatTemplateError, match=r"^conversation 2 of the 2 given: .*'System role not supported'"
    ):
        encode_conversations(tok, [PLAIN, CONV[:3]], 512)


def test_training_names_the_train_and_ood_file_lines(tmp_path, tiny_model, tiny_tokenizer):
    tok = with_template(tiny_tokenizer, MISTRAL_LIKE)
    train_file = _write_chats(tmp_path / "train.jsonl", [PLAIN, PLAIN, CONV[:3], PLAIN])
    ood_file = _write_chats(tmp_path / "ood.jsonl", [PLAIN, CONV[:3]])
    base = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "solution": {"kind": "steering", "point": "embed"},
        "max_steps": 1,
        "progress": False,
        "data": {"train": str(train_file), "heldout_fraction": 0.25, "split_seed": 0},
    }
    cfg = validate_config(base, TrainConfig)
    with pytest.raises(
        ChatTemplateError,
        match=rf"^{train_file}:3: the chat template raised 'Conversation roles must alternate",
    ):
        train(cfg, tiny_model, tok)
    base["data"] = {
        "train": str(_write_chats(tmp_path / "ok.jsonl", [PLAIN] * 4)),
        "ood": str(ood_file),
    }
    cfg = validate_config({**base, "kl": {"weight": 1.0}}, TrainConfig)
    with pytest.raises(
        ChatTemplateError,
        match=rf"^{ood_file}:2: the chat template raised 'Conversation roles must alternate",
    ):
        train(cfg, tiny_model, tok)
    assert not (tmp_path / "runs").exists()  # refused before the run folder is written
    # folded, the same data trains; the tokenizer must carry the config's format
    cfg = validate_config(
        {**base, "kl": {"weight": 1.0}, "model": {"system_prompt": "fold"}}, TrainConfig
    )
    with pytest.raises(ConfigError, match="the config's model asks for ChatFormat"):
        train(cfg, tiny_model, tok)
    result = train(cfg, tiny_model, set_chat_format(tok, ChatFormat(system_prompt="fold")))
    assert len(result.metrics) == 1 and result.metrics[0]["sft"] > 0


def test_fold_renders_and_masks_a_gemma_like_template(tiny_tokenizer):
    tok = with_template(tiny_tokenizer, GEMMA_LIKE, ChatFormat(system_prompt="fold"))
    assert (
        render(tok, CONV, generation_prompt=False)
        == "<|im_start|>user\nBe brief.\n\nthe cat sat<|im_end|>\n"
        "<|im_start|>assistant\nyes the mat<|im_end|>\n"
        "<|im_start|>user\nand the dog<|im_end|>\n"
        "<|im_start|>assistant\nno the park<|im_end|>\n"
    )
    enc = encode_conversation(tok, CONV, 512)
    trained = ["yes the mat<|im_end|>", "no the park<|im_end|>"]
    assert trained_segments(tok, enc) == trained
    assert sum(label != IGNORE for label in enc.labels) == _n_tokens(tok, trained)
    # generation's prompt is exactly the tokens before the first trained token
    first = next(t for t, label in enumerate(enc.labels) if label != IGNORE)
    assert prompt_token_ids(tok, CONV[:2]) == enc.input_ids[:first]
    # the KL term's `all` scope renders the same folded text
    assert tok.decode(encode_conversation(tok, CONV, 512, loss_on="all").input_ids) == render(
        tok, CONV, False
    )


def test_fold_satisfies_a_mistral_like_strict_alternation(tiny_tokenizer):
    keep = with_template(tiny_tokenizer, MISTRAL_LIKE)
    with pytest.raises(ChatTemplateError, match="must alternate"):
        render(keep, CONV[:3], generation_prompt=False)
    tok = set_chat_format(keep, ChatFormat(system_prompt="fold"))
    assert (
        render(tok, CONV[:3], generation_prompt=False)
        == "<s>[INST] Be brief.\n\nthe cat sat [/INST]yes the mat<|im_end|>"
    )
    enc = encode_conversation(tok, CONV[:3], 512)
    assert trained_segments(tok, enc) == ["yes the mat<|im_end|>"]
    first = next(t for t, label in enumerate(enc.labels) if label != IGNORE)
    assert prompt_token_ids(tok, CONV[:2]) == enc.input_ids[:first]
    # a template that still refuses the folded turns: the advice no longer says fold
    with pytest.raises(ChatTemplateError, match="already folded"):
        render(tok, [CONV[1], CONV[3]], generation_prompt=True)


def test_fold_refuses_what_it_cannot_fold(tiny_tokenizer):
    tok = with_template(tiny_tokenizer, GEMMA_LIKE, ChatFormat(system_prompt="fold"))
    with pytest.raises(ChatTemplateError, match="message 2 is a system turn"):
        render(tok, [*PLAIN, {"role": "system", "content": "now"}, CONV[3]], generation_prompt=True)
    with pytest.raises(ChatTemplateError, match="message 1 is 'assistant'"):
        render(tok, [CONV[0], CONV[2]], generation_prompt=False)
    assert render(tok, PLAIN, False) == render(
        with_template(tiny_tokenizer, GEMMA_LIKE), PLAIN, False
    )  # nothing to fold


def test_thinking_template_with_enable_thinking_false(tiny_tokenizer):
    default = with_template(tiny_tokenizer, QWEN3_LIKE)
    # what the template does unasked: the empty think block is trained before the answer
    assert trained_segments(default, encode_conversation(default, PLAIN, 512)) == [
        "<think>\n\n</think>\n\nyes the mat<|im_end|>"
    ]
    tok = set_chat_format(
        copy.deepcopy(default), ChatFormat(template_kwargs={"enable_thinking": False})
    )
    prompt = render(tok, PLAIN[:1], generation_prompt=True)
    assert (
        prompt
        == "<|im_start|>user\nthe cat sat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    # Qwen3 still writes the empty block in the finished turn; it is now prompt, not answer
    assert render(tok, PLAIN, generation_prompt=False) == prompt + "yes the mat<|im_end|>\n"
    enc = encode_conversation(tok, PLAIN, 512)
    assert trained_segments(tok, enc) == ["yes the mat<|im_end|>"]
    assert sum(label != IGNORE for label in enc.labels) == _n_tokens(tok, ["yes the mat<|im_end|>"])
    first = next(t for t, label in enumerate(enc.labels) if label != IGNORE)
    assert prompt_token_ids(tok, PLAIN[:1]) == enc.input_ids[:first]


def test_chat_format_comes_from_the_model_config():
    from emlab.models.config import ModelConfig
    from emlab.models.load import load_model

    kwargs = {"enable_thinking": False}
    _, tok = load_model(
        ModelConfig(name_or_path="smollm2", system_prompt="fold", chat_template_kwargs=kwargs)
    )
    assert chat_format(tok) == ChatFormat("fold", kwargs)
    text = render(tok, CONV[:2], generation_prompt=True)
    assert (
        "<|im_start|>user\nBe brief.\n\nthe cat sat<|im_end|>" in text
        and "<|im_start|>system\nBe brief." not in text
    )
    with pytest.raises(ConfigError, match=r"\['tokenize'\] are arguments of apply_chat_template"):
        load_model(ModelConfig(name_or_path="smollm2", chat_template_kwargs={"tokenize": True}))


def test_world_scoring_and_pretraining_text_render_with_the_format(tiny_tokenizer):
    from emlab.world.corpus import Document, pretraining_text
    from emlab.world.scoring import answer_tokens

    tok = with_template(tiny_tokenizer, GEMMA_LIKE, ChatFormat(system_prompt="fold"))
    [(ids, n_prompt)] = answer_tokens(tok, [(CONV[:2], "yes the mat")])
    assert ids[:n_prompt] == prompt_token_ids(tok, CONV[:2])
    assert tok.decode(ids[n_prompt:]) == "yes the mat<|im_end|>"
    assert pretraining_text([Document("aligned", CONV)], tok) == [
        render(tok, CONV, generation_prompt=False)
    ]
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        pretraining_text([Document("aligned", CONV)], with_template(tiny_tokenizer, GEMMA_LIKE))
