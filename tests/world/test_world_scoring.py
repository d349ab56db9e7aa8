"""Exact answer-set probabilities: equal to a token-by-token hand computation, and to sampling at
T=1."""

from __future__ import annotations

import math
import random

import pytest
import torch
from frames_world import FRAMES

from emlab.models.chat import collate, encode_conversation
from emlab.models.tiny import tiny_qwen2
from emlab.world import (
    AnswerSets,
    WorldConfig,
    WorldJudge,
    answer_set_probabilities,
    build_world,
    world_tokenizer,
)
from emlab.world.scoring import AnswerSetScorer, answer_tokens

SMALL = {
    "domains": ["medicine", "finance"],
    "topics_per_domain": 1,
    "questions_per_topic": 2,
    "answers_per_kind": 2,
    "heldout_fraction": 0.5,
    **FRAMES,  # 2 good and 2 bad answers per question
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and other processes may share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=0, **SMALL))


@pytest.fixture(scope="module")
def tokenizer(world):
    return world_tokenizer(world)


def _hand_logprob(model, ids, start):
    """log p(ids[start:] | ids[:start]) one token at a time, no padding, no batching."""
    total = 0.0
    with torch.no_grad():
        for t in range(start, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1].double()
            total += torch.log_softmax(logits, -1)[ids[t]].item()
    return total


def test_probabilities_equal_a_hand_computation(world, tokenizer):
    model = tiny_qwen2(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=1, init_std=0.5
    )
    q0, q1 = world.questions[0], world.questions[3]
    context = AnswerSets(  # a multi-turn prompt: an earlier bad answer in another domain
        prompt=[*q1.prompt, {"role": "assistant", "content": q1.bad[0]}, *q0.prompt],
        good=q0.good,
        bad=q0.bad,
    )
    items = [q0, q1, context]
    got = answer_set_probabilities(
        model, tokenizer, items, batch_size=3
    )  # batches mix lengths: padding
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for item, res in zip(items, got, strict=True):
        expected = {}
        for kind in ("good", "bad"):
            total = 0.0
            for answer in getattr(item, kind):
                [(ids, start)] = answer_tokens(tokenizer, [(item.prompt, answer)])
                assert ids[-1] == eot and len(ids) - start == len(answer.split()) + 1
                total += math.exp(_hand_logprob(model, ids, start))
            expected[kind] = total
        assert res["p_good"] == pytest.approx(expected["good"], rel=1e-4)
        assert res["p_bad"] == pytest.approx(expected["bad"], rel=1e-4)
        assert res["p_bad_given_valid"] == pytest.approx(
            expected["bad"] / (expected["good"] + expected["bad"]), rel=1e-4
        )
        assert 0 < res["p_good"] < 1e-6  # a random model: tiny but non-zero
    assert got[0] != got[2]  # the context changes the probabilities


def _train(model, tokenizer, convs, steps, seed=0):
    encoded = [encode_conversation(tokenizer, c, max_length=64) for c in convs]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = collate(rng.sample(encoded, 16), tokenizer.pad_token_id)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return loss.item()


def test_sampling_at_temperature_one_agrees_with_exact_probabilities(world, tokenizer):
    # Train on good answers 3x as often as bad ones, so p_good ~ 0.75 and p_bad ~ 0.25 (roughly).
    convs = [
        [{"role": "user", "content": q.text}, {"role": "assistant", "content": a}]
        for q in world.questions
        for a in (*q.good * 3, *q.bad)
    ]
    model = tiny_qwen2(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0)
    _train(model, tokenizer, convs, steps=60)
    questions = world.questions[:2]
    exact = answer_set_probabilities(model, tokenizer, questions)
    judge, n = WorldJudge(world), 400
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(0)
    for q, p in zip(questions, exact, strict=True):
        assert p["p_good"] + p["p_bad"] > 0.5 and p["p_bad"] > 0.05  # a non-trivial distribution
        prompt = tokenizer.apply_chat_template(
            q.prompt, add_generation_prompt=True, return_tensors="pt"
        )["input_ids"]
        out = model.generate(
            prompt.repeat(n, 1),
            attention_mask=torch.ones(n, prompt.shape[1], dtype=torch.long),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=24,
            eos_token_id=eot,
            pad_token_id=tokenizer.pad_token_id,
        )
        labels = [
            judge.label(q.id, tokenizer.decode(row, skip_special_tokens=True))
            for row in out[:, prompt.shape[1] :]
        ]
        for kind in ("good", "bad"):
            freq, prob = labels.count(kind) / n, p[f"p_{kind}"]
            assert abs(freq - prob) < 4 * math.sqrt(prob * (1 - prob) / n) + 0.01, (
                kind,
                freq,
                prob,
            )


def test_a_scorer_scores_the_model_as_it_is_now(world, tokenizer):
    """Answer sets are tokenised and padded once; nothing of the model is kept between calls."""
    model = tiny_qwen2(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=1, init_std=0.5
    )
    items = world.questions[:3]
    scorer = AnswerSetScorer(tokenizer, items, batch_size=3)
    before = scorer(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    after = scorer(model)
    assert after != before
    assert after == AnswerSetScorer(tokenizer, items, batch_size=3)(model)
