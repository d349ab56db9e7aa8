"""Evaluate many solutions on fixed batches; steering vectors share forward passes.

A metric is a token-weighted mean: per batch, each solution adds its token sum and the
batch adds its token count, so the result does not depend on how tokens fall into batches.
Consecutive steering solutions at the same hook point are evaluated together: the batch is
repeated K times and row block k gets vector k (equal to one-at-a-time up to float rounding).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from emlab.errors import EmlabError
from emlab.models.modules import HookPoint, hook_module
from emlab.solutions import Solution, SteeringSolution
from emlab.solutions.steering import add_to_output

Batch = dict[str, torch.Tensor]


@contextmanager
def row_steering(model: nn.Module, point: HookPoint, layer: int, vectors: torch.Tensor, rows: int) -> Iterator[nn.Module]:
    """Add vectors[k] # (K, d) to rows k*rows .. (k+1)*rows - 1 of the hooked module's output."""
    delta = vectors.repeat_interleave(rows, dim=0).unsqueeze(1)  # (K*rows, 1, d)
    delta = delta.to(next(model.parameters()).device)
    handle = hook_module(model, point, layer).register_forward_hook(lambda mod, args, out: add_to_output(out, delta))
    try:
        yield model
    finally:
        handle.remove()


def solution_groups(solutions: Sequence[Solution | None], per_pass: int) -> list[list[int]]:
    """Indices of solutions evaluated in one forward pass: runs of up to `per_pass` steering
    solutions at the same (point, layer); every other solution alone."""
    groups: list[list[int]] = []
    for i, s in enumerate(solutions):
        prev = solutions[groups[-1][0]] if groups else None
        if (
            isinstance(s, SteeringSolution)
            and isinstance(prev, SteeringSolution)
            and (s.point, s.layer) == (prev.point, prev.layer)
            and len(groups[-1]) < per_pass
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class BatchedEvaluator(ABC):
    """A token-averaged metric of a model under solutions, over batches prepared once.

    `max_rows` bounds the rows of one forward pass when steering vectors are batched
    (1 row per pass disables batching: every solution goes through its `applied` context).
    """

    def __init__(self, model: nn.Module, batches: list[Batch], max_rows: int = 64) -> None:
        if not batches:
            raise EmlabError("nothing to evaluate on: no batch has a token to score.")
        device = next(model.parameters()).device
        self.model = model
        self.batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.max_rows = max_rows

    @abstractmethod
    def _prepare(self, batch: Batch) -> Any:
        """Per-batch data computed once for all solutions (e.g. base logits)."""

    @abstractmethod
    def _sums(self, batch: Batch, logits: torch.Tensor, k: int, prepared: Any) -> torch.Tensor:
        """Token sums # (K,) of the metric for K row blocks of logits # (K*B, T, V)."""

    @abstractmethod
    def _count(self, batch: Batch) -> int:
        """Number of tokens the metric averages over in this batch."""

    def evaluate(self, solution: Solution | None = None) -> float:
        """The metric under one solution (None: the base model)."""
        return self.evaluate_many([solution])[0]

    def evaluate_many(self, solutions: Sequence[Solution | None]) -> list[float]:
        """The metric under each solution, in order (per-batch data computed once; sets model.eval())."""
        sums = torch.zeros(len(solutions), dtype=torch.float64)
        count = 0
        self.model.eval()
        with torch.no_grad():
            for batch in self.batches:
                prepared = self._prepare(batch)
                rows = batch["input_ids"].shape[0]
                for group in solution_groups(solutions, max(1, self.max_rows // rows)):
                    logits = self._forward(batch, [solutions[i] for i in group])
                    sums[group] += self._sums(batch, logits, len(group), prepared).double().cpu()
                count += self._count(batch)
        if count == 0:
            raise EmlabError("nothing to evaluate on: the batches have no token to score.")
        return (sums / count).tolist()

    def _forward(self, batch: Batch, group: list[Solution | None]) -> torch.Tensor:
        """Logits # (K*B, T, V) of the batch repeated once per solution of the group."""
        k = len(group)
        ids, mask = batch["input_ids"].repeat(k, 1), batch["attention_mask"].repeat(k, 1)
        if k == 1:
            ctx = group[0].applied(self.model) if group[0] is not None else nullcontext()
        else:
            first = group[0]
            vectors = torch.stack([s.vector for s in group])  # (K, d)
            ctx = row_steering(self.model, first.point, first.layer, vectors, batch["input_ids"].shape[0])
        with ctx:
            return self.model(input_ids=ids, attention_mask=mask).logits
