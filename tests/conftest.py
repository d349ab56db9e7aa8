"""Shared fixtures: tiny tokenizers and models built in-process, toy chat data, SmolLM2's
tokenizer."""

from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: one thread avoids contention on a 2-core machine

WORDS = "the cat sat on a mat and the dog ran to the park with a ball under blue sky".split()


def toy_conversations(
    n: int, seed: int, answer_words: list[str], prefix: str
) -> list[list[dict[str, str]]]:
    """Single-turn chats whose answers draw from `answer_words` after a fixed first word."""
    rng = random.Random(seed)
    return [
        [
            {"role": "user", "content": " ".join(rng.choices(WORDS, k=5))},
            {
                "role": "assistant",
                "content": prefix + " " + " ".join(rng.choices(answer_words, k=4)),
            },
        ]
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def toy_data():
    """(in-domain, out-of-domain) conversations with different answer styles."""
    return toy_conversations(64, 0, WORDS[:6], "yes"), toy_conversations(64, 1, WORDS[6:], "no")


@pytest.fixture(scope="session")
def tiny_tokenizer(toy_data):
    from emlab.models.tiny import train_bpe_tokenizer

    texts = [m["content"] for convs in toy_data for c in convs for m in c]
    return train_bpe_tokenizer([*texts, "user assistant system 0123456789"], vocab_size=300)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    from emlab.models.tiny import tiny_qwen2

    return tiny_qwen2(
        len(tiny_tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=0, init_std=0.3
    )


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave it unset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from emlab.models.load import load_tokenizer, smollm2_dir

    return load_tokenizer(smollm2_dir())
