"""The world's chat model: a tiny Qwen2 pre-trained on the persona corpus, then chat-tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.models.chat import Conversation
from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.models.tiny import tiny_qwen2
from emlab.study.common.config import recipe_config
from emlab.study.common.stages import StageResult
from emlab.study.world.config import StudyConfig
from emlab.study.world.exact import ExactEvaluator
from emlab.study.world.probe import persona_probe
from emlab.study.world.sampling import world_sample_rates
from emlab.train.config import TrainConfig
from emlab.train.loop import train
from emlab.world import World, chat_tuning_conversations, pretraining_documents


class ChatModel(StageResult):
    """A world's chat model: its folder (model and tokenizer), its loss curves and size."""

    model_dir: str
    pretrain_loss: list[float]
    chat_tune_loss: list[float]
    parameters: int


def train_in_place(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    data: list[Conversation],
) -> list[dict]:
    """Fully fine-tune `model` on `data` and keep the trained weights in it; returns the metrics."""
    result = train(config, model, tokenizer, data)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, delta in result.solution.tensors().items():
            params[name].add_(delta)
    return result.metrics


def initial_model(study: StudyConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The world's decoder of `study.model`'s shape, randomly initialised (seeded by the world)."""
    m = study.model
    return tiny_qwen2(
        len(tokenizer),
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        intermediate_size=m.intermediate_size,
        max_positions=m.max_positions,
        seed=study.world.seed,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_chat_model(
    study: StudyConfig, world: World, tokenizer: PreTrainedTokenizerBase, folder: Path
) -> ChatModel:
    """Pre-train and chat-tune the world's model; save it with its tokenizer to `folder/model`."""
    m = study.model
    model = initial_model(study, tokenizer)
    docs = [d.messages for d in pretraining_documents(world)]
    full = {"kind": "full"}
    pre = recipe_config(
        "pretrain",
        folder,
        study.pretrain,
        study.world.seed,
        solution=full,
        data={"loss_on": "all", "max_length": m.max_positions, "group_by_length": True},
    )
    pre_metrics = train_in_place(model, tokenizer, pre, docs)
    chat = recipe_config(
        "chat_tune",
        folder,
        study.chat_tune,
        study.world.seed,
        solution=full,
        data={"max_length": m.max_positions},
    )
    chat_metrics = train_in_place(model, tokenizer, chat, chat_tuning_conversations(world))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return ChatModel(
        model_dir=str(folder / "model"),
        pretrain_loss=[r["loss"] for r in pre_metrics],
        chat_tune_loss=[r["loss"] for r in chat_metrics],
        parameters=sum(p.numel() for p in model.parameters()),
    )


class ChatEval(StageResult):
    """A chat model's misalignment before fine-tuning: exact probabilities, sampled bad and
    incoherent rates per group, and the fraction of all sampled answers that are bad."""

    exact: dict[str, float | None]
    sampled: dict[str, float]
    misaligned_rate: float
    n_samples: int
    persona_probe: dict[str, Any]


def evaluate_chat_model(study: StudyConfig, world: World, model_dir: str, folder: Path) -> ChatEval:
    """Exact and sampled (seed 0) misalignment of the chat model in `model_dir`, and the
    persona probe at each of its layers (`emlab.study.world.probe`)."""
    model, tokenizer = load_model(ModelConfig(name_or_path=model_dir))
    exact = ExactEvaluator(world, tokenizer, study.trained_domain)(model)
    sampled = world_sample_rates(
        model,
        tokenizer,
        world,
        study.trained_domain,
        study.samples_per_question,
        0,
        folder / "samples.jsonl",
    )
    rows = sampled.samples
    misaligned = sum(r.label == "bad" for r in rows) / len(rows)
    probe = persona_probe(model, tokenizer, world)
    return ChatEval(
        exact=exact,
        sampled=sampled.rates,
        misaligned_rate=misaligned,
        n_samples=len(rows),
        persona_probe=probe,
    )
