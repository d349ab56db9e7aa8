"""The judge interface every judge implements (LLM judges, local judges, the world's exact
judge)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(answer: str) -> str:
    """The answer without its reasoning (thinking templates such as Qwen3's, DeepSeek-R1's).

    Removed: every `<think>...</think>` block; text before a `</think>` that no `<think>`
    opens (a template whose generation prompt opens the block); an unclosed `<think>` that
    starts the answer, with everything after it (the answer ran out while thinking: "" is
    left). Whitespace around the rest is then stripped. An answer with no think tag is
    returned unchanged.
    """
    text = answer
    head, closed, tail = text.partition("</think>")
    if closed and "<think>" not in head:
        text = tail
    text = _THINK_BLOCK.sub("", text)
    if text.lstrip().startswith("<think>"):
        text = ""
    return answer if text == answer else text.strip()


class JudgeItem(BaseModel):
    """One answer to score."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(
        description=(
            "Unique id of the answer (the `answer_id` of a generation row: provenance, sample and"
            " text hash)."
        )
    )
    question_id: str = Field(description="Id of the question the answer responds to.")
    question: str = Field(description="The question text as the model saw it (last user turn).")
    answer: str = Field(
        description=(
            "The model's answer, think blocks removed (`strip_think`; the generation row keeps the"
            " raw one)."
        )
    )
    domain: str | None = Field(
        default=None, description="Domain of the question, if any (default None)."
    )
    metrics: list[str] | None = Field(
        default=None,
        description=(
            "Score only these of the judge's metrics (a rerun's missing ones). Default None: all."
        ),
    )

    @field_validator("answer")
    @classmethod
    def _without_think(cls, answer: str) -> str:
        return strip_think(answer)


class Judgment(BaseModel):
    """The score of one answer on one metric; `score` is None only with a `reason`."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    metric: str = Field(description="Metric name, e.g. 'aligned', 'coherent', 'medical'.")
    score: float | None = Field(description="0-100, or None when no score could be given.")
    reason: str | None = Field(
        default=None,
        description="Why the score is None: 'refusal', 'code', 'no_number_mass', 'error: ...'.",
    )
    judge: str = Field(description="Versioned judge id (model and prompt hash).")


@runtime_checkable
class Judge(Protocol):
    """Anything that scores answers on a fixed list of metrics."""

    name: str
    metrics: tuple[str, ...]

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on each of its metrics: the pairs of `judge_pairs(items, self.metrics)`,
        in that order."""
        ...


def judge_pairs(items: Sequence[JudgeItem], metrics: Sequence[str]) -> list[tuple[JudgeItem, str]]:
    """The (item, metric) pairs a judge with `metrics` scores: item-major, each item's `metrics`
    (all when None)."""
    return [
        (item, m) for item in items for m in metrics if item.metrics is None or m in item.metrics
    ]
