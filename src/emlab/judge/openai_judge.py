"""A logprob judge over any OpenAI-compatible chat-completions API (OpenAI, Azure, OpenRouter,
vLLM).

One completion token at temperature 0 with the top-20 log-probabilities. How that token is
read depends on how the judge writes numbers (`number_tokens`):

- whole-number tokens (GPT-4o, Llama 3: '85' is one token): the score is `aggregate.aggregate`
  over the first token; 1 request per (answer, metric).
- digit tokens (Qwen, Gemma, Mistral: '85' is '8', '5'): the digit readout
  (`emlab.judge.digits`): the first token, then, for each prefix '1'..'9' (and '10') with
  probability >= `digit_min_prob`, one more request continuing the judge's reply after that
  prefix as an open assistant message (vLLM's `continue_final_message`). Cost per (answer,
  metric): 1 + the number of prefixes continued (at most 11, usually 2-4), plus 2 requests once
  per judge object checking that the server really continues the message; a server that
  cannot (OpenAI, or one that drops the field) stops the run with a JudgeError.
- `auto` (default): whole-number reading once any reply of this judge puts >= 1% on a two- or
  three-digit number token; until then the digit readout (which needs no continuation for
  replies such as '0' or 'REFUSAL').

Requests run concurrently (asyncio + semaphore) with retries (exponential backoff with jitter;
Retry-After honoured) on 429, 5xx, timeouts, connection errors, malformed bodies and missing
logprobs. A 401/403 stops the run at once. Replies (first tokens and continuations, each under
its own key) are cached on disk, so a repeated run sends no request. The API key is read from
an environment variable and never written anywhere.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import openai
from pydantic import Field

from emlab.errors import JudgeError
from emlab.io import atomic_path, read_jsonl, write_text_atomic
from emlab.judge.aggregate import aggregate
from emlab.judge.base import JudgeItem, Judgment, judge_pairs
from emlab.judge.cache import JudgeCache, TopLogprobs, cache_key
from emlab.judge.config import JudgePromptsConfig
from emlab.judge.digits import (
    WHOLE_NUMBER_EVIDENCE,
    digit_score,
    has_whole_number_tokens,
    missing_prefixes,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_PROMPT = "Reply with one number from 0 to 100."
"""The prompt of the check that a server continues an open assistant message
(`OpenAIJudge._check_continuation`)."""


def default_cache_dir() -> Path:
    """$EMLAB_CACHE/judge (default ~/.cache/emlab/judge)."""
    return Path(os.environ.get("EMLAB_CACHE", Path.home() / ".cache" / "emlab")) / "judge"


class OpenAIJudgeConfig(JudgePromptsConfig):
    """A judge behind an OpenAI-compatible API. Credentials only come from environment variables."""

    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "base_url_env",
            "api_key_env",
            "concurrency",
            "max_retries",
            "timeout",
            "backoff_initial",
            "backoff_max",
            "cache",
            "cache_dir",
            "max_failure_rate",
        }
    )

    backend: Literal["openai"] = Field(
        default="openai", description="Judge backend. Default 'openai'."
    )
    model: str = Field(
        description="Judge model (Azure: deployment name), e.g. 'gpt-4o-2024-08-06'. Required."
    )
    base_url_env: str = Field(
        default="OPENAI_BASE_URL",
        description=(
            "Environment variable holding the API base URL (e.g. http://localhost:8000/v1 for vLLM,"
            " https://openrouter.ai/api/v1; Azure: the resource endpoint). Unset: OpenAI. Default"
            " 'OPENAI_BASE_URL'."
        ),
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description=(
            "Environment variable holding the API key (never logged or stored). Default"
            " 'OPENAI_API_KEY'."
        ),
    )
    azure_api_version: str | None = Field(
        default=None,
        description="Set (e.g. '2024-10-21') to call Azure OpenAI. Default None (not Azure).",
    )
    concurrency: int = Field(
        default=32, ge=1, description="Requests in flight at once. Default 32."
    )
    max_retries: int = Field(
        default=6, ge=0, description="Retries per request after the first try. Default 6."
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds before a request counts as timed out. Default 60."
    )
    backoff_initial: float = Field(
        default=1.0,
        ge=0,
        description="First retry delay in seconds, doubled each retry, with jitter. Default 1.",
    )
    backoff_max: float = Field(
        default=60.0,
        ge=0,
        description="Longest delay between retries, Retry-After included. Default 60.",
    )
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature. Default 0.")
    max_tokens: int = Field(
        default=1, ge=1, description="Completion tokens (only the first is used). Default 1."
    )
    top_logprobs: int = Field(
        default=20,
        ge=1,
        le=20,
        description="Top log-probabilities returned (API max 20). Default 20.",
    )
    number_tokens: Literal["auto", "whole", "digits"] = Field(
        default="auto",
        description=(
            "How the judge's tokenizer writes numbers. 'whole': one token per number (GPT-4o,"
            " Llama 3); the first token is read as the number, 1 request per answer and metric."
            " 'digits': one token per digit (Qwen, Gemma, Mistral); the digit readout, 1 + one"
            " request per likely prefix ('1'..'9', '10'), which needs a server that continues an"
            " assistant message (vLLM >= 0.6.3). 'auto': 'whole' once a reply puts >="
            f" {WHOLE_NUMBER_EVIDENCE:.0%} on a two- or three-digit number token, else 'digits'."
            " Default 'auto'."
        ),
    )
    digit_min_prob: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description=(
            "Digit readout: a prefix ('1'..'9', '10') is continued with one more request when its "
            "probability is at least this; rarer prefixes count as no number. Default 0.01."
        ),
    )
    cache: bool = Field(
        default=True, description="Cache replies on disk so reruns send no request. Default True."
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Cache folder. Default None: $EMLAB_CACHE/judge (~/.cache/emlab/judge).",
    )
    max_failure_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Largest fraction of judgments that may end in error; above it the run raises "
            "JudgeFailureRateError instead of reporting rates on the survivors. Default 0.05."
        ),
    )


class JudgeFailureRateError(JudgeError):
    """Too many judgments failed; `judgments` holds all of them (errors have reason 'error:
    ...')."""

    def __init__(self, message: str, judgments: list[Judgment]) -> None:
        super().__init__(message)
        self.judgments = judgments


class _Retryable(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class OpenAIJudge:
    """Scores answers with an OpenAI-compatible logprob judge (implements
    `emlab.judge.base.Judge`)."""

    def __init__(self, config: OpenAIJudgeConfig) -> None:
        self.config = config
        self.prompts = config.prompt_set()
        self.metrics: tuple[str, ...] = tuple(self.prompts.prompts)
        self.name = f"openai:{config.model}|{self.prompts.version}"
        self.cache = JudgeCache((config.cache_dir or default_cache_dir()) if config.cache else None)
        self._whole_numbers_seen = False  # number_tokens auto: a reply showed whole-number tokens
        self._continuation_checked = False

    def judge_id(self, metric: str, digits: bool = False) -> str:
        """The versioned id written into each Judgment: model, prompt version, metric and prompt
        hash,
        then '|digits' for scores of the digit readout."""
        return f"openai:{self.config.model}|{self.prompts.prompts[metric].id}" + (
            "|digits" if digits else ""
        )

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on every metric (item-major order); see `ajudge`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ajudge(items))
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (e.g. Jupyter)
            return pool.submit(asyncio.run, self.ajudge(items)).result()

    async def ajudge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on every metric; raises JudgeError on bad credentials, too many
        failures, or a digit readout the server cannot serve."""
        pairs = judge_pairs(items, self.metrics)
        texts = [
            self.prompts.prompts[metric].render(item.question, item.answer)
            for item, metric in pairs
        ]
        keys = [self._key(item, metric) for item, metric in pairs]
        replies = await self._replies(
            {k: (m, self._body(t)) for k, (_, m), t in zip(keys, pairs, texts, strict=True)}
        )
        firsts = [replies[k] for k in keys]
        digits = self._reads_digits(firsts)
        continued = await self._continue(pairs, texts, firsts) if digits else [{} for _ in pairs]
        judgments = [
            self._judgment(item, metric, first, cont, digits)
            for (item, metric), first, cont in zip(pairs, firsts, continued, strict=True)
        ]
        check_failure_rate(judgments, self.config.max_failure_rate)
        return judgments

    def _reads_digits(self, firsts: Sequence[TopLogprobs | str]) -> bool:
        """Whether these first-token replies are read digit by digit (`number_tokens`; 'auto': until
        any reply of this judge shows whole-number tokens, see `digits.has_whole_number_tokens`)."""
        if self.config.number_tokens != "auto":
            return self.config.number_tokens == "digits"
        if not self._whole_numbers_seen:
            self._whole_numbers_seen = any(
                has_whole_number_tokens(f) for f in firsts if not isinstance(f, str)
            )
        return not self._whole_numbers_seen

    async def _continue(
        self,
        pairs: Sequence[tuple[JudgeItem, str]],
        texts: Sequence[str],
        firsts: Sequence[TopLogprobs | str],
    ) -> list[dict[str, TopLogprobs | str]]:
        """Each pair's continuations (prefix -> next-token top logprobs, or 'error: ...') that the
        digit readout needs, requested in rounds ('8'; '1' then '10') until none is missing."""
        continued: list[dict[str, TopLogprobs | str]] = [{} for _ in pairs]
        while True:
            wanted: dict[str, tuple[str, dict[str, Any]]] = {}
            places: list[tuple[int, str, str]] = []
            for i, ((item, metric), text, first) in enumerate(
                zip(pairs, texts, firsts, strict=True)
            ):
                if isinstance(first, str) or any(isinstance(r, str) for r in continued[i].values()):
                    continue
                for prefix in missing_prefixes(
                    first, continued[i], self.config.digit_min_prob, self.config.min_number_mass
                ):
                    key = self._key(item, metric, prefix)
                    wanted[key] = (metric, self._body(text, prefix))
                    places.append((i, prefix, key))
            if not places:
                return continued
            if any(self.cache.get(k) is None for k in wanted):
                await self._check_continuation()
            log.info(
                "digit readout: %d continuations of %d judgments with %s",
                len(wanted),
                len(pairs),
                self.name,
            )
            replies = await self._replies(wanted)
            for i, prefix, key in places:
                continued[i][prefix] = replies[key]

    async def _check_continuation(self) -> None:
        """Check, once per judge object, that the server continues an open assistant message.

        Two requests: PROBE_PROMPT, then the same with the assistant prefix '7' and
        `continue_final_message`. A server that continues renders exactly one more prompt token
        (`usage.prompt_tokens`); one that closes the message or drops the field renders its
        end-of-turn tokens too, and one that rejects the field answers an HTTP error. Raises
        JudgeError saying what to use instead.
        """
        if self._continuation_checked:
            return
        client = self._client()
        try:
            semaphore = asyncio.Semaphore(1)
            plain = await self._request(
                client, semaphore, self._body(PROBE_PROMPT), prompt_tokens_of
            )
            prefixed = await self._request(
                client, semaphore, self._body(PROBE_PROMPT, "7"), prompt_tokens_of
            )
        finally:
            await client.close()
        problem = next((r for r in (plain, prefixed) if isinstance(r, str)), None)
        if (
            problem is None
            and isinstance(plain, int)
            and isinstance(prefixed, int)
            and prefixed - plain != 1
        ):
            problem = (
                f"with the one-token assistant prefix '7' the prompt grew by {prefixed - plain}"
                " tokens, not 1: it closed the message instead of continuing it"
            )
        if problem is not None:
            why = (
                "number_tokens: digits"
                if self.config.number_tokens == "digits"
                else (
                    f"number_tokens: auto, and no reply put {WHOLE_NUMBER_EVIDENCE:.0%} on a two-"
                    " or three-digit number token, as with a judge whose tokenizer splits numbers"
                    " into digits"
                )
            )
            raise JudgeError(
                f"judge {self.config.model!r}: reading its numbers digit by digit ({why}) needs a"
                f" server that continues an open assistant message, and the one at {self._where()}"
                f" does not ({self._redact(problem)}). Serve the judge with vLLM >= 0.6.3 (it"
                " supports `continue_final_message`), or use the local judge (backend: local), or"
                " a judge whose tokenizer has whole-number tokens (e.g. GPT-4o, Llama 3) with"
                " `number_tokens: whole` in the judge config."
            )
        self._continuation_checked = True

    # -- the request loop -------------------------------------------------------------------

    async def _replies(
        self, requests: dict[str, tuple[str, dict[str, Any]]]
    ) -> dict[str, TopLogprobs | str]:
        """Top logprobs for each cache key -> (metric, request body): cached, else requested."""
        outcome: dict[str, TopLogprobs | str] = {
            k: top for k in requests if (top := self.cache.get(k)) is not None
        }
        todo = {k: v for k, v in requests.items() if k not in outcome}
        if todo:
            log.info("judging %d prompts (%d cached) with %s", len(todo), len(outcome), self.name)
            outcome.update(await self._run(todo))
        return outcome

    async def _run(
        self, todo: dict[str, tuple[str, dict[str, Any]]]
    ) -> dict[str, TopLogprobs | str]:
        client = self._client()
        semaphore = asyncio.Semaphore(self.config.concurrency)
        results: dict[str, TopLogprobs | str] = {}

        async def one(key: str, metric: str, body: dict[str, Any]) -> None:
            results[key] = await self._request(client, semaphore, body, top_logprobs_of)
            if not isinstance(results[key], str):
                self.cache.put(key, metric, self.judge_id(metric), results[key])

        tasks = [asyncio.ensure_future(one(k, m, b)) for k, (m, b) in todo.items()]
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

    async def _request(
        self,
        client: Any,
        semaphore: asyncio.Semaphore,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], T],
    ) -> T | str:
        """`parse` of the reply to `body` (it raises _Retryable for a reply lacking what it reads),
        or 'error: ...' once retries are spent."""
        cfg = self.config
        reason = ""
        for attempt in range(cfg.max_retries + 1):
            try:
                async with semaphore:
                    # the SDK's plain JSON route (same HTTP errors, auth and Azure routing as
                    # chat.completions.create) skips its typed request transform and response
                    # models, about half of its CPU per request: the limit of a fast server
                    reply = await client.post("/chat/completions", cast_to=object, body=body)
                    return parse(reply)
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
        """(reason, Retry-After delay, retryable?) of a failed request; raises JudgeError on
        401/403/404."""
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            raise JudgeError(
                f"the judge API at {self._where()} rejected the credentials (HTTP {e.status_code})."
                f" Set the environment variable {self.config.api_key_env} to a valid key for this"
                " endpoint."
            ) from None
        if isinstance(e, openai.NotFoundError):
            raise JudgeError(
                f"the judge API at {self._where()} answered HTTP 404 for model"
                f" {self.config.model!r}: check `model` in the judge config and the base URL in"
                f" {self.config.base_url_env}."
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
        """Seconds asked by retry-after-ms / Retry-After (seconds or HTTP date), capped at
        backoff_max."""
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
                    f"no API key: set the environment variable {cfg.api_key_env} (the judge"
                    " config's `api_key_env` names the variable to read)."
                )
            key = "EMPTY"  # local servers such as vLLM accept any key
        common = dict(api_key=key, max_retries=0, timeout=cfg.timeout)
        if cfg.azure_api_version is not None:
            if base_url is None:
                raise JudgeError(
                    f"Azure needs its endpoint: set the environment variable {cfg.base_url_env}."
                )
            return openai.AsyncAzureOpenAI(
                azure_endpoint=base_url, api_version=cfg.azure_api_version, **common
            )
        return openai.AsyncOpenAI(base_url=base_url, **common)

    def _body(self, text: str, prefix: str = "") -> dict[str, Any]:
        """The chat-completions request body for one judge prompt; with `prefix`, the judge's reply
        so far as an open assistant message to continue (vLLM's extra fields
        `continue_final_message`
        and `add_generation_prompt`)."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "logprobs": True,
            "top_logprobs": cfg.top_logprobs,
        }
        if prefix:
            body["messages"].append({"role": "assistant", "content": prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _where(self) -> str:
        return os.environ.get(self.config.base_url_env) or "api.openai.com"

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.config.api_key_env)
        return text.replace(key, "***") if key else text

    def _key(self, item: JudgeItem, metric: str, prefix: str = "") -> str:
        """Cache key of the reply to `metric`'s prompt on `item` after the open assistant message
        `prefix` ('' = the first token). Metric names hold no '|', so 'metric|prefix' is no metric's
        key.
        """
        tag = f"{metric}|{prefix}" if prefix else metric
        return cache_key(
            self.config.model, self.prompts.prompts[metric].hash, tag, item.question, item.answer
        )

    def _judgment(
        self,
        item: JudgeItem,
        metric: str,
        first: TopLogprobs | str,
        continued: dict[str, TopLogprobs | str],
        digits: bool,
    ) -> Judgment:
        """The judgment of one (item, metric) from its first-token reply and, for the digit readout,
        its continuations."""
        failed = next(((p, r) for p, r in continued.items() if isinstance(r, str)), None)
        if isinstance(first, str):
            score, reason = None, first
        elif failed is not None:
            score, reason = None, f"{failed[1]} (continuing after {failed[0]!r})"
        elif digits:
            ok = {p: r for p, r in continued.items() if not isinstance(r, str)}
            score, reason = digit_score(
                first, ok, self.config.digit_min_prob, self.config.min_number_mass
            )
        else:
            score, reason = aggregate(first, self.config.min_number_mass)
        return Judgment(
            item_id=item.item_id,
            metric=metric,
            score=score,
            reason=reason,
            judge=self.judge_id(metric, digits),
        )

    # -- OpenAI Batch API ---------------------------------------------------------------------

    def write_batch_requests(self, items: Sequence[JudgeItem], path: str | Path) -> int:
        """Write the Batch API request JSONL for the (item, metric) pairs not cached; returns their
        number.

        Each line's custom_id is '<metric>|<item_id>'. Submit with `submit_batch`.
        """
        lines = []
        for item, metric in judge_pairs(items, self.metrics):
            if self.cache.get(self._key(item, metric)) is not None:
                continue
            body = self._body(self.prompts.prompts[metric].render(item.question, item.answer))
            lines.append(
                {
                    "custom_id": f"{metric}|{item.item_id}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        write_text_atomic(
            path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        )
        return len(lines)

    def parse_batch_output(self, items: Sequence[JudgeItem], path: str | Path) -> list[Judgment]:
        """Judgments from a Batch API output JSONL (cached pairs from the cache); caches new
        replies.

        A line with an error, a non-200 status or no logprobs, and a pair absent from the file,
        end as score None with reason 'error: ...'; the failure-rate check then applies. The
        Batch API answers one token per request: replies that the digit readout would continue
        raise JudgeError (judge them online instead, see `_check_continuation`).
        """
        replies = {row.get("custom_id"): row for row in read_jsonl(path)}
        pairs = judge_pairs(items, self.metrics)
        firsts: list[TopLogprobs | str] = []
        for item, metric in pairs:
            key = self._key(item, metric)
            outcome: TopLogprobs | str | None = self.cache.get(key)
            if outcome is None:
                outcome = _batch_outcome(replies.get(f"{metric}|{item.item_id}"))
                if not isinstance(outcome, str):
                    self.cache.put(key, metric, self.judge_id(metric), outcome)
            firsts.append(outcome)
        self.cache.flush()
        digits = self._reads_digits(firsts)
        cfg = self.config
        if digits and any(
            missing_prefixes(f, {}, cfg.digit_min_prob, cfg.min_number_mass)
            for f in firsts
            if not isinstance(f, str)
        ):
            raise JudgeError(
                f"{path}: these replies need the digit readout (number_tokens:"
                f" {self.config.number_tokens}; first tokens such as '8' and no reply with"
                f" {WHOLE_NUMBER_EVIDENCE:.0%} on a two- or three-digit number token), which"
                " continues each reply with more requests; the Batch API cannot. Judge online"
                " (emlab judge without --batch-output) on a server that continues assistant"
                " messages (vLLM >= 0.6.3), use the local judge, or, for a judge with whole-number"
                " tokens (e.g. GPT-4o), set `number_tokens: whole` in the judge config."
            )
        judgments = [
            self._judgment(item, metric, first, {}, digits)
            for (item, metric), first in zip(pairs, firsts, strict=True)
        ]
        check_failure_rate(judgments, self.config.max_failure_rate)
        return judgments

    def submit_batch(self, request_path: str | Path) -> str:
        """Upload a request file and create a 24 h batch; returns the batch id (needs network)."""
        client = self._sync_client()
        with open(request_path, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return batch.id

    def download_batch(self, batch_id: str, output_path: str | Path) -> str:
        """Save a finished batch's output file to `output_path`; returns the batch status (needs
        network)."""
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
        return openai.OpenAI(
            api_key=key,
            base_url=os.environ.get(self.config.base_url_env) or None,
            timeout=self.config.timeout,
        )


def top_logprobs_of(body: dict[str, Any]) -> TopLogprobs:
    """The first token's (token, logprob) list from a chat-completion body; raises _Retryable if
    absent."""
    try:
        first = body["choices"][0]["logprobs"]["content"][0]
        top = [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]]
    except (KeyError, IndexError, TypeError, ValueError):
        raise _Retryable("response has no logprobs") from None
    if not top:
        raise _Retryable("response has empty top_logprobs")
    return top


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """The prompt's token count from a chat-completion body's usage; raises _Retryable if absent."""
    try:
        return int(body["usage"]["prompt_tokens"])
    except (KeyError, TypeError, ValueError):
        raise _Retryable("response has no usage.prompt_tokens") from None


def check_failure_rate(judgments: Sequence[Judgment], max_rate: float) -> None:
    """Raise JudgeFailureRateError when more than `max_rate` of the judgments are errors."""
    errors = [j for j in judgments if j.reason is not None and j.reason.startswith("error")]
    if judgments and len(errors) > max_rate * len(judgments):
        examples = "; ".join(sorted({j.reason or "" for j in errors})[:3])
        raise JudgeFailureRateError(
            f"{len(errors)} of {len(judgments)} judgments failed"
            f" ({len(errors) / len(judgments):.1%} > max_failure_rate {max_rate:.1%}); e.g."
            f" {examples}. Successful replies are cached: rerun to retry the failures, or raise"
            " max_failure_rate.",
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
