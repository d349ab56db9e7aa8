"""Stability: orthogonal noise per tensor, relative loss increase, spread over seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emlab.analysis.loss import LossEvaluator
from emlab.analysis.stability import compare_stability, stability_curve
from emlab.errors import EmlabError

T_975_DF4 = 2.7764451051977987  # Student t quantile for a 95% CI over 5 seeds


def test_relative_increase_and_ci_by_hand(model, tiny_tokenizer, toy_data, lora_general):
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:16])
    curve = stability_curve(
        evaluator, lora_general, "general", eps=[0.0, 0.1, 0.5, 1.0], seeds=range(5)
    )
    base, loss = evaluator.evaluate(None), evaluator.evaluate(lora_general)
    assert curve.base_loss == pytest.approx(base) and curve.loss == pytest.approx(loss)
    losses = np.array(curve.losses)  # (seeds, eps)
    assert losses.shape == (5, 4)
    # eps = 0 reproduces the original solution exactly
    assert np.all(losses[:, 0] == curve.loss)
    assert np.all(np.array(curve.relative)[:, 0] == 0.0)
    # one perturbed loss by hand
    assert losses[3, 2] == pytest.approx(
        evaluator.evaluate(lora_general.perturbed(0.5, 3)), rel=1e-6
    )
    rel = (losses - loss) / (base - loss)
    np.testing.assert_allclose(curve.relative, rel, rtol=1e-6)
    # each seed draws a different noise direction
    assert len(set(np.round(losses[:, 2], 7))) == 5
    # mean, std and 95% CI over seeds by hand
    s = curve.summary
    col = rel[:, 2]
    assert s.mean[2] == pytest.approx(col.mean())
    assert s.std[2] == pytest.approx(col.std(ddof=1))
    half = T_975_DF4 * col.std(ddof=1) / np.sqrt(5)
    assert s.ci_low[2] == pytest.approx(col.mean() - half) and s.ci_high[2] == pytest.approx(
        col.mean() + half
    )
    assert s.mean[3] > s.mean[1]  # more noise, more loss
    json.dumps(curve.to_json())


@pytest.mark.parametrize("fixture", ["lora_general", "steering"])
def test_eps_one_is_orthogonal_with_same_norm_and_seeds_differ(request, fixture):
    solution = request.getfixturevalue(fixture)
    a, b = solution.perturbed(1.0, seed=0).tensors(), solution.perturbed(1.0, seed=1).tensors()
    for name, x in solution.tensors().items():
        x64, y64 = x.double().flatten(), a[name].double().flatten()
        assert float(x64 @ y64) == pytest.approx(0.0, abs=1e-5 * float(x64.norm()) ** 2), name
        assert float(y64.norm()) == pytest.approx(float(x64.norm()), rel=1e-5), name
        assert not torch.allclose(a[name], b[name]), name  # a different y per seed
        assert torch.equal(solution.perturbed(0.0, seed=0).tensors()[name], x), name


def test_compare_stability_shares_base_loss_and_needs_seeds(
    model, tiny_tokenizer, toy_data, lora_general, lora_narrow
):
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:8])
    result = compare_stability(
        evaluator, {"general": lora_general, "narrow": lora_narrow}, eps=[0.3], seeds=range(5)
    )
    assert [c.name for c in result.curves] == ["general", "narrow"]
    assert result.curve("general").base_loss == result.curve("narrow").base_loss
    assert result.curve("narrow").loss == pytest.approx(evaluator.evaluate(lora_narrow))
    with pytest.raises(EmlabError, match="several seeds"):
        stability_curve(evaluator, lora_general, "g", seeds=[0])
