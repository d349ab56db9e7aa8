"""Deterministic batches: the examples of step s depend only on (seed, s).

Each epoch is a seeded permutation (optionally grouped by length); the stream of epochs is cut into
global batches of
batch_size * world_size examples, and each process takes its own slice. Resuming at step s
needs no saved data position beyond s itself.
"""

from __future__ import annotations

import torch


class BatchStream:
    """Indices of the examples of each (global micro-batch, process)."""

    def __init__(
        self,
        n_examples: int,
        batch_size: int,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
        lengths: list[int] | None = None,
    ) -> None:
        if n_examples == 0:
            raise ValueError("no examples to batch")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self.lengths = torch.tensor(lengths) if lengths is not None else None
        self.world_size, self.rank = world_size, rank
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n, generator=gen)
            if self.lengths is not None:
                perm = self._group_by_length(perm, gen)
            self._perms = {epoch: perm}
        return self._perms[epoch]

    def _group_by_length(self, perm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Sort windows of 64 global batches by length, then shuffle the batches' order:
        batches of similar lengths (little padding) in a random order."""
        size = self.batch_size * self.world_size
        window = size * 64
        chunks = []
        for start in range(0, self.n, window):
            part = perm[start : start + window]
            chunks.extend(part[torch.argsort(self.lengths[part], stable=True)].split(size))
        full = [c for c in chunks if len(c) == size]
        order = torch.randperm(len(full), generator=gen)
        return torch.cat([full[i] for i in order] + [c for c in chunks if len(c) < size])

    def indices(self, micro_batch: int) -> list[int]:
        """Example indices of this process for global micro-batch number `micro_batch`."""
        global_size = self.batch_size * self.world_size
        start = micro_batch * global_size + self.rank * self.batch_size
        return [
            int(self._perm((start + i) // self.n)[(start + i) % self.n])
            for i in range(self.batch_size)
        ]

    def micro_batches_per_epoch(self) -> float:
        """Global micro-batches that make one pass over the data."""
        return self.n / (self.batch_size * self.world_size)
