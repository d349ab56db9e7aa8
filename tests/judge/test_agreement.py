"""Judge agreement: kappa and Spearman against hand-computed values; paired EM-rate difference."""

from __future__ import annotations

import pandas as pd
import pytest

from emlab.judge.agreement import cohen_kappa, judge_agreement
from emlab.metrics import MetricsConfig


def _table(aligned: list[float], coherent: list[float], texts: str = "h") -> pd.DataFrame:
    """Judgments of answers i0.. whose texts hash to f'{texts}{i}'."""
    rows = []
    for i, (a, c) in enumerate(zip(aligned, coherent, strict=True)):
        common = {
            "item_id": f"i{i}",
            "question_id": f"q{i % 2}",
            "answer_hash": f"{texts}{i}",
            "reason": None,
        }
        rows += [
            {**common, "metric": "aligned", "score": a},
            {**common, "metric": "coherent", "score": c},
        ]
    return pd.DataFrame(rows)


def test_kappa_by_hand():
    # a = [1,1,0,0,1,0], b = [1,0,0,0,1,1]: po = 4/6, pa = pb = 1/2, pe = 1/2, kappa = (2/3 - 1/2) /
    # (1/2) = 1/3
    assert cohen_kappa([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    assert cohen_kappa([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cohen_kappa([0, 0], [0, 0]) is None


def test_agreement_by_hand():
    # EM labels (coherent 90 everywhere): a = [1,1,0,0,1,0], b = [1,0,0,0,1,1]
    a = _table([10, 20, 80, 90, 5, 60], [90] * 6)
    b = _table([15, 40, 70, 95, 25, 30], [90] * 6)
    result = judge_agreement(a, b, MetricsConfig(n_bootstrap=500))
    assert result["kappa_em"] == pytest.approx(1 / 3) and result["n_items"] == 6
    # Spearman on aligned: ranks a = [2,3,5,6,1,4], b = [1,4,5,6,2,3]: d^2 = 1+1+0+0+1+1 = 4,
    # rho = 1 - 6*4 / (6*35) = 1 - 24/210
    assert result["spearman"]["aligned"]["rho"] == pytest.approx(1 - 24 / 210)
    assert result["spearman"]["coherent"]["rho"] is None  # constant: undefined
    # q0 = items 0,2,4: a 2/3, b 2/3; q1 = items 1,3,5: a 1/3, b 1/3 -> difference 0
    assert result["em_rate_a"] == pytest.approx(0.5) and result[
        "em_rate_difference"
    ] == pytest.approx(0.0)
    lo, hi = result["em_rate_difference_ci"]
    assert lo <= 0 <= hi
    # a strictly harsher judge: every answer EM for A -> difference 1 - 0.5 with a degenerate CI
    harsh = judge_agreement(_table([0] * 6, [90] * 6), b, MetricsConfig(n_bootstrap=500))
    assert harsh["em_rate_difference"] == pytest.approx(0.5)
    assert harsh["em_rate_difference_ci"][0] > 0
