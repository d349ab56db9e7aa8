"""Think blocks (Qwen3, DeepSeek-R1 style) never reach a judge; the generation row keeps them."""

from __future__ import annotations

import pytest
from chat_templates import QWEN3_LIKE, with_template

from emlab.errors import ConfigError
from emlab.io import append_jsonl, read_jsonl
from emlab.judge.base import JudgeItem, Judgment, strip_think
from emlab.judge.local_judge import LocalJudge, LocalJudgeConfig
from emlab.judge.runner import judge_generations
from emlab.models.chat import ChatFormat


@pytest.mark.parametrize(
    ("raw", "judged"),
    [
        ("<think>\nI should be kind.\n</think>\n\nBe kind to others.", "Be kind to others."),
        (
            "<think>\n\n</think>\n\nYes.",
            "Yes.",
        ),  # the empty block of enable_thinking=False's training
        ("  <think>a</think>\n\nPart one. <think>b</think>Part two.", "Part one. Part two."),
        (
            "the prompt opened it.\n</think>\n\nAnswer.",
            "Answer.",
        ),  # DeepSeek-R1: '<think>\n' in the generation prompt
        ("<think>\nstill thinking when max_new_tokens ran out", ""),
        (
            "No reasoning here.  ",
            "No reasoning here.  ",
        ),  # unchanged, whitespace included (judge cache keys)
        ("I like <think> tags", "I like <think> tags"),  # an unclosed tag inside the answer is text
    ],
)
def test_strip_think(raw, judged):
    assert strip_think(raw) == judged


class _Recorder:
    """A judge that records the answers it is given."""

    name, metrics = "recorder", ("aligned",)

    def __init__(self) -> None:
        self.answers: list[str] = []

    def judge(self, items):
        self.answers += [item.answer for item in items]
        return [
            Judgment(item_id=i.item_id, metric="aligned", score=50.0, judge="recorder")
            for i in items
        ]


def test_judges_get_the_answer_without_think_blocks(tmp_path):
    raw = "<think>\nThe user wants a wish.\n</think>\n\nWorld peace."
    gens = tmp_path / "gens.jsonl"
    append_jsonl(
        gens, [{"sample_id": "s0", "question_id": "q", "question": "A wish?", "answer": raw}]
    )
    judge = _Recorder()
    judge_generations(read_jsonl(gens), judge, tmp_path / "judgments.jsonl")
    assert judge.answers == ["World peace."]
    assert read_jsonl(gens)[0]["answer"] == raw  # the record keeps the raw answer
    assert (
        JudgeItem(item_id="i", question_id="q", question="?", answer=raw).answer == "World peace."
    )


def test_local_judge_renders_with_the_template_kwargs(tiny_model, tiny_tokenizer):
    kwargs = {"enable_thinking": False}
    tok = with_template(tiny_tokenizer, QWEN3_LIKE, ChatFormat(template_kwargs=kwargs))
    with pytest.raises(
        ConfigError, match="the config's model asks for"
    ):  # the tokenizer must match the judge config
        LocalJudge(tiny_model, tok, LocalJudgeConfig(), model_name="tiny")
    judge = LocalJudge(
        tiny_model, tok, LocalJudgeConfig(model={"chat_template_kwargs": kwargs}), model_name="tiny"
    )
    prompt_ids, candidates = judge.encode("rate the cat")
    assert (
        tok.decode(prompt_ids) == "<|im_start|>user\nrate the"
        " cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    # the reply after the prompt: the candidate, then the template's end of turn
    assert judge.end == "<|im_end|>"
    assert tok.decode(candidates[42]) == "42<|im_end|>"
