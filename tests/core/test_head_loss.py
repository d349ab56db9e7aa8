"""Chunked head losses: same values and gradients as the full-logits definitions, top-k KL by
hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emlab.train import head_loss as hl
from emlab.train.base_reference import TopKBase, kl_chunks
from emlab.train.losses import ExactKL, token_kl, with_rest


class _Model(nn.Module):
    """Just enough of an HF causal LM for OutputHead: an output head and a config."""

    def __init__(self, d: int, vocab: int, softcap: float | None = None) -> None:
        super().__init__()
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.config = type("Config", (), {"final_logit_softcapping": softcap})()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


class _FixedBase:
    """A BaseTarget holding full-vocabulary base log-probs # (N, V), compared as ExactBase does."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        self.log_probs = log_probs

    def kl(self, logits, start, stop, direction):
        return ExactKL.apply(logits, self.log_probs[start:stop].clone(), direction)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(hl, "CHUNK_ELEMENTS", 3 * 11)  # 3 rows of an 11-token vocabulary per chunk


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_chunked_cross_entropy_matches_full_logits(softcap):
    torch.manual_seed(0)
    model = _Model(5, 11, softcap)
    hidden = torch.randn(10, 5, requires_grad=True)
    targets = torch.randint(0, 11, (10,))
    head = hl.OutputHead(model)
    chunked = hl.head_loss(hidden, head, hl.cross_entropy_chunks(targets)) * 0.5
    logits = model.lm_head(hidden)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    full = F.cross_entropy(logits, targets, reduction="sum") * 0.5
    torch.testing.assert_close(chunked, full)
    for got, want in zip(
        _grads(chunked, [hidden, model.lm_head.weight]),
        _grads(full, [hidden, model.lm_head.weight]),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_frozen_head_gets_no_gradient_and_hidden_gradient_is_exact():
    torch.manual_seed(1)
    model = _Model(4, 11)
    model.lm_head.weight.requires_grad_(False)
    hidden = torch.randn(7, 4, requires_grad=True)
    base = F.log_softmax(torch.randn(7, 11), dim=-1)
    chunked = hl.head_loss(hidden, hl.OutputHead(model), kl_chunks(_FixedBase(base), "forward"))
    full = token_kl(model.lm_head(hidden), base, "forward").sum()
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(*(_grads(x, [hidden])[0] for x in (chunked, full)))
    assert model.lm_head.weight.grad is None


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_chunked_kl_matches_token_kl(direction):
    torch.manual_seed(2)
    model = _Model(6, 11)
    hidden = torch.randn(8, 6, requires_grad=True)
    base = F.log_softmax(torch.randn(8, 11), dim=-1)
    chunked = hl.head_loss(hidden, hl.OutputHead(model), kl_chunks(_FixedBase(base), direction))
    full = token_kl(model.lm_head(hidden), base, direction).sum()
    torch.testing.assert_close(chunked, full)
    for got, want in zip(
        _grads(chunked, [hidden, model.lm_head.weight]),
        _grads(full, [hidden, model.lm_head.weight]),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_with_rest_adds_the_remaining_mass():
    log_p = torch.tensor([[0.5, 0.25]]).log()
    torch.testing.assert_close(with_rest(log_p).exp(), torch.tensor([[0.5, 0.25, 0.25]]))


def test_top_k_kl_by_hand():
    # base p = (0.5, 0.3, 0.1, 0.1), tuned q = (0.25, 0.25, 0.25, 0.25); top-2 of the base: tokens
    # 0, 1
    p = torch.tensor([[0.5, 0.3, 0.1, 0.1]])
    q = torch.full((1, 4), 0.25)
    target = TopKBase(torch.tensor([[0, 1]], dtype=torch.int32), p[:, :2].log())
    loss = kl_chunks(target, "forward")(q.log(), 0, 1)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(loss) <= float(
        token_kl(q.log(), p.log(), "forward").sum()
    )  # coarsening lowers the KL
    # with every token cached the coarsened KL is the exact one
    every = TopKBase(torch.tensor([[0, 1, 2, 3]], dtype=torch.int32), p.log())
    assert float(kl_chunks(every, "reverse")(q.log(), 0, 1)) == pytest.approx(
        float(token_kl(q.log(), p.log(), "reverse").sum()), rel=1e-4
    )
