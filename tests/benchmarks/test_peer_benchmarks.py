"""benchmarks/vs_trl.py, vs_generate.py and importance.py: what their comparisons rest on, without
TRL (an optional extra) and on tiny models (their timed runs are SmolLM2's, in benchmarks/ only)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from benchmark_scripts import load_benchmark

from emlab.models.chat import IGNORE, encode_conversations


@pytest.fixture(scope="module")
def vs_trl():
    yield from load_benchmark("vs_trl")


@pytest.fixture(scope="module")
def vs_generate():
    yield from load_benchmark("vs_generate")


@pytest.fixture(scope="module")
def importance():
    yield from load_benchmark("importance")


def test_missing_trl_is_a_clear_error(vs_trl, monkeypatch, capsys):
    real = importlib.util.find_spec
    missing = ("trl", "datasets")  # both, whatever this environment has
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(SystemExit) as stop:
        vs_trl.measure("tiny", 2, ["emlab_lora", "trl_lora"], memory=False)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trl, datasets not installed")
    assert "pip install -e '.[bench]'" in err


def test_training_template_renders_smollm2_text_and_marks_emlabs_labels(vs_trl, smollm2_tokenizer):
    """TRL's assistant-only loss reads the {% generation %} spans of TRAINING_TEMPLATE: the text is
    SmolLM2's own, and the spans are exactly the tokens emlab trains (content and <|im_end|>)."""
    tok = smollm2_tokenizer
    conversations = vs_trl.kl_step.conversations(4, 0, 12)
    for conversation in conversations:
        ours = tok.apply_chat_template(conversation, tokenize=False)
        assert (
            tok.apply_chat_template(
                conversation, tokenize=False, chat_template=vs_trl.TRAINING_TEMPLATE
            )
            == ours
        )
    encoded = encode_conversations(tok, conversations, 512, "assistant")
    for conversation, e in zip(conversations, encoded, strict=True):
        marked = tok.apply_chat_template(
            conversation,
            chat_template=vs_trl.TRAINING_TEMPLATE,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert marked["input_ids"] == list(e.input_ids)
        assert marked["assistant_masks"] == [int(label != IGNORE) for label in e.labels]
        assert tok.decode(
            [t for t, m in zip(e.input_ids, marked["assistant_masks"], strict=True) if m]
        ).endswith("<|im_end|>")


def test_emlab_arm_runs_on_a_tiny_model(vs_trl):
    torch.manual_seed(0)
    result = vs_trl.worker("tiny", "emlab_lora", 3, "time")
    assert result["step_seconds"] > 0


def test_plain_generate_arm_feeds_emlabs_prompt_ids(vs_generate, tiny_model, tiny_tokenizer):
    from emlab.generate.chat_tokens import prompt_token_ids

    messages = [[{"role": "user", "content": "yes"}], [{"role": "user", "content": "no no no yes"}]]
    assert tiny_tokenizer.pad_token is not None
    seconds, answers, ids = vs_generate.plain_arm(tiny_model.eval(), tiny_tokenizer, messages, 3, 0)
    assert ids == [prompt_token_ids(tiny_tokenizer, m) for m in messages]
    assert len(answers) == 2 and seconds > 0


def test_text_loss_scores_every_real_token(importance, tiny_model, tiny_tokenizer):
    kl, loss = importance.evaluators(tiny_model, tiny_tokenizer, chunks=3)
    batch = loss.batches[0]
    with torch.no_grad():
        logits = tiny_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    real = batch["attention_mask"][:, 1:].bool()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1][real], batch["input_ids"][:, 1:][real])
    assert loss.evaluate(None) == pytest.approx(float(nll), rel=1e-6)
    assert torch.equal(kl.batches[0]["input_ids"], batch["input_ids"])


def test_metric_costs_run_on_a_tiny_model(importance, tiny_model, tiny_tokenizer):
    from emlab.solutions import SteeringSolution

    kl, loss = importance.evaluators(tiny_model, tiny_tokenizer, chunks=3)
    steering = SteeringSolution(torch.ones(32), "layer", 0, 1.0)
    seconds = importance.metric_seconds(tiny_model, kl, loss, steering, repeats=2)
    assert set(seconds) == {"forward", "nll", "kl", "kl_previous"} and all(
        s > 0 for s in seconds.values()
    )
