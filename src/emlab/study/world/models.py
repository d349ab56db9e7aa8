"""The world's chat model: a tiny Qwen2 pre-trained on the persona corpus, then chat-tuned."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.config import validate_config
from emlab.models.chat import Conversation
from emlab.models.tiny import tiny_qwen2
from emlab.study.config import RecipeConfig, StudyConfig
from emlab.train.config import TrainConfig
from emlab.train.loop import train
from emlab.world import World, chat_tuning_conversations, pretraining_documents


def recipe_config(name: str, folder: Path, recipe: RecipeConfig, seed: int, **fields) -> TrainConfig:
    """A TrainConfig for one study stage (in-memory model and data, no progress bar)."""
    data = {
        "name": name,
        "output_dir": str(folder),
        "seed": seed,
        "max_steps": recipe.steps,
        "batch_size": recipe.batch_size,
        "optim": {"lr": recipe.lr, "warmup_steps": recipe.warmup_steps, "schedule": recipe.schedule, "betas": recipe.betas},
        "progress": False,
        **fields,
    }
    return validate_config(data, TrainConfig, source=f"study stage {name}")


def train_in_place(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, data: list[Conversation]) -> list[dict]:
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


def build_chat_model(study: StudyConfig, world: World, tokenizer: PreTrainedTokenizerBase, folder: Path) -> dict:
    """Pre-train and chat-tune the world's model; save it with its tokenizer to `folder/model`."""
    m = study.model
    model = initial_model(study, tokenizer)
    docs = [d.messages for d in pretraining_documents(world)]
    full = {"kind": "full"}
    pre = recipe_config("pretrain", folder, study.pretrain, study.world.seed, solution=full,
                        data={"loss_on": "all", "max_length": m.max_positions, "group_by_length": True})
    pre_metrics = train_in_place(model, tokenizer, pre, docs)
    chat = recipe_config("chat_tune", folder, study.chat_tune, study.world.seed, solution=full,
                         data={"max_length": m.max_positions})
    chat_metrics = train_in_place(model, tokenizer, chat, chat_tuning_conversations(world))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return {
        "model_dir": str(folder / "model"),
        "pretrain_loss": [r["loss"] for r in pre_metrics],
        "chat_tune_loss": [r["loss"] for r in chat_metrics],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
