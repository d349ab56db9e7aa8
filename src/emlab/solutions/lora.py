"""LoRA solutions: delta W = scaling * B @ A on each target linear module."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn

from emlab.errors import ModelError
from emlab.models.modules import unwrap
from emlab.solutions.base import Solution

_PEFT_PREFIX = "base_model.model."


class LoraSolution(Solution):
    """Low-rank adapters: for each module name, A # (r, in) and B # (out, r).

    `scaling` is alpha/r (alpha/sqrt(r) with rsLoRA) and `multiplier` the factor set by
    `scaled(m)`; the change to a module's weight is multiplier * scaling * B @ A.
    """

    kind = "lora"

    def __init__(
        self,
        adapters: dict[str, tuple[torch.Tensor, torch.Tensor]],
        r: int,
        alpha: float,
        rslora: bool = False,
        multiplier: float = 1.0,
    ) -> None:
        self.adapters = adapters
        self.r, self.alpha, self.rslora, self.multiplier = r, alpha, rslora, multiplier

    @property
    def scaling(self) -> float:
        """peft's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (a, b) in self.adapters.items():
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a, b
        return out

    def with_tensors(self, tensors: dict[str, torch.Tensor]) -> LoraSolution:
        adapters = {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]) for n in self.adapters}
        return LoraSolution(adapters, self.r, self.alpha, self.rslora, self.multiplier)

    def norm(self) -> float:
        # ||B A||_F^2 via r x r Gram matrices, summed by fsum: the same float whatever the
        # adapters' order (model order in memory, sorted when loaded)
        total = math.fsum(
            float(((b.double().T @ b.double()) * (a.double() @ a.double().T)).sum())
            for a, b in self.adapters.values()
        )
        return abs(self.multiplier * self.scaling) * math.sqrt(max(total, 0.0))

    def scaled(self, m: float) -> LoraSolution:
        return LoraSolution(self.adapters, self.r, self.alpha, self.rslora, self.multiplier * m)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        modules = dict(unwrap(model).named_modules())
        missing = [n for n in self.adapters if n not in modules]
        if missing:
            raise ModelError(
                f"model has no module(s) {missing[:3]} that this LoRA adapts; was it trained on"
                " another model?"
            )
        factor = self.multiplier * self.scaling
        handles = []
        for name, (a, b) in self.adapters.items():
            module = modules[name]
            a_dev = a.to(module.weight.device, module.weight.dtype)
            b_dev = b.to(module.weight.device, module.weight.dtype)

            def hook(mod, args, output, a=a_dev, b=b_dev):
                low = args[0].reshape(-1, a.shape[1]) @ a.T  # (N, r)
                return torch.addmm(output.reshape(-1, b.shape[0]), low, b.T, alpha=factor).view_as(
                    output
                )  # one pass over (N, out)

            handles.append(module.register_forward_hook(hook))
        try:
            yield model
        finally:
            for h in handles:
                h.remove()

    def metadata(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "alpha": self.alpha,
            "rslora": self.rslora,
            "multiplier": self.multiplier,
        }

    @classmethod
    def from_saved(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> LoraSolution:
        names = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
        adapters = {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]) for n in names}
        return cls(adapters, meta["r"], meta["alpha"], meta["rslora"], meta.get("multiplier", 1.0))

    @classmethod
    def from_peft(cls, model: nn.Module, adapter: str = "default") -> LoraSolution:
        """Extract the adapter of a peft-wrapped model (tensors are detached copies)."""
        base = unwrap(model)
        adapters, config = {}, None
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                a = module.lora_A[adapter].weight.detach().clone()
                b = module.lora_B[adapter].weight.detach().clone()
                adapters[name] = (a, b)
                config = (module.r[adapter], module.lora_alpha[adapter], module.scaling[adapter])
        if config is None:
            raise ModelError("the model has no LoRA adapter to extract.")
        r, alpha, scaling = config
        rslora = r > 1 and math.isclose(scaling, alpha / math.sqrt(r))
        return cls(adapters, r, alpha, rslora)

    def _save_files(self, folder: Path) -> None:
        """Save in peft's format (adapter_config.json + adapter_model.safetensors, loadable by
        peft and vLLM; the multiplier is folded into B) and emlab's own tensors file."""
        super()._save_files(folder)
        factor = self.multiplier
        weights = {}
        for name, (a, b) in self.adapters.items():
            weights[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = a.detach().contiguous().cpu()
            weights[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = (
                (factor * b).detach().contiguous().cpu()
            )
        save_file(weights, folder / "adapter_model.safetensors")
        config = PeftLoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            use_rslora=self.rslora,
            target_modules=sorted(self.adapters),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        data = config.to_dict()
        data["target_modules"] = sorted(self.adapters)
        (folder / "adapter_config.json").write_text(json.dumps(data, indent=2, default=str))
