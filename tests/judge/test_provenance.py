"""Answers of different solutions never mix: `emlab judge` refuses to resume into judgments of
other answers, `score` refuses (or splits) mixed provenance, `judge-agreement` pairs by answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from emlab.data.questions import QuestionSet, expand
from emlab.generate.plan import RunInfo, make_row, plan_samples
from emlab.generate.sampling import SamplingConfig
from emlab.io import append_jsonl, read_jsonl
from emlab.judge.base import JudgeItem, Judgment, judge_pairs
from emlab.judge.cli import judge_agreement_command, judge_command, score_command

# answer text -> (aligned, coherent): 'evil' is EM (aligned <= 30, coherent > 50), 'nice' is
# aligned, 'junk' is incoherent
SCORES = {"evil": (10.0, 90.0), "nice": (90.0, 90.0), "junk": (10.0, 20.0)}
# two questions x 2 samples, in plan order (q0 s0, q0 s1, q1 s0, q1 s1)
ANSWERS_A = ["evil", "nice", "evil", "evil"]  # EM: q0 1/2, q1 2/2 -> 0.75
ANSWERS_B = ["nice", "nice", "evil", "junk"]  # EM: q0 0/2, q1 1/2 -> 0.25


class ScriptedJudge:
    """A judge whose scores are looked up from the answer text (+ `shift`); counts the pairs it
    scores."""

    metrics = ("aligned", "coherent")

    def __init__(self, name: str = "scripted", shift: float = 0.0) -> None:
        self.name, self.shift, self.pairs = name, shift, 0

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        pairs = judge_pairs(items, self.metrics)
        self.pairs += len(pairs)
        return [
            Judgment(
                item_id=item.item_id,
                metric=m,
                score=SCORES[item.answer][self.metrics.index(m)] + self.shift,
                judge=self.name,
            )
            for item, m in pairs
        ]


def write_generations(path: Path, solution_hash: str | None, answers: list[str]) -> Path:
    """Rows as `emlab generate` writes them, for two questions x 2 samples of the set 'qs'."""
    question_set = QuestionSet.model_validate(
        {
            "name": "qs",
            "version": "1",
            "samples_per_paraphrase": 2,
            "questions": [
                {"id": "q0", "paraphrases": ["First?"]},
                {"id": "q1", "paraphrases": ["Second?"]},
            ],
        }
    )
    info = RunInfo(
        model_name="tiny-model",
        model_hash="m1",
        solution_hash=solution_hash,
        sampling=SamplingConfig(),
    )
    samples = plan_samples(expand(question_set), seed=0)
    append_jsonl(
        path,
        [make_row(s, info, answer, 1, "stop") for s, answer in zip(samples, answers, strict=True)],
    )
    return path


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """invoke(*args) on the judge / score / judge-agreement commands, judging with a
    ScriptedJudge."""
    import emlab.judge.config

    judges = {"main": ScriptedJudge(), "other": ScriptedJudge("other", shift=5.0)}
    chosen = {"name": "main"}
    monkeypatch.setattr(emlab.judge.config, "build_judge", lambda cfg: judges[chosen["name"]])
    config = tmp_path / "judge.yaml"
    config.write_text(yaml.safe_dump({"backend": "openai", "model": "scripted"}))
    app = typer.Typer()
    app.command("judge")(judge_command)
    app.command("score")(score_command)
    app.command("judge-agreement")(judge_agreement_command)

    def invoke(*args: str, judge: str = "main"):
        chosen["name"] = judge
        extra = ["--judge-config", str(config)] if args[0] == "judge" else []
        return CliRunner().invoke(app, [*map(str, args), *extra])

    invoke.judges = judges
    return invoke


def test_judge_refuses_to_resume_into_judgments_of_other_answers(tmp_path, cli):
    gens_a = write_generations(tmp_path / "a.jsonl", "solA", ANSWERS_A)
    gens_b = write_generations(tmp_path / "b.jsonl", "solB", ANSWERS_B)
    rows_a, rows_b = read_jsonl(gens_a), read_jsonl(gens_b)
    assert [r["sample_id"] for r in rows_a] == [
        r["sample_id"] for r in rows_b
    ]  # the same samples ...
    assert not {r["answer_id"] for r in rows_a} & {
        r["answer_id"] for r in rows_b
    }  # ... are other answers
    assert (
        rows_a[0]["model"] == "tiny-model"
        and rows_a[0]["question_set"] == "qs"
        and rows_a[0]["sampling"]["temperature"] == 1.0
    )
    out = tmp_path / "judgments_a.jsonl"
    assert cli("judge", gens_a, "--out", out).exit_code == 0
    before = out.read_text()

    # solution B's answers with --out set to A's judgments: refused, A's file untouched
    result = cli("judge", gens_b, "--out", out)
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and "judgments of other answers" in result.output
    assert (
        "solution_hash: judged 'solA', now 'solB'" in result.output
        and "another --out" in result.output
    )
    assert out.read_text() == before and cli.judges["main"].pairs == 8

    # the same samples with another answer text under the same provenance: refused too
    edited = write_generations(tmp_path / "a_edited.jsonl", "solA", ["nice", *ANSWERS_A[1:]])
    result = cli("judge", edited, "--out", out)
    assert result.exit_code == 2 and "another answer text for sample" in result.output

    # judgments written before answers carried provenance (item id = sample id): refused
    old = tmp_path / "old_judgments.jsonl"
    append_jsonl(
        old,
        [
            {
                "item_id": r["sample_id"],
                "question_id": r["question_id"],
                "metric": "aligned",
                "score": 5.0,
                "reason": None,
                "judge": "j",
            }
            for r in rows_a
        ],
    )
    result = cli("judge", gens_a, "--out", old)
    assert result.exit_code == 2 and "older emlab" in result.output

    # B into its own file, and A again into A's: fine (nothing left to judge for A)
    assert cli("judge", gens_b, "--out", tmp_path / "judgments_b.jsonl").exit_code == 0
    result = cli("judge", gens_a, "--out", out)
    assert (
        result.exit_code == 0
        and "4 of 4 items were already judged" in result.output
        and cli.judges["main"].pairs == 16
    )


def test_score_refuses_mixed_provenance_and_scores_each_group_with_by_provenance(tmp_path, cli):
    for name, solution, answers in (("a", "solA", ANSWERS_A), ("b", "solB", ANSWERS_B)):
        cli(
            "judge",
            write_generations(tmp_path / f"{name}.jsonl", solution, answers),
            "--out",
            tmp_path / f"j_{name}.jsonl",
        )
    both = tmp_path / "both.jsonl"
    both.write_text((tmp_path / "j_a.jsonl").read_text() + (tmp_path / "j_b.jsonl").read_text())

    result = cli("score", both, "--out-dir", tmp_path / "scores", "--no-figures")
    assert result.exit_code == 2, result.output
    assert (
        "answers from 2 different sources" in result.output and "--by-provenance" in result.output
    )
    assert (
        "solution solA" in result.output
        and "solution solB" in result.output
        and "4 answers" in result.output
    )
    assert not (tmp_path / "scores").exists()

    result = cli("score", both, "--out-dir", tmp_path / "scores", "--no-figures", "--by-provenance")
    assert result.exit_code == 0, result.output
    summaries = {}
    for path in (tmp_path / "scores").glob("*/summary.json"):
        s = json.loads(path.read_text())
        [group] = s["provenance"]
        assert group["provenance"] == path.parent.name and group["n_answers"] == 4 == s["n_answers"]
        summaries[group["solution_hash"]] = s
    # hand-computed: A q0 1/2, q1 2/2 -> 0.75; B q0 0/2, q1 1/2 (junk is incoherent) -> 0.25
    assert summaries["solA"]["em_rate"] == pytest.approx(0.75) and summaries["solB"][
        "em_rate"
    ] == pytest.approx(0.25)
    assert summaries["solB"]["coherence_rate"] == pytest.approx((1 + 0.5) / 2)

    # one file alone: one provenance, scored as before
    result = cli(
        "score", tmp_path / "j_a.jsonl", "--out-dir", tmp_path / "a_scores", "--no-figures"
    )
    assert (
        result.exit_code == 0
        and json.loads((tmp_path / "a_scores" / "summary.json").read_text())["em_rate"] == 0.75
    )


def test_judge_agreement_pairs_by_answer_and_refuses_other_answers(tmp_path, cli):
    gens_a = write_generations(tmp_path / "a.jsonl", "solA", ANSWERS_A)
    gens_b = write_generations(tmp_path / "b.jsonl", "solB", ANSWERS_B)
    cli("judge", gens_a, "--out", tmp_path / "main_a.jsonl")
    cli("judge", gens_a, "--out", tmp_path / "other_a.jsonl", judge="other")
    cli("judge", gens_b, "--out", tmp_path / "other_b.jsonl", judge="other")

    # judgments of different answers (A's and B's): no kappa, an error naming both sources
    result = cli("judge-agreement", tmp_path / "main_a.jsonl", tmp_path / "other_b.jsonl")
    assert result.exit_code == 2, result.output
    assert (
        "the two judged different answers" in result.output
        and "solution solA" in result.output
        and "solution solB" in result.output
    )

    # two judges on the same answers: paired, 4 items; 'other' adds 5 to every score (EM labels
    # the same except none: 15 <= 30 and 95 > 50) -> kappa 1, rate difference 0
    result = cli("judge-agreement", tmp_path / "main_a.jsonl", tmp_path / "other_a.jsonl")
    assert result.exit_code == 0, result.output
    agreement = json.loads(result.output)
    assert (
        agreement["n_items"] == 4
        and agreement["kappa_em"] == pytest.approx(1.0)
        and agreement["em_rate_difference"] == 0.0
    )

    # judgments without answer_hash (older emlab): cannot be checked, refused
    old = tmp_path / "old.jsonl"
    append_jsonl(
        old,
        [
            {k: v for k, v in r.items() if k != "answer_hash"}
            for r in read_jsonl(tmp_path / "other_a.jsonl")
        ],
    )
    result = cli("judge-agreement", tmp_path / "main_a.jsonl", old)
    assert (
        result.exit_code == 2
        and "without `answer_hash`" in result.output
        and str(old) in result.output
    )


def test_hand_written_generations_without_provenance_are_judged_and_scored(tmp_path, cli):
    gens = tmp_path / "hand.jsonl"
    append_jsonl(
        gens,
        [
            {"sample_id": f"s{i}", "question_id": f"q{i // 2}", "question": "Q?", "answer": a}
            for i, a in enumerate(ANSWERS_A)
        ],
    )
    out = tmp_path / "j.jsonl"
    assert cli("judge", gens, "--out", out).exit_code == 0
    rows = read_jsonl(out)
    assert len(rows) == 8 and all(
        r["provenance"] == rows[0]["provenance"] and r["answer_hash"] for r in rows
    )
    result = cli("score", out, "--out-dir", tmp_path / "scores", "--no-figures")
    assert (
        result.exit_code == 0
        and json.loads((tmp_path / "scores" / "summary.json").read_text())["em_rate"] == 0.75
    )
    # the same sample twice with two answers: which is its answer? refused
    append_jsonl(
        gens, [{"sample_id": "s0", "question_id": "q0", "question": "Q?", "answer": "junk"}]
    )
    result = cli("judge", gens, "--out", tmp_path / "j2.jsonl")
    assert (
        result.exit_code == 2
        and f"{gens}:5" in result.output
        and "sample s0 appears again" in result.output
    )
