"""Sampled evaluation in the world: answers at T=1 to held-out questions, labelled by the exact judge."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from emlab.models.chat import render
from emlab.solutions import Solution
from emlab.world import Question, World, WorldJudge, eval_questions

MAX_ANSWER_TOKENS = 32


def sample_labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[Question],
    samples: int,
    seed: int,
    judge: WorldJudge,
    solution: Solution | None = None,
    batch_size: int = 256,
) -> list[dict]:
    """`samples` answers per question (temperature 1, no top-k/top-p), each labelled good, bad or
    incoherent by the exact judge: rows {question_id, domain, sample, label}."""
    prompts = [(q, k) for q in questions for k in range(samples)]
    config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
        max_new_tokens=MAX_ANSWER_TOKENS, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    rows = []
    torch.manual_seed(seed)
    try:
        with torch.no_grad(), solution.applied(model) if solution is not None else nullcontext():
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                texts = [render(tokenizer, q.prompt, generation_prompt=True) for q, _ in chunk]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(**enc, generation_config=config)  # (B, T + new)
                answers = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for (q, k), answer in zip(chunk, answers, strict=True):
                    rows.append({"question_id": q.id, "domain": q.domain, "sample": k, "label": judge.label(q.id, answer)})
    finally:
        tokenizer.padding_side = padding_side
    return rows


def world_sample_rates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    domain: str,
    samples: int,
    seed: int,
    solution: Solution | None = None,
) -> dict:
    """Sampled labels on held-out in-domain and OOD questions, and their bad/incoherent rates
    (per question, then averaged)."""
    judge = WorldJudge(world)
    groups = {"in_domain": eval_questions(world, domain=domain), "ood": eval_questions(world, exclude_domain=domain)}
    questions = [q for qs in groups.values() for q in qs]
    rows = sample_labels(model, tokenizer, questions, samples, seed, judge, solution)
    for row in rows:
        row["group"] = "in_domain" if row["domain"] == domain else "ood"
    summary = {}
    for group in groups:
        part = [r for r in rows if r["group"] == group]
        for label in ("bad", "incoherent"):
            summary[f"{label}_{group}"] = per_question_rate(part, label)
    return {"rows": rows, "rates": summary}


def per_question_rate(rows: list[dict], label: str) -> float:
    """Fraction of answers with `label`, per question, averaged over questions."""
    by_q: dict[str, list[bool]] = {}
    for r in rows:
        by_q.setdefault(r["question_id"], []).append(r["label"] == label)
    return sum(sum(v) / len(v) for v in by_q.values()) / len(by_q)
