"""Every shipped config validates, and its header says how to launch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emlab.config import load_config
from emlab.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2] / "configs"


TRAIN_CONFIGS = sorted(
    p for p in (ROOT / "qwen2.5").glob("*.yaml") if not p.stem.endswith("_study")
)
STUDY_CONFIGS = sorted((ROOT / "qwen2.5").glob("*_study.yaml"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_qwen_configs_validate_and_carry_a_launch_line(path):
    cfg = load_config(path, TrainConfig)
    header = path.read_text().split("\n")[:4]
    assert any("emlab train configs/qwen2.5/" + path.name in line for line in header)
    assert (cfg.kl.weight > 0) == path.stem.endswith("_kl")
    if cfg.kl.weight:
        assert 0.5 < cfg.kl.per_token_weight(151_936) < 7  # the paper's per-token strengths


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_qwen_study_configs_load_with_the_papers_methods(path):
    from emlab.judge.config import load_judge_config
    from emlab.study.model.config import ModelStudyConfig

    assert yaml.safe_load(path.read_text())["kind"] == "model"
    study = load_config(path, ModelStudyConfig)
    assert "emlab reproduce configs/qwen2.5/" + path.name in path.read_text()
    assert study.model.name_or_path.startswith("Qwen/Qwen2.5-") and study.model.dtype == "bfloat16"
    assert set(study.methods) == {"lora_r1", "lora_r32", "steering"} and len(study.seeds) >= 3
    r1 = study.methods["lora_r1"].solution
    assert (r1.r, r1.alpha, r1.target_modules, len(r1.layers)) == (1, 256, ["down_proj"], 1)
    for method in study.methods.values():
        kl = TrainConfig.model_validate(
            {**method.train, "kl": {**method.train["kl"], "weight": method.kl_weight}}
        ).kl
        assert kl.convention == "reference" and 0.5 < kl.per_token_weight(151_936) < 7
    judge = ROOT.parent / study.judge
    assert judge.is_file() and study.metrics.domain_metric in load_judge_config(judge).domains
    assert all(
        p.startswith("data/")
        for p in (
            study.data.train,
            study.data.ood,
            *study.data.pretraining,
            study.in_domain_questions,
        )
    )


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
    from emlab.study.world.config import StudyConfig

    study = load_config(path, StudyConfig, merge_defaults=True)
    assert study.trained_domain in study.world.domains
    assert len(study.seeds) >= 3
