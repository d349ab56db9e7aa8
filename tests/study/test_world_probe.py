"""The persona probe: logistic regression on hidden states at a hook point, held-out accuracy."""

from __future__ import annotations

import torch

from emlab.models.tiny import tiny_qwen2
from emlab.study.world.probe import persona_features, persona_probe, probe_accuracy
from emlab.world import WorldConfig, build_world, world_tokenizer


def test_a_separable_label_is_read_exactly_and_a_random_one_is_not():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=gen)
    x = x[x[:, 3].abs() > 0.3]  # a margin around the boundary
    assert probe_accuracy(x, (x[:, 3] > 0).float()) == 1.0
    noise = (torch.rand(len(x), generator=gen) > 0.5).float()
    assert 0.35 < probe_accuracy(x, noise) < 0.65


def test_features_are_taken_at_the_hooked_output_of_the_last_prompt_token():
    world = build_world(
        WorldConfig(topics_per_domain=2, questions_per_topic=2, heldout_fraction=0.5)
    )
    tok = world_tokenizer(world)
    model = tiny_qwen2(
        len(tok), hidden_size=16, num_layers=2, num_heads=2, pad_token_id=tok.pad_token_id
    )
    features, labels = persona_features(model, tok, world, "layer", 1, n_documents=40, batch_size=7)
    assert features.shape == (len(labels), 16) and set(labels.tolist()) <= {0.0, 1.0}
    # batching and padding change nothing: the same rows one at a time
    one, _ = persona_features(model, tok, world, "layer", 1, n_documents=40, batch_size=1)
    assert torch.allclose(features, one, atol=1e-5)
    result = persona_probe(model, tok, world, n_documents=40)
    assert len(result["layers"]) == 2 and 0.5 <= result["majority"] <= 1.0
    # the embedding of the prompt's last token is the same in every document: no better than the
    # majority
    assert result["embed"] <= result["majority"] + 1e-6
