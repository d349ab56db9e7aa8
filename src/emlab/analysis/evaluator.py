"""Evaluate many solutions on fixed batches; steering vectors share forward passes.

A metric is a token-weighted mean: per batch, each solution adds its token sum and the
batch adds its token count, so the result does not depend on how tokens fall into batches.
Consecutive steering solutions at the same hook point are evaluated together: row block k
of one forward pass gets vector k (equal to one-at-a-time up to float rounding), and what
precedes the steered module is computed once for all K.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from emlab.errors import EmlabError
from emlab.models.modules import HookPoint, decoder_layers, hook_module, map_hidden
from emlab.solutions import Solution, SteeringSolution

Batch = dict[str, torch.Tensor]


@contextmanager
def row_steering(
    model: nn.Module, point: HookPoint, layer: int, vectors: torch.Tensor, rows: int
) -> Iterator[nn.Module]:
    """Steer K copies of a batch of `rows` rows in one forward pass of that batch: rows
    k*rows .. (k+1)*rows - 1 of the output get vectors[k] # (K, d).

    The copies agree up to the steered module, so what precedes it runs once. 'embed' tiles
    the model's input K times. 'layer' turns decoder layer `layer`'s output (B, T, d) into
    (K*B, T, d) as it adds the vectors. 'mlp' gives the MLP's output a leading axis (K, B, T, d),
    over which the layer's residual add broadcasts, and flattens the layer's output to
    (K*B, T, d). Later decoder layers get their batch-sized inputs (the attention mask) tiled alike.
    """
    k = vectors.shape[0]
    v = vectors.to(next(model.parameters()).device)[:, None, None, :]  # (K, 1, 1, d)

    def tile(obj: Any) -> Any:
        """Repeat K times along dim 0 every tensor (>= 2 dims) of `rows` rows in obj."""
        if isinstance(obj, torch.Tensor):
            return (
                obj.repeat(k, *[1] * (obj.dim() - 1))
                if obj.dim() >= 2 and obj.shape[0] == rows
                else obj
            )
        if isinstance(obj, tuple | list):
            return type(obj)(tile(o) for o in obj)
        if isinstance(obj, dict):
            return {key: tile(value) for key, value in obj.items()}
        return obj

    def tile_inputs(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tile(args), tile(kwargs)

    target = hook_module(model, point, layer)
    if point == "embed":
        hooks = [
            model.register_forward_pre_hook(tile_inputs, with_kwargs=True),
            target.register_forward_hook(
                lambda mod, args, out: map_hidden(
                    out, lambda h: (h.unflatten(0, (k, rows)) + v.to(h.dtype)).flatten(0, 1)
                )
            ),
        ]
    else:
        block = decoder_layers(model)[layer]
        if point == "layer":
            hooks = [
                block.register_forward_hook(
                    lambda mod, args, out: map_hidden(
                        out, lambda h: (h + v.to(h.dtype)).flatten(0, 1)
                    )
                )
            ]
        else:
            hooks = [
                target.register_forward_hook(
                    lambda mod, args, out: map_hidden(out, lambda h: h + v.to(h.dtype))
                ),
                block.register_forward_hook(
                    lambda mod, args, out: map_hidden(out, lambda h: h.flatten(0, 1))
                ),
            ]
        hooks += [
            later.register_forward_pre_hook(tile_inputs, with_kwargs=True)
            for later in decoder_layers(model)[layer + 1 :]
        ]
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()


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
    `progress` labels a progress bar of the forward passes on stderr (None: no bar).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        max_rows: int = 64,
        progress: str | None = None,
    ) -> None:
        if not batches:
            raise EmlabError("nothing to evaluate on: no batch has a token to score.")
        device = next(model.parameters()).device
        self.model = model
        self.batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.max_rows = max_rows
        self.progress = progress
        self._base_value: float | None = None

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
        """The metric under each solution, in order (per-batch data computed once; sets
        model.eval()).
        A solution scaled by 0 is the base model (None): the base is evaluated once per evaluator,
        whose model is taken as fixed."""
        is_base = [s is None or s.multiplier == 0 for s in solutions]
        todo: list[Solution | None] = [
            s for s, base in zip(solutions, is_base, strict=True) if not base
        ]
        need_base = any(is_base) and self._base_value is None
        values = self._evaluate_all([*todo, None] if need_base else todo)
        if need_base:
            self._base_value = values.pop()
        rest = iter(values)
        return [self._base_value if base else next(rest) for base in is_base]

    def _evaluate_all(self, solutions: Sequence[Solution | None]) -> list[float]:
        if not solutions:
            return []
        sums = torch.zeros(len(solutions), dtype=torch.float64)
        count = 0
        groups = [
            solution_groups(solutions, max(1, self.max_rows // batch["input_ids"].shape[0]))
            for batch in self.batches
        ]
        bar = tqdm(
            total=sum(map(len, groups)),
            desc=self.progress,
            unit="pass",
            disable=self.progress is None,
        )
        self.model.eval()
        with torch.no_grad():
            for batch, batch_groups in zip(self.batches, groups, strict=True):
                prepared = self._prepare(batch)
                for group in batch_groups:
                    logits = self._forward(batch, [solutions[i] for i in group])
                    sums[group] += self._sums(batch, logits, len(group), prepared).double().cpu()
                    bar.update(1)
                count += self._count(batch)
        bar.close()
        if count == 0:
            raise EmlabError("nothing to evaluate on: the batches have no token to score.")
        return (sums / count).tolist()

    def _forward(self, batch: Batch, group: list[Solution | None]) -> torch.Tensor:
        """Logits # (K*B, T, V) of the batch under each solution of the group (row block k: solution
        k)."""
        if len(group) == 1:
            ctx = group[0].applied(self.model) if group[0] is not None else nullcontext()
        else:
            first = group[0]
            vectors = torch.stack([s.vector for s in group])  # (K, d)
            ctx = row_steering(
                self.model, first.point, first.layer, vectors, batch["input_ids"].shape[0]
            )
        with ctx:
            return self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits
