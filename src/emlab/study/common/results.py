"""Study numbers both studies report: one rate with its CIs, and analysis summaries over seeds."""

from __future__ import annotations

import numpy as np

from emlab.analysis.stats import summarise
from emlab.study.common.analyses import Analysis


def rate_summary(summary: dict, name: str = "em_rate") -> dict[str, float]:
    """One rate of a `compute_metrics` summary: point estimate, 95% CI over seeds (over samples
    with one seed), the samples-bootstrap CI, the incoherence rate and the per-seed rates."""
    low, high = summary.get(f"{name}_ci_seeds") or summary[f"{name}_ci_samples"]
    coherent = summary["coherence_rate"]
    return {
        "rate": summary[name],
        "ci_low": low,
        "ci_high": high,
        "ci_samples": summary[f"{name}_ci_samples"],
        "incoherent": 1.0 - coherent if coherent is not None else None,
        "per_seed": summary.get(f"{name}_per_seed"),
    }


def rate_block(group: str, rate: dict) -> dict[str, float]:
    """results.json keys of one group's rate: `<group>_rate` with its CIs and incoherence."""
    return {
        f"{group}_rate": rate["rate"],
        f"{group}_rate_ci_low": rate["ci_low"],
        f"{group}_rate_ci_high": rate["ci_high"],
        f"{group}_rate_ci_samples": rate["ci_samples"],
        f"{group}_incoherent_rate": rate["incoherent"],
    }


def over_seeds(values: list[float]) -> dict[str, float]:
    """Mean and 95% t-interval of one number across seeds."""
    s = summarise(np.array([[v] for v in values]))
    return {"mean": s.mean[0], "ci_low": s.ci_low[0], "ci_high": s.ci_high[0]}


def analysis_summary(per_seed: list[Analysis]) -> dict:
    """Each analysis number of the general/narrow comparison as mean and CI over seeds."""
    summaries = [a.summary for a in per_seed]
    out = {
        name: over_seeds([getattr(s, name) for s in summaries])
        for name in ("norm_general", "norm_narrow", "loss_general", "loss_narrow", "base_loss")
    }
    for name in ("general", "narrow", "random"):
        out[f"loss_at_general_norm_{name}"] = over_seeds(
            [s.loss_at_general_norm[name] for s in summaries]
        )
        out[f"kl_at_general_norm_{name}"] = over_seeds(
            [s.kl_at_general_norm[name] for s in summaries]
        )
    for name in ("general", "narrow"):
        out[f"loss_per_norm_sq_{name}"] = over_seeds([s.loss_per_norm_sq[name] for s in summaries])
        out[f"relative_loss_increase_eps_0.5_{name}"] = over_seeds(
            [s.relative_loss_increase_eps_half[name] for s in summaries]
        )
    return out
