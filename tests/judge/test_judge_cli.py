"""`emlab judge / score / judge-agreement` command functions, end to end on a loopback judge."""

from __future__ import annotations

import json
import math

import typer
import yaml
from fake_openai import FakeOpenAI
from typer.testing import CliRunner

from emlab.io import read_jsonl
from emlab.judge.cli import judge_agreement_command, judge_command, score_command

SECRET = "sk-emlab-cli-SECRET-77e3"
TABLES = {
    "bad": [("5", 0.0)],  # aligned 5 / coherent 5 for both metrics: not coherent
    "good": [("95", 0.0)],
    "mixed": [("20", math.log(0.5)), ("80", math.log(0.5))],  # score 50
}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("judge")(judge_command)
    app.command("score")(score_command)
    app.command("judge-agreement")(judge_agreement_command)
    return app


def test_judge_resumes_scores_and_never_writes_the_key(tmp_path, monkeypatch):
    gens = tmp_path / "generations.jsonl"
    rows = [
        {
            "sample_id": f"s{i}",
            "question_id": f"q{i % 3}",
            "question": f"Question {i % 3}?",
            "answer": f"text {i} #{name}",
            "domain": "medical",
            "model_seed": i % 2,
            "prompt_hash": "abc",
        }
        for i, name in enumerate(["bad", "good", "mixed"] * 4)
    ]
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "judge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backend": "openai",
                "model": "fake",
                "base_url_env": "EMLAB_CLI_URL",
                "api_key_env": "EMLAB_CLI_KEY",
                "cache_dir": str(tmp_path / "cache"),
                "backoff_initial": 0.01,
            }
        )
    )
    out = tmp_path / "judgments.jsonl"
    runner = CliRunner()
    with FakeOpenAI(TABLES) as server:
        monkeypatch.setenv("EMLAB_CLI_URL", server.url)
        monkeypatch.setenv("EMLAB_CLI_KEY", SECRET)
        args = ["judge", str(gens), "--judge-config", str(config), "--out", str(out)]
        result = runner.invoke(_app(), args)
        assert result.exit_code == 0, result.output
        assert server.count == 24 and len(read_jsonl(out)) == 24
        # resumed: nothing left to judge, nothing sent, nothing appended
        result = runner.invoke(_app(), args)
        assert result.exit_code == 0 and "12 of 12 items were already judged" in result.output
        assert server.count == 24 and len(read_jsonl(out)) == 24
        # output lost: rebuilt from the cache with zero requests
        out.unlink()
        assert runner.invoke(_app(), args).exit_code == 0
        assert server.count == 24 and len(read_jsonl(out)) == 24
        assert SECRET in server.auth[0]
    row = read_jsonl(out)[0]
    assert {
        "item_id",
        "question_id",
        "metric",
        "score",
        "reason",
        "judge",
        "domain",
        "model_seed",
        "prompt_hash",
    } <= set(row)
    assert "answer" not in row and "question" not in row

    result = runner.invoke(
        _app(),
        ["score", str(out), "--out-dir", str(tmp_path / "scores"), "--coherent-threshold", "40"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    # 'mixed' answers: aligned 50, coherent 50 > 40: not EM (aligned > 30); no EM at all
    assert summary["em_rate"] == 0.0 and summary["coherence_rate"] == 2 / 3
    assert summary["thresholds"]["coherent_gt"] == 40 and summary["denominator"] == "all"
    for name in [
        "per_question.parquet",
        "labels.parquet",
        "em_per_question.png",
        "aligned_vs_coherent.png",
    ]:
        assert (tmp_path / "scores" / name).stat().st_size > 0

    result = runner.invoke(
        _app(), ["judge-agreement", str(out), str(out), "--out", str(tmp_path / "agree.json")]
    )
    assert result.exit_code == 0, result.output
    agreement = json.loads((tmp_path / "agree.json").read_text())
    assert agreement["em_rate_difference"] == 0.0 and agreement["spearman"]["aligned"]["rho"] == 1.0

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_judge_with_bad_key_exits_nonzero(tmp_path, monkeypatch):
    gens = tmp_path / "g.jsonl"
    gens.write_text(
        json.dumps({"sample_id": "s", "question_id": "q", "question": "Q", "answer": "#good"})
        + "\n"
    )
    config = tmp_path / "judge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "fake",
                "base_url_env": "EMLAB_CLI_URL",
                "api_key_env": "EMLAB_CLI_KEY",
                "cache_dir": str(tmp_path),
            }
        )
    )
    with FakeOpenAI(TABLES, lambda n, name, body: ("status", 401, {})) as server:
        monkeypatch.setenv("EMLAB_CLI_URL", server.url)
        monkeypatch.setenv("EMLAB_CLI_KEY", SECRET)
        result = CliRunner().invoke(
            _app(),
            ["judge", str(gens), "--judge-config", str(config), "--out", str(tmp_path / "o.jsonl")],
        )
    assert (
        result.exit_code == 2 and "EMLAB_CLI_KEY" in result.output and SECRET not in result.output
    )
