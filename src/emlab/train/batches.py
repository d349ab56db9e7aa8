"""Deterministic batches: the examples of step s depend only on (seed, s).

Each epoch is a seeded permutation; the stream of epochs is cut into global batches of
batch_size * world_size examples, and each process takes its own slice. Resuming at step s
needs no saved data position beyond s itself.
"""

from __future__ import annotations

import torch


class BatchStream:
    """Indices of the examples of each (global micro-batch, process)."""

    def __init__(self, n_examples: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0) -> None:
        if n_examples == 0:
            raise ValueError("no examples to batch")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self.world_size, self.rank = world_size, rank
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=gen)}
        return self._perms[epoch]

    def indices(self, micro_batch: int) -> list[int]:
        """Example indices of this process for global micro-batch number `micro_batch`."""
        global_size = self.batch_size * self.world_size
        start = micro_batch * global_size + self.rank * self.batch_size
        return [int(self._perm((start + i) // self.n)[(start + i) % self.n]) for i in range(self.batch_size)]

    def micro_batches_per_epoch(self) -> float:
        """Global micro-batches that make one pass over the data."""
        return self.n / (self.batch_size * self.world_size)
