"""Config pieces both studies share: a training recipe, a fine-tuning method, the analysis
grids; the TrainConfig of one study stage; the check that every method fits the model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from torch import nn

from emlab.config import EmlabConfig, validate_config
from emlab.train.config import SolutionConfig, TrainConfig
from emlab.train.trainable import check_solution_config


class RecipeConfig(EmlabConfig):
    """Steps, batch and learning rate of one training stage."""

    steps: int = Field(ge=1, description="Optimiser steps.")
    batch_size: int = Field(default=32, ge=1, description="Conversations per step. Default 32.")
    lr: float = Field(gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(default=0, ge=0, description="Warm-up steps. Default 0.")
    schedule: str = Field(
        default="constant", description="'constant', 'linear' or 'cosine'. Default 'constant'."
    )
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="AdamW betas. Default (0.9, 0.999)."
    )
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description="Weight decay of the solution (`emlab train`'s optim.weight_decay). Default 0.",
    )


RECIPE_OPTIM = ("lr", "warmup_steps", "schedule", "betas", "weight_decay")
"""The optim fields of a stage's TrainConfig that its recipe sets."""


class MethodConfig(EmlabConfig):
    """A fine-tuning method of the study: what is trained, how, and the KL weight of its KL runs."""

    solution: SolutionConfig = Field(description="lora | steering | full, as in `emlab train`.")
    recipe: RecipeConfig = Field(description="Steps, batch and learning rate.")
    kl_weight: float = Field(gt=0, description="lambda (per token) of the run with the KL term.")

    def run_key(self, kl: bool) -> dict[str, Any]:
        """What a run of this method depends on, for its stage's cache key: every field, less
        `kl_weight` for a run without the KL term (a study that changes only the weight reuses
        its runs without KL)."""
        return self.model_dump(mode="json", exclude=None if kl else {"kl_weight"})


class AnalysisConfig(EmlabConfig):
    """Grids of the parameter-space analyses of general vs narrow solutions."""

    multipliers: int = Field(
        default=11,
        ge=3,
        description="Points of the efficiency sweep m in [0, 2]. Default 11 (steps of 0.2).",
    )
    eps: list[float] = Field(
        default_factory=lambda: [0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0],
        description=(
            "Noise levels of the stability analysis (must include 0.5). Default [0.01 ... 1]."
        ),
    )
    noise_seeds: int = Field(default=5, ge=2, description="Noise draws per eps. Default 5.")
    max_heldout: int = Field(
        default=64,
        ge=1,
        description=(
            "Held-out narrow conversations for the efficiency and stability losses (the first N"
            " of a shuffled list). Default 64."
        ),
    )
    importance_documents: int = Field(
        default=64, ge=1, description="Pre-training documents for the KL. Default 64."
    )
    importance_fractions: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5],
        description=(
            "Norms of the importance sweep, as fractions of the general solution's norm (must"
            " include 1). Default [0, 0.25, ..., 1.5]."
        ),
    )

    @model_validator(mode="after")
    def _check_grids(self) -> AnalysisConfig:
        if 0.5 not in self.eps:
            raise ValueError("eps must include 0.5 (the report compares stability there)")
        if 1.0 not in self.importance_fractions:
            raise ValueError(
                "importance_fractions must include 1.0 (the report compares KL at the general norm)"
            )
        return self


def recipe_config(
    name: str, folder: Path, recipe: RecipeConfig, seed: int, **fields
) -> TrainConfig:
    """A TrainConfig for one study stage (in-memory model and data, no progress bar)."""
    data = {
        "name": name,
        "output_dir": str(folder),
        "seed": seed,
        "max_steps": recipe.steps,
        "batch_size": recipe.batch_size,
        "optim": {k: getattr(recipe, k) for k in RECIPE_OPTIM},
        "progress": False,
        **fields,
    }
    return validate_config(data, TrainConfig, source=f"study stage {name}")


def check_methods(model: nn.Module, methods: Mapping[str, MethodConfig]) -> None:
    """Raise a ModelError naming `methods.<name>.solution.<field>` when a method's solution does
    not fit `model` (e.g. a layer past its last one), so that a study stops before any stage runs.
    `model` may be on the meta device."""
    for name, method in methods.items():
        check_solution_config(model, method.solution, f"methods.{name}.solution")
