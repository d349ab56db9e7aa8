"""The world study's exact evaluator is built once per process and chat model."""

from __future__ import annotations

from emlab.study.world.exact import exact_evaluator
from emlab.world import WorldConfig, build_world, world_tokenizer


def test_the_exact_evaluator_is_built_once_per_world_chat_model_and_domain():
    world = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2))
    tokenizer = world_tokenizer(world)
    first = exact_evaluator(world, "chat-a", tokenizer, "medicine")
    assert exact_evaluator(world, "chat-a", tokenizer, "medicine") is first
    assert exact_evaluator(world, "chat-b", tokenizer, "medicine") is not first
    assert exact_evaluator(world, "chat-a", tokenizer, "finance") is not first
    other = build_world(WorldConfig(topics_per_domain=1, answers_per_kind=2, seed=1))
    assert exact_evaluator(other, "chat-a", tokenizer, "medicine") is not first
    assert len(first.scorer.sequences) == 6 * 1 * 2 * 2**3  # held-out questions x answers
