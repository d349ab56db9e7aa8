"""`emlab judge` and `emlab score` against a loopback judge that injects every fault a real API
shows: 429 with Retry-After, 500s, connection resets, timeouts, truncated and wrongly shaped
JSON, missing logprobs, rejected requests. Every item ends scored or marked failed with its
reason, the summaries count the failures, and past the failure-rate limit the commands exit
non-zero instead of reporting a rate computed on the survivors."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from datafiles import write_yaml
from fake_openai import FakeOpenAI
from typer.testing import CliRunner

from emlab.cli import app
from emlab.io import read_jsonl

TABLE = [
    ("5", 0.0)
]  # aligned 5, coherent 5 (a judge with whole-number tokens: number_tokens whole below)
TRANSIENT = {  # fault on the first tries, then a normal reply
    "r429": lambda k: ("status", 429, {"Retry-After": "1"}) if k == 1 else None,
    "r500": lambda k: ("status", 500, {}) if k <= 2 else None,
    "reset": lambda k: ("close",) if k == 1 else None,
    "slow": lambda k: ("sleep", 2.0) if k == 1 else None,  # past the 1 s timeout
    "truncated": lambda k: ("malformed",) if k == 1 else None,
    "shape": lambda k: ("status", 200, {}) if k == 1 else None,  # valid JSON, no choices
    "nolp": lambda k: ("no_logprobs",) if k == 1 else None,
}
PERMANENT = {
    "dead": lambda k: ("status", 500, {}),
    "reject": lambda k: ("status", 400, {}, "prompt too long"),
}


class Faults:
    """The fault hook: each (answer marker, metric) pair counts its own attempts."""

    def __init__(self, healed: bool = False) -> None:
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        self.healed = healed

    def __call__(self, n: int, name: str, body: dict) -> tuple | None:
        if self.healed:
            return None
        key = body["messages"][-1]["content"]  # one per (answer, metric)
        with self.lock:
            self.attempts[key] += 1
            k = self.attempts[key]
        return {**TRANSIENT, **PERMANENT}.get(name, lambda k: None)(k)


@pytest.fixture
def judge_files(tmp_path, monkeypatch) -> dict[str, Path]:
    """Generations (3 clean answers + one per fault kind), a judge config, the env it reads."""
    names = ["ok", "ok", "ok", *TRANSIENT, *PERMANENT]
    gens = tmp_path / "generations.jsonl"
    gens.write_text(
        "".join(
            json.dumps(
                {
                    "sample_id": f"s{i}",
                    "question_id": f"q{i % 4}",
                    "question": "Any advice?",
                    "answer": f"text {i} #{name}",
                }
            )
            + "\n"
            for i, name in enumerate(names)
        )
    )
    config = write_yaml(
        tmp_path / "judge.yaml",
        {
            "backend": "openai",
            "model": "fake",
            "base_url_env": "EMLAB_FAULT_URL",
            "api_key_env": "EMLAB_FAULT_KEY",
            "cache_dir": str(tmp_path / "cache"),
            "timeout": 1.0,
            "max_retries": 3,
            "backoff_initial": 0.01,
            "concurrency": 8,
            # a reply '5' alone could be a digit-splitting judge's first digit: auto would
            # continue it
            "number_tokens": "whole",
        },
    )
    monkeypatch.setenv("EMLAB_FAULT_KEY", "sk-fault-test")
    return {
        "gens": gens,
        "config": config,
        "out": tmp_path / "judgments.jsonl",
        "scores": tmp_path / "scores",
    }


def _judge(files: dict[str, Path], server: FakeOpenAI, monkeypatch, *extra: str):
    monkeypatch.setenv("EMLAB_FAULT_URL", server.url)
    args = [
        "judge",
        str(files["gens"]),
        "--judge-config",
        str(files["config"]),
        "--out",
        str(files["out"]),
        *extra,
    ]
    return CliRunner().invoke(app, args)


def test_every_item_ends_scored_or_failed_with_its_reason(judge_files, monkeypatch):
    names = {f"s{i}": n for i, n in enumerate(["ok", "ok", "ok", *TRANSIENT, *PERMANENT])}
    with FakeOpenAI({n: TABLE for n in names.values()}, Faults()) as server:
        result = _judge(judge_files, server, monkeypatch, "--max-failure-rate", "0.2")
    assert result.exit_code == 0, result.output
    assert (
        "24 judgments written" in result.output and "(4 errors)" in result.output
    )  # the summary counts failures
    rows = read_jsonl(judge_files["out"])
    assert Counter((r["sample_id"], r["metric"]) for r in rows) == Counter(
        {(s, m): 1 for s in names for m in ("aligned", "coherent")}
    )
    for row in rows:
        name = names[row["sample_id"]]
        if name in PERMANENT:
            assert row["score"] is None and row["reason"].startswith("error: HTTP"), row
        else:
            assert row["score"] == 5.0 and row["reason"] is None, (
                row
            )  # retried until it got a real reply
    reasons = {r["reason"] for r in rows if r["reason"]}
    assert any("after 4 attempts" in r for r in reasons) and any("HTTP 400" in r for r in reasons)

    # score refuses to compute a rate on the survivors (2 of 12 answers lack judgments) ...
    score = CliRunner().invoke(
        app, ["score", str(judge_files["out"]), "--out-dir", str(judge_files["scores"])]
    )
    assert (
        score.exit_code == 2 and "2 of 12 answers have a failed or missing judgment" in score.output
    )
    assert not judge_files["scores"].exists()
    # ... unless told the failures may be excluded, and then it says how many were
    score = CliRunner().invoke(
        app,
        [
            "score",
            str(judge_files["out"]),
            "--out-dir",
            str(judge_files["scores"]),
            "--max-error-rate",
            "0.25",
            "--no-figures",
        ],
    )
    assert score.exit_code == 0 and "2 of 12 answers excluded" in score.output
    summary = json.loads((judge_files["scores"] / "summary.json").read_text())
    assert summary["n_excluded_errors"] == 2 and summary["n_answers"] == 12


def test_past_the_failure_rate_the_judge_exits_nonzero_and_a_rerun_retries(
    judge_files, monkeypatch
):
    with FakeOpenAI({n: TABLE for n in ["ok", *TRANSIENT, *PERMANENT]}, Faults()) as server:
        result = _judge(judge_files, server, monkeypatch)  # default max_failure_rate 0.05
    assert result.exit_code == 2
    assert (
        "4 of 24 judgments failed (16.7% > max_failure_rate 5.0%)" in result.output
        and "rerun" in result.output
    )
    rows = read_jsonl(judge_files["out"])
    assert (
        len(rows) == 24 and sum(r["score"] is None for r in rows) == 4
    )  # all kept, failures marked

    with FakeOpenAI(
        {n: TABLE for n in ["ok", *TRANSIENT, *PERMANENT]}, Faults(healed=True)
    ) as server:
        result = _judge(judge_files, server, monkeypatch)
        assert result.exit_code == 0, result.output
        assert server.count == 4  # only the failures are sent again; the rest come from the cache
    score = CliRunner().invoke(
        app,
        ["score", str(judge_files["out"]), "--out-dir", str(judge_files["scores"]), "--no-figures"],
    )
    assert score.exit_code == 0, score.output
    assert (
        json.loads((judge_files["scores"] / "summary.json").read_text())["n_excluded_errors"] == 0
    )


def test_bad_failure_rate_option_is_a_config_error(judge_files, monkeypatch):
    with FakeOpenAI({"ok": TABLE}) as server:
        result = _judge(judge_files, server, monkeypatch, "--max-failure-rate", "1.5")
        assert server.count == 0
    assert (
        result.exit_code == 2
        and "--max-failure-rate" in result.output
        and "max_failure_rate" in result.output
    )
