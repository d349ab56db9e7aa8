"""The OpenAI-compatible judge against a real loopback HTTP server with crafted logprobs and
faults."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
from fake_openai import DigitJudge, FakeOpenAI

from emlab.errors import JudgeError
from emlab.judge.base import JudgeItem
from emlab.judge.digits import read_numbers
from emlab.judge.openai_judge import JudgeFailureRateError, OpenAIJudge, OpenAIJudgeConfig

ln = math.log
URL_ENV, KEY_ENV = "EMLAB_TEST_JUDGE_URL", "EMLAB_TEST_JUDGE_KEY"
SECRET = "sk-emlab-test-SECRET-4f9a1c"

TABLES = {  # judges with whole-number tokens ('70' is one token; '8' means 8)
    "a": [("70", ln(0.5)), ("8", ln(0.25)), ("Hello", ln(0.25))],
    "ws": [(" 90", ln(0.3)), ("90", ln(0.1)), ("100", ln(0.2)), ("101", ln(0.3)), ("x", ln(0.1))],
    "low": [("Sure", ln(0.8)), ("50", ln(0.2))],
    "edge": [("Sure", ln(0.74)), ("40", ln(0.26))],
    "ref": [("REF", ln(0.9)), ("0", ln(0.05))],
    "code": [("CODE", ln(0.95)), ("10", ln(0.01))],
}
EXPECTED = {
    "a": (37 / 0.75, None),
    "ws": ((0.4 * 90 + 0.2 * 100) / 0.6, None),
    "low": (None, "no_number_mass"),
    "edge": (40.0, None),
    "ref": (None, "refusal"),
    "code": (None, "code"),
}


def items_for(names: list[str]) -> list[JudgeItem]:
    return [
        JudgeItem(
            item_id=f"i{k}-{n}",
            question_id=f"q{k % 2}",
            question="What now?",
            answer=f"answer #{n}",
        )
        for k, n in enumerate(names)
    ]


@pytest.fixture
def make_judge(tmp_path, monkeypatch):
    def make(server: FakeOpenAI, **overrides) -> OpenAIJudge:
        monkeypatch.setenv(URL_ENV, server.url)
        monkeypatch.setenv(KEY_ENV, SECRET)
        cfg = dict(
            model="fake-judge",
            base_url_env=URL_ENV,
            api_key_env=KEY_ENV,
            cache_dir=tmp_path / "cache",
            concurrency=8,
            max_retries=4,
            timeout=2.0,
            backoff_initial=0.01,
            backoff_max=2.0,
        )
        cfg.update(overrides)
        return OpenAIJudge(OpenAIJudgeConfig(**cfg))

    return make


def test_scores_match_hand_computed_values_and_cache_sends_zero_requests(make_judge):
    names = list(TABLES)
    with FakeOpenAI(TABLES) as server:
        judge = make_judge(server)
        judgments = judge.judge(items_for(names))
        assert server.count == len(names) * 2  # aligned + coherent
        assert len(judgments) == len(names) * 2
        for j in judgments:
            score, reason = EXPECTED[j.item_id.split("-")[1]]
            assert j.reason == reason
            assert (j.score is None) if score is None else j.score == pytest.approx(score)
            assert j.judge.startswith(f"openai:fake-judge|emlab-v1/{j.metric}@")
        body = server.requests[0]
        assert (
            body["model"] == "fake-judge" and body["max_tokens"] == 1 and body["temperature"] == 0
        )
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert all(a == f"Bearer {SECRET}" for a in server.auth)
        # a fresh judge over the same answers: everything from the on-disk cache
        again = make_judge(server).judge(items_for(names))
        assert server.count == len(names) * 2
        assert [j.model_dump() for j in again] == [j.model_dump() for j in judgments]
        # a lower number-mass threshold re-aggregates cached replies without a request
        relaxed = make_judge(server, min_number_mass=0.1).judge(items_for(["low"]))
        assert relaxed[0].score == pytest.approx(50.0) and server.count == len(names) * 2


def test_faults_are_retried_and_every_item_ends_scored_or_marked(make_judge):
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def fault(n, name, body):
        with lock:
            attempts[name] = attempts.get(name, 0) + 1
            k = attempts[name]
        return {
            "r429": ("status", 429, {"Retry-After": "1"}) if k == 1 else None,
            "r500": ("status", 500, {}) if k <= 2 else None,
            "slow": ("sleep", 3.0) if k == 1 else None,
            "bad": ("malformed",) if k == 1 else None,
            "nolp": ("no_logprobs",) if k == 1 else None,
            "reset": ("close",) if k == 1 else None,
            "r503": ("status", 503, {}) if k == 1 else None,
            "dead": ("status", 500, {}),
            "reject": ("status", 400, {}, "context too long"),
        }.get(name)

    names = ["r429", "r500", "slow", "bad", "nolp", "reset", "r503", "dead", "reject", "a"]
    tables = {n: TABLES["a"] for n in names}
    with FakeOpenAI(tables, fault) as server:
        judge = make_judge(
            server, metrics=["aligned"], timeout=1.0, max_retries=3, max_failure_rate=0.3
        )
        start = time.monotonic()
        judgments = {j.item_id.split("-")[1]: j for j in judge.judge(items_for(names))}
        elapsed = time.monotonic() - start
    assert all(attempts[n] == 2 for n in ["r429", "slow", "bad", "nolp", "reset", "r503"])
    for name in ["r429", "r500", "slow", "bad", "nolp", "reset", "r503", "a"]:
        assert judgments[name].score == pytest.approx(37 / 0.75), (name, judgments[name])
    assert judgments["dead"].score is None and judgments["dead"].reason.startswith(
        "error: HTTP 500 (after 4 attempts)"
    )
    assert judgments["reject"].score is None and judgments["reject"].reason.startswith(
        "error: HTTP 400"
    )
    assert (
        attempts["reject"] == 1 and attempts["dead"] >= 2
    )  # 400 is not retried; 500 is (a try may die on a dropped pooled connection)
    times = [t for t, name in server.times if name == "r429"]
    assert times[1] - times[0] >= 0.95  # Retry-After honoured
    assert elapsed < 10


def test_requests_take_the_chat_completions_route_of_openai_and_azure(make_judge, monkeypatch):
    with FakeOpenAI(TABLES) as server:
        make_judge(server, metrics=["aligned"]).judge(items_for(["a"]))
        azure = make_judge(
            server,
            model="my-deployment",
            metrics=["aligned"],
            azure_api_version="2024-10-21",
            cache=False,
        )
        monkeypatch.setenv(URL_ENV, server.url.removesuffix("/v1"))  # Azure: the resource endpoint
        azure.judge(items_for(["a"]))
    assert server.paths == [
        "/v1/chat/completions",
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21",
    ]
    assert (
        server.requests[1]["model"] == "my-deployment" and server.requests[1]["top_logprobs"] == 20
    )


def test_401_stops_at_once_naming_the_env_var(make_judge):
    with FakeOpenAI(TABLES, lambda n, name, body: ("status", 401, {}, "bad key {auth}")) as server:
        judge = make_judge(server, concurrency=4)
        start = time.monotonic()
        with pytest.raises(JudgeError) as err:
            judge.judge(items_for(["a"] * 50))
        assert time.monotonic() - start < 3
        assert server.count <= 8  # the in-flight requests at most, not 100
    assert KEY_ENV in str(err.value) and SECRET not in str(err.value)


def test_missing_key_for_openai_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("EMLAB_NO_URL", raising=False)
    monkeypatch.delenv("EMLAB_NO_KEY", raising=False)
    judge = OpenAIJudge(
        OpenAIJudgeConfig(
            model="m", base_url_env="EMLAB_NO_URL", api_key_env="EMLAB_NO_KEY", cache_dir=tmp_path
        )
    )
    with pytest.raises(JudgeError, match="EMLAB_NO_KEY"):
        judge.judge(items_for(["a"]))


def test_too_many_failures_raise_instead_of_reporting_survivors(make_judge):
    names = ["dead", "dead", "dead", "a"]
    with FakeOpenAI(
        {"dead": TABLES["a"], "a": TABLES["a"]},
        lambda n, name, body: ("status", 500, {}) if name == "dead" else None,
    ) as server:
        judge = make_judge(server, metrics=["aligned"], max_retries=1, max_failure_rate=0.5)
        with pytest.raises(JudgeFailureRateError, match="3 of 4 judgments failed") as err:
            judge.judge(items_for(names))
    reasons = [j.reason for j in err.value.judgments]
    assert reasons.count(None) == 1 and all(r.startswith("error: HTTP 500") for r in reasons if r)


def test_error_bodies_echoing_the_key_are_redacted(make_judge, tmp_path):
    with FakeOpenAI(
        TABLES,
        lambda n, name, body: ("status", 400, {}, "you sent {auth}") if name == "ref" else None,
    ) as server:
        judge = make_judge(server, metrics=["aligned"], max_failure_rate=0.5)
        judgments = judge.judge(items_for(["a", "ref"]))
    assert (
        SECRET not in json.dumps([j.model_dump() for j in judgments])
        and "***" in judgments[1].reason
    )


def test_batch_api_file_formats(make_judge, tmp_path):
    names = ["a", "ws", "low", "ref", "code"]
    items = items_for(names)
    with FakeOpenAI(TABLES) as server:
        judge = make_judge(server, max_failure_rate=0.5)
        n = judge.write_batch_requests(items, tmp_path / "requests.jsonl")
        lines = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
        assert n == len(lines) == 10
        first = lines[0]
        assert (
            first["method"] == "POST"
            and first["url"] == "/v1/chat/completions"
            and first["custom_id"] == f"aligned|{items[0].item_id}"
        )
        assert (
            first["body"]["logprobs"] is True
            and first["body"]["top_logprobs"] == 20
            and first["body"]["max_tokens"] == 1
        )
        assert "#a" in first["body"]["messages"][0]["content"]
        # an output file as the Batch API writes it: one line per request, any order
        out = []
        for line in reversed(lines):
            item_id = line["custom_id"].split("|", 1)[1]
            name = item_id.split("-")[1]
            if name == "code" and line["custom_id"].startswith("coherent"):
                continue  # missing from the output
            if name == "ref" and line["custom_id"].startswith("coherent"):
                out.append(
                    {
                        "id": "r",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": "server_error", "message": "boom"},
                    }
                )
                continue
            top = TABLES[name]
            body = {
                "choices": [
                    {
                        "index": 0,
                        "logprobs": {
                            "content": [
                                {
                                    "token": top[0][0],
                                    "logprob": top[0][1],
                                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
                                }
                            ]
                        },
                    }
                ]
            }
            out.append(
                {
                    "id": "r",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "body": body},
                    "error": None,
                }
            )
        (tmp_path / "output.jsonl").write_text("".join(json.dumps(o) + "\n" for o in out))
        judgments = judge.parse_batch_output(items, tmp_path / "output.jsonl")
        by = {(j.item_id.split("-")[1], j.metric): j for j in judgments}
        for name in names:
            score, reason = EXPECTED[name]
            assert by[(name, "aligned")].reason == reason
            if score is not None:
                assert by[(name, "aligned")].score == pytest.approx(score)
        assert by[("code", "coherent")].reason == "error: missing from the batch output"
        assert by[("ref", "coherent")].reason.startswith("error: batch error")
        # parsed replies are cached: only the two failures remain to request
        assert judge.write_batch_requests(items, tmp_path / "requests2.jsonl") == 2
        assert server.count == 0


# Judges whose tokenizer splits numbers into digits (Qwen, Gemma, Mistral on vLLM): '85' is '8',
# '5'.
DIGITS = {
    # first tokens '8' .6, '9' .2, '7' .05, '1' .05, '3' .005, 'Sure' .095; the whole-token reading
    # is (4.8 + 1.8 + .35 + .05 + .015) / .905 = 7.75. Digit readout: '3' is below digit_min_prob
    # 0.01 (not continued, no number mass); 85 .5, 80 .1, 90 .2, 7 .05, 100 .05 (via '1', '10').
    "d85": DigitJudge({85: 0.5, 90: 0.2, 80: 0.1, 7: 0.05, 100: 0.05, 30: 0.005, "Sure": 0.095}),
    "d3": DigitJudge(
        {0: 0.7, 10: 0.3}
    ),  # '0' is complete; '1' -> '10' -> end: (0 * .7 + 10 * .3) / 1
    "dref": DigitJudge(
        {"REFUSAL": 0.9, 5: 0.1}
    ),  # number mass .1 < .25 on the first token: no continuation
}
DIGIT_EXPECTED = {"d85": (73.85 / 0.9, None), "d3": (3.0, None), "dref": (None, "refusal")}
DIGIT_REQUESTS = {"d85": 6, "d3": 3, "dref": 1}  # per metric: 1 + the prefixes continued


def test_digit_splitting_judge_is_read_digit_by_digit_and_cached_under_its_own_keys(make_judge):
    names = list(DIGITS)
    with FakeOpenAI(DIGITS) as server:
        judgments = make_judge(server).judge(items_for(names))  # number_tokens: auto (the default)
        assert len(judgments) == 6
        for j in judgments:
            score, reason = DIGIT_EXPECTED[j.item_id.split("-")[1]]
            assert (
                (j.score is None) if score is None else j.score == pytest.approx(score, abs=1e-6)
            ), j
            assert j.reason == reason and j.judge.endswith("|digits"), j
        assert server.count == 2 + 2 * sum(
            DIGIT_REQUESTS.values()
        )  # + the continuation check, once
        continued = [b for b in server.requests if b.get("continue_final_message")]
        assert all(
            b["add_generation_prompt"] is False and b["messages"][-1]["role"] == "assistant"
            for b in continued
        )
        d85 = {
            b["messages"][-1]["content"] for b in continued if "#d85" in b["messages"][0]["content"]
        }
        assert d85 == {"8", "9", "7", "1", "10"}
        # a fresh judge: first tokens and continuations all from the cache, no check, no request
        again = make_judge(server).judge(items_for(names))
        assert [j.model_dump() for j in again] == [j.model_dump() for j in judgments]
        n = server.count
        # the cache holds raw replies, not scores: the whole-token reading (what emlab read before)
        # comes from the same first-token entries and is the wrong value
        whole = make_judge(server, number_tokens="whole", metrics=["aligned"]).judge(
            items_for(["d85", "d3"])
        )
        assert [j.score for j in whole] == pytest.approx([7.015 / 0.905, 0.3])
        assert server.count == n


def test_auto_on_a_whole_number_judge_sends_one_request_per_item_and_metric(
    make_judge, monkeypatch
):
    with FakeOpenAI(TABLES) as server:
        judge = make_judge(server)
        first = judge.judge(items_for(["a", "ws"]))
        assert server.count == 4 and not any("continue_final_message" in b for b in server.requests)
        assert first[0].score == pytest.approx(37 / 0.75) and not first[0].judge.endswith("|digits")
    # the judge's whole-number tokens are remembered: a later call whose replies hold single digits
    # only ('5') is read whole too, still one request per item and metric
    with FakeOpenAI({"five": [("5", ln(0.9)), ("Sure", ln(0.1))]}) as server:
        monkeypatch.setenv(URL_ENV, server.url)
        again = judge.judge(items_for(["five"]))
        assert server.count == 2 and [j.score for j in again] == pytest.approx([5.0, 5.0])


@pytest.mark.parametrize(
    ("continuation", "says"), [("reject", "HTTP 400"), ("ignore", "grew by 3 tokens")]
)
def test_a_server_that_cannot_continue_stops_the_digit_readout_with_what_to_use(
    make_judge, continuation, says
):
    with FakeOpenAI(DIGITS, continuation=continuation) as server:
        with pytest.raises(JudgeError) as err:
            make_judge(server).judge(items_for(["d85"]))
        assert server.count == 4  # the two first tokens and the two-request check; no continuation
    message = str(err.value)
    assert says in message and "continue_final_message" in message and "backend: local" in message
    assert "number_tokens: whole" in message and "splits numbers into digits" in message


def test_batch_output_of_a_digit_judge_is_refused(make_judge, tmp_path):
    with FakeOpenAI(DIGITS) as server:
        judge = make_judge(server, metrics=["aligned"])
        items = items_for(["d85"])
        judge.write_batch_requests(items, tmp_path / "requests.jsonl")
        top = DIGITS["d85"].next_tokens("")
        body = {
            "choices": [
                {
                    "logprobs": {
                        "content": [
                            {
                                "token": top[0][0],
                                "logprob": top[0][1],
                                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top],
                            }
                        ]
                    }
                }
            ]
        }
        row = {
            "custom_id": f"aligned|{items[0].item_id}",
            "response": {"status_code": 200, "body": body},
            "error": None,
        }
        (tmp_path / "output.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(JudgeError, match="Batch API cannot"):
            judge.parse_batch_output(items, tmp_path / "output.jsonl")
        assert server.count == 0


def test_digit_readout_drops_numbers_above_100_and_reads_multi_digit_continuations():
    # '1' -> '0' (.5) -> '10' -> '0' (.5): 100 .25, '1' (.5): 101 > 100, not a number; '1' -> '5'
    # (.5): 15
    numbers, missing = read_numbers(
        [("1", 0.0)],
        {"1": [("0", ln(0.5)), ("5", ln(0.5))], "10": [("0", ln(0.5)), ("1", ln(0.5))]},
        0.01,
    )
    assert missing == [] and numbers == pytest.approx({100: 0.25, 15: 0.5, 10: 0.0, 1: 0.0})
    assert read_numbers([("8", ln(0.6)), (" 8", ln(0.2)), ("Hi", ln(0.2))], {}, 0.01) == ({}, ["8"])
