"""Training config: model, data, solution, KL term, optimiser, loop."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from emlab.config import EmlabConfig
from emlab.models.config import ModelConfig


class DataConfig(EmlabConfig):
    """Training conversations and the out-of-domain stream for the KL term."""

    train: str | None = Field(
        default=None,
        description="Chat JSONL of training conversations. Default None (given in code).",
    )
    ood: str | None = Field(
        default=None,
        description="Chat JSONL of out-of-domain conversations for the KL term. Default None.",
    )
    heldout_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description=(
            "Fraction of `train` held out for evaluation (written to the run's heldout.jsonl)."
            " Default 0.1."
        ),
    )
    split_seed: int = Field(default=0, description="Seed of the held-out split. Default 0.")
    max_length: int = Field(
        default=512,
        gt=8,
        description=(
            "Tokens per conversation (longer ones are cut; those left without a trained token are"
            " dropped; both counted in the manifest). Default 512."
        ),
    )
    group_by_length: bool = Field(
        default=False,
        description=(
            "Batch conversations of similar length (less padding; e.g. pre-training). Default"
            " False."
        ),
    )
    loss_on: Literal["assistant", "all"] = Field(
        default="assistant",
        description="Tokens in the SFT loss: 'assistant' (default) or 'all' (pre-training).",
    )


class LoraConfig(EmlabConfig):
    """LoRA through peft: delta W = scaling * B A on each target module."""

    kind: Literal["lora"] = "lora"
    r: int = Field(default=1, ge=1, description="Rank. Default 1.")
    alpha: float = Field(
        default=16.0,
        gt=0,
        description="LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with rslora). Default 16.",
    )
    rslora: bool = Field(
        default=False, description="Rank-stabilised scaling alpha/sqrt(r). Default False."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="Module names to adapt (suffixes). Default ['down_proj'].",
    )
    layers: list[int] | None = Field(
        default=None, description="Decoder layers to adapt. Default None (all)."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout. Default 0.")


class SteeringConfig(EmlabConfig):
    """A learned vector alpha * v added to one module's output (zero-initialised)."""

    kind: Literal["steering"] = "steering"
    point: Literal["embed", "layer", "mlp"] = Field(
        default="mlp",
        description=(
            "Where to add it: embedding output, a decoder layer's output, or its MLP output."
            " Default 'mlp'."
        ),
    )
    layer: int = Field(
        default=0, ge=0, description="Decoder layer index (ignored for 'embed'). Default 0."
    )
    alpha: float = Field(
        default=256.0,
        gt=0,
        description="Fixed scale alpha of the vector. Default 256 (as the reference).",
    )


class FullConfig(EmlabConfig):
    """Full fine-tuning; the solution is the delta from the base weights."""

    kind: Literal["full"] = "full"
    trainable: list[str] | None = Field(
        default=None,
        description="Substrings of parameter names to train. Default None (all parameters).",
    )


SolutionConfig = Annotated[LoraConfig | SteeringConfig | FullConfig, Field(discriminator="kind")]


class KLConfig(EmlabConfig):
    """The KL term lambda * KL toward the base model on out-of-domain batches.

    `weight` is per token. The reference code divides its weight by the width of the logits
    (it averages the KL over tokens x logit columns): with convention 'reference' emlab uses
    weight / V per token, V the output layer's out_features (Qwen2.5: 151,936, more than the
    tokenizer's 151,665 tokens), so the reference's 1e5 is about 0.66 per token.
    Both KL passes (base and tuned) run with the model in eval mode, without dropout, so the
    KL is 0 before any update; the SFT passes keep the model's dropout.
    """

    weight: float = Field(
        default=0.0, ge=0.0, description="lambda; 0 turns the KL term off. Default 0."
    )
    convention: Literal["per_token", "reference"] = Field(
        default="per_token",
        description=(
            "'per_token' (default) or 'reference' (weight / the logits' width, the output layer's "
            "out_features, not len(tokenizer))."
        ),
    )
    direction: Literal["forward", "reverse"] = Field(
        default="forward",
        description=(
            "forward KL(base || tuned) (default, as the reference) or reverse KL(tuned || base)."
        ),
    )
    scope: Literal["assistant", "all"] = Field(
        default="assistant",
        description="Tokens averaged over: assistant tokens (default) or all non-pad tokens.",
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="OOD batch size. Default None (= train batch size)."
    )
    base: Literal["exact", "top_k"] = Field(
        default="exact",
        description=(
            "Base distributions: 'exact' (default) computes the base model's full distribution"
            " every step (adapter or vector off; a frozen copy for full fine-tuning); 'top_k'"
            " caches the base's top_k tokens once before training (no second copy) and compares the"
            " distributions coarsened to them plus a rest bucket."
        ),
    )
    top_k: int = Field(
        default=64, ge=1, description="Tokens per position cached with base 'top_k'. Default 64."
    )

    def per_token_weight(self, logits_width: int) -> float:
        """lambda per token after applying the convention; `logits_width` is the output layer's
        out_features (the V of the logits # (N, V))."""
        return self.weight / logits_width if self.convention == "reference" else self.weight


class OptimConfig(EmlabConfig):
    """AdamW and the learning-rate schedule."""

    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate. Default 1e-4.")
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Decoupled weight decay of the solution: each step moves it the fraction lr x"
            " weight_decay toward no change (adapter weights and steering vectors toward 0, as"
            " AdamW; full fine-tuning toward the base weights, not toward 0 as AdamW or HF Trainer"
            " would). Default 0."
        ),
    )
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="AdamW betas. Default (0.9, 0.999)."
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(
        default="linear", description="Decay after warm-up. Default 'linear'."
    )
    warmup_steps: int = Field(default=5, ge=0, description="Linear warm-up steps. Default 5.")
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="Gradient clipping. Default 1.0 (None: off)."
    )


class TrainConfig(EmlabConfig):
    """One training run. `emlab train CONFIG.yaml`; fields below with their defaults."""

    name: str = Field(
        default="train",
        description="Run name (the output folder is <name>-<config hash>). Default 'train'.",
    )
    output_dir: str = Field(default="runs", description="Root folder of runs. Default 'runs'.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training and OOD data.")
    solution: SolutionConfig = Field(
        default_factory=LoraConfig, description="What to train: lora (default), steering or full."
    )
    kl: KLConfig = Field(default_factory=KLConfig, description="The KL term (off by default).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    seed: int = Field(
        default=0, description="Seed of data order, initialisation and dropout. Default 0."
    )
    batch_size: int = Field(
        default=8, ge=1, description="Conversations per micro-batch (per process). Default 8."
    )
    grad_accum: int = Field(
        default=1, ge=1, description="Micro-batches per optimiser step. Default 1."
    )
    epochs: float = Field(
        default=1.0,
        gt=0,
        description="Passes over the training data (ignored if max_steps is set). Default 1.",
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimiser steps. Default None (from epochs)."
    )
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        description="Save a resumable checkpoint every N steps. Default 0 (only at the end).",
    )
    keep_checkpoints: int = Field(
        default=1, ge=1, description="Checkpoints kept on disk. Default 1."
    )
    eval_every: int = Field(
        default=0, ge=0, description="Run the caller's evaluator every N steps. Default 0 (off)."
    )
    log_every: int = Field(
        default=1, ge=1, description="Write a metrics row every N steps. Default 1."
    )
    trackers: list[Literal["wandb", "tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers through accelerate. Default [] (off).",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="accelerate mixed precision. Default 'no'."
    )
    progress: bool = Field(default=True, description="Show a progress bar. Default True.")
