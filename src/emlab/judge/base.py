"""The judge interface every judge implements (LLM judges, local judges, the world's exact judge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class JudgeItem(BaseModel):
    """One answer to score."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(description="Unique id of the answer (the `answer_id` of a generation row: provenance, sample and text hash).")
    question_id: str = Field(description="Id of the question the answer responds to.")
    question: str = Field(description="The question text as the model saw it (last user turn).")
    answer: str = Field(description="The model's answer.")
    domain: str | None = Field(default=None, description="Domain of the question, if any (default None).")
    metrics: list[str] | None = Field(
        default=None, description="Score only these of the judge's metrics (a rerun's missing ones). Default None: all."
    )


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
        """Score every item on each of its metrics: the pairs of `judge_pairs(items, self.metrics)`, in that order."""
        ...


def judge_pairs(items: Sequence[JudgeItem], metrics: Sequence[str]) -> list[tuple[JudgeItem, str]]:
    """The (item, metric) pairs a judge with `metrics` scores: item-major, each item's `metrics` (all when None)."""
    return [(item, m) for item in items for m in metrics if item.metrics is None or m in item.metrics]
