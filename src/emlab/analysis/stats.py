"""Mean, spread and t-based 95% confidence intervals over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Per-column mean, sample std and 95% CI of a (seeds, points) array of values."""

    mean: list[float]
    std: list[float]
    ci_low: list[float]
    ci_high: list[float]

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean, "std": self.std, "ci_low": self.ci_low, "ci_high": self.ci_high}


def summarise(values: np.ndarray) -> Summary:
    """Summarise `values` # (n, P) over its rows; one row gives a zero-width interval."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
    half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return Summary(mean.tolist(), std.tolist(), (mean - half).tolist(), (mean + half).tolist())
