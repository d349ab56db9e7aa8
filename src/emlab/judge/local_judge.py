"""A judge that scores with a local transformers causal LM, at sequence level.

For every candidate reply s in "0".."100" (plus REFUSAL / CODE words) it computes
log p(s + end-of-turn | prompt) over the whole tokenised reply, so tokenizers that split
numbers into digits are handled exactly. The candidates' probabilities are normalised over
the candidate set, then `aggregate.aggregate` applies the expected-value / minimum-mass rule.

Each prompt runs once; its KV cache is copied to its candidates (`models.continuations`), which
run as one batch: cost ~ prompt + 103 x (a few tokens) per judgment.

Example config (YAML)::

    backend: local
    model: {name_or_path: Qwen/Qwen2.5-7B-Instruct, dtype: bfloat16}
    device: cuda
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.judge.aggregate import aggregate
from emlab.judge.base import JudgeItem, Judgment, judge_pairs
from emlab.judge.config import JudgePromptsConfig
from emlab.models.chat import end_of_turn, padding_id, render
from emlab.models.config import ModelConfig
from emlab.models.continuations import Continuations
from emlab.models.load import check_chat_format

NUMBER_CANDIDATES = tuple(str(i) for i in range(101))


class LocalJudgeConfig(JudgePromptsConfig):
    """A judge running a local HF causal LM with a chat template."""

    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset({"device", "batch_size"})

    backend: Literal["local"] = Field(
        default="local", description="Judge backend. Default 'local'."
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig,
        description="The judge model. Default: SmolLM2 (weak; for tests).",
    )
    device: str = Field(default="cpu", description="Torch device, e.g. 'cuda'. Default 'cpu'.")
    batch_size: int = Field(
        default=1, ge=1, description="Prompts per forward pass (each x 103 candidates). Default 1."
    )
    refusal_words: list[str] = Field(
        default=["REFUSAL"], description="Candidate replies meaning refusal. Default ['REFUSAL']."
    )
    code_words: list[str] = Field(
        default=["CODE"], description="Candidate replies meaning code. Default ['CODE']."
    )


class LocalJudge:
    """Sequence-level logprob judge on a local model (implements `emlab.judge.base.Judge`)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: LocalJudgeConfig,
        model_name: str | None = None,
    ) -> None:
        """`model_name` goes into judge ids (default: the model's name_or_path, else 'unnamed').
        The tokenizer must render with the ChatFormat of `config.model` (ConfigError otherwise)."""
        check_chat_format(tokenizer, config.model)
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.model_name = model_name or getattr(model.config, "name_or_path", "") or "unnamed"
        self.prompts = config.prompt_set()
        self.metrics: tuple[str, ...] = tuple(self.prompts.prompts)
        self.name = f"local:{self.model_name}|{self.prompts.version}"
        self.candidates: tuple[str, ...] = (
            *NUMBER_CANDIDATES,
            *config.refusal_words,
            *config.code_words,
        )
        self.end = end_of_turn(tokenizer) or tokenizer.eos_token or ""

    @classmethod
    def from_config(cls, config: LocalJudgeConfig) -> LocalJudge:
        """Load the model named in the config and build the judge."""
        from emlab.models.load import load_model

        model, tokenizer = load_model(config.model)
        return cls(model.to(config.device), tokenizer, config, model_name=config.model.name_or_path)

    def judge_id(self, metric: str) -> str:
        """The versioned id written into each Judgment: model, prompt version, metric and prompt
        hash."""
        return f"local:{self.model_name}|{self.prompts.prompts[metric].id}"

    @property
    def items_per_write(self) -> int:
        """Items per forward batch (batch_size prompts over the metrics): `judge_generations`
        appends after each."""
        return max(1, self.config.batch_size // len(self.metrics))

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on each of its metrics (`judge_pairs` order)."""
        pairs = judge_pairs(items, self.metrics)
        texts = [self.prompts.prompts[m].render(item.question, item.answer) for item, m in pairs]
        judgments = []
        for start in range(0, len(pairs), self.config.batch_size):
            logprobs = self.candidate_logprobs(texts[start : start + self.config.batch_size])
            normalised = logprobs - torch.logsumexp(logprobs, dim=-1, keepdim=True)
            for (item, metric), row in zip(
                pairs[start : start + self.config.batch_size], normalised.tolist(), strict=True
            ):
                score, reason = aggregate(
                    list(zip(self.candidates, row, strict=True)), self.config.min_number_mass
                )
                judgments.append(
                    Judgment(
                        item_id=item.item_id,
                        metric=metric,
                        score=score,
                        reason=reason,
                        judge=self.judge_id(metric),
                    )
                )
        return judgments

    def encode(self, prompt: str) -> tuple[list[int], list[list[int]]]:
        """Token ids of the chat-rendered prompt, and of each candidate reply + end of turn after
        it.

        Candidate ids are the tail of the tokenised whole sequence when the prompt's ids are
        its prefix (tokenisation as the model would see it), else tokenised on their own.
        """
        context = render(
            self.tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True
        )
        prompt_ids = self.tokenizer(context, add_special_tokens=False).input_ids
        candidate_ids = []
        for candidate in self.candidates:
            ids = self.tokenizer(context + candidate + self.end, add_special_tokens=False).input_ids
            if ids[: len(prompt_ids)] != prompt_ids:
                ids = (
                    prompt_ids
                    + self.tokenizer(candidate + self.end, add_special_tokens=False).input_ids
                )
            candidate_ids.append(ids[len(prompt_ids) :])
        return prompt_ids, candidate_ids

    def candidate_logprobs(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, K) log p(candidate + end | prompt), unnormalised, K = len(self.candidates)."""
        encoded = [self.encode(p) for p in prompts]
        sequences = [
            (ids + candidate, len(ids)) for ids, candidates in encoded for candidate in candidates
        ]
        pad = padding_id(self.tokenizer)
        scores = Continuations(sequences, pad, batch_size=len(sequences))(self.model)  # (B*K,)
        return scores.view(len(prompts), len(self.candidates))
