"""What a run trains (LoRA, steering vector, full weights) and how it gets base-model logits."""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from emlab.errors import ModelError
from emlab.models.modules import check_layer, hook_module, unwrap
from emlab.solutions import FullDelta, LoraSolution, Solution, SteeringSolution, SteeringVector
from emlab.train.config import FullConfig, LoraConfig, SolutionConfig, SteeringConfig


class Trainable(ABC):
    """The model to optimise, its trainable parameters, and the base model without a second copy
    where possible (adapter disabled, hook off); full fine-tuning with the exact KL keeps a frozen
    copy.

    The optimiser steps float32 weights: trainable parameters held in bf16/fp16 (full
    fine-tuning of a bf16 model) get float32 master copies (`keep_masters`), as in mixed-precision
    training (Micikevicius et al. 2018, "Mixed Precision Training"): AdamW's updates of about lr
    are below the bf16 spacing of a weight (2^-7 at 1.0) and would mostly round away. The model
    computes with its own parameters; gradients move onto the masters before clipping and the
    step (`grads_to_masters`), and the model's parameters are refreshed from them after it
    (`masters_to_model`). Float32 parameters (LoRA, steering vectors) are their own masters.
    """

    model: nn.Module
    reference: nn.Module | None = None
    """A frozen copy of the base model for the base passes (full fine-tuning with the exact KL)."""
    _masters: dict[str, nn.Parameter] | None = None

    def named_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters by name (names of the unwrapped model)."""
        return {n: p for n, p in unwrap_training(self.model).named_parameters() if p.requires_grad}

    def keep_masters(self, device: torch.device | str) -> None:
        """Make float32 master copies, on `device` (where the model trains), of the trainable
        parameters not in float32. Call once, before `start_from` and before building the optimiser.
        """
        self._masters = {
            n: p if p.dtype == torch.float32 else nn.Parameter(p.detach().to(device, torch.float32))
            for n, p in self.named_parameters().items()
        }

    def master_parameters(self) -> dict[str, nn.Parameter]:
        """What the optimiser steps and checkpoints hold, by parameter name: the float32 masters
        after `keep_masters`, else the trainable parameters themselves."""
        return self._masters if self._masters is not None else self.named_parameters()

    def grads_to_masters(self) -> None:
        """Move each low-precision parameter's gradient onto its master, as float32."""
        for p, master in self._copies():
            master.grad = None if p.grad is None else p.grad.to(master.device, torch.float32)
            p.grad = None

    def masters_to_model(self) -> None:
        """Copy the masters into the model's low-precision parameters (rounded to their dtype)."""
        with torch.no_grad():
            for p, master in self._copies():
                p.copy_(master)

    def _copies(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(parameter, its float32 master) for the parameters that have a separate master."""
        if self._masters is None:
            return []
        return [
            (p, self._masters[n])
            for n, p in self.named_parameters().items()
            if self._masters[n] is not p
        ]

    def place_reference(self, prepare: Callable[[nn.Module], nn.Module]) -> None:
        """Pass the frozen base copy, if any, through `prepare` (the trained model's device and
        precision)."""
        if self.reference is not None:
            self.reference = prepare(self.reference)

    @abstractmethod
    def as_base(self, model: nn.Module) -> AbstractContextManager[nn.Module]:
        """Within the block, the yielded model computes as the base model; `model` is the
        unwrapped training model. Use under torch.no_grad()."""

    @abstractmethod
    def solution(self) -> Solution:
        """The change trained so far (a detached copy)."""

    @abstractmethod
    def start_from(self, solution: Solution) -> None:
        """Set the trainable parameters so that training starts from `solution`."""

    def norm(self) -> float:
        """Norm of the change trained so far."""
        return self.solution().norm()

    def decay(self, rate: float) -> None:
        """Decoupled weight decay of the solution (Loshchilov & Hutter 2019, "Decoupled Weight
        Decay Regularization"; what AdamW's weight_decay does): each master parameter moves the
        fraction `rate` (this step's lr x optim.weight_decay) toward 0, which for adapter weights
        and steering vectors is toward no change."""
        with torch.no_grad():
            for p in self.master_parameters().values():
                p.mul_(1 - rate)

    @contextmanager
    def evaluated(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, the yielded model computes as the trained model (`model`: the
        unwrapped training model, in eval mode, under torch.no_grad()), for an evaluator."""
        yield model

    @abstractmethod
    def release(self) -> nn.Module:
        """Undo the changes to the original model object and return it in its base state."""


def unwrap_training(model: nn.Module) -> nn.Module:
    """Strip DDP/accelerate wrappers but keep peft's (training names include peft's prefixes)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


class LoraTrainable(Trainable):
    def __init__(self, model: nn.Module, cfg: LoraConfig) -> None:
        peft_cfg = PeftLoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            use_rslora=cfg.rslora,
            target_modules=cfg.target_modules,
            layers_to_transform=cfg.layers,
            lora_dropout=cfg.dropout,
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, peft_cfg)
        self.adapter_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]

    @contextmanager
    def as_base(self, model: nn.Module) -> Iterator[nn.Module]:
        # peft's disable_adapter() context also checks the whole model's status on each use;
        # switching
        # the adapter layers directly costs about half (~11 ms for SmolLM2's 210 adapted layers)
        for layer in self.adapter_layers:
            layer.enable_adapters(False)
        try:
            yield model
        finally:
            for layer in self.adapter_layers:
                layer.enable_adapters(True)

    @contextmanager
    def evaluated(self, model: nn.Module) -> Iterator[nn.Module]:
        """peft's adapters add a pass per adapted module (about 1.5x the time of evaluating a
        small model); for evaluation each float32 weight holds W + scaling B A instead (a new
        tensor; the original is put back unchanged after, unlike peft's merge/unmerge) and the
        adapters are off. Other weights keep the adapters: in bf16, W + scaling B A would round
        a small change away; sharded ones (FSDP) are not whole matrices."""
        layers = [m for m in self.adapter_layers if isinstance(m, LoraLayer)]
        originals = [m.get_base_layer().weight.data for m in layers]
        deltas = [m.get_delta_weight("default") for m in layers]  # in the weight's layout
        if not all(
            w.dtype == torch.float32 and type(w) is torch.Tensor and w.shape == d.shape
            for w, d in zip(originals, deltas, strict=True)
        ):
            yield model
            return
        for layer, weight, delta in zip(layers, originals, deltas, strict=True):
            layer.get_base_layer().weight.data = weight + delta
        try:
            with self.as_base(model):
                yield model
        finally:
            for layer, weight in zip(layers, originals, strict=True):
                layer.get_base_layer().weight.data = weight

    def solution(self) -> LoraSolution:
        return LoraSolution.from_peft(self.model)

    def start_from(self, solution: Solution) -> None:
        if not isinstance(solution, LoraSolution):
            raise ModelError(f"cannot start LoRA training from a {solution.kind} solution.")
        modules = dict(unwrap(self.model).named_modules())
        if set(solution.adapters) - set(modules):
            raise ModelError(
                "the initial LoRA adapts modules this run does not; use the same target modules and"
                " layers."
            )
        ratio = solution.multiplier * solution.scaling
        with torch.no_grad():
            for name, (a, b) in solution.adapters.items():
                module = modules[name]
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b * ratio / module.scaling["default"])

    def release(self) -> nn.Module:
        return self.model.unload()


class SteeringTrainable(Trainable):
    def __init__(self, model: nn.Module, cfg: SteeringConfig) -> None:
        model.requires_grad_(False)
        self.vector = SteeringVector(model, cfg.point, cfg.layer, cfg.alpha)
        model.add_module("emlab_steering", self.vector)
        self.model = model

    @contextmanager
    def as_base(self, model: nn.Module) -> Iterator[nn.Module]:
        with self.vector.disabled():
            yield model

    def solution(self) -> Solution:
        return self.vector.solution()

    def start_from(self, solution: Solution) -> None:
        if not isinstance(solution, SteeringSolution) or (solution.point, solution.layer) != (
            self.vector.point,
            self.vector.layer,
        ):
            raise ModelError(
                "a steering run can only start from a steering vector at the same point and layer."
            )
        with torch.no_grad():
            self.vector.v.copy_(solution.vector / self.vector.alpha)

    def release(self) -> nn.Module:
        self.vector.remove()
        del self.model.emlab_steering
        return self.model


class FullTrainable(Trainable):
    """Full fine-tuning: the change is the masters minus the base weights, in float32 (the base
    is kept in the model's dtype, whose values float32 holds exactly)."""

    def __init__(self, model: nn.Module, cfg: FullConfig, need_reference: bool) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(cfg.trainable is None or any(s in name for s in cfg.trainable))
        self.base_state = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        self.reference = (
            copy.deepcopy(model).requires_grad_(False).eval() if need_reference else None
        )
        self.model = model

    @contextmanager
    def as_base(self, model: nn.Module) -> Iterator[nn.Module]:
        if self.reference is None:  # before any step the model is the base model
            yield model
        else:
            yield self.reference

    def solution(self) -> FullDelta:
        return FullDelta.between(self.base_state, self.master_parameters())

    def start_from(self, solution: Solution) -> None:
        if not isinstance(solution, FullDelta):
            raise ModelError(f"cannot start full fine-tuning from a {solution.kind} solution.")
        params = self.master_parameters()
        frozen = sorted(set(solution.deltas) - set(params))
        if frozen:
            raise ModelError(
                f"the initial full delta changes {frozen[:3]}, which this run does not train: add"
                " them to solution.trainable (or start from scratch)."
            )
        with torch.no_grad():
            for name, d in solution.deltas.items():
                params[name].add_(
                    solution.multiplier * d.to(params[name].device, params[name].dtype)
                )
        self.masters_to_model()

    def norm(self) -> float:
        """||theta - theta_base||, each tensor's difference taken in its dtype (exact to rounding)
        and its norm accumulated in float64 (a float64 copy of every parameter took 1.5 s a step
        on SmolLM2, a sixth of its step)."""
        params = self.master_parameters()
        squares = (
            float(
                torch.linalg.vector_norm(
                    params[n].detach() - b.to(params[n].device), dtype=torch.float64
                )
            )
            ** 2
            for n, b in self.base_state.items()
        )
        return math.sqrt(
            math.fsum(squares)
        )  # fsum: the same float in any order of the tensors, as FullDelta.norm

    def decay(self, rate: float) -> None:
        """Decoupled weight decay toward the base weights: theta <- theta - rate (theta -
        theta_base), so that it shrinks the solution (the change, whose norm the analyses measure)
        and not the weights themselves, as AdamW's own weight_decay (and HF Trainer's) would."""
        params = self.master_parameters()
        with torch.no_grad():
            for n, b in self.base_state.items():
                p = params[n]
                p.sub_(rate * (p - b.to(p.device, p.dtype)))

    def release(self) -> nn.Module:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.base_state:
                    p.copy_(self.base_state[name])
        self.model.requires_grad_(True)
        return self.model


def check_solution_config(model: nn.Module, cfg: SolutionConfig, field: str = "solution") -> None:
    """Raise a ModelError naming `field`'s entry (e.g. `solution.layers`) when `cfg` does not fit
    `model`: a LoRA layer or steering layer past the last decoder layer, a LoRA target module the
    model does not have, a steering point the layer lacks, a full fine-tune with nothing to train.
    Needs only the model's modules, so a model on the meta device (no weights) will do."""
    model = unwrap(model)
    if isinstance(cfg, LoraConfig):
        for layer in cfg.layers or []:
            check_layer(model, layer, f"{field}.layers")
        names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if missing := [t for t in cfg.target_modules if t.rsplit(".", 1)[-1] not in names]:
            raise ModelError(
                f"{field}.target_modules: LoRA target module(s) {missing} not in the model; its"
                f" linear modules are {sorted(names)}."
            )
    elif isinstance(cfg, SteeringConfig):
        if cfg.point != "embed":
            check_layer(model, cfg.layer, f"{field}.layer")
        try:
            hook_module(model, cfg.point, cfg.layer)
        except ModelError as e:
            raise ModelError(f"{field}.point: {e}") from None
    elif cfg.trainable is not None and not any(
        s in n for n, _ in model.named_parameters() for s in cfg.trainable
    ):
        raise ModelError(
            f"{field}.trainable: no parameter name contains any of {cfg.trainable}; nothing to"
            " train."
        )


def make_trainable(model: nn.Module, cfg: SolutionConfig, need_reference: bool) -> Trainable:
    """Wrap `model` for training the solution kind of `cfg` (checked first with
    check_solution_config)."""
    model = unwrap(model)
    check_solution_config(model, cfg)
    if isinstance(cfg, LoraConfig):
        return LoraTrainable(model, cfg)
    if isinstance(cfg, SteeringConfig):
        return SteeringTrainable(model, cfg)
    return FullTrainable(model, cfg, need_reference)
