"""Loss evaluation (assistant tokens, token-weighted) and the efficiency sweep."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from emlab.analysis.efficiency import DEFAULT_MULTIPLIERS, compare_efficiency, efficiency_curve
from emlab.analysis.evaluator import solution_groups
from emlab.analysis.loss import LossEvaluator
from emlab.models.chat import collate, encode_conversation
from emlab.solutions import SteeringSolution
from emlab.train.losses import sft_loss


def _hand_loss(model, tokenizer, convs, solution=None):
    """sft_loss over ONE batch holding every conversation: the token-weighted mean by definition."""
    batch = collate(
        [encode_conversation(tokenizer, c, 512) for c in convs], pad_id=tokenizer.pad_token_id
    )
    with torch.no_grad():
        if solution is None:
            return float(
                sft_loss(
                    model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits,
                    batch["labels"],
                )
            )
        with solution.applied(model):
            return float(
                sft_loss(
                    model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits,
                    batch["labels"],
                )
            )


def test_loss_is_token_weighted_and_sweep_hits_base_and_trained_losses(
    model, tiny_tokenizer, toy_data, lora_general, monkeypatch
):
    convs = toy_data[0][:21]
    evaluator = LossEvaluator(model, tiny_tokenizer, convs, batch_size=5)  # batches of 5,5,5,5,1
    assert len(evaluator.batches) == 5 and evaluator.n_conversations == 21
    base, tuned = (
        _hand_loss(model, tiny_tokenizer, convs),
        _hand_loss(model, tiny_tokenizer, convs, lora_general),
    )
    # no re-tokenisation after construction
    monkeypatch.setattr(
        PreTrainedTokenizerFast, "__call__", lambda *a, **k: pytest.fail("re-tokenised")
    )
    curve = efficiency_curve(evaluator, lora_general, "general")
    assert curve.multipliers == pytest.approx([i / 10 for i in range(21)])
    assert curve.losses[0] == pytest.approx(base, rel=1e-5)
    assert curve.base_loss == pytest.approx(base, rel=1e-5)
    assert curve.losses[10] == pytest.approx(tuned, rel=1e-5)
    assert curve.loss_at_one == pytest.approx(tuned, rel=1e-5)
    assert tuned < 0.7 * base  # the trained solution lowers the loss
    monkeypatch.undo()
    # a mean of batch means would be a different number: the check above discriminates
    batch_means = [
        _hand_loss(model, tiny_tokenizer, convs[i : i + 5], lora_general) for i in range(0, 21, 5)
    ]
    assert abs(sum(batch_means) / len(batch_means) - tuned) > 1e-3


def test_sweep_evaluates_each_multiplier_once(model, tiny_tokenizer, toy_data, lora_general):
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:12], batch_size=6)  # 2 batches
    passes = []
    handle = model.register_forward_pre_hook(lambda mod, args: passes.append(1))
    curve = efficiency_curve(
        evaluator, lora_general, "general", multipliers=[0.0, 0.5, 1.0, 1.5, 2.0]
    )
    assert len(passes) == 5 * 2  # m = 1 and the base (m = 0) are not evaluated again
    passes.clear()
    apart = efficiency_curve(evaluator, lora_general, "general", multipliers=[2.0, 0.5])
    assert (
        len(passes) == 3 * 2
    )  # 0.5, 1 and 2: the evaluator holds the base model's loss since m = 0
    passes.clear()
    fresh = LossEvaluator(model, tiny_tokenizer, toy_data[0][:12], batch_size=6)
    zeros = fresh.evaluate_many(
        [lora_general.scaled(0.0), None, lora_general.scaled(0.0), lora_general]
    )
    assert len(passes) == 2 * 2  # the base once (three ways of asking for it), the solution once
    assert zeros[0] == zeros[1] == zeros[2] == curve.base_loss and zeros[3] == curve.loss_at_one
    handle.remove()
    assert (
        curve.base_loss == evaluator.evaluate(None) == apart.base_loss
    )  # m = 0 is the base model exactly
    assert (
        curve.loss_at_one
        == curve.losses[2]
        == apart.loss_at_one
        == evaluator.evaluate(lora_general)
    )
    assert apart.multipliers == [0.5, 2.0] and apart.losses == [curve.losses[1], curve.losses[4]]


def test_reported_norm_includes_lora_scaling(
    model, tiny_tokenizer, toy_data, lora_general, steering
):
    by_hand = math.sqrt(
        sum(
            float((4.0 / 2 * b.double() @ a.double()).pow(2).sum())
            for a, b in lora_general.adapters.values()
        )
    )
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:8])
    curve = efficiency_curve(evaluator, lora_general, "general", multipliers=[0.0, 0.5, 2.0])
    assert curve.norm == pytest.approx(by_hand, rel=1e-9)
    assert curve.norms == pytest.approx([0.0, 0.5 * by_hand, 2 * by_hand], rel=1e-9)
    steer = efficiency_curve(evaluator, steering.scaled(3.0), "steer", multipliers=[1.0])
    assert steer.norm == pytest.approx(
        3.0 * 1.0 * float(steering.v.double().norm()), rel=1e-6
    )  # multiplier * alpha * ||v||
    assert curve.loss_per_norm_sq == pytest.approx(curve.loss_at_one / by_hand**2)
    assert curve.drop_per_norm_sq == pytest.approx(
        (curve.base_loss - curve.loss_at_one) / by_hand**2
    )


@pytest.mark.parametrize(
    ("point", "layer", "rows_per_layer"),
    [("embed", 0, [48, 48]), ("layer", 0, [8, 48]), ("mlp", 0, [8, 48]), ("mlp", 1, [8, 8])],
)
def test_batched_steering_sweep_equals_one_at_a_time(
    model, tiny_tokenizer, toy_data, steering, point, layer, rows_per_layer
):
    solution = SteeringSolution(steering.v, point, layer, alpha=1.5)
    scaled = [solution.scaled(m) for m in DEFAULT_MULTIPLIERS]
    batched = LossEvaluator(
        model, tiny_tokenizer, toy_data[0][:20], batch_size=8, max_rows=48
    )  # 6 scales a pass
    assert any(
        bool((b["attention_mask"] == 0).any()) for b in batched.batches
    )  # padded: the tiled masks matter
    passes, layer_rows = [], {0: [], 1: []}
    hooks = [model.register_forward_hook(lambda mod, args, out: passes.append(out.logits.shape[0]))]
    for i in (
        layer_rows
    ):  # rows through each decoder layer: only what follows the steered module is tiled
        q_proj = model.model.layers[i].self_attn.q_proj
        hooks.append(
            q_proj.register_forward_hook(
                lambda mod, args, out, i=i: layer_rows[i].append(args[0].shape[0])
            )
        )
    got = batched.evaluate_many(scaled)
    for h in hooks:
        h.remove()
    assert max(passes) == 48 and len(passes) < 21 * 3  # several scales per forward pass
    assert [max(layer_rows[i]) for i in (0, 1)] == rows_per_layer
    loop = [batched.evaluate(s) for s in scaled]  # each through SteeringSolution.applied
    assert got == pytest.approx(loop, rel=1e-5)
    assert got[0] != pytest.approx(got[-1], rel=1e-3)  # the scales do change the loss


def test_solution_groups_batch_runs_of_steering_at_one_point(steering, lora_general):
    at_layer, at_mlp = steering, SteeringSolution(steering.v, "mlp", 0, 1.0)
    sols = [at_layer, at_layer.scaled(2), at_layer.scaled(3), lora_general, at_layer, at_mlp, None]
    assert solution_groups(sols, per_pass=2) == [[0, 1], [2], [3], [4], [5], [6]]
    assert solution_groups(sols, per_pass=1) == [[i] for i in range(7)]


def test_compare_efficiency_at_equal_norm(
    model, tiny_tokenizer, toy_data, lora_general, lora_narrow
):
    evaluator = LossEvaluator(model, tiny_tokenizer, toy_data[0][:16])
    result = compare_efficiency(
        evaluator,
        {"general": lora_general, "narrow": lora_narrow},
        multipliers=[0, 0.5, 1, 1.5, 2],
        n_norms=9,
    )
    general, narrow, rand = (result.curve(n) for n in ("general", "narrow", "random"))
    ref = lora_general.norm()
    assert result.reference_norm == pytest.approx(ref)
    assert rand.norm == pytest.approx(ref, rel=1e-9)  # random direction at the reference norm
    assert result.at_reference_norm["general"] == pytest.approx(general.loss_at_one, rel=1e-6)
    expected = evaluator.evaluate(lora_narrow.scaled(ref / lora_narrow.norm()))
    assert result.at_reference_norm["narrow"] == pytest.approx(expected, rel=1e-6)
    assert result.common_norms[-1] == pytest.approx(min(2 * ref, 2 * lora_narrow.norm()))
    # interpolation is exact at a swept norm: m = 1 of the narrow solution
    at = narrow.loss_at([lora_narrow.norm()])[0]
    assert at == pytest.approx(narrow.loss_at_one, rel=1e-6)
    assert result.at_reference_norm["random"] > result.at_reference_norm["general"]
    data = json.loads(json.dumps(result.to_json()))
    assert [c["name"] for c in data["curves"]] == ["general", "narrow", "random"]
    assert data["curves"][0]["min"]["loss"] == min(general.losses)
