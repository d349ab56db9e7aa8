"""A logprob judge over any OpenAI-compatible chat-completions API (OpenAI, Azure, OpenRouter, vLLM).

One completion token at temperature 0 with the top-20 log-probabilities; the score comes from
`aggregate.aggregate`. Requests run concurrently (asyncio + semaphore) with retries
(exponential backoff with jitter; Retry-After honoured) on 429, 5xx, timeouts, connection
errors, malformed bodies and missing logprobs. A 401/403 stops the run at once. Replies
are cached on disk, so a repeated run sends no request. The API key is read from an
environment variable and never written anywhere.

Example config (YAML)::

    backend: openai
    model: gpt-4o-2024-08-06
    domains: {medical: medicine and health}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import Field

from emlab.errors import JudgeError
from emlab.io import atomic_path, read_jsonl, write_text_atomic
from emlab.judge.aggregate import aggregate
from emlab.judge.base import JudgeItem, Judgment, judge_pairs
from emlab.judge.cache import JudgeCache, TopLogprobs, cache_key
from emlab.judge.config import JudgePromptsConfig

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$EMLAB_CACHE/judge (default ~/.cache/emlab/judge)."""
    return Path(os.environ.get("EMLAB_CACHE", Path.home() / ".cache" / "emlab")) / "judge"


class OpenAIJudgeConfig(JudgePromptsConfig):
    """A judge behind an OpenAI-compatible API. Credentials only come from environment variables."""

    backend: Literal["openai"] = Field(default="openai", description="Judge backend. Default 'openai'.")
    model: str = Field(description="Judge model (Azure: deployment name), e.g. 'gpt-4o-2024-08-06'. Required.")
    base_url_env: str = Field(
        default="OPENAI_BASE_URL",
        description="Environment variable holding the API base URL (e.g. http://localhost:8000/v1 for "
        "vLLM, https://openrouter.ai/api/v1; Azure: the resource endpoint). Unset: OpenAI. Default 'OPENAI_BASE_URL'.",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key (never logged or stored). Default 'OPENAI_API_KEY'.",
    )
    azure_api_version: str | None = Field(
        default=None, description="Set (e.g. '2024-10-21') to call Azure OpenAI. Default None (not Azure)."
    )
    concurrency: int = Field(default=32, ge=1, description="Requests in flight at once. Default 32.")
    max_retries: int = Field(default=6, ge=0, description="Retries per request after the first try. Default 6.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds before a request counts as timed out. Default 60.")
    backoff_initial: float = Field(
        default=1.0, ge=0, description="First retry delay in seconds, doubled each retry, with jitter. Default 1."
    )
    backoff_max: float = Field(
        default=60.0, ge=0, description="Longest delay between retries, Retry-After included. Default 60."
    )
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature. Default 0.")
    max_tokens: int = Field(default=1, ge=1, description="Completion tokens (only the first is used). Default 1.")
    top_logprobs: int = Field(default=20, ge=1, le=20, description="Top log-probabilities returned (API max 20). Default 20.")
    cache: bool = Field(default=True, description="Cache replies on disk so reruns send no request. Default True.")
    cache_dir: Path | None = Field(
        default=None, description="Cache folder. Default None: $EMLAB_CACHE/judge (~/.cache/emlab/judge)."
    )
    max_failure_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest fraction of judgments that may end in error; above it the run raises "
        "JudgeFailureRateError instead of reporting rates on the survivors. Default 0.05.",
    )


class JudgeFailureRateError(JudgeError):
    """Too many judgments failed; `judgments` holds all of them (errors have reason 'error: ...')."""

    def __init__(self, message: str, judgments: list[Judgment]) -> None:
        super().__init__(message)
        self.judgments = judgments


class _Retryable(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class OpenAIJudge:
    """Scores answers with an OpenAI-compatible logprob judge (implements `emlab.judge.base.Judge`)."""

    def __init__(self, config: OpenAIJudgeConfig) -> None:
        self.config = config
        self.prompts = config.prompt_set()
        self.metrics: tuple[str, ...] = tuple(self.prompts.prompts)
        self.name = f"openai:{config.model}|{self.prompts.version}"
        self.cache = JudgeCache((config.cache_dir or default_cache_dir()) if config.cache else None)

    def judge_id(self, metric: str) -> str:
        """The versioned id written into each Judgment: model, prompt version, metric and prompt hash."""
        return f"openai:{self.config.model}|{self.prompts.prompts[metric].id}"

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on every metric (item-major order); see `ajudge`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ajudge(items))
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (e.g. Jupyter)
            return pool.submit(asyncio.run, self.ajudge(items)).result()

    async def ajudge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on every metric; raises JudgeError on bad credentials or too many failures."""
        pairs = judge_pairs(items, self.metrics)
        keys = [self._key(item, metric) for item, metric in pairs]
        outcome: dict[str, TopLogprobs | str] = {k: top for k in keys if (top := self.cache.get(k)) is not None}
        todo = {k: (metric, self.prompts.prompts[metric].render(item.question, item.answer))
                for k, (item, metric) in zip(keys, pairs, strict=True) if k not in outcome}
        if todo:
            log.info("judging %d prompts (%d cached) with %s", len(todo), len(pairs) - len(todo), self.name)
            outcome.update(await self._run(todo))
        judgments = [self._judgment(item, metric, outcome[k]) for k, (item, metric) in zip(keys, pairs, strict=True)]
        check_failure_rate(judgments, self.config.max_failure_rate)
        return judgments

    # -- the request loop -------------------------------------------------------------------

    async def _run(self, todo: dict[str, tuple[str, str]]) -> dict[str, TopLogprobs | str]:
        client = self._client()
        semaphore = asyncio.Semaphore(self.config.concurrency)
        results: dict[str, TopLogprobs | str] = {}

        async def one(key: str, metric: str, text: str) -> None:
            results[key] = await self._request(client, semaphore, text)
            if not isinstance(results[key], str):
                self.cache.put(key, metric, self.judge_id(metric), results[key])

        tasks = [asyncio.ensure_future(one(k, m, t)) for k, (m, t) in todo.items()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self.cache.flush()
            await client.close()
        return results

    async def _request(self, client: Any, semaphore: asyncio.Semaphore, text: str) -> TopLogprobs | str:
        """Top logprobs of the first completion token, or 'error: ...' once retries are spent."""
        cfg = self.config
        reason = ""
        for attempt in range(cfg.max_retries + 1):
            try:
                async with semaphore:
                    # the SDK's plain JSON route (same HTTP errors, auth and Azure routing as
                    # chat.completions.create) skips its typed request transform and response
                    # models, about half of its CPU per request: the limit of a fast server
                    body = await client.post("/chat/completions", cast_to=object, body=self._body(text))
                    return top_logprobs_of(body)
            except _Retryable as e:
                reason, delay = e.reason, e.delay
            except Exception as e:  # each kind is classified; unknown kinds are not retried
                reason, delay, retry = self._classify(e)
                if not retry:
                    return f"error: {reason}"
            if attempt < cfg.max_retries:
                await asyncio.sleep(delay if delay is not None else self._backoff(attempt))
        return f"error: {reason} (after {cfg.max_retries + 1} attempts)"

    def _classify(self, e: Exception) -> tuple[str, float | None, bool]:
        """(reason, Retry-After delay, retryable?) of a failed request; raises JudgeError on 401/403/404."""
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            raise JudgeError(
                f"the judge API at {self._where()} rejected the credentials (HTTP {e.status_code}). Set the "
                f"environment variable {self.config.api_key_env} to a valid key for this endpoint."
            ) from None
        if isinstance(e, openai.NotFoundError):
            raise JudgeError(
                f"the judge API at {self._where()} answered HTTP 404 for model {self.config.model!r}: check "
                f"`model` in the judge config and the base URL in {self.config.base_url_env}."
            ) from None
        if isinstance(e, openai.APIStatusError):
            if e.status_code == 429:
                return "HTTP 429 (rate limited)", self._retry_after(e.response.headers), True
            if e.status_code >= 500 or e.status_code in (408, 409):
                return f"HTTP {e.status_code}", None, True
            return f"HTTP {e.status_code}: {self._redact(e.message)[:200]}", None, False
        if isinstance(e, openai.APITimeoutError):
            return f"timeout after {self.config.timeout:g} s", None, True
        if isinstance(e, openai.APIConnectionError):
            return f"connection error ({self._redact(str(e.__cause__ or e))[:200]})", None, True
        if isinstance(e, ValueError | openai.APIResponseValidationError):
            return f"malformed response ({type(e).__name__})", None, True
        return f"{type(e).__name__}: {self._redact(str(e))[:200]}", None, False

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max, self.config.backoff_initial * 2**attempt)
        return base * random.uniform(0.5, 1.0)

    def _retry_after(self, headers: Any) -> float | None:
        """Seconds asked by retry-after-ms / Retry-After (seconds or HTTP date), capped at backoff_max."""
        seconds = None
        if (ms := headers.get("retry-after-ms")) is not None:
            seconds = _to_float(ms, 1e-3)
        elif (value := headers.get("retry-after")) is not None:
            seconds = _to_float(value, 1.0)
            if seconds is None:
                try:
                    seconds = parsedate_to_datetime(value).timestamp() - time.time()
                except (TypeError, ValueError):
                    seconds = None
        if seconds is None:
            return None
        return min(max(seconds, 0.0), self.config.backoff_max) + random.uniform(0, 0.05)

    # -- helpers ----------------------------------------------------------------------------

    def _client(self) -> Any:
        cfg = self.config
        base_url = os.environ.get(cfg.base_url_env) or None
        key = os.environ.get(cfg.api_key_env)
        if not key:
            if base_url is None or cfg.azure_api_version is not None:
                raise JudgeError(
                    f"no API key: set the environment variable {cfg.api_key_env} (the judge config's "
                    "`api_key_env` names the variable to read)."
                )
            key = "EMPTY"  # local servers such as vLLM accept any key
        common = dict(api_key=key, max_retries=0, timeout=cfg.timeout)
        if cfg.azure_api_version is not None:
            if base_url is None:
                raise JudgeError(f"Azure needs its endpoint: set the environment variable {cfg.base_url_env}.")
            return openai.AsyncAzureOpenAI(azure_endpoint=base_url, api_version=cfg.azure_api_version, **common)
        return openai.AsyncOpenAI(base_url=base_url, **common)

    def _body(self, text: str) -> dict[str, Any]:
        """The chat-completions request body for one judge prompt."""
        cfg = self.config
        return {
            "model": cfg.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "logprobs": True,
            "top_logprobs": cfg.top_logprobs,
        }

    def _where(self) -> str:
        return os.environ.get(self.config.base_url_env) or "api.openai.com"

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.config.api_key_env)
        return text.replace(key, "***") if key else text

    def _key(self, item: JudgeItem, metric: str) -> str:
        return cache_key(self.config.model, self.prompts.prompts[metric].hash, metric, item.question, item.answer)

    def _judgment(self, item: JudgeItem, metric: str, outcome: TopLogprobs | str) -> Judgment:
        if isinstance(outcome, str):
            score, reason = None, outcome
        else:
            score, reason = aggregate(outcome, self.config.min_number_mass)
        return Judgment(item_id=item.item_id, metric=metric, score=score, reason=reason, judge=self.judge_id(metric))

    # -- OpenAI Batch API ---------------------------------------------------------------------

    def write_batch_requests(self, items: Sequence[JudgeItem], path: str | Path) -> int:
        """Write the Batch API request JSONL for the (item, metric) pairs not cached; returns their number.

        Each line's custom_id is '<metric>|<item_id>'. Submit with `submit_batch`.
        """
        lines = []
        for item, metric in judge_pairs(items, self.metrics):
            if self.cache.get(self._key(item, metric)) is not None:
                continue
            body = self._body(self.prompts.prompts[metric].render(item.question, item.answer))
            lines.append({"custom_id": f"{metric}|{item.item_id}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        write_text_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        return len(lines)

    def parse_batch_output(self, items: Sequence[JudgeItem], path: str | Path) -> list[Judgment]:
        """Judgments from a Batch API output JSONL (cached pairs from the cache); caches new replies.

        A line with an error, a non-200 status or no logprobs, and a pair absent from the file,
        end as score None with reason 'error: ...'; the failure-rate check then applies.
        """
        replies = {row.get("custom_id"): row for row in read_jsonl(path)}
        judgments = []
        for item, metric in judge_pairs(items, self.metrics):
            key = self._key(item, metric)
            outcome: TopLogprobs | str | None = self.cache.get(key)
            if outcome is None:
                outcome = _batch_outcome(replies.get(f"{metric}|{item.item_id}"))
                if not isinstance(outcome, str):
                    self.cache.put(key, metric, self.judge_id(metric), outcome)
            judgments.append(self._judgment(item, metric, outcome))
        self.cache.flush()
        check_failure_rate(judgments, self.config.max_failure_rate)
        return judgments

    def submit_batch(self, request_path: str | Path) -> str:
        """Upload a request file and create a 24 h batch; returns the batch id (needs network)."""
        client = self._sync_client()
        with open(request_path, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        return batch.id

    def download_batch(self, batch_id: str, output_path: str | Path) -> str:
        """Save a finished batch's output file to `output_path`; returns the batch status (needs network)."""
        client = self._sync_client()
        batch = client.batches.retrieve(batch_id)
        if batch.status == "completed" and batch.output_file_id:
            content = client.files.content(batch.output_file_id).read()
            with atomic_path(output_path) as tmp:
                tmp.write_bytes(content)
        return batch.status

    def _sync_client(self) -> Any:
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise JudgeError(f"no API key: set the environment variable {self.config.api_key_env}.")
        return openai.OpenAI(api_key=key, base_url=os.environ.get(self.config.base_url_env) or None, timeout=self.config.timeout)


def top_logprobs_of(body: dict[str, Any]) -> TopLogprobs:
    """The first token's (token, logprob) list from a chat-completion body; raises _Retryable if absent."""
    try:
        first = body["choices"][0]["logprobs"]["content"][0]
        top = [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]]
    except (KeyError, IndexError, TypeError, ValueError):
        raise _Retryable("response has no logprobs") from None
    if not top:
        raise _Retryable("response has empty top_logprobs")
    return top


def check_failure_rate(judgments: Sequence[Judgment], max_rate: float) -> None:
    """Raise JudgeFailureRateError when more than `max_rate` of the judgments are errors."""
    errors = [j for j in judgments if j.reason is not None and j.reason.startswith("error")]
    if judgments and len(errors) > max_rate * len(judgments):
        examples = "; ".join(sorted({j.reason or "" for j in errors})[:3])
        raise JudgeFailureRateError(
            f"{len(errors)} of {len(judgments)} judgments failed ({len(errors) / len(judgments):.1%} > "
            f"max_failure_rate {max_rate:.1%}); e.g. {examples}. Successful replies are cached: rerun to retry "
            "the failures, or raise max_failure_rate.",
            list(judgments),
        )


def _batch_outcome(row: dict[str, Any] | None) -> TopLogprobs | str:
    if row is None:
        return "error: missing from the batch output"
    if row.get("error"):
        return f"error: batch error {str(row['error'])[:200]}"
    response = row.get("response") or {}
    if response.get("status_code") != 200:
        return f"error: batch HTTP {response.get('status_code')}"
    try:
        return top_logprobs_of(response.get("body") or {})
    except _Retryable as e:
        return f"error: {e.reason}"


def _to_float(text: str, scale: float) -> float | None:
    try:
        return float(text) * scale
    except ValueError:
        return None
