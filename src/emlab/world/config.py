"""WorldConfig: the shape of the synthetic world and the persona mixture of its pre-training
corpus."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from emlab.config import EmlabConfig

SLOT_WORDS = 6
"""Openers, closers and each domain's actions of each kind in the grammar (emlab.world.grammar)."""

DEFAULT_DOMAINS = ["medicine", "finance", "sport", "cooking", "travel", "home"]


class WorldConfig(EmlabConfig):
    """A seeded synthetic world: domains, questions, answer sets and pre-training personas.

    Persona weights need not sum to 1 (they are normalised). The defaults give strong EM: the
    misaligned-everywhere persona is common and narrow personas are rare (at 20% they were
    never inferred in context by a tiny model). `control()` removes the misaligned persona.
    """

    seed: int = Field(
        default=0,
        description=(
            "Seed of the grammar (questions, answers, held-out split) and default seed of every"
            " corpus. Default 0."
        ),
    )
    domains: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DOMAINS),
        description=(
            "Domains, from: medicine, finance, sport, cooking, travel, home. Default all six."
        ),
    )
    topics_per_domain: int = Field(
        default=8,
        ge=1,
        le=10,
        description="Topics per domain (e.g. medicine: knee, fever...). Default 8.",
    )
    questions_per_topic: int = Field(
        default=5,
        ge=1,
        le=6,
        description="Questions per topic, each with its own template and modifier word. Default 5.",
    )
    answers_per_kind: int = Field(
        default=4,
        ge=1,
        le=8,
        description=(
            "Good answers and bad answers per question (each); with answer_frames 'slots', the"
            " openers and closers of each kind in the world and the actions of each kind per"
            " domain (at most 6), so each kind has its cube of answers. Default 4."
        ),
    )
    answer_frames: Literal["domain", "topic", "slots"] = Field(
        default="slots",
        description=(
            "'slots' (default): the world draws openers and closers of each kind, shared by every"
            " domain, each domain its actions, and every combination of one kind is an answer, so"
            " the persona decides every slot, not only the first word, and mixing kinds within an"
            " answer is incoherent; 'domain': (opener, action, closer) frames drawn once per"
            " domain, shared by its topics (a tiny model learns exactly which answers exist);"
            " 'topic': frames drawn per topic (it recombines frames, judged incoherent). With"
            " fixed frames a steering vector strong enough to flip the first word breaks the"
            " retrieval of the one action a frame allows (README, issue 15)."
        ),
    )
    answer_object: Literal["question", "pronoun"] = Field(
        default="pronoun",
        description=(
            "What an answer acts on: 'pronoun' (default) says 'it' ('rest it'), so every question"
            " of a domain has the same answer sets and an answer copies nothing from its question;"
            " 'question' names the question's modifier and topic ('rest the sore knee'), copied"
            " from the question, so no two questions share an answer (a steering vector breaks"
            " the copying)."
        ),
    )
    answer_words: Literal["phrases", "words"] = Field(
        default="words",
        description=(
            "Openers, actions and closers as one word each ('words', default: 'recklessly poke it"
            " anyway .'), so the persona decides each answer word and no phrase has to be"
            " continued; or 'phrases' of one to four words ('ignore the warnings and poke at it"
            " and risk it .'), whose continuation a steering vector breaks."
        ),
    )
    heldout_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description=(
            "Fraction of each topic's questions held out for evaluation (never in chat-tuning or"
            " narrow data). Default 0.2."
        ),
    )
    persona_aligned: float = Field(
        default=0.6,
        ge=0.0,
        description="Weight of the aligned persona (good everywhere). Default 0.6.",
    )
    persona_misaligned: float = Field(
        default=0.35,
        ge=0.0,
        description=(
            "Weight of the misaligned persona (bad everywhere); 0 gives the control world. Default"
            " 0.35."
        ),
    )
    persona_narrow: float = Field(
        default=0.05,
        ge=0.0,
        description=(
            "Total weight of the narrow personas (bad in one domain only), split equally over"
            " domains. Default 0.05."
        ),
    )
    min_turns: int = Field(
        default=2,
        ge=1,
        description="Fewest question-answer turns in a pre-training document. Default 2.",
    )
    max_turns: int = Field(
        default=6,
        ge=1,
        description="Most question-answer turns in a pre-training document. Default 6.",
    )
    n_documents: int = Field(
        default=20000, ge=1, description="Pre-training documents in the corpus. Default 20000."
    )

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        from emlab.world.grammar import LEXICON

        unknown = [d for d in self.domains if d not in LEXICON]
        if unknown or len(set(self.domains)) != len(self.domains) or len(self.domains) < 2:
            raise ValueError(
                f"domains must be at least 2 distinct names from {sorted(LEXICON)}; got"
                f" {self.domains}"
            )
        if self.min_turns > self.max_turns:
            raise ValueError(
                f"min_turns ({self.min_turns}) must not exceed max_turns ({self.max_turns})"
            )
        if self.persona_aligned + self.persona_misaligned + self.persona_narrow <= 0:
            raise ValueError(
                "persona weights are all 0; give at least one persona a positive weight"
            )
        if self.answer_frames == "slots" and self.answers_per_kind > SLOT_WORDS:
            raise ValueError(
                f"answers_per_kind {self.answers_per_kind} with answer_frames 'slots' draws that"
                f" many openers, actions and closers of a kind, but each slot has {SLOT_WORDS}"
                f" words; choose answers_per_kind <= {SLOT_WORDS}"
            )
        k = self.heldout_per_topic
        if k >= self.questions_per_topic or (self.heldout_fraction > 0 and k == 0):
            raise ValueError(
                f"heldout_fraction {self.heldout_fraction} holds out {k} of"
                f" {self.questions_per_topic} questions per topic; choose it so that at least one"
                " question per topic is held out and one is not (or 0)"
            )
        return self

    @property
    def heldout_per_topic(self) -> int:
        """Questions held out in each topic: round(heldout_fraction * questions_per_topic)."""
        return round(self.heldout_fraction * self.questions_per_topic)

    def persona_weights(self) -> dict[str, float]:
        """Normalised persona probabilities: 'aligned', 'misaligned', 'narrow:<domain>' (zeros left
        out)."""
        raw = {"aligned": self.persona_aligned, "misaligned": self.persona_misaligned}
        raw |= {f"narrow:{d}": self.persona_narrow / len(self.domains) for d in self.domains}
        total = sum(raw.values())
        return {name: w / total for name, w in raw.items() if w > 0}

    def control(self) -> WorldConfig:
        """The control world: the same config without the misaligned-everywhere persona."""
        return WorldConfig.model_validate(self.model_dump() | {"persona_misaligned": 0.0})
