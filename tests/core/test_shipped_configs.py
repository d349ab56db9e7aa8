"""Every shipped config validates, and its header says how to launch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emlab.config import load_config
from emlab.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((ROOT / "qwen2.5").glob("*.yaml")), ids=lambda p: p.name)
def test_qwen_configs_validate_and_carry_a_launch_line(path):
    cfg = load_config(path, TrainConfig)
    header = path.read_text().split("\n")[:4]
    assert any("emlab train configs/qwen2.5/" + path.name in line for line in header)
    assert (cfg.kl.weight > 0) == path.stem.endswith("_kl")
    if cfg.kl.weight:
        assert 0.5 < cfg.kl.per_token_weight(151_936) < 7  # the paper's per-token strengths


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
    assert "accelerate launch --config_file configs/accelerate/" + path.name in path.read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "judge").glob("*.yaml")), ids=lambda p: p.name)
def test_judge_configs_load(path):
    from emlab.judge.config import load_judge_config

    cfg = load_judge_config(path)
    assert cfg.backend == yaml.safe_load(path.read_text())["backend"]


@pytest.mark.parametrize("path", sorted((ROOT / "world").glob("*.yaml")), ids=lambda p: p.name)
def test_world_study_configs_load(path):
    from emlab.study.config import StudyConfig

    study = load_config(path, StudyConfig, merge_defaults=True)
    assert study.trained_domain in study.world.domains
    assert len(study.seeds) >= 3
