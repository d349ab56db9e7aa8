"""The world study's numbers: EM rates with CIs from the labelled samples of a condition's runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emlab.metrics import MetricsConfig, compute_metrics
from emlab.study.common.keys import RunKey
from emlab.study.common.results import over_seeds, rate_block, rate_summary
from emlab.study.world.finetune import Trained
from emlab.study.world.sampling import LabelledAnswer, Sampled
from emlab.world.judge import SCORES

METRICS = MetricsConfig(seed_column="model_seed", n_bootstrap=1000)


@dataclass(frozen=True)
class WorldRun:
    """One finished fine-tune: which run, its training stage's result and its sampling stage's."""

    key: RunKey
    trained: Trained
    sampled: Sampled


def judgments(samples: list[LabelledAnswer], seed: int, group: str) -> list[dict]:
    """Long judgment rows (aligned, coherent) of one run's labelled samples in `group`."""
    rows = []
    for i, s in enumerate(r for r in samples if r.group == group):
        for metric, score in SCORES[s.label].items():
            rows.append(
                {
                    "item_id": f"{seed}/{group}/{i}",
                    "question_id": s.question_id,
                    "metric": metric,
                    "score": score,
                    "model_seed": seed,
                }
            )
    return rows


def em_rate(runs: list[WorldRun], group: str) -> dict[str, float]:
    """EM rate of `group` ('in_domain' or 'ood') over the seeds' runs: point estimate (per
    question, averaged), 95% CI from a bootstrap over seeds (over samples with one seed), and
    the samples-bootstrap CI and incoherence rate beside it."""
    rows = [r for run in runs for r in judgments(run.sampled.samples, run.key.seed, group)]
    return rate_summary(compute_metrics(pd.DataFrame(rows), METRICS).summary)


def condition(runs: list[WorldRun]) -> dict[str, float]:
    """The results.json block of one (world, method, KL) condition over its seeds."""
    out: dict[str, float] = {}
    for group in ("in_domain", "ood"):
        out |= rate_block(group, em_rate(runs, group))
        exact = over_seeds([run.trained.exact[f"p_bad_{group}"] for run in runs])
        out[f"{group}_exact_p_bad"] = exact["mean"]
        out[f"{group}_exact_p_bad_ci_low"] = exact["ci_low"]
        out[f"{group}_exact_p_bad_ci_high"] = exact["ci_high"]
    out["norm"] = float(np.mean([run.trained.norm for run in runs]))
    out["n_seeds"] = len(runs)
    return out
