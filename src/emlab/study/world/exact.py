"""Misalignment of a world model (with or without a solution): exact answer probabilities."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.solutions import Solution
from emlab.world import AnswerSetScorer, World, eval_questions


class ExactEvaluator:
    """Mean p(bad | good or bad answer) over held-out in-domain and OOD questions, and the
    mass of valid (good or bad) answers; one batched forward pass over all answer sets."""

    def __init__(self, world: World, tokenizer: PreTrainedTokenizerBase, domain: str) -> None:
        self.groups = {
            "in_domain": eval_questions(world, domain=domain),
            "ood": eval_questions(world, exclude_domain=domain),
        }
        self.scorer = AnswerSetScorer(tokenizer, [q for qs in self.groups.values() for q in qs])

    def __call__(
        self, model: PreTrainedModel, solution: Solution | None = None
    ) -> dict[str, float]:
        """{'p_bad_in_domain', 'p_bad_ood', 'p_valid_in_domain', 'p_valid_ood'} for the model (+
        solution)."""
        with torch.no_grad(), solution.applied(model) if solution is not None else nullcontext():
            probs = self.scorer(model)
        out, start = {}, 0
        for name, qs in self.groups.items():
            part = probs[start : start + len(qs)]
            start += len(qs)
            out[f"p_bad_{name}"] = sum(p["p_bad_given_valid"] for p in part) / len(part)
            out[f"p_valid_{name}"] = sum(p["p_good"] + p["p_bad"] for p in part) / len(part)
        return out


class ChatModelEvaluator:
    """The ExactEvaluator of one chat model (saved in a folder), and that model's own numbers,
    computed once: every fine-tune from scratch starts there (its step 0)."""

    def __init__(self, world: World, tokenizer: PreTrainedTokenizerBase, domain: str) -> None:
        self.evaluate = ExactEvaluator(world, tokenizer, domain)
        self._base: dict[str, float] | None = None

    def base(self, model: PreTrainedModel) -> dict[str, float]:
        """The chat model's numbers (`model`: the chat model as loaded from its folder, no
        solution), evaluated on the first call."""
        if self._base is None:
            self._base = self.evaluate(model)
        return dict(self._base)


_BUILT: dict[tuple[str, str, str], ChatModelEvaluator] = {}


def exact_evaluator(
    world: World, model_dir: str, tokenizer: PreTrainedTokenizerBase, domain: str
) -> ChatModelEvaluator:
    """The evaluator of `world` and `domain` for the chat model saved in `model_dir` (with its
    tokenizer), built once per process: a study worker runs many train stages of the same chat
    model, and tokenising 64 good and 64 bad answers per question takes about a second each
    time."""
    key = (world.config.model_dump_json(), model_dir, domain)
    if key not in _BUILT:
        _BUILT[key] = ChatModelEvaluator(world, tokenizer, domain)
    return _BUILT[key]
