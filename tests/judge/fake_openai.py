"""A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, with crafted logprobs.

Answers in the tests carry a marker `#<name>`; the server finds it in the judge prompt (the
last user message) and replies with `tables[name]` as the first token's top_logprobs: a list
of (token, logprob) for a judge with whole-number tokens, or a `DigitJudge`, a judge whose
tokenizer splits numbers into digits, which answers a request ending in an open assistant
message (`continue_final_message`) with the next token's distribution given that prefix.
`continuation` says what the server does with such a request: 'continue' (vLLM >= 0.6.3),
'ignore' (drops the field, as old vLLM or some proxies: the message is closed and a new one
starts), or 'reject' (HTTP 400, as OpenAI). `usage.prompt_tokens` counts the rendered prompt
as a digit-splitting tokenizer would (one token per word of the user message, one per digit
of the assistant prefix, plus the template's tokens). A marker not in `tables` (or none, as
in the judge's continuation check) gets the reply 'Sure', continued or not. A `fault(request_no,
name, body)`
hook may return a fault instead: ('status', code, headers[, message]) where `{auth}` in the
message is replaced by the request's Authorization header, ('sleep', seconds),
('malformed',), ('no_logprobs',), ('close',) (drop the connection without a reply), or None
for a normal answer.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple | None
_MARK = re.compile(r"#([A-Za-z0-9_]+)")
END = "<|im_end|>"


class DigitJudge:
    """A judge that writes numbers digit by digit: `replies` maps a reply (an int 0..100, or any
    other first token such as 'REFUSAL') to its probability."""

    def __init__(self, replies: dict[int | str, float]) -> None:
        self.replies = replies

    def next_tokens(self, prefix: str) -> list[tuple[str, float]]:
        """Top-20 (token, logprob) of the next token after the assistant prefix ('' = first
        token)."""
        probs: dict[str, float] = {}
        for reply, p in self.replies.items():
            text = str(reply)
            if isinstance(reply, int) and text.startswith(prefix):
                token = text[len(prefix)] if len(text) > len(prefix) else END
            elif prefix or isinstance(reply, int):
                continue
            else:
                token = text
            probs[token] = probs.get(token, 0.0) + p
        total = sum(probs.values())
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:20]
        return [(t, math.log(p / total)) for t, p in top if p > 0]


class FakeOpenAI:
    """Counts requests; records their bodies, paths and authorization headers."""

    def __init__(
        self,
        tables: dict[str, list[tuple[str, float]] | DigitJudge],
        fault: Callable[[int, str, dict], Fault] | None = None,
        continuation: str = "continue",
    ):
        self.tables, self.fault, self.continuation = tables, fault, continuation
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.times: list[tuple[float, str]] = []
        self.auth: list[str] = []
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = (
                True  # headers and body are two writes: no 40 ms delayed-ACK stall
            )

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompt = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                found = _MARK.findall(prompt)
                name = found[-1] if found else ""
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                    fake.paths.append(self.path)
                    fake.times.append((time.monotonic(), name))
                    n = len(fake.requests)
                fault = fake.fault(n, name, body) if fake.fault else None
                if fault and fault[0] == "status":
                    code, headers = fault[1], fault[2]
                    message = fault[3] if len(fault) > 3 else f"fake error {code}"
                    message = message.replace("{auth}", self.headers.get("Authorization", ""))
                    self._send(
                        code,
                        json.dumps({"error": {"message": message, "type": "x"}}).encode(),
                        headers,
                    )
                    return
                if fault and fault[0] == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault[0] == "sleep":
                    time.sleep(fault[1])
                if fault and fault[0] == "malformed":
                    self._send(200, b'{"id": "x", "choices": [', {})
                    return
                prefix, prompt_tokens = _render(body, fake.continuation)
                if prefix is not None and fake.continuation == "reject":
                    message = "Unrecognized request argument supplied: continue_final_message"
                    self._send(
                        400,
                        json.dumps(
                            {"error": {"message": message, "type": "invalid_request_error"}}
                        ).encode(),
                        {},
                    )
                    return
                try:
                    table = fake.tables[
                        name
                    ]  # [], not .get: a test's mapping may compute its tables
                except KeyError:
                    table = None
                if table is None:
                    top = [("Sure", 0.0)]
                elif isinstance(table, DigitJudge):
                    top = table.next_tokens(prefix or "")
                elif prefix:
                    self._send(
                        400,
                        json.dumps(
                            {"error": {"message": f"fake: table {name!r} has no continuation"}}
                        ).encode(),
                        {},
                    )
                    return
                else:
                    top = table
                logprobs = (
                    None
                    if fault and fault[0] == "no_logprobs"
                    else {
                        "content": [
                            {
                                "token": top[0][0],
                                "logprob": top[0][1],
                                "bytes": None,
                                "top_logprobs": [
                                    {"token": t, "logprob": lp, "bytes": None} for t, lp in top
                                ],
                            }
                        ]
                    }
                )
                reply = {
                    "id": f"chatcmpl-{n}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "length",
                            "logprobs": logprobs,
                            "message": {"role": "assistant", "content": top[0][0]},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": 1,
                        "total_tokens": prompt_tokens + 1,
                    },
                }
                self._send(200, json.dumps(reply).encode(), {})

            def _send(self, code: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler


def _render(body: dict[str, Any], continuation: str) -> tuple[str | None, int]:
    """(the assistant prefix the reply continues, or None; the prompt's token count).

    A user turn costs its words + 2 template tokens; the generation prompt 1; an assistant
    message 1 + one per character (digits) + 1 end-of-turn token unless it stays open.
    """
    tokens = 0
    for m in body["messages"]:
        tokens += (
            len(m["content"].split()) + 2 if m["role"] == "user" else 1 + len(m["content"]) + 1
        )
    last = body["messages"][-1]
    if (
        last["role"] == "assistant"
        and body.get("continue_final_message")
        and continuation != "ignore"
    ):
        return last["content"], tokens - 1  # the message stays open: no end-of-turn token
    return None, tokens + 1  # a new assistant message: the generation prompt's token
