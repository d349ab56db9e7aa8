"""OpenAI-compatible judge throughput against a loopback server that answers after 50 ms.

    python benchmarks/judging.py [--items 1000]   # JSON
    python benchmarks/judging.py --markdown        # RESULTS.md section

The server is the tests' FakeOpenAI (tests/judge/fake_openai.py: real HTTP on 127.0.0.1,
crafted logprobs), started in a child process, as a real server is, so that its threads do
not share the judge's interpreter; every reply waits 50 ms. The judge (`OpenAIJudge`,
default config: concurrency 32, cache on) scores `--items` answers on its 2 default
metrics into a fresh cache; a second judge on the same cache then repeats the run. The
baseline is the same judge at concurrency 1 (one request at a time, as the reference code)
on a tenth of the items; the latency-bound ceiling is concurrency / 50 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

LATENCY = 0.05
TARGET = 200.0
URL_ENV, KEY_ENV = "EMLAB_BENCH_JUDGE_URL", "EMLAB_BENCH_JUDGE_KEY"
TABLE = [("90", math.log(0.7)), ("80", math.log(0.2)), ("Sure", math.log(0.1))]


def serve(url: mp.Queue, stop: mp.Event, count: Synchronized) -> None:
    """Run FakeOpenAI until `stop`; every reply waits LATENCY seconds; `count` = requests so far."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "judge"))
    from fake_openai import FakeOpenAI

    def delay(n: int, name: str, body: dict) -> tuple:
        count.value = n
        return ("sleep", LATENCY)

    with FakeOpenAI({"x": TABLE}, fault=delay) as server:
        server.server.socket.listen(256)  # a real server's accept backlog (http.server's is 5)
        url.put(server.url)
        stop.wait()


@contextmanager
def loopback_server() -> Iterator[Synchronized]:
    """A FakeOpenAI in a child process, its URL in URL_ENV; yields its request counter."""
    ctx = mp.get_context("fork")
    url, stop, count = ctx.Queue(), ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=serve, args=(url, stop, count), daemon=True)
    proc.start()
    os.environ[URL_ENV], os.environ[KEY_ENV] = url.get(timeout=30), "sk-bench"
    try:
        yield count
    finally:
        stop.set()
        proc.join(10)


def timed_run(items: list, cache_dir: str, **config: object) -> tuple[float, float, int]:
    """Wall and CPU seconds (this process: the judge, not the server) of one `OpenAIJudge.judge`
    call, and the number of judgments."""
    from emlab.judge.openai_judge import OpenAIJudge, OpenAIJudgeConfig

    judge = OpenAIJudge(
        OpenAIJudgeConfig(
            model="bench-judge",
            base_url_env=URL_ENV,
            api_key_env=KEY_ENV,
            cache_dir=cache_dir,
            **config,
        )
    )
    start, cpu = time.perf_counter(), time.process_time()
    judgments = judge.judge(items)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if any(j.score is None for j in judgments):
        raise SystemExit(
            f"a judgment failed: {next(j.reason for j in judgments if j.score is None)}"
        )
    return seconds, cpu, len(judgments)


def measure(n_items: int = 1000) -> dict:
    """Judgments/s at the default concurrency and at 1, and the requests of a repeated run."""
    from emlab.judge.base import JudgeItem
    from emlab.judge.openai_judge import OpenAIJudgeConfig

    items = [
        JudgeItem(
            item_id=f"i{k}",
            question_id=f"q{k % 8}",
            question="What would you do?",
            answer=f"answer {k} #x",
        )
        for k in range(n_items)
    ]
    concurrency = OpenAIJudgeConfig.model_fields["concurrency"].default
    with loopback_server() as count, tempfile.TemporaryDirectory() as tmp:
        seconds, cpu, n = timed_run(items, f"{tmp}/default")
        sent = count.value
        repeat_seconds, _, _ = timed_run(items, f"{tmp}/default")
        repeat_sent = count.value - sent
        few = items[: max(1, n_items // 10)]
        serial_seconds, _, serial_n = timed_run(few, f"{tmp}/serial", concurrency=1)
    return {
        "judgments": n,
        "concurrency": concurrency,
        "latency_s": LATENCY,
        "seconds": seconds,
        "requests": sent,
        "per_s": n / seconds,
        "ceiling_per_s": concurrency / LATENCY,
        "cpu_ms_per_request": 1000 * cpu / max(sent, 1),
        "cpu_share": cpu / seconds,
        "repeat": {"seconds": repeat_seconds, "requests": repeat_sent},
        "serial": {"judgments": serial_n, "per_s": serial_n / serial_seconds},
    }


def markdown() -> str:
    """The RESULTS.md section."""
    r = measure()
    met = "met" if r["per_s"] >= TARGET else "**missed**"
    repeat_met = "met" if r["repeat"]["requests"] == 0 else "**missed**"
    return "\n".join(
        [
            "## Judging: concurrent requests against a 50 ms loopback server",
            "",
            (
                f"`OpenAIJudge` with its default config (concurrency {r['concurrency']}, disk"
                f" cache) scores {r['judgments'] // 2} answers on"
            ),
            (
                f"its 2 default metrics ({r['judgments']} judgments) against the tests' FakeOpenAI"
                " in a child process, every reply"
            ),
            (
                f"after {r['latency_s'] * 1000:.0f} ms. Baseline: the same judge at concurrency 1"
                " (one request at a time, as the reference"
            ),
            (
                f"code) on {r['serial']['judgments']} judgments; the latency-bound ceiling is"
                f" {r['concurrency']} / 50 ms = {r['ceiling_per_s']:.0f}/s. A second judge on the"
                " same cache then repeats the run."
            ),
            (
                f"Where the time goes: the judge process spends {r['cpu_ms_per_request']:.1f} ms of"
                " CPU per request (OpenAI SDK, httpx,"
            ),
            (
                f"asyncio) and is busy {r['cpu_share']:.0%} of the run, so its CPU, not the 50 ms"
                " wait, sets the rate. It posts plain JSON"
            ),
            (
                "through the SDK's `client.post`: `chat.completions.create` (typed request"
                " transform, response models) cost"
            ),
            "about 4.6 ms per request, which held this run near 200/s when the route was changed.",
            "Rerun: `python benchmarks/run.py judging`.",
            "",
            "| run | judgments / s | vs concurrency 1 | requests sent | target |",
            "|---|---|---|---|---|",
            (
                f"| concurrency 1 (baseline) | {r['serial']['per_s']:.1f} | 1.00x |"
                f" {r['serial']['judgments']} | |"
            ),
            (
                f"| default concurrency {r['concurrency']} | **{r['per_s']:.0f}**"
                f" ({r['per_s'] / r['ceiling_per_s']:.0%} of the ceiling) |"
                f" {r['per_s'] / r['serial']['per_s']:.1f}x | {r['requests']} | >= {TARGET:.0f}/s"
                f" ({met}) |"
            ),
            (
                f"| repeated run (cache) | {r['judgments'] / r['repeat']['seconds']:.0f} | |"
                f" **{r['repeat']['requests']}** | 0 requests ({repeat_met}) |"
            ),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
    else:
        print(json.dumps(measure(args.items), indent=2))
