"""The same generation on vLLM (optional extra: `pip install 'emlab[vllm]'`; imported lazily).

    llm = vllm_engine("Qwen/Qwen2.5-7B-Instruct", solution=lora, tensor_parallel_size=2)
    generate_vllm(llm, prompts, "gens.jsonl", SamplingConfig(), solution=lora, model_hash="qwen7b")

Rows, sample ids, resuming and per-sample seeds are those of `generate_hf` (vLLM's own
per-request seed gives each sample its answer whatever the batch). Prompts are rendered by
the same chat template and passed as token ids. The engine is built with
`generation_config="vllm"`, so the checkpoint's sampling defaults never apply. LoRA
solutions are served through a LoRARequest (the adapter is saved once in peft's format);
steering vectors and full deltas are not supported by vLLM: use the HF backend.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emlab.data.questions import Prompt
from emlab.errors import EmlabError
from emlab.generate.chat_tokens import prompts_token_ids, stop_token_ids
from emlab.generate.plan import GenerationSummary, RunInfo, make_row, pending_samples, plan_samples
from emlab.generate.sampling import SamplingConfig
from emlab.io import append_jsonl

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for max_lora_rank."""


def vllm_engine(
    model: str,
    solution: Any | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
) -> Any:
    """A vllm.LLM for `model`, with LoRA enabled (max_lora_rank from the adapter) when needed."""
    check_solution(solution)
    vllm = _import_vllm()
    lora = {}
    if solution is not None:
        lora = {"enable_lora": True, "max_lora_rank": max_lora_rank(solution.r), "max_loras": 1}
    return vllm.LLM(
        model=model,
        tensor_parallel_size=tensor_parallel_size,
        dtype=dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        generation_config="vllm",
        **lora,
    )


def generate_vllm(
    llm: Any,
    prompts: Sequence[Prompt],
    out_path: str | Path,
    sampling: SamplingConfig | None = None,
    solution: Any | None = None,
    model_hash: str = "",
    solution_hash: str | None = None,
    chunk_size: int = 2048,
    model_name: str | None = None,
) -> GenerationSummary:
    """Like `generate_hf` on a vllm.LLM; rows are appended after each chunk of requests.

    `model_name` None: the engine's model (`llm.llm_engine.model_config.model`).
    """
    check_solution(solution)
    vllm = _import_vllm()
    sampling = sampling or SamplingConfig()
    if solution_hash is None and solution is not None:
        solution_hash = solution.hash()
    model_name = model_name or str(llm.llm_engine.model_config.model)
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
    tokenizer = llm.get_tokenizer()
    stop_ids = stop_token_ids(tokenizer)
    unique = {s.prompt.prompt_id: s.prompt for s in pending}
    ids = prompts_token_ids(tokenizer, unique.values())
    with tempfile.TemporaryDirectory() as tmp:
        lora_request = None
        if solution is not None:
            adapter = solution.save(Path(tmp) / "adapter")  # peft format, multiplier folded in
            lora_request = vllm.lora.request.LoRARequest("emlab", 1, str(adapter))
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            params = [_params(vllm, sampling, s.seed, stop_ids) for s in chunk]
            requests = [{"prompt_token_ids": ids[s.prompt.prompt_id]} for s in chunk]
            outputs = llm.generate(requests, params, lora_request=lora_request, use_tqdm=True)
            rows = []
            for sample, output in zip(chunk, outputs, strict=True):
                completion = output.outputs[0]
                tokens = list(completion.token_ids)
                n_tokens = len(tokens) - (
                    1 if tokens and tokens[-1] in stop_ids else 0
                )  # the stop token is no answer
                reason = "length" if completion.finish_reason == "length" else "stop"
                rows.append(make_row(sample, info, completion.text, n_tokens, reason))
            append_jsonl(out_path, rows)
    return summary


def check_solution(solution: Any | None) -> None:
    """Raise an EmlabError unless `solution` is None or a LoRA (vLLM serves nothing else)."""
    kind = getattr(solution, "kind", None)
    if solution is None or kind == "lora":
        return
    if kind == "steering":
        raise EmlabError(
            "vLLM cannot apply a steering vector (it has no activation hooks). Generate with the HF"
            " backend (--backend hf), which applies the vector with a forward hook."
        )
    raise EmlabError(
        f"vLLM can serve LoRA solutions only, not {kind or type(solution).__name__!r}. Use the HF"
        " backend, or save the base model plus the delta as a full checkpoint and pass that as the"
        " model."
    )


def max_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that fits an adapter of rank r."""
    for rank in LORA_RANKS:
        if rank >= r:
            return rank
    raise EmlabError(
        f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}; use the HF backend."
    )


def _params(vllm: Any, sampling: SamplingConfig, seed: int, stop_ids: Sequence[int]) -> Any:
    return vllm.SamplingParams(
        n=1,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        min_p=0.0,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        max_tokens=sampling.max_new_tokens,
        seed=seed,
        stop_token_ids=list(stop_ids),
        skip_special_tokens=True,
    )


def _import_vllm() -> Any:
    try:
        import vllm
        import vllm.lora.request  # noqa: F401  (LoRARequest)
    except ImportError:
        raise EmlabError(
            "vLLM is not installed. Install the extra with `pip install 'emlab[vllm]'` (Linux +"
            " CUDA), or use the HF backend (--backend hf)."
        ) from None
    return vllm
