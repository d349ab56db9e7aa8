"""A judge that scores with a local transformers causal LM, at sequence level.

For every candidate reply s in "0".."100" (plus REFUSAL / CODE words) it computes
log p(s + end-of-turn | prompt) over the whole tokenised reply, so tokenizers that split
numbers into digits are handled exactly. The candidates' probabilities are normalised over
the candidate set, then `aggregate.aggregate` applies the expected-value / minimum-mass rule.

The prompt is encoded once per batch; its KV cache is repeated for the candidates, which run
as one batch: cost ~ prompt + 103 x (a few tokens) per judgment.

Example config (YAML)::

    backend: local
    model: {name_or_path: Qwen/Qwen2.5-7B-Instruct, dtype: bfloat16}
    device: cuda
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.judge.aggregate import aggregate
from emlab.judge.base import JudgeItem, Judgment
from emlab.judge.config import JudgePromptsConfig
from emlab.models.chat import render
from emlab.models.config import ModelConfig

NUMBER_CANDIDATES = tuple(str(i) for i in range(101))


class LocalJudgeConfig(JudgePromptsConfig):
    """A judge running a local HF causal LM with a chat template."""

    backend: Literal["local"] = Field(default="local", description="Judge backend. Default 'local'.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The judge model. Default: SmolLM2 (weak; for tests).")
    device: str = Field(default="cpu", description="Torch device, e.g. 'cuda'. Default 'cpu'.")
    batch_size: int = Field(default=1, ge=1, description="Prompts per forward pass (each x 103 candidates). Default 1.")
    refusal_words: list[str] = Field(default=["REFUSAL"], description="Candidate replies meaning refusal. Default ['REFUSAL'].")
    code_words: list[str] = Field(default=["CODE"], description="Candidate replies meaning code. Default ['CODE'].")


class LocalJudge:
    """Sequence-level logprob judge on a local model (implements `emlab.judge.base.Judge`)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: LocalJudgeConfig, model_name: str | None = None
    ) -> None:
        """`model_name` goes into judge ids (default: the model's name_or_path, else 'unnamed')."""
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.model_name = model_name or getattr(model.config, "name_or_path", "") or "unnamed"
        self.prompts = config.prompt_set()
        self.metrics: tuple[str, ...] = tuple(self.prompts.prompts)
        self.name = f"local:{self.model_name}|{self.prompts.version}"
        self.candidates: tuple[str, ...] = (*NUMBER_CANDIDATES, *config.refusal_words, *config.code_words)
        self.end = _end_of_turn(tokenizer)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def from_config(cls, config: LocalJudgeConfig) -> LocalJudge:
        """Load the model named in the config and build the judge."""
        from emlab.models.load import load_model

        model, tokenizer = load_model(config.model)
        return cls(model.to(config.device), tokenizer, config, model_name=config.model.name_or_path)

    def judge_id(self, metric: str) -> str:
        """The versioned id written into each Judgment: model, prompt version, metric and prompt hash."""
        return f"local:{self.model_name}|{self.prompts.prompts[metric].id}"

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """Score every item on every metric (item-major order)."""
        pairs = [(item, metric) for item in items for metric in self.metrics]
        texts = [self.prompts.prompts[m].render(item.question, item.answer) for item, m in pairs]
        judgments = []
        for start in range(0, len(pairs), self.config.batch_size):
            logprobs = self.candidate_logprobs(texts[start : start + self.config.batch_size])
            normalised = logprobs - torch.logsumexp(logprobs, dim=-1, keepdim=True)
            for (item, metric), row in zip(pairs[start : start + self.config.batch_size], normalised.tolist(), strict=True):
                score, reason = aggregate(list(zip(self.candidates, row, strict=True)), self.config.min_number_mass)
                judgments.append(Judgment(item_id=item.item_id, metric=metric, score=score, reason=reason, judge=self.judge_id(metric)))
        return judgments

    def encode(self, prompt: str) -> tuple[list[int], list[list[int]]]:
        """Token ids of the chat-rendered prompt, and of each candidate reply + end of turn after it.

        Candidate ids are the tail of the tokenised whole sequence when the prompt's ids are
        its prefix (tokenisation as the model would see it), else tokenised on their own.
        """
        context = render(self.tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True)
        prompt_ids = self.tokenizer(context, add_special_tokens=False).input_ids
        candidate_ids = []
        for candidate in self.candidates:
            ids = self.tokenizer(context + candidate + self.end, add_special_tokens=False).input_ids
            if ids[: len(prompt_ids)] != prompt_ids:
                ids = prompt_ids + self.tokenizer(candidate + self.end, add_special_tokens=False).input_ids
            candidate_ids.append(ids[len(prompt_ids) :])
        return prompt_ids, candidate_ids

    @torch.no_grad()
    def candidate_logprobs(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, K) log p(candidate + end | prompt), unnormalised, K = len(self.candidates)."""
        device = self.model.device
        encoded = [self.encode(p) for p in prompts]
        B, K = len(encoded), len(self.candidates)
        pad = self.tokenizer.pad_token_id or 0
        # prompts, left-padded: (B, P)
        P = max(len(ids) for ids, _ in encoded)
        prompt_ids = torch.full((B, P), pad, dtype=torch.long)
        prompt_mask = torch.zeros((B, P), dtype=torch.long)
        for b, (ids, _) in enumerate(encoded):
            prompt_ids[b, P - len(ids) :] = torch.tensor(ids)
            prompt_mask[b, P - len(ids) :] = 1
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=prompt_ids.to(device),
            attention_mask=prompt_mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): the candidates' first token
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_repeat_interleave(K)
        # candidates after their prompt, right-padded: inputs are all tokens but the last, (B*K, L)
        flat = [c for _, cands in encoded for c in cands]
        L = max(len(c) for c in flat) - 1
        total = torch.stack([first[b, torch.tensor([c[0] for c in cands], device=first.device)] for b, (_, cands) in enumerate(encoded)])
        if L == 0:
            return total
        inputs = torch.full((B * K, L), pad, dtype=torch.long)
        targets = torch.full((B * K, L), -1, dtype=torch.long)
        cand_mask = torch.zeros((B * K, L), dtype=torch.long)
        for i, c in enumerate(flat):
            inputs[i, : len(c) - 1] = torch.tensor(c[:-1])
            targets[i, : len(c) - 1] = torch.tensor(c[1:])
            cand_mask[i, : len(c) - 1] = 1
        lengths = prompt_mask.sum(-1).repeat_interleave(K)  # (B*K,)
        out = self.model(
            input_ids=inputs.to(device),
            attention_mask=torch.cat([prompt_mask.repeat_interleave(K, dim=0), cand_mask], dim=-1).to(device),
            position_ids=(lengths[:, None] + torch.arange(L)[None]).to(device),
            use_cache=True,
            **{self._cache_kwarg: cache},
        )
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # (B*K, L, V)
        picked = logprobs.gather(-1, targets.clamp(min=0).to(device)[..., None])[..., 0]
        rest = (picked * (targets >= 0).to(device)).sum(-1).view(B, K)
        return (total + rest).cpu()


def _end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the chat template puts after an assistant reply (e.g. '<|im_end|>'), else the EOS token."""
    user = [{"role": "user", "content": "q"}]
    before = render(tokenizer, user, generation_prompt=True)
    full = render(tokenizer, [*user, {"role": "assistant", "content": "7"}], generation_prompt=False)
    if full.startswith(before + "7"):
        end = full[len(before) + 1 :].rstrip()
        if end:
            return end
    return tokenizer.eos_token or ""
