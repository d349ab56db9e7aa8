"""Sampling settings and per-sample seeds, shared by the HF and vLLM backends."""

from __future__ import annotations

import hashlib

from pydantic import Field

from emlab.config import EmlabConfig, config_hash


class SamplingConfig(EmlabConfig):
    """How answers are sampled. Every field is passed to the backend explicitly, so a
    checkpoint's own generation defaults (e.g. Qwen2.5's top_k 20, repetition penalty 1.05)
    never apply. The defaults are the emergent-misalignment papers' protocol."""

    temperature: float = Field(
        default=1.0,
        ge=0.0,
        description="Softmax temperature; 0 means greedy decoding. Default 1.0.",
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1.0 is off. Default 1.0."
    )
    top_k: int = Field(
        default=0, ge=0, description="Keep the k most likely tokens; 0 is off. Default 0."
    )
    max_new_tokens: int = Field(
        default=600, ge=1, description="Answer length limit in tokens. Default 600."
    )
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, description="CTRL-style repetition penalty; 1.0 is off. Default 1.0."
    )
    seed: int = Field(
        default=0,
        description="Base seed; each sample's seed derives from it and the sample id. Default 0.",
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        description=(
            "Prompts per forward pass (HF backend). Does not change which answer a sample gets."
            " Default 16."
        ),
    )

    @property
    def greedy(self) -> bool:
        """True when temperature is 0 (argmax decoding; top_p and top_k unused)."""
        return self.temperature == 0.0

    def hash(self, length: int = 12) -> str:
        """Hash of the fields that define the answer distribution (batch_size excluded)."""
        return config_hash(self.model_dump(mode="json", exclude={"batch_size"}), length)


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one sample: a 63-bit integer from sha256(seed, sample_id)."""
    digest = hashlib.sha256(f"{seed}|{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
