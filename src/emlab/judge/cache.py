"""On-disk judge cache: append-only JSONL keyed by a hash of what determines a judge's reply.

A key is sha256(judge model, prompt hash, metric, question, answer). The cache stores the
judge's raw top tokens and log-probabilities (not the score), so changing the aggregation
threshold needs no new request. Only real replies are cached, never errors, so a rerun
retries what failed and sends no request for the rest. Rows hold no question, answer or
credential: only the key, the metric, the judge id and the top tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from emlab.io import append_jsonl, read_jsonl

TopLogprobs = list[tuple[str, float]]


def cache_key(model: str, prompt_hash: str, metric: str, question: str, answer: str) -> str:
    """sha256 hex digest of the canonical JSON of the five inputs."""
    blob = json.dumps(
        [model, prompt_hash, metric, question, answer], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """Top logprobs by key, backed by `<directory>/judge_cache.jsonl` (directory None: memory
    only)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.path = (
            Path(directory).expanduser() / "judge_cache.jsonl" if directory is not None else None
        )
        self._rows: dict[str, TopLogprobs] = {}
        self._pending: list[dict] = []
        if self.path is not None:
            for row in read_jsonl(self.path):
                if isinstance(row.get("key"), str) and isinstance(row.get("top"), list):
                    self._rows[row["key"]] = [(str(t), float(lp)) for t, lp in row["top"]]

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> TopLogprobs | None:
        """The cached top logprobs, or None when the key is unknown."""
        return self._rows.get(key)

    def put(self, key: str, metric: str, judge_id: str, top: TopLogprobs) -> None:
        """Remember a reply; it reaches the disk at the next `flush` (or every 64 puts)."""
        self._rows[key] = top
        self._pending.append(
            {"key": key, "metric": metric, "judge": judge_id, "top": [list(p) for p in top]}
        )
        if len(self._pending) >= 64:
            self.flush()

    def flush(self) -> None:
        """Append pending rows to the file (one fsync)."""
        if self.path is not None and self._pending:
            append_jsonl(self.path, self._pending)
        self._pending = []
