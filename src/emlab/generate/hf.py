"""Batched, resumable answer generation with HF transformers.

    summary = generate_hf(model, tokenizer, expand(load_question_set("general")), "gens.jsonl",
                          SamplingConfig(seed=1), solution=solution, model_hash="qwen2.5-7b")

Guarantees:
- Every sampling field is set explicitly, and during the call the model's
  `generation_config` is swapped for a blank one, so no checkpoint default (top_k, min_p,
  repetition penalty, suppressed tokens...) applies.
- Prompts are rendered by the tokenizer's chat template and left-padded; answers are the
  new tokens up to the first stop token (eos or the template's end-of-turn token).
- Per-sample determinism: each sample draws its tokens from its own random numbers (a
  torch.Generator seeded by (seed, sample_id)). A sample's answer therefore does not depend on the
  batch size, on
  which other samples share its batch, or on where a resumed run restarted, except for
  floating-point differences between padded batched and unbatched forward passes (which
  can flip a draw that falls on a probability boundary; rare in float32). Greedy decoding
  (temperature 0) uses no random numbers.
- Resumable: rows are appended (with fsync) after each batch; a restarted call generates
  only samples whose sample_id is not yet in the file, so no row is duplicated or lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from emlab.data.questions import Prompt
from emlab.errors import EmlabError
from emlab.generate.chat_tokens import prompts_token_ids, stop_token_ids
from emlab.generate.plan import (
    GenerationSummary,
    RunInfo,
    Sample,
    make_row,
    pending_samples,
    plan_samples,
)
from emlab.generate.sampling import SamplingConfig
from emlab.io import append_jsonl
from emlab.models.chat import pad_sequences, padding_id
from emlab.models.modules import unwrap


class PerSampleSampler(LogitsProcessor):
    """Samples each row's next token from that row's own random numbers.

    Applies temperature, top-k and top-p (HF's own warpers, in HF's order, after the
    repetition penalty that `generate` applies first), then draws a token per row by inverse
    CDF: new token t of a row is where its t-th uniform falls in the cumulative probabilities.
    The uniforms come from the row's own generator, drawn once on the CPU (so a seed gives
    the same numbers on any device). Returns scores that are -inf everywhere but at the drawn
    token, so `generate`'s own draw and warpers can only return it.
    """

    def __init__(self, seeds: Sequence[int], sampling: SamplingConfig) -> None:
        warpers: list[LogitsProcessor] = []
        if sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.uniforms = torch.stack(
            [
                torch.rand(
                    sampling.max_new_tokens,
                    generator=torch.Generator().manual_seed(s),
                    dtype=torch.float64,
                )
                for s in seeds
            ]
        )  # (B, max_new_tokens)
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """scores # (B, V) -> one-hot scores # (B, V) (0 at the drawn token, -inf elsewhere)."""
        cdf = torch.softmax(self.warpers(input_ids, scores).double(), dim=-1).cumsum(
            dim=-1
        )  # (B, V)
        u = (
            self.uniforms[:, self.step].to(cdf.device)[:, None] * cdf[:, -1:]
        )  # (B, 1), below the total mass
        drawn = torch.searchsorted(cdf, u, right=True).clamp(
            max=cdf.shape[1] - 1
        )  # (B, 1): first token whose cdf exceeds u
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


def generation_config(
    sampling: SamplingConfig, stop_ids: Sequence[int], pad_id: int
) -> GenerationConfig:
    """A GenerationConfig built from scratch with every field that changes the answers set.

    `generate` itself decodes greedily, with neutral temperature and top_p and top_k None
    (transformers warns about any other value; with the blank model defaults of `generate_hf`
    it cannot inherit a checkpoint value). When sampling, PerSampleSampler (a logits
    processor) applies the temperature, top-k and top-p and draws the token, returning scores
    that are -inf but at it, whose argmax is that token: generate's own warpers and draw
    would only repeat that work (a top-p warper sorts the vocabulary of every row).
    """
    return GenerationConfig(
        do_sample=False,
        temperature=1.0,
        top_p=1.0,
        top_k=None,
        min_p=None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=sampling.repetition_penalty,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        max_new_tokens=sampling.max_new_tokens,
        min_new_tokens=0,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        use_cache=True,
        return_dict_in_generate=False,
    )


def generate_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    out_path: str | Path,
    sampling: SamplingConfig | None = None,
    solution: Any | None = None,
    model_hash: str = "",
    solution_hash: str | None = None,
    progress: bool = True,
    model_name: str | None = None,
) -> GenerationSummary:
    """Sample `prompt.samples` answers to each prompt into `out_path` (JSONL, resumable).

    `solution` is any object with an `applied(model)` context manager (a LoRA, steering
    vector or full delta from `emlab.solutions`); it is applied around the whole generation.
    `model_name`, `model_hash` and `solution_hash` identify the model and solution in every
    row's provenance (`model_name` None: the model config's name_or_path, else 'unnamed'; when
    `solution_hash` is None, `solution.hash()` is used if the solution has one).
    """
    sampling = sampling or SamplingConfig()
    if solution_hash is None and solution is not None and hasattr(solution, "hash"):
        solution_hash = solution.hash()
    model_name = model_name or getattr(unwrap(model).config, "name_or_path", "") or "unnamed"
    info = RunInfo(
        model_name=model_name, model_hash=model_hash, solution_hash=solution_hash, sampling=sampling
    )
    samples = plan_samples(prompts, sampling.seed)
    pending = pending_samples(samples, out_path, info)
    summary = GenerationSummary(
        Path(out_path), len(samples), len(samples) - len(pending), len(pending)
    )
    if not pending:
        return summary
    hf_model = unwrap(model)
    stop_ids = stop_token_ids(tokenizer, extra=_as_list(hf_model.generation_config.eos_token_id))
    pad_id = padding_id(tokenizer)
    config = generation_config(sampling, stop_ids, pad_id)
    unique = {s.prompt.prompt_id: s.prompt for s in pending}
    ids = prompts_token_ids(tokenizer, unique.values())
    applied = solution.applied(model) if solution is not None else nullcontext()
    with applied, _eval_with_blank_defaults(hf_model), torch.inference_mode():
        bar = tqdm(total=len(pending), unit="sample", desc="generate", disable=not progress)
        for start in range(0, len(pending), sampling.batch_size):
            batch = pending[start : start + sampling.batch_size]
            try:
                rows = _generate_batch(
                    model,
                    tokenizer,
                    batch,
                    [ids[s.prompt.prompt_id] for s in batch],
                    config,
                    sampling,
                    stop_ids,
                    pad_id,
                    info,
                )
            except torch.OutOfMemoryError:
                raise EmlabError(
                    f"out of memory generating a batch of {len(batch)}: try batch_size"
                    f" (--batch-size) {max(1, len(batch) // 2)}; each sample has its own seed, and"
                    f" the {summary.existing + start} answers already in {out_path} are kept."
                ) from None
            append_jsonl(out_path, rows)
            bar.update(len(batch))
        bar.close()
    return summary


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: Sequence[Sample],
    prompt_ids: Sequence[list[int]],
    config: GenerationConfig,
    sampling: SamplingConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    info: RunInfo,
) -> list[dict[str, Any]]:
    input_ids, attention_mask = pad_sequences(prompt_ids, pad_id, side="left")  # (B, T), (B, T)
    device = next(model.parameters()).device
    processors = (
        None
        if sampling.greedy
        else LogitsProcessorList([PerSampleSampler([s.seed for s in batch], sampling)])
    )
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=config,
        logits_processor=processors,
    )  # (B, T + new)
    new = out[:, input_ids.shape[1] :].tolist()
    stops = set(stop_ids)
    rows = []
    for sample, tokens in zip(batch, new, strict=True):
        end = next((j for j, t in enumerate(tokens) if t in stops), None)
        answer_ids = tokens if end is None else tokens[:end]
        text = tokenizer.decode(answer_ids, skip_special_tokens=True)
        rows.append(
            make_row(sample, info, text, len(answer_ids), "length" if end is None else "stop")
        )
    return rows


@contextmanager
def _eval_with_blank_defaults(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode and a blank `generation_config` for the block (both restored after)."""
    saved, was_training = model.generation_config, model.training
    model.generation_config = GenerationConfig()
    model.eval()
    try:
        yield
    finally:
        model.generation_config = saved
        model.train(was_training)


def _as_list(ids: int | list[int] | None) -> list[int]:
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else list(ids)
