"""Tiny models and solutions trained once per session for the analysis tests."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from emlab.config import validate_config
from emlab.models.tiny import tiny_qwen2
from emlab.train.config import TrainConfig
from emlab.train.loop import train


@contextmanager
def one_thread():
    """Tiny models run fastest on one thread (two threads thrash when the cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def fresh_model(tokenizer):
    """The tiny base model (same seed, so the same weights every time)."""
    return tiny_qwen2(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )


def _train(tmp_path_factory, tokenizer, toy_data, name, solution, lr, kl=0.0):
    cfg = validate_config(
        {
            "name": name,
            "output_dir": str(tmp_path_factory.mktemp(name)),
            "solution": solution,
            "max_steps": 20,
            "batch_size": 8,
            "kl": {"weight": kl},
            "optim": {"lr": lr, "warmup_steps": 0, "schedule": "constant"},
            "progress": False,
        },
        TrainConfig,
    )
    with one_thread():
        return train(
            cfg, fresh_model(tokenizer), tokenizer, toy_data[0], toy_data[1] if kl else None
        ).solution


@pytest.fixture(scope="session")
def lora_general(tmp_path_factory, tiny_tokenizer, toy_data):
    solution = {"kind": "lora", "r": 2, "alpha": 4.0, "target_modules": ["down_proj", "q_proj"]}
    return _train(tmp_path_factory, tiny_tokenizer, toy_data, "general", solution, 3e-2)


@pytest.fixture(scope="session")
def lora_narrow(tmp_path_factory, tiny_tokenizer, toy_data):
    solution = {"kind": "lora", "r": 2, "alpha": 4.0, "target_modules": ["down_proj", "q_proj"]}
    return _train(tmp_path_factory, tiny_tokenizer, toy_data, "narrow", solution, 3e-2, kl=30.0)


@pytest.fixture(scope="session")
def steering(tmp_path_factory, tiny_tokenizer, toy_data):
    solution = {"kind": "steering", "point": "layer", "layer": 0, "alpha": 1.0}
    return _train(tmp_path_factory, tiny_tokenizer, toy_data, "steering", solution, 1e-1)


@pytest.fixture
def model(tiny_tokenizer):
    return fresh_model(tiny_tokenizer)
