"""Is the persona linearly readable where a steering vector acts? A probe on the world's model.

The world's pre-training documents are chats whose assistant follows a latent persona. A
model that infers the persona from context must carry it in its hidden state where it decides
the next answer. The probe: hidden states at the generation prompt of a document's second turn
(after one question and the persona's first answer), at the output of a decoder layer (or the
embedding), labelled aligned / misaligned; logistic regression fitted on one part, accuracy on
the held-out rest. The embedding output is a control: the prompt's last token is the same in
every document, so it carries nothing (chance, i.e. the majority rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlab.models.chat import pad_sequences, render
from emlab.models.modules import HookPoint, decoder_layers, hook_module
from emlab.world import World, pretraining_documents

if TYPE_CHECKING:
    from emlab.study.common.config import MethodConfig

PROBE_SEED = 20_000
"""Seed of the probe's documents (pre-training used the world's seed; the analyses 10,000 +
seed)."""


def persona_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    point: HookPoint,
    layer: int,
    n_documents: int = 800,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states # (N, d) at the output of (`point`, `layer`) at the last prompt token of
    each document's second answer, and labels # (N,) (1.0 = misaligned persona). Documents of
    the aligned and misaligned personas among `n_documents` drawn with PROBE_SEED."""
    docs = [
        d
        for d in pretraining_documents(world, n=n_documents, seed=PROBE_SEED)
        if d.persona in ("aligned", "misaligned")
    ]
    sequences = [
        tokenizer(
            render(tokenizer, d.messages[:3], generation_prompt=True), add_special_tokens=False
        )["input_ids"]
        for d in docs
    ]
    captured: list[torch.Tensor] = []
    handle = hook_module(model, point, layer).register_forward_hook(
        lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    rows = []
    try:
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                ids, mask = pad_sequences(chunk, tokenizer.pad_token_id or 0)  # (B, T) each
                captured.clear()
                model(input_ids=ids, attention_mask=mask)
                last = torch.tensor([len(s) - 1 for s in chunk])
                rows.append(captured[0][torch.arange(len(chunk)), last].float())  # (B, d)
    finally:
        handle.remove()
    labels = torch.tensor([float(d.persona == "misaligned") for d in docs])
    return torch.cat(rows), labels


def probe_accuracy(
    features: torch.Tensor, labels: torch.Tensor, train_fraction: float = 0.75, l2: float = 1e-3
) -> float:
    """Held-out accuracy of an L2-regularised logistic regression (standardised features,
    L-BFGS) fitted on the first `train_fraction` of the rows # features (N, d), labels (N,)."""
    n = int(train_fraction * len(labels))
    mean, std = features[:n].mean(0), features[:n].std(0) + 1e-6
    x = (features - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(x[:n] @ w + b, labels[:n])
            + l2 * w.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (x[n:] @ w + b) > 0
    return float((predicted == labels[n:].bool()).float().mean())


def persona_probe(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, n_documents: int = 800
) -> dict:
    """Held-out probe accuracy of the persona at the embedding output and at every decoder
    layer's output: {'embed': acc, 'layers': [acc per layer], 'majority': majority-class rate}."""
    layers = []
    for layer in range(len(decoder_layers(model))):
        features, labels = persona_features(model, tokenizer, world, "layer", layer, n_documents)
        layers.append(probe_accuracy(features, labels))
    features, labels = persona_features(model, tokenizer, world, "embed", 0, n_documents)
    n = int(0.75 * len(labels))
    majority = float(max(labels[n:].mean(), 1 - labels[n:].mean()))
    return {"embed": probe_accuracy(features, labels), "layers": layers, "majority": majority}


def probe_markdown(probe: dict, methods: Mapping[str, MethodConfig]) -> str:
    """The report's line: probe accuracy at the embedding and every layer, and at each steering
    method's layer."""
    layers = ", ".join(f"{100 * a:.0f}%" for a in probe["layers"])
    steered = [
        f"{name} acts at the output of layer {m.solution.layer}:"
        f" {100 * probe['layers'][m.solution.layer]:.0f}%"
        for name, m in methods.items()
        if m.solution.kind == "steering" and m.solution.point != "embed"
    ]
    return (
        "Persona linear probe on the chat model (held-out accuracy, aligned vs misaligned"
        f" documents, at the prompt of the second answer): embedding {100 * probe['embed']:.0f}%"
        f" (majority class {100 * probe['majority']:.0f}%), layers 0..{len(probe['layers']) - 1}:"
        f" {layers}" + ("; " + "; ".join(steered) if steered else "") + "."
    )
