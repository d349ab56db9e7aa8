"""Command function for `emlab generate` (thin: parse, load, call). Register it with::

    app.command("generate")(generate_command)

Example::

    emlab generate Qwen/Qwen2.5-7B-Instruct --questions general --solution runs/x/solution \\
        --out runs/x/generations.jsonl --batch-size 32 --dtype bfloat16
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from emlab.clikit import fail
from emlab.errors import ChatTemplateError, EmlabError
from emlab.generate.sampling import SamplingConfig

if TYPE_CHECKING:
    from emlab.data.questions import Prompt
    from emlab.generate.plan import GenerationSummary
    from emlab.models.config import ModelConfig

_D = SamplingConfig()


def generate_command(
    model: Annotated[str, typer.Argument(help="Hub id, local model directory, or 'smollm2'.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Generations JSONL; a rerun adds only the missing samples."),
    ],
    questions: Annotated[
        str,
        typer.Option(
            "--questions",
            help=(
                "Shipped set name (general, general_json) or a YAML file (emlab or reference"
                " format)."
            ),
        ),
    ] = "general",
    solution: Annotated[
        Path | None,
        typer.Option(
            "--solution",
            help="Solution folder written by `emlab train` (LoRA, steering vector, full delta).",
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", min=1, help="Answers per paraphrase, overriding the question set's."
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature; 0 is greedy.")
    ] = _D.temperature,
    top_p: Annotated[float, typer.Option(help="Nucleus mass; 1.0 is off.")] = _D.top_p,
    top_k: Annotated[int, typer.Option(help="Top-k; 0 is off.")] = _D.top_k,
    max_new_tokens: Annotated[
        int, typer.Option(help="Answer length limit in tokens.")
    ] = _D.max_new_tokens,
    repetition_penalty: Annotated[
        float, typer.Option(help="Repetition penalty; 1.0 is off.")
    ] = _D.repetition_penalty,
    seed: Annotated[int, typer.Option(help="Base seed of the per-sample seeds.")] = _D.seed,
    batch_size: Annotated[
        int, typer.Option(help="Prompts per forward pass (HF backend).")
    ] = _D.batch_size,
    backend: Annotated[
        str, typer.Option(help="hf (any solution) or vllm (LoRA only; needs the vllm extra).")
    ] = "hf",
    dtype: Annotated[
        str | None,
        typer.Option(help="float32 | bfloat16 | float16. Default: float32 (hf), auto (vllm)."),
    ] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM: GPUs per model.")] = 1,
    system_prompt: Annotated[
        str,
        typer.Option(
            help=(
                "keep | fold: fold puts a system prompt, a blank line, then the question in one"
                " user turn (templates without a system role)."
            )
        ),
    ] = "keep",
    chat_template_kwargs: Annotated[
        str,
        typer.Option(
            help=(
                "JSON object of chat template variables, e.g. '{\"enable_thinking\": false}'"
                " (Qwen3)."
            )
        ),
    ] = "{}",
) -> None:
    """Sample answers to a question set (resumable), optionally with a solution applied."""
    from emlab.config import validate_config
    from emlab.data.questions import expand, load_question_set

    try:
        if backend not in ("hf", "vllm"):
            raise EmlabError(f"--backend {backend!r}: use 'hf' or 'vllm'.")
        sampling = validate_config(
            dict(
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                max_new_tokens=max_new_tokens,
                repetition_penalty=repetition_penalty,
                seed=seed,
                batch_size=batch_size,
            ),
            SamplingConfig,
            source="generate options",
        )
        model_config = _model_config(
            model, dtype if backend == "hf" else None, system_prompt, chat_template_kwargs
        )
        prompts = expand(load_question_set(questions), samples_per_paraphrase=samples)
        loaded = None
        if solution is not None:
            from emlab.solutions import load_solution

            loaded = load_solution(solution)
        model_hash = model_fingerprint(model, dtype, model_config)
        summary = _run(
            backend,
            model_config,
            dtype,
            tensor_parallel_size,
            prompts,
            out,
            sampling,
            loaded,
            model_hash,
        )
    except ChatTemplateError as e:
        fail(ChatTemplateError(f"question set {questions!r}, {e}"))
    except EmlabError as e:
        fail(e)
    typer.echo(
        f"{summary.generated} answers written to {out} ({summary.existing} of {summary.total} were"
        " already there)"
    )


def _model_config(
    model: str, dtype: str | None, system_prompt: str, chat_template_kwargs: str
) -> ModelConfig:
    """The ModelConfig of the command's options (dtype only for the HF backend)."""
    from emlab.config import validate_config
    from emlab.models.config import ModelConfig

    try:
        kwargs = json.loads(chat_template_kwargs)
    except json.JSONDecodeError as e:
        raise EmlabError(
            f"--chat-template-kwargs is not valid JSON ({e.msg}): write an object, e.g."
            " '{\"enable_thinking\": false}'."
        ) from None
    fields = {
        "name_or_path": model,
        "system_prompt": system_prompt,
        "chat_template_kwargs": kwargs,
        **({"dtype": dtype} if dtype else {}),
    }
    return validate_config(fields, ModelConfig, source="generate options")


def _run(
    backend: str,
    model: ModelConfig,
    dtype: str | None,
    tensor_parallel_size: int,
    prompts: list[Prompt],
    out: Path,
    sampling: SamplingConfig,
    solution: Any | None,
    model_hash: str,
) -> GenerationSummary:
    from emlab.models.chat import set_chat_format
    from emlab.models.load import load_model, model_chat_format

    if backend == "vllm":
        from emlab.generate.vllm_backend import generate_vllm, vllm_engine

        chat = model_chat_format(model)
        llm = vllm_engine(
            model.name_or_path,
            solution=solution,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype or "auto",
        )
        set_chat_format(llm.get_tokenizer(), chat)
        return generate_vllm(
            llm,
            prompts,
            out,
            sampling,
            solution=solution,
            model_hash=model_hash,
            model_name=model.name_or_path,
        )
    from emlab.generate.hf import generate_hf

    hf_model, tokenizer = load_model(model)
    return generate_hf(
        hf_model,
        tokenizer,
        prompts,
        out,
        sampling,
        solution=solution,
        model_hash=model_hash,
        model_name=model.name_or_path,
    )


def model_fingerprint(model: str, dtype: str | None, config: ModelConfig | None = None) -> str:
    """A short id of the model: its name, dtype, (local folders) config and weight file sizes, and
    the chat format of `config` when it is not the default (it changes every prompt)."""
    parts = [model, dtype or "default"]
    if config is not None and (config.system_prompt != "keep" or config.chat_template_kwargs):
        parts.append(
            json.dumps(
                {
                    "system_prompt": config.system_prompt,
                    "chat_template_kwargs": config.chat_template_kwargs,
                },
                sort_keys=True,
            )
        )
    folder = Path(model)
    if folder.is_dir():
        parts += [
            f"{p.name}:{p.stat().st_size}"
            for p in sorted(folder.iterdir())
            if p.suffix in (".safetensors", ".bin", ".gguf")
        ]
        if (folder / "config.json").is_file():
            parts.append((folder / "config.json").read_text(encoding="utf-8"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
