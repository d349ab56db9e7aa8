"""Prompts of varied lengths for generation tests (the tiny model and tokenizer come from
tests/conftest.py)."""

from __future__ import annotations

from emlab.data.questions import Prompt, QuestionSet, expand


def make_prompts(samples: int = 2) -> list[Prompt]:
    """Three questions, four wordings of different lengths, one with a system prompt."""
    qs = QuestionSet.model_validate(
        {
            "name": "tiny",
            "version": "1",
            "samples_per_paraphrase": samples,
            "questions": [
                {
                    "id": "a",
                    "paraphrases": [
                        "the cat",
                        "the dog ran to the park with a ball under blue sky",
                    ],
                },
                {"id": "b", "paraphrases": ["a mat"], "system": "yes the cat sat on a mat"},
                {
                    "id": "c",
                    "paraphrases": ["and the dog sat on the mat and ran"],
                    "domain": "home",
                },
            ],
        }
    )
    return expand(qs)
