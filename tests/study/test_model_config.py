"""A real-model study's method config: what its `train` fragment may set."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize(
    "fragment, owned",
    [
        ({"max_steps": 3}, "max_steps"),
        ({"optim": {"weight_decay": 0.01, "max_grad_norm": 0.5}}, "optim.weight_decay"),
        ({"optim": {"lr": 1e-3}}, "optim.lr"),
        ({"kl": {"weight": 1.0, "scope": "all"}}, "kl.weight"),
    ],
)
def test_a_real_model_methods_train_fragment_may_not_set_what_its_recipe_sets(fragment, owned):
    """The recipe sets the optimiser (weight decay included); a fragment that also set it would
    silently win over the recipe."""
    from pydantic import ValidationError

    from emlab.study.model.config import ModelMethodConfig

    method = {
        "solution": {"kind": "lora", "r": 1},
        "recipe": {"steps": 3, "lr": 1e-3},
        "kl_weight": 1.0,
    }
    with pytest.raises(ValidationError, match=rf"train sets \['{re.escape(owned)}'\]"):
        ModelMethodConfig.model_validate({**method, "train": fragment})
    assert ModelMethodConfig.model_validate({**method, "train": {"optim": {"max_grad_norm": 0.5}}})
