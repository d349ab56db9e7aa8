"""The training runs of the real-model study: each method's TrainConfig and the typed result of a
run."""

from __future__ import annotations

import copy
from pathlib import Path

from emlab.config import deep_merge, validate_config
from emlab.study.common.config import recipe_config
from emlab.study.common.stages import StageResult
from emlab.study.model.config import ModelStudyConfig
from emlab.train.config import TrainConfig


class Trained(StageResult):
    """A run's solution (folder and norm) and its training loss per step."""

    solution_dir: str
    norm: float
    loss: list[float]


def method_train_config(
    cfg: ModelStudyConfig, method: str, folder: Path, seed: int, kl: bool, steps: int | None = None
) -> TrainConfig:
    """The TrainConfig of one run: the method's recipe, solution and KL weight, then its `train`
    fragment."""
    m = cfg.methods[method]
    recipe = m.recipe if steps is None else m.recipe.model_copy(update={"steps": steps})
    data = {
        k: v
        for k, v in cfg.data.model_dump(mode="json").items()
        if k in ("max_length", "group_by_length", "loss_on")
    }
    base = recipe_config(
        "continued" if steps is not None else "finetune",
        folder,
        recipe,
        seed,
        model=cfg.model.model_dump(mode="json"),
        solution=m.solution.model_dump(mode="json"),
        kl={"weight": m.kl_weight if kl else 0.0},
        data=data,
    )
    merged = deep_merge(base.model_dump(mode="json"), copy.deepcopy(m.train))
    return validate_config(merged, TrainConfig, source=f"methods.{method}")
