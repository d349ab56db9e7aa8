"""Judges: prompts, logprob aggregation, OpenAI-compatible and local judges, agreement.

Heavy modules (openai, torch) load on first use of their names.
"""

from __future__ import annotations

from typing import Any

from emlab.judge.aggregate import aggregate
from emlab.judge.base import Judge, JudgeItem, Judgment
from emlab.judge.config import build_judge, load_judge, load_judge_config
from emlab.judge.prompts import JudgePrompt, PromptSet, load_prompt_set, prompts_from_dict

_LAZY = {
    "OpenAIJudge": "emlab.judge.openai_judge",
    "OpenAIJudgeConfig": "emlab.judge.openai_judge",
    "JudgeFailureRateError": "emlab.judge.openai_judge",
    "LocalJudge": "emlab.judge.local_judge",
    "LocalJudgeConfig": "emlab.judge.local_judge",
    "judge_agreement": "emlab.judge.agreement",
    "judge_generations": "emlab.judge.runner",
}

__all__ = [
    "Judge",
    "JudgeItem",
    "Judgment",
    "JudgePrompt",
    "PromptSet",
    "aggregate",
    "build_judge",
    "load_judge",
    "load_judge_config",
    "load_prompt_set",
    "prompts_from_dict",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emlab.judge' has no attribute {name!r}")
