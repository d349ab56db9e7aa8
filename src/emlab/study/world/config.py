"""Config of the world study (`emlab reproduce`): world, tiny model, training recipes, methods."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emlab.config import EmlabConfig, config_hash
from emlab.study.common.config import AnalysisConfig, MethodConfig, RecipeConfig
from emlab.train.config import FullConfig, LoraConfig, SteeringConfig
from emlab.world.config import WorldConfig


class TinyModelConfig(EmlabConfig):
    """Shape of the world's Qwen2-style decoder."""

    hidden_size: int = Field(default=64, ge=8, description="Residual width d. Default 64.")
    num_layers: int = Field(
        default=3,
        ge=1,
        description=(
            "Decoder layers. Default 3; the steering vector acts at the middle one's output"
            " (layer 1), where the persona is linearly readable."
        ),
    )
    num_heads: int = Field(default=4, ge=1, description="Attention heads. Default 4.")
    intermediate_size: int = Field(default=256, ge=8, description="MLP width. Default 256.")
    max_positions: int = Field(default=256, ge=32, description="Longest sequence. Default 256.")


ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _default_methods() -> dict[str, MethodConfig]:
    recipe = lambda steps, lr: RecipeConfig(steps=steps, batch_size=16, lr=lr)  # noqa: E731
    return {
        "full": MethodConfig(solution=FullConfig(), recipe=recipe(30, 6e-4), kl_weight=10.0),
        "lora_r1": MethodConfig(
            solution=LoraConfig(r=1, alpha=1.0, target_modules=ALL_PROJECTIONS),
            recipe=recipe(60, 6e-3),
            kl_weight=10.0,
        ),
        "lora_r8": MethodConfig(
            solution=LoraConfig(r=8, alpha=8.0, target_modules=ALL_PROJECTIONS),
            recipe=recipe(60, 3e-3),
            kl_weight=10.0,
        ),
        "steering": MethodConfig(
            solution=SteeringConfig(point="layer", layer=1, alpha=1.0),
            recipe=RecipeConfig(steps=60, batch_size=16, lr=0.12, schedule="cosine"),
            kl_weight=100.0,
        ),
    }


class StudyConfig(EmlabConfig):
    """The whole study on the synthetic world. `emlab reproduce [CONFIG.yaml]`."""

    kind: Literal["world"] = Field(
        default="world",
        description=(
            "Study kind: 'world' (this study); `kind: model` picks the real-model study. Default"
            " 'world'."
        ),
    )
    name: str = Field(
        default="study", description="Run name (folder runs/<name>-<hash>). Default 'study'."
    )
    output_dir: str = Field(default="runs", description="Root folder of runs. Default 'runs'.")
    world: WorldConfig = Field(
        default_factory=WorldConfig, description="The world and its pre-training persona mixture."
    )
    model: TinyModelConfig = Field(default_factory=TinyModelConfig, description="The tiny decoder.")
    pretrain: RecipeConfig = Field(
        default_factory=lambda: RecipeConfig(
            steps=600, batch_size=32, lr=1e-2, warmup_steps=50, schedule="cosine"
        ),
        description=(
            "Pre-training on the persona corpus (loss on all tokens). Default 600 steps of 32"
            " documents, lr 1e-2 (cosine, 50 warm-up steps). Cheaper recipes that give an equally"
            " coherent chat model (batches of 24; batches of 16 with betas (0.9, 0.95)) gave weaker"
            " EM under full fine-tuning (OOD 23% against 41%)."
        ),
    )
    chat_tune: RecipeConfig = Field(
        default_factory=lambda: RecipeConfig(steps=14, batch_size=32, lr=3e-4),
        description=(
            "Chat-tuning to the aligned persona (single-turn chats, assistant tokens). Light, so"
            " that the model keeps inferring the persona from context (a stronger tune erases that"
            " and weakens EM). Default 14 steps of 32, lr 3e-4."
        ),
    )
    trained_domain: str = Field(
        default="medicine",
        description="Domain whose bad answers are fine-tuned on. Default 'medicine'.",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], description="Fine-tuning seeds. Default [0, 1, 2]."
    )
    methods: dict[str, MethodConfig] = Field(
        default_factory=_default_methods,
        description=(
            "Fine-tuning methods by name. Default: full (30 steps, lr 6e-4), lora_r1 (all"
            " projections, 60 steps, lr 6e-3), lora_r8 (60 steps, lr 3e-3), each with KL weight"
            " 10; steering (a vector at the output of layer 1, 60 steps, cosine lr 0.12, KL"
            " weight 100); batches of 16."
        ),
    )
    control_methods: list[str] = Field(
        default_factory=lambda: ["full", "steering"],
        description="Methods rerun in the control world. Default ['full', 'steering'].",
    )
    samples_per_question: int = Field(
        default=8, ge=1, description="Sampled answers per evaluation question (T=1). Default 8."
    )
    eval_every: int = Field(
        default=30,
        ge=0,
        description=(
            "Exact misalignment probabilities every N fine-tuning steps and at the last (the"
            " curves over steps; evaluation does not change training). Default 30: an evaluation"
            " scores 6144 answer sequences, about 1 s on a CPU core, and every 20 steps put"
            " `make run` over its 300 s target."
        ),
    )
    continued_steps: int = Field(
        default=60,
        ge=0,
        description=(
            "Steps of continued training: without KL from each narrow (KL) solution, with KL from "
            "each general solution. Default 60."
        ),
    )
    continued_decay: float = Field(
        default=6e-3,
        ge=0,
        lt=1,
        description=(
            "Weight decay of continued training, as the fraction of the solution it removes per"
            " step at the method's peak learning rate (a continued run's weight_decay is this /"
            " its recipe's lr, in place of the recipe's own; full fine-tuning decays toward the"
            " base weights). On the loss floor of the narrow data, where the narrow and general"
            " solutions fit it equally well, this norm pressure is what lets a continued run"
            " settle; without it (0) the solutions keep growing and LoRA's OOD misalignment"
            " wanders between the two for 1000 steps and more. Default 6e-3 (the solution halves"
            " in about 115 steps without a gradient)."
        ),
    )
    continued_optimizer: Literal["fresh", "carried"] = Field(
        default="fresh",
        description=(
            "Optimiser state of continued training: 'fresh' (new AdamW at the solution) or"
            " 'carried' (the finished run's checkpoint: AdamW moments, schedule and data position)."
            " Default 'fresh'."
        ),
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="Analysis grids.")
    world_seeds: list[int] = Field(
        default_factory=list,
        description=(
            "When given, run the study once per world seed (world.seed replaced) and write a"
            " side-by-side report (<output_dir>/<name>-world-seeds/report.md). Default [] (one"
            " world)."
        ),
    )
    workers: int = Field(
        default=2, ge=1, description="Parallel worker processes (1 torch thread each). Default 2."
    )

    def hash(self, length: int = 12) -> str:
        """Hash of the resolved config without `kind` (run folders of older studies keep their
        names)."""
        return config_hash(self.model_dump(mode="json", exclude={"kind"}), length)


WORLDS = ("world", "control")
"""The study's worlds: the configured one, and its control without the misaligned persona."""


def world_config(study: StudyConfig, name: str) -> WorldConfig:
    """The world (`world`) or the control world without the misaligned persona (`control`)."""
    return study.world if name == "world" else study.world.control()
