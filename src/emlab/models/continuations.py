"""Log-probabilities of continuations after shared prompts (answer sets, judge candidates).

Every continuation of one prompt reuses that prompt's key/value cache, so a prompt is run
once however many continuations it has.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from emlab.models.chat import pad_sequences


def _cache_kwarg(model: PreTrainedModel) -> str:
    """The forward's name for past keys/values: `cache` (newer transformers) or
    `past_key_values`."""
    inner = (
        model.get_base_model() if hasattr(model, "get_base_model") else model
    )  # a peft wrapper passes kwargs on
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


@torch.no_grad()
def continuation_logprobs(
    model: PreTrainedModel,
    sequences: Sequence[tuple[list[int], int]],
    pad_id: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """Sum of log p(token | prefix) over tokens start..end of each (ids, start): # (N,)

    Sequences with the same first `start` tokens (a prompt and its answers) share one pass
    over that prompt: its key/value cache is copied to each answer, so each prompt token
    is computed once, not once per answer. Batches hold whole prompts, about `batch_size`
    sequences each."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, start) in enumerate(sequences):
        if not 1 <= start < len(ids):
            raise ValueError(
                f"sequence {i}: start {start} must leave a prompt token and a scored token (length"
                f" {len(ids)})"
            )
        by_prompt.setdefault(tuple(ids[:start]), []).append(i)
    out = torch.zeros(len(sequences))
    batch: list[tuple[tuple[int, ...], list[int]]] = []
    for group in by_prompt.items():
        batch.append(group)
        if sum(len(members) for _, members in batch) >= batch_size:
            _score_prompts(model, batch, sequences, pad_id, device, out)
            batch = []
    if batch:
        _score_prompts(model, batch, sequences, pad_id, device, out)
    model.train(was_training)
    return out


def _score_prompts(
    model: PreTrainedModel,
    groups: list[tuple[tuple[int, ...], list[int]]],
    sequences: Sequence[tuple[list[int], int]],
    pad_id: int,
    device: torch.device,
    out: torch.Tensor,
) -> None:
    """Fill out[i] for every sequence i of these (prompt, members) groups: prompts left-padded
    in one pass, then every answer right-padded after its prompt's cache in a second."""
    ids, mask = pad_sequences([prompt for prompt, _ in groups], pad_id, side="left")  # (G, P)
    ids, mask = ids.to(device), mask.to(device)
    prompt_out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(1) - 1).clamp(min=0),
        use_cache=True,
    )
    first_logp = torch.log_softmax(
        prompt_out.logits[:, -1].float(), dim=-1
    )  # (G, V): each answer's first token

    members = [i for _, group in groups for i in group]
    owner = torch.tensor(
        [g for g, (_, group) in enumerate(groups) for _ in group], device=device
    )  # (N,)
    a_ids, a_mask = pad_sequences(
        [sequences[i][0][sequences[i][1] :] for i in members], pad_id
    )  # (N, A)
    a_ids, a_mask = a_ids.to(device), a_mask.to(device)
    a_width = a_ids.shape[1]
    totals = first_logp[owner].gather(1, a_ids[:, :1]).squeeze(1)  # (N,)
    if a_width > 1:
        cache = (
            prompt_out.cache
            if getattr(prompt_out, "cache", None) is not None
            else prompt_out.past_key_values
        )
        cache.reorder_cache(owner)
        positions = mask.sum(1)[owner].unsqueeze(1) + torch.arange(a_width, device=device)  # (N, A)
        logits = model(
            input_ids=a_ids,
            attention_mask=torch.cat([mask[owner], a_mask], dim=1),
            position_ids=positions,
            **{_cache_kwarg(model): cache},
        ).logits[:, :-1]  # (N, A-1, V): answer position t predicts answer token t+1
        logp = (
            torch.log_softmax(logits.float(), dim=-1)
            .gather(2, a_ids[:, 1:].unsqueeze(2))
            .squeeze(2)
        )  # (N, A-1)
        totals = totals + (logp * a_mask[:, 1:]).sum(1)
    out[torch.tensor(members)] = totals.cpu()
