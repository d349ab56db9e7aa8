"""Mean-difference directions, steering with them, ablating them, cosine similarities."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from emlab.analysis.directions import (
    ablated,
    cosine_matrix,
    direction_steering,
    lora_cosines,
    mean_activations,
    mean_diff_directions,
)
from emlab.models.chat import IGNORE, collate, encode_conversation
from emlab.models.modules import decoder_layers
from emlab.solutions import LoraSolution, SteeringSolution


def test_mean_activations_match_hidden_states_by_hand(model, tiny_tokenizer, toy_data):
    convs = toy_data[0][:10]
    means = mean_activations(model, tiny_tokenizer, convs, batch_size=3)  # (L, d)
    assert means.shape == (2, 32)
    batch = collate([encode_conversation(tiny_tokenizer, c, 512) for c in convs], pad_id=0)
    with torch.no_grad():
        hidden = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        ).hidden_states
    keep = batch["labels"] != IGNORE  # assistant tokens only
    torch.testing.assert_close(
        means[0], hidden[1][keep].mean(0), rtol=1e-5, atol=1e-6
    )  # layer 0's output
    diff = mean_diff_directions(
        model, tiny_tokenizer, toy_data[0][:10], toy_data[1][:10], batch_size=4
    )
    bad = mean_activations(model, tiny_tokenizer, toy_data[1][:10])
    torch.testing.assert_close(diff, bad - means, rtol=1e-5, atol=1e-6)
    assert float(diff.norm()) > 0.1


def _capture(model, layer, store):
    return decoder_layers(model)[layer].register_forward_hook(
        lambda mod, args, out: store.append(out.detach().clone())
    )


def test_ablated_direction_has_zero_projection_in_forward_and_generation(
    model, tiny_tokenizer, toy_data
):
    u = mean_diff_directions(model, tiny_tokenizer, toy_data[0][:8], toy_data[1][:8])[0]
    unit = u / u.norm()
    ids = torch.tensor([encode_conversation(tiny_tokenizer, toy_data[0][0], 512).input_ids])
    plain: list[torch.Tensor] = []
    handle = _capture(model, 1, plain)
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    assert float((plain[0] @ unit).abs().max()) > 1e-2  # the direction is present without ablation
    seen: list[torch.Tensor] = []
    with ablated(model, u) as m:
        handles = [_capture(m, 0, seen), _capture(m, 1, seen)]  # run after the ablation hooks
        with torch.no_grad():
            m(input_ids=ids)
            out = m.generate(
                ids, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None
            )
        for h in handles:
            h.remove()
    assert out.shape[1] == ids.shape[1] + 4
    assert len(seen) == 2 + 2 * 4  # one forward + 4 generation steps, two layers each
    for h in seen:
        assert float((h @ unit).abs().max()) < 1e-5 * float(h.abs().max())
    assert not decoder_layers(model)[0]._forward_hooks  # hooks removed on exit


def test_direction_steering_adds_alpha_times_direction(model):
    u = torch.randn(32, generator=torch.Generator().manual_seed(0))
    sol = direction_steering(u, layer=1, alpha=2.0)
    assert isinstance(sol, SteeringSolution) and (sol.point, sol.layer) == ("layer", 1)
    assert sol.norm() == pytest.approx(2.0 * float(u.norm()), rel=1e-6)
    ids = torch.randint(5, 200, (2, 6), generator=torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        for ctx in (nullcontext(), sol.applied(model)):
            with ctx:
                handle = _capture(model, 1, seen)  # runs after the steering hook
                model(input_ids=ids)
                handle.remove()
    torch.testing.assert_close(seen[1] - seen[0], (2.0 * u).expand(2, 6, 32), rtol=1e-5, atol=1e-5)


def test_cosines_by_hand():
    vectors = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    expected = torch.tensor([[1, 2**-0.5, -1], [2**-0.5, 1, -(2**-0.5)], [-1, -(2**-0.5), 1]])
    torch.testing.assert_close(cosine_matrix(vectors), expected)
    a, b = (
        torch.tensor([[1.0, 0.0, 0.0]]),
        torch.tensor([[3.0], [4.0]]),
    )  # rank 1: A # (1, 3), B # (2, 1)
    first = LoraSolution({"m": (a, b)}, r=1, alpha=1.0)
    second = LoraSolution({"m": (torch.tensor([[1.0, 1.0, 0.0]]), -b)}, r=1, alpha=1.0)
    cos = lora_cosines(first, second)["m"]
    assert cos["A"].shape == (1, 1) and float(cos["A"]) == pytest.approx(2**-0.5)
    assert float(cos["B"]) == pytest.approx(-1.0)
