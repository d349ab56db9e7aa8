"""benchmarks/kl_step.py's tensor-level peak memory, checked by hand on toys."""

from __future__ import annotations

import gc

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def kl_step():
    yield from load_benchmark("kl_step")


def test_storages_counted_once(kl_step):
    emb = torch.nn.Embedding(100, 10)
    head = torch.nn.Linear(10, 100, bias=False)
    head.weight = emb.weight  # tied
    assert (
        kl_step.tensor_bytes([emb.weight, head.weight, emb.weight[:5], torch.zeros(7)])
        == 100 * 10 * 4 + 7 * 4
    )


def test_peak_of_known_allocations(kl_step):
    gc.collect()
    kl_step.peak_tensor_bytes(
        lambda: torch.empty(123_456)
    )  # an earlier profiled call: the allocator's count is process-wide
    before = torch.zeros(1000)

    def allocations():
        nonlocal before
        a = torch.empty(1_000_000)  # 4 MB, kept
        b = torch.empty(2_000_000)  # 8 MB: the peak is a + b
        del b
        c = torch.empty(500_000)  # 2 MB
        before = None  # made before the call, freed during it: stays counted in `alive`
        return a, c

    (a, c), peak = kl_step.peak_tensor_bytes(allocations, alive=4000)
    assert peak == 4000 + 12_000_000
    _, none = kl_step.peak_tensor_bytes(lambda: 1, alive=5)
    assert none == 5


def test_peak_of_a_training_step(kl_step):
    """Two AdamW steps of a bias-free 1000x1000 linear layer on a batch of 256: at least the
    weight, its gradient and Adam's two moment buffers; at most that plus the activations and a
    few weight-sized temporaries of the update."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(1000, 1000, bias=False)
    x = torch.randn(256, 1000)
    optimizer = torch.optim.AdamW(layer.parameters())
    weight, batch = 1000 * 1000 * 4, 256 * 1000 * 4

    def steps():
        for _ in range(2):
            layer(x).sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    gc.collect()
    _, peak = kl_step.peak_tensor_bytes(steps, alive=kl_step.tensor_bytes([layer.weight, x]))
    floor = weight + batch + weight + 2 * weight  # weight, input, gradient, exp_avg and exp_avg_sq
    assert floor <= peak <= floor + 3 * weight + 3 * batch
