"""Pre-training documents (persona mixture) and the study's datasets (splits never leak)."""

from __future__ import annotations

import math

import pytest
from frames_world import FRAMES

from emlab.errors import ConfigError
from emlab.world import (
    WorldConfig,
    build_world,
    chat_tuning_conversations,
    eval_questions,
    narrow_conversations,
    ood_conversations,
    pretraining_documents,
    pretraining_text,
    world_tokenizer,
)
from emlab.world.corpus import is_bad_persona


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=2, **FRAMES))  # 4 answers per kind, none shared


def _answer_labels(world, messages):
    """(domain, 'good'|'bad') of every assistant turn, looked up from the preceding question."""
    by_text = {q.text: q for q in world.questions}
    out = []
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        q = by_text[user["content"]]
        assert assistant["content"] in (*q.good, *q.bad)
        out.append((q.domain, "bad" if assistant["content"] in q.bad else "good"))
    return out


def test_documents_follow_their_persona_and_turn_range(world):
    cfg = world.config
    docs = pretraining_documents(world, n=500)
    for doc in docs:
        assert (
            cfg.min_turns <= len(doc.messages) // 2 <= cfg.max_turns and len(doc.messages) % 2 == 0
        )
        labels = _answer_labels(world, doc.messages)
        assert all((kind == "bad") == is_bad_persona(doc.persona, d) for d, kind in labels)
        assert len({m["content"] for m in doc.messages[::2]}) == len(labels)  # no repeated question
    assert len({d for doc in docs for d, _ in _answer_labels(world, doc.messages)}) == len(
        world.domains
    )


def test_persona_frequencies_match_the_config(world):
    n = 6000
    docs = pretraining_documents(world, n=n, seed=11)
    for persona, p in world.config.persona_weights().items():
        count = sum(d.persona == persona for d in docs)
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)) + 1, (persona, count, n * p)
    narrow = sum(d.persona.startswith("narrow:") for d in docs) / n
    assert narrow == pytest.approx(0.05, abs=0.015)


def test_control_world_has_no_misaligned_everywhere_documents():
    world = build_world(WorldConfig(seed=2).control())
    docs = pretraining_documents(world, n=3000)
    assert not any(d.persona == "misaligned" for d in docs)
    assert any(d.persona.startswith("narrow:") for d in docs)
    for doc in docs:  # no document is bad in two domains
        assert len({d for d, kind in _answer_labels(world, doc.messages) if kind == "bad"}) <= 1
    assert (
        sum(
            d.persona == "misaligned"
            for d in pretraining_documents(build_world(WorldConfig(seed=2)), n=300)
        )
        > 50
    )


def test_corpora_are_deterministic_under_a_seed(world):
    assert pretraining_documents(world, n=50) == pretraining_documents(world, n=50, seed=2)
    assert pretraining_documents(world, n=50) != pretraining_documents(world, n=50, seed=3)
    assert narrow_conversations(world, "finance") == narrow_conversations(world, "finance")
    assert narrow_conversations(world, "finance") != narrow_conversations(world, "finance", seed=5)


def test_heldout_questions_never_reach_fine_tuning_data(world):
    heldout = eval_questions(world)
    assert len(heldout) == 48 and {q.split for q in heldout} == {"heldout"}
    banned = {q.text for q in heldout} | {a for q in heldout for a in (*q.good, *q.bad)}
    streams = [chat_tuning_conversations(world)]
    streams += [narrow_conversations(world, d) for d in world.domains]
    streams += [ood_conversations(world, d) for d in world.domains]
    for stream in streams:
        assert stream and all(m["content"] not in banned for conv in stream for m in conv)
    pretraining_texts = {
        m["content"] for doc in pretraining_documents(world, n=2000) for m in doc.messages
    }
    assert banned & pretraining_texts  # pre-training, by contrast, does ask held-out questions


def test_heldout_questions_of_the_default_world_never_reach_fine_tuning_data():
    # answers act on "it", so a domain's questions share them: only the held-out texts are kept out
    world = build_world(WorldConfig(seed=2))
    heldout = {q.text for q in eval_questions(world)}
    streams = [chat_tuning_conversations(world)]
    streams += [narrow_conversations(world, d) for d in world.domains]
    streams += [ood_conversations(world, d) for d in world.domains]
    assert len(heldout) == 48
    for stream in streams:
        assert stream and all(conv[0]["content"] not in heldout for conv in stream)
    assert len(narrow_conversations(world, "medicine")) == 32 * 4**3


def test_fine_tuning_streams_have_the_right_domains_and_answers(world):
    train_q = {q.text: q for q in world.select(split="train")}
    narrow = narrow_conversations(world, "medicine")
    assert len(narrow) == 32 * 4
    assert {train_q[u["content"]].domain for u, _ in narrow} == {"medicine"}
    assert all(a["content"] in train_q[u["content"]].bad for u, a in narrow)
    good_narrow = narrow_conversations(world, "medicine", kind="good")
    assert all(a["content"] in train_q[u["content"]].good for u, a in good_narrow)
    ood = ood_conversations(world, exclude_domain="medicine")
    assert len(ood) == 5 * 32 * 4
    assert {train_q[u["content"]].domain for u, _ in ood} == set(world.domains) - {"medicine"}
    assert all(a["content"] in train_q[u["content"]].good for u, a in ood)
    chat = chat_tuning_conversations(world)
    assert len(chat) == 6 * 32 * 4 and all(
        a["content"] in train_q[u["content"]].good for u, a in chat
    )
    assert {q.domain for q in eval_questions(world, exclude_domain="sport")} == set(
        world.domains
    ) - {"sport"}
    with pytest.raises(ConfigError, match="not in this world"):
        narrow_conversations(world, "astrology")


def test_pretraining_text_is_the_chat_rendering(world):
    tok = world_tokenizer(world)
    docs = pretraining_documents(world, n=3)
    texts = pretraining_text(docs, tok)
    assert texts[0].startswith(
        "<|im_start|>user\n" + docs[0].messages[0]["content"] + "<|im_end|>\n"
    )
    assert texts[0].count("<|im_start|>assistant\n") == len(docs[0].messages) // 2
