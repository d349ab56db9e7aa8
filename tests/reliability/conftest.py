"""Fixtures of the reliability suite: a tiny model on disk, chat data files, a judge config on a
loopback server (tests/judge/fake_openai.py) and the tiny prompts of tests/generate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from datafiles import write_chat

TESTS = Path(__file__).resolve().parent.parent
for helpers in ("judge", "generate"):  # fake_openai.py, tiny_prompts.py
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))


@pytest.fixture
def model_dir(tmp_path_factory, tiny_model, tiny_tokenizer) -> Path:
    """The tiny Qwen2 (2 layers) and its tokenizer saved as a local model folder."""
    folder = tmp_path_factory.mktemp("model")
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def train_setup(tmp_path, model_dir, toy_data) -> dict:
    """A valid LoRA + KL training config (as a dict) with its data files in tmp_path/data."""
    data = tmp_path / "data"
    data.mkdir()
    return {
        "name": "rel",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "train": str(write_chat(data / "train.jsonl", toy_data[0])),
            "ood": str(write_chat(data / "ood.jsonl", toy_data[1])),
            "heldout_fraction": 0.0,
        },
        "solution": {
            "kind": "lora",
            "r": 2,
            "alpha": 4.0,
            "target_modules": ["down_proj", "q_proj"],
        },
        "kl": {"weight": 1.0},
        "optim": {"lr": 3e-2, "warmup_steps": 2},
        "batch_size": 4,
        "max_steps": 4,
        "progress": False,
        "seed": 3,
    }
