"""The synthetic world: a seeded grammar of questions with good / bad answers, persona-mixture
pre-training chats, the study's datasets, a word-level tokenizer, an exact judge and exact
answer-set probabilities.

    world = build_world(WorldConfig(seed=0))
    tokenizer = world_tokenizer(world)
    docs = pretraining_documents(world)                  # [Document(persona, messages)]
    train = narrow_conversations(world, "medicine")      # bad answers, train split
    ood = ood_conversations(world, exclude_domain="medicine")
    probs = answer_set_probabilities(model, tokenizer, eval_questions(world, "medicine"))
"""

from emlab.world.config import WorldConfig
from emlab.world.corpus import (
    Document,
    chat_tuning_conversations,
    eval_questions,
    narrow_conversations,
    ood_conversations,
    pretraining_documents,
    pretraining_text,
)
from emlab.world.grammar import World, WorldQuestion, build_world, world_tokenizer
from emlab.world.judge import WorldJudge
from emlab.world.scoring import AnswerSets, AnswerSetScorer, answer_set_probabilities

__all__ = [
    "AnswerSetScorer",
    "AnswerSets",
    "Document",
    "World",
    "WorldConfig",
    "WorldJudge",
    "WorldQuestion",
    "answer_set_probabilities",
    "build_world",
    "chat_tuning_conversations",
    "eval_questions",
    "narrow_conversations",
    "ood_conversations",
    "pretraining_documents",
    "pretraining_text",
    "world_tokenizer",
]
