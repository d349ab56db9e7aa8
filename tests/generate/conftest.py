"""Fixtures for generation tests (the tiny model and tokenizer come from tests/conftest.py)."""

from __future__ import annotations

import pytest
from tiny_prompts import make_prompts

from emlab.data.questions import Prompt


@pytest.fixture
def prompts() -> list[Prompt]:
    return make_prompts()
