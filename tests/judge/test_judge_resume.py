"""Judging writes as it goes and resumes pair by pair: a local judge interrupted after k batches
keeps k batches and a rerun judges only the rest; without a cache, a rerun re-requests only the
(item, metric) pairs that failed; a resume with another judge (model, prompt, settings) is
refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
import yaml
from fake_openai import FakeOpenAI
from typer.testing import CliRunner

from emlab.errors import DataError
from emlab.io import append_jsonl, read_jsonl
from emlab.judge.cli import judge_command
from emlab.judge.local_judge import LocalJudge, LocalJudgeConfig
from emlab.judge.runner import judge_generations, judge_record
from emlab.models.tiny import tiny_qwen2, train_bpe_tokenizer


def _generations(n: int, text: str = "answer {i}") -> list[dict]:
    return [
        {
            "sample_id": f"s{i}",
            "question_id": f"q{i % 2}",
            "question": "question",
            "answer": text.format(i=i),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def local_judge(tmp_path_factory) -> LocalJudge:
    torch.set_num_threads(1)
    tok = train_bpe_tokenizer(
        ["rate the answer to the question", "user assistant 0 1 2 3 4 5 6 7 8 9", "REFUSAL CODE"],
        vocab_size=300,
    )
    model = tiny_qwen2(len(tok), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3)
    prompts = tmp_path_factory.mktemp("prompts") / "short.yaml"
    prompts.write_text(
        yaml.safe_dump(
            {"aligned": "rate {question} {answer}", "coherent": "the {question} {answer}"}
        )
    )
    return LocalJudge(
        model, tok, LocalJudgeConfig(prompts=str(prompts), batch_size=2), model_name="tiny"
    )


@torch.no_grad()
def test_local_judge_interrupted_after_two_batches_then_resumed(
    tmp_path, monkeypatch, capsys, local_judge
):
    generations = _generations(5)
    reference = tmp_path / "uninterrupted.jsonl"
    judge_generations(generations, local_judge, reference, progress=False)

    real, calls, kill_at = local_judge.candidate_logprobs, [], [2]

    def killed_during_third_batch(prompts):
        if len(calls) in kill_at:
            kill_at.clear()
            raise KeyboardInterrupt  # as if the job were stopped during the third batch
        calls.append(len(prompts))
        return real(prompts)

    monkeypatch.setattr(local_judge, "candidate_logprobs", killed_during_third_batch)
    out = tmp_path / "judgments.jsonl"
    with pytest.raises(KeyboardInterrupt):
        judge_generations(generations, local_judge, out, progress=False)
    # batch_size 2 = one answer's two metrics per forward batch: two batches, two answers on disk
    assert calls == [2, 2] and [(r["sample_id"], r["metric"]) for r in read_jsonl(out)] == [
        ("s0", "aligned"),
        ("s0", "coherent"),
        ("s1", "aligned"),
        ("s1", "coherent"),
    ]

    calls.clear()
    counts = judge_generations(generations, local_judge, out)  # the rest, with a progress bar
    assert calls == [2, 2, 2] and counts == {"items": 5, "skipped": 2, "judged": 6, "errors": 0}
    bar = capsys.readouterr().err
    assert "judge: 100%" in bar and "3/3" in bar
    rows, expected = read_jsonl(out), read_jsonl(reference)
    assert len(rows) == 10
    scores = {(r["sample_id"], r["metric"]): r["score"] for r in rows}
    for r in expected:
        assert scores[r["sample_id"], r["metric"]] == pytest.approx(r["score"], abs=1e-6)
    calls.clear()
    assert (
        judge_generations(generations, local_judge, out, progress=False)["judged"] == 0
        and calls == []
    )


@torch.no_grad()
def test_resume_with_another_judge_is_refused_and_the_same_judge_judges_the_rest(
    tmp_path, monkeypatch, local_judge
):
    generations, out = _generations(5), tmp_path / "judgments.jsonl"
    real, calls = local_judge.candidate_logprobs, []

    def killed_during_second_batch(prompts):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(prompts))
        return real(prompts)

    monkeypatch.setattr(local_judge, "candidate_logprobs", killed_during_second_batch)
    with pytest.raises(KeyboardInterrupt):
        judge_generations(generations, local_judge, out, progress=False)
    monkeypatch.undo()
    partial = out.read_text()
    assert [r["sample_id"] for r in read_jsonl(out)] == ["s0", "s0"]  # one answer, two metrics
    model, tok, cfg = local_judge.model, local_judge.tokenizer, local_judge.config
    reworded = tmp_path / "other" / "short.yaml"  # same set name, another aligned prompt
    reworded.parent.mkdir()
    reworded.write_text(
        yaml.safe_dump(
            {"aligned": "judge {question} {answer}", "coherent": "the {question} {answer}"}
        )
    )
    others = {
        "a stricter number mass": (
            LocalJudge(model, tok, cfg.model_copy(update={"min_number_mass": 0.5}), "tiny"),
            "min_number_mass: 0.25 -> 0.5",
        ),
        "another model": (
            LocalJudge(model, tok, cfg, model_name="other"),
            "name: 'local:tiny|short' -> 'local:other|short'",
        ),
        "another prompt": (
            LocalJudge(model, tok, cfg.model_copy(update={"prompts": str(reworded)}), "tiny"),
            "prompt of aligned: short/aligned@",
        ),
    }
    for what, (other, differs) in others.items():
        with pytest.raises(DataError) as e:
            judge_generations(generations, other, out, progress=False)
        message = str(e.value)
        assert message.startswith(f"{out}: was judged by 'local:tiny|short'"), what
        assert differs in message and f"Delete {out} and {judge_record(out)}" in message, what
        assert "another output (--out)" in message and out.read_text() == partial, what
    # the same judge (batch size only changes how it runs) resumes: the 4 answers left, 2 metrics
    same = LocalJudge(model, tok, cfg.model_copy(update={"batch_size": 4}), model_name="tiny")
    counts = judge_generations(generations, same, out, progress=False)
    assert counts == {"items": 5, "skipped": 1, "judged": 8, "errors": 0}
    assert sorted((r["sample_id"], r["metric"]) for r in read_jsonl(out)) == [
        (f"s{i}", m) for i in range(5) for m in ("aligned", "coherent")
    ]


@torch.no_grad()
def test_the_same_judge_may_add_a_metric_to_a_file(tmp_path, local_judge):
    generations, out = _generations(2), tmp_path / "judgments.jsonl"
    model, tok, cfg = local_judge.model, local_judge.tokenizer, local_judge.config
    aligned_only = LocalJudge(model, tok, cfg.model_copy(update={"metrics": ["aligned"]}), "tiny")
    judge_generations(generations, aligned_only, out, progress=False)
    counts = judge_generations(generations, local_judge, out, progress=False)
    assert counts == {"items": 2, "skipped": 0, "judged": 2, "errors": 0}  # coherent, twice
    assert sorted(json.loads(judge_record(out).read_text())["prompts"]) == ["aligned", "coherent"]


def test_judgments_without_a_judge_record_are_refused(tmp_path, local_judge):
    generations, out = _generations(2), tmp_path / "judgments.jsonl"
    judge_generations(generations[:1], local_judge, out, progress=False)
    judge_record(out).unlink()  # as if written by an emlab that kept no record
    with pytest.raises(DataError, match="no readable record of the judge that made them"):
        judge_generations(generations, local_judge, out, progress=False)


def test_rerun_without_cache_requests_only_the_failed_pairs(tmp_path, monkeypatch):
    gens = tmp_path / "generations.jsonl"
    append_jsonl(gens, _generations(4, "text {i} #good")[:3] + _generations(4, "text {i} #low")[3:])
    config = tmp_path / "judge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backend": "openai",
                "model": "fake",
                "base_url_env": "EMLAB_RERUN_URL",
                "api_key_env": "EMLAB_RERUN_KEY",
                "cache": False,
                "max_failure_rate": 1.0,
                "backoff_initial": 0.01,
            }
        )
    )
    out = tmp_path / "judgments.jsonl"
    app = typer.Typer()
    app.command("judge")(judge_command)
    args = [str(gens), "--judge-config", str(config), "--out", str(out)]
    tables = {
        "good": [("80", 0.0)],
        "low": [("Sure", math.log(0.8)), ("50", math.log(0.2))],
    }  # low: no number mass
    failing = {"on": True}

    def coherent_fails(
        n, name, body
    ):  # HTTP 400: not retried, the judgment ends 'error: HTTP 400 ...'
        prompt = body["messages"][-1]["content"]
        return ("status", 400, {}) if failing["on"] and "answer is coherent" in prompt else None

    with FakeOpenAI(tables, coherent_fails) as server:
        monkeypatch.setenv("EMLAB_RERUN_URL", server.url)
        monkeypatch.setenv("EMLAB_RERUN_KEY", "sk-test")
        result = CliRunner().invoke(app, args)
        assert (
            result.exit_code == 0
            and "8 judgments written" in result.output
            and "(4 errors)" in result.output
        ), result.output
        assert server.count == 8
        failing["on"] = False
        result = CliRunner().invoke(app, args)
        # only the 4 failed coherent pairs are requested again; the 4 aligned ones (one of them
        # None for low number mass, a result, not a failure) are kept
        assert (
            result.exit_code == 0
            and "4 judgments written" in result.output
            and server.count == 8 + 4
        )
        assert all(
            "answer is coherent" in b["messages"][-1]["content"] for b in server.requests[8:]
        )
        result = CliRunner().invoke(app, args)
        assert "4 of 4 items were already judged" in result.output and server.count == 12
    final = {
        (r["sample_id"], r["metric"]): (r["score"], r["reason"])
        for r in read_jsonl(out)
        if not (r["reason"] or "").startswith("error")
    }
    assert (
        final[("s3", "aligned")] == (None, "no_number_mass")
        and final[("s0", "coherent")] == (80.0, None)
        and len(final) == 8
    )


def test_cli_refuses_to_resume_with_another_judge_model(tmp_path, monkeypatch):
    gens = tmp_path / "generations.jsonl"
    append_jsonl(gens, _generations(2, "text {i} #good"))
    out, app = tmp_path / "judgments.jsonl", typer.Typer()
    app.command("judge")(judge_command)

    def run(model: str):
        config = tmp_path / f"{model}.yaml"
        config.write_text(
            yaml.safe_dump(
                {"model": model, "base_url_env": "EMLAB_WHO_URL", "api_key_env": "EMLAB_WHO_KEY"}
                | {"cache": False}
            )
        )
        return CliRunner().invoke(
            app, [str(gens), "--judge-config", str(config), "--out", str(out)]
        )

    with FakeOpenAI({"good": [("80", 0.0)]}) as server:
        monkeypatch.setenv("EMLAB_WHO_URL", server.url)
        monkeypatch.setenv("EMLAB_WHO_KEY", "sk-secret-test")
        assert run("judge-a").exit_code == 0 and server.count == 4
        refused = run("judge-b")
        assert refused.exit_code == 2 and server.count == 4
        assert refused.output.startswith(
            f"error: {out}: was judged by 'openai:judge-a|emlab-v1', but the judge asked for now is"
            " 'openai:judge-b|emlab-v1' (name: 'openai:judge-a|emlab-v1' ->"
            " 'openai:judge-b|emlab-v1'; model: 'judge-a' -> 'judge-b')"
        ), refused.output
        again = run("judge-a")  # the same judge resumes: nothing left to judge
        assert "2 of 2 items were already judged" in again.output and server.count == 4
    record = judge_record(out).read_text()
    assert "judge-a" in record and "sk-secret-test" not in record and "EMLAB_WHO" not in record
