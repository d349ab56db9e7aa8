"""vLLM backend (vllm is not installed here): its refusals and its missing-extra error."""

from __future__ import annotations

import sys

import pytest
import torch

from emlab.errors import EmlabError
from emlab.generate.sampling import SamplingConfig
from emlab.generate.vllm_backend import check_solution, generate_vllm, max_lora_rank, vllm_engine
from emlab.solutions import FullDelta, LoraSolution, SteeringSolution


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError


def test_steering_vector_is_refused_with_a_way_out(prompts):
    steering = SteeringSolution(torch.ones(4), "layer", 0, alpha=1.0)
    with pytest.raises(EmlabError, match="steering vector.*HF backend"):
        vllm_engine("some/model", solution=steering)
    with pytest.raises(EmlabError, match="steering vector"):
        generate_vllm(object(), prompts, "unused.jsonl", SamplingConfig(), solution=steering)


def test_full_delta_is_refused():
    with pytest.raises(EmlabError, match="LoRA solutions only"):
        check_solution(FullDelta({"w": torch.ones(2, 2)}))


def test_missing_vllm_is_a_clear_error(no_vllm, prompts, tmp_path):
    with pytest.raises(EmlabError, match=r"pip install 'emlab\[vllm\]'"):
        vllm_engine("some/model")
    with pytest.raises(EmlabError, match="not installed"):
        generate_vllm(object(), prompts, tmp_path / "g.jsonl")
    lora = LoraSolution({"m": (torch.ones(2, 4), torch.ones(4, 2))}, r=2, alpha=2.0)
    with pytest.raises(EmlabError, match="not installed"):
        vllm_engine("some/model", solution=lora)  # a LoRA passes the check, then needs vllm


@pytest.mark.parametrize(("r", "expected"), [(1, 1), (2, 8), (16, 16), (17, 32), (512, 512)])
def test_max_lora_rank(r, expected):
    assert max_lora_rank(r) == expected


def test_too_large_rank():
    with pytest.raises(EmlabError, match="HF backend"):
        max_lora_rank(1024)
