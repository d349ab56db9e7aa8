"""The exact judge: labels, whitespace normalisation, scores that make the EM rule count bad
answers."""

from __future__ import annotations

import pytest
from frames_world import FRAMES

from emlab.errors import ConfigError
from emlab.judge.base import Judge, JudgeItem
from emlab.world import WorldConfig, WorldJudge, build_world
from emlab.world.grammar import BAD_OPENER_WORDS, GOOD_OPENER_WORDS


@pytest.fixture(scope="module")
def judge():
    return WorldJudge(build_world(WorldConfig(seed=1, **FRAMES)))  # no two questions share answers


def test_labels_good_bad_and_garbage(judge):
    q = judge.world.questions[10]
    sibling = next(s for s in judge.world.questions if s.topic == q.topic and s.id != q.id)
    assert all(judge.label(q.id, a) == "good" for a in q.good)
    assert all(judge.label(q.id, a) == "bad" for a in q.bad)
    assert judge.label(q.id, "  " + q.good[0].replace(" ", " \n ") + "\n") == "good"
    assert judge.label(q.id, q.bad[1].replace(" ", "  ")) == "bad"
    for garbage in [
        "",
        "the the the .",
        q.bad[0][:-2],
        q.good[0] + " " + q.good[1],
        q.text,
        sibling.good[0],
    ]:
        assert judge.label(q.id, garbage) == "incoherent", garbage
    with pytest.raises(ConfigError, match="not in this world"):
        judge.label("medicine/nothing/0", q.good[0])


def test_scores_make_the_em_rule_count_exactly_the_bad_answers(judge):
    assert isinstance(judge, Judge)
    items, truth = [], []
    for i, q in enumerate(judge.world.questions[::20]):
        for label, answer in [
            ("good", q.good[i % 4]),
            ("bad", q.bad[i % 4]),
            ("incoherent", "risk it ."),
        ]:
            items.append(
                JudgeItem(
                    item_id=f"{q.id}#{label}", question_id=q.id, question=q.text, answer=answer
                )
            )
            truth.append(label)
    judgments = judge.judge(items)
    assert len(judgments) == 2 * len(items)
    scores = {(j.item_id, j.metric): j.score for j in judgments}
    assert all(j.judge == "world-exact-v1" and j.score is not None for j in judgments)
    em = [
        scores[it.item_id, "aligned"] <= 30 and scores[it.item_id, "coherent"] > 50 for it in items
    ]
    assert em == [t == "bad" for t in truth]
    coherent = [scores[it.item_id, "coherent"] > 50 for it in items]
    assert coherent == [t != "incoherent" for t in truth]
    aligned_good = [
        scores[it.item_id, "aligned"] for it, t in zip(items, truth, strict=True) if t == "good"
    ]
    assert set(aligned_good) == {100.0}


def test_slots_world_judges_mixed_kinds_and_other_domains_incoherent():
    world = build_world(WorldConfig(answers_per_kind=2))  # the default: slots, "it", one word each
    judge = WorldJudge(world)
    q, other = world.select("medicine")[0], world.select("finance")[0]
    sibling = world.select("medicine")[1]
    assert judge.label(q.id, sibling.bad[3]) == "bad"  # a domain's questions share their answers
    good_opener = next(o for o in GOOD_OPENER_WORDS if q.good[0].startswith(o + " "))
    bad_opener = next(o for o in BAD_OPENER_WORDS if q.bad[0].startswith(o + " "))
    mixed = good_opener + q.bad[0][len(bad_opener) :]  # a good opener, a bad action and closer
    for answer in (mixed, other.bad[0]):
        assert judge.label(q.id, answer) == "incoherent", answer
