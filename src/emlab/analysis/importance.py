"""Pre-training importance: mean token KL(base || steered) on pre-training text against norm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from emlab.analysis.baselines import random_solution
from emlab.analysis.evaluator import Batch, BatchedEvaluator
from emlab.analysis.stats import Summary, summarise
from emlab.errors import EmlabError
from emlab.solutions import Solution


def real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Bool # (B, T-1): positions whose next token is real text (padding never counts)."""
    return attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()


class KLEvaluator(BatchedEvaluator):
    """Mean token KL(base || model under a solution) over the real tokens of text batches
    (input_ids and attention_mask # (B, T)).

    With base logits b and tuned logits z at a position, p = softmax(b) and lse the log-sum-exp,
    KL(p || softmax(z)) = sum_v p_v (b_v - z_v) + (lse(z) - lse(b)) sum_v p_v. Per batch the
    base's b, p (zero at positions that do not count) and lse(b) are computed once; a solution
    then costs one log-sum-exp and one weighted sum over its logits, in place (token_kl's
    log-softmax of both sides, their exponent and differences cost about three times more).
    The KL of the base itself is 0 without a forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        max_rows: int = 64,
        progress: str | None = None,
    ) -> None:
        super().__init__(model, batches, max_rows, progress)
        self._base_value = 0.0

    def _prepare(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, p, lse(b), sum_v p_v): # (B, T-1, V), (B, T-1, V), (B, T-1), (B, T-1); p is 0
        where the next token is padding."""
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        base = logits[:, :-1].float()
        lse = torch.logsumexp(base, dim=-1)
        probs = (
            (base - lse[..., None]).exp_().mul_(real_positions(batch["attention_mask"])[..., None])
        )
        return base, probs, lse, probs.sum(-1)

    def _sums(
        self, batch: Batch, logits: torch.Tensor, k: int, prepared: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """KL sums # (K,); overwrites `logits` (float32 ones) with temporaries."""
        base, probs, lse, mass = prepared
        tuned = logits.float().unflatten(0, (k, -1))[:, :, :-1]  # (K, B, T-1, V)
        shift = torch.logsumexp(tuned, dim=-1).sub_(lse)  # lse(z) - lse(b) # (K, B, T-1)
        gap = tuned.sub_(base).mul_(probs).sum(-1)  # sum_v p_v (z_v - b_v) # (K, B, T-1)
        return (shift.mul_(mass).sub_(gap)).flatten(1).sum(-1)

    def _count(self, batch: Batch) -> int:
        return int(real_positions(batch["attention_mask"]).sum())


@dataclass(frozen=True)
class ImportanceResult:
    """KL on pre-training text per direction and norm: kl[name] # (seeds, norms), one row
    for a trained solution, one row per seed for the random baseline."""

    norms: list[float]
    kl: dict[str, list[list[float]]]
    solution_norms: dict[str, float]
    random_seeds: list[int]

    def summary(self, name: str) -> Summary:
        """Mean and 95% CI over rows (seeds) of one direction's KL, per norm."""
        return summarise(np.array(self.kl[name]))

    def to_json(self) -> dict[str, Any]:
        return {
            "norms": self.norms,
            "kl": self.kl,
            "kl_summary": {name: self.summary(name).to_json() for name in self.kl},
            "solution_norms": self.solution_norms,
            "random_seeds": self.random_seeds,
        }


def pretraining_importance(
    evaluator: KLEvaluator,
    solutions: dict[str, Solution],
    norms: Sequence[float] | None = None,
    random_seeds: Sequence[int] = (0, 1, 2),
) -> ImportanceResult:
    """KL of each solution's direction rescaled to each norm (`scaled(n / ||theta||)`), and of
    random Gaussian directions of the first solution's shapes at exactly the same norms.

    `norms` defaults to 6 points from 0 to the largest solution norm.
    """
    if not solutions:
        raise EmlabError("give at least one solution.")
    own = {name: s.norm() for name, s in solutions.items()}
    if min(own.values()) == 0:
        raise EmlabError(f"a solution has norm 0, so it has no direction: {own}.")
    if "random" in solutions and random_seeds:
        raise EmlabError("a solution is named 'random': rename it, or pass random_seeds=().")
    grid = [float(n) for n in (np.linspace(0.0, max(own.values()), 6) if norms is None else norms)]
    like = next(iter(solutions.values()))
    rows = {name: [s] for name, s in solutions.items()}
    if random_seeds:
        rows["random"] = [random_solution(like, 1.0, seed) for seed in random_seeds]
    directions = [d for ds in rows.values() for d in ds]
    values = evaluator.evaluate_many([d.scaled(n / d.norm()) for d in directions for n in grid])
    table = np.array(values).reshape(len(directions), len(grid))
    kl, i = {}, 0
    for name, ds in rows.items():
        kl[name] = table[i : i + len(ds)].tolist()
        i += len(ds)
    return ImportanceResult(grid, kl, own, [int(s) for s in random_seeds])
