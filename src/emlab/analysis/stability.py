"""Stability: loss under orthogonal noise x' = sqrt(1 - eps^2) x + eps y, per parameter tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emlab.analysis.loss import LossEvaluator
from emlab.analysis.stats import Summary, summarise
from emlab.errors import EmlabError
from emlab.solutions import Solution

DEFAULT_EPS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class StabilityCurve:
    """Losses # (seeds, eps) of perturbed solutions and the relative loss increase
    (L_pert - L_orig) / (L_base - L_orig) (NaN when the solution does not lower the loss)."""

    name: str
    eps: list[float]
    seeds: list[int]
    base_loss: float
    loss: float
    losses: list[list[float]]
    relative: list[list[float]]

    @property
    def summary(self) -> Summary:
        """Mean, std and 95% CI over seeds of the relative increase, per eps."""
        return summarise(np.array(self.relative))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "eps": self.eps,
            "seeds": self.seeds,
            "base_loss": self.base_loss,
            "loss": self.loss,
            "losses": self.losses,
            "relative": self.relative,
            "relative_summary": self.summary.to_json(),
        }


@dataclass(frozen=True)
class StabilityResult:
    curves: list[StabilityCurve]

    def curve(self, name: str) -> StabilityCurve:
        return next(c for c in self.curves if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"curves": [c.to_json() for c in self.curves]}


def stability_curve(
    evaluator: LossEvaluator,
    solution: Solution,
    name: str,
    eps: Sequence[float] = DEFAULT_EPS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    base_loss: float | None = None,
) -> StabilityCurve:
    """Loss of `solution.perturbed(e, seed)` for each seed and eps (seed s uses the same noise
    direction y at every eps)."""
    if len(seeds) < 2:
        raise EmlabError(
            f"stability needs several seeds for a spread (>= 5 recommended), got {list(seeds)}."
        )
    eps, seeds = [float(e) for e in eps], [int(s) for s in seeds]
    perturbed = [solution.perturbed(e, s) for s in seeds for e in eps]
    losses = np.array(evaluator.evaluate_many([solution, *perturbed]))
    loss, grid = float(losses[0]), losses[1:].reshape(len(seeds), len(eps))
    base = evaluator.evaluate(None) if base_loss is None else base_loss
    gain = base - loss
    relative = (grid - loss) / gain if gain > 0 else np.full_like(grid, np.nan)
    return StabilityCurve(name, eps, seeds, base, loss, grid.tolist(), relative.tolist())


def compare_stability(
    evaluator: LossEvaluator,
    solutions: dict[str, Solution],
    eps: Sequence[float] = DEFAULT_EPS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
) -> StabilityResult:
    """Stability curves of several solutions on the same data and seeds."""
    base = evaluator.evaluate(None)
    return StabilityResult(
        [stability_curve(evaluator, s, name, eps, seeds, base) for name, s in solutions.items()]
    )
