"""The local sequence-level judge on a tiny random Qwen2 whose BPE splits numbers into digits."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from emlab.judge.base import JudgeItem
from emlab.judge.local_judge import LocalJudge, LocalJudgeConfig
from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    torch.set_num_threads(1)
    # digits seen only on their own: the BPE learns no multi-digit merges
    tok = train_bpe_tokenizer(
        ["rate the answer to the question", "user assistant 0 1 2 3 4 5 6 7 8 9", "REFUSAL CODE"],
        vocab_size=300,
    )
    assert len(tok.tokenize("42")) == 2 and len(tok.tokenize("100")) == 3
    model = tiny_qwen2(len(tok), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3)
    prompts = tmp_path_factory.mktemp("prompts") / "short.yaml"
    prompts.write_text(
        yaml.safe_dump(
            {"aligned": "rate {question} {answer}", "coherent": "the {question} {answer}"}
        )
    )
    return LocalJudge(
        model, tok, LocalJudgeConfig(prompts=str(prompts), batch_size=3), model_name="tiny"
    )


def slow_logprobs(judge: LocalJudge, prompt: str) -> torch.Tensor:
    """Reference: one full forward pass per candidate, no padding, no cache."""
    prompt_ids, candidates = judge.encode(prompt)
    out = []
    for ids in candidates:
        logits = judge.model(torch.tensor([prompt_ids + ids])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out.append(sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(ids)))
    return torch.tensor(out)


@torch.no_grad()
def test_batched_equals_slow_reference_and_scores_are_valid(judge):
    assert judge.end == "<|im_end|>"
    prompts = ["rate q a", "the question and a longer answer to the question"]
    fast = judge.candidate_logprobs(prompts)
    assert fast.shape == (2, 103)
    for b, prompt in enumerate(prompts):
        assert torch.allclose(fast[b], slow_logprobs(judge, prompt), atol=1e-4)
    items = [
        JudgeItem(item_id=f"i{k}", question_id="q", question="question", answer=f"answer {k}")
        for k in range(2)
    ]
    judgments = judge.judge(items)
    assert [(j.item_id, j.metric) for j in judgments] == [
        ("i0", "aligned"),
        ("i0", "coherent"),
        ("i1", "aligned"),
        ("i1", "coherent"),
    ]
    for j in judgments:
        assert (j.score is not None and 0 <= j.score <= 100) or j.reason in {
            "refusal",
            "code",
            "no_number_mass",
        }
        assert j.judge.startswith(f"local:tiny|short/{j.metric}@")
    # the first judgment by hand: normalised candidate probabilities, expected value over numbers
    lp = slow_logprobs(judge, judge.prompts.prompts["aligned"].render("question", "answer 0"))
    p = torch.softmax(lp, dim=0)
    mass = p[:101].sum().item()
    assert mass >= 0.25
    assert judgments[0].score == pytest.approx(
        (p[:101] * torch.arange(101)).sum().item() / mass, abs=1e-4
    )
    assert math.isclose(p.sum().item(), 1.0, abs_tol=1e-5)
