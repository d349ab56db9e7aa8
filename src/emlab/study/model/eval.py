"""Evaluation of a real model (with or without a solution): answers to the question sets,
judged by an LLM judge, and EM rates with CIs computed from the judgment files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.data.questions import Prompt
from emlab.generate import SamplingConfig, generate_hf
from emlab.io import read_jsonl
from emlab.judge.base import Judge
from emlab.judge.runner import judge_generations, read_generations
from emlab.metrics import MetricsConfig, compute_metrics
from emlab.solutions import Solution
from emlab.study.common.results import rate_block, rate_summary
from emlab.study.common.stages import StageResult

GROUPS = {"in_domain": "in_domain", "general": "ood"}
"""Question groups and their results.json prefix (general questions are the 'ood' rate, as in the
world study)."""


class Answers(StageResult):
    """Sampled answers per question group: the path of each group's generations.jsonl."""

    generations: dict[str, str]


class JudgedGroup(BaseModel):
    """One group's answers and judgments (paths) and the judge's counts (items, skipped, judged,
    errors)."""

    generations: str
    judgments: str
    counts: dict[str, int]


class Judged(StageResult):
    """Judged answers per question group ('in_domain', 'general')."""

    groups: dict[str, JudgedGroup]


def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: dict[str, list[Prompt]],
    folder: Path,
    sampling: SamplingConfig,
    solution: Solution | None = None,
    model_hash: str = "",
    progress: bool = False,
) -> Answers:
    """Per group: sample answers into `folder/<group>/generations.jsonl` (resumable; a progress
    bar on stderr when `progress`)."""
    out = {}
    for group, group_prompts in prompts.items():
        generations = folder / group / "generations.jsonl"
        generate_hf(
            model,
            tokenizer,
            group_prompts,
            generations,
            sampling,
            solution=solution,
            model_hash=model_hash,
            progress=progress,
        )
        out[group] = str(generations)
    return Answers(generations=out)


def judge_answers(answers: Answers, judge: Judge, folder: Path, progress: bool = False) -> Judged:
    """Per group: judge the answers into `folder/<group>/judgments.jsonl` (resumable; a progress
    bar on stderr when `progress`)."""
    out = {}
    for group, generations in answers.generations.items():
        judgments = folder / group / "judgments.jsonl"
        counts = judge_generations(
            read_generations(generations), judge, judgments, progress=progress
        )
        out[group] = JudgedGroup(generations=generations, judgments=str(judgments), counts=counts)
    return Judged(groups=out)


def judgment_frame(runs: list[tuple[int | None, str]]) -> pd.DataFrame:
    """The judgment rows of (seed, judgments.jsonl) pairs as one table; item ids are made
    unique across seeds and the seed goes in `model_seed` (no column when the seed is None)."""
    rows = []
    for seed, path in runs:
        for r in read_jsonl(path):
            rows.append(
                {**r, "item_id": f"{seed}/{r['item_id']}"}
                | ({"model_seed": seed} if seed is not None else {})
            )
    return pd.DataFrame(rows)


def group_rates(runs: list[tuple[int | None, Judged]], metrics: MetricsConfig) -> dict:
    """results.json block of one condition: `in_domain_rate` and `ood_rate` (general questions)
    with 95% CIs (over seeds, or over samples with one seed), incoherence and answer counts.

    The in-domain rate is the domain metric's rate when `metrics.domain_metric` is set (bad per
    that metric and coherent), else the EM rate; the general rate is always the EM rate."""
    metrics = metrics.model_copy(update={"seed_column": "model_seed"})
    out: dict = {}
    for group, prefix in GROUPS.items():
        frame = judgment_frame([(seed, judged.groups[group].judgments) for seed, judged in runs])
        summary = compute_metrics(frame, metrics).summary
        name = "domain_rate" if group == "in_domain" and metrics.domain_metric else "em_rate"
        out |= rate_block(prefix, rate_summary(summary, name))
        out[f"{prefix}_n_answers"] = summary["n_answers"]
        out[f"{prefix}_n_judge_errors"] = summary["n_excluded_errors"]
    out["n_seeds"] = len(runs)
    return out
