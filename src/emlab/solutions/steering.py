"""Steering vectors: alpha * v added to one module's output at every row and position."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from emlab.models.modules import HookPoint, hook_module, map_hidden
from emlab.solutions.base import Solution


def add_to_output(output: Any, delta: torch.Tensor) -> Any:
    """Add `delta` (broadcast over batch and positions) to a module output, tensor or tuple.

    A tensor output # (B, T, d) gets delta on every row; for a tuple only its first element
    (the hidden states) changes. Never indexes a tensor output (the reference's row-0 bug).
    """
    return map_hidden(output, lambda h: h + delta.to(h.dtype))


class SteeringVector(nn.Module):
    """The trainable form: a parameter v # (d,) times a fixed alpha, hooked into a model.

    v is float32 whatever the model's dtype (AdamW on a bf16 vector drops every update below
    the bf16 spacing of its entries); the hook casts alpha * v to the activations' dtype.
    Registered as a submodule of the model (so DDP/FSDP see it); `enabled` switches it off
    for base-model logits without a second model copy.
    """

    def __init__(
        self,
        model: nn.Module,
        point: HookPoint,
        layer: int,
        alpha: float,
        init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.point, self.layer, self.alpha = point, layer, alpha
        target = hook_module(model, point, layer)
        d = model.config.hidden_size
        self.v = nn.Parameter(torch.zeros(d) if init is None else init.detach().clone().float())
        self.enabled = True
        self._handle = target.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        return add_to_output(output, self.alpha * self.v) if self.enabled else output

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Within the block, the model computes without the vector."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def remove(self) -> None:
        """Detach the hook from the model."""
        self._handle.remove()

    def solution(self) -> SteeringSolution:
        """The current vector as a SteeringSolution (detached copy)."""
        return SteeringSolution(self.v.detach().clone(), self.point, self.layer, self.alpha)


class SteeringSolution(Solution):
    """A fixed steering vector: the change is multiplier * alpha * v at (point, layer)."""

    kind = "steering"

    def __init__(
        self, v: torch.Tensor, point: HookPoint, layer: int, alpha: float, multiplier: float = 1.0
    ) -> None:
        self.v, self.point, self.layer, self.alpha, self.multiplier = (
            v,
            point,
            layer,
            alpha,
            multiplier,
        )

    @property
    def vector(self) -> torch.Tensor:
        """The added vector multiplier * alpha * v # (d,)."""
        return self.multiplier * self.alpha * self.v

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"v": self.v}

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> SteeringSolution:
        return SteeringSolution(tensors["v"], self.point, self.layer, self.alpha, self.multiplier)

    def norm(self) -> float:
        return float(self.vector.double().norm())

    def scaled(self, m: float) -> SteeringSolution:
        return SteeringSolution(self.v, self.point, self.layer, self.alpha, self.multiplier * m)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        target = hook_module(model, self.point, self.layer)
        delta = self.vector.to(next(model.parameters()).device)
        handle = target.register_forward_hook(lambda mod, args, out: add_to_output(out, delta))
        try:
            yield model
        finally:
            handle.remove()

    def metadata(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "layer": self.layer,
            "alpha": self.alpha,
            "multiplier": self.multiplier,
        }

    @classmethod
    def from_saved(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SteeringSolution:
        return cls(
            tensors["v"], meta["point"], meta["layer"], meta["alpha"], meta.get("multiplier", 1.0)
        )
