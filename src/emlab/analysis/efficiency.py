"""Efficiency: the narrow-data loss of a solution scaled by m in [0, 2] against its norm |m|
||theta||."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emlab.analysis.baselines import random_solution
from emlab.analysis.loss import LossEvaluator
from emlab.errors import EmlabError
from emlab.solutions import Solution

DEFAULT_MULTIPLIERS: tuple[float, ...] = tuple(np.linspace(0.0, 2.0, 21).round(6).tolist())


@dataclass(frozen=True)
class EfficiencyCurve:
    """Loss of `solution.scaled(m)` for each m; norms[i] = |m_i| * norm."""

    name: str
    norm: float
    multipliers: list[float]
    norms: list[float]
    losses: list[float]
    loss_at_one: float
    base_loss: float

    @property
    def min_index(self) -> int:
        return int(np.argmin(self.losses))

    @property
    def loss_per_norm_sq(self) -> float:
        """L / ||theta||^2 at m = 1."""
        return self.loss_at_one / self.norm**2

    @property
    def drop_per_norm_sq(self) -> float:
        """(L_base - L) / ||theta||^2 at m = 1: loss reduction per unit of squared norm."""
        return (self.base_loss - self.loss_at_one) / self.norm**2

    def loss_at(self, norms: Sequence[float]) -> list[float]:
        """Loss interpolated (linearly) at `norms` on the swept range; NaN outside it."""
        return np.interp(norms, self.norms, self.losses, left=np.nan, right=np.nan).tolist()

    def to_json(self) -> dict[str, Any]:
        i = self.min_index
        return {
            **asdict(self),
            "min": {"m": self.multipliers[i], "norm": self.norms[i], "loss": self.losses[i]},
            "loss_per_norm_sq": self.loss_per_norm_sq,
            "drop_per_norm_sq": self.drop_per_norm_sq,
        }


@dataclass(frozen=True)
class EfficiencyResult:
    """Curves of several solutions, compared on a common norm grid and at a reference norm.

    `reference_norm` is the norm of the first solution; `at_reference_norm[name]` is each
    solution's loss rescaled to exactly that norm (evaluated, not interpolated).
    """

    base_loss: float
    curves: list[EfficiencyCurve]
    common_norms: list[float]
    at_common_norms: dict[str, list[float]]
    reference_norm: float
    at_reference_norm: dict[str, float]

    def curve(self, name: str) -> EfficiencyCurve:
        return next(c for c in self.curves if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_loss": self.base_loss,
            "curves": [c.to_json() for c in self.curves],
            "common_norms": self.common_norms,
            "at_common_norms": self.at_common_norms,
            "reference_norm": self.reference_norm,
            "at_reference_norm": self.at_reference_norm,
        }


def efficiency_curve(
    evaluator: LossEvaluator,
    solution: Solution,
    name: str,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    base_loss: float | None = None,
) -> EfficiencyCurve:
    """Sweep `solution.scaled(m)` over `multipliers` (steering vectors batched per forward pass).

    One evaluation per distinct multiplier: m = 1 (`loss_at_one`) is added only when absent,
    and the base loss, when not given, is the evaluator's (free after m = 0, which is the base
    model).
    """
    norm = solution.norm()
    if norm == 0:
        raise EmlabError(f"solution {name!r} has norm 0: nothing to sweep.")
    ms = sorted(float(m) for m in multipliers)
    if not ms or ms[0] < 0:
        raise EmlabError(
            f"multipliers must be non-negative (the sweep is m in [0, 2]), got {list(multipliers)}."
        )
    points = sorted({*ms, 1.0})
    loss = dict(
        zip(points, evaluator.evaluate_many([solution.scaled(m) for m in points]), strict=True)
    )
    if base_loss is None:
        base_loss = evaluator.evaluate(None)
    return EfficiencyCurve(
        name, norm, ms, [abs(m) * norm for m in ms], [loss[m] for m in ms], loss[1.0], base_loss
    )


def compare_efficiency(
    evaluator: LossEvaluator,
    solutions: dict[str, Solution],
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    n_norms: int = 41,
    random_seed: int | None = 0,
) -> EfficiencyResult:
    """Efficiency curves of `solutions` (the first is the reference, e.g. the general one),
    plus a random direction at the reference norm unless `random_seed` is None.

    The common norm grid spans [0, the smallest of the curves' largest norms] in `n_norms` points.
    """
    if not solutions:
        raise EmlabError("give at least one solution to compare.")
    solutions = dict(solutions)
    reference_norm = next(iter(solutions.values())).norm()
    if random_seed is not None:
        if "random" in solutions:
            raise EmlabError("a solution is named 'random': rename it, or pass random_seed=None.")
        solutions["random"] = random_solution(
            next(iter(solutions.values())), reference_norm, random_seed
        )
    base = evaluator.evaluate(None)
    curves = [
        efficiency_curve(evaluator, s, name, multipliers, base) for name, s in solutions.items()
    ]
    common = np.linspace(0.0, min(max(c.norms) for c in curves), n_norms).tolist()
    at_ref = evaluator.evaluate_many(
        [s.scaled(reference_norm / s.norm()) for s in solutions.values()]
    )
    return EfficiencyResult(
        base_loss=base,
        curves=curves,
        common_norms=common,
        at_common_norms={c.name: c.loss_at(common) for c in curves},
        reference_norm=reference_norm,
        at_reference_norm=dict(zip(solutions, at_ref, strict=True)),
    )
