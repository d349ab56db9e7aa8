"""Mean-difference directions, steering with them, ablating them, and cosine similarities."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from emlab.data.chat import Conversation
from emlab.errors import EmlabError
from emlab.models.chat import IGNORE, collate, encode_reported, padding_id
from emlab.models.modules import HookPoint, decoder_layers, hidden_of, hook_module, map_hidden
from emlab.solutions import LoraSolution, SteeringSolution


def mean_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[Conversation],
    batch_size: int = 8,
    max_length: int = 512,
    source: str = "the conversations",
) -> torch.Tensor:
    """Mean of each decoder layer's output over all assistant-token positions # (L, d), float32.

    A line on stderr says how many of `source` `max_length` truncated or dropped; raises
    EmlabError when none is left."""
    encoded, _ = encode_reported(
        tokenizer,
        conversations,
        max_length,
        "assistant",
        source,
        "assistant token",
        True,
        setting="max_length",
    )
    layers = decoder_layers(model)
    d = model.config.hidden_size
    sums = torch.zeros(len(layers), d, dtype=torch.float64)
    count = 0
    keep: torch.Tensor | None = None  # (B, T) assistant positions of the current batch

    def capture(index: int):
        def hook(mod, args, out):
            h = hidden_of(out)  # (B, T, d)
            sums[index] += h[keep].double().sum(0).cpu()

        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    device = next(model.parameters()).device
    pad = padding_id(tokenizer)
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(encoded), batch_size):
                batch = {
                    k: v.to(device) for k, v in collate(encoded[i : i + batch_size], pad).items()
                }
                keep = batch["labels"] != IGNORE
                count += int(keep.sum())
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return (sums / count).float()


def mean_diff_directions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    aligned: list[Conversation],
    misaligned: list[Conversation],
    batch_size: int = 8,
    max_length: int = 512,
) -> torch.Tensor:
    """Per-layer mean(misaligned) - mean(aligned) of assistant-token activations # (L, d)."""
    bad = mean_activations(
        model, tokenizer, misaligned, batch_size, max_length, "the misaligned conversations"
    )
    good = mean_activations(
        model, tokenizer, aligned, batch_size, max_length, "the aligned conversations"
    )
    return bad - good


def direction_steering(
    direction: torch.Tensor, layer: int, alpha: float = 1.0, point: HookPoint = "layer"
) -> SteeringSolution:
    """A steering solution adding alpha * direction # (d,) at the output of `layer` (or its MLP)."""
    return SteeringSolution(direction.detach().clone().float(), point, layer, alpha)


def project_out(h: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """h - (h . u) u with u = direction / ||direction||; h # (..., d)."""
    u = (direction / direction.norm()).to(h.device, h.dtype)
    return h - (h @ u).unsqueeze(-1) * u


@contextmanager
def ablated(
    model: nn.Module,
    direction: torch.Tensor,
    layers: Sequence[int] | None = None,
    point: HookPoint = "layer",
) -> Iterator[nn.Module]:
    """Within the block, the outputs of the hooked modules (every decoder layer by default, or
    `layers`; the embedding for point 'embed') have `direction` # (d,) projected out, in every
    forward pass, generation included."""
    if float(direction.norm()) == 0:
        raise EmlabError("cannot ablate a zero direction.")
    indices = (
        [0]
        if point == "embed"
        else (range(len(decoder_layers(model))) if layers is None else layers)
    )
    handles = [
        hook_module(model, point, i).register_forward_hook(
            lambda mod, args, out: map_hidden(out, lambda h: project_out(h, direction))
        )
        for i in indices
    ]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of vectors # (N, d) -> (N, N)."""
    return _cross_cosines(vectors, vectors)


def lora_cosines(a: LoraSolution, b: LoraSolution) -> dict[str, dict[str, torch.Tensor]]:
    """For each module both adapt: cosines of A rows # (r_a, r_b) and of B columns # (r_a, r_b).

    For rank-1 adapters these are single numbers; B A = (-B)(-A), so the joint sign is arbitrary.
    """
    common = sorted(set(a.adapters) & set(b.adapters))
    if not common:
        raise EmlabError("the two LoRA solutions adapt no module in common.")
    out = {}
    for name in common:
        (a1, b1), (a2, b2) = a.adapters[name], b.adapters[name]
        out[name] = {"A": _cross_cosines(a1, a2), "B": _cross_cosines(b1.T, b2.T)}
    return out


def _cross_cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosines between the rows of x # (n, d) and of y # (m, d) -> (n, m)."""
    x, y = x.double(), y.double()
    return ((x / x.norm(dim=-1, keepdim=True)) @ (y / y.norm(dim=-1, keepdim=True)).T).float()
