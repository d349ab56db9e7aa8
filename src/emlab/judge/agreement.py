"""Agreement between two judges on the same answers: Cohen's kappa on EM labels, Spearman per
metric, and the EM-rate difference with a paired bootstrap CI (answers resampled within questions,
the same draw for both judges).

Judgments are paired by answer: item id (`answer_id`, which includes the provenance and the
text hash) and `answer_hash`. Tables without `answer_hash` (written before answers carried one),
tables with no answer in common and common ids whose texts differ are refused: a kappa between
judgments of different answers measures nothing."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from emlab.errors import DataError
from emlab.metrics import (
    MetricsConfig,
    answer_labels,
    category_codes,
    describe_provenance,
    hit_ratio,
    percentile_ci,
)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two binary label arrays; None when undefined (chance agreement is 1)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(a) == 0:
        return None
    observed = float(np.mean(a == b))
    pa, pb = a.mean(), b.mean()
    chance = float(pa * pb + (1 - pa) * (1 - pb))
    return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def judge_agreement(
    a: pd.DataFrame,
    b: pd.DataFrame,
    config: MetricsConfig | None = None,
    sources: tuple[str, str] = ("judgments A", "judgments B"),
) -> dict[str, Any]:
    """Compare two judgment tables (long format, as for `compute_metrics`, with `answer_hash`) on
    their common answers; `sources` name them in errors. Raises DataError unless both judged
    some of the same answers (`common_answers`)."""
    cfg = config or MetricsConfig()
    la, lb = (
        answer_labels(a, cfg, sources[0]).set_index("item_id"),
        answer_labels(b, cfg, sources[1]).set_index("item_id"),
    )
    common = common_answers(la, lb, sources)
    both = common[~la.loc[common, "error"].to_numpy(bool) & ~lb.loc[common, "error"].to_numpy(bool)]
    if len(both) == 0:
        raise DataError(
            "judgment tables",
            None,
            "no answer is judged without error by both judges",
            "Judge the same generations with both judges.",
        )
    n_excluded = len(la.index.union(lb.index)) - len(both)
    la, lb = la.loc[both], lb.loc[both]
    spearman = {}
    for metric in sorted(set(a["metric"]) & set(b["metric"])):
        x, y = la[metric].to_numpy(float), lb[metric].to_numpy(float)
        keep = np.isfinite(x) & np.isfinite(y)
        defined = (
            keep.sum() >= 3 and np.ptp(x[keep]) > 0 and np.ptp(y[keep]) > 0
        )  # else rho is undefined
        rho = spearmanr(x[keep], y[keep]).statistic if defined else float("nan")
        spearman[metric] = {
            "rho": None if not np.isfinite(rho) else float(rho),
            "n": int(keep.sum()),
        }
    diff, ci, rate_a, rate_b = paired_rate_difference(
        category_codes(la["em"], la["counted"]),
        category_codes(lb["em"], lb["counted"]),
        la["question_id"].astype(str).to_numpy(),
        cfg,
    )
    return {
        "n_items": int(len(both)),
        "n_excluded": int(n_excluded),
        "kappa_em": cohen_kappa(la["em"].to_numpy(), lb["em"].to_numpy()),
        "spearman": spearman,
        "em_rate_a": rate_a,
        "em_rate_b": rate_b,
        "em_rate_difference": diff,
        "em_rate_difference_ci": ci,
        "thresholds": {"aligned_le": cfg.aligned_threshold, "coherent_gt": cfg.coherent_threshold},
        "denominator": cfg.denominator,
        "bootstrap": {"n": cfg.n_bootstrap, "ci": cfg.ci, "seed": cfg.bootstrap_seed},
    }


def common_answers(la: pd.DataFrame, lb: pd.DataFrame, sources: tuple[str, str]) -> pd.Index:
    """Item ids judged in both label tables (indexed by item_id, with `answer_hash`), checked to be
    the same answers.

    Raises DataError when a table has no `answer_hash`, when no answer is in both, or when a
    common id carries two different answer texts.
    """
    for labels, source in ((la, sources[0]), (lb, sources[1])):
        if "answer_hash" not in labels or labels["answer_hash"].isna().any():
            raise DataError(
                source,
                None,
                "judgments without `answer_hash` (written before answers carried their hash), so "
                "which answers they judged cannot be checked",
                "Judge the generations again with this emlab "
                "(an API judge's cached replies make it free), into a new --out.",
            )
    common = la.index.intersection(lb.index)
    if len(common) == 0:
        where = "; ".join(
            f"{s}: {describe_provenance(t.reset_index())}"
            for t, s in ((la, sources[0]), (lb, sources[1]))
        )
        raise DataError(
            sources[1],
            None,
            f"none of its answers is among those judged in {sources[0]}: the two judged different "
            f"answers ({where})",
            "Compare two judges on the same generations file: `emlab judge` it with each judge.",
        )
    differ = common[
        la.loc[common, "answer_hash"].to_numpy() != lb.loc[common, "answer_hash"].to_numpy()
    ]
    if len(differ):
        raise DataError(
            sources[1],
            None,
            f"{len(differ)} answers share an id with {sources[0]} but not the text (e.g. item "
            f"{differ[0]!r})",
            "Compare two judges on the same generations file.",
        )
    return common


def paired_rate_difference(
    codes_a: np.ndarray, codes_b: np.ndarray, question: np.ndarray, config: MetricsConfig
) -> tuple[float, list[float], float, float]:
    """(rate_a - rate_b, its CI, rate_a, rate_b): rates per question then averaged; the bootstrap
    resamples answer pairs within questions (a multinomial over the 9 joint categories)."""
    rng = np.random.default_rng(config.bootstrap_seed)
    questions, q_idx = np.unique(question, return_inverse=True)
    joint = codes_a * 3 + codes_b
    counts = np.zeros((config.n_bootstrap, len(questions), 9))
    point = np.zeros((len(questions), 9))
    for q in range(len(questions)):
        members = joint[q_idx == q]
        point[q] = np.bincount(members, minlength=9)
        counts[:, q] = rng.multinomial(
            len(members), point[q] / len(members), size=config.n_bootstrap
        )

    def rates(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = (*c.shape[:-1], 3, 3)  # (..., code_a, code_b)
        c = c.reshape(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw where no question is counted
            return np.nanmean(hit_ratio(c.sum(-1)), axis=-1), np.nanmean(
                hit_ratio(c.sum(-2)), axis=-1
            )

    ra, rb = rates(point)
    da, db = rates(counts)
    lo, hi = percentile_ci(da - db, config.ci)
    return float(ra - rb), [float(lo), float(hi)], float(ra), float(rb)
