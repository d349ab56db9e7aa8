"""Find the parts of a decoder-only model that solutions attach to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from emlab.errors import ModelError

HookPoint = Literal["embed", "layer", "mlp"]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain HF model under DDP/accelerate and peft wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        else:
            return model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks (`model.model.layers` for Llama/Qwen-style models)."""
    base = unwrap(model)
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = base
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelError(
        f"cannot find the decoder layers of {type(base).__name__}; emlab supports"
        " Llama/Qwen/GPT-style models."
    )


def check_layer(model: nn.Module, layer: int, field: str = "layer") -> None:
    """Raise a ModelError naming the config `field` and the valid range when `layer` is past the
    model's last layer."""
    n = len(decoder_layers(model))
    if not 0 <= layer < n:
        raise ModelError(
            f"{field}: layer {layer} does not exist: this model has layers 0..{n - 1}. Pick a layer"
            " in that range."
        )


def hook_module(model: nn.Module, point: HookPoint, layer: int) -> nn.Module:
    """The module whose output a steering vector is added to."""
    if point == "embed":
        return unwrap(model).get_input_embeddings()
    check_layer(model, layer)
    block = decoder_layers(model)[layer]
    if point == "layer":
        return block
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        raise ModelError(
            f"layer {layer} of {type(unwrap(model)).__name__} has no `mlp` module; use point"
            " 'layer'."
        )
    return mlp


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden states # (B, T, d) in a module's output: the output itself when it is a tensor,
    else a tuple's first element (decoder layers of some transformers versions). Never indexes
    a tensor output (that would pick batch row 0: the reference's bug). Raises TypeError on
    any other output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"cannot read hidden states from a module output of type {type(output).__name__}"
    )


def map_hidden(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A module output with `fn` applied to its hidden states (see `hidden_of`), in the same form:
    a tensor, or a tuple whose other elements are kept. For forward hooks that change activations.
    """
    hidden = fn(hidden_of(output))
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])
