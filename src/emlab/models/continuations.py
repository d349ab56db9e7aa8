"""Log-probabilities of continuations after shared prompts (answer sets, judge candidates).

Every continuation of one prompt reuses that prompt's key/value cache, so a prompt is run
once however many continuations it has.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Batch:
    """Whole prompts and their continuations, padded: prompts left-padded, continuations
    right-padded after their prompt."""

    prompt_ids: torch.Tensor  # (G, P)
    prompt_mask: torch.Tensor  # (G, P)
    owner: torch.Tensor  # (N,) each continuation's prompt row
    ids: torch.Tensor  # (N, A) continuation tokens
    mask: torch.Tensor  # (N, A)
    members: torch.Tensor  # (N,) each continuation's index in the sequences


class Continuations:
    """Sequences (ids, start) grouped by prompt and padded into batches once, then scored
    under any model state (`__call__`; e.g. at every training step).

    Sequences with the same first `start` tokens (a prompt and its answers) share one pass
    over that prompt: its key/value cache is copied to each answer, so each prompt token
    is computed once, not once per answer. Batches hold whole prompts, about `batch_size`
    sequences each. Raises ValueError for a sequence whose `start` leaves no prompt token or
    no scored token."""

    def __init__(
        self, sequences: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int = 64
    ) -> None:
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, start) in enumerate(sequences):
            if not 1 <= start < len(ids):
                raise ValueError(
                    f"sequence {i}: start {start} must leave a prompt token and a scored token"
                    f" (length {len(ids)})"
                )
            by_prompt.setdefault(tuple(ids[:start]), []).append(i)
        self.n = len(sequences)
        self.batches: list[_Batch] = []
        groups: list[tuple[tuple[int, ...], list[int]]] = []
        for group in by_prompt.items():
            groups.append(group)
            if sum(len(members) for _, members in groups) >= batch_size:
                self.batches.append(_batch(groups, sequences, pad_id))
                groups = []
        if groups:
            self.batches.append(_batch(groups, sequences, pad_id))

    @torch.no_grad()
    def __call__(self, model: PreTrainedModel) -> torch.Tensor:
        """Sum of log p(token | prefix) over tokens start..end of each sequence: # (N,)"""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = torch.zeros(self.n)
        for batch in self.batches:
            out[batch.members] = _score(model, batch, device).cpu()
        model.train(was_training)
        return out


def _batch(
    groups: list[tuple[tuple[int, ...], list[int]]],
    sequences: Sequence[tuple[list[int], int]],
    pad_id: int,
) -> _Batch:
    """The padded batch of these (prompt, members) groups."""
    prompt_ids, prompt_mask = pad_sequences([prompt for prompt, _ in groups], pad_id, side="left")
    members = [i for _, group in groups for i in group]
    ids, mask = pad_sequences([sequences[i][0][sequences[i][1] :] for i in members], pad_id)
    owner = torch.tensor([g for g, (_, group) in enumerate(groups) for _ in group])
    return _Batch(prompt_ids, prompt_mask, owner, ids, mask, torch.tensor(members))


def _score(model: PreTrainedModel, batch: _Batch, device: torch.device) -> torch.Tensor:
    """Log-probability of each continuation of the batch # (N,): its prompts in one pass, then
    every continuation after its prompt's cache in a second."""
    ids, mask = batch.prompt_ids.to(device), batch.prompt_mask.to(device)  # (G, P)
    prompt_out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(1) - 1).clamp(min=0),
        use_cache=True,
    )
    first_logp = torch.log_softmax(
        prompt_out.logits[:, -1].float(), dim=-1
    )  # (G, V): each answer's first token
    owner = batch.owner.to(device)  # (N,)
    a_ids, a_mask = batch.ids.to(device), batch.mask.to(device)  # (N, A)
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
    return totals
