"""Efficiency as the paper states it: the norm each solution needs to reach the same loss.

Each solution's efficiency curve (held-out narrow loss of the solution scaled by m, against
its norm m ||theta||) is read at one target loss, the narrow solution's own loss at m = 1
(its final held-out loss): the smallest norm at which the curve reaches it (linear
interpolation between swept points; NaN when the swept range never reaches it). And the
converse: each curve's loss at the narrow solution's norm. A solution that needs a smaller
norm for the same loss is the more efficient one (paper, "Efficiency Metric").
"""

from __future__ import annotations

import math

import numpy as np

from emlab.study.common.results import over_seeds


def norm_to_reach(norms: list[float], losses: list[float], target: float) -> float:
    """The smallest norm at which the piecewise-linear curve (norms ascending, losses) first
    gets to `target` or below; NaN when it never does.

    >>> norm_to_reach([0.0, 1.0, 2.0], [1.0, 0.5, 0.2], 0.4)  # between 1 and 2: 1 + 0.1/0.3
    1.3333333333333333
    """
    if losses[0] <= target:
        return norms[0]
    for i in range(1, len(norms)):
        if losses[i] <= target:
            frac = (losses[i - 1] - target) / (losses[i - 1] - losses[i])
            return norms[i - 1] + frac * (norms[i] - norms[i - 1])
    return math.nan


def equal_loss_summary(efficiency: dict) -> dict[str, dict[str, float]]:
    """For one seed's efficiency result (EfficiencyResult.to_json()): per curve, the norm to
    reach the narrow solution's loss at m = 1 and the loss at the narrow solution's norm."""
    curves = {c["name"]: c for c in efficiency["curves"]}
    narrow = curves["narrow"]
    target = narrow["loss_at_one"]
    out = {}
    for name, c in curves.items():
        out[name] = {
            "norm_to_narrow_loss": norm_to_reach(c["norms"], c["losses"], target),
            "loss_at_narrow_norm": float(
                np.interp(narrow["norm"], c["norms"], c["losses"], right=math.nan)
            ),
        }
    return {"target_loss": {"narrow_final": target}, **out}


def equal_loss_over_seeds(efficiencies: list[dict]) -> dict[str, dict]:
    """`equal_loss_summary` of each seed's efficiency result, as mean and 95% CI over seeds:
    {'<curve>': {'norm_to_narrow_loss': {...}, 'loss_at_narrow_norm': {...}}, 'target_loss': {...}}.
    """
    per_seed = [equal_loss_summary(e) for e in efficiencies]
    names = [k for k in per_seed[0] if k != "target_loss"]
    out: dict[str, dict] = {
        "target_loss": over_seeds([s["target_loss"]["narrow_final"] for s in per_seed])
    }
    for name in names:
        out[name] = {
            key: over_seeds([s[name][key] for s in per_seed])
            for key in ("norm_to_narrow_loss", "loss_at_narrow_norm")
        }
    return out


def equal_loss_markdown(by_method: dict[str, dict]) -> list[str]:
    """The report's table: per method, norm to reach the narrow solution's loss and loss at its
    norm."""
    f = lambda s: f"{s['mean']:.3g} [{s['ci_low']:.3g}, {s['ci_high']:.3g}]"  # noqa: E731
    lines = [
        "## Efficiency at equal loss",
        "",
        (
            "Target: the narrow solution's held-out loss at m = 1. Norm to reach it: the smallest"
            " norm along each solution's scaled curve (m in [0, 2]) with that loss or lower (NaN:"
            " never reached). Mean [95% CI] over seeds."
        ),
        "",
        (
            "| method | target loss | norm to reach it: general / narrow / random | loss at the"
            " narrow norm: general / narrow / random |"
        ),
        "|---|---|---|---|",
    ]
    for method, e in by_method.items():
        norms = " / ".join(f(e[n]["norm_to_narrow_loss"]) for n in ("general", "narrow", "random"))
        losses = " / ".join(f(e[n]["loss_at_narrow_norm"]) for n in ("general", "narrow", "random"))
        lines.append(f"| {method} | {f(e['target_loss'])} | {norms} | {losses} |")
    return lines
