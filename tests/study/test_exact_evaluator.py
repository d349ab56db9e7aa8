"""The world study's memos in a worker process: the exact evaluator is built once per world,
chat model and domain, the chat model's own numbers are evaluated once, and the training data
is tokenised once."""

from __future__ import annotations

from emlab.models.chat import encode_counted
from emlab.models.tiny import tiny_qwen2
from emlab.study.world.exact import exact_evaluator
from emlab.study.world.finetune import _encoded
from emlab.world import WorldConfig, build_world, narrow_conversations, world_tokenizer


def test_the_exact_evaluator_is_built_once_per_world_chat_model_and_domain():
    world = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2))
    tokenizer = world_tokenizer(world)
    first = exact_evaluator(world, "chat-a", tokenizer, "medicine")
    assert exact_evaluator(world, "chat-a", tokenizer, "medicine") is first
    assert exact_evaluator(world, "chat-b", tokenizer, "medicine") is not first
    assert exact_evaluator(world, "chat-a", tokenizer, "finance") is not first
    other = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2, seed=1))
    assert exact_evaluator(other, "chat-a", tokenizer, "medicine") is not first
    assert len(first.evaluate.scorer.sequences) == 6 * 1 * 2 * 2**3  # held-out questions x answers


def test_the_chat_models_numbers_are_evaluated_once():
    world = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2))
    tokenizer = world_tokenizer(world)
    model = tiny_qwen2(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0)
    evaluator = exact_evaluator(world, "chat-base", tokenizer, "medicine")
    calls = []
    exact = evaluator.evaluate
    evaluator.evaluate = lambda m: calls.append(1) or exact(m)
    first = evaluator.base(model)
    assert first == exact(model) and set(first) >= {"p_bad_ood", "p_bad_in_domain"}
    first["p_bad_ood"] = -1.0  # a caller's copy: the memo is not changed through it
    assert evaluator.base(model) == exact(model)
    assert len(calls) == 1


def test_the_training_data_is_tokenised_once_per_world_chat_model_and_data():
    world = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2))
    tokenizer = world_tokenizer(world)
    narrow = _encoded(world, "chat-a", tokenizer, "narrow", "medicine", 64, "assistant")
    assert _encoded(world, "chat-a", tokenizer, "narrow", "medicine", 64, "assistant") is narrow
    ood = _encoded(world, "chat-a", tokenizer, "ood", "medicine", 64, "assistant")
    assert len(ood) == 5 * len(narrow)  # the good answers of the 5 other domains
    assert _encoded(world, "chat-b", tokenizer, "narrow", "medicine", 64, "assistant") is not narrow
    assert _encoded(world, "chat-a", tokenizer, "narrow", "medicine", 32, "assistant") is not narrow
    assert (
        narrow.examples
        == encode_counted(
            tokenizer, narrow_conversations(world, "medicine"), 64, "assistant"
        ).examples
    )
