"""A real HTTP server on 127.0.0.1 speaking the chat-completions protocol, with crafted logprobs.

Answers in the tests carry a marker `#<name>`; the server finds it in the judge prompt and
replies with `tables[name]` as the first token's top_logprobs. A `fault(request_no, name, body)`
hook may return a fault instead: ('status', code, headers[, message]) where `{auth}` in the
message is replaced by the request's Authorization header, ('sleep', seconds),
('malformed',), ('no_logprobs',), ('close',) (drop the connection without a reply), or None
for a normal answer.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple | None
_MARK = re.compile(r"#([A-Za-z0-9_]+)")


class FakeOpenAI:
    """Counts requests; records their bodies, paths and authorization headers."""

    def __init__(self, tables: dict[str, list[tuple[str, float]]], fault: Callable[[int, str, dict], Fault] | None = None):
        self.tables, self.fault = tables, fault
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.times: list[tuple[float, str]] = []
        self.auth: list[str] = []
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

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
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompt = body["messages"][-1]["content"]
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
                    self._send(code, json.dumps({"error": {"message": message, "type": "x"}}).encode(), headers)
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
                top = fake.tables[name]
                logprobs = None if fault and fault[0] == "no_logprobs" else {
                    "content": [{
                        "token": top[0][0], "logprob": top[0][1], "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top],
                    }]
                }
                reply = {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "length", "logprobs": logprobs,
                                 "message": {"role": "assistant", "content": top[0][0]}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
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
