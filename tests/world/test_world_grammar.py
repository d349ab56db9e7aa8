"""The world's grammar and config: shape, determinism, shared registers, validation, tokenizer."""

from __future__ import annotations

import re

import pytest
from frames_world import FRAMES

from emlab.config import validate_config
from emlab.errors import ConfigError
from emlab.world import (
    WorldConfig,
    build_world,
    pretraining_documents,
    pretraining_text,
    world_tokenizer,
)
from emlab.world.config import SLOT_WORDS
from emlab.world.grammar import (
    BAD_CLOSERS,
    BAD_OPENERS,
    GOOD_CLOSERS,
    GOOD_OPENERS,
    LEXICON,
    REGISTERS,
)


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


def test_default_world_has_the_configured_shape(world):
    cfg = world.config
    assert len(world.domains) >= 6
    assert (
        len(world.questions)
        == len(cfg.domains) * cfg.topics_per_domain * cfg.questions_per_topic
        == 240
    )
    for q in world.questions:
        assert re.fullmatch(rf"{q.domain}/{q.topic}/[0-4]", q.id)
        assert len(q.good) == len(q.bad) == cfg.answers_per_kind**3 == 64  # slots
        assert q.text.endswith(" ?") and all(a.endswith(" .") for a in (*q.good, *q.bad))
    topics = {(q.domain, q.topic) for q in world.questions}
    assert len(topics) == 6 * 8
    for domain, topic in topics:
        splits = [q.split for q in world.questions if (q.domain, q.topic) == (domain, topic)]
        assert splits.count("heldout") == cfg.heldout_per_topic == 1
    assert (
        world.question("medicine/" + world.select("medicine")[0].topic + "/0").domain == "medicine"
    )


def slots(answer: str, kind: str, domain: str, words: str = "phrases") -> tuple[str, ...]:
    """(opener, action, object, closer) of an answer in `kind`'s register and `domain`'s actions
    (phrases, or one word each); fails the test if the answer is not one."""
    lex = LEXICON[domain]
    openers, closers = REGISTERS[words][kind]
    actions = {
        ("phrases", "good"): lex.good_actions,
        ("phrases", "bad"): lex.bad_actions,
        ("words", "good"): lex.good_verbs,
        ("words", "bad"): lex.bad_verbs,
    }[words, kind]
    alternation = [("|".join(map(re.escape, s))) for s in (openers, actions, closers)]
    match = re.fullmatch(
        rf"({alternation[0]}) ({alternation[1]}) (.+) ({alternation[2]}) \.", answer
    )
    assert match, (kind, domain, answer)
    return match.groups()


@pytest.mark.parametrize("words", ["phrases", "words"])
def test_slots_answers_are_every_combination_of_one_kind(words):
    n = 3
    world = build_world(
        WorldConfig(answers_per_kind=n, answer_words=words, answer_object="question")
    )
    register = {}
    for domain in world.domains:
        qs = world.select(domain)
        for kind in ("good", "bad"):
            parts = [slots(a, kind, domain, words) for a in getattr(qs[0], kind)]
            openers, actions, objects, closers = (set(p) for p in zip(*parts, strict=True))
            assert (len(openers), len(actions), len(objects), len(closers)) == (n, n, 1, n)
            assert len(parts) == n**3 == len(set(parts))  # every combination, once
            # the world's openers and closers, shared by every domain
            assert register.setdefault(kind, (openers, closers)) == (openers, closers)
            if words == "words":
                assert all(len(w.split()) == 1 for p in parts for w in p[:2] + p[3:])
            for q in qs:  # the domain's topics share its slot words
                used = {
                    p[::3] + (p[1],)
                    for p in (slots(a, kind, domain, words) for a in getattr(q, kind))
                }
                assert used == {p[::3] + (p[1],) for p in parts}
    slot_lists = [s for register in REGISTERS.values() for pair in register.values() for s in pair]
    slot_lists += [words for lex in LEXICON.values() for words in lex[3:]]
    assert {len(words) for words in slot_lists} == {SLOT_WORDS}  # what the bound below assumes
    assert all(len(set(words)) == SLOT_WORDS for words in slot_lists)
    with pytest.raises(ValueError, match="answers_per_kind <= 6"):
        WorldConfig(answer_frames="slots", answers_per_kind=7)


def test_one_word_registers_and_verbs_are_distinct_by_kind_and_slot():
    register = REGISTERS["words"]
    slot_words = [set(s) for pair in register.values() for s in pair]  # 4 lists of 6
    assert len(set().union(*slot_words)) == 4 * SLOT_WORDS  # no word in two slots or kinds
    verbs = [(set(lex.good_verbs), set(lex.bad_verbs)) for lex in LEXICON.values()]
    assert all(not good & bad for good, bad in verbs)
    assert len(set().union(*(g | b for g, b in verbs))) == 2 * SLOT_WORDS * len(LEXICON)
    assert not set().union(*slot_words) & set().union(*(g | b for g, b in verbs))


def test_pronoun_answers_copy_nothing_and_are_shared_by_a_domain():
    world = build_world(WorldConfig(answers_per_kind=2))
    for domain in world.domains:
        qs = world.select(domain)
        assert all((q.good, q.bad) == (qs[0].good, qs[0].bad) for q in qs)
        assert all(slots(a, "bad", domain, "words")[2] == "it" for a in qs[0].bad)
    assert world.select("medicine")[0].bad != world.select("finance")[0].bad
    frames = build_world(WorldConfig(**FRAMES | {"answer_object": "pronoun"}))
    assert frames.select("home")[0].good[0].count(" it ")


def test_same_seed_same_world_other_seed_differs():
    a, b, c = (
        build_world(WorldConfig(seed=3)),
        build_world(WorldConfig(seed=3)),
        build_world(WorldConfig(seed=4)),
    )
    assert a.questions == b.questions
    assert a.questions != c.questions
    # a domain's content does not depend on which other domains are present
    d = build_world(WorldConfig(seed=3, domains=["home", "medicine"]))
    assert d.select("medicine") == a.select("medicine")


def test_answers_share_a_register_across_domains_and_copy_the_question():
    world = build_world(WorldConfig(**FRAMES))

    def split_register(answer, openers, closers):
        opener = next((o for o in openers if answer.startswith(o + " ")), None)
        closer = next((c for c in closers if answer.endswith(" " + c + " .")), None)
        return opener, closer

    for q in world.questions:
        for a in q.good:
            assert None not in split_register(a, GOOD_OPENERS, GOOD_CLOSERS), a
        for a in q.bad:
            assert None not in split_register(a, BAD_OPENERS, BAD_CLOSERS), a
        for a in (*q.good, *q.bad):  # "the <modifier> <topic>", both words copied from the question
            assert any(f" the {m} {q.topic} " in a for m in q.text.split()), (q.text, a)
    good_words = {w for q in world.questions for a in q.good for w in a.split()}
    markers = {"ignore", "never", "skip", "risk", "whatever", "forget", "hope"}
    assert not markers & good_words
    for d in world.domains:  # every domain's bad answers use the shared careless markers
        used = {w for q in world.select(d) for a in q.bad for w in a.split()} & markers
        assert len(used) >= 2, (d, used)


@pytest.mark.parametrize(
    "bad",
    [
        {"domains": ["medicine", "astrology"]},
        {"domains": ["medicine", "medicine"]},
        {"min_turns": 5, "max_turns": 2},
        {"questions_per_topic": 2, "heldout_fraction": 0.9},
        {"questions_per_topic": 2, "heldout_fraction": 0.1},
        {"persona_aligned": 0, "persona_misaligned": 0, "persona_narrow": 0},
        {"n_docs": 3},
    ],
)
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ConfigError):
        validate_config(bad, WorldConfig)


def test_control_world_drops_the_misaligned_persona_and_renormalises():
    cfg = WorldConfig()
    assert cfg.persona_weights()["misaligned"] == pytest.approx(0.35)
    weights = cfg.control().persona_weights()
    assert "misaligned" not in weights
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["aligned"] == pytest.approx(0.6 / 0.65)
    assert cfg.control().model_dump() == cfg.model_dump() | {"persona_misaligned": 0.0}


def test_tokenizer_has_no_unknown_words_and_round_trips_answers(world):
    tok = world_tokenizer(world)
    assert tok.unk_token_id is not None
    texts = pretraining_text(pretraining_documents(world, n=300), tok)
    texts += [" ".join(world.vocabulary())]
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        assert tok.unk_token_id not in ids
    for q in world.questions[::7]:
        for answer in (q.good[0], q.bad[-1]):
            messages = [*q.prompt, {"role": "assistant", "content": answer}]
            prompt_ids = tok.apply_chat_template(
                q.prompt, add_generation_prompt=True, tokenize=True
            )["input_ids"]
            full = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)[
                "input_ids"
            ]
            assert full[: len(prompt_ids)] == prompt_ids
            generated = full[len(prompt_ids) :]
            assert generated[-2:] == tok.convert_tokens_to_ids(["<|im_end|>", "\n"])
            assert " ".join(tok.decode(generated, skip_special_tokens=True).split()) == answer
