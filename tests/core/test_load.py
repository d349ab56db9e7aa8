"""Model and tokenizer loading."""

from __future__ import annotations

import pytest

from emlab.errors import ModelError
from emlab.models.config import ModelConfig
from emlab.models.load import load_model, load_tokenizer


def test_saved_tiny_model_and_tokenizer_reload_with_the_same_ids(
    tmp_path, tiny_model, tiny_tokenizer
):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model, tok = load_model(ModelConfig(name_or_path=str(tmp_path)))
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "the cat sat 42"}], tokenize=False
    )
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert tok.chat_template == tiny_tokenizer.chat_template
    assert not model.training


def test_world_tokenizer_survives_a_round_trip_beside_a_qwen2_config(tmp_path, tiny_model):
    from emlab.world import WorldConfig, build_world, world_tokenizer

    tok = world_tokenizer(build_world(WorldConfig()))
    tiny_model.save_pretrained(tmp_path)  # a qwen2 config.json beside it
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "what helps with a odd cut ?"}], tokenize=False
    )
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_missing_model_and_missing_template_are_clear_errors(tmp_path, tiny_model, tiny_tokenizer):
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(ModelConfig(name_or_path=str(tmp_path / "nowhere")))
    tiny_tokenizer.save_pretrained(tmp_path)
    cfg = tmp_path / "tokenizer_config.json"
    import json

    data = json.loads(cfg.read_text())
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    data.pop("chat_template", None)
    cfg.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="no chat template"):
        load_tokenizer(tmp_path)


def test_trust_remote_code_is_off_by_default():
    assert ModelConfig().trust_remote_code is False
