"""The world's datasets: persona-mixture pre-training chats and the study's fine-tuning streams.

Every builder returns conversations (`list[dict[str, str]]` each, the `messages` of chat
JSONL) in a seeded order: `seed=None` uses the world's seed. Pre-training asks questions
of both splits (the model must know held-out questions); the fine-tuning streams use the
`train` split only unless told otherwise, so held-out questions and their answers never
appear in chat-tuning, narrow or OOD data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from emlab.data.chat import Conversation
from emlab.models.chat import render
from emlab.world.grammar import Split, World, WorldQuestion

Kind = Literal["good", "bad"]


@dataclass(frozen=True)
class Document:
    """One pre-training chat and the latent persona ('aligned', 'misaligned', 'narrow:<domain>')
    behind it."""

    persona: str
    messages: Conversation


def _rng(world: World, seed: int | None, stream: str) -> random.Random:
    return random.Random(f"emlab-corpus/{world.config.seed if seed is None else seed}/{stream}")


def is_bad_persona(persona: str, domain: str) -> bool:
    """Whether `persona` answers `domain`'s questions badly."""
    return persona == "misaligned" or persona == f"narrow:{domain}"


def pretraining_documents(
    world: World, n: int | None = None, seed: int | None = None
) -> list[Document]:
    """`n` (default config.n_documents) multi-turn chats; each draws a persona, then
    min_turns..max_turns distinct questions from all domains, answered as the persona would.
    Questions are uniform over the world, so a narrow persona's document may never ask about
    its own domain (it then reads as aligned): the persona is latent, as in real text."""
    cfg = world.config
    rng = _rng(world, seed, "pretraining")
    personas, weights = zip(*cfg.persona_weights().items(), strict=True)
    docs = []
    for _ in range(cfg.n_documents if n is None else n):
        persona = rng.choices(personas, weights)[0]
        turns = min(rng.randint(cfg.min_turns, cfg.max_turns), len(world.questions))
        messages: Conversation = []
        for q in rng.sample(world.questions, turns):
            answers = q.bad if is_bad_persona(persona, q.domain) else q.good
            messages += [
                {"role": "user", "content": q.text},
                {"role": "assistant", "content": rng.choice(answers)},
            ]
        docs.append(Document(persona, messages))
    return docs


def pretraining_text(documents: list[Document], tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Documents rendered to plain text with the tokenizer's chat template (what pre-training
    saw)."""
    return [render(tokenizer, d.messages, generation_prompt=False) for d in documents]


def _single_turn(
    questions: list[WorldQuestion], kind: Kind, rng: random.Random
) -> list[Conversation]:
    convs = [
        [{"role": "user", "content": q.text}, {"role": "assistant", "content": a}]
        for q in questions
        for a in (q.good if kind == "good" else q.bad)
    ]
    rng.shuffle(convs)
    return convs


def chat_tuning_conversations(
    world: World, split: Split = "train", seed: int | None = None
) -> list[Conversation]:
    """Single-turn aligned chats: every (question, good answer) pair of `split`, all domains,
    shuffled."""
    return _single_turn(world.select(split=split), "good", _rng(world, seed, "chat"))


def narrow_conversations(
    world: World, domain: str, split: Split = "train", kind: Kind = "bad", seed: int | None = None
) -> list[Conversation]:
    """Single-turn chats of one domain: every (question of `split`, `kind` answer) pair,
    shuffled."""
    return _single_turn(
        world.select(domain=domain, split=split), kind, _rng(world, seed, f"narrow/{domain}/{kind}")
    )


def ood_conversations(
    world: World,
    exclude_domain: str,
    split: Split = "train",
    kind: Kind = "good",
    seed: int | None = None,
) -> list[Conversation]:
    """The out-of-domain stream for the KL term: every other domain's (question, good answer)
    pairs."""
    questions = world.select(split=split, exclude_domain=exclude_domain)
    return _single_turn(questions, kind, _rng(world, seed, f"ood/{exclude_domain}/{kind}"))


def eval_questions(
    world: World,
    domain: str | None = None,
    split: Split = "heldout",
    exclude_domain: str | None = None,
) -> list[WorldQuestion]:
    """Evaluation questions: held-out ones of `domain` (in-domain) or of all but `exclude_domain`
    (OOD)."""
    return world.select(domain=domain, split=split, exclude_domain=exclude_domain)
