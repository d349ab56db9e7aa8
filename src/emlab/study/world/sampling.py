"""Sampled evaluation in the world: answers at T=1 to held-out questions, labelled by the exact
judge."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.data.questions import Prompt
from emlab.generate import SamplingConfig, generate_hf
from emlab.io import read_jsonl
from emlab.solutions import Solution
from emlab.study.common.stages import StageResult
from emlab.world import World, WorldJudge, eval_questions


class LabelledAnswer(BaseModel):
    """One sampled answer's question, domain, group ('in_domain' or 'ood') and exact label
    ('good', 'bad' or 'incoherent')."""

    question_id: str
    domain: str
    group: str
    label: str


class Sampled(StageResult):
    """A model's (or solution's) labelled answers and its bad and incoherent rates per group
    (`bad_in_domain`, `incoherent_ood`...; per question, then averaged)."""

    rates: dict[str, float]
    samples: list[LabelledAnswer]


MAX_ANSWER_TOKENS = 32
"""Longer than any world answer (at most 18 words + end of turn)."""


def world_sample_rates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    domain: str,
    samples: int,
    seed: int,
    out_path: Path,
    solution: Solution | None = None,
) -> Sampled:
    """`samples` answers per held-out question (T=1, no top-k/top-p; written to `out_path`,
    resumable), labelled good/bad/incoherent, and the bad and incoherent rates per group."""
    groups = {
        "in_domain": eval_questions(world, domain=domain),
        "ood": eval_questions(world, exclude_domain=domain),
    }
    prompts = [
        Prompt(
            prompt_id=q.id,
            question_id=q.id,
            paraphrase=0,
            messages=q.prompt,
            domain=q.domain,
            samples=samples,
            judge_metrics=list(WorldJudge.metrics),
        )
        for qs in groups.values()
        for q in qs
    ]
    sampling = SamplingConfig(seed=seed, max_new_tokens=MAX_ANSWER_TOKENS, batch_size=256)
    generate_hf(model, tokenizer, prompts, out_path, sampling, solution=solution, progress=False)
    judge = WorldJudge(world)
    rows = [
        LabelledAnswer(
            question_id=r["question_id"],
            domain=r["domain"],
            group="in_domain" if r["domain"] == domain else "ood",
            label=judge.label(r["question_id"], r["answer"]),
        )
        for r in read_jsonl(out_path)
    ]
    rates = {
        f"{label}_{group}": per_question_rate([r for r in rows if r.group == group], label)
        for group in groups
        for label in ("bad", "incoherent")
    }
    return Sampled(rates=rates, samples=rows)


def per_question_rate(rows: list[LabelledAnswer], label: str) -> float:
    """Fraction of answers with `label`, per question, averaged over questions."""
    by_q: dict[str, list[bool]] = {}
    for r in rows:
        by_q.setdefault(r.question_id, []).append(r.label == label)
    return sum(sum(v) / len(v) for v in by_q.values()) / len(by_q)
