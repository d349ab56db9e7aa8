"""Random solutions: Gaussian directions of a solution's shapes at an exact solution norm."""

from __future__ import annotations

import torch

from emlab.solutions import Solution


def random_solution(like: Solution, norm: float, seed: int) -> Solution:
    """A solution of `like`'s kind and shapes with Gaussian tensors (a random v for a steering
    vector; random A and B for LoRA; random deltas for a full delta), rescaled so that its
    solution norm (LoRA: ||scaling * B @ A|| summed in quadrature) is exactly `norm`."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        name: torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype)
        for name, t in sorted(like.tensors().items())
    }
    candidate = like.with_tensors(tensors)
    return candidate.scaled(norm / candidate.norm())
