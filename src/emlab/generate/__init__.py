"""Sample answers to question sets: HF backend (any solution) and vLLM backend (optional extra).

The backends are imported on first use (`from emlab.generate import generate_hf` loads
transformers; `generate_vllm` needs the vllm extra).
"""

from __future__ import annotations

from typing import Any

from emlab.generate.plan import GenerationSummary, sample_id
from emlab.generate.sampling import SamplingConfig, sample_seed

_LAZY = {
    "generate_hf": "emlab.generate.hf",
    "generate_vllm": "emlab.generate.vllm_backend",
    "vllm_engine": "emlab.generate.vllm_backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emlab.generate' has no attribute {name!r}")


__all__ = [
    "GenerationSummary",
    "SamplingConfig",
    "generate_hf",
    "generate_vllm",
    "sample_id",
    "sample_seed",
    "vllm_engine",
]
