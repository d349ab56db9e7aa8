"""Study numbers: EM rates with CIs from labelled samples, and analysis summaries over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emlab.analysis.stats import summarise
from emlab.metrics import MetricsConfig, compute_metrics
from emlab.world.judge import SCORES

METRICS = MetricsConfig(seed_column="model_seed", n_bootstrap=1000)


def judgments(samples: list[dict], seed: int, group: str) -> list[dict]:
    """Long judgment rows (aligned, coherent) of one run's labelled samples in `group`."""
    rows = []
    for i, s in enumerate(r for r in samples if r["group"] == group):
        for metric, score in SCORES[s["label"]].items():
            rows.append({"item_id": f"{seed}/{group}/{i}", "question_id": s["question_id"], "metric": metric,
                         "score": score, "model_seed": seed})
    return rows


def em_rate(runs: list[dict], group: str) -> dict[str, float]:
    """EM rate of `group` ('in_domain' or 'ood') over the seeds' runs: point estimate (per
    question, averaged), 95% CI from a bootstrap over seeds (over samples with one seed), and
    the samples-bootstrap CI and incoherence rate beside it."""
    rows = [r for run in runs for r in judgments(run["samples"], run["job"]["seed"], group)]
    return rate_summary(compute_metrics(pd.DataFrame(rows), METRICS).summary)


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


def condition(runs: list[dict]) -> dict[str, float]:
    """The results.json block of one (world, method, KL) condition over its seeds."""
    out: dict[str, float] = {}
    for group in ("in_domain", "ood"):
        out |= rate_block(group, em_rate(runs, group))
        exact = over_seeds([run["exact"][f"p_bad_{group}"] for run in runs])
        out[f"{group}_exact_p_bad"] = exact["mean"]
        out[f"{group}_exact_p_bad_ci_low"] = exact["ci_low"]
        out[f"{group}_exact_p_bad_ci_high"] = exact["ci_high"]
    out["norm"] = float(np.mean([run["norm"] for run in runs]))
    out["n_seeds"] = len(runs)
    return out


def analysis_summary(per_seed: list[dict]) -> dict:
    """Each analysis number of the general/narrow comparison as mean and CI over seeds."""
    keys = {
        "norm_general": lambda s: s["norm_general"],
        "norm_narrow": lambda s: s["norm_narrow"],
        "loss_general": lambda s: s["loss_general"],
        "loss_narrow": lambda s: s["loss_narrow"],
        "base_loss": lambda s: s["base_loss"],
    }
    for name in ("general", "narrow", "random"):
        keys[f"loss_at_general_norm_{name}"] = lambda s, n=name: s["loss_at_general_norm"][n]
        keys[f"kl_at_general_norm_{name}"] = lambda s, n=name: s["kl_at_general_norm"][n]
    for name in ("general", "narrow"):
        keys[f"loss_per_norm_sq_{name}"] = lambda s, n=name: s["loss_per_norm_sq"][n]
        keys[f"relative_loss_increase_eps_0.5_{name}"] = lambda s, n=name: s["relative_loss_increase_eps_0.5"][n]
    return {key: over_seeds([get(a["summary"]) for a in per_seed]) for key, get in keys.items()}
