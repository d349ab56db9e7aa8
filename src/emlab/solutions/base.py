"""A solution is a parameter change to a base model: LoRA, steering vector or full delta."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from emlab.config import config_hash
from emlab.io import atomic_dir


class Solution(ABC):
    """A change of a model's parameters, with the operations the analyses need.

    Subclasses define `tensors()` (the tensors that parameterise the change), `norm()`
    (the Frobenius norm of the real parameter change), `with_tensors()` and `applied()`.
    """

    kind: ClassVar[str]
    multiplier: float
    """The factor set by `scaled(m)` (1 as trained; 0: no change at all)."""
    META_FILE: ClassVar[str] = "emlab_solution.json"

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The named tensors that parameterise the change (LoRA A/B, v, or deltas)."""

    @abstractmethod
    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> Solution:
        """A copy of this solution with other parameter tensors of the same shapes."""

    @abstractmethod
    def norm(self) -> float:
        """Frobenius norm of the parameter change it makes to the model."""

    @abstractmethod
    def scaled(self, m: float) -> Solution:
        """The same change times m (its norm times |m|)."""

    @abstractmethod
    def applied(self, model: nn.Module) -> AbstractContextManager[nn.Module]:
        """Context in which `model` computes with this change (undone on exit)."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """JSON-able description needed to rebuild it (without tensors)."""

    @classmethod
    @abstractmethod
    def from_saved(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Solution:
        """Rebuild from `metadata()` and `tensors()`."""

    def perturbed(self, eps: float, seed: int) -> Solution:
        """x' = sqrt(1 - eps^2) x + eps y per tensor, y orthogonal to x with ||y|| = ||x||."""
        gen = torch.Generator().manual_seed(seed)
        return self.with_tensors(
            {name: orthogonal_mix(x, eps, gen) for name, x in sorted(self.tensors().items())}
        )

    def hash(self) -> str:
        """Content hash of the metadata and tensors."""
        digest = [self.metadata()]
        for name, t in sorted(self.tensors().items()):
            digest.append([name, config_hash(t.detach().float().cpu().numpy().tobytes().hex())])
        return config_hash(digest)

    def save(self, path: str | Path) -> Path:
        """Save as `tensors.safetensors` + `emlab_solution.json` in the folder `path` (atomically,
        replacing a solution already there)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self._save_files(tmp)
            (tmp / self.META_FILE).write_text(
                json.dumps({"kind": self.kind, **self.metadata()}, indent=2)
            )
        return path

    def _save_files(self, folder: Path) -> None:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.tensors().items()},
            folder / "tensors.safetensors",
        )

    @classmethod
    def _load_tensors(cls, folder: Path) -> dict[str, torch.Tensor]:
        return load_file(folder / "tensors.safetensors")


def orthogonal_mix(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """sqrt(1 - eps^2) x + eps y with y random, orthogonal to x, and ||y|| = ||x|| (same shape)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    flat = x.detach().double().flatten()
    norm = flat.norm()
    if eps == 0.0 or norm == 0:
        return x.detach().clone()
    y = torch.randn(flat.shape, generator=gen, dtype=torch.float64)
    y = y - (y @ flat) / (flat @ flat) * flat
    y = y * (norm / y.norm())
    mixed = math.sqrt(1.0 - eps * eps) * flat + eps * y
    return mixed.reshape(x.shape).to(x.dtype)
