"""Full fine-tuning as a solution: a delta per parameter tensor from the base weights."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from emlab.errors import ModelError
from emlab.models.modules import unwrap
from emlab.solutions.base import Solution


class FullDelta(Solution):
    """theta = theta_base + multiplier * delta, for each named parameter in `deltas`."""

    kind = "full"

    def __init__(self, deltas: dict[str, torch.Tensor], multiplier: float = 1.0) -> None:
        self.deltas, self.multiplier = deltas, multiplier

    @classmethod
    def between(cls, base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor]) -> FullDelta:
        """tuned - base in float32, for each named tensor of `base` (changed tensors only)."""
        deltas = {}
        for name, b in base.items():
            d = tuned[name].detach().float().cpu() - b.float().cpu()
            if torch.any(d != 0):
                deltas[name] = d
        return cls(deltas)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.deltas)

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> FullDelta:
        return FullDelta(dict(tensors), self.multiplier)

    def norm(self) -> float:
        # fsum: the same float whatever the tensors' order (model order in memory, sorted on disk)
        squares = (float(d.double().pow(2).sum()) for d in self.deltas.values())
        return abs(self.multiplier) * math.sqrt(math.fsum(squares))

    def scaled(self, m: float) -> FullDelta:
        return FullDelta(self.deltas, self.multiplier * m)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        params = dict(unwrap(model).named_parameters())
        missing = [n for n in self.deltas if n not in params]
        if missing:
            raise ModelError(f"model has no parameter(s) {missing[:3]} that this delta changes.")
        saved = {}
        with torch.no_grad():
            for name, d in self.deltas.items():
                p = params[name]
                saved[name] = p.detach().clone()
                p.add_(self.multiplier * d.to(p.device, p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, original in saved.items():
                    params[name].copy_(original)

    def metadata(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier}

    @classmethod
    def from_saved(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> FullDelta:
        return cls(tensors, meta.get("multiplier", 1.0))
